//! `aioq bench`: slow-consumer isolation, throughput, latency and fan-out of the
//! embedded broker or any broker that speaks the protocol.

mod clients;
mod compare;
mod jobs;
mod link;
mod meter;
mod payload;
mod report;
mod scenarios;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use comfy_table::{presets, Cell, Table};
use indicatif::{ProgressBar, ProgressStyle};

use self::clients::SlowMode;
use self::link::Target;
use self::report::*;
use crate::broker::{Broker, BrokerConfig, TopicOverflow};
use crate::client::Connector;
use crate::runtime::output::Stream;
use crate::units::{parse_duration, parse_size};

const AFTER_HELP: &str = "\
Examples:
  aioq bench                                  # every scenario, embedded broker
  aioq bench --scenario isolation --slow 2 --slow-mode stall
  aioq bench --target 10.0.0.5:25000 --json > result.json
  aioq bench --scenario throughput --size 1KiB --subscribers 8
  aioq bench --scenario isolation --min-isolation 0.9   # exit 1 below 0.9
  aioq bench --target a:25000 --subscribe-target b:25000  # across a cluster
  aioq bench --target nats://127.0.0.1:4222   # NATS core; /queue as a queue group
  aioq bench --target redis://127.0.0.1:6379  # Redis pub/sub; no /queue runs

Without --target the broker runs in this process, on its own runtime threads,
with default settings unless the broker flags below say otherwise.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// isolation, throughput, latency and fanout.
    All,
    Isolation,
    Throughput,
    Latency,
    Fanout,
    /// Workers acknowledge every job: jobs/s, shares, publish-to-ack latency.
    Work,
    /// Confirmed publishes to a durable queue, 1 and 16 publishers.
    Durable,
    /// A worker process killed (SIGKILL) with jobs in hand: lost and
    /// duplicated jobs, time until its jobs reach another worker.
    CrashWorker,
    /// A broker the bench started (no --target, or --broker-cmd) SIGKILLed
    /// during a confirmed flood, started again, drained: confirmed but
    /// lost, duplicates, time to serve again.
    CrashBroker,
    /// A broker the bench started, SIGKILLed with --recovery-jobs stored:
    /// time to serve again, to drain.
    Recovery,
    /// work, crash-worker, durable, crash-broker and recovery.
    Jobs,
}

impl Scenario {
    /// The work-queue scenarios (`jobs` module), against work queues.
    fn is_job(self) -> bool {
        matches!(
            self,
            Scenario::Work
                | Scenario::Durable
                | Scenario::CrashWorker
                | Scenario::CrashBroker
                | Scenario::Recovery
                | Scenario::Jobs
        )
    }
}

