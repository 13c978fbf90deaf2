//! One connection's writer: drains its send queue to the socket, many frames per
//! write, and on the way out says end-of-stream and hands back what it could not
//! send.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

use super::router::{Channel, Kind};
use super::subscriber::Subscriber;
use super::Shared;
use crate::proto::FrameCodec;

/// Frames taken off the send queue per write.
const BATCH: usize = 256;

type Sink = FramedWrite<OwnedWriteHalf, FrameCodec>;

enum Outcome {
    /// Flush what is queued, say end-of-stream, close.
    Drain { leave_first: bool },
    /// Close now.
    Close,
}

pub async fn run(
    shared: Arc<Shared>,
    wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    sub: Arc<Subscriber>,
    channel: Arc<Channel>,
    finish: CancellationToken,
) {
    let mut sink = FramedWrite::new(wr, FrameCodec::new(shared.config.max_frame));
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    // Created once, not per batch (see the reader loop).
    let killed = sub.kill.cancelled();
    let finished = finish.cancelled();
    let draining = shared.drain.cancelled();
    tokio::pin!(killed, finished, draining);
    let outcome = loop {
        tokio::select! {
            biased;
            _ = &mut killed => break Outcome::Close,
            _ = &mut finished => break Outcome::Drain { leave_first: true },
            _ = &mut draining => break Outcome::Drain { leave_first: false },
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { break Outcome::Close },
        }
        sub.taken(batch.iter().map(Bytes::len).sum());
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
            shared.router.leave(&channel, &sub, Vec::new(), false);
        } else {
            sub.set_end_reason("broker shutting down");
        }
        match drain(
            &shared,
            &mut sink,
            &mut rx,
            &mut batch,
            &sub,
            &channel,
            leave_first,
        )
        .await
        {
            Ok(()) => {
                let _ = sink.get_mut().shutdown().await;
            }
            Err(e) => {
                sub.set_end_reason(e);
                sub.kill.cancel();
            }
        }
    }
    rx.close();
    while let Ok(m) = rx.try_recv() {
        sub.taken(m.len());
        batch.push(m);
    }
    let stopping = shared.drain.is_cancelled();
    shared.router.leave(&channel, &sub, batch, stopping);
    let s = &sub.stats;
    tracing::info!(
        "Remote {} disconnected from {}: {} (in {} msgs/{} B, out {} msgs/{} B, dropped {})",
        sub.peer,
        channel.display_name(),
        sub.end_reason(),
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

/// Writes what is queued (and, at shutdown, what `/queue` backlogs can still give
/// this worker), then the end-of-stream frame.
async fn drain(
    shared: &Shared,
    sink: &mut Sink,
    rx: &mut mpsc::Receiver<Bytes>,
    batch: &mut Vec<Bytes>,
    sub: &Subscriber,
    channel: &Channel,
    leaving: bool,
) -> Result<(), String> {
    loop {
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    sub.taken(m.len());
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
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
    let eos = async {
        sink.send(Bytes::new()).await?;
        sink.flush().await
    };
    tokio::select! {
        r = eos => r.map_err(|e| format!("write error: {e}")),
        _ = sub.kill.cancelled() => Err("drain timeout passed".into()),
    }
}

/// Writes `batch` with one flush. On success the batch is emptied and counted
/// as delivered; on failure it is left as it was, for the caller to hand back.
async fn write_batch(
    shared: &Shared,
    sink: &mut Sink,
    batch: &mut Vec<Bytes>,
    sub: &Subscriber,
    channel: &Channel,
) -> Result<(), String> {
    let write = async {
        for m in batch.iter() {
            sink.feed(m.clone()).await?;
        }
        sink.flush().await
    };
    let result = tokio::select! {
        r = write => r.map_err(|e| format!("write error: {e}")),
        _ = sub.kill.cancelled() => Err(if sub.slow.load(Relaxed) {
            "disconnected as a slow consumer".to_string()
        } else if shared.abort.is_cancelled() {
            "drain timeout passed".to_string()
        } else {
            "closed".to_string()
        }),
    };
    result?;
    let n = batch.len() as u64;
    let bytes: u64 = batch.iter().map(|m| m.len() as u64).sum();
    sub.stats.sent.add(n, bytes);
    channel.stats.delivered.add(n, bytes);
    shared.stats.delivered.add(n, bytes);
    batch.clear();
    Ok(())
}
