//! `/queue` channels over JetStream: publishing with acknowledgements in
//! flight, and pulling only what local workers have room for.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::{AckKind, Message};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{envelope, subject, Cluster};
use crate::broker::queue::QueueState;
use crate::broker::router::{Channel, Kind};
use crate::broker::stats::DropReason;
use crate::broker::store::{Parcel, Token};
use crate::runtime::backoff::Backoff;

/// JetStream publishes one connection may have awaiting acknowledgement.
const WINDOW: usize = 256;
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

fn subject_of(channel: &Channel) -> async_nats::Subject {
    channel
        .link
        .subject(|| subject::encode(&channel.name).into())
}

type Pending = BoxFuture<'static, Result<(), (Arc<Channel>, Vec<Bytes>)>>;

/// Messages JetStream did not take, to be routed on this broker instead.
pub type Back = Vec<(Arc<Channel>, Bytes)>;

/// One channel's messages gathered for the next JetStream message.
struct Open {
    channel: Arc<Channel>,
    parts: Vec<Bytes>,
    bytes: usize,
}

/// One publisher connection's `/queue` messages on their way into JetStream.
#[derive(Default)]
pub struct Outbox {
    inflight: FuturesOrdered<Pending>,
    open: Option<Open>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.open.is_none()
    }

    /// Messages wait to be sent: the reader ships them before it waits for
    /// more input.
    pub fn holds_open(&self) -> bool {
        self.open.is_some()
    }

    /// Adds one `/queue` message to the JetStream message being gathered,
    /// without waiting; gives it back when it cannot join it (another
    /// channel, or past [`envelope::MAX_BYTES`]): the caller ships what is
    /// gathered and adds it again. A message gathered leaves when the
    /// gathering is [full](Self::full), or when the reader ships it.
    pub fn gather(&mut self, channel: &Arc<Channel>, payload: Bytes) -> Result<(), Bytes> {
        let open = self.open.get_or_insert_with(|| Open {
            channel: channel.clone(),
            parts: Vec::new(),
            bytes: 0,
        });
        if !Arc::ptr_eq(&open.channel, channel)
            || (open.bytes > 0 && open.bytes + payload.len() > envelope::MAX_BYTES)
        {
            return Err(payload);
        }
        open.bytes += payload.len();
        open.parts.push(payload);
        Ok(())
    }

    /// What is gathered must leave now.
    pub fn full(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.parts.len() >= envelope::MAX_PARTS || o.bytes >= envelope::MAX_BYTES)
    }

    /// Sends the messages gathered so far as one JetStream message.
    pub(in crate::broker) async fn ship(
        &mut self,
        cluster: &Cluster,
        stop: &CancellationToken,
    ) -> Back {
        let Some(Open { channel, parts, .. }) = self.open.take() else {
            return Vec::new();
        };
        if !cluster.connected() {
            return kept_local(cluster, "NATS is unreachable", &channel, parts);
        }
        // Per channel, not per message: the registry lookup is a lock.
        if !channel.link.stream_known() {
            if let Err(e) = cluster.consumer(&channel.name).await {
                return kept_local(cluster, &format!("{e:#}"), &channel, parts);
            }
            channel.link.set_stream_known(true);
        }
        let ack = match send(cluster, &channel, &parts).await {
            Ok(ack) => ack,
            Err(e) => return kept_local(cluster, &e, &channel, parts),
        };
        let stats = cluster.stats.clone();
        self.inflight.push_back(Box::pin(async move {
            match ack.await {
                Ok(_) => {
                    stats.cluster_out.add(parts.len() as u64, bytes_of(&parts));
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!("cluster: publish not acknowledged: {e}");
                    Err((channel, parts))
                }
            }
        }));
        let mut back = Vec::new();
        while self.inflight.len() >= WINDOW {
            back.extend(self.settle_one(cluster, stop).await);
        }
        back
    }

    /// Sends what is gathered and waits for every message in flight; returns
    /// those JetStream would not take, to be routed on this broker.
    pub(in crate::broker) async fn settle(
        &mut self,
        cluster: &Cluster,
        stop: &CancellationToken,
    ) -> Back {
        let mut back = self.ship(cluster, stop).await;
        while !self.inflight.is_empty() {
            back.extend(self.settle_one(cluster, stop).await);
        }
        back
    }

    async fn settle_one(&mut self, cluster: &Cluster, stop: &CancellationToken) -> Back {
        let Some(Err((channel, parts))) = self.inflight.next().await else {
            return Vec::new();
        };
        match store(cluster, &channel, &parts, stop).await {
            Ok(()) => Vec::new(),
            Err(()) => kept_local(cluster, "JetStream did not acknowledge it", &channel, parts),
        }
    }
}

