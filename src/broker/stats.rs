//! Counters, kept with relaxed atomics so the hot path never takes a lock to count.
//!
//! Three levels: the whole broker, each channel, each connection. A message that is
//! not delivered is counted under one [`DropReason`] by the broker, and by the
//! channel and the connection it concerns when it has one (a backlog evicted
//! or expired concerns no connection; a frame refused before naming a channel,
//! no channel).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A `/topic` subscriber's send queue was full (policy `drop`).
    QueueFull,
    /// A `/topic` subscriber was disconnected as a slow consumer; this counts the
    /// message that found it full and what was still queued for it.
    SlowConsumer,
    /// A `/topic` subscriber went away with messages still queued for it.
    SubscriberGone,
    /// The drain deadline passed at shutdown before the message was written.
    Shutdown,
    /// An empty payload, which the protocol cannot deliver (it means end of stream).
    EmptyPayload,
    /// A `/topic` message found the broker-wide memory budget (`--max-memory`) spent.
    MemoryLimit,
    /// A publish to a channel that did not exist, with `--max-channels` reached.
    ChannelLimit,
    /// A message from the cluster larger than this broker's `--max-frame`: no
    /// subscriber here could be sent it (a `/queue` one is acknowledged, so
    /// that it does not go round the workers of every broker).
    TooLarge,
    /// A `/queue` message that waited longer than `--backlog-ttl` in a backlog
    /// with no worker.
    Expired,
    /// A publish the access rules do not allow this connection.
    Denied,
    /// A `/queue` message in the backlog of a worker-less channel evicted
    /// to give its place in the registry to a subscription (`--max-channels`).
    Evicted,
    /// A message a worker ended (`TERM`) in a channel with no dead-letter
    /// channel (one that is itself a dead-letter channel).
    Terminated,
    /// A protocol 2 publish to a durable channel refused because the store
    /// holds `--max-disk` (protocol 1 publishers wait instead).
    DiskFull,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::QueueFull,
        DropReason::SlowConsumer,
        DropReason::SubscriberGone,
        DropReason::Shutdown,
        DropReason::EmptyPayload,
        DropReason::MemoryLimit,
        DropReason::ChannelLimit,
        DropReason::TooLarge,
        DropReason::Expired,
        DropReason::Denied,
        DropReason::Evicted,
        DropReason::Terminated,
        DropReason::DiskFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::SubscriberGone => "subscriber_gone",
            DropReason::Shutdown => "shutdown",
            DropReason::EmptyPayload => "empty_payload",
            DropReason::MemoryLimit => "memory_limit",
            DropReason::ChannelLimit => "channel_limit",
            DropReason::TooLarge => "too_large",
            DropReason::Expired => "expired",
            DropReason::Denied => "denied",
            DropReason::Evicted => "evicted",
            DropReason::Terminated => "terminated",
            DropReason::DiskFull => "disk_full",
        }
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub struct Drops([AtomicU64; DropReason::ALL.len()]);

