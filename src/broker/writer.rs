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

use super::delivery::Out;
use super::end::EndReason;
use super::router::{Channel, Kind};
use super::send_queue::Receiver;
use super::subscriber::Subscriber;
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

/// Completes once the socket behind `sink` has accepted nothing for `timeout`.
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

pub async fn run<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    wr: W,
    mut rx: Receiver<Out>,
    sub: Arc<Subscriber>,
    channel: Arc<Channel>,
    finish: CancellationToken,
    // Held until the writer is done: the socket and the queue are the
    // connection's, and so is its place under the connection limits.
    _slot: Arc<super::Slot>,
) {
    let mut sink = FramedWrite::new(
        WatchedWrite::new(wr, shared.stats.clone()),
        FrameCodec::new(shared.config.max_frame),
    );
    let mut batch: Vec<Out> = Vec::new();
    let mut last_write = Instant::now() - BUSY;
    // Created once, not per batch (see the reader loop).
    let killed = sub.kill.cancelled();
    let finished = finish.cancelled();
    let draining = shared.drain.cancelled();
    tokio::pin!(killed, finished, draining);
    let outcome = loop {
        if rx.is_empty() {
            // Idle: the write buffers go back until there is something to
            // send (a connection that is rarely sent anything holds none).
            if sink.write_buffer().capacity() > 0 {
                *sink.write_buffer_mut() = bytes::BytesMut::new();
                rx.release();
            }
            if batch.capacity() > 0 {
                batch = Vec::new();
            }
        }
        tokio::select! {
            biased;
            _ = &mut killed => {
                // Killed while between writes: say why, as a blocked write does.
                sub.set_end_reason(kill_reason(&shared, &sub));
                break Outcome::Close;
            }
            _ = &mut finished => break Outcome::Drain { leave_first: true },
            _ = &mut draining => break Outcome::Drain { leave_first: false },
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { break Outcome::Close },
        }
        let now = Instant::now();
        if batch.len() < FEW && now - last_write < BUSY {
            // Woken for a few messages in a stream of them: the publisher goes
            // on once before the write, so that one system call carries what
            // arrives meanwhile. (Not for a message that comes alone: it
            // would only wait longer.)
            tokio::task::yield_now().await;
            top_up(&mut rx, &mut batch, BATCH);
        }
        sub.taken(batch.iter().map(Out::len).sum());
        if sink.write_buffer().capacity() == 0 {
            *sink.write_buffer_mut() = bytes::BytesMut::with_capacity(WRITE_BUFFER);
        }
        last_write = now;
        if let Err(e) = write_batch(&shared, &mut sink, &mut batch, &sub, &channel).await {
            sub.set_end_reason(e);
            sub.kill.cancel();
            break Outcome::Close;
        }
        refill(&channel);
    };
    if let Outcome::Drain { leave_first } = outcome {
        if leave_first {
            // The client is leaving: stop routing to it, but send what it is owed.
            shared.router.stop_routing(&channel, &sub);
        } else {
            sub.set_end_reason(EndReason::BrokerShutdown);
        }
        // Boxed: once per connection, and its state would otherwise be
        // part of every writer's task for the connection's whole life.
        match Box::pin(drain(
            &shared,
            &mut sink,
            &mut rx,
            &mut batch,
            &sub,
            &channel,
            leave_first,
        ))
        .await
        {
            Ok(()) => {
                // A peer that stops reading cannot hold the socket open here
                // (a TLS close writes).
                let timeout = shared.config.write_timeout;
                let _ = tokio::time::timeout(timeout, sink.get_mut().shutdown()).await;
            }
            Err(e) => {
                sub.set_end_reason(e);
                sub.kill.cancel();
            }
        }
    }
    rx.close();
    sub.taken(top_up(&mut rx, &mut batch, usize::MAX));
    let stopping = shared.drain.is_cancelled();
    // Cluster messages this worker never got go back to JetStream, for any
    // broker's workers; only local ones stay in this broker's backlog.
    let batch = match shared.replies.get() {
        Some(replies) => {
            let (local, back) = sub.unwritten(batch);
            replies.give_back(back);
            local
        }
        None => batch,
    };
    shared.router.leave(&channel, &sub, batch, stopping);
    let reason = sub.end_reason();
    shared.stats.ended.add(&reason);
    let unsaid = sub.unlogged_drops();
    if unsaid > 0 {
        tracing::warn!(
            "Remote {} on {}: dropped {unsaid} more message(s) before it left ({} dropped in all)",
            sub.peer,
            channel.display_name(),
            sub.stats.dropped.total(),
        );
    }
    let s = &sub.stats;
    tracing::info!(
        "Remote {} disconnected from {}: {} (in {} msgs/{} B, out {} msgs/{} B, dropped {})",
        sub.peer,
        channel.display_name(),
        reason,
        s.received.messages(),
        s.received.bytes(),
        s.sent.messages(),
        s.sent.bytes(),
        s.dropped.total(),
    );
}

fn refill(channel: &Channel) {
    if let Kind::Queue(q) = &channel.kind {
        q.refill();
    }
}

/// Moves what is queued into `batch`, up to `limit` in it, without waiting;
/// returns the payload bytes moved.
fn top_up(rx: &mut Receiver<Out>, batch: &mut Vec<Out>, limit: usize) -> usize {
    let before = batch.len();
    rx.try_recv_many(batch, limit);
    batch[before..].iter().map(Out::len).sum()
}

