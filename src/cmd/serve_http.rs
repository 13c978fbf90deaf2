//! `serve --http ADDR`: the broker seen from inside while it runs.
//! `/healthz` (200 while accepting, 503 while draining), `/api/server`
//! (version, uptime, limits in effect, totals), `/api/connections` and
//! `/api/channels` (one row each, `?sort=FIELD&limit=N`), and `/metrics` (the same
//! counters in the Prometheus text format, with the standard `process_*`
//! metrics). Read-only; every figure is read from the broker's counters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::broker::monitor::Monitor;
use crate::broker::stats::{DropReason, V2Frame};
use std::sync::atomic::Ordering::Relaxed;

/// The monitoring routes; `channel_series` channels get series of their own
/// in /metrics.
pub fn router(monitor: Monitor, channel_series: usize) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Counters(monitor.clone())));
    if channel_series > 0 {
        registry.register_collector(Box::new(ChannelSeries {
            monitor: monitor.clone(),
            limit: channel_series,
        }));
    }
    registry.register_collector(Box::new(Process));
    let state = Arc::new((monitor, registry));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/server", get(server))
        .route("/api/connections", get(connections))
        .route("/api/channels", get(channels))
        .route("/metrics", get(metrics))
        .with_state(state)
}

type AppState = Arc<(Monitor, Registry)>;

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.0.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn server(State(s): State<AppState>) -> impl IntoResponse {
    let m = &s.0;
    let c = m.config();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": crate::proto::PROTOCOL_VERSION,
        "uptime_seconds": m.uptime().as_secs_f64(),
        "draining": m.draining(),
        "clustered": m.clustered(),
        "config": {
            "send_queue": c.send_queue,
            "send_queue_bytes": c.send_queue_bytes,
            "worker_queue": c.worker_queue,
            "backlog": c.backlog,
            "backlog_bytes": c.backlog_bytes,
            "backlog_ttl_seconds": c.backlog_ttl.map(|d| d.as_secs_f64()),
            "topic_overflow": format!("{:?}", c.topic_overflow).to_lowercase(),
            "max_frame": c.max_frame,
            "max_channel": c.max_channel,
            "max_channels": c.max_channels,
            "max_connections": c.max_connections,
            "max_connections_per_ip": c.max_connections_per_ip,
            "max_memory": c.max_memory,
            "write_timeout_seconds": c.write_timeout.as_secs_f64(),
            "frame_timeout_seconds": c.frame_timeout.as_secs_f64(),
            "drain_timeout_seconds": c.drain_timeout.as_secs_f64(),
        },
        "open_connections": m.open_connections(),
        "channels": m.channels(),
        "held_bytes": m.held_bytes(),
        "held_overhead_bytes": m.held_overhead_bytes(),
        "totals": m.summary(),
        "store": m.disk().map(|d| {
            let mut j = json!({
                "dir": d.dir().display().to_string(),
                "fsync": d.mode().name(),
            });
            for (key, _, _, v) in store_series(d) {
                j[key] = v.json();
            }
            j
        }),
    }))
}

/// `?sort=FIELD&limit=N` on the lists: largest first by a number (a stable
/// sort: ties keep the listing order, by id or name); at most `limit` (100 unless said, 10,000 at most).
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    sort: Option<String>,
    limit: Option<usize>,
}

const LIST_LIMIT: usize = 100;
const LIST_MAX: usize = 10_000;

/// A page of a listing as JSON, or a 400 naming the fields it sorts by.
fn listed<T: serde::Serialize>(
    page: Result<crate::broker::monitor::Page<T>, Vec<&'static str>>,
    q: &ListQuery,
    what: &str,
) -> axum::response::Response {
    match page {
        Ok(p) => Json(json!({ "total": p.total, what: p.rows })).into_response(),
        // JSON as the answers it stands for, so that a script reads the
        // fields it may sort by.
        Err(known) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!(
                    "sort={}: not a number of {what}; one of {}",
                    q.sort.as_deref().unwrap_or_default(),
                    known.join(", ")
                ),
                "sort_fields": known,
            })),
        )
            .into_response(),
    }
}

impl ListQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(LIST_LIMIT).min(LIST_MAX)
    }
}

