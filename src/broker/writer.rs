//! One connection's writer: drains its send queue to the socket, many frames per
//! write, and on the way out says end-of-stream and hands back what it could not
//! send.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::delivery::Out;
use super::end::EndReason;
use super::router::Kind;
use super::send_queue::Receiver;
use super::subscription::Subscription;
use super::Shared;
use crate::proto::FrameCodec;

/// Frames taken off the send queue per write.
const BATCH: usize = 256;

/// Below this many frames taken, a writer yields once before writing.
const FEW: usize = 16;

/// A writer that wrote less than this long ago is in a stream of messages.
const BUSY: Duration = Duration::from_micros(200);

/// Write buffer a writer takes when it has something to send.
const WRITE_BUFFER: usize = 8 * 1024;

type Sink<W> = FramedWrite<WatchedWrite<W>, FrameCodec>;

/// A writer that notes when the socket last accepted bytes, so a write can be
/// given up when the peer stops taking data (a vanished host, a stalled
/// client), not merely because a large batch takes long to a slow reader.
pub struct WatchedWrite<W> {
    inner: W,
    base: Instant,
    last_ms: Arc<AtomicU64>,
    /// Bytes the socket has accepted: after a failed batch, tells which of its
    /// frames went out whole.
    written: u64,
    stats: Arc<super::stats::BrokerStats>,
}

impl<W> WatchedWrite<W> {
    fn new(inner: W, stats: Arc<super::stats::BrokerStats>) -> Self {
        Self {
            inner,
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            written: 0,
            stats,
        }
    }

    fn mark(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Relaxed);
    }

    /// The socket took `n` bytes in one call.
    fn took(&mut self, n: usize) {
        self.written += n as u64;
        self.stats.socket_writes.add(1, n as u64);
        self.mark();
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WatchedWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.took(n);
            }
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.took(n);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Completes once the socket has accepted nothing for `timeout`: `last_ms`
/// is when it last took bytes, in milliseconds after `base`.
async fn no_progress(base: Instant, last_ms: Arc<AtomicU64>, timeout: Duration) {
    loop {
        let idle = base
            .elapsed()
            .saturating_sub(Duration::from_millis(last_ms.load(Relaxed)));
        if idle >= timeout {
            return;
        }
        tokio::time::sleep(timeout - idle).await;
    }
}

enum Outcome {
    /// Flush what is queued, say end-of-stream, close.
    Drain { leave_first: bool },
    /// Close now.
    Close,
}

/// Whom a writer writes for: the broker, the connection, and what it
/// subscribed to (under protocol v1 one subscription, or none for a
/// publisher).
struct Recipient {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    sub: Option<Arc<Subscription>>,
}

/// One connection's writer and what it holds while it runs.
struct Writer<W> {
    sink: Sink<W>,
    rx: Receiver<Out>,
    /// Taken off the queue and not yet written.
    batch: Vec<Out>,
    to: Recipient,
    /// Under protocol v2: what it numbers and names deliveries with.
    v2: Option<Box<V2>>,
}

/// A protocol v2 writer's state.
#[derive(Default)]
struct V2 {
    /// The last delivery id written (they count from 1).
    delivery: u64,
    /// The connection's subscriptions as far as its send queue may hold
    /// their messages: one leaves when its `ENDED` is written.
    subs: Vec<Arc<Subscription>>,
}

impl V2 {
    /// Takes in subscriptions the reader added since the last look.
    fn refresh(&mut self, conn: &Conn) {
        let Some(shared) = &conn.v2 else {
            return;
        };
        if !shared.subs_changed.swap(false, Relaxed) {
            return;
        }
        for s in conn.subscriptions() {
            if !self.subs.iter().any(|k| k.ids.local == s.ids.local) {
                self.subs.push(s);
            }
        }
    }

    fn find(&self, local: u32) -> Option<&Arc<Subscription>> {
        self.subs.iter().find(|s| s.ids.local == local)
    }

