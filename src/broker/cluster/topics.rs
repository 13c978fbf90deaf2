//! `/topic` channels over core NATS: forwarding local messages out, and
//! routing the cluster's messages to local subscribers.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{subject, Cluster};
use crate::broker::router::Channel;
use crate::broker::store::jetstream::envelope;
use crate::broker::store::Part;

/// Messages taken off the forward queue at a time.
const BATCH: usize = 256;
/// Subjects remembered by the forwarder; past it the memo starts afresh.
const SUBJECTS: usize = 4096;

/// Publishes what local publishers send to `/topic` channels on NATS, in order.
pub(super) async fn forward(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<(Bytes, Part)>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut subjects: HashMap<Bytes, async_nats::Subject> = HashMap::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for (name, part) in batch.drain(..) {
            let len = part.len();
            cluster.forward_bytes.fetch_sub(len, Relaxed);
            cluster.router.budget.give_back(len);
            if !cluster.connected() {
                cluster.forward_pending.fetch_sub(1, Relaxed);
                cluster.unforwarded("NATS is unreachable");
                continue;
            }
            if subjects.len() >= SUBJECTS {
                subjects.clear();
            }
            let subject = subjects
                .entry(name)
                .or_insert_with_key(|name| subject::encode(name).into())
                .clone();
            // A header block travels in the payload, its length in a NATS
            // header (as in a JetStream envelope).
            let published = match envelope::seal(std::slice::from_ref(&part)) {
                (None, payload) => cluster.client.publish(subject, payload).await,
                (Some(headers), payload) => {
                    cluster
                        .client
                        .publish_with_headers(subject, headers, payload)
                        .await
                }
            };
            cluster.forward_pending.fetch_sub(1, Relaxed);
            match published {
                Ok(()) => cluster.stats.cluster_out.add(1, len as u64),
                Err(e) => cluster.unforwarded(&e.to_string()),
            }
        }
    }
}

/// Subscribes to `channel` on NATS while it has local subscribers and routes
/// what other brokers publish to them.
pub(super) async fn inbound(cluster: Arc<Cluster>, channel: Arc<Channel>, stop: CancellationToken) {
    let shown = channel.display_name();
    let mut sub = match cluster
        .client
        .subscribe(subject::encode(&channel.name))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cluster: cannot subscribe to {shown}: {e}");
            return;
        }
    };
    // Once NATS has the subscription, messages from other brokers reach this
    // one: the line tells operators (and tests) that the channel is joined.
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(5), cluster.client.flush()) => {
            if matches!(r, Ok(Ok(()))) {
                tracing::info!("cluster: following {shown}");
            }
        }
        _ = stop.cancelled() => return,
    }
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            m = sub.next() => m,
        };
        let Some(msg) = msg else { break };
        let Part {
            bytes: payload,
            head,
        } = envelope::lone(msg.headers.as_ref(), msg.payload);
        if payload.is_empty() {
            continue;
        }
        let len = payload.len() as u64;
        cluster.stats.cluster_in.add(1, len);
        channel.stats.cluster_in.add(1, len);
        if payload.len() > cluster.router.max_frame() {
            // Another broker (or a foreign NATS client) allows larger frames:
            // no subscriber here may be sent it.
            cluster.too_large(&channel, payload.len());
            continue;
        }
        // A retired channel's successor has its own subscription: routing there
        // from this one too would deliver twice.
        if cluster
            .router
            .publish_topic(&channel, &payload, head, false)
            .is_err()
        {
            cluster.stats.unrouted.fetch_add(1, Relaxed);
        }
    }
    let _ = sub.unsubscribe().await;
    // The pair of "following": the channel's last local subscriber left.
    tracing::info!("cluster: no longer following {shown}");
}
