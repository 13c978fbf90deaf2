//! `aioq serve`'s flags, and the plan they make: the broker's, TLS's, the
//! cluster's and the metrics reporter's settings, checked before anything
//! starts.

use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::broker::ClusterConfig;
use crate::broker::{BrokerConfig, TopicOverflow};
use crate::units::{parse_duration, parse_size};

const AFTER_HELP: &str = "\
Examples:
  aioq serve                              # 127.0.0.1:25000
  aioq serve --port 0                     # a free port, printed on the first line
  aioq serve --host 0.0.0.0 --topic-overflow disconnect --send-queue 4096
  aioq serve --host 0.0.0.0 --cluster nats://10.0.0.9:4222   # one of several brokers
  aioq serve --config /etc/aioq.toml      # settings, per-channel policy, access rules
  aioq serve --config /etc/aioq.toml --check-config

The first line on stdout is `listening on HOST:PORT`. Logs go to stderr.
SIGINT or SIGTERM shut down gracefully: queued messages are flushed (up to
--drain-timeout), each subscriber gets the end-of-stream frame, a summary is logged.
SIGHUP reloads --config: [[channel]], [access] and the policy defaults
(send-queue, send-queue-bytes, worker-queue, backlog, backlog-bytes,
topic-overflow) apply at once; other settings need a restart.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ServeArgs {
    /// Settings from this TOML file (flags and environment override it):
    /// every flag by its name without dashes, [[channel]] policies by prefix,
    /// [access] rules by TLS identity. SIGHUP reloads it.
    // The doc comment is --help text, written for a terminal, not rustdoc.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "FILE", env = "AIOQ_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Check --config and the flags, say what is in force, and exit (0 when
    /// valid, 2 when not).
    #[arg(long, requires = "config")]
    pub check_config: bool,
    /// Address to listen on. Loopback by default: the protocol has no
    /// authentication, so exposing it is a decision to make on purpose.
    /// (AIOQ_HOST points clients at a broker; it does not move this one.)
    #[arg(long, default_value = "127.0.0.1", env = "AIOQ_LISTEN_HOST")]
    pub host: String,
    /// TCP port; 0 picks a free one.
    #[arg(long, default_value_t = 25000, env = "AIOQ_LISTEN_PORT")]
    pub port: u16,
    /// Threads that serve connections (default: half the cores, at least
    /// one). A message's path from a publisher's reader to its subscribers'
    /// writers crosses threads whenever they run on different ones, and the
    /// kernel's network work for those sockets needs cores too (see the
    /// README's "Threads" for what was measured).
    #[arg(long, env = "AIOQ_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Messages each /topic subscriber's send queue holds.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..))]
    pub send_queue: u32,
    /// Payload bytes each subscriber's send queue holds; the queue is full at
    /// whichever bound comes first, so memory stays bounded for large messages.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub send_queue_bytes: usize,
    /// Messages each /queue worker's send queue holds (its prefetch): what a
    /// stalled worker can hold back from the others.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_queue: u32,
    /// Messages a /queue channel holds when no worker has room; beyond it the
    /// publisher is back-pressured.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: u32,
    /// Payload bytes a /queue channel's backlog holds; beyond it the publisher
    /// is back-pressured. All backlogs together hold at most half of
    /// --max-memory, so the other half stays for live subscribers.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub backlog_bytes: usize,
    /// Discard the backlog of a /queue channel that has had no worker for
    /// this long (counted as expired). Default: keep it until a worker comes.
    #[arg(long, value_parser = parse_duration)]
    pub backlog_ttl: Option<Duration>,
    /// What happens to a /topic subscriber whose send queue is full.
    #[arg(long, default_value = "drop", value_parser = topic_overflow())]
    pub topic_overflow: TopicOverflow,
    /// Largest frame accepted (e.g. 16MiB); a client announcing more is disconnected.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_frame: usize,
    /// Longest channel name accepted, in bytes.
    #[arg(long, default_value = "1KiB", value_parser = parse_size)]
    pub max_channel: usize,
    /// Channels held at once. One source address (an IPv6 /64) may create a
    /// tenth of them as worker-less /queue channels by publishing; a publish
    /// past that, or past the limit, is dropped and counted as channel_limit.
    /// A subscription to a new channel when the registry is full evicts the
    /// oldest /queue channel that has no worker (its backlog counted as
    /// evicted); only when every channel has subscribers is it refused with
    /// end-of-stream.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_channels: u32,
    /// Subscriptions one protocol v2 connection may hold at once (a v1
    /// connection holds one).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_subscriptions: u32,
    /// How long a protocol v2 worker that acknowledges its deliveries may hold
    /// one unanswered before it goes to another worker (attempt raised).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Failed deliveries (a nak, an ack wait run out) after which a message
    /// goes to its channel's dead-letter channel (CHANNEL/dead).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub max_deliveries: u32,
    /// Unacknowledged deliveries a protocol v2 worker may ask to hold at once
    /// (its credit).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_credit: u32,
    /// Keep the messages of /queue channels whose names start with PREFIX on
    /// disk (repeatable; `durable = true` in a [[channel]] entry too): they
    /// survive a restart or a crash of the broker, a publish is confirmed
    /// once it is stored (as --fsync says), and a message is gone from disk
    /// only once acknowledged (or written to a worker that does not
    /// acknowledge). Not with --cluster, whose /queue channels JetStream keeps.
    // --help text, not rustdoc.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "PREFIX")]
    pub durable: Vec<String>,
    /// Where durable channels are kept. One broker per directory (a second
    /// is refused while the first runs).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "aioq-data",
        env = "AIOQ_DATA_DIR"
    )]
    pub data_dir: std::path::PathBuf,
    /// When a durable publish counts as stored: `always` (on disk: every
    /// write is fsynced, one fsync shared by every publisher waiting on it),
    /// `interval:D` (written to the file, fsynced every D and every 32 MiB
    /// written: a power loss can take the last D, a crash of the broker alone
    /// nothing), `never` (written; synced at every new segment and every 32 MiB
    /// written, otherwise when the system pleases). Per channel: `fsync =
    /// "always"` or `"never"` in a [[channel]] entry.
    // --help text, not rustdoc.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, default_value = "always", value_parser = parse_fsync)]
    pub fsync: crate::broker::Fsync,
    /// Size at which the durable store starts a new segment file; a segment
    /// is deleted once every message in it (and in every older one) is done.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub segment_size: usize,
    /// Bytes the durable store's segment files may hold. At the bound a
    /// protocol 1 publisher to a durable channel waits (TCP back-pressure)
    /// and a protocol 2 publish is refused with `disk_full`, until workers
    /// settle enough for a segment to be deleted. Default: the file
    /// system's room (a full disk holds publishers back the same way). Per
    /// channel: `max-disk` in a [[channel]] entry (its stored payload bytes).
    // --help text, not rustdoc.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_disk: Option<usize>,
    /// Connections served at once; more are refused with an end-of-stream frame.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a new connection has to send its subscribe frame.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub subscribe_timeout: Duration,
    /// Idle time before TCP keepalive probes; 0 turns keepalive off.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub keepalive: Duration,
    /// How long shutdown may spend flushing send queues.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Memory all send queues and backlogs may hold together: their payload
    /// bytes, the 48 bytes of each place they have room for, and each
    /// channel's state; past it, /topic subscribers miss messages (counted)
    /// and /queue publishers wait.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_memory: usize,
    /// Connections one source address (an IPv6 /64) may hold; 0: no limit.
    /// Default: a quarter of --max-connections for every address but
    /// loopback (local clients all share one address); given, it applies to
    /// loopback too.
    #[arg(long)]
    pub max_connections_per_ip: Option<u32>,
    /// Disconnect a subscriber whose socket accepts nothing for this long while
    /// messages wait for it (a vanished host, or one stalled for good).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Close a connection that leaves a frame half-sent for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub frame_timeout: Duration,
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,
    /// Join a cluster of brokers through this NATS server (e.g.
    /// nats://10.0.0.9:4222; several, comma-separated). /topic messages reach
    /// subscribers on every broker; /queue channels become JetStream
    /// work-queue streams shared by every broker's workers.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// How long JetStream waits for a broker to acknowledge a /queue message
    /// before giving it to another broker (a broker that died holding it).
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "cluster")]
    pub cluster_ack_wait: Duration,
    /// Bytes each /queue stream may hold in JetStream; past it publishers
    /// wait [default: no byte limit, only --cluster-queue-messages].
    /// JetStream sets this much of its storage aside for every stream when it
    /// is created, so a limit also caps the number of /queue channels at the
    /// server's storage divided by it.
    #[arg(long, value_parser = parse_size, requires = "cluster")]
    pub cluster_queue_bytes: Option<usize>,
    /// JetStream messages each /queue stream holds; past it publishers wait.
    /// A publisher's messages to one channel that arrive together are stored
    /// as one JetStream message (up to 256 of them, 64 KiB), so this bounds
    /// stored batches; --cluster-queue-bytes bounds the bytes exactly.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..), requires = "cluster")]
    pub cluster_queue_messages: u64,
    /// Copies JetStream keeps of each /queue stream (1 to 5; more than 1 needs
    /// a clustered NATS).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5), requires = "cluster")]
    pub cluster_replicas: u8,
    /// Keep /queue streams in NATS memory instead of on disk (faster; lost
    /// when nats-server restarts).
    #[arg(long, requires = "cluster")]
    pub cluster_memory: bool,
    /// Serve monitoring over HTTP here: /healthz, /api/server,
    /// /api/connections, /api/channels and /metrics (Prometheus). Read-only;
    /// keep it on loopback or a private network.
    #[arg(long, value_name = "ADDR", value_parser = crate::units::parse_listen_addr)]
    pub http: Option<String>,
    /// A host name browsers may reach the HTTP face by (repeatable), beside
    /// localhost and IP literals: any other Host header gets 403, so that a
    /// web page cannot rebind its own name to this address and read it.
    #[arg(long, value_name = "NAME", requires = "http")]
    pub http_allow_host: Vec<String>,
    /// Channels /metrics gives series of their own (`aioq_channel_*`,
    /// labelled by channel): the N with the most messages published, so
    /// that a dashboard needs no /api/channels and Prometheus no unbounded
    /// labels. 0 for none.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=1000), requires = "http")]
    pub http_channel_series: u16,
    /// Publish the broker's own CPU, memory and counters, like `aioq metrics report`.
    #[arg(long)]
    pub metrics: bool,
    /// Channel for --metrics.
    #[arg(long, default_value = "/topic/metrics")]
    pub metrics_channel: String,
    /// Time between --metrics samples.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub metrics_interval: Duration,
}

