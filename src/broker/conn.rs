//! A connection as routing and its writer see it: the sending end of its
//! bounded send queue (one per connection, whatever it subscribed to), its
//! counters, a way to disconnect it, and its subscriptions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::budget::Budget;
use super::delivery::Out;
use super::end::EndReason;
use super::lock;
use super::log_every::LogEvery;
use super::send_queue::{self, SendError};
use super::subscription::Subscription;
use tokio_util::sync::CancellationToken;

use super::stats::ConnStats;

/// Why [`Conn::offer`] gave a message back.
#[derive(Debug)]
pub enum Refused {
    /// Its send queue is full, by count or by bytes.
    Full(Out),
    /// The broker-wide memory budget is spent.
    OverBudget(Out),
    /// The subscriber is gone.
    Closed(Out),
}

impl Refused {
    pub fn into_inner(self) -> Out {
        match self {
            Refused::Full(p) | Refused::OverBudget(p) | Refused::Closed(p) => p,
        }
    }

    /// The message, and whether the broker's memory (not this subscriber)
    /// refused it: then no other subscriber can take it either.
    pub fn into_message_and_budget(self) -> (Out, bool) {
        let over_budget = matches!(self, Refused::OverBudget(_));
        (self.into_inner(), over_budget)
    }
}

pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    tx: send_queue::Sender<Out>,
    /// Payload bytes waiting in the send queue, and their bound: the queue is
    /// full at its message capacity or at this many bytes, whichever comes first.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    budget: Arc<Budget>,
    pub stats: Arc<ConnStats>,
    /// Cancelled to close the connection at once (slow consumer, protocol error).
    pub kill: CancellationToken,
    /// Set when routing disconnected it as a slow consumer, so that what is still
    /// queued for it is counted under that reason.
    pub slow: AtomicBool,
    /// Its writer waits for the socket to take a write: the peer is not
    /// reading as fast as it is sent.
    blocked: AtomicBool,
    /// Why the connection ended, as the first side to notice tells it.
    end_reason: Mutex<Option<EndReason>>,
    born: Instant,
    drop_log: LogEvery,
    /// What the connection subscribed to: under protocol v1 one
    /// subscription, or none for a publisher. Each points back here, so the
    /// writer takes them out when the connection ends.
    subs: Mutex<Vec<Arc<Subscription>>>,
    /// What its reader and writer share under protocol v2; `None` under v1.
    pub v2: Option<Box<ConnV2>>,
}

/// Control frames (confirms, refusals, subscriptions' ends) a protocol v2
/// connection may have queued and not yet written before its reader stops
/// reading: a client that sends and never reads is held back by TCP, as one
/// that publishes to a full `/queue` is.
pub const MAX_CONTROL: usize = 1024;

/// A protocol v2 connection's state shared by its reader and its writer.
#[derive(Default)]
pub struct ConnV2 {
    /// Control frames queued and not yet written.
    control: AtomicUsize,
    /// Wakes a reader waiting for the writer to write control frames.
    room: tokio::sync::Notify,
    /// Some subscription has losses its client has not been told of.
    lost: AtomicBool,
    /// The subscriptions changed since the writer last looked.
    pub subs_changed: AtomicBool,
    /// Confirm ids read and not yet answered (for monitoring).
    pub unanswered: AtomicU64,
    /// Highest confirm id answered (for monitoring).
    pub answered: AtomicU64,
    /// An `ERROR` to write before the connection closes.
    last_word: Mutex<Option<bytes::Bytes>>,
    /// It was granted `headers`: deliveries carry their header blocks.
    pub headers: AtomicBool,
    /// Deliveries written to its acknowledging workers and not yet answered.
    pub held: Mutex<super::held::Held>,
    /// `held`'s length, read without the lock.
    pub held_len: AtomicUsize,
    /// It is on the sweeper's list.
    pub acker: AtomicBool,
}

