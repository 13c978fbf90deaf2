//! Pulling a `/queue` channel's messages from JetStream: only what this
//! broker's workers have room for, each JetStream message settled once every
//! message in it is written to a worker or given back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::outbox::store_parts;
use super::{envelope, JetStream};
use crate::broker::queue::QueueState;
use crate::broker::router::{Channel, Kind};
use crate::broker::stats::DropReason;
use crate::broker::store::{Parcel, Part, Token};
use crate::runtime::backoff::Backoff;

/// Most JetStream messages asked for in one pull request: one pull stays
/// bounded even when the estimate it was sized on (parts or bytes per
/// message) was made on smaller messages than the ones that follow.
const MAX_PULL: usize = 64;
/// Parts a puller asks for beyond its workers' room, so that the next ones
/// are here when the workers are ready for them.
const LOOKAHEAD: usize = 2 * envelope::MAX_PARTS;
/// Payload bytes a puller holds, not yet offered to a worker, past which it
/// asks for no more. Parts alone do not bound memory: a message larger than
/// an envelope's 64 KiB travels alone, so room + LOOKAHEAD parts of them
/// could be hundreds of MiB, outside the memory budget. A mebibyte is many
/// NATS round trips' worth of work at any message size.
const AHEAD_BYTES: usize = 1 << 20;
/// Looks (about a second apart) without a worker before a puller retires
/// its channel.
const IDLE_LOOKS: u32 = 3;
/// How long a pull request waits for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// A pulled JetStream message whose parts are not all with workers yet.
struct Held {
    parcel: Arc<Parcel>,
    /// Parts not offered to a worker yet, in order.
    parts: VecDeque<Part>,
    /// Their payload bytes.
    bytes: usize,
    /// Some part is with a worker already.
    started: bool,
    /// When JetStream last heard that this broker still holds it.
    since: Instant,
}

/// What a puller holds: pulled messages not yet all with workers, and
/// those that are, until every part is written.
#[derive(Default)]
struct Hold {
    held: VecDeque<Held>,
    /// Messages all of whose parts are with workers, and when JetStream last
    /// heard of each. Weak: a message settled (every part written or given
    /// back) is freed at once, not kept, payload and all, until the next look.
    out: Vec<(Weak<Parcel>, Instant)>,
}

