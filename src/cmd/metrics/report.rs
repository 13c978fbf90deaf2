//! `aioq metrics report`: samples a process and publishes one JSON message per
//! sample through the reconnecting publisher.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::sample::{host_name, Sampler};
use crate::client::{publisher, Target};
use crate::units::parse_duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    aioq metrics report --name red                 # reports itself, with a demo workload\n  \
    aioq metrics report --name blue --pid 4242     # watches another process\n  \
    aioq metrics report --name green --leak 100000 # demo workload that leaks memory")]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: Target,
    /// Name shown by the collector.
    #[arg(long)]
    pub name: String,
    /// Process to watch (default: this one, running a small demo workload).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Channel to publish on.
    #[arg(long, default_value = "/topic/metrics")]
    pub channel: String,
    /// Demo workload: grow memory by this many 100-byte items per sample,
    /// up to --leak-limit.
    #[arg(long, default_value_t = 0, conflicts_with = "pid")]
    pub leak: u64,
    /// Where the --leak demo stops growing (it then holds steady).
    #[arg(long, default_value = "256MiB", value_parser = crate::units::parse_size)]
    pub leak_limit: usize,
    /// Time between samples while the collectors say nobody watches (no
    /// terminal table, no browser on the page). A reporter that hears from
    /// no collector keeps --interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub idle_interval: Duration,
    /// Channel on which collectors say whether anyone watches.
    #[arg(long, default_value = "/topic/metrics/control")]
    pub control_channel: String,
}

/// A collector not heard from for this long no longer counts.
const HEARD_WITHIN: Duration = Duration::from_secs(3 * super::collect::CONTROL_EVERY.as_secs());
/// Collectors remembered at most (the control channel is open to any client).
const COLLECTORS: usize = 64;

/// What the collectors said, each in its own words.
#[derive(Default)]
struct Watchers(std::collections::HashMap<String, (bool, std::time::Instant)>);

impl Watchers {
    fn heard(&mut self, message: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Word {
            collector: String,
            watched: bool,
        }
        let Ok(w) = serde_json::from_slice::<Word>(message) else {
            return;
        };
        self.0.retain(|_, (_, at)| at.elapsed() < HEARD_WITHIN);
        if self.0.len() < COLLECTORS || self.0.contains_key(&w.collector) {
            self.0
                .insert(w.collector, (w.watched, std::time::Instant::now()));
        }
    }

    /// Slow only when some collector was heard lately and none of those
    /// heard lately has a viewer.
    fn idle(&self) -> bool {
        let recent: Vec<bool> = self
            .0
            .values()
            .filter(|(_, at)| at.elapsed() < HEARD_WITHIN)
            .map(|(w, _)| *w)
            .collect();
        !recent.is_empty() && !recent.contains(&true)
    }
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let connector = args.target.connector()?;
    crate::ensure_usage!(!args.interval.is_zero(), "--interval must be more than 0");
    let pid = args.pid.unwrap_or_else(std::process::id);
    // Looked at before anything starts: a pid that names no process is a
    // mistake in the command line, not a process that exited.
    let mut sampler = Sampler::new(pid);
    crate::ensure_usage!(sampler.exists(), "--pid {pid}: no such process");
    let stop = Arc::new(AtomicBool::new(false));
    if args.pid.is_none() {
        start_workload(args.leak, args.leak_limit, args.interval, stop.clone());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(1000);
    let connects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishing = {
        let channel = args.channel.clone();
        let options = publisher::Options {
            connects: Some(connects.clone()),
            ..publisher::Options::v1()
        };
        let connector = connector.clone();
        tokio::spawn(async move {
            publisher::run(connector, &channel, rx, options)
                .await
                .map(drop)
        })
    };
    let (control_tx, mut control) = mpsc::channel::<Bytes>(64);
    tokio::spawn(crate::client::subscriber::run(
        connector,
        args.control_channel.clone(),
        control_tx,
    ));
    let mut watchers = Watchers::default();
    let host = host_name();
    let interrupted = crate::runtime::shutdown::signal();
    tokio::pin!(interrupted);
    let mut dropped = 0u64;
    let mut seq = 0u64;
    let mut idle = false;
    let interval = |idle: bool| {
        if idle {
            args.idle_interval.max(args.interval)
        } else {
            args.interval
        }
    };
    let mut last = tokio::time::Instant::now();
    let mut next = last;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            Some(word) = control.recv() => {
                watchers.heard(&word);
                if watchers.idle() != idle {
                    idle = !idle;
                    tracing::info!(
                        "{}: sampling every {}",
                        if idle { "nobody watches" } else { "someone watches" },
                        humantime::format_duration(interval(idle))
                    );
                    // Faster at once when someone starts watching.
                    next = next.min(last + interval(idle));
                }
                continue;
            }
            _ = &mut interrupted => break,
        }
        // Collectors that went quiet no longer count: either way a change
        // seen here says its own reason (the watching ones went quiet, and
        // only idle ones are left; or none is heard from any more).
        if watchers.idle() != idle {
            idle = !idle;
            tracing::info!(
                "{}: sampling every {}",
                if idle {
                    "nobody watches"
                } else {
                    "no collector heard from lately"
                },
                humantime::format_duration(interval(idle))
            );
        }
        last = tokio::time::Instant::now();
        next = last + interval(idle);
        let Some(mut sample) = sampler.sample(&args.name, &host) else {
            stop.store(true, Relaxed);
            anyhow::bail!("process {pid} exited: nothing left to report");
        };
        sample.seq = Some(seq);
        seq += 1;
        sample.connects = Some(connects.load(Relaxed));
        let json = serde_json::to_string(&sample)?;
        if tx.try_send(Bytes::from(json)).is_err() {
            // The broker has been away for a long time: the oldest samples stay
            // buffered, the newest are dropped.
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::warn!("{dropped} sample(s) dropped while the broker is unreachable");
            }
        }
    }
    stop.store(true, Relaxed);
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), publishing).await;
    Ok(ExitCode::SUCCESS)
}

