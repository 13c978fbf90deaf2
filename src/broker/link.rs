//! What the single-broker core keeps on behalf of a cluster: JetStream
//! messages in workers' send queues, and how the core answers for them. The
//! writer and the queues reach the cluster only through here; the publisher
//! still hands `/queue` messages to `cluster::Outbox` itself (the store seam
//! is to end that).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::lock;

/// A JetStream message carrying one or more `/queue` messages (its parts),
/// answered once every part is settled: written to a worker, or given back.
#[derive(Debug)]
pub struct Parcel {
    msg: async_nats::jetstream::Message,
    parts: usize,
    /// Parts neither written nor given back yet.
    left: AtomicUsize,
    /// Parts given back: stored again before the parcel is acknowledged.
    back: Mutex<Vec<Bytes>>,
}

impl Parcel {
    pub fn new(msg: async_nats::jetstream::Message, parts: usize) -> Arc<Self> {
        Arc::new(Self {
            msg,
            parts,
            left: AtomicUsize::new(parts),
            back: Mutex::new(Vec::new()),
        })
    }

    pub fn message(&self) -> &async_nats::jetstream::Message {
        &self.msg
    }

    /// Which attempt at delivering its parts this is, as JetStream counts.
    pub fn attempt(&self) -> std::num::NonZeroU32 {
        self.msg
            .info()
            .ok()
            .and_then(|i| u32::try_from(i.delivered).ok())
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(std::num::NonZeroU32::MIN)
    }

    /// Every part is written or given back: its answer is on its way.
    pub fn settled(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0
    }

    /// One part settled (`back`: not written, to be stored again); true for
    /// the last.
    fn settle(&self, back: Option<Bytes>) -> bool {
        if let Some(part) = back {
            lock(&self.back).push(part);
        }
        self.left.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Once every part is settled: the parts given back, and whether they
    /// are all of them (then the whole parcel can go back as it is).
    pub fn given_back(&self) -> (Vec<Bytes>, bool) {
        let back = std::mem::take(&mut *lock(&self.back));
        let all = back.len() == self.parts;
        (back, all)
    }
}

/// One part of a [`Parcel`] on its way to a worker.
pub type Delivery = Arc<Parcel>;

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
        self.stream_known.load(Ordering::Relaxed)
    }

    pub fn set_stream_known(&self, known: bool) {
        self.stream_known.store(known, Ordering::Relaxed);
    }
}

/// What the core tells the cluster about the JetStream messages it handled.
pub enum Reply {
    /// Every part of the parcel is settled: acknowledge it, after storing
    /// again the parts given back, if any.
    Settled(Delivery),
    /// Not handed to any worker: any broker may deliver it again.
    Nak(Box<async_nats::jetstream::Message>),
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

    /// Parts written to workers' sockets (or that no worker could take,
    /// counted as dropped): done with.
    pub fn written(&self, parts: impl IntoIterator<Item = Delivery>) {
        for p in parts {
            self.settle(p, None);
        }
    }

    /// Parts that no worker here will write: back to JetStream, for any
    /// broker's workers.
    pub fn give_back(&self, parts: impl IntoIterator<Item = (Delivery, Bytes)>) {
        for (p, part) in parts {
            self.settle(p, Some(part));
        }
    }

    fn settle(&self, p: Delivery, back: Option<Bytes>) {
        if p.settle(back) {
            let _ = self.0.send(Reply::Settled(p));
        }
    }

    /// A whole JetStream message back to JetStream as it is.
    pub fn nak(&self, msg: async_nats::jetstream::Message) {
        let _ = self.0.send(Reply::Nak(Box::new(msg)));
    }

    /// Waits (up to `within`) until every reply sent so far has left.
    pub async fn flush(&self, within: std::time::Duration) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Reply::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}
