//! The bench's clients: paced and flooding publishers, measuring subscribers,
//! and slow subscribers that stall or trickle.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::link::{Event, Sub, Target};
use super::payload::{self, Tracker};

#[derive(Debug, Clone, Default)]
pub struct Published {
    pub messages: u64,
    /// Monotonic ns when the first and last message were handed to the socket.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Monotonic ns when message number `warmup` was sent (start of measuring).
    pub measure_start_ns: u64,
    /// The publisher gave up at its deadline: the broker held it back.
    pub gave_up: bool,
    /// Frame bytes written, priming burst included.
    pub bytes: u64,
}

/// Messages every publisher of this bench has sent and every subscriber
/// received, for the live progress line.
pub static SENT: AtomicU64 = AtomicU64::new(0);
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// How long a paced publisher's write may wait on the broker before the
/// publisher counts as held back.
const STUCK: Duration = Duration::from_secs(2);

/// Publishes `prime` messages of [`super::PRIME_SIZE`] as fast as the broker
/// takes them (a burst that fills every kernel buffer on a stalled
/// subscriber's path, so that the broker has to deal with the stall), then
/// `total` messages at `rate` per second, catching up every millisecond, until
/// done or `deadline`. Says goodbye and waits for the broker's end-of-stream,
/// so that everything sent has been routed. The first `warmup` messages,
/// the burst included, are not measured.
pub async fn publish_paced(
    plan: &super::Plan,
    channel: &str,
    rate: f64,
    (prime, total): (u64, u64),
    warmup: u64,
    deadline: Instant,
) -> anyhow::Result<Published> {
    let mut writer = plan.addr.publisher().await?;
    let chan = Bytes::copy_from_slice(channel.as_bytes());
    let mut out = Published {
        first_ns: payload::now_ns(),
        ..Default::default()
    };
    let frame = |size: usize| (2 * crate::proto::LEN_PREFIX + chan.len() + size) as u64;
    let deadline_at = tokio::time::Instant::from_std(deadline);
    let burst = async {
        while out.messages < prime {
            writer
                .feed(
                    &chan,
                    payload::encode(out.messages, payload::now_ns(), super::PRIME_SIZE),
                )
                .await?;
            out.messages += 1;
            out.bytes += frame(super::PRIME_SIZE);
            SENT.fetch_add(1, Relaxed);
        }
        writer.flush().await
    };
    tokio::select! {
        r = burst => r.context("publishing the priming burst")?,
        _ = tokio::time::sleep_until(deadline_at.min(tokio::time::Instant::now() + STUCK)) => {
            out.gave_up = true
        }
    }
    let total = total + prime;
    // The schedule is kept by a thread of its own with the OS's sleep (tens
    // of microseconds late, where the runtime's timer is up to a millisecond
    // late): it hands over each sequence number when it is due. A message's
    // due time comes from its place in the schedule, not from when it was
    // handed over, so a publisher held back counts the delay for every
    // message behind it (no coordinated omission).
    let start_ns = payload::now_ns() + 1_000_000;
    let due_ns = move |seq: u64| start_ns + ((seq - prime) as f64 * 1e9 / rate) as u64;
    let (due_tx, mut due_rx) = tokio::sync::mpsc::channel::<u64>(4096);
    let first = out.messages;
    std::thread::spawn(move || {
        for seq in first..total {
            let wait = due_ns(seq).saturating_sub(payload::now_ns());
            if wait > 0 {
                std::thread::sleep(Duration::from_nanos(wait));
            }
            if due_tx.blocking_send(seq).is_err() {
                return;
            }
        }
    });
    let deadline = deadline_at;
    while out.messages < total && !out.gave_up {
        let seq = tokio::select! {
            s = due_rx.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => { out.gave_up = true; break; }
        };
        let send = async {
            let mut next = Some(seq);
            while let Some(seq) = next {
                if seq == warmup {
                    out.measure_start_ns = payload::now_ns();
                }
                writer
                    .feed(&chan, payload::encode_due(seq, due_ns(seq), plan.size))
                    .await?;
                out.messages += 1;
                out.bytes += frame(plan.size);
                SENT.fetch_add(1, Relaxed);
                next = due_rx.try_recv().ok();
            }
            writer.flush().await
        };
        // A write the broker has not taken for STUCK is a publisher held
        // back: waiting for the deadline would only make the run longer.
        let stuck = deadline.min(tokio::time::Instant::now() + STUCK);
        tokio::select! {
            r = send => r.context("publishing")?,
            _ = tokio::time::sleep_until(stuck) => { out.gave_up = true; break; }
        }
    }
    out.last_ns = payload::now_ns();
    if warmup >= out.messages {
        out.measure_start_ns = out.last_ns;
    }
    if !out.gave_up {
        let _ = writer.finish().await;
    }
    Ok(out)
}

/// Publishes `total` messages as fast as the broker's back-pressure allows.
pub async fn publish_flood(
    to: &Target,
    channel: &str,
    total: u64,
    size: usize,
) -> anyhow::Result<Published> {
    let mut writer = to.publisher().await?;
    let chan = Bytes::copy_from_slice(channel.as_bytes());
    let mut out = Published {
        first_ns: payload::now_ns(),
        ..Default::default()
    };
    out.measure_start_ns = out.first_ns;
    let mut now = 0;
    for seq in 0..total {
        // The clock, not every message: a flood's latency is not measured,
        // and a clock read costs as much as encoding the frame.
        if seq % payload::CLOCK_EVERY == 0 {
            now = payload::now_ns();
        }
        writer.feed(&chan, payload::encode(seq, now, size)).await?;
        if seq % 64 == 63 {
            writer.flush().await?;
            SENT.fetch_add(64, Relaxed);
        }
    }
    writer.flush().await?;
    SENT.fetch_add(total % 64, Relaxed);
    out.messages = total;
    out.last_ns = payload::now_ns();
    let _ = writer.finish().await;
    Ok(out)
}

