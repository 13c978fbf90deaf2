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
        self.shared.phases.stop_reading.is_cancelled()
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

    /// What the budget counts besides payloads: the places send queues and
    /// backlogs hold and each channel's own state.
    pub fn held_overhead_bytes(&self) -> usize {
        self.shared.router.budget.overhead()
    }

    pub fn channels(&self) -> usize {
        self.shared.router.channel_count()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    /// The durable store, when the broker has one.
    pub fn disk(&self) -> Option<&Arc<super::Disk>> {
        self.shared.router.disk()
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
    /// 1, or 2 for a connection that said a version 2 hello.
    pub protocol: u8,
    /// Protocol v2: its subscriptions, by the client's ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionView>,
    /// Protocol v2: confirm ids read and not yet answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanswered_confirms: Option<u64>,
    /// Protocol v2, an acknowledging worker: deliveries held (in flight),
    /// acknowledged, redelivered by cause, answers for ids it did not hold,
    /// and how long the oldest held one has waited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks: Option<serde_json::Value>,
}

/// One subscription of a protocol v2 connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionView {
    pub sid: u32,
    pub channel: String,
    /// Its channel's send-queue bounds, where tighter than the connection's:
    /// messages, payload bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_queue_bytes: Option<usize>,
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
    /// A `/queue` channel: its acknowledging workers' deliveries in flight,
    /// acknowledged, redelivered by cause, dead-lettered by reason; messages
    /// waiting out a delay; the oldest delivery in flight's age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks: Option<serde_json::Value>,
    /// A durable `/queue` channel: messages and payload bytes in the store
    /// (not yet settled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<serde_json::Value>,
}

/// How long the oldest held delivery of `held` has waited, in seconds.
fn oldest_age(oldest_ms: Option<u64>) -> serde_json::Value {
    let now = super::held::now_ms();
    oldest_ms.map_or(serde_json::Value::Null, |t| {
        serde_json::Value::from(now.saturating_sub(t) as f64 / 1000.0)
    })
}

fn by_reason(drops: &super::stats::Drops) -> std::collections::BTreeMap<&'static str, u64> {
    drops
        .snapshot()
        .into_iter()
        .map(|(r, n)| (r.as_str(), n))
        .collect()
}

/// Longest channel name or identity a listing shows, in characters: rows
/// stay small whatever names clients chose (up to `--max-channel`).
const SHOWN_MAX: usize = 200;

fn clipped(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(SHOWN_MAX) {
        s.truncate(at);
        s.push('…');
    }
    s
}

/// A numeric field a listing can be sorted by, read straight from what the
/// row is made of (no row is built to sort).
type Field<S> = (&'static str, fn(&S) -> f64);

/// The first `limit` of `items`, largest `sort` field first (ties, and no
/// `sort`, in `order`), made into rows: what a request costs beyond one key
/// per item is bounded by `limit`. `Err` lists the fields there are.
fn top<S, T>(
    items: Vec<S>,
    fields: &[Field<S>],
    sort: Option<&str>,
    limit: usize,
    order: impl Fn(&S, &S) -> std::cmp::Ordering,
    row: impl Fn(&S) -> T,
) -> Result<Vec<T>, Vec<&'static str>> {
    let key = match sort {
        None => None,
        Some(name) => match fields.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => Some(*f),
            None => return Err(fields.iter().map(|(n, _)| *n).collect()),
        },
    };
    let mut keyed: Vec<(f64, S)> = items
        .into_iter()
        .map(|s| (key.map_or(0.0, |k| k(&s)), s))
        .collect();
    let cmp = |a: &(f64, S), b: &(f64, S)| b.0.total_cmp(&a.0).then_with(|| order(&a.1, &b.1));
    if limit == 0 {
        return Ok(Vec::new());
    }
    if keyed.len() > limit {
        keyed.select_nth_unstable_by(limit - 1, cmp);
        keyed.truncate(limit);
    }
    keyed.sort_by(cmp);
    Ok(keyed.iter().map(|(_, s)| row(s)).collect())
}

/// A page of a listing: how many there are in all, and the rows asked for.
pub struct Page<T> {
    pub total: usize,
    pub rows: Vec<T>,
}