/// Which channel kinds the isolation and throughput scenarios measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kinds {
    Both,
    Topic,
    Queue,
}

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Broker to measure: HOST:PORT (aioq), nats://HOST:PORT or
    /// redis://HOST:PORT; default: an embedded aioq broker on a free port.
    #[arg(long)]
    pub target: Option<String>,
    /// Subscribers and workers connect here (HOST:PORT) while publishers use
    /// --target: two brokers of one cluster, to measure across it.
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    pub subscribe_target: Option<String>,
    /// The --target broker's Prometheus page (`aioq serve --http`), read
    /// before and after each throughput run for its physics: messages and
    /// bytes per socket write, CPU time per delivery.
    #[arg(long, value_name = "http://HOST:PORT/metrics", requires = "target")]
    pub target_metrics: Option<meter::MetricsUrl>,
    /// TLS to --target (and --subscribe-target).
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Channel kinds the isolation and throughput scenarios measure.
    #[arg(long, value_enum, default_value_t = Kinds::Both)]
    pub kinds: Kinds,
    /// Fast subscribers (isolation), subscribers or workers (throughput).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscribers: u32,
    /// Slow subscribers added in the second isolation run.
    #[arg(long, default_value_t = 1)]
    pub slow: u32,
    /// How the slow subscribers misbehave.
    #[arg(long, value_enum, default_value_t = SlowMode::Stall)]
    pub slow_mode: SlowMode,
    /// Messages per second a trickling subscriber reads.
    #[arg(long, default_value_t = 10.0)]
    pub trickle_rate: f64,
    /// Publish rate of the isolation runs, messages per second.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Length of each isolation run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages published in the throughput runs.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Give up a throughput run (exit 1) when nothing is sent or delivered for
    /// this long: the broker stopped reading, or holds the publisher back
    /// with nowhere to deliver.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Payload size (at least 24 bytes: sequence number, due and send times).
    #[arg(long, default_value = "64", value_parser = parse_payload_size)]
    pub size: usize,
    /// Publish rate of the latency run, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub latency_rate: f64,
    /// Length of the latency run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub latency_duration: Duration,
    /// Subscriber connections in the fan-out run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Protocol an aioq target is spoken to in: v1, or v2 (publishers and
    /// measuring subscribers; the isolation runs' slow subscribers stay on v1).
    #[arg(long, value_enum, default_value_t = link::Speak::V1)]
    pub protocol: link::Speak,
    /// With --protocol v2: every publish asks a confirm, and each publisher's
    /// goodbye waits for the last (cumulative confirms, one per read buffer).
    #[arg(long)]
    pub confirms: bool,
    /// With --protocol v2: /queue workers acknowledge their deliveries (one
    /// ACK up to the last per read; credit --worker-queue of the broker).
    #[arg(long)]
    pub acks: bool,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when an isolation ratio falls below this, or when isolation
    /// is inconclusive.
    #[arg(long)]
    pub min_isolation: Option<f64>,
    /// Print every figure beside this earlier run's (`--json` output), with
    /// the change, changes within --noise marked as such.
    #[arg(long, value_name = "BASELINE.json")]
    pub compare: Option<std::path::PathBuf>,
    /// With --compare: exit 1 when a figure got worse by more than this many
    /// percent.
    #[arg(long, value_name = "PCT", requires = "compare")]
    pub max_regression: Option<f64>,
    /// With --compare: changes within this many percent are noise.
    #[arg(long, value_name = "PCT", default_value_t = 5.0)]
    pub noise: f64,
    /// Print the figures as CSV (figure,value,unit) instead of tables.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Skip the priming burst that fills the stalled subscribers' kernel
    /// buffers before an isolation run is measured (the verdict is then
    /// inconclusive unless the run itself owes them enough).
    #[arg(long)]
    pub no_prime: bool,
    /// Job scenarios: workers that take and acknowledge jobs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// Job scenarios: jobs per run.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub jobs: u64,
    /// Job scenarios: deliveries a worker may hold unacknowledged (aioq
    /// credit, RabbitMQ basic.qos, JetStream's pull batch, Redis COUNT).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Job scenarios: publishes each producer keeps unconfirmed at most.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub confirm_window: u32,
    /// durable: the publisher counts of its runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub publishers: Vec<u32>,
    /// Job scenarios: the broker to start (and kill, and start again) for
    /// crash-broker and recovery, run by `sh -c`; `{port}` (and
    /// `{http_port}`, `{dist_port}`) are replaced by free ports, `{port}`
    /// in --target too. Its data
    /// directory is the command's business: give one that outlives it.
    #[arg(long, value_name = "CMD")]
    pub broker_cmd: Option<String>,
    /// recovery: the stored jobs of its runs.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub recovery_jobs: Vec<u64>,
    /// Job scenarios without --target: the started broker's --fsync.
    #[arg(long, default_value = "always", value_parser = ["always", "never"], value_name = "always|never")]
    pub fsync: String,
    /// Job scenarios on nats://: the JetStream file store's sync_interval
    /// as the server was started (no client can read it): printed with the
    /// figures; only `always` counts as synced before the publish ack.
    #[arg(
        long,
        default_value = "2m (the server's default)",
        value_name = "SETTING"
    )]
    pub nats_sync: String,
    /// Job scenarios: how long a delivery may go unanswered before another
    /// worker gets it, where the client sets it (JetStream's ack_wait, the
    /// idle time of Redis's XAUTOCLAIM); aioq's is the broker's --ack-wait,
    /// and aioq and RabbitMQ give a dead worker's jobs back at once.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// A worker process of crash-worker (started by the bench itself).
    #[arg(long, hide = true, value_name = "QUEUE")]
    pub job_worker: Option<String>,
    /// crash-worker: how long each job takes a worker (every worker, the
    /// killed one too, so that it dies with jobs in hand).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub job_time: Duration,
    /// Embedded broker: messages per subscriber send queue.
    #[arg(long, default_value_t = 65_536)]
    pub send_queue: usize,
    /// Embedded broker: payload bytes per subscriber send queue.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub send_queue_bytes: usize,
    /// Embedded broker: what happens to a /topic subscriber whose queue is full.
    #[arg(long, default_value = "drop", value_parser = crate::cmd::serve_args::topic_overflow())]
    pub topic_overflow: TopicOverflow,
}