/// Writes what is queued (and, at shutdown, what `/queue` backlogs can still give
/// this worker), then the end-of-stream frame.
async fn drain<W: AsyncWrite + Unpin>(
    shared: &Shared,
    sink: &mut Sink<W>,
    rx: &mut Receiver<Out>,
    batch: &mut Vec<Out>,
    sub: &Subscriber,
    channel: &Channel,
    leaving: bool,
) -> Result<(), EndReason> {
    loop {
        sub.taken(top_up(rx, batch, BATCH));
        if batch.is_empty() {
            if leaving || channel.backlog_len() == 0 {
                break;
            }
            refill(channel);
            if rx.is_empty() {
                break;
            }
            continue;
        }
        write_batch(shared, sink, batch, sub, channel).await?;
    }
    // End-of-stream confirms that everything the client sent was routed:
    // not when some of it was refused. It reads the close as "not confirmed".
    let refused = sub.stats.refused_publishes();
    if refused > 0 {
        tracing::info!(
            "Remote {}: no end-of-stream, {refused} of its publishes were refused",
            sub.peer
        );
        return Ok(());
    }
    let (base, last_ms) = {
        let p = sink.get_ref();
        p.mark();
        (p.base, p.last_ms.clone())
    };
    let eos = async {
        sink.send(Bytes::new()).await?;
        sink.flush().await
    };
    // Under the write timeout like every other write: a peer that stops
    // reading at the last frame cannot keep the connection.
    let timeout = shared.config.write_timeout;
    write_within(eos, base, last_ms, timeout, shared, sub, channel)
        .await
        .map_err(|e| match e {
            EndReason::Closed => EndReason::DrainTimeout,
            e => e,
        })
}

/// Writes `batch` with one flush. On success the batch is emptied and counted
/// as delivered; on failure it is left as it was, for the caller to hand back.
async fn write_batch<W: AsyncWrite + Unpin>(
    shared: &Shared,
    sink: &mut Sink<W>,
    batch: &mut Vec<Out>,
    sub: &Subscriber,
    channel: &Channel,
) -> Result<(), EndReason> {
    let (base, last_ms) = {
        let p = sink.get_ref();
        p.mark();
        (p.base, p.last_ms.clone())
    };
    let timeout = shared.config.write_timeout;
    let start = sink.get_ref().written;
    let write = async {
        for m in batch.iter() {
            sink.feed(m.payload.clone()).await?;
        }
        sink.flush().await
    };
    let result = write_within(write, base, last_ms, timeout, shared, sub, channel).await;
    let whole = match result {
        Ok(()) => batch.len(),
        // The frames that reached the socket whole are delivered (the peer
        // reads them); the rest are handed back.
        Err(_) => whole_frames(batch, sink.get_ref().written - start),
    };
    let n = whole as u64;
    let bytes: u64 = batch[..whole].iter().map(|m| m.len() as u64).sum();
    sub.stats.sent.add(n, bytes);
    channel.stats.delivered.add(n, bytes);
    shared.stats.delivered.add(n, bytes);
    if let Some(replies) = shared.replies.get() {
        replies.written(sub.written(&batch[..whole]));
    }
    batch.drain(..whole);
    result
}

/// How many of `batch`'s frames fit whole in its first `written` bytes.
fn whole_frames(batch: &[Out], written: u64) -> usize {
    let mut end = 0u64;
    batch
        .iter()
        .take_while(|m| {
            end += crate::proto::LEN_PREFIX as u64 + m.len() as u64;
            end <= written
        })
        .count()
}

/// Why a connection was killed, as its writer can tell (a reason the reader
/// gave first stands: the first one set is kept).
fn kill_reason(shared: &Shared, sub: &Subscriber) -> EndReason {
    if sub.slow.load(Relaxed) {
        EndReason::SlowConsumer
    } else if shared.abort.is_cancelled() {
        EndReason::DrainTimeout
    } else {
        EndReason::Closed
    }
}

/// Runs a batch write; gives up when the socket stops accepting bytes for
/// `timeout`, or when the connection is killed.
async fn write_within(
    write: impl std::future::Future<Output = std::io::Result<()>>,
    base: Instant,
    last_ms: Arc<AtomicU64>,
    timeout: Duration,
    shared: &Shared,
    sub: &Subscriber,
    channel: &Channel,
) -> Result<(), EndReason> {
    tokio::pin!(write);
    let failed = |e: std::io::Error| EndReason::WriteError(e.to_string());
    // Most writes complete at once: only a blocked one pays for a timer.
    if let Poll::Ready(r) = futures::poll!(&mut write) {
        return r.map_err(failed);
    }
    // The socket takes no more for now: a `/queue` rotation waiting for this
    // worker's turn passes it over until the write is done.
    sub.set_blocked(true);
    refill(channel);
    let result = tokio::select! {
            r = &mut write => r.map_err(failed),
            _ = no_progress(base, last_ms, timeout) => Err(EndReason::WriteTimeout(timeout)),
            _ = sub.kill.cancelled() => Err(kill_reason(shared, sub)),
    };
    sub.set_blocked(false);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frames_written_whole_count_as_written() {
        let batch = [b"abc".as_slice(), b"defgh"].map(|m| Out::plain(Bytes::from_static(m)));
        assert_eq!(whole_frames(&batch, 0), 0);
        assert_eq!(whole_frames(&batch, 6), 0);
        assert_eq!(whole_frames(&batch, 7), 1);
        assert_eq!(whole_frames(&batch, 15), 1);
        assert_eq!(whole_frames(&batch, 16), 2);
    }
}