impl Drops {
    pub fn add(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].fetch_add(n, Relaxed);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].load(Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// Messages and bytes through one point.
#[derive(Debug, Default)]
pub struct Flow {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

impl Flow {
    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

/// Whole-broker counters.
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Subscriptions the access rules refused.
    pub denied: AtomicU64,
    pub open: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub slow_consumers_disconnected: AtomicU64,
    pub published: Flow,
    pub delivered: Flow,
    /// `/topic` messages published while the channel had no subscriber: not stored,
    /// by the protocol's rules, and not a loss, but worth knowing.
    pub unrouted: AtomicU64,
    pub dropped: Drops,
    /// Connections that ended, by why.
    pub ended: super::end::Ends,
    /// Acknowledged work, every channel together.
    pub acks: AckStats,
    /// Set when the broker is part of a cluster: the summary then reports the
    /// cluster counters below.
    pub clustered: std::sync::atomic::AtomicBool,
    /// Messages that came from other brokers through the cluster and were
    /// handed to local subscribers or workers.
    pub cluster_in: Flow,
    /// Local messages handed to the cluster (topic forwards, and `/queue`
    /// messages JetStream acknowledged).
    pub cluster_out: Flow,
    /// `/topic` messages that could not be forwarded (NATS unreachable or too
    /// slow); local subscribers got them.
    pub cluster_unforwarded: AtomicU64,
    /// `/queue` messages kept on this broker because JetStream could not take them.
    pub cluster_kept_local: AtomicU64,
    /// `/queue` messages JetStream delivered more than once (a broker died or
    /// a worker left before they were written).
    pub cluster_redelivered: AtomicU64,
    /// Write system calls to subscribers' sockets that took bytes (as
    /// `messages`) and the bytes they took: the physics behind delivery
    /// figures (messages per write, bytes per write).
    pub socket_writes: Flow,
    /// Protocol v2 frames read, by type ([`V2Frame`]).
    pub v2_frames: [AtomicU64; V2Frame::ALL.len()],
    /// Protocol v2 refusals (`REFUSED`, and `ENDED` other than for an
    /// unsubscribe), by reason code.
    pub v2_refusals: [AtomicU64; 15],
    /// Connections that said a protocol v2 hello and were answered.
    pub v2_connections: AtomicU64,
}

/// The protocol v2 frames a client sends, as `/metrics` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Frame {
    Sub,
    Unsub,
    Pub,
    Ping,
    Pong,
    Ack,
    Nak,
    Working,
    Term,
    Credit,
}

impl V2Frame {
    pub const ALL: [V2Frame; 10] = [
        V2Frame::Sub,
        V2Frame::Unsub,
        V2Frame::Pub,
        V2Frame::Ping,
        V2Frame::Pong,
        V2Frame::Ack,
        V2Frame::Nak,
        V2Frame::Working,
        V2Frame::Term,
        V2Frame::Credit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            V2Frame::Sub => "sub",
            V2Frame::Unsub => "unsub",
            V2Frame::Pub => "pub",
            V2Frame::Ping => "ping",
            V2Frame::Pong => "pong",
            V2Frame::Ack => "ack",
            V2Frame::Nak => "nak",
            V2Frame::Working => "working",
            V2Frame::Term => "term",
            V2Frame::Credit => "credit",
        }
    }
}

impl BrokerStats {
    pub fn v2_frame(&self, f: V2Frame) {
        self.v2_frames[f as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn v2_refusal(&self, code: u8) {
        if let Some(c) = self.v2_refusals.get(usize::from(code)) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Per-channel counters.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub published: Flow,
    pub delivered: Flow,
    pub unrouted: AtomicU64,
    pub dropped: Drops,
    /// Messages that came from the cluster into this channel.
    pub cluster_in: Flow,
    /// Acknowledged work (protocol v2 workers that acknowledge).
    pub acks: AckStats,
}

/// Why a held delivery went back to its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Its ack wait ran out.
    Timeout,
    /// The worker said `NAK`.
    Nak,
    /// The worker left (disconnected or unsubscribed) holding it.
    Disconnect,
}

impl Redelivery {
    pub const ALL: [Redelivery; 3] = [Redelivery::Timeout, Redelivery::Nak, Redelivery::Disconnect];

    pub fn as_str(self) -> &'static str {
        match self {
            Redelivery::Timeout => "timeout",
            Redelivery::Nak => "nak",
            Redelivery::Disconnect => "disconnect",
        }
    }
}

/// Why a message went to its dead-letter channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Failed `max_deliveries` times, the last by a `NAK`.
    MaxDeliveries,
    /// A worker said `TERM`.
    Term,
    /// Failed `max_deliveries` times, the last by its ack wait running out.
    Expired,
}

impl DeadReason {
    pub const ALL: [DeadReason; 3] = [
        DeadReason::MaxDeliveries,
        DeadReason::Term,
        DeadReason::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::MaxDeliveries => "max_deliveries",
            DeadReason::Term => "term",
            DeadReason::Expired => "expired",
        }
    }
}

/// Counters of acknowledged work, per channel, per connection and in all.
#[derive(Debug, Default)]
pub struct AckStats {
    /// Deliveries written and not yet answered.
    pub in_flight: AtomicU64,
    pub acked: AtomicU64,
    redelivered: [AtomicU64; 3],
    dead_lettered: [AtomicU64; 3],
    /// Answers for deliveries the connection did not hold.
    pub not_held: AtomicU64,
}

impl AckStats {
    pub fn redelivered(&self, cause: Redelivery, n: u64) {
        self.redelivered[cause as usize].fetch_add(n, Relaxed);
    }