    /// An `ENDED` for `sid` was written: its oldest subscription of that id
    /// (a newer one may reuse the id) has nothing more coming.
    fn ended(&mut self, frame: &[u8]) {
        if frame.len() < 5 || frame[0] != crate::proto::v2::kind::ENDED {
            return;
        }
        let sid = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        if let Some(i) = self
            .subs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ids.sid == sid)
            .min_by_key(|(_, s)| s.ids.local)
            .map(|(i, _)| i)
        {
            self.subs.swap_remove(i);
        }
    }
}

/// Bytes a protocol v2 `MSG` head takes: type, sid, delivery id, attempt, flags.
const MSG_HEAD: usize = 18;

pub async fn run<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    wr: W,
    rx: Receiver<Out>,
    conn: Arc<Conn>,
    finish: CancellationToken,
    // Held until the writer is done: the socket and the queue are the
    // connection's, and so is its place under the connection limits.
    _slot: Arc<super::Slot>,
) {
    // A v2 delivery adds its head to a payload of up to --max-frame.
    let v2 = conn.v2.is_some().then(Box::<V2>::default);
    let max = shared.config.max_frame + if v2.is_some() { MSG_HEAD } else { 0 };
    let sink = FramedWrite::new(
        WatchedWrite::new(wr, shared.stats.clone()),
        FrameCodec::new(max),
    );
    let mut writer = Writer {
        sink,
        rx,
        batch: Vec::new(),
        to: Recipient {
            shared,
            sub: conn.first_subscription(),
            conn,
        },
        v2,
    };
    let outcome = writer.write_until_done(&finish).await;
    match outcome {
        Outcome::Drain { leave_first } => writer.finish(leave_first).await,
        // Boxed: rare, and not to be carried by every writer's task.
        Outcome::Close => Box::pin(writer.last_word()).await,
    }
    writer.leave();
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes what is queued as it comes, until the connection is killed,
    /// finished by its client, or the broker drains.
    async fn write_until_done(&mut self, finish: &CancellationToken) -> Outcome {
        // Owned here: the waits below live as long as the loop.
        let (shared, sub) = (self.to.shared.clone(), self.to.conn.clone());
        let mut last_write = Instant::now() - BUSY;
        // Created once, not per batch (see the reader loop).
        let killed = sub.kill.cancelled();
        let finished = finish.cancelled();
        let draining = shared.phases.drain.cancelled();
        tokio::pin!(killed, finished, draining);
        loop {
            if self.rx.is_empty() {
                // Idle: the write buffers go back until there is something to
                // send (a connection that is rarely sent anything holds none).
                if self.sink.write_buffer().capacity() > 0 {
                    *self.sink.write_buffer_mut() = bytes::BytesMut::new();
                    self.rx.release();
                }
                if self.batch.capacity() > 0 {
                    self.batch = Vec::new();
                }
            }
            tokio::select! {
                biased;
                _ = &mut killed => {
                    // Killed while between writes: say why, as a blocked write does.
                    sub.set_end_reason(kill_reason(&shared, &sub));
                    return Outcome::Close;
                }
                _ = &mut finished => return Outcome::Drain { leave_first: true },
                _ = &mut draining => return Outcome::Drain { leave_first: false },
                n = self.rx.recv_many(&mut self.batch, BATCH) => if n == 0 { return Outcome::Close },
            }
            let now = Instant::now();
            if self.batch.len() < FEW && now - last_write < BUSY {
                // Woken for a few messages in a stream of them: the publisher goes
                // on once before the write, so that one system call carries what
                // arrives meanwhile. (Not for a message that comes alone: it
                // would only wait longer.)
                tokio::task::yield_now().await;
                top_up(&mut self.rx, &mut self.batch, BATCH);
            }
            sub.taken_to_write(self.batch.iter().map(Out::len).sum());
            if self.sink.write_buffer().capacity() == 0 {
                *self.sink.write_buffer_mut() = bytes::BytesMut::with_capacity(WRITE_BUFFER);
            }
            last_write = now;
            if let Err(e) = self.write_batch().await {
                sub.set_end_reason(e);
                sub.kill.cancel();
                return Outcome::Close;
            }
            self.to.refill();
        }
    }

    /// The connection ends in order: what it is owed, then end-of-stream.
    async fn finish(&mut self, leave_first: bool) {
        let Recipient { shared, conn, .. } = &self.to;
        if leave_first {
            // The client is leaving: stop routing to it, but send what it is owed.
            for sub in conn.subscriptions() {
                shared.router.stop_routing(&sub);
            }
        } else {
            conn.set_end_reason(EndReason::BrokerShutdown);
        }
        // Boxed: once per connection, and its state would otherwise be
        // part of every writer's task for the connection's whole life.
        match Box::pin(self.drain(leave_first)).await {
            Ok(()) => {
                // A peer that stops reading cannot hold the socket open here
                // (a TLS close writes).
                let timeout = self.to.shared.config.write_timeout;
                let _ = tokio::time::timeout(timeout, self.sink.get_mut().shutdown()).await;
            }
            Err(e) => {
                self.to.conn.set_end_reason(e);
                self.to.conn.kill.cancel();
            }
        }
    }

    /// Writes the `ERROR` the reader left, when the connection is closed
    /// for breaking the protocol (v2) and no frame is half-written.
    async fn last_word(&mut self) {
        let Some(frame) = self.to.conn.take_last_word() else {
            return;
        };
        if !self.sink.write_buffer().is_empty() {
            return;
        }
        let sink = &mut self.sink;
        let say = async {
            sink.send(frame).await?;
            sink.get_mut().shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), say).await;
    }

    /// Hands back what was not written, and says how the connection ended.
    fn leave(mut self) {
        let Recipient { shared, conn, .. } = &self.to;
        self.rx.close();
        // What it took to write and did not, and what is still queued: all
        // handed on below.
        conn.written(self.batch.iter().map(Out::len).sum());
        conn.taken(top_up(&mut self.rx, &mut self.batch, usize::MAX));
        let stopping = shared.phases.drain.is_cancelled();
        let shown = self.to.shown_channel();
        // They point back to the connection: let go of them here, where it ends.
        let subs = conn.release();
        let controls = self.batch.iter().filter(|m| m.is_control()).count();
        conn.control_written(controls);
        let mut unsent = std::mem::take(&mut self.batch);
        unsent.retain(|m| !m.is_control());
        for sub in &subs {
            let (mine, rest): (Vec<Out>, Vec<Out>) =
                unsent.into_iter().partition(|m| m.sub == sub.ids.local);
            unsent = rest;
            // What it held and never answered goes back first, attempt
            // raised: it was delivered before what was never written.
            let mut back = super::held::take_back(shared, conn, sub);
            let mine = if back.is_empty() {
                mine
            } else {
                back.extend(mine);
                back
            };
            // Stored messages this worker never got go back to their
            // store, for any broker's workers; only messages of this
            // broker's memory stay in its backlog.
            let mine = match shared.replies.get() {
                Some(replies) => {
                    let (local, back) = sub.unwritten(mine);
                    replies.give_back(back);
                    local
                }
                None => mine,
            };
            shared.router.leave(sub, mine, stopping);
        }
        // Left: messages of /topic subscriptions that ended (an unsubscribe)
        // before these were written. Nothing routes to a publisher.
        if let Some(v2) = &self.v2 {
            for m in &unsent {
                if let Some(sub) = v2.find(m.sub) {
                    shared.router.count_drop(
                        Some(&sub.channel),
                        Some(&conn.stats),
                        super::stats::DropReason::SubscriberGone,
                        1,
                    );
                }
            }
        }
        debug_assert!(self.v2.is_some() || unsent.is_empty());
        let reason = conn.end_reason();
        shared.stats.ended.add(&reason);
        let unsaid = conn.unlogged_drops();
        if unsaid > 0 {
            tracing::warn!(
                "Remote {} on {shown}: dropped {unsaid} more message(s) before it left ({} dropped in all)",
                conn.peer,
                conn.overflow_drops(),
            );
        }
        let s = &conn.stats;
        tracing::info!(
            "Remote {} disconnected from {shown}: {} (in {} msgs/{} B, out {} msgs/{} B, dropped {})",
            conn.peer,
            reason,
            s.received.messages(),
            s.received.bytes(),
            s.sent.messages(),
            s.sent.bytes(),
            s.dropped.total(),
        );
    }

    /// Writes what is queued (and, at shutdown, what `/queue` backlogs can
    /// still give this worker), then the end-of-stream frame.
    async fn drain(&mut self, leaving: bool) -> Result<(), EndReason> {
        loop {
            self.to
                .conn
                .taken_to_write(top_up(&mut self.rx, &mut self.batch, BATCH));
            if self.batch.is_empty() {
                let backlog: usize = self
                    .to
                    .conn
                    .subscriptions()
                    .iter()
                    .map(|s| s.channel.backlog_len())
                    .sum();
                if leaving || backlog == 0 {
                    break;
                }
                self.to.refill();
                if self.rx.is_empty() {
                    break;
                }
                continue;
            }
            self.write_batch().await?;
        }
        // Losses not yet said are said before the end.
        if self.v2.is_some() && self.to.conn.has_lost() {
            self.write_batch().await?;
        }
        // End-of-stream confirms that everything the client sent was routed:
        // not when some of it was refused. It reads the close as "not
        // confirmed". (Under protocol v2 each refusal was said.)
        let refused = self.to.conn.stats.refused_publishes();
        if refused > 0 && self.v2.is_none() {
            tracing::info!(
                "Remote {}: no end-of-stream, {refused} of its publishes were refused",
                self.to.conn.peer
            );
            return Ok(());
        }
        let (base, last_ms) = {
            let p = self.sink.get_ref();
            p.mark();
            (p.base, p.last_ms.clone())
        };
        let sink = &mut self.sink;
        let eos = async {
            sink.send(Bytes::new()).await?;
            sink.flush().await
        };
        // Under the write timeout like every other write: a peer that stops
        // reading at the last frame cannot keep the connection.
        self.to
            .write_within(eos, base, last_ms)
            .await
            .map_err(|e| match e {
                EndReason::Closed => EndReason::DrainTimeout,
                e => e,
            })
    }

    /// Writes the batch with one flush. On success the batch is emptied and
    /// counted as delivered; on failure it is left as it was, for
    /// [`leave`](Self::leave) to hand back.
    async fn write_batch(&mut self) -> Result<(), EndReason> {
        if self.v2.is_some() {
            // Boxed: every connection's writer task would otherwise carry
            // the v2 batch's state (one allocation a batch, v2 only).
            return Box::pin(self.write_batch_v2()).await;
        }
        let Writer {
            sink, batch, to, ..
        } = self;
        let (base, last_ms) = {
            let p = sink.get_ref();
            p.mark();
            (p.base, p.last_ms.clone())
        };
        let start = sink.get_ref().written;
        let write = async {
            for m in batch.iter() {
                // Into the write buffer by hand, as the codec would, without
                // a sink future per message.
                crate::proto::codec::put_frame(
                    sink.write_buffer_mut(),
                    &m.payload[usize::from(m.head)..],
                );
                if sink.write_buffer().len() >= WRITE_BUFFER {
                    SinkExt::<Bytes>::flush(sink).await?;
                }
            }
            SinkExt::<Bytes>::flush(sink).await
        };
        let result = to.write_within(write, base, last_ms).await;
        let whole = match result {
            Ok(()) => batch.len(),
            // The frames that reached the socket whole are delivered (the peer
            // reads them); the rest are handed back.
            Err(_) => whole_frames(batch, sink.get_ref().written - start, |m| {
                crate::proto::LEN_PREFIX + m.len() - usize::from(m.head)
            }),
        };
        let n = whole as u64;
        let bytes: u64 = batch[..whole].iter().map(|m| m.len() as u64).sum();
        to.conn.stats.sent.add(n, bytes);
        to.shared.stats.delivered.add(n, bytes);
        if let Some(sub) = &to.sub {
            sub.channel.stats.delivered.add(n, bytes);
            stored_written(sub, &batch[..whole]);
            if let Some(replies) = to.shared.replies.get() {
                replies.written(sub.written(&batch[..whole]));
            }
        }
        let_go_written(&to.conn, batch, whole);
        result
    }

    /// [`write_batch`](Self::write_batch) under protocol v2: each message a
    /// `MSG` naming its subscription, control frames as they are, and first
    /// a `LOST` for each subscription that lost messages since the last.
    async fn write_batch_v2(&mut self) -> Result<(), EndReason> {
        use crate::proto::v2::{encode, kind};
        let Writer {
            sink,
            batch,
            to,
            v2,
            ..
        } = self;
        let Some(v2) = v2.as_mut() else {
            return Ok(());
        };
        v2.refresh(&to.conn);
        // Control frames made here, not queued by the reader (not counted).
        let mut extra = 0;
        if to.conn.take_lost() {
            // Ahead of the batch: what it lost was routed before what the
            // batch holds, or the batch could not have been queued.
            let lost: Vec<Out> = v2
                .subs
                .iter()
                .filter_map(|s| {
                    let (n, reason, since) = s.take_lost()?;
                    Some(Out::control(encode::lost(s.ids.sid, n, reason, since)))
                })
                .collect();
            extra = lost.len();
            batch.splice(0..0, lost);
        }
        let (base, last_ms) = {
            let p = sink.get_ref();
            p.mark();
            (p.base, p.last_ms.clone())
        };
        let start = sink.get_ref().written;
        let first_delivery = v2.delivery;
        // Not granted headers: a message's header block is left out.
        let headers = to.conn.v2.as_ref().is_some_and(|c| c.headers.load(Relaxed));
        // Deliveries to acknowledging workers are held from before their
        // bytes can reach the socket: an answer may come at once.
        let held = hold_acked(&to.shared, &to.conn, v2, batch);
        let write = async {
            let mut delivery = first_delivery;
            let mut last: Option<&Arc<Subscription>> = None;
            for m in batch.iter() {
                if m.is_control() {
                    crate::proto::codec::put_frame(sink.write_buffer_mut(), &m.payload);
                    continue;
                }
                let sub = match last {
                    Some(s) if s.ids.local == m.sub => s,
                    _ => match v2.find(m.sub) {
                        Some(s) => {
                            last = Some(s);
                            s
                        }
                        None => continue,
                    },
                };
                delivery += 1;
                let mut head = [0u8; MSG_HEAD];
                head[0] = kind::MSG;
                head[1..5].copy_from_slice(&sub.ids.sid.to_be_bytes());
                head[5..13].copy_from_slice(&delivery.to_be_bytes());
                head[13..17].copy_from_slice(&m.attempt().get().to_be_bytes());
                // The payload begins with the header block, as MSG wants it.
                let body = if m.head == 0 || headers {
                    if m.head > 0 {
                        head[17] = crate::proto::v2::FLAG_HEADERS;
                    }
                    &m.payload[..]
                } else {
                    &m.payload[usize::from(m.head)..]
                };
                // Into the write buffer by hand: the codec knows one part.
                crate::proto::codec::put_parts(sink.write_buffer_mut(), &head, body);
                if sink.write_buffer().len() >= WRITE_BUFFER {
                    SinkExt::<Bytes>::flush(sink).await?;
                }
            }
            SinkExt::<Bytes>::flush(sink).await
        };
        let result = to.write_within(write, base, last_ms).await;
        let whole = match result {
            Ok(()) => batch.len(),
            Err(_) => whole_frames(batch, sink.get_ref().written - start, |m| {
                let body = m.payload.len() - if headers { 0 } else { usize::from(m.head) };
                crate::proto::LEN_PREFIX + body + if m.is_control() { 0 } else { MSG_HEAD }
            }),
        };
        if whole < batch.len() && !held.is_empty() {
            // Not written: handed back unwritten (by leave), not held.
            let unwritten: Vec<u64> = held
                .iter()
                .filter(|(i, _)| *i >= whole)
                .map(|(_, id)| *id)
                .collect();
            super::held::unhold(&to.shared, &to.conn, &unwritten);
        }
        // Counted per subscription, in runs: most batches are one.
        let mut controls = 0;
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut i = 0;
        while i < whole {
            let m = &batch[i];
            if m.is_control() {
                controls += 1;
                v2.ended(&m.payload);
                i += 1;
                continue;
            }
            let local = m.sub;
            let end = batch[i..whole]
                .iter()
                .position(|m| m.sub != local)
                .map_or(whole, |k| i + k);
            let run = &batch[i..end];
            let run_bytes: u64 = run.iter().map(|m| m.len() as u64).sum();
            if let Some(sub) = v2.find(local) {
                sub.taken(run.len(), run_bytes as usize);
                sub.channel.stats.delivered.add(run.len() as u64, run_bytes);
                stored_written(sub, run);
                if let Some(replies) = to.shared.replies.get() {
                    replies.written(sub.written(run));
                }
                n += run.len() as u64;
                bytes += run_bytes;
            }
            i = end;
        }
        v2.delivery += n;
        to.conn.control_written(controls - extra.min(whole));
        to.conn.stats.sent.add(n, bytes);
        to.shared.stats.delivered.add(n, bytes);
        let_go_written(&to.conn, batch, whole);
        result
    }
}

