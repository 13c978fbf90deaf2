//! A read-only view of a running broker, for the monitoring endpoint
//! (`serve --http`): counters are read, never locked per message.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::stats::{BrokerStats, DropReason, Summary};
use super::{BrokerConfig, Shared, TopicOverflow};

#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
    started: Instant,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Monitor")
    }
}

impl Monitor {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            started: Instant::now(),
        }
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// True once shutdown has begun: no new connection is accepted.
    pub fn draining(&self) -> bool {
        self.shared.stop_reading.is_cancelled()
    }

    pub fn summary(&self) -> Summary {
        self.shared.stats.summary()
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.shared.stats
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.shared.stats.dropped.get(reason)
    }

    pub fn open_connections(&self) -> u64 {
        self.shared.stats.open.load(Relaxed)
    }

    /// Payload bytes held in send queues and backlogs.
    pub fn held_bytes(&self) -> usize {
        self.shared.router.budget.used()
    }

    pub fn channels(&self) -> usize {
        self.shared.router.channel_count()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    pub fn clustered(&self) -> bool {
        self.shared.cluster.get().is_some()
    }
}

/// One connection, as `/api/connections` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionView {
    pub id: u64,
    pub peer: String,
    /// The channel it subscribed to (`/null`: a publisher).
    pub channel: String,
    pub tls: bool,
    /// The client certificate's subject (or first alternative name).
    pub identity: Option<String>,
    pub connected_since: String,
    pub connected_seconds: f64,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub queued_messages: usize,
    pub queued_bytes: usize,
    /// The send queue's bounds: messages, payload bytes.
    pub send_queue: usize,
    pub send_queue_bytes: usize,
    pub dropped: u64,
    pub dropped_by_reason: std::collections::BTreeMap<&'static str, u64>,
}

/// One channel, as `/api/channels` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelView {
    pub name: String,
    pub kind: &'static str,
    /// Subscribers (`/topic`) or workers (`/queue`).
    pub subscribers: usize,
    pub backlog_messages: usize,
    pub backlog_bytes: usize,
    pub published: u64,
    pub delivered: u64,
    pub unrouted: u64,
    pub dropped: u64,
    pub dropped_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// The policy in force for it (flags, refined by the file's entries).
    pub topic_overflow: TopicOverflow,
    pub backlog_limit: usize,
    pub backlog_bytes_limit: usize,
}

fn by_reason(drops: &super::stats::Drops) -> std::collections::BTreeMap<&'static str, u64> {
    drops
        .snapshot()
        .into_iter()
        .map(|(r, n)| (r.as_str(), n))
        .collect()
}

impl Monitor {
    /// Every connection that has subscribed and is not gone yet.
    pub fn connections(&self) -> Vec<ConnectionView> {
        let entries: Vec<super::Registered> = super::lock(&self.shared.connections)
            .values()
            .cloned()
            .collect();
        entries
            .into_iter()
            .map(|e| {
                let s = &e.sub.stats;
                let (queued_messages, queued_bytes) = e.sub.queued();
                let (send_queue, send_queue_bytes) = e.sub.bounds();
                ConnectionView {
                    id: e.sub.id,
                    peer: e.sub.peer.to_string(),
                    channel: e.channel.display_name(),
                    tls: e.tls,
                    identity: e.identity.as_ref().map(|i| i.shown()),
                    connected_since: humantime::format_rfc3339_millis(e.since).to_string(),
                    connected_seconds: e.since.elapsed().unwrap_or_default().as_secs_f64(),
                    messages_in: s.received.messages(),
                    bytes_in: s.received.bytes(),
                    messages_out: s.sent.messages(),
                    bytes_out: s.sent.bytes(),
                    queued_messages,
                    queued_bytes,
                    send_queue,
                    send_queue_bytes,
                    dropped: s.dropped.total(),
                    dropped_by_reason: by_reason(&s.dropped),
                }
            })
            .collect()
    }

    /// Every channel in the registry.
    pub fn channel_views(&self) -> Vec<ChannelView> {
        let policy = self.shared.router.policy();
        self.shared
            .router
            .channels()
            .into_iter()
            .map(|c| {
                let p = policy.for_channel(&c.name);
                let queue = crate::proto::is_queue(&c.name);
                ChannelView {
                    name: c.display_name(),
                    kind: if queue { "queue" } else { "topic" },
                    subscribers: c.subscriber_count(),
                    backlog_messages: c.backlog_len(),
                    backlog_bytes: c.backlog_bytes(),
                    published: c.stats.published.messages(),
                    delivered: c.stats.delivered.messages(),
                    unrouted: c.stats.unrouted.load(Relaxed),
                    dropped: c.stats.dropped.total(),
                    dropped_by_reason: by_reason(&c.stats.dropped),
                    topic_overflow: c.overflow(),
                    backlog_limit: p.backlog,
                    backlog_bytes_limit: p.backlog_bytes,
                }
            })
            .collect()
    }
}
