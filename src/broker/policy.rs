//! What applies to each channel (send-queue and backlog bounds, the overflow
//! policy) and to each connection (access rules): the flags' values, refined
//! by prefix and identity in the configuration file. A running broker swaps
//! it whole on reload.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::access::Access;
use super::{BrokerConfig, TopicOverflow};

/// The bounds and policies of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Messages each `/topic` subscriber's send queue holds.
    pub send_queue: usize,
    /// Payload bytes each subscriber's send queue holds.
    pub send_queue_bytes: usize,
    /// Messages each `/queue` worker's send queue holds.
    pub worker_queue: usize,
    /// Messages and payload bytes a `/queue` backlog holds.
    pub backlog: usize,
    pub backlog_bytes: usize,
    pub topic_overflow: TopicOverflow,
    /// A `/queue` channel whose messages are kept in the durable store.
    pub durable: bool,
    /// A `[[channel]]`'s `fsync`: whether a durable channel's publishes are
    /// confirmed once synced (`always`) or once written (`never`); unset,
    /// the store's `--fsync` says.
    pub fsync_always: Option<bool>,
    /// A `[[channel]]`'s `max-disk`: payload bytes one durable channel may
    /// keep in the store (beside the store's `--max-disk`).
    pub max_disk: Option<usize>,
}

impl ChannelPolicy {
    /// The send queue's bounds for a subscriber of `channel`: messages, bytes.
    pub fn send_bounds(&self, channel: &[u8]) -> (usize, usize) {
        let messages = if crate::proto::is_queue(channel) {
            self.worker_queue
        } else {
            self.send_queue
        };
        (messages, self.send_queue_bytes)
    }
}

/// A size in the file: a number of bytes or a string with a unit ("1MiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => usize::try_from(n)
                .map(Size)
                .map_err(serde::de::Error::custom),
            Either::Text(t) => crate::units::parse_size(&t)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A `[[channel]]` entry: bounds for the channels whose names start with
/// `prefix`; what it leaves out comes from the flags.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChannelRule {
    pub prefix: String,
    pub send_queue: Option<u32>,
    pub send_queue_bytes: Option<Size>,
    pub worker_queue: Option<u32>,
    pub backlog: Option<u32>,
    pub backlog_bytes: Option<Size>,
    pub topic_overflow: Option<TopicOverflow>,
    /// How long an acknowledging worker may hold a delivery (e.g. "30s").
    pub ack_wait: Option<String>,
    pub max_deliveries: Option<u32>,
    /// Delays before the 1st, 2nd... redelivery of a failed message
    /// (e.g. "1s,10s,1m"; the last repeats).
    pub backoff: Option<String>,
    /// Where messages go after `max-deliveries` failures or a `TERM`.
    pub dead_letter: Option<String>,
    /// Keep the messages of these `/queue` channels on disk (`--durable`
    /// for a prefix, from the file).
    pub durable: Option<bool>,
    /// When their publishes are confirmed: `always` (synced) or `never`
    /// (written); the store's `--fsync` when unset.
    pub fsync: Option<String>,
    /// Payload bytes each of these durable channels may keep stored.
    pub max_disk: Option<Size>,
}