/// Takes the first `whole` messages of `batch`, written, out of it and out
/// of the memory budget, which held them until now (a writer stuck on its
/// socket still holds the rest).
fn let_go_written(conn: &Conn, batch: &mut Vec<Out>, whole: usize) {
    conn.written(batch.drain(..whole).map(|m| m.len()).sum());
}

/// Registers the batch's deliveries to acknowledging workers as held, under
/// the delivery ids the write will give them; returns (index in the batch,
/// delivery id) of each.
fn hold_acked(shared: &Shared, conn: &Arc<Conn>, v2: &V2, batch: &[Out]) -> Vec<(usize, u64)> {
    if !v2.subs.iter().any(|s| s.acks().is_some()) {
        return Vec::new();
    }
    let now = std::time::Instant::now();
    let now_ms = super::held::now_ms();
    let mut delivery = v2.delivery;
    let mut at = Vec::new();
    let mut entries = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        if m.is_control() {
            continue;
        }
        // As the write numbers them: a message of a subscription gone is
        // skipped there too.
        let Some(sub) = v2.find(m.sub) else {
            continue;
        };
        delivery += 1;
        let Some(policy) = sub.acks() else {
            continue;
        };
        at.push((i, delivery));
        entries.push((
            delivery,
            super::held::Entry {
                sub: sub.clone(),
                out: m.clone(),
                deadline: now + policy.ack_wait,
                delivered_ms: now_ms,
            },
        ));
    }
    if !entries.is_empty() {
        super::held::hold(shared, conn, entries);
    }
    at
}