impl Conn {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        tx: send_queue::Sender<Out>,
        max_bytes: usize,
        budget: Arc<Budget>,
        stats: Arc<ConnStats>,
        kill: CancellationToken,
    ) -> Self {
        Self {
            id,
            peer,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            budget,
            stats,
            kill,
            slow: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            end_reason: Mutex::new(None),
            born: Instant::now(),
            drop_log: LogEvery::default(),
            subs: Mutex::new(Vec::new()),
            v2: None,
        }
    }

    /// A protocol v2 connection.
    pub fn speaking_v2(mut self) -> Self {
        self.v2 = Some(Box::default());
        self
    }

    /// Takes `n` bytes of the broker's memory budget for something this
    /// connection holds besides messages (a protocol v2 subscription).
    pub fn take_budget(&self, n: usize) -> bool {
        self.budget.try_take(n)
    }

    /// Holds `n` bytes in the budget whatever it says: deliveries written
    /// to an acknowledging worker, held until answered.
    pub fn hold_budget(&self, n: usize) {
        self.budget.force_take(n);
    }

    /// Gives back what [`take_budget`](Self::take_budget) took.
    pub fn give_back_budget(&self, n: usize) {
        self.budget.give_back(n);
    }

    /// Queues a frame of the connection's own (protocol v2) after what is
    /// queued, past the send queue's bound; false when the writer is gone.
    pub fn control(&self, frame: bytes::Bytes) -> bool {
        if let Some(v2) = &self.v2 {
            v2.control.fetch_add(1, Relaxed);
        }
        self.tx.force_send(Out::control(frame)).is_ok()
    }

    /// Whether its reader should wait before reading more: too many control
    /// frames are not written yet.
    pub fn control_full(&self) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|v2| v2.control.load(Relaxed) >= MAX_CONTROL)
    }

    /// Waits until fewer than [`MAX_CONTROL`] control frames wait.
    pub async fn control_room(&self) {
        let Some(v2) = &self.v2 else {
            return;
        };
        loop {
            let room = v2.room.notified();
            if v2.control.load(Relaxed) < MAX_CONTROL {
                return;
            }
            room.await;
        }
    }

    /// The writer wrote (or gave up) `n` control frames.
    pub fn control_written(&self, n: usize) {
        if let (Some(v2), 1..) = (&self.v2, n) {
            let _ = v2
                .control
                .fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(n)));
            v2.room.notify_waiters();
        }
    }

    /// Has the writer say `frame` (an `ERROR`) before it closes the
    /// connection; nothing under protocol v1.
    pub fn last_word(&self, frame: bytes::Bytes) {
        if let Some(v2) = &self.v2 {
            *lock(&v2.last_word) = Some(frame);
        }
    }

    /// The frame to write before closing, if any.
    pub fn take_last_word(&self) -> Option<bytes::Bytes> {
        self.v2.as_ref().and_then(|v2| lock(&v2.last_word).take())
    }

    /// Whether a subscription has losses to report.
    pub fn has_lost(&self) -> bool {
        self.v2.as_ref().is_some_and(|v2| v2.lost.load(Relaxed))
    }

    /// A subscription recorded a loss to report.
    pub fn note_lost(&self) {
        if let Some(v2) = &self.v2 {
            v2.lost.store(true, Relaxed);
        }
    }

    /// Whether a subscription has losses to report (and forgets it).
    pub fn take_lost(&self) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|v2| v2.lost.load(Relaxed) && v2.lost.swap(false, Relaxed))
    }

    /// Its subscriptions now.
    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        lock(&self.subs).clone()
    }

    /// Lets go of one subscription (an unsubscribe).
    pub fn unhold(&self, sub: &Arc<Subscription>) {
        lock(&self.subs).retain(|s| !Arc::ptr_eq(s, sub));
        if let Some(v2) = &self.v2 {
            v2.subs_changed.store(true, Relaxed);
        }
    }

    /// Takes out of the send queue what waits there for subscription
    /// `local`, counted as no longer queued.
    pub fn take_queued(&self, local: u32) -> Vec<Out> {
        let taken = self.tx.take_where(|m| m.sub == local);
        self.taken(taken.iter().map(Out::len).sum());
        taken
    }

    /// The send queue's bounds: messages, payload bytes.
    pub fn bounds(&self) -> (usize, usize) {
        (self.tx.max_capacity(), self.max_bytes)
    }

    /// What waits in the send queue now: messages, payload bytes.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.tx.max_capacity() - self.tx.capacity(),
            self.queued_bytes.load(Relaxed),
        )
    }

    /// Adds a subscription this connection now holds.
    pub fn hold(&self, sub: Arc<Subscription>) {
        lock(&self.subs).push(sub);
        if let Some(v2) = &self.v2 {
            v2.subs_changed.store(true, Relaxed);
        }
    }

    /// Its first subscription (under protocol v1, its only one).
    pub fn first_subscription(&self) -> Option<Arc<Subscription>> {
        lock(&self.subs).first().cloned()
    }

    /// Lets go of its subscriptions, which point back to it: the connection
    /// is ending.
    pub fn release(&self) -> Vec<Arc<Subscription>> {
        std::mem::take(&mut *lock(&self.subs))
    }

    /// Free places in the send queue (by message count).
    pub fn room(&self) -> usize {
        self.tx.capacity()
    }

    /// Queues `m` for this subscriber without waiting; gives it back when
    /// the queue is full (by count or by bytes), the broker's memory budget is
    /// spent, or the subscriber is gone.
    pub fn offer(&self, m: Out) -> Result<(), Refused> {
        self.enqueue(m, true)
    }

    /// Like [`offer`](Self::offer), for a message whose bytes the budget already
    /// counts (one moving from a `/queue` backlog to a worker).
    pub fn offer_held(&self, m: Out) -> Result<(), Refused> {
        self.enqueue(m, false)
    }

    /// Queues messages moving from a `/queue` backlog (their bytes already
    /// counted by the budget) with one count of bytes and one lock of the
    /// send queue for the lot; `bytes`: their payloads' sum. The caller
    /// checked their room ([`byte_room`](Self::byte_room)); what still does
    /// not fit (the queue filled meanwhile, or the writer is gone) stays in
    /// `batch`.
    pub fn offer_held_batch(&self, batch: &mut Vec<Out>, bytes: usize) {
        self.queued_bytes.fetch_add(bytes, Relaxed);
        self.tx.try_send_drain(batch);
        if !batch.is_empty() {
            let unsent: usize = batch.iter().map(Out::len).sum();
            self.queued_bytes.fetch_sub(unsent, Relaxed);
        }
    }

    /// Payload bytes queued now and the send queue's bound on them.
    pub fn byte_room(&self) -> (usize, usize) {
        (self.queued_bytes.load(Relaxed), self.max_bytes)
    }

    /// Queues `/topic` messages for subscription `sub` as far as they fit
    /// whole, in order, with one count of bytes, one take from the budget
    /// and one lock of the send queue for the lot; `bytes`: their payloads'
    /// sum. Returns how many were queued: the rest go through
    /// [`offer`](Self::offer) one by one, which says why each is refused.
    pub fn offer_batch(&self, batch: &[(bytes::Bytes, u16)], bytes: usize, sub: u32) -> usize {
        let before = self.queued_bytes.fetch_add(bytes, Relaxed);
        if before + bytes > self.max_bytes || !self.budget.try_take_within(bytes) {
            self.queued_bytes.fetch_sub(bytes, Relaxed);
            return 0;
        }
        let n = self.tx.try_send_from(batch, |(payload, head)| {
            Out::with_head(payload.clone(), sub, *head)
        });
        if n < batch.len() {
            let unsent: usize = batch[n..].iter().map(|(p, _)| p.len()).sum();
            self.queued_bytes.fetch_sub(unsent, Relaxed);
            self.budget.give_back(unsent);
        }
        n
    }

    fn enqueue(&self, payload: Out, take_budget: bool) -> Result<(), Refused> {
        let len = payload.len();
        let before = self.queued_bytes.fetch_add(len, Relaxed);
        // One message is always let through, however large, so that a message
        // above the byte bound can still reach an idle subscriber.
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return Err(self.refused(payload));
        }
        if take_budget && !self.budget.try_take(len) {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return Err(if self.tx.is_closed() {
                Refused::Closed(payload)
            } else {
                Refused::OverBudget(payload)
            });
        }
        self.tx.try_send(payload).map_err(|e| {
            self.queued_bytes.fetch_sub(len, Relaxed);
            if take_budget {
                self.budget.give_back(len);
            }
            match e {
                SendError::Full(p) => Refused::Full(p),
                SendError::Closed(p) => Refused::Closed(p),
            }
        })
    }

    fn refused(&self, payload: Out) -> Refused {
        if self.tx.is_closed() {
            Refused::Closed(payload)
        } else {
            Refused::Full(payload)
        }
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Relaxed);
    }

    /// Whether a `/queue` rotation should pass this worker over rather than
    /// wait for its turn: its writer is stuck on the socket, or it is gone.
    pub fn passed_over(&self) -> bool {
        self.blocked.load(Relaxed) || self.tx.is_closed()
    }

    /// Called for what leaves the queue other than to be written.
    pub fn taken(&self, bytes: usize) {
        self.taken_to_write(bytes);
        self.written(bytes);
    }

    /// Called by the writer for what it moved off the queue to write: room
    /// in the queue, while the bytes stay in the budget until
    /// [`written`](Self::written) (a writer stuck on its socket holds them:
    /// 32 subscribers that never read held 68 MiB past an 8 MiB budget when
    /// they were given back here).
    pub fn taken_to_write(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Relaxed);
    }

    /// Called by the writer for what it holds no longer: written, or handed
    /// on when it ends.
    pub fn written(&self, bytes: usize) {
        self.budget.give_back(bytes);
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Records one message lost to a full queue; returns how many to report when
    /// it is time to log (at most once a second per subscriber), else `None`.
    pub fn note_drop(&self) -> Option<u64> {
        self.drop_log.due(self.born)
    }

    /// Losses held back by [`note_drop`](Self::note_drop) for a second or
    /// more with no new one to say them: the sweeper says them.
    pub fn drops_due(&self) -> Option<u64> {
        self.drop_log.due_idle(self.born)
    }

    /// What the slow-consumer lines count: losses to a full send queue or to
    /// the memory budget (not what was queued when it left).
    pub fn overflow_drops(&self) -> u64 {
        use super::stats::DropReason;
        self.stats.dropped.get(DropReason::QueueFull)
            + self.stats.dropped.get(DropReason::MemoryLimit)
    }

    /// Losses recorded by [`note_drop`](Self::note_drop) that no line has
    /// reported yet: said when the subscriber goes, so the lines add up.
    pub fn unlogged_drops(&self) -> u64 {
        self.drop_log.take()
    }

    /// Records why the connection ends; the first reason given wins.
    pub fn set_end_reason(&self, reason: EndReason) {
        let mut r = lock(&self.end_reason);
        if r.is_none() {
            *r = Some(reason);
        }
    }

    pub fn end_reason(&self) -> EndReason {
        lock(&self.end_reason).clone().unwrap_or(EndReason::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn out(m: &'static [u8]) -> Out {
        Out::plain(Bytes::from_static(m), 1)
    }

    fn sub(capacity: usize, max_bytes: usize) -> (Conn, send_queue::Receiver<Out>) {
        sub_in(capacity, max_bytes, Arc::new(Budget::new(usize::MAX / 2)))
    }

    fn sub_in(
        capacity: usize,
        max_bytes: usize,
        budget: Arc<Budget>,
    ) -> (Conn, send_queue::Receiver<Out>) {
        let (tx, rx) = send_queue::channel(capacity);
        let peer = "127.0.0.1:1".parse().unwrap();
        let s = Conn::new(
            1,
            peer,
            tx,
            max_bytes,
            budget,
            Arc::default(),
            CancellationToken::new(),
        );
        (s, rx)
    }

    #[test]
    fn queue_is_full_at_the_byte_bound() {
        let (s, mut rx) = sub(100, 10);
        assert!(s.offer(out(b"123456")).is_ok());
        assert!(matches!(s.offer(out(b"abcdef")), Err(Refused::Full(_))));
        let m = rx.try_recv().unwrap();
        s.taken(m.len());
        assert!(s.offer(out(b"abcdef")).is_ok());
    }

    #[test]
    fn queue_is_full_at_the_message_bound() {
        let (s, _rx) = sub(2, 1 << 20);
        assert!(s.offer(out(b"a")).is_ok());
        assert!(s.offer(out(b"b")).is_ok());
        assert!(matches!(s.offer(out(b"c")), Err(Refused::Full(_))));
    }

    #[test]
    fn one_oversized_message_still_reaches_an_idle_subscriber() {
        let (s, _rx) = sub(10, 4);
        assert!(s.offer(out(b"far too big")).is_ok());
        assert!(s.offer(out(b"x")).is_err());
    }

    #[test]
    fn a_gone_subscriber_is_reported_closed() {
        let (s, rx) = sub(10, 100);
        drop(rx);
        assert!(matches!(s.offer(out(b"x")), Err(Refused::Closed(_))));
    }

    #[test]
    fn subscribers_share_the_memory_budget() {
        let budget = Arc::new(Budget::new(10));
        let (a, mut rx_a) = sub_in(100, 100, budget.clone());
        let (b, _rx_b) = sub_in(100, 100, budget.clone());
        assert!(a.offer(out(b"12345678")).is_ok());
        assert!(matches!(b.offer(out(b"abc")), Err(Refused::OverBudget(_))));
        let m = rx_a.try_recv().unwrap();
        a.taken(m.len());
        assert_eq!(budget.used(), 0);
        assert!(b.offer(out(b"abc")).is_ok());
    }
}
