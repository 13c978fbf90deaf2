//! A subscription: one connection's place on one channel, and, for a `/queue`
//! worker whose channel is stored elsewhere, the deliveries written to it that
//! the store still waits to hear about.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::conn::{Conn, Refused};
use super::delivery::{DeliveryId, Out};
use super::lock;
use super::router::{Channel, Kind};
use super::store::{Delivery, Part};

/// How a connection names a subscription.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// The connection's own number for it, which its send queue's items
    /// carry (never [`CONTROL`](super::delivery::CONTROL)); under protocol v1, 1.
    pub local: u32,
    /// The client's subscription id (protocol v2; 0 under v1).
    pub sid: u32,
    /// Messages lost to it are reported to the client (`LOST`, protocol v2).
    pub report_loss: bool,
}

impl Ids {
    /// A protocol v1 connection's one subscription.
    pub const V1: Ids = Ids {
        local: 1,
        sid: 0,
        report_loss: false,
    };
}

/// Messages a subscription lost that its client has not been told of yet.
#[derive(Default)]
struct Lost {
    count: AtomicU64,
    /// When the first of them was lost (Unix time, ms).
    since_ms: AtomicU64,
    /// The reason code of the first of them.
    reason: std::sync::atomic::AtomicU8,
}

pub struct Subscription {
    /// The connection whose send queue its messages go to.
    pub conn: Arc<Conn>,
    pub channel: Arc<Channel>,
    pub ids: Ids,
    /// What only a protocol v2 subscription holds (one word for a v1 one).
    v2: Option<Box<V2Extra>>,
    /// Stored messages queued for this worker, by delivery number (so oldest
    /// first), settled once written to its socket (see
    /// [`written`](Self::written)).
    in_flight: Mutex<VecDeque<InFlight>>,
    /// Its length, so that the writer of a worker with nothing stored in
    /// flight (every worker of a memory-backed channel) never takes the lock.
    in_flight_len: AtomicUsize,
    /// A `/queue` worker's turns that went to others while it was passed
    /// over, owed back to it (changed under its channel's lock only).
    owed: std::sync::atomic::AtomicU32,
}

/// A protocol v2 subscription's own state.
#[derive(Default)]
struct V2Extra {
    /// Set when the client asked to hear about losses.
    lost: Option<Lost>,
    /// A `/queue` worker's own bound on the messages queued for it (its
    /// prefetch), as it shares its connection's send queue with other
    /// subscriptions; and how many are queued for it now.
    /// (For an acknowledging worker, its credit: held until answered.)
    prefetch: Option<(AtomicUsize, AtomicUsize)>,
    /// Bytes of the memory budget it holds, given back when it goes.
    charged: AtomicUsize,
    /// Set for a worker that acknowledges its deliveries: what it is held to.
    acks: Option<super::policy::AckPolicy>,
    /// A `/topic` subscription whose channel bounds its subscribers' queues
    /// tighter than its connection's send queue (sized by the defaults: a
    /// connection may hold several subscriptions): its own bound.
    topic_bound: Option<TopicBound>,
}

/// Messages and payload bytes a subscription may have queued at once, and
/// how many it has.
#[derive(Default)]
struct TopicBound {
    max_messages: usize,
    max_bytes: usize,
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.give_back_budget();
    }
}

impl Subscription {
    /// Gives back the budget it holds, now (an unsubscribe: the writer may
    /// hold it a little longer, until its `ENDED` is written).
    pub fn give_back_budget(&self) {
        let n = self.v2.as_ref().map_or(0, |v| v.charged.swap(0, Relaxed));
        if n > 0 {
            self.conn.give_back_budget(n);
        }
    }
}

/// What a protocol v2 subscription costs the memory budget: the
/// subscription and its place on its channel, its name, and the
/// connection's table entry for it.
pub fn cost(channel: &[u8]) -> usize {
    std::mem::size_of::<Subscription>() + channel.len() + 128
}

/// A stored message in a worker's send queue.
struct InFlight {
    seq: u64,
    part: Part,
    delivery: Delivery,
}