/// Tells a durable channel's store that `run` (deliveries of `sub`) was
/// written: done with for a worker that does not acknowledge; for one that
/// does, the attempt it was at (after a crash, the next comes back).
fn stored_written(sub: &Subscription, run: &[Out]) {
    let Kind::Queue(q) = &sub.channel.kind else {
        return;
    };
    let Some(log) = q.log() else {
        return;
    };
    if sub.acks().is_some() {
        log.disk.delivered(
            &log.name,
            run.iter()
                .filter_map(|m| m.delivery)
                .map(|d| (d.seq(), d.attempt().get())),
        );
    } else {
        log.settle(run);
    }
}

/// Moves what is queued into `batch`, up to `limit` in it, without waiting;
/// returns the payload bytes moved.
fn top_up(rx: &mut Receiver<Out>, batch: &mut Vec<Out>, limit: usize) -> usize {
    let before = batch.len();
    rx.try_recv_many(batch, limit);
    batch[before..].iter().map(Out::len).sum()
}

/// How many of `batch`'s frames fit whole in its first `written` bytes;
/// `size` is a frame's length on the wire.
fn whole_frames(batch: &[Out], written: u64, size: impl Fn(&Out) -> usize) -> usize {
    let mut end = 0u64;
    batch
        .iter()
        .take_while(|m| {
            end += size(m) as u64;
            end <= written
        })
        .count()
}

