//! `/queue` channels over JetStream: publishing with acknowledgements in
//! flight, and pulling only what local workers have room for.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{subject, Cluster};
use crate::broker::link::Delivery;
use crate::broker::queue::QueueState;
use crate::broker::router::{Channel, Kind};
use crate::broker::stats::DropReason;
use crate::runtime::backoff::Backoff;

/// JetStream publishes one connection may have awaiting acknowledgement.
const WINDOW: usize = 256;
/// Most messages asked for in one pull request.
const MAX_PULL: usize = 1024;
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

type Pending = BoxFuture<'static, Result<(), (Arc<Channel>, Bytes)>>;

/// One publisher connection's `/queue` messages on their way into JetStream.
#[derive(Default)]
pub struct Outbox {
    inflight: FuturesOrdered<Pending>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Sends one `/queue` message to its stream. Gives it back when JetStream
    /// cannot take it now: the caller routes it on this broker instead. Also
    /// returns, at the window's edge, earlier messages that JetStream refused
    /// for good, for the same treatment.
    pub(in crate::broker) async fn publish(
        &mut self,
        cluster: &Cluster,
        channel: &Arc<Channel>,
        payload: Bytes,
        stop: &CancellationToken,
    ) -> Result<Vec<(Arc<Channel>, Bytes)>, Bytes> {
        if !cluster.connected() {
            cluster.kept_local("NATS is unreachable");
            return Err(payload);
        }
        // Per channel, not per message: the registry lookup is a lock.
        if !channel.link.stream_known() {
            if let Err(e) = cluster.consumer(&channel.name).await {
                cluster.kept_local(&format!("{e:#}"));
                return Err(payload);
            }
            channel.link.set_stream_known(true);
        }
        let ack = match cluster
            .js
            .publish(subject_of(channel), payload.clone())
            .await
        {
            Ok(ack) => ack,
            Err(e) => {
                cluster.kept_local(&e.to_string());
                return Err(payload);
            }
        };
        let len = payload.len() as u64;
        let stats = cluster.stats.clone();
        let channel = channel.clone();
        self.inflight.push_back(Box::pin(async move {
            match ack.await {
                Ok(_) => {
                    stats.cluster_out.add(1, len);
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!("cluster: publish not acknowledged: {e}");
                    Err((channel, payload))
                }
            }
        }));
        let mut refused = Vec::new();
        while self.inflight.len() >= WINDOW {
            refused.extend(self.settle_one(cluster, stop).await);
        }
        Ok(refused)
    }

    /// Waits for every message in flight; returns those JetStream would not
    /// take, to be routed on this broker.
    pub(in crate::broker) async fn settle(
        &mut self,
        cluster: &Cluster,
        stop: &CancellationToken,
    ) -> Vec<(Arc<Channel>, Bytes)> {
        let mut refused = Vec::new();
        while !self.inflight.is_empty() {
            refused.extend(self.settle_one(cluster, stop).await);
        }
        refused
    }

    async fn settle_one(
        &mut self,
        cluster: &Cluster,
        stop: &CancellationToken,
    ) -> Option<(Arc<Channel>, Bytes)> {
        let Some(Err((channel, payload))) = self.inflight.next().await else {
            return None;
        };
        match store(cluster, &channel, payload, stop).await {
            Ok(()) => None,
            Err(payload) => {
                cluster.kept_local("JetStream did not acknowledge it");
                Some((channel, payload))
            }
        }
    }
}