impl Subscription {
    pub fn new(conn: Arc<Conn>, channel: Arc<Channel>, ids: Ids) -> Self {
        Self {
            conn,
            channel,
            ids,
            v2: ids.report_loss.then(|| {
                Box::new(V2Extra {
                    lost: Some(Lost::default()),
                    ..V2Extra::default()
                })
            }),
            in_flight: Mutex::new(VecDeque::new()),
            in_flight_len: AtomicUsize::new(0),
            owed: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Queues a stored message for this worker (numbered `id` by its
    /// channel); the store hears of it once it is written. Registered before
    /// it is queued, so the writer cannot write it unseen; taken back if the
    /// queue refuses it.
    pub fn offer_delivery(
        &self,
        part: Part,
        id: DeliveryId,
        delivery: Delivery,
    ) -> Result<(), (Refused, Delivery)> {
        {
            let mut in_flight = lock(&self.in_flight);
            in_flight.push_back(InFlight {
                seq: id.seq(),
                part: part.clone(),
                delivery,
            });
            self.in_flight_len.store(in_flight.len(), Relaxed);
        }
        let m = Out {
            payload: part.bytes,
            delivery: Some(id),
            sub: self.ids.local,
            head: part.head,
        };
        // Counted before it is queued (see offer_work).
        self.queued(1);
        match self.conn.offer(m) {
            Ok(()) => Ok(()),
            Err(refused) => {
                self.settled(1);
                let mut in_flight = lock(&self.in_flight);
                // The newest: numbers rise, and nothing else removes an
                // entry the writer has not seen.
                let taken = match in_flight.back() {
                    Some(u) if u.seq == id.seq() => in_flight.pop_back(),
                    _ => None,
                };
                self.in_flight_len.store(in_flight.len(), Relaxed);
                match taken {
                    Some(u) => Err((refused, u.delivery)),
                    None => Ok(()),
                }
            }
        }
    }

    /// Bounds the messages queued for this `/queue` worker to `n`, as its own
    /// send queue's capacity does under protocol v1: a v2 connection's send
    /// queue is sized for `/topic` fan-out, and a worker that could take
    /// thousands would be handed messages one at a time as they come, each
    /// write carrying a few, where a bounded one takes them from the backlog
    /// by the batch.
    pub fn with_prefetch(mut self, n: usize) -> Self {
        self.v2.get_or_insert_with(Box::default).prefetch =
            Some((AtomicUsize::new(n.max(1)), AtomicUsize::new(0)));
        self
    }

    /// A worker that acknowledges its deliveries, under `policy`, holding at
    /// most `credit` unanswered (queued or written).
    pub fn with_acks(mut self, policy: super::policy::AckPolicy, credit: usize) -> Self {
        let extra = self.v2.get_or_insert_with(Box::default);
        extra.acks = Some(policy);
        extra.prefetch = Some((AtomicUsize::new(credit), AtomicUsize::new(0)));
        self
    }

    /// It holds `n` bytes of its connection's budget, given back when it goes.
    pub fn charged(mut self, n: usize) -> Self {
        if n > 0 {
            self.v2.get_or_insert_with(Box::default).charged = AtomicUsize::new(n);
        }
        self
    }

    /// Messages it may be handed now.
    pub fn room(&self) -> usize {
        let room = self.conn.room();
        match self.v2.as_ref().and_then(|v| v.prefetch.as_ref()) {
            Some((n, queued)) => room.min(n.load(Relaxed).saturating_sub(queued.load(Relaxed))),
            None => room,
        }
    }

    /// Its turn goes to the next worker: its writer is stuck on the socket,
    /// or it acknowledges and holds all its credit (it may never answer:
    /// its turn is not kept for it, as it is for a worker whose writer is
    /// simply busy).
    pub fn passed_over(&self) -> bool {
        self.conn.passed_over() || (self.acks().is_some() && self.room() == 0)
    }

    /// Turns owed to it.
    #[cfg(test)]
    pub fn owed(&self) -> u32 {
        self.owed.load(Relaxed)
    }

    /// Its turn went to another worker: owed to it, up to `max`.
    pub fn owe_turn(&self, max: u32) {
        let n = self.owed.load(Relaxed);
        self.owed.store((n + 1).min(max), Relaxed);
    }

    /// Takes one turn it is owed, if any; true if it had one.
    pub fn repay_turn(&self) -> bool {
        let n = self.owed.load(Relaxed);
        if n > 0 {
            self.owed.store(n - 1, Relaxed);
        }
        n > 0
    }

    /// What it is held to when it acknowledges its deliveries.
    pub fn acks(&self) -> Option<&super::policy::AckPolicy> {
        self.v2.as_ref().and_then(|v| v.acks.as_ref())
    }

    /// Its credit (or prefetch) is now `n`; false when it has none to set.
    pub fn set_credit(&self, n: usize) -> bool {
        match self.v2.as_ref().and_then(|v| v.prefetch.as_ref()) {
            Some((credit, _)) => {
                credit.store(n, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Its credit (or prefetch), and how much of it is used.
    pub fn credit(&self) -> Option<(usize, usize)> {
        self.v2
            .as_ref()
            .and_then(|v| v.prefetch.as_ref())
            .map(|(n, q)| (n.load(Relaxed), q.load(Relaxed)))
    }

    /// `n` of its held deliveries were answered (or given back): room for more.
    pub fn settled(&self, n: usize) {
        if let Some((_, queued)) = self.v2.as_ref().and_then(|v| v.prefetch.as_ref()) {
            let _ = queued.fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(n)));
        }
    }

    /// `n` more messages queued for it (a `/queue` worker with a prefetch).
    fn queued(&self, n: usize) {
        if let Some((_, queued)) = self.v2.as_ref().and_then(|v| v.prefetch.as_ref()) {
            queued.fetch_add(n, Relaxed);
        }
    }

    /// Its writer took `n` of its messages off the send queue (an
    /// acknowledging worker's still count against its credit, until answered).
    pub fn taken(&self, n: usize, bytes: usize) {
        if let Some(bound) = self.v2.as_ref().and_then(|v| v.topic_bound.as_ref()) {
            let _ = bound
                .messages
                .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(n)));
            let _ = bound
                .bytes
                .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(bytes)));
            return;
        }
        if self.acks().is_some() {
            return;
        }
        if let Some((_, queued)) = self.v2.as_ref().and_then(|v| v.prefetch.as_ref()) {
            let _ = queued.fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(n)));
        }
    }

    /// Queues a `/queue` delivery for it (see [`room`](Self::room)).
    pub fn offer_work(&self, m: Out, held: bool) -> Result<(), Refused> {
        // Counted before it is queued: once queued, its writer may take it
        // (and count it taken) before this thread counted it queued, and a
        // count that went below zero and back would leave one behind each
        // time, until the worker had no room for good (seen: a v2 /queue
        // throughput run stalled after 220,000 deliveries).
        self.queued(1);
        let offered = if held {
            self.conn.offer_held(m)
        } else {
            self.conn.offer(m)
        };
        if offered.is_err() {
            self.settled(1);
        }
        offered
    }

    /// [`offer_work`](Self::offer_work) for messages from the backlog, all
    /// at once (see [`Conn::offer_held_batch`]); what was not queued stays
    /// in `batch`.
    pub fn offer_work_batch(&self, batch: &mut Vec<Out>, bytes: usize) {
        // Counted before they are queued, as one message is.
        self.queued(batch.len());
        self.conn.offer_held_batch(batch, bytes);
        if !batch.is_empty() {
            self.settled(batch.len());
        }
    }

    /// Queues `/topic` messages for it as far as they fit whole (see
    /// [`Conn::offer_batch`]); none when it has a bound of its own, which
    /// [`offer`](Self::offer) keeps one message at a time.
    pub fn offer_batch(&self, batch: &[(Bytes, u16)], bytes: usize) -> usize {
        if self.v2.as_ref().is_some_and(|v| v.topic_bound.is_some()) {
            return 0;
        }
        self.conn.offer_batch(batch, bytes, self.ids.local)
    }

    /// Queues a `/topic` message for it (`head`: bytes of header block in
    /// front of the payload).
    pub fn offer(&self, payload: Bytes, head: u16) -> Result<(), Refused> {
        let Some(bound) = self.v2.as_ref().and_then(|v| v.topic_bound.as_ref()) else {
            return self
                .conn
                .offer(Out::with_head(payload, self.ids.local, head));
        };
        let len = payload.len();
        // As the send queue does: one message always fits.
        let messages = bound.messages.fetch_add(1, Relaxed);
        let bytes = bound.bytes.fetch_add(len, Relaxed);
        let offered =
            if messages >= bound.max_messages || (bytes > 0 && bytes + len > bound.max_bytes) {
                Err(Refused::Full(Out::with_head(payload, self.ids.local, head)))
            } else {
                self.conn
                    .offer(Out::with_head(payload, self.ids.local, head))
            };
        if offered.is_err() {
            bound.messages.fetch_sub(1, Relaxed);
            bound.bytes.fetch_sub(len, Relaxed);
        }
        offered
    }

    /// Its own bound on queued messages and bytes, where its channel sets
    /// one tighter than its connection's.
    pub fn topic_bound(&self) -> Option<(usize, usize)> {
        self.v2
            .as_ref()
            .and_then(|v| v.topic_bound.as_ref())
            .map(|b| (b.max_messages, b.max_bytes))
    }

    /// Bounds this `/topic` subscription's queued messages to `messages`
    /// and `bytes` (its channel's policy, where tighter than its connection's).
    pub fn with_topic_bound(mut self, messages: usize, bytes: usize) -> Self {
        self.v2.get_or_insert_with(Box::default).topic_bound = Some(TopicBound {
            max_messages: messages.max(1),
            max_bytes: bytes.max(1),
            ..TopicBound::default()
        });
        self
    }

    /// Records `n` messages lost for `reason` (a protocol v2 reason code),
    /// for the client to be told when it asked to be.
    pub fn note_lost(&self, n: u64, reason: u8) {
        let Some(lost) = self.v2.as_ref().and_then(|v| v.lost.as_ref()) else {
            return;
        };
        if lost.count.fetch_add(n, Relaxed) == 0 {
            lost.since_ms.store(super::held::now_ms(), Relaxed);
            lost.reason.store(reason, Relaxed);
        }
        self.conn.note_lost();
    }

    /// Takes what it lost since the last call: (count, reason, since ms).
    pub fn take_lost(&self) -> Option<(u64, u8, u64)> {
        let lost = self.v2.as_ref()?.lost.as_ref()?;
        if lost.count.load(Relaxed) == 0 {
            return None;
        }
        // Read before the count is taken: a loss that lands in between is
        // then counted in this report or the next, never in neither.
        let since = lost.since_ms.load(Relaxed);
        let reason = lost.reason.load(Relaxed);
        let n = lost.count.swap(0, Relaxed);
        (n > 0).then_some((n, reason, since))
    }

    /// The stored messages among `batch`, which was just written: they are
    /// due their settlement.
    pub fn written(&self, batch: &[Out]) -> Vec<Delivery> {
        if self.in_flight_len.load(Relaxed) == 0 {
            return self.redelivered_written(batch);
        }
        let mut in_flight = lock(&self.in_flight);
        let mut due = Vec::new();
        // Both in delivery order: the table's front is the next one written.
        for id in batch.iter().filter_map(|m| m.delivery) {
            if in_flight.front().is_some_and(|u| u.seq == id.seq()) {
                if let Some(u) = in_flight.pop_front() {
                    due.push((u.seq, u.delivery));
                }
            }
        }
        self.in_flight_len.store(in_flight.len(), Relaxed);
        drop(in_flight);
        // An acknowledging worker's are settled by its answer, not by the write.
        if let (Some(_), Kind::Queue(q)) = (self.acks(), &self.channel.kind) {
            q.keep_stored(due);
            return Vec::new();
        }
        let mut due: Vec<Delivery> = due.into_iter().map(|(_, d)| d).collect();
        due.extend(self.redelivered_written(batch));
        due
    }

    /// Jobs an acknowledging worker gave back, redelivered from the backlog
    /// to this worker: if it does not acknowledge, their stored messages are
    /// settled by the write.
    fn redelivered_written(&self, batch: &[Out]) -> Vec<Delivery> {
        match &self.channel.kind {
            Kind::Queue(q) if self.acks().is_none() && q.holds_stored() => q.take_stored(
                batch
                    .iter()
                    .filter(|m| m.attempt().get() > 1)
                    .filter_map(|m| m.delivery.map(|d| d.seq())),
            ),
            _ => Vec::new(),
        }
    }

    /// Splits what this worker leaves unsent into messages of this broker's
    /// memory (returned first) and stored ones, which go back to their store
    /// (returned second) rather than to this broker's backlog.
    pub fn unwritten(&self, unsent: Vec<Out>) -> (Vec<Out>, Vec<(Delivery, Part)>) {
        if self.in_flight_len.load(Relaxed) == 0 {
            return (unsent, Vec::new());
        }
        let mut in_flight = lock(&self.in_flight);
        // Once per connection: a set rather than a search in order, which
        // numbers starting again at 1 would break.
        let stored: HashSet<u64> = in_flight.iter().map(|u| u.seq).collect();
        let local = unsent
            .into_iter()
            .filter(|m| m.delivery.is_none_or(|id| !stored.contains(&id.seq())))
            .collect();
        let back = in_flight.drain(..).map(|u| (u.delivery, u.part)).collect();
        self.in_flight_len.store(0, Relaxed);
        (local, back)
    }
}