/// A checked plan: what the scenarios read.
pub struct Plan {
    /// Where publishers connect.
    pub addr: Target,
    /// Where subscribers and workers connect: `addr`, or another broker of
    /// the same cluster.
    pub sub_addr: Target,
    /// Time given to new subscriptions before publishing starts.
    pub settle: Duration,
    pub subscribers: usize,
    pub slow: usize,
    pub slow_mode: SlowMode,
    pub trickle_rate: f64,
    pub rate: f64,
    pub duration: Duration,
    pub messages: u64,
    pub stall_timeout: Duration,
    pub size: usize,
    pub latency_rate: f64,
    pub latency_duration: Duration,
    pub connections: usize,
    pub fanout_probes: u64,
    pub fanout_burst: u64,
    /// What the kernel can hold between a broker and a subscriber that reads
    /// nothing: see [`stall_path_bytes`].
    pub stall_path_bytes: u64,
    /// Prime isolation runs (baseline too: same conditions).
    pub prime: bool,
    /// Where the physics of a run are read: the embedded broker, or
    /// --target-metrics.
    pub meter: Option<meter::Meter>,
}

/// Payload size of the priming burst's messages: large enough to fill
/// buffers in few messages, small enough for any broker's frame limit.
/// A `--size` that holds the timestamps every payload carries: a smaller
/// one is refused, not silently raised.
fn parse_payload_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n < payload::HEADER {
        return Err(format!(
            "at least {} bytes: each payload carries its sequence number, due and send times",
            payload::HEADER
        ));
    }
    Ok(n)
}

pub const PRIME_SIZE: usize = 16 * 1024;

/// What the kernel can hold between a broker and a subscriber that reads
/// nothing: the broker's socket send buffer at its largest (Linux grows it up
/// to tcp_wmem's maximum; a broker that sets it may have up to twice
/// net.core.wmem_max) and the stalled subscriber's receive buffer (4 KiB
/// asked, doubled by the kernel). Read from this machine: for a remote
/// broker, an estimate.
pub fn stall_path_bytes() -> u64 {
    let field = |path: &str, n: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(n)?.parse::<u64>().ok())
    };
    let autotuned = field("/proc/sys/net/ipv4/tcp_wmem", 2).unwrap_or(4 << 20);
    let set = 2 * field("/proc/sys/net/core/wmem_max", 0).unwrap_or(212_992);
    autotuned.max(set) + 2 * 4096
}

/// Progress on stderr, only when it is a terminal and no JSON is asked for.
pub struct Progress {
    enabled: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            bar: std::sync::Mutex::new(None),
        }
    }

    /// Starts a phase; a known length shows as a time bar, else a spinner.
    pub fn phase(&self, name: &str, length: Duration) {
        let mut bar = self.bar.lock().unwrap();
        if let Some(b) = bar.take() {
            b.finish_and_clear();
        }
        if !self.enabled {
            return;
        }
        let b = if length.is_zero() {
            ProgressBar::new_spinner()
        } else {
            let b = ProgressBar::new(length.as_millis() as u64);
            b.set_style(
                ProgressStyle::with_template("{msg:70} [{bar:20}] {elapsed}/{duration}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            let b2 = b.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                while !b2.is_finished() {
                    b2.set_position(start.elapsed().as_millis() as u64);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            b
        };
        b.set_message(name.to_string());
        b.enable_steady_tick(Duration::from_millis(100));
        // Once a second: what went through in that second.
        let (b2, name) = (b.clone(), name.to_string());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let mut last = (clients::SENT.load(Relaxed), clients::RECEIVED.load(Relaxed));
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !b2.is_finished() {
                tick.tick().await;
                let now = (clients::SENT.load(Relaxed), clients::RECEIVED.load(Relaxed));
                b2.set_message(format!(
                    "{name}: sent {}/s, delivered {}/s",
                    now.0 - last.0,
                    now.1 - last.1
                ));
                last = now;
            }
        });
        *bar = Some(b);
    }

    /// A bar counting towards `total`, for the current phase.
    pub fn counter(&self, total: u64) -> ProgressBar {
        let bar = self.bar.lock().unwrap();
        let Some(b) = bar.as_ref().filter(|_| self.enabled) else {
            return ProgressBar::hidden();
        };
        b.set_length(total);
        b.set_style(
            ProgressStyle::with_template("{msg:45} [{bar:30}] {human_pos}/{human_len} {per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.clone()
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}

/// Resident memory of this process.
pub fn rss_bytes() -> Option<u64> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(std::process::id());
    let mut sys = System::new();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(pid).map(|p| p.memory())
}

/// Runs the broker on its own runtime and threads, so the bench's clients never
/// share its thread pool. Returns its address and a handle that stops it.
fn start_embedded(config: BrokerConfig) -> anyhow::Result<(std::net::SocketAddr, EmbeddedBroker)> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("aioq-broker".into())
        .spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("aioq-broker-rt")
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let broker = Broker::new(config);
                addr_tx.send((listener.local_addr()?, broker.stats()))?;
                broker
                    .run(listener, async {
                        let _ = stop_rx.await;
                    })
                    .await;
                anyhow::Ok(())
            })
        })?;
    let (addr, stats) = addr_rx
        .recv()
        .context("the embedded broker did not start")?;
    Ok((
        addr,
        EmbeddedBroker {
            stop: Some(stop_tx),
            thread: Some(thread),
            stats,
        },
    ))
}

