//! Where `/queue` messages are kept, and how the core answers for the ones a
//! store handed out. A channel's store is chosen once, when the router makes
//! it ([`Backend`]): this broker's memory (the channel's backlog), its
//! disk as well (a durable channel, `disk/`), or JetStream when the broker
//! is clustered. A message taken from a store
//! travels as a part of a [`Parcel`], known by the store's [`Token`]; the
//! writer and the queues settle it through [`Replies`] without knowing which
//! store it came from. `jetstream/` is the JetStream store: the outbox a
//! publisher ships to, and the puller that hands a channel's messages to
//! its workers here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::lock;

pub mod disk;
pub mod jetstream;

/// A `/queue` message as a store keeps it: its bytes, the first `head` of
/// which are its header block (protocol v2; 0 for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub bytes: Bytes,
    pub head: u16,
}

impl Part {
    /// A message without a header block.
    pub fn plain(bytes: Bytes) -> Self {
        Self { bytes, head: 0 }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Which store keeps a `/queue` channel's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The channel's backlog in this broker's memory.
    Memory,
    /// The backlog in memory, every message in the broker's durable store
    /// ([`disk`]) until it is settled.
    Disk,
    /// A JetStream stream shared by every broker of the cluster; the
    /// backlog holds only what JetStream would not take.
    JetStream,
}

/// How a store knows a message it handed out.
#[derive(Debug)]
pub enum Token {
    JetStream(async_nats::jetstream::Message),
}

/// A stored message carrying one or more `/queue` messages (its parts),
/// answered once every part is settled: written to a worker, or given back.
#[derive(Debug)]
pub struct Parcel {
    token: Token,
    parts: usize,
    /// Parts neither written nor given back yet.
    left: AtomicUsize,
    /// Parts given back: stored again before the parcel is acknowledged.
    back: Mutex<Vec<Part>>,
}

impl Parcel {
    pub fn new(token: Token, parts: usize) -> Arc<Self> {
        Arc::new(Self {
            token,
            parts,
            left: AtomicUsize::new(parts),
            back: Mutex::new(Vec::new()),
        })
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Which attempt at delivering its parts this is, as its store counts.
    pub fn attempt(&self) -> std::num::NonZeroU32 {
        let Token::JetStream(msg) = &self.token;
        msg.info()
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
    fn settle(&self, back: Option<Part>) -> bool {
        if let Some(part) = back {
            lock(&self.back).push(part);
        }
        self.left.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Once every part is settled: the parts given back, and whether they
    /// are all of them (then the whole parcel can go back as it is).
    pub fn given_back(&self) -> (Vec<Part>, bool) {
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

/// What the core tells a store about the messages it handed out.
pub enum Reply {
    /// Every part of the parcel is settled: acknowledge it, after storing
    /// again the parts given back, if any.
    Settled(Delivery),
    /// Not handed to any worker: any broker may deliver it again.
    Nak(Box<Token>),
    /// A job a worker here gave up on: stored as `letter` in dead-letter
    /// channel `to`, then its part settled; given back as `part` if the
    /// dead letter cannot be stored.
    DeadLetter {
        to: Bytes,
        letter: Part,
        delivery: Delivery,
        part: Part,
    },
    /// Sends everything queued so far, then answers.
    Flush(oneshot::Sender<()>),
}

/// The core's way to answer a store's deliveries; the store reads the other end.
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

    /// Parts that no worker here will write: back to their store, for any
    /// broker's workers.
    pub fn give_back(&self, parts: impl IntoIterator<Item = (Delivery, Part)>) {
        for (p, part) in parts {
            self.settle(p, Some(part));
        }
    }

    fn settle(&self, p: Delivery, back: Option<Part>) {
        if p.settle(back) {
            let _ = self.0.send(Reply::Settled(p));
        }
    }

    /// A job sent to dead-letter channel `to` as `letter` (see [`Reply::DeadLetter`]).
    pub fn dead_letter(&self, to: Bytes, letter: Part, delivery: Delivery, part: Part) {
        let _ = self.0.send(Reply::DeadLetter {
            to,
            letter,
            delivery,
            part,
        });
    }

    /// A whole stored message back to its store as it is.
    pub fn nak(&self, token: Token) {
        let _ = self.0.send(Reply::Nak(Box::new(token)));
    }

    /// Waits (up to `within`) until every reply sent so far has left.
    pub async fn flush(&self, within: std::time::Duration) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Reply::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}