/// Everything `serve` needs, checked before anything is bound or printed.
pub struct ServePlan {
    pub broker: BrokerConfig,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The cluster to join; its connection name is set once the port is known.
    pub cluster: Option<ClusterConfig>,
    /// `--metrics`: the channel and the interval of the broker's own samples.
    pub metrics: Option<(String, Duration)>,
}

/// `--cluster` is one or more NATS URLs, comma-separated, each with its
/// scheme: a bare word (`--cluster foo`) would be taken for a host named foo
/// and retried for ever.
fn check_cluster_url(urls: &str) -> anyhow::Result<()> {
    for one in urls.split(',').map(str::trim) {
        let shown = crate::broker::redact(one);
        let bad = |why: &str| {
            crate::exit::usage(format!(
                "--cluster {shown:?}: {why} (expected nats://[USER:PASSWORD@]HOST:PORT, \
                 comma-separated for several)"
            ))
        };
        let Some((scheme, rest)) = one.split_once("://") else {
            return Err(bad("not a URL"));
        };
        if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
            return Err(bad("the scheme must be nats, tls, ws or wss"));
        }
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if host.is_empty() || host.starts_with(':') {
            return Err(bad("no host"));
        }
        one.parse::<async_nats::ServerAddr>()
            .map_err(|e| bad(&e.to_string()))?;
    }
    Ok(())
}

