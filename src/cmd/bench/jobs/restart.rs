//! `crash-broker` and `recovery`: a broker the bench started is killed
//! (SIGKILL) with confirmed jobs in its durable queue, started again, and
//! drained. crash-broker kills it in the middle of a confirmed flood;
//! recovery once every job is confirmed, to time how long it takes to
//! serve again with that many stored. No worker runs before the kill, so
//! every duplicate is one the broker made.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::started::Started;
use super::{job_payload, spawn_workers, JobPlan, Progress, Promise, QueueName, Tally};

#[derive(Debug, Clone, Serialize)]
pub struct RestartRun {
    pub promise: Promise,
    /// The broker promised to keep a confirmed job across a restart; when
    /// false, loss is what it promised, not a defect.
    pub durable: bool,
    pub publishers: usize,
    /// Jobs the flood was to send.
    pub jobs: u64,
    /// Jobs sent before the kill, and how many of them were confirmed.
    pub published: u64,
    pub confirmed: u64,
    /// Confirmed before the kill, never delivered after the restart.
    pub confirmed_lost: u64,
    /// Sent, never confirmed, delivered after the restart (a publisher
    /// that sends again what was not confirmed makes these duplicates).
    pub unconfirmed_kept: u64,
    /// Jobs delivered more than once after the restart.
    pub duplicates: u64,
    /// Jobs delivered that were never sent.
    pub never_published: u64,
    /// From the restart until the broker's port accepted a connection.
    pub listening_ms: f64,
    /// From the restart until a worker had the first job.
    pub first_job_ms: Option<f64>,
    /// From the restart until the last job a worker got.
    pub drained_ms: Option<f64>,
}

/// When the broker is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// Once half of the jobs are confirmed, publishes in flight.
    HalfConfirmed,
    /// Once every job is confirmed.
    AllConfirmed,
}

const SENT: u8 = 1;
const CONFIRMED: u8 = 2;

/// How long after the last confirmed job arrives the drain waits for
/// more (unconfirmed ones the broker kept, duplicates).
const QUIET: Duration = Duration::from_millis(500);

