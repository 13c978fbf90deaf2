//! The scenarios of work that must not be lost, for aioq and the work queues
//! people pick instead of it (RabbitMQ, NATS JetStream, Redis Streams):
//!
//! - `work`: workers acknowledge every job; jobs/s, each worker's share,
//!   publish-to-ack latency.
//! - `durable`: confirmed publishes to a durable queue from 1 and 16
//!   publishers; confirms/s, confirm latency, and aioq's records per fsync.
//! - `crash-worker`: a worker process SIGKILLed with jobs in hand.
//! - `crash-broker`, `recovery` (`restart`): a broker the bench started,
//!   SIGKILLed and started again.
//!
//! Every figure comes with the promise it was measured at (the queue's
//! storage, when its broker syncs to disk, the prefetch), read from the broker
//! where it says and taken from the command line where it cannot; a broker
//! that does not promise durability gets no durable figure.

pub mod queue;
pub mod restart;
pub mod run;
pub mod started;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::queue::{job_of, job_payload};
pub use self::queue::{QueueName, Queues};
pub use super::meter::MetricsUrl;
use super::report::Latency;
pub use super::Progress;

/// What the job scenarios are asked to do.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub queues: Queues,
    pub workers: usize,
    pub jobs: u64,
    pub size: usize,
    pub prefetch: u16,
    /// Publishes each producer keeps unconfirmed at most.
    pub window: usize,
    /// Publishers of the durable runs, one run each.
    pub publishers: Vec<usize>,
    pub stall_timeout: Duration,
    /// crash-worker: how long each job takes every worker, so that the
    /// killed one holds jobs when it dies and gets its share.
    pub job_time: Duration,
    /// An aioq broker's monitoring page: its fsync setting and counters.
    pub metrics: Option<MetricsUrl>,
    /// How long a delivery may go unanswered before it goes to another
    /// worker, where the client sets it (JetStream's ack_wait, Redis's
    /// XAUTOCLAIM idle time; aioq and RabbitMQ give a dead worker's jobs
    /// back when its connection ends).
    pub ack_wait: Duration,
    /// What the user says JetStream's file store syncs at (the server's
    /// setting, which no client can read).
    pub nats_sync: String,
}