async fn connections(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> axum::response::Response {
    listed(
        s.0.connections(q.sort.as_deref(), q.limit()),
        &q,
        "connections",
    )
}

async fn channels(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> axum::response::Response {
    listed(
        s.0.channel_views(q.sort.as_deref(), q.limit()),
        &q,
        "channels",
    )
}

async fn metrics(State(s): State<AppState>) -> axum::response::Response {
    crate::runtime::http::prometheus(&s.1)
}

/// The broker's counters, read at each scrape.
#[derive(Debug)]
struct Counters(Monitor);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A value of a store series: a count, or seconds.
#[derive(Clone, Copy)]
enum Value {
    Count(u64),
    Seconds(f64),
}

impl Value {
    fn json(self) -> serde_json::Value {
        match self {
            Value::Count(n) => json!(n),
            Value::Seconds(s) => json!(s),
        }
    }
}

/// A durable store's series: (name after `aioq_store_`, counter or
/// gauge, help, value). `/metrics` and `/api/server` both show these.
fn store_series(d: &crate::broker::Disk) -> [(&'static str, bool, &'static str, Value); 14] {
    let s = &d.stats;
    let n = |a: &std::sync::atomic::AtomicU64| Value::Count(a.load(Relaxed));
    let secs = |a: &std::sync::atomic::AtomicU64| Value::Seconds(a.load(Relaxed) as f64 / 1e6);
    const COUNTER: bool = true;
    const GAUGE: bool = false;
    [
        ("fsyncs", COUNTER, "Fsyncs of the durable store.", n(&s.fsyncs)),
        (
            "synced_records",
            COUNTER,
            "Records those fsyncs made durable (divided by fsyncs: records per fsync).",
            n(&s.synced_records),
        ),
        (
            "fsync_seconds",
            COUNTER,
            "Time spent in fsync (divided by fsyncs: the mean fsync latency).",
            secs(&s.fsync_micros),
        ),
        (
            "written_bytes",
            COUNTER,
            "Bytes written to the durable store's segments.",
            n(&s.written_bytes),
        ),
        (
            "errors",
            COUNTER,
            "Writes or fsyncs of the durable store that failed (retried).",
            n(&s.errors),
        ),
        (
            "segments_deleted",
            COUNTER,
            "Segments deleted once every message in them was settled.",
            n(&s.segments_deleted),
        ),
        (
            "torn_records",
            COUNTER,
            "Records cut short by a crash, truncated at start.",
            n(&s.torn),
        ),
        (
            "quarantined_segments",
            COUNTER,
            "Damaged segments set aside at start.",
            n(&s.quarantined),
        ),
        (
            "redelivered_after_restart",
            COUNTER,
            "Stored messages a worker held when the broker stopped, delivered again after the start.",
            n(&s.redelivered_after_restart),
        ),
        (
            "unreadable_messages",
            COUNTER,
            "Messages kept on disk only whose record could no longer be read back (damaged since written): lost.",
            n(&s.unreadable),
        ),
        (
            "messages",
            GAUGE,
            "Messages in the durable store, not yet settled.",
            n(&s.messages),
        ),
        ("bytes", GAUGE, "Payload bytes of those messages.", n(&s.bytes)),
        (
            "recovered_messages",
            GAUGE,
            "Messages read back from the durable store at start.",
            n(&s.recovered),
        ),
        (
            "recovery_seconds",
            GAUGE,
            "How long reading the durable store back took at start.",
            secs(&s.recovery_micros),
        ),
    ]
}

fn counter_of<N: prometheus_client::encoding::EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    c: ConstCounter<N>,
) -> std::fmt::Result {
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// The durable store's series on `/metrics`, when the broker has one.
fn store_metrics(e: &mut DescriptorEncoder, d: &crate::broker::Disk) -> std::fmt::Result {
    for (key, counter, help, v) in store_series(d) {
        let name = format!("aioq_store_{key}");
        match (counter, v) {
            (true, Value::Count(n)) => counter_of(e, &name, help, ConstCounter::new(n))?,
            (true, Value::Seconds(s)) => counter_of(e, &name, help, ConstCounter::new(s))?,
            (false, Value::Count(n)) => {
                gauge(e, &name, help, i64::try_from(n).unwrap_or(i64::MAX))?
            }
            (false, Value::Seconds(s)) => {
                let g = ConstGauge::new(s);
                g.encode(e.encode_descriptor(&name, help, None, g.metric_type())?)?
            }
        }
    }
    Ok(())
}

impl Collector for Counters {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let s = m.summary();
        counter(
            &mut e,
            "aioq_connections_accepted",
            "Connections accepted.",
            s.connections,
        )?;
        counter(
            &mut e,
            "aioq_connections_refused",
            "Connections refused (limits, failed TLS handshakes).",
            s.refused,
        )?;
        counter(
            &mut e,
            "aioq_subscriptions_denied",
            "Subscriptions the access rules refused.",
            s.denied,
        )?;
        counter(
            &mut e,
            "aioq_protocol_errors",
            "Connections closed for breaking the protocol.",
            s.protocol_errors,
        )?;
        gauge(
            &mut e,
            "aioq_connections_open",
            "Connections open now.",
            m.open_connections() as i64,
        )?;
        counter(
            &mut e,
            "aioq_messages_in",
            "Messages published to the broker.",
            s.messages_in,
        )?;
        counter(
            &mut e,
            "aioq_bytes_in",
            "Payload bytes published.",
            s.bytes_in,
        )?;
        counter(
            &mut e,
            "aioq_messages_delivered",
            "Messages written to subscribers.",
            s.delivered,
        )?;
        counter(
            &mut e,
            "aioq_bytes_delivered",
            "Payload bytes written.",
            s.bytes_out,
        )?;
        let writes = &m.stats().socket_writes;
        counter(
            &mut e,
            "aioq_socket_writes",
            "Write system calls to subscribers' sockets that took bytes: \
             messages delivered per write is the broker's batching.",
            writes.messages(),
        )?;
        counter(
            &mut e,
            "aioq_socket_write_bytes",
            "Bytes those writes took (frames with their length prefixes).",
            writes.bytes(),
        )?;
        counter(
            &mut e,
            "aioq_messages_unrouted",
            "Topic messages published while nobody subscribed.",
            s.unrouted,
        )?;
        let dropped = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_messages_dropped",
            "Messages not delivered, by reason.",
            None,
            dropped.metric_type(),
        )?;
        for reason in DropReason::ALL {
            let labels = vec![("reason", reason.as_str())];
            ConstCounter::new(m.dropped(reason)).encode(family.encode_family(&labels)?)?;
        }
        let stats = m.stats();
        counter(
            &mut e,
            "aioq_v2_connections",
            "Connections that said a protocol v2 hello.",
            stats.v2_connections.load(Relaxed),
        )?;
        let frames = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_v2_frames",
            "Protocol v2 frames read from clients, by type.",
            None,
            frames.metric_type(),
        )?;
        for f in V2Frame::ALL {
            let labels = vec![("type", f.name())];
            ConstCounter::new(stats.v2_frames[f as usize].load(Relaxed))
                .encode(family.encode_family(&labels)?)?;
        }
        let refusals = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_v2_refusals",
            "Protocol v2 publishes and subscriptions refused, by reason.",
            None,
            refusals.metric_type(),
        )?;
        for (code, n) in stats.v2_refusals.iter().enumerate() {
            let Some(name) = crate::proto::v2::reason::name(code as u8) else {
                continue;
            };
            let labels = vec![("reason", name)];
            ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
        }
        let acks = &stats.acks;
        counter(
            &mut e,
            "aioq_acked",
            "Deliveries acknowledging workers acknowledged.",
            acks.acked.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "aioq_in_flight",
            "Deliveries written to acknowledging workers and not yet answered.",
            acks.in_flight.load(Relaxed) as i64,
        )?;
        counter(
            &mut e,
            "aioq_ack_not_held",
            "Answers for delivery ids the connection did not hold.",
            acks.not_held.load(Relaxed),
        )?;
        let redelivered = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_redelivered",
            "Held deliveries that went back to their channel, by cause.",
            None,
            redelivered.metric_type(),
        )?;
        for cause in crate::broker::stats::Redelivery::ALL {
            let labels = vec![("cause", cause.as_str())];
            ConstCounter::new(acks.redelivered_by(cause)).encode(family.encode_family(&labels)?)?;
        }
        let dead = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_dead_lettered",
            "Messages sent to a dead-letter channel, by reason.",
            None,
            dead.metric_type(),
        )?;
        for reason in crate::broker::stats::DeadReason::ALL {
            let labels = vec![("reason", reason.as_str())];
            ConstCounter::new(acks.dead_lettered_by(reason))
                .encode(family.encode_family(&labels)?)?;
        }
        let ended = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_connections_ended",
            "Connections that ended, by why.",
            None,
            ended.metric_type(),
        )?;
        for (reason, n) in &s.ended {
            let labels = vec![("reason", *reason)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        gauge(
            &mut e,
            "aioq_held_bytes",
            "Payload bytes held in send queues and backlogs.",
            m.held_bytes() as i64,
        )?;
        gauge(
            &mut e,
            "aioq_held_overhead_bytes",
            "Memory the budget counts besides payloads: queues' places, channels' state.",
            m.held_overhead_bytes() as i64,
        )?;
        gauge(
            &mut e,
            "aioq_memory_limit_bytes",
            "The memory budget (--max-memory).",
            m.config().max_memory as i64,
        )?;
        gauge(
            &mut e,
            "aioq_channels",
            "Channels in the registry.",
            m.channels() as i64,
        )?;
        if let Some(d) = m.disk() {
            store_metrics(&mut e, d)?;
        }
        gauge(
            &mut e,
            "aioq_draining",
            "1 while the broker shuts down.",
            i64::from(m.draining()),
        )?;
        if let Some(c) = &s.cluster {
            counter(
                &mut e,
                "aioq_cluster_in",
                "Messages from other brokers.",
                c.from_cluster,
            )?;
            counter(
                &mut e,
                "aioq_cluster_out",
                "Messages handed to the cluster.",
                c.to_cluster,
            )?;
            counter(
                &mut e,
                "aioq_cluster_unforwarded",
                "Topic messages that could not be forwarded.",
                c.unforwarded,
            )?;
        }
        Ok(())
    }
}