struct EmbeddedBroker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    stats: std::sync::Arc<crate::broker::stats::BrokerStats>,
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.scenario.is_job() || args.job_worker.is_some() {
        return jobs::run::run(&args).await;
    }
    if args
        .target
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("amqp://"))
    {
        return Err(crate::exit::usage(
            "--target amqp://: RabbitMQ is measured by the work-queue scenarios \
             (--scenario work, durable or jobs)",
        ));
    }
    crate::ensure_usage!(args.rate > 0.0, "--rate must be positive");
    crate::ensure_usage!(args.latency_rate > 0.0, "--latency-rate must be positive");
    crate::ensure_usage!(args.trickle_rate > 0.0, "--trickle-rate must be positive");
    crate::ensure_usage!(args.messages > 0, "--messages must be at least 1");
    crate::ensure_usage!(!args.duration.is_zero(), "--duration must be more than 0");
    crate::ensure_usage!(
        !args.stall_timeout.is_zero(),
        "--stall-timeout must be more than 0"
    );
    let size = args.size.max(payload::HEADER);
    let embedded = args.target.is_none();
    let wants = |s: Scenario| args.scenario == Scenario::All || args.scenario == s;
    if wants(Scenario::Fanout) {
        // Embedded, each connection holds two descriptors in this process.
        let need = args.connections as u64 * if embedded { 2 } else { 1 } + 256;
        let have = crate::runtime::fd_limit::raise(need);
        crate::ensure_usage!(
            have >= need,
            "--connections {} needs about {need} open files, the limit is {have} (ulimit -n)",
            args.connections
        );
    }
    crate::ensure_usage!(
        !(args.confirms || args.acks) || args.protocol == link::Speak::V2,
        "--confirms and --acks need --protocol v2"
    );
    let asks = link::Asks {
        confirms: args.confirms,
        acks: args.acks,
    };
    let (addr, broker) = match &args.target {
        Some(t) => (
            Target::parse("--target", t, &args.tls)?.speaking(args.protocol, asks)?,
            None,
        ),
        None => {
            let config = BrokerConfig {
                send_queue: args.send_queue.max(1),
                send_queue_bytes: args.send_queue_bytes.max(1),
                topic_overflow: args.topic_overflow,
                max_connections: (args.connections as usize + 1024).max(10_000),
                ..BrokerConfig::default()
            };
            crate::ensure_usage!(
                !args.tls.enabled(),
                "--tls needs --target: the embedded broker serves plain TCP"
            );
            let (addr, b) = start_embedded(config)?;
            (
                Target::Aioq(
                    Connector::plain(addr.ip().to_string(), addr.port()),
                    args.protocol,
                    asks,
                ),
                Some(b),
            )
        }
    };
    crate::ensure_usage!(
        args.target_metrics.is_none() || addr.kind() == "aioq",
        "--target-metrics: the counters are aioq's; --target is a {} broker",
        addr.kind()
    );
    let plan = Plan {
        sub_addr: match &args.subscribe_target {
            Some(t) => {
                let sub = Target::parse("--subscribe-target", t, &args.tls)?
                    .speaking(args.protocol, asks)?;
                crate::ensure_usage!(
                    sub.kind() == addr.kind(),
                    "--subscribe-target {t}: a {} broker, where --target is {}",
                    sub.kind(),
                    addr.kind()
                );
                sub
            }
            None => addr.clone(),
        },
        // Across brokers a subscription travels through the cluster first.
        settle: Duration::from_millis(if args.subscribe_target.is_some() {
            500
        } else {
            100
        }),
        addr,
        subscribers: args.subscribers as usize,
        slow: args.slow as usize,
        slow_mode: args.slow_mode,
        trickle_rate: args.trickle_rate,
        rate: args.rate,
        duration: args.duration,
        messages: args.messages,
        stall_timeout: args.stall_timeout,
        size,
        latency_rate: args.latency_rate,
        latency_duration: args.latency_duration,
        connections: args.connections as usize,
        fanout_probes: 100,
        fanout_burst: 1000,
        stall_path_bytes: stall_path_bytes(),
        prime: !args.no_prime,
        meter: match (&broker, &args.target_metrics) {
            (Some(b), _) => Some(meter::Meter::Embedded(b.stats.clone())),
            (None, Some(url)) => Some(meter::Meter::Metrics(url.clone())),
            (None, None) => None,
        },
    };
    // Read before the run: a missing baseline should not cost a run.
    let baseline = read_baseline(&args)?;
    let progress = Progress::new(Stream::Stderr.live(args.json || args.csv));
    let mut report = Report {
        schema_version: 2,
        aioq_version: env!("CARGO_PKG_VERSION"),
        target: match (&args.target, &args.subscribe_target) {
            (Some(t), Some(s)) => format!("{t} (subscribers on {s})"),
            (Some(t), None) => t.clone(),
            _ => "embedded".into(),
        },
        broker: plan.addr.kind(),
        skipped: Vec::new(),
        isolation: Vec::new(),
        throughput: Vec::new(),
        latency: None,
        fanout: None,
    };
    let topics = args.kinds != Kinds::Queue;
    let queues = plan.addr.has_queues() && args.kinds != Kinds::Topic;
    if !plan.addr.has_queues()
        && args.kinds != Kinds::Topic
        && (wants(Scenario::Isolation) || wants(Scenario::Throughput))
    {
        report.skipped.push(format!(
            "/queue runs: {} pub/sub has no work queues",
            plan.addr.kind()
        ));
    }
    // Ctrl-C keeps what finished: its tables are printed, and the exit
    // status says the run was cut short.
    let interrupted = {
        let stop = crate::runtime::shutdown::signal();
        let report = &mut report;
        let runs = async {
            if wants(Scenario::Isolation) {
                if topics {
                    report
                        .isolation
                        .push(scenarios::isolation(&plan, false, &progress).await?);
                }
                if queues {
                    report
                        .isolation
                        .push(scenarios::isolation(&plan, true, &progress).await?);
                }
            }
            if wants(Scenario::Throughput) {
                if topics {
                    report
                        .throughput
                        .push(scenarios::throughput(&plan, false, &progress).await?);
                }
                if queues {
                    report
                        .throughput
                        .push(scenarios::throughput(&plan, true, &progress).await?);
                }
            }
            if wants(Scenario::Latency) {
                report.latency = Some(scenarios::latency(&plan, &progress).await?);
            }
            if wants(Scenario::Fanout) {
                report.fanout = Some(scenarios::fanout(&plan, embedded, &progress).await?);
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = runs => {
                r?;
                false
            }
            _ = stop => true,
        }
    };
    progress.finish();
    if interrupted {
        let finished = report.isolation.len()
            + report.throughput.len()
            + usize::from(report.latency.is_some())
            + usize::from(report.fanout.is_some());
        if finished == 0 {
            eprintln!("aioq bench: interrupted before any run finished");
        } else {
            eprintln!(
                "aioq bench: interrupted; what follows is the {finished} run(s) that finished"
            );
        }
    }
    let mut doc = serde_json::to_value(&report)?;
    if interrupted {
        doc["interrupted"] = true.into();
    }
    if let Some(code) = print_report(&args, baseline.as_ref(), doc, interrupted, || {
        print_tables(&report)
    })? {
        return Ok(code);
    }
    if let Some(min) = args.min_isolation {
        for i in &report.isolation {
            match i.isolation_ratio {
                // No ratio can pass a gate it was not measured against.
                None => {
                    eprintln!(
                        "aioq bench: /{} isolation is inconclusive (the stall was not felt): \
                         --min-isolation {min} not met",
                        i.channel_kind
                    );
                    return Ok(ExitCode::from(crate::exit::FAILURE));
                }
                Some(ratio) if ratio < min => {
                    eprintln!(
                        "aioq bench: /{} isolation ratio {ratio:.3} is below --min-isolation {min}",
                        i.channel_kind
                    );
                    return Ok(ExitCode::from(crate::exit::FAILURE));
                }
                Some(_) => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--compare`'s baseline, read before any run: a missing one should not
/// cost a run.
fn read_baseline(args: &BenchArgs) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(path) = &args.compare else {
        return Ok(None);
    };
    std::fs::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|t| serde_json::from_str(&t).map_err(anyhow::Error::from))
        .with_context(|| format!("--compare {}", path.display()))
        .map_err(crate::exit::as_usage)
        .map(Some)
}

/// Prints a report as asked (JSON, CSV, or `tables`), with the comparison
/// to the baseline; the exit code an interruption or a figure worse than
/// `--max-regression` calls for.
fn print_report(
    args: &BenchArgs,
    baseline: Option<&serde_json::Value>,
    mut doc: serde_json::Value,
    interrupted: bool,
    tables: impl FnOnce(),
) -> anyhow::Result<Option<ExitCode>> {
    let changes = baseline
        .map(|base| compare::compare(&compare::figures(base), &compare::figures(&doc), args.noise));
    if args.json {
        if let Some(c) = &changes {
            doc["comparison"] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if args.csv {
        print!("{}", compare::csv(&compare::figures(&doc)));
    } else {
        tables();
        if let Some(c) = &changes {
            print_changes(c, args.noise);
        }
    }
    if interrupted {
        return Ok(Some(ExitCode::from(crate::exit::INTERRUPTED)));
    }
    if let (Some(c), Some(max)) = (&changes, args.max_regression) {
        let worse: Vec<_> = c.iter().filter(|c| -c.better_by_pct > max).collect();
        for w in &worse {
            eprintln!(
                "aioq bench: {} got worse by {:.1}% ({} -> {}), past --max-regression {max}%",
                w.name, -w.better_by_pct, w.baseline, w.now
            );
        }
        if !worse.is_empty() {
            return Ok(Some(ExitCode::from(crate::exit::FAILURE)));
        }
    }
    Ok(None)
}

pub(super) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    if !Stream::Stdout.styled() {
        t.force_no_tty();
    }
    t.set_header(header.iter().map(Cell::new));
    t
}

pub(super) fn lat(l: &Latency) -> String {
    format!(
        "{} / {} / {} / {} / {}",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    )
}

fn print_changes(changes: &[compare::Change], noise: f64) {
    let mut t = table(&["figure", "baseline", "now", "change", "verdict"]);
    for c in changes {
        t.add_row(vec![
            c.name.clone(),
            format!("{:.1} {}", c.baseline, c.unit),
            format!("{:.1} {}", c.now, c.unit),
            format!("{:+.1}%", c.better_by_pct),
            match c.verdict {
                "noise" => format!("within ±{noise}%"),
                v => v.to_string(),
            },
        ]);
    }
    println!("compared with the baseline (change: + is better)\n{t}");
}

fn print_tables(r: &Report) {
    println!("aioq bench against {} ({})\n", r.target, r.broker);
    for s in &r.skipped {
        println!("skipped: {s}\n");
    }
    if !r.isolation.is_empty() {
        let mut t = table(&[
            "isolation",
            "run",
            "published/s",
            "fast delivered/s",
            "fraction",
            "lost",
            "dup",
            "reord",
            "latency µs p50/p90/p99/p99.9/max",
            "slow: received, disconnected",
        ]);
        for i in &r.isolation {
            for (name, run) in [("baseline", &i.baseline), ("with slow", &i.with_slow)] {
                let slow = run
                    .slow
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {}",
                            s.received,
                            if s.disconnected_by_broker {
                                "yes"
                            } else {
                                "no"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                t.add_row(vec![
                    format!("/{}", i.channel_kind),
                    format!("{name}{}", if run.complete { "" } else { " (INCOMPLETE)" }),
                    format!("{:.0}", run.publish_rate),
                    format!("{:.0}", run.fast.delivered_per_s),
                    format!("{:.4}", run.fast.delivered_fraction),
                    run.fast.lost.to_string(),
                    run.fast.duplicates.to_string(),
                    run.fast.reordered.to_string(),
                    lat(&run.fast.latency),
                    if slow.is_empty() { "-".into() } else { slow },
                ]);
            }
        }
        println!("{t}");
        for i in &r.isolation {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let felt = if i.stall.publisher_held_back {
                "the broker held the publisher back".to_string()
            } else {
                format!(
                    "{:.1} MiB owed to each stalled subscriber, past the {:.1} MiB the kernel \
                     can hold on its path",
                    mib(i.stall.owed_bytes),
                    mib(i.stall.path_bytes)
                )
            };
            match i.isolation_ratio {
                Some(ratio) => println!(
                    "/{}: isolation ratio {ratio:.3}, p99 ratio {:.2} (stall felt: {felt})",
                    i.channel_kind, i.p99_ratio
                ),
                None => println!(
                    "/{}: isolation INCONCLUSIVE: each stalled subscriber was owed {:.1} MiB, \
                     which the kernel's buffers on its path ({:.1} MiB) may have absorbed \
                     without the broker noticing; drop --no-prime, or raise --rate, --duration or --size",
                    i.channel_kind,
                    mib(i.stall.owed_bytes),
                    mib(i.stall.path_bytes)
                ),
            }
        }
        println!();
    }
    if !r.throughput.is_empty() {
        let mut t = table(&[
            "throughput",
            "subs",
            "size",
            "published/s",
            "delivered/s",
            "MB/s",
            "delivered",
            "lost",
            "shares min/max",
            "msgs/write",
            "B/write",
            "broker CPU/delivery",
        ]);
        for x in &r.throughput {
            let (per_write, bytes, cpu) = match &x.physics {
                Some(p) => (
                    format!("{:.1}", p.messages_per_write),
                    format!("{:.0}", p.bytes_per_write),
                    format!("{:.0} ns", p.cpu_ns_per_delivery),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            t.add_row(vec![
                format!(
                    "/{}{}",
                    x.channel_kind,
                    if x.complete { "" } else { " (INCOMPLETE)" }
                ),
                x.subscribers.to_string(),
                x.size.to_string(),
                format!("{:.0}", x.published_per_s),
                format!("{:.0}", x.delivered_per_s),
                format!("{:.1}", x.delivered_mb_per_s),
                format!("{}/{}", x.delivered, x.expected_deliveries),
                x.lost.to_string(),
                x.worker_shares
                    .map(|(lo, hi)| format!("{lo:.3}/{hi:.3}"))
                    .unwrap_or_else(|| "-".into()),
                per_write,
                bytes,
                cpu,
            ]);
        }
        println!("{t}\n");
    }
    if let Some(l) = &r.latency {
        let mut t = table(&[
            "latency",
            "rate",
            "received",
            "µs p50/p90/p99/p99.9/max from send",
            "from schedule (open loop)",
        ]);
        t.add_row(vec![
            format!(
                "1 subscriber{}",
                if l.complete { "" } else { " (INCOMPLETE)" }
            ),
            format!("{:.0}/s", l.rate),
            format!("{}/{}", l.received, l.published),
            lat(&l.latency),
            lat(&l.intended_latency),
        ]);
        println!("{t}\n");
    }
    if let Some(f) = &r.fanout {
        let mut t = table(&[
            "fan-out",
            "delivered/s",
            "fan-out time µs p50/p90/p99/p99.9/max",
            "RSS/conn",
        ]);
        t.add_row(vec![
            format!(
                "{} conns{}",
                f.connections,
                if f.complete { "" } else { " (INCOMPLETE)" }
            ),
            format!("{:.0}", f.delivered_per_s),
            lat(&f.fanout_time),
            f.rss_per_connection_bytes
                .map(|b| format!("{:.1} KiB", b as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
        ]);
        println!("{t}");
    }
}