/// A protocol v2 connection's subscriptions as logs show them: its
/// channels, or the null channel when it holds none.
pub fn shown_subscriptions(conn: &Conn) -> String {
    let subs = conn.subscriptions();
    if subs.is_empty() {
        return crate::proto::NULL_CHANNEL.to_string();
    }
    let names: Vec<String> = subs.iter().map(|s| s.channel.display_name()).collect();
    names.join(", ")
}

/// Why a connection was killed, as its writer can tell (a reason the reader
/// gave first stands: the first one set is kept).
fn kill_reason(shared: &Shared, sub: &Conn) -> EndReason {
    if sub.slow.load(Relaxed) {
        EndReason::SlowConsumer
    } else if shared.phases.abort.is_cancelled() {
        EndReason::DrainTimeout
    } else {
        EndReason::Closed
    }
}

impl Recipient {
    /// A `/queue` worker's writer took messages off its send queue (or is
    /// stuck on the socket): its channel may hand the room to the backlog.
    fn refill(&self) {
        if let Some(Kind::Queue(q)) = self.sub.as_ref().map(|s| &s.channel.kind) {
            q.refill();
        } else if self.conn.v2.is_some() {
            for s in self.conn.subscriptions() {
                if let Kind::Queue(q) = &s.channel.kind {
                    q.refill();
                }
            }
        }
    }