/// The settings a figure was measured at.
#[derive(Debug, Clone, Serialize)]
pub struct Promise {
    pub broker: &'static str,
    /// How the queue keeps its jobs, and when the broker says a publish
    /// is done, in the broker's own terms.
    pub settings: String,
    /// A confirmed publish is on disk (fsync) before it is confirmed.
    pub synced_before_confirm: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkRun {
    pub promise: Promise,
    pub workers: usize,
    pub prefetch: u16,
    pub jobs: u64,
    pub size: usize,
    pub jobs_per_s: f64,
    /// Each worker's share of the jobs (1/workers each when fair).
    pub worker_shares: Vec<f64>,
    /// From publish to the acknowledgement being sent.
    pub latency: Latency,
    pub lost: u64,
    /// Jobs a worker got again after one acknowledged it.
    pub duplicates: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DurableRun {
    pub promise: Promise,
    pub publishers: usize,
    pub jobs: u64,
    pub size: usize,
    pub confirms_per_s: f64,
    pub confirm_latency: Latency,
    /// aioq: publishes per fsync in the run, from its /metrics.
    pub records_per_fsync: Option<f64>,
    /// Confirmed jobs the workers that drained the queue afterwards never got.
    pub lost: u64,
    pub duplicates: u64,
}

/// The promise of `plan`'s broker for a run, or why it has none to make.
pub async fn promise(plan: &JobPlan, durable: bool) -> anyhow::Result<Result<Promise, String>> {
    let broker = plan.queues.kind();
    let p = |settings: String, synced: bool| {
        Ok(Promise {
            broker,
            settings,
            synced_before_confirm: synced,
        })
    };
    Ok(match &plan.queues {
        Queues::Aioq(_) if !durable => p(
            format!(
                "in-memory /queue, acknowledging workers, credit {}",
                plan.prefetch
            ),
            false,
        ),
        Queues::Aioq(_) => {
            let Some(url) = &plan.metrics else {
                return Ok(Err(
                    "durable runs against an aioq --target need --target-metrics, to read its \
                     fsync setting"
                        .into(),
                ));
            };
            let server = super::meter::api(url, "/api/server").await?;
            match server["store"]["fsync"].as_str() {
                Some(mode) => p(
                    format!("durable /queue (serve --durable), --fsync {mode}, confirms"),
                    mode == "always",
                ),
                None => Err("the broker keeps no durable store (serve --durable /queue/)".into()),
            }
        }
        Queues::Amqp { .. } if !durable => p(
            format!(
                "transient classic queue, prefetch {}, manual acks",
                plan.prefetch
            ),
            false,
        ),
        Queues::Amqp { .. } => p(
            "durable classic queue, persistent messages, publisher confirms (sent once on disk)"
                .into(),
            true,
        ),
        Queues::JetStream { .. } if !durable => p(
            format!(
                "memory storage, work-queue retention, pull consumer, explicit acks, \
                 max_ack_pending {}",
                plan.workers * usize::from(plan.prefetch)
            ),
            false,
        ),
        Queues::JetStream { .. } => p(
            format!(
                "file storage, acked publishes, sync_interval {} (as stated with --nats-sync)",
                plan.nats_sync
            ),
            plan.nats_sync == "always",
        ),
        Queues::Streams { .. } => {
            let aof = plan.queues.redis_config("appendonly").await?;
            let fsync = plan.queues.redis_config("appendfsync").await?;
            if aof != "yes" {
                if durable {
                    Err("Redis keeps nothing across a restart without AOF (appendonly no)".into())
                } else {
                    p(
                        "stream, one consumer group, XACK of each read, no AOF".into(),
                        false,
                    )
                }
            } else {
                p(
                    format!(
                        "stream, one consumer group, XACK of each read, AOF appendfsync {fsync}"
                    ),
                    fsync == "always",
                )
            }
        }
    })
}

/// Jobs seen by the workers: how often each was taken, and the first times.
struct Tally {
    seen: Vec<AtomicU8>,
    /// When each job was first done (ns since the run's base; 0: not yet).
    first_at: Vec<AtomicU64>,
    done: AtomicU64,
    duplicates: AtomicU64,
}

impl Tally {
    fn new(jobs: u64) -> Self {
        Self {
            seen: (0..jobs).map(|_| AtomicU8::new(0)).collect(),
            first_at: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
            done: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    /// Counts a job done at `at`; true the first time.
    fn take(&self, job: u64, at: u64) -> bool {
        let Some(s) = self.seen.get(job as usize) else {
            return false;
        };
        if s.fetch_add(1, Relaxed) == 0 {
            self.first_at[job as usize].store(at.max(1), Relaxed);
            self.done.fetch_add(1, Relaxed);
            true
        } else {
            self.duplicates.fetch_add(1, Relaxed);
            false
        }
    }
}

/// What one in-process worker did.
struct Worked {
    taken: u64,
    latency: Histogram<u64>,
}

/// A worker that takes and acknowledges until `stop`.
async fn work_until(
    plan: &JobPlan,
    q: &QueueName,
    n: usize,
    tally: Arc<Tally>,
    base: Instant,
    stop: CancellationToken,
    job_time: Duration,
) -> anyhow::Result<Worked> {
    // A broker just restarted may listen before it serves (JetStream
    // reads its streams back): tried again until the stall timeout.
    let tried = Instant::now();
    let mut w = loop {
        match plan.queues.worker(q, plan.prefetch, n, plan.ack_wait).await {
            Ok(w) => break w,
            Err(e) if tried.elapsed() >= plan.stall_timeout || stop.is_cancelled() => {
                return Err(e)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut taken = 0;
    let mut batch = Vec::new();
    loop {
        batch.clear();
        tokio::select! {
            r = w.take(&mut batch) => r?,
            _ = stop.cancelled() => break,
        }
        if !job_time.is_zero() {
            tokio::time::sleep(job_time * batch.len() as u32).await;
        }
        w.ack().await?;
        let now = base.elapsed().as_nanos() as u64;
        for p in &batch {
            let Some((job, at)) = job_of(p) else { continue };
            taken += 1;
            tally.take(job, now);
            let _ = latency.record((now.saturating_sub(at) / 1000).max(1));
        }
        if tally.done.load(Relaxed) >= tally.seen.len() as u64 {
            stop.cancel();
        }
    }
    Ok(Worked { taken, latency })
}

/// Workers numbered `ns` taking jobs of `q` until `stop`, each `job_time`
/// a job.
fn spawn_workers(
    plan: &JobPlan,
    q: &QueueName,
    ns: std::ops::Range<usize>,
    tally: &Arc<Tally>,
    base: Instant,
    stop: &CancellationToken,
    job_time: Duration,
) -> tokio::task::JoinSet<anyhow::Result<Worked>> {
    let mut workers = tokio::task::JoinSet::new();
    for n in ns {
        let (plan, q, tally, stop) = (plan.clone(), q.clone(), tally.clone(), stop.clone());
        workers.spawn(async move {
            let r = work_until(&plan, &q, n, tally, base, stop.clone(), job_time).await;
            // One worker's failure ends the run for all.
            if r.is_err() {
                stop.cancel();
            }
            r
        });
    }
    workers
}

/// What the producers did.
struct Produced {
    confirmed: u64,
    latency: Histogram<u64>,
    elapsed: Duration,
}

/// `producers` publishers share jobs `0..jobs` (job i to producer i mod
/// producers), each with its window of unconfirmed publishes.
async fn produce(
    plan: &JobPlan,
    q: &QueueName,
    producers: usize,
    base: Instant,
    confirmed: Arc<AtomicU64>,
) -> anyhow::Result<Produced> {
    let mut ps = Vec::new();
    for _ in 0..producers {
        ps.push(plan.queues.producer(q).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut p) in ps.into_iter().enumerate() {
        let (jobs, size, window) = (plan.jobs, plan.size, plan.window);
        let confirmed = confirmed.clone();
        tasks.spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut sent_at = std::collections::HashMap::new();
            let mut answers = Vec::new();
            let mut record = |answers: &mut Vec<(u64, bool)>,
                              sent_at: &mut std::collections::HashMap<u64, Instant>|
             -> anyhow::Result<()> {
                for (job, ok) in answers.drain(..) {
                    if !ok {
                        bail!("the broker refused job {job}");
                    }
                    if let Some(t) = sent_at.remove(&job) {
                        let _ = latency.record((t.elapsed().as_micros() as u64).max(1));
                    }
                    confirmed.fetch_add(1, Relaxed);
                }
                Ok(())
            };
            let mut job = i as u64;
            while job < jobs {
                while p.unanswered() >= window {
                    p.answers(&mut answers).await?;
                    record(&mut answers, &mut sent_at)?;
                }
                sent_at.insert(job, Instant::now());
                p.publish(job, job_payload(job, size, base)).await?;
                job += producers as u64;
            }
            while p.unanswered() > 0 {
                p.answers(&mut answers).await?;
                record(&mut answers, &mut sent_at)?;
            }
            anyhow::Ok(latency)
        });
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    while let Some(r) = tasks.join_next().await {
        latency.add(r??)?;
    }
    Ok(Produced {
        confirmed: confirmed.load(Relaxed),
        latency,
        elapsed: started.elapsed(),
    })
}

/// Fails when `counter` stands still for the stall timeout before `done`.
async fn watch_stall(
    plan: &JobPlan,
    what: &str,
    counter: impl Fn() -> u64,
    done: &CancellationToken,
) -> anyhow::Result<()> {
    let mut last = (counter(), Instant::now());
    loop {
        tokio::select! {
            _ = done.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let now = counter();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= plan.stall_timeout {
            bail!(
                "{what}: nothing moved for {:?} at {now}: the broker stopped",
                plan.stall_timeout
            );
        }
    }
}

/// What `work` returns, unless `watch` fails first (a stall): then `work`
/// is dropped where it waits.
async fn until_stalled<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    watch: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<T> {
    tokio::pin!(work, watch);
    let mut watching = true;
    loop {
        tokio::select! {
            r = &mut work => return r,
            r = &mut watch, if watching => {
                r?;
                watching = false;
            }
        }
    }
}

/// Workers take jobs until every one in `tally` is done.
async fn drain(
    plan: &JobPlan,
    q: &QueueName,
    tally: Arc<Tally>,
    base: Instant,
    what: &str,
) -> anyhow::Result<Vec<Worked>> {
    let stop = CancellationToken::new();
    let mut workers = spawn_workers(
        plan,
        q,
        0..plan.workers,
        &tally,
        base,
        &stop,
        Duration::ZERO,
    );
    let stalled = {
        let tally = tally.clone();
        watch_stall(plan, what, move || tally.done.load(Relaxed), &stop)
    };
    let stalled = stalled.await;
    stop.cancel();
    let mut worked = Vec::new();
    while let Some(r) = workers.join_next().await {
        worked.push(r??);
    }
    stalled?;
    Ok(worked)
}

/// `work`: one producer publishes every job while the workers acknowledge
/// them.
pub async fn work(
    plan: &JobPlan,
    promise: Promise,
    progress: &Progress,
) -> anyhow::Result<WorkRun> {
    progress.phase(
        &format!("work: {} jobs, {} workers", plan.jobs, plan.workers),
        Duration::ZERO,
    );
    let q = QueueName::new("work", false);
    plan.queues
        .prepare(&q, plan.workers, plan.prefetch, plan.ack_wait)
        .await?;
    let base = Instant::now();
    let tally = Arc::new(Tally::new(plan.jobs));
    let started = Instant::now();
    let draining = drain(plan, &q, tally.clone(), base, "work");
    let producing = produce(plan, &q, 1, base, Arc::new(AtomicU64::new(0)));
    // The workers' stall ends the run: publishers still waiting on a broker
    // that stopped would keep it waiting forever.
    tokio::pin!(draining, producing);
    let mut produced = None;
    let worked = loop {
        tokio::select! {
            w = &mut draining => break w,
            p = &mut producing, if produced.is_none() => produced = Some(p),
        }
    };
    let elapsed = started.elapsed();
    let produced = match (&worked, produced) {
        (_, Some(p)) => p.map(drop),
        (Ok(_), None) => producing.await.map(drop),
        (Err(_), None) => Ok(()),
    };
    plan.queues.remove(&q).await;
    let (worked, ()) = (worked?, produced?);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for w in &worked {
        latency.add(&w.latency)?;
    }
    let total: u64 = worked.iter().map(|w| w.taken).sum::<u64>().max(1);
    Ok(WorkRun {
        promise,
        workers: plan.workers,
        prefetch: plan.prefetch,
        jobs: plan.jobs,
        size: plan.size,
        jobs_per_s: tally.done.load(Relaxed) as f64 / elapsed.as_secs_f64(),
        worker_shares: worked
            .iter()
            .map(|w| w.taken as f64 / total as f64)
            .collect(),
        latency: Latency::from(&latency),
        lost: plan.jobs - tally.done.load(Relaxed),
        duplicates: tally.duplicates.load(Relaxed),
    })
}

/// `durable`: `publishers` producers publish every job, confirmed, with no
/// worker; workers then drain the queue and count what came back.
pub async fn durable(
    plan: &JobPlan,
    promise: Promise,
    publishers: usize,
    progress: &Progress,
) -> anyhow::Result<DurableRun> {
    progress.phase(
        &format!("durable: {} jobs, {publishers} publisher(s)", plan.jobs),
        Duration::ZERO,
    );
    let q = QueueName::new("durable", true);
    plan.queues
        .prepare(&q, plan.workers, plan.prefetch, plan.ack_wait)
        .await?;
    let fsyncs = |url: Option<MetricsUrl>| async move {
        let url = url?;
        Some((
            super::meter::counter(&url, "aioq_store_fsyncs_total").await?,
            super::meter::counter(&url, "aioq_store_synced_records_total").await?,
        ))
    };
    let before = fsyncs(plan.metrics.clone()).await;
    let base = Instant::now();
    let confirmed = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let producing = async {
        let r = produce(plan, &q, publishers, base, confirmed.clone()).await;
        stop.cancel();
        r
    };
    let c = confirmed.clone();
    let watching = watch_stall(plan, "durable", move || c.load(Relaxed), &stop);
    // Raced, not joined: publishers held back by a broker that stopped
    // confirming would otherwise keep the run waiting past its stall.
    let produced = until_stalled(producing, watching).await;
    let after = fsyncs(plan.metrics.clone()).await;
    // A channel the broker kept in memory is refused whether or not the
    // run stalled: held back by the memory bound is how such a run ends
    // when its jobs outgrow the backlog.
    let kept = match (&plan.queues, &plan.metrics) {
        (Queues::Aioq(_), Some(url)) => check_aioq_durable(url, &q.aioq()).await,
        _ => Ok(true),
    };
    let produced = match (produced, kept) {
        (Ok(p), Ok(true)) => p,
        (_, Ok(false)) => {
            plan.queues.remove(&q).await;
            bail!(
                "the broker did not keep {} durable: serve --durable /queue/ (or a prefix \
                 of it) to measure a durable queue",
                q.aioq()
            );
        }
        (Err(e), _) | (Ok(_), Err(e)) => {
            plan.queues.remove(&q).await;
            return Err(e);
        }
    };
    progress.phase(
        &format!("durable: draining {} jobs", plan.jobs),
        Duration::ZERO,
    );
    let tally = Arc::new(Tally::new(plan.jobs));
    let drained = drain(plan, &q, tally.clone(), base, "durable, draining").await;
    plan.queues.remove(&q).await;
    drained?;
    Ok(DurableRun {
        promise,
        publishers,
        jobs: plan.jobs,
        size: plan.size,
        confirms_per_s: produced.confirmed as f64 / produced.elapsed.as_secs_f64(),
        confirm_latency: Latency::from(&produced.latency),
        records_per_fsync: match (before, after) {
            (Some((f0, r0)), Some((f1, r1))) if f1 > f0 => Some((r1 - r0) / (f1 - f0)),
            _ => None,
        },
        lost: plan.jobs - tally.done.load(Relaxed),
        duplicates: tally.duplicates.load(Relaxed),
    })
}

/// The `--target` of a job scenario: `HOST:PORT` (aioq), `amqp://`,
/// `nats://` (JetStream) or `redis://` (Streams).
pub fn parse_target(text: &str, tls: &crate::tls::ClientTlsArgs) -> anyhow::Result<Queues> {
    let bad = || {
        crate::exit::usage(format!(
            "--target {text:?}: expected HOST:PORT (aioq), amqp://[USER:PASS@]HOST:PORT, \
             nats://HOST:PORT or redis://HOST:PORT"
        ))
    };
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(Queues::Aioq(crate::client::Connector::parse(
            "--target", text, tls,
        )?));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "aioq" {
        return Ok(Queues::Aioq(crate::client::Connector::parse(
            "--target", rest, tls,
        )?));
    }
    if tls.enabled() {
        return Err(crate::exit::usage(format!(
            "--target {text}: --tls applies to aioq brokers only"
        )));
    }
    let (auth, hostport) = match rest.trim_end_matches('/').rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest.trim_end_matches('/')),
    };
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    let shown = |s: &str| format!("{s}://{hostport}");
    Ok(match scheme.as_str() {
        "amqp" => Queues::Amqp {
            uri: format!("amqp://{}@{hostport}/%2f", auth.unwrap_or("guest:guest")),
            shown: shown("amqp"),
        },
        "nats" => Queues::JetStream {
            url: match auth {
                Some(a) => format!("nats://{a}@{hostport}"),
                None => format!("nats://{hostport}"),
            },
            shown: shown("nats"),
        },
        "redis" => Queues::Streams {
            url: match auth {
                Some(a) => format!("redis://{a}@{hostport}"),
                None => format!("redis://{hostport}"),
            },
            shown: shown("redis"),
        },
        _ => return Err(bad()),
    })
}

/// Whether an aioq channel was kept durable, checked after the fact: a run
/// against a broker whose `--durable` prefix missed it measured memory.
async fn check_aioq_durable(url: &MetricsUrl, channel: &str) -> anyhow::Result<bool> {
    let channels = super::meter::api(url, "/api/channels?limit=10000").await?;
    Ok(channels["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str() == Some(channel))
        .any(|c| c.get("stored").is_some()))
}

#[derive(Debug, Clone, Serialize)]
pub struct CrashWorkerRun {
    pub promise: Promise,
    pub workers: usize,
    pub jobs: u64,
    /// How long deliveries may go unanswered where the client sets it
    /// (JetStream ack_wait, Redis XAUTOCLAIM idle time).
    pub ack_wait_ms: u64,
    /// Jobs the killed worker had acknowledged, and held unanswered, at the
    /// SIGKILL.
    pub acked_by_killed: u64,
    pub held_by_killed: u64,
    /// Jobs no worker ever finished.
    pub lost: u64,
    /// Jobs finished twice (the killed worker's acknowledgements that never
    /// left, or deliveries given again).
    pub duplicates: u64,
    /// From the SIGKILL until the last job the killed worker held was done
    /// by another worker; null when one never was, or it held none.
    pub handed_on_ms: Option<f64>,
}

/// What a worker process says on its stdout, line by line: `got JOB` when
/// a delivery arrives, `done JOB` just before it acknowledges it (so that
/// a kill between the two can only make a duplicate, never a false loss).
pub async fn worker_process(
    plan: &JobPlan,
    q: &QueueName,
    job_time: Duration,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut w = plan
        .queues
        .worker(q, plan.prefetch, 0, plan.ack_wait)
        .await?;
    let mut batch = Vec::new();
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "ready")?;
    loop {
        batch.clear();
        w.take(&mut batch).await?;
        let jobs: Vec<u64> = batch
            .iter()
            .filter_map(|p| job_of(p))
            .map(|j| j.0)
            .collect();
        {
            let mut out = stdout.lock();
            for j in &jobs {
                writeln!(out, "got {j}")?;
            }
            out.flush()?;
        }
        // The work itself.
        tokio::time::sleep(job_time * jobs.len() as u32).await;
        {
            let mut out = stdout.lock();
            for j in &jobs {
                writeln!(out, "done {j}")?;
            }
            out.flush()?;
        }
        w.ack().await?;
    }
}

/// The killed worker's lines as read so far: the jobs it holds, and how
/// many it finished.
#[derive(Default)]
struct WorkerSaid {
    got: Vec<u64>,
    done: u64,
}

impl WorkerSaid {
    fn apply(&mut self, line: &str, tally: &Tally, base: Instant) -> anyhow::Result<()> {
        match line.split_once(' ') {
            Some(("got", j)) => self.got.push(j.parse()?),
            Some(("done", j)) => {
                let j: u64 = j.parse()?;
                self.done += 1;
                self.got.retain(|g| *g != j);
                tally.take(j, base.elapsed().as_nanos() as u64);
            }
            _ => {}
        }
        Ok(())
    }
}

/// `crash-worker`: a worker process is killed (SIGKILL) while it holds
/// jobs; the others must finish every job, and the killed one's must reach
/// them. `worker` is the command line of that process.
pub async fn crash_worker(
    plan: &JobPlan,
    promise: Promise,
    worker: impl FnOnce(&QueueName) -> tokio::process::Command,
    progress: &Progress,
) -> anyhow::Result<CrashWorkerRun> {
    use tokio::io::AsyncBufReadExt;
    progress.phase(
        &format!(
            "crash-worker: {} jobs, {} workers, one killed",
            plan.jobs, plan.workers
        ),
        Duration::ZERO,
    );
    anyhow::ensure!(plan.workers >= 2, "crash-worker needs --workers 2 or more");
    let q = QueueName::new("crash", false);
    plan.queues
        .prepare(&q, plan.workers, plan.prefetch, plan.ack_wait)
        .await?;
    let base = Instant::now();
    let tally = Arc::new(Tally::new(plan.jobs));
    let mut child = worker(&q)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the worker process")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    // Its share starts with the others', not after them.
    match tokio::time::timeout(plan.stall_timeout, lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => {}
        Ok(Ok(_)) | Ok(Err(_)) => bail!("the worker process ended before it was ready"),
        Err(_) => bail!(
            "the worker process was not ready within {:?}",
            plan.stall_timeout
        ),
    }
    let stop = CancellationToken::new();
    let mut workers = spawn_workers(
        plan,
        &q,
        1..plan.workers,
        &tally,
        base,
        &stop,
        plan.job_time,
    );
    let producing = produce(plan, &q, 1, base, Arc::new(AtomicU64::new(0)));
    // Killed once it has finished its share of a quarter of the jobs, with
    // jobs in hand.
    let kill_after = (plan.jobs / plan.workers as u64 / 4).max(1);
    let watching = async {
        let mut said = WorkerSaid::default();
        loop {
            let line = match tokio::time::timeout(plan.stall_timeout, lines.next_line()).await {
                Ok(line) => line?,
                Err(_) => bail!(
                    "the worker process took no more jobs for {:?} before it was due to be \
                     killed (more --jobs, or a lower --prefetch)",
                    plan.stall_timeout
                ),
            };
            let Some(line) = line else {
                bail!("the worker process ended before it was killed");
            };
            said.apply(&line, &tally, base)?;
            // Just after a `got`, the process is at its work with those
            // jobs in hand (its `done` lines come after the job time).
            if said.done >= kill_after && line.starts_with("got ") {
                break;
            }
        }
        child.start_kill()?;
        let killed_at = base.elapsed().as_nanos() as u64;
        let _ = child.wait().await;
        // The process may have run ahead of this reader: what it said
        // before it died is still in the pipe, and a job it said `done`
        // to was acknowledged, so never comes back. Read to the end.
        while let Some(line) = lines.next_line().await? {
            said.apply(&line, &tally, base)?;
        }
        anyhow::Ok((said.done, said.got, killed_at))
    };
    let (killed, produced) = tokio::join!(watching, producing);
    let stalled = {
        let tally = tally.clone();
        watch_stall(
            plan,
            "crash-worker",
            move || tally.done.load(Relaxed),
            &stop,
        )
    };
    // A stall here is the finding: what the killed worker held and nobody
    // got within the stall timeout (past the ack wait) is lost.
    if killed.is_ok() && produced.is_ok() {
        let _ = stalled.await;
    }
    stop.cancel();
    while let Some(r) = workers.join_next().await {
        r??;
    }
    plan.queues.remove(&q).await;
    let (acked, held, killed_at) = killed?;
    produced?;
    // None when one never was, or when it held none at its death (it had
    // said `done` to all it got): then there is nothing to time.
    let handed_on = held
        .iter()
        .map(|j| tally.first_at[*j as usize].load(Relaxed))
        .try_fold(0u64, |latest, at| (at > 0).then(|| latest.max(at)))
        .filter(|_| !held.is_empty());
    Ok(CrashWorkerRun {
        promise,
        workers: plan.workers,
        jobs: plan.jobs,
        ack_wait_ms: plan.ack_wait.as_millis() as u64,
        acked_by_killed: acked,
        held_by_killed: held.len() as u64,
        lost: plan.jobs - tally.done.load(Relaxed),
        duplicates: tally.duplicates.load(Relaxed),
        handed_on_ms: handed_on.map(|at| at.saturating_sub(killed_at) as f64 / 1e6),
    })
}