impl Hold {
    /// Nothing waits here for a worker (what is out with workers aside).
    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Parts held, not yet offered (a few pulls' worth of messages to add up).
    fn parts(&self) -> usize {
        self.held.iter().map(|h| h.parts.len()).sum()
    }

    /// Payload bytes of those parts.
    fn bytes(&self) -> usize {
        self.held.iter().map(|h| h.bytes).sum()
    }

    /// Opens a pulled message into its parts; counts and settles at once
    /// those no worker here can take. Returns how many parts it had.
    fn take(&mut self, store: &JetStream, channel: &Channel, msg: Message) -> usize {
        let parts = envelope::open(msg.headers.as_ref(), &msg.payload).unwrap_or_else(|e| {
            if let Some(n) = store.envelope_log.due(store.base) {
                tracing::warn!(
                    "cluster: {n} message(s) on {} delivered whole: not an aioq envelope ({e})",
                    channel.display_name()
                );
            }
            vec![Part::plain(msg.payload.clone())]
        });
        let n = parts.len();
        if msg.info().is_ok_and(|i| i.delivered > 1) {
            store.stats.cluster_redelivered.fetch_add(n as u64, Relaxed);
        }
        let parcel = Parcel::new(Token::JetStream(msg), n);
        let mut keep = VecDeque::with_capacity(n);
        for part in parts {
            if part.is_empty() {
                store.replies.written([parcel.clone()]);
                store
                    .router
                    .count_drop(Some(channel), None, DropReason::EmptyPayload, 1);
            } else if part.len() > store.router.max_frame() {
                // Undeliverable by any worker here; handed back, it would go
                // round every broker's workers. Acknowledged, and counted.
                store.replies.written([parcel.clone()]);
                store.too_large(channel, part.len());
            } else {
                keep.push_back(part);
            }
        }
        if !keep.is_empty() {
            self.held.push_back(Held {
                parcel,
                bytes: keep.iter().map(Part::len).sum(),
                parts: keep,
                started: false,
                since: Instant::now(),
            });
        }
        n
    }

    /// Gives workers what they have room for, in order.
    fn offer(&mut self, store: &JetStream, channel: &Channel, q: &QueueState) {
        while let Some(h) = self.held.front_mut() {
            while let Some(part) = h.parts.pop_front() {
                let part_len = part.len();
                let len = part_len as u64;
                if let Err((part, _)) = q.offer_delivery(part, h.parcel.clone()) {
                    h.parts.push_front(part);
                    return;
                }
                h.started = true;
                h.bytes -= part_len;
                store.stats.cluster_in.add(1, len);
                channel.stats.cluster_in.add(1, len);
            }
            if let Some(h) = self.held.pop_front() {
                self.out.push((Arc::downgrade(&h.parcel), h.since));
            }
        }
    }

    /// Tells JetStream this broker still holds what it has held for half
    /// the acknowledgement wait, so that no other broker is given it too:
    /// messages waiting here, and those in the send queues of workers slower
    /// than the acknowledgement wait (a worker that stops reading is
    /// disconnected after --write-timeout, and what it had goes back then).
    async fn keep_alive(&mut self, ack_wait: Duration) {
        self.out
            .retain(|(parcel, _)| parcel.upgrade().is_some_and(|p| !p.settled()));
        for h in &mut self.held {
            progress(&h.parcel, &mut h.since, ack_wait).await;
        }
        for (parcel, since) in &mut self.out {
            if let Some(parcel) = parcel.upgrade() {
                progress(&parcel, since, ack_wait).await;
            }
        }
    }

    /// Gives back to JetStream, for any broker, the held messages none of
    /// whose parts is with a worker yet (`all`: the others' parts too).
    fn give_back(&mut self, store: &JetStream, all: bool) {
        let mut kept = VecDeque::new();
        for h in self.held.drain(..) {
            if h.started && !all {
                kept.push_back(h);
                continue;
            }
            let parcel = h.parcel;
            store
                .replies
                .give_back(h.parts.into_iter().map(|p| (parcel.clone(), p)));
        }
        self.held = kept;
    }
}

/// Tells JetStream this broker still holds `parcel` if it last did half the
/// acknowledgement wait ago.
async fn progress(parcel: &Parcel, since: &mut Instant, ack_wait: Duration) {
    if since.elapsed() >= ack_wait / 2 {
        let Token::JetStream(msg) = parcel.token();
        let _ = msg.ack_with(AckKind::Progress).await;
        *since = Instant::now();
    }
}

/// Pulls `/queue` channel `channel`'s messages from JetStream for as long as it
/// exists on this broker. What it asks for is what its workers have room for
/// and two messages more, and the next pull goes out while the last one's
/// messages are still being handed: the workers never wait for a round trip
/// to NATS, and no more is held here than they will soon take.
pub(super) async fn pull(store: Arc<JetStream>, channel: Arc<Channel>, stop: CancellationToken) {
    let Kind::Queue(q) = &channel.kind else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // Parts expected per JetStream message, to pull no more than the workers
    // have room for: the most the last pull's messages held, and at first
    // the most any can hold.
    let mut per_message = envelope::MAX_PARTS;
    // The most parts in one message of the pull under way.
    let mut most = 0;
    // Likewise payload bytes per JetStream message, to hold no more than
    // AHEAD_BYTES: at first an envelope's most.
    let mut message_bytes = envelope::MAX_BYTES;
    let mut largest = 0;
    let mut hold = Hold::default();
    let mut batch: Option<Batch> = None;
    // Looks in a row, about a second apart, that found no worker, no backlog
    // and nothing held here.
    let mut idle = 0;
    let mut last_look = Instant::now();
    // Since when the workers have had no room for what is held.
    let mut stuck_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(
        PULL_EXPIRES
            .min(store.settings.ack_wait / 4)
            .max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        q.want_room();
        hold.offer(&store, &channel, q);
        let workers = q.worker_count();
        if workers == 0 {
            hold.give_back(&store, true);
            hand_back_orphans(&store, &channel, q, &stop).await;
        }
        if last_look.elapsed() >= PULL_EXPIRES {
            last_look = Instant::now();
            if workers == 0 && q.backlog_len() == 0 && batch.is_none() {
                idle += 1;
                // A publish to a new /queue name made this channel; with no
                // worker here its messages wait in JetStream, not here:
                // retire it, or a flood of names would leave a puller each
                // for ever.
                if idle >= IDLE_LOOKS && store.router.retire_if_idle(&channel) {
                    tracing::debug!(
                        "cluster: {} retired here: no worker (its stream keeps its messages)",
                        channel.display_name()
                    );
                    store.forget(&channel);
                    return;
                }
            } else {
                idle = 0;
            }
        }
        let room = q.worker_room();
        // Held for long with no room (every worker here stalled): what no
        // worker has started on goes back for other brokers' workers.
        if hold.is_empty() || room > 0 {
            stuck_since = None;
        } else if stuck_since.get_or_insert_with(Instant::now).elapsed() >= PULL_EXPIRES {
            hold.give_back(&store, false);
            stuck_since = None;
        }
        let held = hold.parts();
        let held_bytes = hold.bytes();
        if batch.is_none()
            && room > 0
            && held < room + LOOKAHEAD
            && held_bytes < AHEAD_BYTES
            && store.connected()
        {
            let ask = ((room + LOOKAHEAD - held) / per_message)
                .min((AHEAD_BYTES - held_bytes) / message_bytes)
                .clamp(1, MAX_PULL);
            match start_pull(&store, &channel, ask).await {
                Ok(b) => {
                    backoff.reset();
                    batch = Some(b);
                    most = 0;
                    largest = 0;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "cluster: cannot pull {}: {e:#}; retrying in {delay:?}",
                        channel.display_name()
                    );
                    store.forget(&channel);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        let next = async {
            match batch.as_mut() {
                Some(b) => b.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = next => match m {
                Some(Ok(msg)) => {
                    largest = largest.max(msg.payload.len());
                    most = most.max(hold.take(&store, &channel, msg));
                }
                end => {
                    if let Some(Err(e)) = end {
                        // Messages JetStream had already sent for this pull
                        // come back to some broker after --cluster-ack-wait.
                        tracing::info!("cluster: pull of {} ended: {e}", channel.display_name());
                    }
                    batch = None;
                    if most > 0 {
                        per_message = most;
                        message_bytes = largest.max(1);
                    }
                }
            },
            _ = q.wait_room() => {}
            _ = tick.tick() => hold.keep_alive(store.settings.ack_wait).await,
            _ = stop.cancelled() => break,
        }
    }
    // Stopping: what is held, and what is on its way, goes straight back.
    hold.give_back(&store, true);
    if let Some(mut batch) = batch {
        let rest = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(Ok(msg)) = batch.next().await {
                store.replies.nak(Token::JetStream(msg));
            }
        });
        let _ = rest.await;
    }
}

async fn start_pull(store: &JetStream, channel: &Channel, ask: usize) -> anyhow::Result<Batch> {
    store
        .consumer(&channel.name)
        .await?
        .batch()
        .max_messages(ask)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Sends what the local backlog holds back to JetStream once no worker is left
/// here to take it, so that workers on other brokers can.
async fn hand_back_orphans(
    store: &JetStream,
    channel: &Channel,
    q: &QueueState,
    stop: &CancellationToken,
) {
    let mut orphans = q.take_orphans();
    if orphans.is_empty() {
        return;
    }
    // Jobs an acknowledging worker here gave back while JetStream kept them
    // for this broker go back as they are (their attempts counted there).
    let seqs: Vec<u64> = orphans
        .iter()
        .filter_map(|m| m.delivery.map(|d| d.seq()))
        .collect();
    let kept = q.take_stored_by(seqs);
    if !kept.is_empty() {
        let mut rest = Vec::with_capacity(orphans.len());
        for m in orphans {
            match m.delivery.and_then(|d| kept.get(&d.seq())) {
                Some(d) => store.replies.give_back([(
                    d.clone(),
                    Part {
                        bytes: m.payload,
                        head: m.head,
                    },
                )]),
                None => rest.push(m),
            }
        }
        orphans = rest;
    }
    let n = orphans.len();
    while !orphans.is_empty() {
        let mut bytes = 0;
        let take = orphans
            .iter()
            .take(envelope::MAX_PARTS)
            .take_while(|m| {
                bytes += m.len();
                bytes <= envelope::MAX_BYTES
            })
            .count()
            .max(1);
        let parts: Vec<Part> = orphans[..take]
            .iter()
            .map(|m| Part {
                bytes: m.payload.clone(),
                head: m.head,
            })
            .collect();
        if store_parts(store, channel, &parts, stop).await.is_err() {
            q.restore(orphans);
            return;
        }
        orphans.drain(..take);
    }
    tracing::info!(
        "cluster: {n} message(s) of {} handed back to JetStream: no worker left here",
        channel.display_name()
    );
}
