//! What applies to each channel (send-queue and backlog bounds, the overflow
//! policy) and to each connection (access rules): the flags' values, refined
//! by prefix and identity in the configuration file. A running broker swaps
//! it whole on reload.

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
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        match zero {
            Some((key, _)) => Err(format!(
                "[[channel]] prefix {:?}: {key} must be at least 1",
                self.prefix
            )),
            None => Ok(()),
        }
    }
}

/// Everything that can change while the broker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    defaults: ChannelPolicy,
    /// Longest prefix first: the first that fits a name is the most specific.
    rules: Vec<ChannelRule>,
    pub access: Access,
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
            },
            rules,
            access,
        }
    }

    /// The flags alone: no per-channel entries, everyone allowed everything.
    pub fn from_config(config: &BrokerConfig) -> Self {
        Self::new(config, Vec::new(), Access::default())
    }

    pub fn for_channel(&self, name: &[u8]) -> ChannelPolicy {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| name.starts_with(r.prefix.as_bytes()))
        else {
            return self.defaults;
        };
        let d = self.defaults;
        ChannelPolicy {
            send_queue: rule.send_queue.map_or(d.send_queue, |v| v as usize),
            send_queue_bytes: rule.send_queue_bytes.map_or(d.send_queue_bytes, |s| s.0),
            worker_queue: rule.worker_queue.map_or(d.worker_queue, |v| v as usize),
            backlog: rule.backlog.map_or(d.backlog, |v| v as usize),
            backlog_bytes: rule.backlog_bytes.map_or(d.backlog_bytes, |s| s.0),
            topic_overflow: rule.topic_overflow.unwrap_or(d.topic_overflow),
        }
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