    /// The channel it subscribed to, as logs show it.
    fn shown_channel(&self) -> String {
        if self.conn.v2.is_some() {
            return shown_subscriptions(&self.conn);
        }
        self.sub.as_ref().map_or_else(
            || crate::proto::NULL_CHANNEL.to_string(),
            |s| s.channel.display_name(),
        )
    }

    /// Runs a write; gives up when the socket stops accepting bytes for the
    /// write timeout (`last_ms` after `base`: when it last took some), or
    /// when the connection is killed.
    async fn write_within(
        &self,
        write: impl std::future::Future<Output = std::io::Result<()>>,
        base: Instant,
        last_ms: Arc<AtomicU64>,
    ) -> Result<(), EndReason> {
        tokio::pin!(write);
        let failed = |e: std::io::Error| EndReason::WriteError(e.to_string());
        // Most writes complete at once: only a blocked one pays for a timer.
        if let Poll::Ready(r) = futures::poll!(&mut write) {
            return r.map_err(failed);
        }
        // The socket takes no more for now: a `/queue` rotation waiting for this
        // worker's turn passes it over until the write is done.
        let sub = &self.conn;
        let timeout = self.shared.config.write_timeout;
        sub.set_blocked(true);
        self.refill();
        let result = tokio::select! {
                r = &mut write => r.map_err(failed),
                _ = no_progress(base, last_ms, timeout) => Err(EndReason::WriteTimeout(timeout)),
                _ = sub.kill.cancelled() => Err(kill_reason(&self.shared, sub)),
        };
        sub.set_blocked(false);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frames_written_whole_count_as_written() {
        let batch = [b"abc".as_slice(), b"defgh"].map(|m| Out::plain(Bytes::from_static(m), 1));
        let size = |m: &Out| crate::proto::LEN_PREFIX + m.len();
        assert_eq!(whole_frames(&batch, 0, size), 0);
        assert_eq!(whole_frames(&batch, 6, size), 0);
        assert_eq!(whole_frames(&batch, 7, size), 1);
        assert_eq!(whole_frames(&batch, 15, size), 1);
        assert_eq!(whole_frames(&batch, 16, size), 2);
    }
}