/// Series per channel for the `limit` channels with the most messages
/// published: a cumulative count, so the set a dashboard sees changes only
/// when a channel overtakes another, and the label's cardinality is bounded
/// however many channels clients make.
#[derive(Debug)]
struct ChannelSeries {
    monitor: Monitor,
    limit: usize,
}

type ChannelFigure = fn(&crate::broker::monitor::ChannelView) -> Option<u64>;

impl Collector for ChannelSeries {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Ok(page) = self.monitor.channel_views(Some("published"), self.limit) else {
            return Ok(());
        };
        let counters: [(&str, &str, ChannelFigure); 4] = [
            (
                "aioq_channel_published",
                "Messages published to the channel.",
                |c| Some(c.published),
            ),
            (
                "aioq_channel_delivered",
                "Messages the channel's subscribers were written.",
                |c| Some(c.delivered),
            ),
            (
                "aioq_channel_dropped",
                "The channel's messages not delivered (every reason).",
                |c| Some(c.dropped),
            ),
            (
                "aioq_channel_unrouted",
                "Topic messages published while nobody subscribed.",
                |c| (c.kind == "topic").then_some(c.unrouted),
            ),
        ];
        for (name, help, figure) in counters {
            let mut family =
                e.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for c in &page.rows {
                if let Some(v) = figure(c) {
                    let labels = [("channel", c.name.as_str())];
                    ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let gauges: [(&str, &str, ChannelFigure); 5] = [
            (
                "aioq_channel_subscribers",
                "Subscribers (topic) or workers (queue) now.",
                |c| Some(c.subscribers as u64),
            ),
            (
                "aioq_channel_backlog_messages",
                "Messages waiting for a worker, in memory.",
                |c| (c.kind == "queue").then_some(c.backlog_messages as u64),
            ),
            ("aioq_channel_backlog_bytes", "Their payload bytes.", |c| {
                (c.kind == "queue").then_some(c.backlog_bytes as u64)
            }),
            (
                "aioq_channel_in_flight",
                "Deliveries held by acknowledging workers, unanswered.",
                |c| c.acks.as_ref().and_then(|j| j["in_flight"].as_u64()),
            ),
            (
                "aioq_channel_stored_messages",
                "Durable channel: messages stored and not yet done.",
                |c| c.stored.as_ref().and_then(|j| j["messages"].as_u64()),
            ),
        ];
        for (name, help, figure) in gauges {
            let mut family =
                e.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for c in &page.rows {
                if let Some(v) = figure(c) {
                    let labels = [("channel", c.name.as_str())];
                    ConstGauge::new(v as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        gauge(
            &mut e,
            "aioq_channels_without_series",
            "Channels past --http-channel-series, in /api/channels only.",
            page.total.saturating_sub(page.rows.len()) as i64,
        )
    }
}

/// The standard `process_*` metrics, from /proc/self.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces), from field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        // Clock ticks per second: 100 on every Linux this runs on.
        const TICKS: f64 = 100.0;
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let c = ConstCounter::new((utime + stime) as f64 / TICKS);
            c.encode(e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let page = 4096;
        if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (rss * page) as i64,
            )?;
        }
        if let Some(vsize) = field(23) {
            gauge(
                &mut e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                vsize as i64,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut e,
                "process_open_fds",
                "Number of open file descriptors.",
                fds.count() as i64,
            )?;
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let (Some(boot), Some(start)) = (boot, field(22)) {
            let g = ConstGauge::new(boot as f64 + start as f64 / TICKS);
            g.encode(e.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