impl ChannelRule {
    /// Zero bounds are mistakes, said with the entry's prefix.
    pub fn check(&self) -> Result<(), String> {
        let zero = [
            ("send-queue", self.send_queue.map(|v| v as usize)),
            ("send-queue-bytes", self.send_queue_bytes.map(|s| s.0)),
            ("worker-queue", self.worker_queue.map(|v| v as usize)),
            ("backlog", self.backlog.map(|v| v as usize)),
            ("backlog-bytes", self.backlog_bytes.map(|s| s.0)),
            ("max-disk", self.max_disk.map(|s| s.0)),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        if let Some((key, _)) = zero {
            return Err(format!(
                "[[channel]] prefix {:?}: {key} must be at least 1",
                self.prefix
            ));
        }
        let bad = |key: &str, why: String| {
            Err(format!("[[channel]] prefix {:?}: {key} {why}", self.prefix))
        };
        if let Some(w) = &self.ack_wait {
            match crate::units::parse_duration(w) {
                Ok(d) if d.is_zero() => return bad("ack-wait", "must be more than 0".into()),
                Ok(_) => {}
                Err(e) => return bad("ack-wait", e),
            }
        }
        if self.max_deliveries == Some(0) || self.max_deliveries.is_some_and(|m| m > 65_535) {
            return bad("max-deliveries", "must be 1 to 65535".into());
        }
        if let Some(b) = &self.backoff {
            if let Err(e) = parse_backoff(b) {
                return bad("backoff", e);
            }
        }
        let queues = self.prefix.starts_with("/queue/") || "/queue/".starts_with(&self.prefix);
        if let Some(f) = &self.fsync {
            if !queues {
                return bad(
                    "fsync",
                    "applies to durable /queue channels only (a prefix starting with /queue/)"
                        .into(),
                );
            }
            if f != "always" && f != "never" {
                return bad(
                    "fsync",
                    format!(
                        "{f:?} is not always (confirmed once synced) or never (once written; \
                         the file is synced as the store's --fsync says)"
                    ),
                );
            }
        }
        if self.durable == Some(true) && !queues {
            return bad(
                "durable",
                "applies to /queue channels only (a prefix starting with /queue/)".into(),
            );
        }
        if let Some(d) = &self.dead_letter {
            if !crate::proto::is_queue(d.as_bytes()) {
                return bad(
                    "dead-letter",
                    format!("{d:?} is not a /queue channel: dead letters wait for a worker"),
                );
            }
        }
        Ok(())
    }
}

/// A backoff schedule: durations separated by commas ("1s,10s,1m").
pub fn parse_backoff(s: &str) -> Result<Vec<Duration>, String> {
    s.split(',')
        .map(|d| crate::units::parse_duration(d.trim()))
        .collect()
}

/// What an acknowledging worker of a `/queue` channel is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckPolicy {
    pub ack_wait: Duration,
    pub max_deliveries: u32,
    /// Delays before redeliveries after a failure; empty: at once.
    pub backoff: Vec<Duration>,
    /// Where dead letters go; `None` for a channel that is itself one
    /// (its name ends in `/dead`): it never dead-letters.
    pub dead_letter: Option<Bytes>,
}

impl AckPolicy {
    /// The delay before redelivering a message that failed `failures` times.
    pub fn backoff_for(&self, failures: u32) -> Duration {
        let i = (failures.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }
}

/// The name of `channel`'s dead-letter channel by default.
pub fn default_dead_letter(channel: &[u8]) -> Option<Bytes> {
    if channel.ends_with(b"/dead") {
        return None;
    }
    let mut name = channel.to_vec();
    name.extend_from_slice(b"/dead");
    Some(Bytes::from(name))
}

/// Everything that can change while the broker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    defaults: ChannelPolicy,
    /// Longest prefix first: the first that fits a name is the most specific.
    rules: Vec<ChannelRule>,
    pub access: Access,
    /// The flags' ack wait and maximum deliveries.
    ack_wait: Duration,
    max_deliveries: u32,
    /// `--durable` prefixes.
    durable: Vec<String>,
}

impl Policy {
    pub fn new(config: &BrokerConfig, mut rules: Vec<ChannelRule>, access: Access) -> Self {
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self {
            defaults: ChannelPolicy {
                send_queue: config.send_queue,
                send_queue_bytes: config.send_queue_bytes,
                worker_queue: config.worker_queue,
                backlog: config.backlog,
                backlog_bytes: config.backlog_bytes,
                topic_overflow: config.topic_overflow,
                durable: false,
                fsync_always: None,
                max_disk: None,
            },
            rules,
            access,
            ack_wait: config.ack_wait,
            max_deliveries: config.max_deliveries,
            durable: config.durable.clone(),
        }
    }