impl ServeArgs {
    /// Checks every flag; a bad value is a usage error naming it.
    pub fn plan(&self) -> anyhow::Result<ServePlan> {
        use crate::ensure_usage;
        ensure_usage!(self.max_frame >= 1, "--max-frame must be at least 1 byte");
        ensure_usage!(
            self.max_frame <= u32::MAX as usize,
            "--max-frame cannot exceed 4GiB - 1 (the length prefix is 32 bits)"
        );
        ensure_usage!(
            self.max_channel >= 1 && self.max_channel <= self.max_frame,
            "--max-channel must be between 1 and --max-frame"
        );
        ensure_usage!(self.max_memory >= 1, "--max-memory must be more than 0");
        ensure_usage!(
            self.backlog_ttl.is_none_or(|t| !t.is_zero()),
            "--backlog-ttl must be more than 0"
        );
        ensure_usage!(
            !self.write_timeout.is_zero(),
            "--write-timeout must be more than 0"
        );
        ensure_usage!(!self.ack_wait.is_zero(), "--ack-wait must be more than 0");
        ensure_usage!(
            !self.frame_timeout.is_zero(),
            "--frame-timeout must be more than 0"
        );
        ensure_usage!(
            !self.metrics || !self.metrics_interval.is_zero(),
            "--metrics-interval must be more than 0"
        );
        ensure_usage!(
            !self.metrics || !self.metrics_channel.is_empty(),
            "--metrics-channel cannot be empty"
        );
        ensure_usage!(
            self.cluster.is_none() || self.durable.is_empty(),
            "--durable and --cluster cannot go together: a clustered broker's /queue channels \
             are kept in JetStream (durable there unless --cluster-memory)"
        );
        ensure_usage!(
            self.segment_size <= 1 << 30,
            "--segment-size must be at most 1GiB"
        );
        ensure_usage!(
            self.max_disk
                .is_none_or(|m| m >= 2 * self.segment_size.max(4096)),
            "--max-disk must hold at least two segments (2 x --segment-size): the one being \
             written and one waiting to be deleted"
        );
        for p in &self.durable {
            ensure_usage!(
                crate::proto::is_queue(p.as_bytes()),
                "--durable {p:?}: only /queue channels can be durable (a prefix starting with /queue)"
            );
        }
        let cluster = match &self.cluster {
            None => None,
            Some(url) => {
                ensure_usage!(
                    !self.cluster_ack_wait.is_zero(),
                    "--cluster-ack-wait must be more than 0"
                );
                check_cluster_url(url)?;
                Some(ClusterConfig {
                    url: url.clone(),
                    ack_wait: self.cluster_ack_wait,
                    queue_max_bytes: self
                        .cluster_queue_bytes
                        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
                    queue_max_messages: i64::try_from(self.cluster_queue_messages)
                        .unwrap_or(i64::MAX),
                    replicas: usize::from(self.cluster_replicas),
                    memory: self.cluster_memory,
                    name: "aioq".into(),
                })
            }
        };
        Ok(ServePlan {
            broker: self.config(),
            tls: self.tls.acceptor().map_err(crate::exit::as_usage)?,
            cluster,
            metrics: self
                .metrics
                .then(|| (self.metrics_channel.clone(), self.metrics_interval)),
        })
    }