/// A little CPU work that rises and falls (so the graphs move), and an optional
/// leak of `leak` 100-byte items per interval, up to `limit` bytes: a demo
/// left running must not take the machine.
fn start_workload(leak: u64, limit: usize, interval: Duration, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut hoard: Vec<Box<[u8; 100]>> = Vec::new();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while !stop.load(Relaxed) {
            let phase = started.elapsed().as_secs_f64() / 10.0;
            let duty = 0.15 + 0.15 * phase.sin();
            let busy = interval.mul_f64(duty);
            let t = std::time::Instant::now();
            while t.elapsed() < busy {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            for _ in 0..leak {
                if hoard.len() * 100 >= limit {
                    break;
                }
                hoard.push(Box::new([x as u8; 100]));
            }
            std::thread::sleep(interval.saturating_sub(busy));
        }
        std::hint::black_box((x, hoard.len()));
    });
}

/// `aioq serve --metrics`: the broker reports its own process and counters on
/// `channel`, published from inside (no connection, so it works whatever the
/// broker's transport), and collectors show it beside the apps.
pub async fn broker_self(
    broker: crate::broker::Injector,
    channel: String,
    interval: Duration,
    stats: Arc<crate::broker::stats::BrokerStats>,
    budget: Arc<crate::broker::budget::Budget>,
) {
    let channel = Bytes::from(channel);
    let mut sampler = Sampler::new(std::process::id());
    let host = host_name();
    let mut tick = tokio::time::interval(interval);
    let mut last = (std::time::Instant::now(), 0u64, 0u64);
    loop {
        tick.tick().await;
        let Some(mut sample) = sampler.sample("aioq-serve", &host) else {
            return;
        };
        let (published, delivered) = (stats.published.messages(), stats.delivered.messages());
        let secs = last.0.elapsed().as_secs_f64().max(1e-3);
        sample.broker = Some(super::sample::BrokerCounters {
            connections: stats.open.load(Relaxed),
            messages_in_per_s: ((published - last.1) as f64 / secs).round(),
            delivered_per_s: ((delivered - last.2) as f64 / secs).round(),
            dropped_total: stats.dropped.total(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            held_bytes: budget.used() as u64,
            from_cluster: stats.cluster_in.messages(),
        });
        last = (std::time::Instant::now(), published, delivered);
        let Ok(json) = serde_json::to_string(&sample) else {
            continue;
        };
        broker.publish(&channel, Bytes::from(json)).await;
    }
}
