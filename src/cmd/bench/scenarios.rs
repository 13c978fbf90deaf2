//! The bench's scenarios, each a function from a plan to a report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::clients::{self, Published, SlowMode, SubResult};
use super::payload::{self, new_histogram};
use super::report::*;
use super::Plan;

/// A fresh channel name per run, so runs never see each other's messages.
fn channel(kind: &str, what: &str) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    format!(
        "/{kind}/aioq-bench-{what}-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Relaxed)
    )
}

/// Waits until `progress` reaches `want`, or stops moving for `idle`.
async fn settle(progress: &AtomicU64, want: u64, idle: Duration, cap: Duration) {
    let give_up = Instant::now() + cap;
    let mut last = progress.load(Relaxed);
    let mut last_move = Instant::now();
    while Instant::now() < give_up {
        let now = progress.load(Relaxed);
        if now >= want {
            return;
        }
        if now != last {
            last = now;
            last_move = Instant::now();
        } else if last_move.elapsed() >= idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn isolation(
    plan: &Plan,
    queue: bool,
    progress: &super::Progress,
) -> anyhow::Result<Isolation> {
    let kind = if queue { "queue" } else { "topic" };
    progress.phase(&format!("isolation ({kind}), baseline"), plan.duration);
    let baseline = isolation_run(plan, queue, 0).await?;
    progress.phase(
        &format!(
            "isolation ({kind}), {} {} subscriber(s)",
            plan.slow,
            mode_name(plan.slow_mode)
        ),
        plan.duration,
    );
    let with_slow = isolation_run(plan, queue, plan.slow).await?;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    // What each stalled subscriber was owed: all of a topic, a worker's share
    // of a queue under round robin.
    let workers = if queue {
        plan.subscribers + plan.slow
    } else {
        1
    };
    let stall = Stall {
        owed_bytes: with_slow.published_bytes / workers as u64,
        path_bytes: plan.stall_path_bytes,
        publisher_held_back: with_slow.publisher_held_back,
        felt: false,
    };
    // Felt when the stall held the publisher back (the broker waited on it),
    // or when the stalled subscriber was owed well past what the kernel can
    // absorb on its path, so the broker had to hold, drop or wait. Otherwise
    // the kernel's buffers may have hidden the stall: no ratio can be claimed.
    let stall = Stall {
        felt: plan.slow == 0
            || stall.publisher_held_back
            || with_slow.slow.iter().any(|s| s.disconnected_by_broker)
            || stall.owed_bytes as f64 >= FELT_MARGIN * stall.path_bytes as f64,
        ..stall
    };
    let isolation_ratio = ratio(
        with_slow.fast.delivered_per_s,
        baseline.fast.delivered_per_s,
    );
    Ok(Isolation {
        channel_kind: kind,
        verdict: if stall.felt {
            Verdict::Measured
        } else {
            Verdict::Inconclusive
        },
        isolation_ratio: stall.felt.then_some(isolation_ratio),
        stall,
        p99_ratio: ratio(
            with_slow.fast.latency.p99_us as f64,
            baseline.fast.latency.p99_us as f64,
        ),
        baseline,
        with_slow,
    })
}

/// How far past the kernel's share of a stalled path the bytes owed to a
/// stalled subscriber must go for the stall to count as felt by the broker.
const FELT_MARGIN: f64 = 1.5;

/// The priming burst's size for one isolation run: twice the kernel's share
/// of the stalled path, per stalled subscriber (each worker's share, for a
/// queue), in messages of [`super::PRIME_SIZE`].
fn prime_messages(plan: &Plan, queue: bool, channel: &str) -> u64 {
    if !plan.prime || plan.slow == 0 {
        return 0;
    }
    let workers = if queue {
        plan.subscribers + plan.slow
    } else {
        1
    } as u64;
    let bytes = 2 * plan.stall_path_bytes * workers;
    let frame = (2 * crate::proto::LEN_PREFIX + channel.len() + super::PRIME_SIZE) as u64;
    bytes.div_ceil(frame)
}

fn mode_name(m: SlowMode) -> &'static str {
    match m {
        SlowMode::Stall => "stalled",
        SlowMode::Trickle => "trickling",
    }
}

async fn isolation_run(plan: &Plan, queue: bool, slow: usize) -> anyhow::Result<IsolationRun> {
    let chan = channel(if queue { "queue" } else { "topic" }, "isolation");
    let paced = (plan.rate * plan.duration.as_secs_f64()).ceil() as u64;
    let prime = prime_messages(plan, queue, &chan);
    let total = paced + prime;
    // The priming burst and the first second (at most a tenth of the run) are
    // warm-up: subscriptions settle, connections warm, the stalled path fills;
    // it counts for nothing but ordering.
    let warmup = prime + (plan.rate as u64).min(paced / 10);
    let stop = CancellationToken::new();
    let progress = Arc::new(AtomicU64::new(0));
    let mut fast = Vec::new();
    for _ in 0..plan.subscribers {
        let sub = plan.sub_addr.subscribe(&chan).await?;
        fast.push(tokio::spawn(clients::measure(
            sub,
            warmup,
            clients::Timing::Latency,
            progress.clone(),
            stop.clone(),
        )));
    }
    let slow_stop = CancellationToken::new();
    let mut slow_tasks = Vec::new();
    for _ in 0..slow {
        let sub = plan.sub_addr.subscribe_raw(&chan, true).await?;
        slow_tasks.push(tokio::spawn(clients::slow(
            sub,
            plan.slow_mode,
            plan.trickle_rate,
            warmup,
            slow_stop.clone(),
            queue,
        )));
    }
    // Subscriptions are asynchronous on the broker's side: give them a moment
    // before the clock starts (the warm-up absorbs any that are still late).
    tokio::time::sleep(plan.settle).await;
    let deadline = Instant::now() + plan.duration + plan.duration.max(Duration::from_secs(2));
    let published =
        clients::publish_paced(plan, &chan, plan.rate, (prime, paced), warmup, deadline).await?;
    // Slow /queue workers catch up now, so that late is not counted as lost.
    slow_stop.cancel();
    let mut slow_results = Vec::new();
    for t in slow_tasks {
        slow_results.push(t.await?);
    }
    let want = if queue {
        published
            .messages
            .saturating_sub(slow_results.iter().map(|s| s.tracker.unique).sum())
    } else {
        published.messages * plan.subscribers as u64
    };
    settle(
        &progress,
        want,
        Duration::from_secs(1),
        Duration::from_secs(10),
    )
    .await;
    stop.cancel();
    let mut fast_results = Vec::new();
    for t in fast {
        fast_results.push(t.await?);
    }
    Ok(summarise_isolation(
        plan,
        queue,
        slow,
        total,
        warmup,
        &published,
        &fast_results,
        &slow_results,
    ))
}

#[allow(clippy::too_many_arguments)]
fn summarise_isolation(
    plan: &Plan,
    queue: bool,
    slow: usize,
    total: u64,
    warmup: u64,
    published: &Published,
    fast: &[SubResult],
    slow_results: &[SubResult],
) -> IsolationRun {
    let mut latency = new_histogram();
    for f in fast {
        latency
            .add(&f.tracker.latency_us)
            .expect("same histogram bounds");
    }
    let last_receive = fast
        .iter()
        .map(|f| f.tracker.last_receive_ns)
        .max()
        .unwrap_or(0);
    let window_ns = published
        .last_ns
        .max(last_receive)
        .saturating_sub(published.measure_start_ns)
        .max(1);
    let window = window_ns as f64 / 1e9;
    let measured_expected = total.saturating_sub(warmup).max(1) as f64;
    let (delivered_per_s, fraction, lost) = if queue {
        let measured: u64 = fast.iter().map(|f| f.tracker.measured).sum();
        let lost = (0..published.messages)
            .filter(|&s| !fast.iter().chain(slow_results).any(|r| r.tracker.has(s)))
            .count() as u64;
        let unique: u64 = fast
            .iter()
            .chain(slow_results)
            .map(|r| r.tracker.unique)
            .sum();
        (
            measured as f64 / window,
            unique as f64 / total.max(1) as f64,
            lost,
        )
    } else {
        let rate = fast
            .iter()
            .map(|f| f.tracker.measured as f64 / window)
            .sum::<f64>()
            / fast.len().max(1) as f64;
        let fraction = fast
            .iter()
            .map(|f| f.tracker.measured as f64 / measured_expected)
            .fold(f64::INFINITY, f64::min);
        let lost = fast
            .iter()
            .map(|f| count_missing(f, warmup, published.messages))
            .sum();
        (
            rate,
            if fraction.is_finite() { fraction } else { 0.0 },
            lost,
        )
    };
    IsolationRun {
        slow_subscribers: slow,
        target_rate: plan.rate,
        published: published.messages,
        published_bytes: published.bytes,
        publisher_held_back: published.gave_up,
        publish_rate: published.messages.saturating_sub(warmup) as f64
            / ((published.last_ns.saturating_sub(published.measure_start_ns)).max(1) as f64 / 1e9),
        complete: !published.gave_up
            && published.messages == total
            && !fast.iter().any(|f| f.disconnected),
        fast: Fast {
            subscribers: fast.len(),
            delivered_per_s,
            delivered_fraction: fraction.min(1.0),
            lost,
            duplicates: fast.iter().map(|f| f.tracker.duplicates).sum(),
            reordered: fast.iter().map(|f| f.tracker.reordered).sum(),
            latency: Latency::from(&latency),
        },
        slow: slow_results
            .iter()
            .map(|s| Slow {
                mode: plan.slow_mode,
                received: s.tracker.received,
                disconnected_by_broker: s.disconnected,
            })
            .collect(),
    }
}

/// Topic subscribers: measured messages (past the warm-up) never received.
fn count_missing(r: &SubResult, from: u64, to: u64) -> u64 {
    (from..to).filter(|&s| !r.tracker.has(s)).count() as u64
}

pub async fn throughput(
    plan: &Plan,
    queue: bool,
    progress: &super::Progress,
) -> anyhow::Result<Throughput> {
    let kind = if queue { "queue" } else { "topic" };
    progress.phase(&format!("throughput ({kind})"), Duration::ZERO);
    let chan = channel(kind, "throughput");
    let stop = CancellationToken::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for _ in 0..plan.subscribers {
        let sub = plan.sub_addr.subscribe(&chan).await?;
        subs.push(tokio::spawn(clients::measure(
            sub,
            0,
            clients::Timing::Throughput,
            delivered.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(plan.settle).await;
    let expected = if queue {
        plan.messages
    } else {
        plan.messages * plan.subscribers as u64
    };
    let gauge = match &plan.meter {
        Some(m) => m.read().await,
        None => None,
    };
    let sent_before = clients::SENT.load(Relaxed);
    let mut publisher = {
        let (to, chan) = (plan.addr.clone(), chan.clone());
        let (n, size) = (plan.messages, plan.size);
        tokio::spawn(async move { clients::publish_flood(&to, &chan, n, size).await })
    };
    let ticker = progress.counter(expected);
    let watch = async {
        let moved = || (clients::SENT.load(Relaxed), delivered.load(Relaxed));
        let mut last = moved();
        let mut last_move = Instant::now();
        loop {
            ticker.set_position(delivered.load(Relaxed));
            tokio::time::sleep(plan.settle).await;
            let now = moved();
            if now != last {
                last = now;
                last_move = Instant::now();
            } else if last_move.elapsed() >= plan.stall_timeout {
                return anyhow::anyhow!(
                    "throughput ({kind}): nothing sent or delivered for {:?} ({} of {} \
                     messages sent, {} delivered): the broker stopped taking messages \
                     (--stall-timeout)",
                    plan.stall_timeout,
                    now.0 - sent_before,
                    plan.messages,
                    now.1
                );
            }
        }
    };
    let published = tokio::select! {
        p = &mut publisher => p??,
        stalled = watch => {
            publisher.abort();
            stop.cancel();
            return Err(stalled);
        }
    };
    settle(
        &delivered,
        expected,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let physics = match (gauge, &plan.meter) {
        (Some(before), Some(m)) => m.read().await.and_then(|after| before.since(after)),
        _ => None,
    };
    stop.cancel();
    let mut results = Vec::new();
    for s in subs {
        results.push(s.await?);
    }
    let got: u64 = results.iter().map(|r| r.tracker.unique).sum();
    let last = results
        .iter()
        .map(|r| r.tracker.last_receive_ns)
        .max()
        .unwrap_or(published.last_ns);
    let secs = (last.max(published.last_ns) - published.first_ns).max(1) as f64 / 1e9;
    let pub_secs = (published.last_ns - published.first_ns).max(1) as f64 / 1e9;
    Ok(Throughput {
        channel_kind: kind,
        subscribers: plan.subscribers,
        size: plan.size,
        published: published.messages,
        published_per_s: published.messages as f64 / pub_secs,
        expected_deliveries: expected,
        delivered: got,
        delivered_per_s: got as f64 / secs,
        delivered_mb_per_s: got as f64 * plan.size as f64 / secs / 1e6,
        lost: expected.saturating_sub(got),
        complete: !results.iter().any(|r| r.disconnected),
        worker_shares: (queue && got > 0).then(|| {
            let share = |r: &SubResult| r.tracker.unique as f64 / got as f64;
            let shares = results.iter().map(share);
            (
                shares.clone().fold(f64::INFINITY, f64::min),
                shares.fold(0.0, f64::max),
            )
        }),
        physics,
    })
}

pub async fn latency(plan: &Plan, progress: &super::Progress) -> anyhow::Result<LatencyReport> {
    progress.phase("latency", plan.latency_duration);
    let chan = channel("topic", "latency");
    let total = (plan.latency_rate * plan.latency_duration.as_secs_f64()).ceil() as u64;
    let warmup = (plan.latency_rate as u64 / 2).min(total / 10);
    let stop = CancellationToken::new();
    let count = Arc::new(AtomicU64::new(0));
    let sub = plan.sub_addr.subscribe(&chan).await?;
    let sub = tokio::spawn(clients::measure(
        sub,
        warmup,
        clients::Timing::Latency,
        count.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(plan.settle).await;
    let deadline = Instant::now() + plan.latency_duration * 2 + Duration::from_secs(2);
    let published =
        clients::publish_paced(plan, &chan, plan.latency_rate, (0, total), warmup, deadline)
            .await?;
    settle(
        &count,
        published.messages,
        Duration::from_secs(1),
        Duration::from_secs(10),
    )
    .await;
    stop.cancel();
    let r = sub.await?;
    Ok(LatencyReport {
        rate: plan.latency_rate,
        published: published.messages,
        received: r.tracker.unique,
        latency: Latency::from(&r.tracker.latency_us),
        intended_latency: Latency::from(&r.tracker.intended_us),
        complete: !published.gave_up && !r.disconnected && r.tracker.unique == published.messages,
    })
}

pub async fn fanout(
    plan: &Plan,
    embedded: bool,
    progress: &super::Progress,
) -> anyhow::Result<Fanout> {
    progress.phase(
        &format!("fan-out to {} connections", plan.connections),
        Duration::ZERO,
    );
    let chan = channel("topic", "fanout");
    let rss_before = embedded.then(super::rss_bytes).flatten();
    let stop = CancellationToken::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let sub = plan.sub_addr.subscribe(&chan).await?;
        subs.push(tokio::spawn(clients::count(
            sub,
            delivered.clone(),
            stop.clone(),
        )));
    }
    let n = plan.connections as u64;
    // Probe until every subscription is in place: one message reaching all.
    let mut pw = plan.addr.publisher().await?;
    let probe_chan = bytes::Bytes::copy_from_slice(chan.as_bytes());
    let mut seq = 0u64;
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        let before = delivered.load(Relaxed);
        pw.send(
            &probe_chan,
            payload::encode(seq, payload::now_ns(), plan.size),
        )
        .await?;
        seq += 1;
        settle(
            &delivered,
            before + n,
            Duration::from_millis(500),
            Duration::from_secs(5),
        )
        .await;
        if delivered.load(Relaxed) - before >= n || Instant::now() > ready_by {
            break;
        }
    }
    let rss_after = embedded.then(super::rss_bytes).flatten();
    // One message at a time: how long until the last subscriber has it.
    let mut fan = new_histogram();
    for _ in 0..plan.fanout_probes {
        let before = delivered.load(Relaxed);
        let t0 = Instant::now();
        pw.send(
            &probe_chan,
            payload::encode(seq, payload::now_ns(), plan.size),
        )
        .await?;
        seq += 1;
        settle(
            &delivered,
            before + n,
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .await;
        let _ = fan.record((t0.elapsed().as_micros() as u64).max(1));
    }
    // Then a burst, for the delivery rate.
    let burst = plan.fanout_burst;
    let before = delivered.load(Relaxed);
    let t0 = payload::now_ns();
    for _ in 0..burst {
        pw.feed(
            &probe_chan,
            payload::encode(seq, payload::now_ns(), plan.size),
        )
        .await?;
        seq += 1;
    }
    pw.flush().await?;
    settle(
        &delivered,
        before + burst * n,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let burst_got = delivered.load(Relaxed) - before;
    drop(pw);
    stop.cancel();
    let mut disconnected = false;
    let mut last = t0;
    for s in subs {
        let (last_receive, cut) = s.await?;
        disconnected |= cut;
        last = last.max(last_receive);
    }
    let secs = (last - t0).max(1) as f64 / 1e9;
    Ok(Fanout {
        connections: plan.connections,
        messages: burst,
        delivered: burst_got,
        delivered_per_s: burst_got as f64 / secs,
        fanout_time: Latency::from(&fan),
        rss_per_connection_bytes: match (rss_before, rss_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) / n.max(1)),
            _ => None,
        },
        complete: !disconnected && burst_got == burst * n,
    })
}