/// What a subscriber measures besides loss, duplicates and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Every message's latency.
    Latency,
    /// Only when the last message came.
    Throughput,
}

#[derive(Debug, Clone)]
pub struct SubResult {
    pub tracker: Tracker,
    /// The broker closed the connection before the bench was done with it.
    pub disconnected: bool,
}

/// Messages received and not yet added to the shared counters: adding each
/// at once costs two atomic read-modify-writes on lines every subscriber
/// task shares, more than tracking the message does.
struct Counts<'a> {
    progress: &'a AtomicU64,
    unsaid: u64,
}

impl<'a> Counts<'a> {
    fn new(progress: &'a AtomicU64) -> Self {
        Self {
            progress,
            unsaid: 0,
        }
    }

    fn one(&mut self) {
        self.unsaid += 1;
    }

    /// Adds what was counted; before a subscriber waits, so that whoever
    /// watches the counters never waits on a count held back here.
    fn say(&mut self) {
        let n = std::mem::take(&mut self.unsaid);
        if n > 0 {
            self.progress.fetch_add(n, Relaxed);
            RECEIVED.fetch_add(n, Relaxed);
        }
    }
}

/// Messages taken while they are ready, before `stop` is looked at again.
const READY_RUN: u64 = 256;

/// The next event, or `None` once `stop` is cancelled. A message already
/// there is taken without polling `stopped`: that poll locks the token,
/// which every subscriber task shares, and cost a fifth of the bench's CPU
/// during a flood. `stop` is still looked at every [`READY_RUN`] messages,
/// so a flood that never pauses cannot hide it.
async fn next_or_stop(
    sub: &mut Sub,
    stopped: &mut std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    stop: &CancellationToken,
    counts: &mut Counts<'_>,
) -> Option<Event> {
    if counts.unsaid >= READY_RUN {
        counts.say();
        if stop.is_cancelled() {
            return None;
        }
    }
    let next = sub.next();
    tokio::pin!(next);
    // Polled once; the same future is then awaited below, so nothing is
    // dropped half-read.
    let ready = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(next.as_mut(), cx))
    })
    .await;
    if let std::task::Poll::Ready(event) = ready {
        return Some(event);
    }
    counts.say();
    tokio::select! {
        biased;
        _ = stopped.as_mut() => None,
        e = &mut next => Some(e),
    }
}

/// Reads and tracks every message until `stop`. `progress` counts messages
/// received, for the orchestrator to see when everyone is done.
pub async fn measure(
    mut sub: Sub,
    warmup: u64,
    timing: Timing,
    progress: Arc<AtomicU64>,
    stop: CancellationToken,
) -> SubResult {
    let mut tracker = Tracker::new(warmup);
    let mut counts = Counts::new(&progress);
    // Created once: a fresh `cancelled()` per message registers and
    // deregisters a waiter each time.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let disconnected = loop {
        let Some(frame) = next_or_stop(&mut sub, &mut stopped, &stop, &mut counts).await else {
            break false;
        };
        match frame {
            Event::Message(f) => {
                match timing {
                    Timing::Latency => tracker.record(&f),
                    Timing::Throughput => tracker.record_untimed(&f),
                }
                counts.one();
            }
            _ => break true,
        }
    };
    counts.say();
    drop(sub);
    SubResult {
        tracker,
        disconnected,
    }
}

/// Counts messages and notes when the last one came, nothing more: for runs
/// with many connections, where per-subscriber histograms would dwarf the
/// broker's own memory.
pub async fn count(mut sub: Sub, progress: Arc<AtomicU64>, stop: CancellationToken) -> (u64, bool) {
    let mut last = 0;
    let mut counts = Counts::new(&progress);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let disconnected = loop {
        let Some(frame) = next_or_stop(&mut sub, &mut stopped, &stop, &mut counts).await else {
            break false;
        };
        match frame {
            Event::Message(_) => {
                last = payload::now_ns();
                counts.one();
            }
            _ => break true,
        }
    };
    counts.say();
    drop(sub);
    (last, disconnected)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowMode {
    /// Never reads.
    Stall,
    /// Reads `--trickle-rate` messages per second.
    Trickle,
}

/// A slow subscriber. Until `stop` it stalls or trickles; then, if `drain`, it
/// says goodbye and reads what it is still owed (a `/queue` worker catching up,
/// so that nothing counts as lost that was only late); otherwise it reads what
/// is buffered to learn whether the broker disconnected it.
pub async fn slow(
    mut sub: Sub,
    mode: SlowMode,
    trickle_rate: f64,
    warmup: u64,
    stop: CancellationToken,
    drain: bool,
) -> SubResult {
    let mut tracker = Tracker::new(warmup);
    let mut disconnected = false;
    if mode == SlowMode::Trickle {
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / trickle_rate.max(0.001)));
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match tokio::select! { _ = stop.cancelled() => break, e = sub.next() => e } {
                Event::Message(f) => tracker.record(&f),
                _ => {
                    disconnected = true;
                    break;
                }
            }
        }
    } else {
        stop.cancelled().await;
    }
    let during_run = tracker.clone();
    if !disconnected {
        if drain {
            sub.goodbye().await;
        }
        let idle = Duration::from_millis(if drain { 5000 } else { 300 });
        loop {
            match tokio::time::timeout(idle, sub.next()).await {
                Ok(Event::Message(f)) => tracker.record(&f),
                Ok(Event::End) => break, // everything owed, after a goodbye
                Ok(_) => {
                    disconnected = !drain;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    SubResult {
        tracker: if drain { tracker } else { during_run },
        disconnected,
    }
}
