//! What the single-broker core keeps on behalf of a cluster, and nothing more:
//! the one module both the core and `cluster/` import, so that the core never
//! imports the cluster.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

/// A JetStream message on its way to a worker (boxed: it is large, and moves
/// through queues and results).
pub type Delivery = Box<async_nats::jetstream::Message>;

/// A channel's place in the cluster, filled in by the cluster as it needs it.
#[derive(Debug, Default)]
pub struct ChannelLink {
    /// The channel's NATS subject, once computed.
    subject: OnceLock<async_nats::Subject>,
    /// Its JetStream stream is known to exist (`/queue`).
    stream_known: AtomicBool,
}

impl ChannelLink {
    pub fn subject(&self, make: impl FnOnce() -> async_nats::Subject) -> async_nats::Subject {
        self.subject.get_or_init(make).clone()
    }

    pub fn stream_known(&self) -> bool {
        self.stream_known.load(Relaxed)
    }

    pub fn set_stream_known(&self, known: bool) {
        self.stream_known.store(known, Relaxed);
    }
}

/// What a writer tells JetStream about the deliveries it handled.
pub enum Reply {
    /// Written to a worker's socket: done.
    Ack(Delivery),
    /// Not written: any broker may deliver it again.
    Nak(Delivery),
    /// Sends everything queued so far, then answers.
    Flush(oneshot::Sender<()>),
}

/// The core's way to answer JetStream deliveries; the cluster reads the other end.
#[derive(Clone)]
pub struct Replies(mpsc::UnboundedSender<Reply>);

impl Replies {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Reply>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    pub fn ack(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            let _ = self.0.send(Reply::Ack(d));
        }
    }

    /// Gives messages back to JetStream for any broker to deliver.
    pub fn nak(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            let _ = self.0.send(Reply::Nak(d));
        }
    }

    /// Waits (up to `within`) until every reply sent so far has left.
    pub async fn flush(&self, within: std::time::Duration) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Reply::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}