    /// The flags alone: no per-channel entries, everyone allowed everything.
    pub fn from_config(config: &BrokerConfig) -> Self {
        Self::new(config, Vec::new(), Access::default())
    }

    /// What an acknowledging worker of `name` is held to.
    pub fn acks_for(&self, name: &[u8]) -> AckPolicy {
        let rule = self
            .rules
            .iter()
            .find(|r| name.starts_with(r.prefix.as_bytes()));
        let dead_letter = if name.ends_with(b"/dead") {
            None
        } else {
            match rule.and_then(|r| r.dead_letter.as_ref()) {
                Some(d) => Some(Bytes::copy_from_slice(d.as_bytes())),
                None => default_dead_letter(name),
            }
        };
        AckPolicy {
            ack_wait: rule
                .and_then(|r| r.ack_wait.as_deref())
                .and_then(|w| crate::units::parse_duration(w).ok())
                .unwrap_or(self.ack_wait),
            max_deliveries: rule
                .and_then(|r| r.max_deliveries)
                .unwrap_or(self.max_deliveries),
            backoff: rule
                .and_then(|r| r.backoff.as_deref())
                .and_then(|b| parse_backoff(b).ok())
                .unwrap_or_default(),
            dead_letter,
        }
    }

    pub fn for_channel(&self, name: &[u8]) -> ChannelPolicy {
        let mut d = self.defaults;
        d.durable = crate::proto::is_queue(name)
            && self.durable.iter().any(|p| name.starts_with(p.as_bytes()));
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| name.starts_with(r.prefix.as_bytes()))
        else {
            return d;
        };
        ChannelPolicy {
            send_queue: rule.send_queue.map_or(d.send_queue, |v| v as usize),
            send_queue_bytes: rule.send_queue_bytes.map_or(d.send_queue_bytes, |s| s.0),
            worker_queue: rule.worker_queue.map_or(d.worker_queue, |v| v as usize),
            backlog: rule.backlog.map_or(d.backlog, |v| v as usize),
            backlog_bytes: rule.backlog_bytes.map_or(d.backlog_bytes, |s| s.0),
            topic_overflow: rule.topic_overflow.unwrap_or(d.topic_overflow),
            durable: crate::proto::is_queue(name) && rule.durable.unwrap_or(d.durable),
            fsync_always: rule.fsync.as_deref().map(|f| f == "always"),
            max_disk: rule.max_disk.map(|s| s.0),
        }
    }

    /// Whether any channel can be durable: a store is needed.
    pub fn any_durable(&self) -> bool {
        !self.durable.is_empty() || self.rules.iter().any(|r| r.durable == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_fills_in_from_the_flags() {
        let rules: Vec<ChannelRule> = toml::from_str::<toml::Table>(
            r#"
            [[channel]]
            prefix = "/topic/"
            send-queue = 100
            [[channel]]
            prefix = "/topic/orders"
            topic-overflow = "disconnect"
            send-queue-bytes = "1MiB"
            "#,
        )
        .unwrap()["channel"]
            .clone()
            .try_into()
            .unwrap();
        let p = Policy::new(&BrokerConfig::default(), rules, Access::default());
        let orders = p.for_channel(b"/topic/orders/eu");
        assert_eq!(orders.topic_overflow, TopicOverflow::Disconnect);
        assert_eq!(orders.send_queue_bytes, 1 << 20);
        assert_eq!(orders.send_queue, BrokerConfig::default().send_queue);
        let news = p.for_channel(b"/topic/news");
        assert_eq!(news.send_queue, 100);
        assert_eq!(news.topic_overflow, TopicOverflow::Drop);
        assert_eq!(
            p.for_channel(b"/queue/jobs"),
            Policy::from_config(&BrokerConfig::default()).for_channel(b"/x")
        );
    }
}
