//! `/queue` messages on their way into JetStream: gathered per channel into
//! one JetStream message, published with acknowledgements in flight, and given
//! back to the publisher to route here when JetStream will not take them.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{envelope, subject, JetStream};
use crate::broker::router::Channel;
use crate::broker::store::Part;
use crate::runtime::backoff::Backoff;

/// JetStream publishes one connection may have awaiting acknowledgement.
const WINDOW: usize = 256;

fn subject_of(channel: &Channel) -> async_nats::Subject {
    channel
        .link
        .subject(|| subject::encode(&channel.name).into())
}

type Pending = BoxFuture<'static, Result<(), (Arc<Channel>, Vec<Part>)>>;

/// Messages JetStream did not take, to be routed on this broker instead.
pub type Back = Vec<(Arc<Channel>, Part)>;

/// One channel's messages gathered for the next JetStream message.
struct Open {
    channel: Arc<Channel>,
    parts: Vec<Part>,
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
    pub fn gather(&mut self, channel: &Arc<Channel>, payload: Part) -> Result<(), Part> {
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
        store: &JetStream,
        stop: &CancellationToken,
    ) -> Back {
        let Some(Open { channel, parts, .. }) = self.open.take() else {
            return Vec::new();
        };
        if !store.connected() {
            return kept_local(store, "NATS is unreachable", &channel, parts);
        }
        // Per channel, not per message: the registry lookup is a lock.
        if !channel.link.stream_known() {
            if let Err(e) = store.consumer(&channel.name).await {
                return kept_local(store, &format!("{e:#}"), &channel, parts);
            }
            channel.link.set_stream_known(true);
        }
        let ack = match send(store, &channel, &parts).await {
            Ok(ack) => ack,
            Err(e) => return kept_local(store, &e, &channel, parts),
        };
        let stats = store.stats.clone();
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
            back.extend(self.settle_one(store, stop).await);
        }
        back
    }

    /// Sends what is gathered and waits for every message in flight; returns
    /// those JetStream would not take, to be routed on this broker.
    pub(in crate::broker) async fn settle(
        &mut self,
        store: &JetStream,
        stop: &CancellationToken,
    ) -> Back {
        let mut back = self.ship(store, stop).await;
        while !self.inflight.is_empty() {
            back.extend(self.settle_one(store, stop).await);
        }
        back
    }

    async fn settle_one(&mut self, store: &JetStream, stop: &CancellationToken) -> Back {
        let Some(Err((channel, parts))) = self.inflight.next().await else {
            return Vec::new();
        };
        match store_parts(store, &channel, &parts, stop).await {
            Ok(()) => Vec::new(),
            Err(()) => kept_local(store, "JetStream did not acknowledge it", &channel, parts),
        }
    }
}

fn bytes_of(parts: &[Part]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

/// Counts `parts` as kept on this broker, and gives them back for routing here.
fn kept_local(store: &JetStream, why: &str, channel: &Arc<Channel>, parts: Vec<Part>) -> Back {
    store.kept_local(parts.len(), why);
    parts.into_iter().map(|p| (channel.clone(), p)).collect()
}

/// Publishes `parts` as one JetStream message; the acknowledgement comes later.
async fn send(
    store: &JetStream,
    channel: &Channel,
    parts: &[Part],
) -> Result<async_nats::jetstream::context::PublishAckFuture, String> {
    store
        .publish_parts(subject_of(channel), parts)
        .await
        .map_err(|e| e.to_string())
}

/// Publishes `parts` as one message and waits for its acknowledgement,
/// retrying while NATS is connected: a full stream is back-pressure, not a
/// reason to give up. Fails if NATS goes away or the broker stops.
pub(super) async fn store_parts(
    store: &JetStream,
    channel: &Channel,
    parts: &[Part],
    stop: &CancellationToken,
) -> Result<(), ()> {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        if !store.connected() || stop.is_cancelled() {
            return Err(());
        }
        let error = match store.consumer(&channel.name).await {
            Err(e) => format!("{e:#}"),
            Ok(_) => match send(store, channel, parts).await {
                Err(e) => e,
                Ok(ack) => match ack.await {
                    Ok(_) => {
                        store
                            .stats
                            .cluster_out
                            .add(parts.len() as u64, bytes_of(parts));
                        return Ok(());
                    }
                    Err(e) => {
                        if e.kind()
                            == async_nats::jetstream::context::PublishErrorKind::StreamNotFound
                        {
                            store.forget(channel);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::router::Router;
    use crate::broker::BrokerConfig;
    use bytes::Bytes;

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
        let small = Part::plain(Bytes::from_static(b"x"));
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
        let big = Part::plain(Bytes::from(vec![b'y'; envelope::MAX_BYTES]));
        assert_eq!(o.gather(&c[0], big.clone()).unwrap_err(), big);
        // Alone, a message of any size is gathered, and must leave at once.
        let mut o = Outbox::default();
        o.gather(&c[0], big.clone()).unwrap();
        assert!(o.full());
        let mut o = Outbox::default();
        o.gather(
            &c[0],
            Part::plain(Bytes::from(vec![b'z'; envelope::MAX_BYTES - 1])),
        )
        .unwrap();
        assert!(!o.full());
        o.gather(&c[0], small).unwrap();
        assert!(o.full(), "full at exactly its bytes");
    }
}