pub async fn restart_run(
    plan: &JobPlan,
    broker: &mut Started,
    promise: Result<Promise, String>,
    jobs: u64,
    kill: KillAt,
    progress: &Progress,
) -> anyhow::Result<RestartRun> {
    let scenario = match kill {
        KillAt::HalfConfirmed => "crash-broker",
        KillAt::AllConfirmed => "recovery",
    };
    let publishers = plan.publishers.iter().copied().max().unwrap_or(1);
    progress.phase(
        &format!("{scenario}: {jobs} jobs from {publishers} publishers, SIGKILL, restart, drain"),
        Duration::ZERO,
    );
    let (durable, promise) = match promise {
        Ok(p) => (true, p),
        Err(why) => (
            false,
            Promise {
                broker: plan.queues.kind(),
                settings: format!("no durable promise: {why}"),
                synced_before_confirm: false,
            },
        ),
    };
    let q = QueueName::new(&format!("durable-{scenario}"), true);
    plan.queues
        .prepare(&q, plan.workers, plan.prefetch, plan.ack_wait)
        .await?;
    let base = Instant::now();
    let state: Arc<Vec<AtomicU8>> = Arc::new((0..jobs).map(|_| AtomicU8::new(0)).collect());
    // Counted as confirms come: the kill is decided every millisecond,
    // and a scan of a million jobs each time would take the cores the
    // broker is measured on.
    let confirms = Arc::new(AtomicU64::new(0));
    // Set just before the SIGKILL: errors are expected from then on.
    let dying = CancellationToken::new();
    // Set a while after it: a client that reconnects on its own (NATS)
    // would wait for the broker for good.
    let killed = CancellationToken::new();
    let mut producers = tokio::task::JoinSet::new();
    for i in 0..publishers {
        let mut p = plan.queues.producer(&q).await?;
        let (state, confirms) = (state.clone(), confirms.clone());
        let (dying, killed) = (dying.clone(), killed.clone());
        let (size, window) = (plan.size, plan.window);
        producers.spawn(async move {
            let mut answers = Vec::new();
            let flood = async {
                let mut job = i as u64;
                while job < jobs {
                    while p.unanswered() >= window {
                        p.answers(&mut answers).await?;
                        confirm(&state, &confirms, &mut answers)?;
                    }
                    state[job as usize].store(SENT, Relaxed);
                    p.publish(job, job_payload(job, size, base)).await?;
                    job += publishers as u64;
                }
                while p.unanswered() > 0 {
                    p.answers(&mut answers).await?;
                    confirm(&state, &confirms, &mut answers)?;
                }
                anyhow::Ok(())
            };
            tokio::select! {
                r = flood => match r {
                    Err(e) if !dying.is_cancelled() => Err(e),
                    // The broker died under it: expected.
                    _ => Ok(()),
                },
                _ = killed.cancelled() => Ok(()),
            }
        });
    }
    // Until the moment to kill, the end of the flood (a small run may end
    // first), or a flood that stopped moving (a broker that holds its
    // publishers back at a backlog bound): the kill comes then.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut last = (0, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = producers.join_next() => match r {
                Some(r) => r??,
                None => break,
            },
        }
        let now = confirms.load(Relaxed);
        if kill == KillAt::HalfConfirmed && now >= jobs / 2 {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= plan.stall_timeout {
            break;
        }
    }
    dying.cancel();
    broker.kill().await;
    if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(r) = producers.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
    .await
    {
        r?;
    }
    killed.cancel();
    while let Some(r) = producers.join_next().await {
        r??;
    }
    let published = state.iter().filter(|s| s.load(Relaxed) != 0).count() as u64;
    let confirmed = confirms.load(Relaxed);

    let restarted_at = base.elapsed();
    let listening = broker.start().await?;
    // A store that kept nothing kept no queue either (Redis without AOF):
    // made again, empty, so that workers can ask.
    let _ = plan
        .queues
        .prepare(&q, plan.workers, plan.prefetch, plan.ack_wait)
        .await;
    let tally = Arc::new(Tally::new(jobs));
    let stop = CancellationToken::new();
    let mut workers = spawn_workers(
        plan,
        &q,
        0..plan.workers,
        &tally,
        base,
        &stop,
        Duration::ZERO,
    );
    // Until every confirmed job came and then nothing for a while, or
    // nothing at all for the stall timeout: what is missing then is lost.
    let confirmed_seen = || {
        state
            .iter()
            .zip(&tally.seen)
            .all(|(s, seen)| s.load(Relaxed) != CONFIRMED || seen.load(Relaxed) > 0)
    };
    let mut last = (tally.done.load(Relaxed), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if workers.is_empty() {
            break;
        }
        if let Some(r) = workers.try_join_next() {
            r??;
        }
        let now = tally.done.load(Relaxed) + tally.duplicates.load(Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        let quiet = last.1.elapsed();
        // Scanned only once as many jobs came as were confirmed.
        if (quiet >= QUIET && tally.done.load(Relaxed) >= confirmed && confirmed_seen())
            || quiet >= plan.stall_timeout
        {
            break;
        }
    }
    stop.cancel();
    while let Some(r) = workers.join_next().await {
        r??;
    }
    plan.queues.remove(&q).await;

    let mut r = RestartRun {
        promise,
        durable,
        publishers,
        jobs,
        published,
        confirmed,
        confirmed_lost: 0,
        unconfirmed_kept: 0,
        duplicates: tally.duplicates.load(Relaxed),
        never_published: 0,
        listening_ms: listening.as_secs_f64() * 1e3,
        first_job_ms: None,
        drained_ms: None,
    };
    let since_restart = |at: u64| (at as f64 - restarted_at.as_nanos() as f64) / 1e6;
    for (i, s) in state.iter().enumerate() {
        let seen = tally.seen[i].load(Relaxed) > 0;
        match (s.load(Relaxed), seen) {
            (CONFIRMED, false) => r.confirmed_lost += 1,
            (SENT, true) => r.unconfirmed_kept += 1,
            (0, true) => r.never_published += 1,
            _ => {}
        }
        let at = tally.first_at[i].load(Relaxed);
        if at > 0 {
            let ms = since_restart(at);
            r.first_job_ms = Some(r.first_job_ms.map_or(ms, |f: f64| f.min(ms)));
            r.drained_ms = Some(r.drained_ms.map_or(ms, |d: f64| d.max(ms)));
        }
    }
    Ok(r)
}

fn confirm(
    state: &[AtomicU8],
    confirms: &AtomicU64,
    answers: &mut Vec<(u64, bool)>,
) -> anyhow::Result<()> {
    for (job, ok) in answers.drain(..) {
        if !ok {
            bail!("the broker refused job {job}");
        }
        if let Some(s) = state.get(job as usize) {
            if s.swap(CONFIRMED, Relaxed) != CONFIRMED {
                confirms.fetch_add(1, Relaxed);
            }
        }
    }
    Ok(())
}
