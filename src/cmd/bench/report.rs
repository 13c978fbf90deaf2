//! What the bench reports. The JSON form (`--json`) is this module's structs,
//! serialised as they are: field names are a stable schema (README, "bench").

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

impl Latency {
    pub fn from(h: &Histogram<u64>) -> Self {
        Self {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            samples: h.len(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fast {
    pub subscribers: usize,
    /// Per subscriber for a topic, all workers together for a queue.
    pub delivered_per_s: f64,
    /// Lowest over the fast subscribers (topic), or of the workers together (queue).
    pub delivered_fraction: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slow {
    pub mode: super::clients::SlowMode,
    pub received: u64,
    pub disconnected_by_broker: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct IsolationRun {
    pub slow_subscribers: usize,
    pub target_rate: f64,
    pub published: u64,
    /// Frame bytes published, the priming burst included.
    pub published_bytes: u64,
    /// The publisher could not keep to its schedule: the broker held it back.
    pub publisher_held_back: bool,
    /// Measured messages per second, past the warm-up.
    pub publish_rate: f64,
    /// False when the publisher could not finish by its deadline (held back by
    /// the broker) or a fast subscriber lost its connection.
    pub complete: bool,
    pub fast: Fast,
    pub slow: Vec<Slow>,
}

/// Whether a slow subscriber's stall reached the broker at all: the kernel
/// buffers on its path (the broker's send buffer, its own receive buffer)
/// absorb megabytes, and a stall they absorb tells nothing about the broker.
#[derive(Debug, Clone, Serialize)]
pub struct Stall {
    /// Frame bytes each stalled subscriber was owed in the run (a worker's
    /// round-robin share, for a queue).
    pub owed_bytes: u64,
    /// What the kernel can hold on a stalled path: this machine's largest
    /// TCP send buffer plus the stalled subscriber's receive buffer.
    pub path_bytes: u64,
    pub publisher_held_back: bool,
    /// Owed well past `path_bytes`, or the publisher held back.
    pub felt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The stall was felt: `isolation_ratio` says how well the broker
    /// isolated the fast subscribers from it.
    Measured,
    /// The stall may not have reached the broker: no ratio is claimed.
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    pub channel_kind: &'static str,
    pub baseline: IsolationRun,
    pub with_slow: IsolationRun,
    pub verdict: Verdict,
    pub stall: Stall,
    /// Fast subscribers' delivered rate with the slow ones ÷ without; null
    /// when the verdict is inconclusive.
    pub isolation_ratio: Option<f64>,
    /// Fast subscribers' p99 latency with the slow ones ÷ without.
    pub p99_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub channel_kind: &'static str,
    pub subscribers: usize,
    pub size: usize,
    pub published: u64,
    pub published_per_s: f64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub delivered_mb_per_s: f64,
    pub lost: u64,
    pub complete: bool,
    /// `/queue`: the smallest and largest share of the messages one worker
    /// got (equal workers, none slow: 1/workers each when fair).
    pub worker_shares: Option<(f64, f64)>,
    /// The embedded broker, or an aioq broker with --target-metrics.
    pub physics: Option<Physics>,
}

/// What a delivery cost the broker: how many messages each write system call
/// carried, how many bytes, and the broker's CPU time per delivery.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Physics {
    pub messages_per_write: f64,
    pub bytes_per_write: f64,
    pub cpu_ns_per_delivery: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub rate: f64,
    pub published: u64,
    pub received: u64,
    /// From each message's send time.
    pub latency: Latency,
    /// From each message's due time by the publisher's schedule: a stall
    /// that held the publisher back counts for every message it delayed
    /// (corrected for coordinated omission).
    pub intended_latency: Latency,
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    pub connections: usize,
    pub messages: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// From publishing one message to its arrival at the last subscriber.
    pub fanout_time: Latency,
    /// Resident memory added per subscriber connection, embedded broker only
    /// (the process also holds the bench's side of each connection).
    pub rss_per_connection_bytes: Option<u64>,
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub aioq_version: &'static str,
    /// "embedded" or the `--target` address.
    pub target: String,
    /// aioq, nats or redis.
    pub broker: &'static str,
    /// Scenarios the broker cannot run, and why.
    pub skipped: Vec<String>,
    pub isolation: Vec<Isolation>,
    pub throughput: Vec<Throughput>,
    pub latency: Option<LatencyReport>,
    pub fanout: Option<Fanout>,
}