    fn config(&self) -> BrokerConfig {
        BrokerConfig {
            send_queue: self.send_queue as usize,
            send_queue_bytes: self.send_queue_bytes.max(1),
            worker_queue: self.worker_queue as usize,
            backlog: self.backlog as usize,
            backlog_bytes: self.backlog_bytes.max(1),
            backlog_ttl: self.backlog_ttl,
            topic_overflow: self.topic_overflow,
            max_frame: self.max_frame,
            max_channel: self.max_channel,
            max_channels: self.max_channels as usize,
            max_subscriptions: self.max_subscriptions as usize,
            ack_wait: self.ack_wait,
            max_deliveries: self.max_deliveries,
            max_credit: self.max_credit,
            max_connections: self.max_connections as usize,
            subscribe_timeout: self.subscribe_timeout,
            keepalive: (!self.keepalive.is_zero()).then_some(self.keepalive),
            drain_timeout: self.drain_timeout,
            max_memory: self.max_memory,
            max_connections_per_ip: self
                .max_connections_per_ip
                .map_or((self.max_connections as usize).div_ceil(4), |n| n as usize),
            per_ip_spares_loopback: self.max_connections_per_ip.is_none(),
            write_timeout: self.write_timeout,
            frame_timeout: self.frame_timeout,
            durable: self.durable.clone(),
        }
    }
}

fn parse_fsync(s: &str) -> Result<crate::broker::Fsync, String> {
    crate::broker::Fsync::parse(s)
}

/// `--topic-overflow`'s values: the broker's policy, named here so that the
/// broker itself knows nothing of clap.
pub(crate) fn topic_overflow() -> impl TypedValueParser<Value = TopicOverflow> {
    PossibleValuesParser::new([
        PossibleValue::new("drop").help("The subscriber misses the message; the loss is counted"),
        PossibleValue::new("disconnect")
            .help("The subscriber is disconnected as a slow consumer; the loss is counted"),
    ])
    .map(|v| match v.as_str() {
        "disconnect" => TopicOverflow::Disconnect,
        _ => TopicOverflow::Drop,
    })
}