fn bytes_of(parts: &[Bytes]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

/// Counts `parts` as kept on this broker, and gives them back for routing here.
fn kept_local(cluster: &Cluster, why: &str, channel: &Arc<Channel>, parts: Vec<Bytes>) -> Back {
    cluster.kept_local(parts.len(), why);
    parts.into_iter().map(|p| (channel.clone(), p)).collect()
}

/// Publishes `parts` as one JetStream message; the acknowledgement comes later.
async fn send(
    cluster: &Cluster,
    channel: &Channel,
    parts: &[Bytes],
) -> Result<async_nats::jetstream::context::PublishAckFuture, String> {
    cluster
        .publish_parts(subject_of(channel), parts)
        .await
        .map_err(|e| e.to_string())
}

/// Publishes `parts` as one message and waits for its acknowledgement,
/// retrying while NATS is connected: a full stream is back-pressure, not a
/// reason to give up. Fails if NATS goes away or the broker stops.
async fn store(
    cluster: &Cluster,
    channel: &Channel,
    parts: &[Bytes],
    stop: &CancellationToken,
) -> Result<(), ()> {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        if !cluster.connected() || stop.is_cancelled() {
            return Err(());
        }
        let error = match cluster.consumer(&channel.name).await {
            Err(e) => format!("{e:#}"),
            Ok(_) => match send(cluster, channel, parts).await {
                Err(e) => e,
                Ok(ack) => match ack.await {
                    Ok(_) => {
                        cluster
                            .stats
                            .cluster_out
                            .add(parts.len() as u64, bytes_of(parts));
                        return Ok(());
                    }
                    Err(e) => {
                        if e.kind()
                            == async_nats::jetstream::context::PublishErrorKind::StreamNotFound
                        {
                            cluster.forget(channel);
                        }
                        e.to_string()
                    }
                },
            },
        };
        let delay = backoff.next_delay();
        tracing::debug!(
            "cluster: {} not stored yet ({error}); retrying in {delay:?}",
            channel.display_name()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return Err(()),
        }
    }
}

/// A pulled JetStream message whose parts are not all with workers yet.
struct Held {
    parcel: Arc<Parcel>,
    /// Parts not offered to a worker yet, in order.
    parts: VecDeque<Bytes>,
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
    fn take(&mut self, cluster: &Cluster, channel: &Channel, msg: Message) -> usize {
        let parts = envelope::open(msg.headers.as_ref(), &msg.payload).unwrap_or_else(|e| {
            if let Some(n) = cluster.envelope_log.due(cluster.base) {
                tracing::warn!(
                    "cluster: {n} message(s) on {} delivered whole: not an aioq envelope ({e})",
                    channel.display_name()
                );
            }
            vec![msg.payload.clone()]
        });
        let n = parts.len();
        if msg.info().is_ok_and(|i| i.delivered > 1) {
            cluster
                .stats
                .cluster_redelivered
                .fetch_add(n as u64, Relaxed);
        }
        let parcel = Parcel::new(Token::JetStream(msg), n);
        let mut keep = VecDeque::with_capacity(n);
        for part in parts {
            if part.is_empty() {
                cluster.replies.written([parcel.clone()]);
                cluster
                    .router
                    .count_drop(Some(channel), None, DropReason::EmptyPayload, 1);
            } else if part.len() > cluster.router.max_frame() {
                // Undeliverable by any worker here; handed back, it would go
                // round every broker's workers. Acknowledged, and counted.
                cluster.replies.written([parcel.clone()]);
                cluster.too_large(channel, part.len());
            } else {
                keep.push_back(part);
            }
        }
        if !keep.is_empty() {
            self.held.push_back(Held {
                parcel,
                bytes: keep.iter().map(Bytes::len).sum(),
                parts: keep,
                started: false,
                since: Instant::now(),
            });
        }
        n
    }