/// Publishes one message and waits for its acknowledgement, retrying while
/// NATS is connected: a full stream is back-pressure, not a reason to give up.
/// Gives the message back if NATS goes away or the broker stops.
async fn store(
    cluster: &Cluster,
    channel: &Channel,
    payload: Bytes,
    stop: &CancellationToken,
) -> Result<(), Bytes> {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        if !cluster.connected() || stop.is_cancelled() {
            return Err(payload);
        }
        let error = match cluster.consumer(&channel.name).await {
            Err(e) => format!("{e:#}"),
            Ok(_) => match cluster
                .js
                .publish(subject_of(channel), payload.clone())
                .await
            {
                Err(e) => e.to_string(),
                Ok(ack) => match ack.await {
                    Ok(_) => {
                        cluster.stats.cluster_out.add(1, payload.len() as u64);
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
            _ = stop.cancelled() => return Err(payload),
        }
    }
}

/// Pulls `/queue` channel `channel`'s messages from JetStream for as long as it
/// exists on this broker, never more than its workers have room for.
pub(super) async fn pull(cluster: Arc<Cluster>, channel: Arc<Channel>, stop: CancellationToken) {
    let Kind::Queue(q) = &channel.kind else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // Looks in a row that found no worker and no backlog here.
    let mut idle = 0;
    while !stop.is_cancelled() {
        hand_back_orphans(&cluster, &channel, q, &stop).await;
        if q.worker_count() == 0 && q.backlog_len() == 0 {
            idle += 1;
            // A publish to a new /queue name made this channel; with no
            // worker here its messages wait in JetStream, not here: retire
            // it, or a flood of names would leave a puller each for ever.
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
        q.want_room();
        let room = q.worker_room().min(MAX_PULL);
        if room == 0 || !cluster.connected() {
            tokio::select! {
                _ = q.wait_room() => {}
                // Also looks again now and then: NATS coming back wakes nobody.
                _ = tokio::time::sleep(PULL_EXPIRES) => {}
                _ = stop.cancelled() => break,
            }
            continue;
        }
        let batch = match cluster.consumer(&channel.name).await {
            Ok(consumer) => consumer
                .batch()
                .max_messages(room)
                .expires(PULL_EXPIRES)
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}")),
            Err(e) => Err(e),
        };
        let mut batch = match batch {
            Ok(b) => {
                backoff.reset();
                b
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
        };
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = stop.cancelled() => break,
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    // Messages JetStream had already sent for this pull come
                    // back to some broker after --cluster-ack-wait.
                    tracing::info!("cluster: pull of {} ended: {e}", channel.display_name());
                    break;
                }
                Some(Ok(msg)) => hand(&cluster, &channel, q, Box::new(msg), &stop).await,
            }
        }
        if stop.is_cancelled() {
            // Messages already on their way to this broker go straight back.
            let rest = tokio::time::timeout(Duration::from_millis(200), async {
                while let Some(Ok(msg)) = batch.next().await {
                    cluster.replies.nak(vec![Box::new(msg)]);
                }
            });
            let _ = rest.await;
        }
    }
}

/// Gives one pulled message to a worker, waiting for room; hands it back to
/// JetStream if the workers leave or the broker stops first.
async fn hand(
    cluster: &Cluster,
    channel: &Channel,
    q: &QueueState,
    msg: Delivery,
    stop: &CancellationToken,
) {
    if msg.info().is_ok_and(|i| i.delivered > 1) {
        cluster.stats.cluster_redelivered.fetch_add(1, Relaxed);
    }
    let payload = msg.payload.clone();
    if payload.is_empty() {
        cluster.replies.ack(vec![msg]);
        cluster
            .router
            .count_drop(Some(channel), None, DropReason::EmptyPayload, 1);
        return;
    }
    if payload.len() > cluster.router.max_frame() {
        // Undeliverable by any worker here; handed back, it would go round
        // every broker's workers. Acknowledged, and counted.
        cluster.replies.ack(vec![msg]);
        cluster.too_large(channel, payload.len());
        return;
    }
    let len = payload.len() as u64;
    let (mut payload, mut msg) = (payload, msg);
    let mut held_since = tokio::time::Instant::now();
    loop {
        q.want_room();
        match q.offer_delivery(payload, msg) {
            Ok(()) => {
                cluster.stats.cluster_in.add(1, len);
                channel.stats.cluster_in.add(1, len);
                return;
            }
            Err((p, m)) => {
                if stop.is_cancelled() || q.worker_count() == 0 {
                    cluster.replies.nak(vec![m]);
                    return;
                }
                (payload, msg) = (p, m);
            }
        }
        // Still this broker's: JetStream must not give it to another broker
        // meanwhile, which would deliver it twice.
        if held_since.elapsed() >= cluster.config.ack_wait / 2 {
            let _ = msg.ack_with(async_nats::jetstream::AckKind::Progress).await;
            held_since = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = q.wait_room() => {}
            _ = tokio::time::sleep(PULL_EXPIRES) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Sends what the local backlog holds back to JetStream once no worker is left
/// here to take it, so that workers on other brokers can.
async fn hand_back_orphans(
    cluster: &Cluster,
    channel: &Channel,
    q: &QueueState,
    stop: &CancellationToken,
) {
    let orphans = q.take_orphans();
    if orphans.is_empty() {
        return;
    }
    let n = orphans.len();
    let mut rest = orphans.into_iter();
    while let Some(m) = rest.next() {
        if let Err(m) = store(cluster, channel, m, stop).await {
            let mut back = vec![m];
            back.extend(rest);
            q.restore(back);
            return;
        }
    }
    tracing::info!(
        "cluster: {n} message(s) of {} handed back to JetStream: no worker left here",
        channel.display_name()
    );
}