impl Monitor {
    /// Connections that have subscribed and are not gone yet: `limit` of
    /// them, by `sort` (largest first) or by id.
    pub fn connections(
        &self,
        sort: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConnectionView>, Vec<&'static str>> {
        type R = super::Registered;
        let entries: Vec<R> = super::lock(&self.shared.connections)
            .values()
            .cloned()
            .collect();
        let fields: &[Field<R>] = &[
            ("id", |e| e.conn.id as f64),
            ("connected_seconds", |e| {
                e.since.elapsed().unwrap_or_default().as_secs_f64()
            }),
            ("messages_in", |e| e.conn.stats.received.messages() as f64),
            ("bytes_in", |e| e.conn.stats.received.bytes() as f64),
            ("messages_out", |e| e.conn.stats.sent.messages() as f64),
            ("bytes_out", |e| e.conn.stats.sent.bytes() as f64),
            ("queued_messages", |e| e.conn.queued().0 as f64),
            ("queued_bytes", |e| e.conn.queued().1 as f64),
            ("send_queue", |e| e.conn.bounds().0 as f64),
            ("send_queue_bytes", |e| e.conn.bounds().1 as f64),
            ("dropped", |e| e.conn.stats.dropped.total() as f64),
        ];
        let total = entries.len();
        let rows = top(
            entries,
            fields,
            sort,
            limit,
            |a, b| a.conn.id.cmp(&b.conn.id),
            |e| {
                let s = &e.conn.stats;
                let (queued_messages, queued_bytes) = e.conn.queued();
                let (send_queue, send_queue_bytes) = e.conn.bounds();
                ConnectionView {
                    id: e.conn.id,
                    peer: e.conn.peer.to_string(),
                    // Protocol v2: the first subscription's (all are below).
                    channel: match (&e.conn.v2, e.conn.first_subscription()) {
                        (Some(_), Some(s)) => clipped(s.channel.display_name()),
                        _ => clipped(crate::proto::shown(e.name())),
                    },
                    tls: e.tls,
                    identity: e.identity.as_ref().map(|i| clipped(i.shown())),
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
                    protocol: if e.conn.v2.is_some() { 2 } else { 1 },
                    subscriptions: match &e.conn.v2 {
                        Some(_) => e
                            .conn
                            .subscriptions()
                            .iter()
                            .map(|s| SubscriptionView {
                                sid: s.ids.sid,
                                channel: clipped(s.channel.display_name()),
                                send_queue: s.topic_bound().map(|b| b.0),
                                send_queue_bytes: s.topic_bound().map(|b| b.1),
                            })
                            .collect(),
                        None => Vec::new(),
                    },
                    unanswered_confirms: e
                        .conn
                        .v2
                        .as_ref()
                        .map(|v| v.unanswered.load(std::sync::atomic::Ordering::Relaxed)),
                    acks: e
                        .conn
                        .v2
                        .as_ref()
                        .filter(|v| v.acker.load(Relaxed))
                        .map(|v| {
                            let oldest = super::lock(&v.held)
                                .oldest_by_channel()
                                .into_iter()
                                .map(|(_, t)| t)
                                .min();
                            let mut j = s.acks.to_json();
                            j["oldest_in_flight_seconds"] = oldest_age(oldest);
                            j
                        }),
                }
            },
        )?;
        Ok(Page { total, rows })
    }

    /// Channels in the registry: `limit` of them, by `sort` (largest
    /// first) or by name.
    pub fn channel_views(
        &self,
        sort: Option<&str>,
        limit: usize,
    ) -> Result<Page<ChannelView>, Vec<&'static str>> {
        type C = Arc<super::router::Channel>;
        let policy = self.shared.router.policy();
        let channels = self.shared.router.channels();
        // The oldest delivery in flight of each channel, from every
        // acknowledging worker's table.
        let mut oldest: std::collections::HashMap<bytes::Bytes, u64> = Default::default();
        let ackers: Vec<_> = super::lock(&self.shared.ackers)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for conn in ackers {
            if let Some(v2) = &conn.v2 {
                for (name, t) in super::lock(&v2.held).oldest_by_channel() {
                    let o = oldest.entry(name).or_insert(t);
                    *o = (*o).min(t);
                }
            }
        }
        let fields: &[Field<C>] = &[
            ("subscribers", |c| c.subscriber_count() as f64),
            ("backlog_messages", |c| c.backlog_len() as f64),
            ("backlog_bytes", |c| c.backlog_bytes() as f64),
            ("published", |c| c.stats.published.messages() as f64),
            ("delivered", |c| c.stats.delivered.messages() as f64),
            ("unrouted", |c| c.stats.unrouted.load(Relaxed) as f64),
            ("dropped", |c| c.stats.dropped.total() as f64),
        ];
        let total = channels.len();
        let rows = top(
            channels,
            fields,
            sort,
            limit,
            |a, b| a.name.cmp(&b.name),
            |c| {
                let p = policy.for_channel(&c.name);
                let queue = crate::proto::is_queue(&c.name);
                ChannelView {
                    name: clipped(c.display_name()),
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
                    acks: match &c.kind {
                        super::router::Kind::Queue(q) => {
                            let mut j = c.stats.acks.to_json();
                            j["delayed"] = q.delayed_len().into();
                            j["oldest_in_flight_seconds"] =
                                oldest_age(oldest.get(&c.name).copied());
                            Some(j)
                        }
                        super::router::Kind::Topic(_) => None,
                    },
                    stored: match &c.kind {
                        super::router::Kind::Queue(q) => q.log().map(|l| {
                            let (messages, bytes) = l.disk.channel(&c.name);
                            serde_json::json!({"messages": messages, "bytes": bytes})
                        }),
                        super::router::Kind::Topic(_) => None,
                    },
                }
            },
        )?;
        Ok(Page { total, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_keeps_the_largest_in_order_and_ties_by_order() {
        let fields: &[Field<(u32, u32)>] = &[("n", |x| x.1 as f64)];
        let items: Vec<(u32, u32)> = (0..1000).map(|i| (i, i % 7)).collect();
        let got = top(
            items.clone(),
            fields,
            Some("n"),
            3,
            |a, b| a.0.cmp(&b.0),
            |x| x.0,
        )
        .unwrap();
        assert_eq!(got, vec![6, 13, 20]);
        let got = top(
            items.clone(),
            fields,
            None,
            2,
            |a, b| b.0.cmp(&a.0),
            |x| x.0,
        )
        .unwrap();
        assert_eq!(got, vec![999, 998]);
        assert!(top(
            items.clone(),
            fields,
            None,
            0,
            |a, b| a.0.cmp(&b.0),
            |x| x.0
        )
        .unwrap()
        .is_empty());
        assert_eq!(
            top(items, fields, Some("x"), 3, |a, b| a.0.cmp(&b.0), |x| x.0).unwrap_err(),
            vec!["n"]
        );
    }

    #[test]
    fn long_names_are_clipped() {
        assert_eq!(clipped("abc".into()), "abc");
        let long = clipped("é".repeat(500));
        assert_eq!(long.chars().count(), SHOWN_MAX + 1);
        assert!(long.ends_with('…'));
    }
}