    /// Gives workers what they have room for, in order.
    fn offer(&mut self, cluster: &Cluster, channel: &Channel, q: &QueueState) {
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
                cluster.stats.cluster_in.add(1, len);
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
    fn give_back(&mut self, cluster: &Cluster, all: bool) {
        let mut kept = VecDeque::new();
        for h in self.held.drain(..) {
            if h.started && !all {
                kept.push_back(h);
                continue;
            }
            let parcel = h.parcel;
            cluster
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
pub(super) async fn pull(cluster: Arc<Cluster>, channel: Arc<Channel>, stop: CancellationToken) {
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
            .min(cluster.config.ack_wait / 4)
            .max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        q.want_room();
        hold.offer(&cluster, &channel, q);
        let workers = q.worker_count();
        if workers == 0 {
            hold.give_back(&cluster, true);
            hand_back_orphans(&cluster, &channel, q, &stop).await;
        }
        if last_look.elapsed() >= PULL_EXPIRES {
            last_look = Instant::now();
            if workers == 0 && q.backlog_len() == 0 && batch.is_none() {
                idle += 1;
                // A publish to a new /queue name made this channel; with no
                // worker here its messages wait in JetStream, not here:
                // retire it, or a flood of names would leave a puller each
                // for ever.
                if idle >= IDLE_LOOKS && cluster.router.retire_if_idle(&channel) {
                    tracing::debug!(
                        "cluster: {} retired here: no worker (its stream keeps its messages)",
                        channel.display_name()
                    );
                    cluster.forget(&channel);
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
            hold.give_back(&cluster, false);
            stuck_since = None;
        }
        let held = hold.parts();
        let held_bytes = hold.bytes();
        if batch.is_none()
            && room > 0
            && held < room + LOOKAHEAD
            && held_bytes < AHEAD_BYTES
            && cluster.connected()
        {
            let ask = ((room + LOOKAHEAD - held) / per_message)
                .min((AHEAD_BYTES - held_bytes) / message_bytes)
                .clamp(1, MAX_PULL);
            match start_pull(&cluster, &channel, ask).await {
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
                    cluster.forget(&channel);
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
                    most = most.max(hold.take(&cluster, &channel, msg));
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
            _ = tick.tick() => hold.keep_alive(cluster.config.ack_wait).await,
            _ = stop.cancelled() => break,
        }
    }
    // Stopping: what is held, and what is on its way, goes straight back.
    hold.give_back(&cluster, true);
    if let Some(mut batch) = batch {
        let rest = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(Ok(msg)) = batch.next().await {
                cluster.replies.nak(Token::JetStream(msg));
            }
        });
        let _ = rest.await;
    }
}

async fn start_pull(cluster: &Cluster, channel: &Channel, ask: usize) -> anyhow::Result<Batch> {
    cluster
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
    cluster: &Cluster,
    channel: &Channel,
    q: &QueueState,
    stop: &CancellationToken,
) {
    let mut orphans = q.take_orphans();
    if orphans.is_empty() {
        return;
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
        if store(cluster, channel, &orphans[..take], stop)
            .await
            .is_err()
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::router::Router;
    use crate::broker::BrokerConfig;

    fn channels(names: &[&str]) -> Vec<Arc<Channel>> {
        let router = Router::new(Arc::new(BrokerConfig::default()), Arc::default());
        names
            .iter()
            .map(|n| {
                router
                    .lookup(&Bytes::copy_from_slice(n.as_bytes()), None)
                    .unwrap()
                    .unwrap()
            })
            .collect()
    }

    fn gathered(o: &Outbox) -> usize {
        o.open.as_ref().map_or(0, |o| o.parts.len())
    }

    #[test]
    fn a_jetstream_message_gathers_one_channel_up_to_its_bounds() {
        let c = channels(&["/queue/a", "/queue/b"]);
        let small = Bytes::from_static(b"x");
        let mut o = Outbox::default();
        for i in 1..=envelope::MAX_PARTS {
            assert!(!o.full(), "full at {i} parts");
            o.gather(&c[0], small.clone()).unwrap();
        }
        assert!(o.full(), "full at {} parts", envelope::MAX_PARTS);
        // Another channel's message does not join.
        let mut o = Outbox::default();
        o.gather(&c[0], small.clone()).unwrap();
        assert!(o.gather(&c[1], small.clone()).is_err());
        assert_eq!(gathered(&o), 1);
        // Nor one that would take it past its bytes.
        let big = Bytes::from(vec![b'y'; envelope::MAX_BYTES]);
        assert_eq!(o.gather(&c[0], big.clone()).unwrap_err(), big);
        // Alone, a message of any size is gathered, and must leave at once.
        let mut o = Outbox::default();
        o.gather(&c[0], big.clone()).unwrap();
        assert!(o.full());
        let mut o = Outbox::default();
        o.gather(&c[0], Bytes::from(vec![b'z'; envelope::MAX_BYTES - 1]))
            .unwrap();
        assert!(!o.full());
        o.gather(&c[0], small).unwrap();
        assert!(o.full(), "full at exactly its bytes");
    }
}