    pub fn dead_lettered(&self, reason: DeadReason) {
        self.dead_lettered[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn redelivered_by(&self, cause: Redelivery) -> u64 {
        self.redelivered[cause as usize].load(Relaxed)
    }

    pub fn dead_lettered_by(&self, reason: DeadReason) -> u64 {
        self.dead_lettered[reason as usize].load(Relaxed)
    }

    /// One fewer in flight (never below zero).
    pub fn settled(&self, n: u64) {
        let _ = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    /// As JSON for the monitoring endpoints.
    pub fn to_json(&self) -> serde_json::Value {
        let by = |f: &dyn Fn(usize) -> (&'static str, u64), n: usize| {
            (0..n)
                .map(f)
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "in_flight": self.in_flight.load(Relaxed),
            "acked": self.acked.load(Relaxed),
            "redelivered": by(&|i| (Redelivery::ALL[i].as_str(), self.redelivered_by(Redelivery::ALL[i])), 3),
            "dead_lettered": by(&|i| (DeadReason::ALL[i].as_str(), self.dead_lettered_by(DeadReason::ALL[i])), 3),
            "not_held": self.not_held.load(Relaxed),
        })
    }
}

/// Per-connection counters.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub received: Flow,
    pub sent: Flow,
    pub dropped: Drops,
    pub acks: AckStats,
}

impl ConnStats {
    /// Publishes of this connection the broker refused rather than routed
    /// (access rules, `--max-channels`): its goodbye must not be confirmed.
    pub fn refused_publishes(&self) -> u64 {
        self.dropped.get(DropReason::Denied) + self.dropped.get(DropReason::ChannelLimit)
    }
}

/// A printable snapshot of [`BrokerStats`], for the shutdown summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub connections: u64,
    pub refused: u64,
    /// Subscriptions the access rules refused.
    pub denied: u64,
    pub protocol_errors: u64,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub delivered: u64,
    pub bytes_out: u64,
    pub unrouted: u64,
    pub slow_consumers_disconnected: u64,
    /// As an object by reason in JSON, as `dropped_by_reason` is in the
    /// connection and channel listings.
    #[serde(serialize_with = "as_object")]
    pub dropped: Vec<(DropReason, u64)>,
    /// Connections that ended, by [`super::end::EndReason`] name.
    #[serde(serialize_with = "as_object")]
    pub ended: Vec<(&'static str, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSummary>,
}

fn as_object<K: Serialize, S: serde::Serializer>(
    pairs: &[(K, u64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, n)| (k, n)))
}

/// The cluster's part of the [`Summary`].
#[derive(Debug, Serialize)]
pub struct ClusterSummary {
    pub from_cluster: u64,
    pub to_cluster: u64,
    pub unforwarded: u64,
    pub kept_local: u64,
    pub redelivered: u64,
}

impl BrokerStats {
    pub fn summary(&self) -> Summary {
        Summary {
            connections: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            denied: self.denied.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            messages_in: self.published.messages(),
            bytes_in: self.published.bytes(),
            delivered: self.delivered.messages(),
            bytes_out: self.delivered.bytes(),
            unrouted: self.unrouted.load(Relaxed),
            slow_consumers_disconnected: self.slow_consumers_disconnected.load(Relaxed),
            dropped: self.dropped.snapshot(),
            ended: self.ended.snapshot(),
            cluster: self.clustered.load(Relaxed).then(|| ClusterSummary {
                from_cluster: self.cluster_in.messages(),
                to_cluster: self.cluster_out.messages(),
                unforwarded: self.cluster_unforwarded.load(Relaxed),
                kept_local: self.cluster_kept_local.load(Relaxed),
                redelivered: self.cluster_redelivered.load(Relaxed),
            }),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections={} refused={} protocol_errors={} messages_in={} delivered={} \
             unrouted={} slow_consumers_disconnected={} dropped=",
            self.connections,
            self.refused,
            self.protocol_errors,
            self.messages_in,
            self.delivered,
            self.unrouted,
            self.slow_consumers_disconnected,
        )?;
        if self.dropped.is_empty() {
            write!(f, "0")?;
        } else {
            let parts: Vec<String> = self
                .dropped
                .iter()
                .map(|(r, n)| format!("{}:{n}", r.as_str()))
                .collect();
            write!(f, "{}", parts.join(","))?;
        }
        write!(f, " ended=")?;
        if self.ended.is_empty() {
            write!(f, "0")?;
        } else {
            let parts: Vec<String> = self.ended.iter().map(|(r, n)| format!("{r}:{n}")).collect();
            write!(f, "{}", parts.join(","))?;
        }
        if let Some(c) = &self.cluster {
            write!(
                f,
                " from_cluster={} to_cluster={} cluster_unforwarded={} cluster_kept_local={} \
                 cluster_redelivered={}",
                c.from_cluster, c.to_cluster, c.unforwarded, c.kept_local, c.redelivered
            )?;
        }
        Ok(())
    }
}
