//! `/queue` channels: each message to exactly one worker, round robin, skipping
//! workers whose send queue is full; a bounded backlog when none has room; and
//! back-pressure on the publisher when the backlog is full. Nothing is dropped
//! for being slow; a backlog with no worker can be evicted whole (counted) or
//! expire (`--backlog-ttl`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lock;
use tokio::sync::Notify;

use super::budget::Budget;
use super::conn::Refused;
use super::delivery::{DeliveryId, Numbering, Out};
use super::router::{Channel, Kind};
use super::store::disk::{record, Disk, Loc};
use super::store::{Delivery, Part};
use super::subscription::Subscription;

/// The channel was retired from the registry (a `/queue` or a `/topic`
/// one); look it up again.
#[derive(Debug)]
pub struct Retired;

/// What [`QueueState::try_publish`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A worker or the backlog has it.
    Taken,
    /// The backlog is full: wait for room.
    Full,
    /// The broker's memory budget is spent: wait for room there.
    OverBudget,
    /// The durable store has more gathered than the disk took: wait for it.
    StoreFull,
    /// The durable store holds `--max-disk`: wait, or refuse (protocol 2).
    DiskFull,
}

/// A durable channel's place in the store: its messages are appended there
/// as they are published and settled there when done with.
pub struct ChannelLog {
    pub disk: Arc<Disk>,
    pub name: Bytes,
    /// Its publishes are confirmed once synced (its fsync is `always`),
    /// not once written.
    pub sync: bool,
    /// The log position at the end of its last publish's record: what a
    /// confirm for it waits for (not everything appended since).
    pub last_end: AtomicU64,
    /// Payload bytes it may keep stored (0: no bound but the store's).
    pub max_bytes: u64,
    /// The channel, for the task that reads its backlog back from disk.
    channel: std::sync::OnceLock<std::sync::Weak<Channel>>,
}

impl ChannelLog {
    pub fn new(disk: Arc<Disk>, name: Bytes, sync: bool, max_bytes: Option<usize>) -> Self {
        Self {
            disk,
            name,
            sync,
            max_bytes: max_bytes.unwrap_or(0) as u64,
            last_end: AtomicU64::new(0),
            channel: std::sync::OnceLock::new(),
        }
    }

    /// Once the channel is made: who its read-back task works for.
    pub fn set_channel(&self, channel: std::sync::Weak<Channel>) {
        let _ = self.channel.set(channel);
    }
}

/// A message of a durable channel kept on disk only: past the memory
/// window, read back when the backlog in memory runs low (its place in
/// the log, in a [`SpillIndex`]).
use super::spill_index::{SpillIndex, Spilled};

impl Spilled {
    fn loc(&self) -> Loc {
        Loc {
            segment: u64::from(self.segment),
            offset: self.offset,
            len: self.len,
        }
    }

    /// Its payload's length, from its record's.
    fn size(&self) -> usize {
        (self.len as usize).saturating_sub(record::PUB_OVERHEAD)
    }
}

/// What a read back from disk came to.
enum Took {
    /// What it read is in the backlog.
    All,
    /// The broker's memory budget stopped it at a message of this size.
    OverBudget(usize),
    /// A read failed.
    Failed(String),
}

/// Messages read back from disk at a time, at most. Each batch is a hop to
/// a blocking thread and back: at 1,024 those hops were a tenth of a
/// durable `/queue`'s broker CPU when its backlog was read back.
const READ_BATCH: usize = 8192;

impl ChannelLog {
    /// The messages of `done` (this channel's deliveries) are done with.
    pub fn settle<'a>(&self, done: impl IntoIterator<Item = &'a Out>) {
        let done: Vec<(u64, usize)> = done
            .into_iter()
            .filter_map(|m| Some((m.delivery?.seq(), m.len())))
            .collect();
        self.disk.settle(&self.name, &done);
    }
}

pub struct QueueState {
    inner: Mutex<Inner>,
    /// Woken whenever the backlog shrinks, for publishers waiting for room.
    space: Notify,
    /// Mirror of the backlog's length, so workers can skip the lock when it is 0.
    backlog_len: AtomicUsize,
    /// Messages the backlog holds at most; a reload may change it.
    capacity: AtomicUsize,
    /// Payload bytes the backlog holds at most (one message always fits).
    max_bytes: AtomicUsize,
    budget: Arc<Budget>,
    /// Set by a cluster puller waiting for worker room; whoever makes room
    /// (a writer taking messages, a worker joining or leaving) wakes it.
    room_wanted: AtomicBool,
    room: Notify,
    /// Where a durable channel's messages are kept besides memory.
    log: Option<Box<ChannelLog>>,
    /// Entries in [`Redo::stored`], so that a write skips the lock when none.
    stored_len: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    workers: Vec<Arc<Subscription>>,
    next: usize,
    /// Numbers each message handed to a worker.
    numbering: Numbering,
    /// Messages no worker has taken yet, oldest first, each with its last
    /// delivery if it had one (handed to a worker that left before writing
    /// it): its next keeps the attempt.
    backlog: VecDeque<Out>,
    /// Payload bytes in `backlog`.
    bytes: usize,
    /// Bytes of places `backlog` has room for, counted in the budget (see
    /// [`QueueState::publish_len`]).
    places: usize,
    /// A durable channel's messages past the memory window, oldest first:
    /// all of them newer than the backlog's (but for redeliveries).
    spilled: SpillIndex,
    spilled_bytes: usize,
    /// A task is reading `spilled` back.
    reading: bool,
    /// Raised whenever `spilled` is emptied other than by reading it back:
    /// a read in flight then brings nothing in.
    spill_gen: u64,
    /// What only a channel with acknowledging workers needs (boxed: every
    /// channel carries the field, most never use it).
    redo: Option<Box<Redo>>,
    /// Since when the channel has had no worker (`None` while it has one).
    workerless_since: Option<std::time::Instant>,
    /// Workers taken off the rotation that may still hand messages back (they
    /// said goodbye and are being sent what they were owed). The channel stays
    /// alive until they are gone, so what they hand back has a home.
    draining: usize,
    retired: bool,
}

#[derive(Default)]
struct Redo {
    /// Messages given back after they were written to an acknowledging
    /// worker, by their number (kept across deliveries): how often they
    /// failed and when they were first delivered. Dropped once acknowledged
    /// or dead-lettered.
    history: std::collections::HashMap<u64, History>,
    /// Failed messages waiting out their delay before redelivery, with when.
    delayed: Vec<(std::time::Instant, Out)>,
    /// In a cluster: the JetStream messages of deliveries written to
    /// acknowledging workers, by number, until the worker's answer is final
    /// (acknowledged, or dead-lettered): JetStream is not answered before,
    /// so that neither the worker's death nor this broker's loses the job.
    stored: std::collections::HashMap<u64, Delivery>,
}

/// What a channel remembers of a message given back by an acknowledging worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Deliveries that failed (a `NAK`, an ack wait run out).
    pub failures: u32,
    /// When it was first delivered (Unix time, ms).
    pub first_ms: u64,
}

/// Turns a `/queue` worker may be owed at most. Bounds how long a worker
/// back from a long stall keeps the turn; measured at 4,096 the least share
/// of four equal workers in a 200,000-message run was no better than
/// without owed turns (0.226 against 0.224, medians of 10), at 65,536 it
/// was 0.249.
const OWED_MAX: u32 = 65_536;

/// Places an empty backlog keeps for the next message (more are given back).
const KEEP_PLACES: usize = 64;

/// What a worker did with its turn in [`Inner::rotate`].
enum Turn {
    Took,
    /// Not taken: the rotation moves past it only when it is passed over.
    Refused {
        passed_over: bool,
    },
    /// Nobody can take it now (the broker's memory budget).
    Stop,
}

impl Inner {
    /// Nothing is left that could still come to a worker.
    fn idle(&self) -> bool {
        self.workers.is_empty()
            && self.draining == 0
            && self.backlog.is_empty()
            && self.spilled.is_empty()
            && self.redo.as_ref().is_none_or(|r| r.delayed.is_empty())
    }

    /// Offers `item` to the next worker in the rotation, which moves on when
    /// it takes it. A worker with no room keeps its turn (the message waits in
    /// the backlog until its writer takes what it has: equal workers get equal
    /// shares) unless its writer is stuck on the socket or it is gone: then
    /// the next one is offered it (a slow worker never holds the others up),
    /// and the turn it lost is owed to it: once it has room again it keeps
    /// the turn for as many messages as it is owed. (A worker passed over
    /// while the scheduler ran others for a few milliseconds otherwise ended
    /// a run with a fifth of the messages where its peers had 0.27.)
    /// Gives it back if no worker takes it.
    fn round_robin<T>(
        &mut self,
        item: T,
        mut offer: impl FnMut(&Subscription, T) -> Result<(), (T, bool)>,
    ) -> Result<(), T> {
        let mut item = Some(item);
        self.rotate(|w, _| {
            // A full queue is seen with one load, not by counting and
            // undoing an offer it would refuse.
            if w.room() > 0 {
                let Some(it) = item.take() else {
                    return Turn::Stop;
                };
                match offer(w, it) {
                    Ok(()) => return Turn::Took,
                    // The broker's memory, not this worker: none can take it.
                    Err((back, true)) => {
                        item = Some(back);
                        return Turn::Stop;
                    }
                    Err((back, false)) => item = Some(back),
                }
            }
            Turn::Refused {
                passed_over: w.passed_over(),
            }
        });
        match item {
            None => Ok(()),
            Some(back) => Err(back),
        }
    }

    /// The rotation's one step, as [`round_robin`](Self::round_robin)
    /// describes it: `take` is asked for each worker from the one whose turn
    /// it is; the first that takes moves the turn on (or keeps it, when it is
    /// owed turns), and those passed over before it are owed one. Returns
    /// the worker that took, by index.
    fn rotate(&mut self, mut take: impl FnMut(&Subscription, usize) -> Turn) -> Option<usize> {
        let n = self.workers.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            match take(&self.workers[i], i) {
                Turn::Took => {
                    // Those before it in the rotation were passed over for
                    // another worker: owed to them.
                    for j in 0..k {
                        self.workers[(self.next + j) % n].owe_turn(OWED_MAX);
                    }
                    self.next = if self.workers[i].repay_turn() {
                        i
                    } else {
                        (i + 1) % n
                    };
                    return Some(i);
                }
                Turn::Stop => return None,
                Turn::Refused { passed_over: true } => {}
                Turn::Refused { passed_over: false } => {
                    self.next = i;
                    return None;
                }
            }
        }
        None
    }

    /// Hands `m` to the next worker with room, as the channel's next
    /// delivery (the attempt it had: a message handed back unwritten was not
    /// delivered); gives it back if none has. The number is taken only when
    /// a worker takes it. `held`: the budget already counts its bytes (it
    /// comes from the backlog).
    fn dispatch(&mut self, m: Out, held: bool) -> Result<(), Out> {
        let (m, fresh) = self.with_id(m, 0);
        self.round_robin(m, |w, mut m| {
            m.sub = w.ids.local;
            w.offer_work(m, held)
                .map_err(Refused::into_message_and_budget)
        })
        .map_err(|mut back| {
            // Not taken: a number it was not given must not stick to it
            // (the next new message gets that number too).
            if fresh.is_some() {
                back.delivery = None;
            }
            back
        })?;
        if let Some(seq) = fresh {
            self.numbering.taken(seq);
        }
        Ok(())
    }

    /// Moves backlog to workers with room, oldest first; returns how many
    /// messages and bytes moved. Their bytes stay counted in the budget, now as
    /// the worker's rather than parked.
    ///
    /// Dealt as [`round_robin`](Self::round_robin) deals one message at a
    /// time, on the room each worker had when the deal began less what the
    /// deal gave it, then handed to each worker in one append: in a flood the
    /// backlog is never empty and every message comes this way, and one lock
    /// of a worker's send queue per message was a tenth of the broker's CPU.
    fn refill(&mut self) -> (usize, usize) {
        let n = self.workers.len();
        if n == 0 || self.backlog.is_empty() {
            return (0, 0);
        }
        let mut room: Vec<Room> = self.workers.iter().map(|w| Room::of(w)).collect();
        let mut dealt: Vec<Vec<Out>> = (0..n).map(|_| Vec::new()).collect();
        while let Some(len) = self.backlog.front().map(Out::len) {
            let took = self.rotate(|_, i| {
                if room[i].fits(len) {
                    room[i].take(len);
                    Turn::Took
                } else {
                    Turn::Refused {
                        passed_over: room[i].passed_over(),
                    }
                }
            });
            let Some(i) = took else { break };
            let Some(m) = self.backlog.pop_front() else {
                break;
            };
            let sub = self.workers[i].ids.local;
            let m = self.numbered(m, sub);
            dealt[i].push(m);
        }
        let (mut moved, mut bytes) = (0, 0);
        let mut back = Vec::new();
        for (i, mut mine) in dealt.into_iter().enumerate() {
            if mine.is_empty() {
                continue;
            }
            let len: usize = mine.iter().map(Out::len).sum();
            self.workers[i].offer_work_batch(&mut mine, len);
            let unsent: usize = mine.iter().map(Out::len).sum();
            moved += room[i].dealt - mine.len();
            bytes += len - unsent;
            back.append(&mut mine);
        }
        if !back.is_empty() {
            // Its queue filled from elsewhere meanwhile, or its writer left:
            // back to the front, oldest first, numbers kept (as a departing
            // worker's unsent messages are).
            back.sort_by_key(|m| m.delivery.map(DeliveryId::seq));
            for m in back.into_iter().rev() {
                self.backlog.push_front(m);
            }
        }
        self.bytes -= bytes;
        (moved, bytes)
    }

    /// `m` as the channel's next delivery to worker `sub`, its number taken.
    fn numbered(&mut self, m: Out, sub: u32) -> Out {
        let (m, fresh) = self.with_id(m, sub);
        if let Some(seq) = fresh {
            self.numbering.taken(seq);
        }
        m
    }

    /// `m` with its delivery's id, for worker `sub`: a message keeps its
    /// number and attempt from its first delivery on (what the channel
    /// remembers of it, its failures, is found by it); a new one gets the
    /// next number, returned when it is still to be taken.
    fn with_id(&self, m: Out, sub: u32) -> (Out, Option<std::num::NonZeroU64>) {
        let (seq, fresh) = match m.delivery {
            Some(d) => (
                std::num::NonZeroU64::new(d.seq()).unwrap_or(std::num::NonZeroU64::MIN),
                None,
            ),
            None => {
                let seq = self.numbering.peek();
                (seq, Some(seq))
            }
        };
        let m = Out {
            delivery: Some(DeliveryId::new(seq, m.attempt())),
            payload: m.payload,
            sub,
            head: m.head,
        };
        (m, fresh)
    }
}

/// What a worker can take, as [`Inner::refill`] sees it while it deals: its
/// room when the deal began, less what the deal gave it.
struct Room {
    messages: usize,
    queued_bytes: usize,
    max_bytes: usize,
    /// Passed over whatever its room: its writer is stuck or gone.
    stuck: bool,
    /// It acknowledges: passed over once it holds all its credit.
    acks: bool,
    dealt: usize,
}

impl Room {
    fn of(w: &Subscription) -> Self {
        let (queued_bytes, max_bytes) = w.conn.byte_room();
        Self {
            messages: if w.conn.is_closed() { 0 } else { w.room() },
            queued_bytes,
            max_bytes,
            stuck: w.conn.passed_over(),
            acks: w.acks().is_some(),
            dealt: 0,
        }
    }

    /// As [`Conn::offer_held`] would take it: one message always fits an
    /// empty send queue, whatever its size.
    fn fits(&self, len: usize) -> bool {
        self.messages > 0 && (self.queued_bytes == 0 || self.queued_bytes + len <= self.max_bytes)
    }

    fn take(&mut self, len: usize) {
        self.messages -= 1;
        self.queued_bytes += len;
        self.dealt += 1;
    }

    /// As [`Subscription::passed_over`] would say once it holds what it was dealt.
    fn passed_over(&self) -> bool {
        self.stuck || (self.acks && self.messages == 0)
    }
}

impl Drop for QueueState {
    fn drop(&mut self) {
        let inner = self
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.budget.remove_overhead(inner.places);
    }
}

impl QueueState {
    pub fn new(capacity: usize, max_bytes: usize, budget: Arc<Budget>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                workerless_since: Some(std::time::Instant::now()),
                ..Inner::default()
            }),
            space: Notify::new(),
            backlog_len: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity),
            max_bytes: AtomicUsize::new(max_bytes),
            budget,
            room_wanted: AtomicBool::new(false),
            room: Notify::new(),
            log: None,
            stored_len: AtomicUsize::new(0),
        }
    }

    /// A durable channel: every message is stored in `log` before a worker
    /// can have it, its numbers going on from the highest the store holds.
    pub fn durable(mut self, log: ChannelLog) -> Self {
        let last = log.disk.last_seq(&log.name);
        if let Some(n) = std::num::NonZeroU64::new(last) {
            lock(&self.inner).numbering.taken(n);
        }
        self.log = Some(Box::new(log));
        self
    }

    pub fn log(&self) -> Option<&ChannelLog> {
        self.log.as_deref()
    }

    /// New bounds (a reload). A backlog already past them keeps what it
    /// holds; publishers wait until it is back under.
    pub fn set_bounds(&self, capacity: usize, max_bytes: usize) {
        self.capacity.store(capacity.max(1), Relaxed);
        self.max_bytes.store(max_bytes.max(1), Relaxed);
        // Publishers waiting for room look again under the new bounds.
        self.space.notify_waiters();
    }

    fn room_changed(&self) {
        if self.room_wanted.load(Relaxed) && self.room_wanted.swap(false, Relaxed) {
            self.room.notify_one();
        }
    }

    pub fn worker_count(&self) -> usize {
        lock(&self.inner).workers.len()
    }

    /// Payload bytes of the backlog, in memory and (a durable channel's)
    /// on disk only.
    pub fn backlog_bytes(&self) -> usize {
        let inner = lock(&self.inner);
        inner.bytes + inner.spilled_bytes
    }

    /// Moves what workers have room for out of the backlog (see
    /// [`Inner::refill`]) and tells the budget; returns how many moved.
    fn refill_locked(&self, inner: &mut Inner) -> usize {
        let (moved, bytes) = inner.refill();
        self.budget.unpark(bytes);
        moved
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog_len.load(Relaxed)
    }

    /// Publishes the backlog's length (in memory and on disk only), which
    /// workers look at without the lock; and counts the places its buffer
    /// holds in the budget, as a send queue's are (a one-byte message takes a
    /// 48-byte place: 300 worker-less channels of 10,000 such messages held
    /// 198 MiB where the budget saw 3 MB). An emptied backlog gives a large
    /// buffer back.
    fn publish_len(&self, inner: &mut Inner) {
        self.backlog_len
            .store(inner.backlog.len() + inner.spilled.len(), Relaxed);
        if inner.backlog.is_empty() && inner.backlog.capacity() > KEEP_PLACES {
            inner.backlog = VecDeque::new();
        }
        let now = inner.backlog.capacity() * std::mem::size_of::<Out>();
        self.budget.recount_overhead(&mut inner.places, now);
    }

    /// Publishes the backlog's new length and wakes publishers waiting for room.
    fn after_change(&self, inner: &mut Inner, moved: usize) {
        self.publish_len(inner);
        self.want_read(inner);
        if moved > 0 {
            self.space.notify_waiters();
        }
    }

    pub fn add_worker(&self, sub: Arc<Subscription>) {
        let mut inner = lock(&self.inner);
        inner.workers.push(sub);
        inner.workerless_since = None;
        let moved = self.refill_locked(&mut inner);
        self.after_change(&mut inner, moved);
        self.room_changed();
    }

    /// Routes one message without waiting: to the next worker, or into the
    /// backlog. Order is kept: while a backlog exists, new messages join its
    /// tail.
    pub fn try_publish(&self, payload: &Bytes, head: u16) -> Result<Attempt, Retired> {
        self.place(payload, head, false)
    }

    /// [`try_publish`](Self::try_publish) for messages in a row, under one
    /// lock: those taken leave the front of `messages`; the rest stay, and
    /// the answer says why the first of them was not taken (`None`: all
    /// were).
    pub fn try_publish_batch(
        &self,
        messages: &mut Vec<(Bytes, u16)>,
    ) -> Result<Option<Attempt>, Retired> {
        let mut inner = lock(&self.inner);
        if inner.retired {
            return Err(Retired);
        }
        if let Some(why) = self.park_batch(&mut inner, messages) {
            return Ok(why);
        }
        let mut taken = 0;
        let mut why = None;
        for (payload, head) in messages.iter_mut() {
            match self.place_locked(&mut inner, std::mem::take(payload), *head, false) {
                Ok(()) => taken += 1,
                Err((attempt, back)) => {
                    *payload = back;
                    why = Some(attempt);
                    break;
                }
            }
        }
        drop(inner);
        messages.drain(..taken);
        Ok(why)
    }

    /// A flood's batch: behind a backlog in memory, the messages that fit
    /// its bounds join it with one take from the budget, where each on its
    /// own costs two of the broker's most contended atomic operations.
    /// `None` when this does not apply (no backlog, a durable channel, the
    /// budget short of the lot): then each message is placed on its own.
    fn park_batch(
        &self,
        inner: &mut Inner,
        messages: &mut Vec<(Bytes, u16)>,
    ) -> Option<Option<Attempt>> {
        if inner.backlog.is_empty() || self.log.is_some() {
            return None;
        }
        let room = self
            .capacity
            .load(Relaxed)
            .saturating_sub(inner.backlog.len());
        let max_bytes = self.max_bytes.load(Relaxed);
        let (mut n, mut bytes) = (0, 0);
        for (payload, _) in messages.iter().take(room) {
            if inner.bytes + bytes + payload.len() > max_bytes {
                break;
            }
            n += 1;
            bytes += payload.len();
        }
        // (try_park's one message let through when nothing is parked cannot
        // apply: the backlog's own bytes are.)
        if n > 0 && !self.budget.try_park(bytes) {
            return None;
        }
        inner.backlog.extend(
            messages
                .drain(..n)
                .map(|(payload, head)| Out::with_head(payload, 0, head)),
        );
        inner.bytes += bytes;
        self.publish_len(inner);
        Some((!messages.is_empty()).then_some(Attempt::Full))
    }

    /// [`try_publish`](Self::try_publish); `forced`: past the backlog's
    /// bounds and the budget (a dead letter, which never waits).
    #[inline]
    fn place(&self, payload: &Bytes, head: u16, forced: bool) -> Result<Attempt, Retired> {
        let mut inner = lock(&self.inner);
        if inner.retired {
            return Err(Retired);
        }
        Ok(
            match self.place_locked(&mut inner, payload.clone(), head, forced) {
                Ok(()) => Attempt::Taken,
                Err((attempt, _)) => attempt,
            },
        )
    }

    /// [`place`](Self::place) under the lock; gives the payload back with
    /// why it was not taken.
    #[inline]
    fn place_locked(
        &self,
        inner: &mut Inner,
        payload: Bytes,
        head: u16,
        forced: bool,
    ) -> Result<(), (Attempt, Bytes)> {
        let mut delivery = None;
        let mut spilled_at = None;
        if let Some(log) = &self.log {
            if !forced && log.disk.congested() {
                return Err((Attempt::StoreFull, payload));
            }
            if !forced && log.disk.full() {
                return Err((Attempt::DiskFull, payload));
            }
            // Numbered and stored before any worker can have it: its
            // settlement must follow it in the store.
            let seq = inner.numbering.peek();
            let bound = if forced { 0 } else { log.max_bytes };
            let Some((at, end)) =
                log.disk
                    .append(&log.name, seq.get(), head, &payload, log.sync, bound)
            else {
                return Err((Attempt::DiskFull, payload));
            };
            inner.numbering.taken(seq);
            delivery = Some(DeliveryId::new(seq, std::num::NonZeroU32::MIN));
            log.last_end.fetch_max(end, Relaxed);
            // Behind messages kept on disk only: on disk only too, in order.
            if !inner.spilled.is_empty() {
                Self::spill(inner, log.disk.dir(), seq.get(), at, end);
                self.publish_len(inner);
                return Ok(());
            }
            spilled_at = Some((at, end));
        }
        let len = payload.len();
        let mut out = Out::with_head(payload, 0, head);
        out.delivery = delivery;
        let out = if inner.backlog.is_empty() {
            match inner.dispatch(out, false) {
                Ok(()) => return Ok(()),
                Err(back) => back,
            }
        } else {
            out
        };
        if forced {
            self.budget.force_park(len);
        } else {
            let fits =
                inner.backlog.is_empty() || inner.bytes + len <= self.max_bytes.load(Relaxed);
            let refused = if inner.backlog.len() >= self.capacity.load(Relaxed) || !fits {
                Some(Attempt::Full)
            } else if !self.budget.try_park(len) {
                Some(Attempt::OverBudget)
            } else {
                None
            };
            if let Some(refused) = refused {
                // Past the memory window, a durable channel's message stays
                // on disk only.
                if let (Some((at, end)), Some(d)) = (spilled_at, out.delivery) {
                    let dir = self.log.as_ref().map(|l| l.disk.dir());
                    if let Some(dir) = dir {
                        Self::spill(inner, dir, d.seq(), at, end);
                    }
                    self.publish_len(inner);
                    return Ok(());
                }
                return Err((refused, out.payload));
            }
        }
        inner.bytes += len;
        inner.backlog.push_back(out);
        self.publish_len(inner);
        Ok(())
    }

    fn spill(inner: &mut Inner, dir: &std::path::Path, seq: u64, at: Loc, end: u64) {
        let m = Spilled {
            seq,
            end,
            segment: at.segment as u32,
            offset: at.offset,
            len: at.len,
            attempt: 1,
        };
        inner.spilled_bytes += m.size();
        inner.spilled.push_back(m, Some(dir));
    }

    /// Routes one message, waiting for backlog room when the backlog is full.
    pub async fn publish(&self, payload: Bytes, head: u16) -> Result<(), Retired> {
        loop {
            let room = self.space_notified();
            tokio::pin!(room);
            // Registered before the attempt, so a refill in between is not missed.
            room.as_mut().enable();
            match self.try_publish(&payload, head)? {
                Attempt::Taken => return Ok(()),
                why => self.wait_room_for(room, why, payload.len()).await,
            }
        }
    }

    /// Woken whenever the backlog shrinks: made (and enabled) before an
    /// attempt, then handed to [`wait_room_for`](Self::wait_room_for).
    pub fn space_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.space.notified()
    }

    /// Waits until a message of `len` bytes refused for `why` may be tried
    /// again: the backlog shrank (`room`), or what refused it has room.
    pub async fn wait_room_for(
        &self,
        room: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        why: Attempt,
        len: usize,
    ) {
        match why {
            Attempt::Taken => {}
            Attempt::Full => room.await,
            Attempt::StoreFull | Attempt::DiskFull => {
                if let Some(log) = self.log.as_deref() {
                    tokio::select! {
                        _ = room => {}
                        _ = log.disk.room(&log.name, log.max_bytes) => {}
                    }
                }
            }
            // The budget is shared with every other channel: bytes freed
            // there must wake this publisher too.
            Attempt::OverBudget => tokio::select! {
                _ = room => {}
                _ = self.budget.room_for_parking(len) => {}
            },
        }
    }

    /// Called by a worker's writer after it took messages off its send queue.
    pub fn refill(&self) {
        self.room_changed();
        if self.backlog_len.load(Relaxed) == 0 {
            return;
        }
        let mut inner = lock(&self.inner);
        let moved = self.refill_locked(&mut inner);
        self.after_change(&mut inner, moved);
    }

    /// Takes a worker off the rotation while it is sent what it is owed; its
    /// [`remove_worker`](Self::remove_worker) follows.
    pub fn stop_routing(&self, sub: &Arc<Subscription>) {
        let mut inner = lock(&self.inner);
        let before = inner.workers.len();
        inner.workers.retain(|w| !Arc::ptr_eq(w, sub));
        if inner.workers.len() < before {
            inner.draining += 1;
        }
        if inner.next >= inner.workers.len() {
            inner.next = 0;
        }
    }

    /// Removes a worker; `unsent` (its queued, unwritten messages, oldest first)
    /// go back to the front of the backlog and on to other workers. Returns true
    /// when the channel is now idle and has been retired.
    pub fn remove_worker(&self, sub: &Arc<Subscription>, unsent: Vec<Out>) -> bool {
        let mut inner = lock(&self.inner);
        let before = inner.workers.len();
        inner.workers.retain(|w| !Arc::ptr_eq(w, sub));
        if inner.workers.is_empty() && inner.workerless_since.is_none() {
            inner.workerless_since = Some(std::time::Instant::now());
        }
        if inner.workers.len() == before {
            // It had left the rotation already.
            inner.draining = inner.draining.saturating_sub(1);
        }
        if inner.next >= inner.workers.len() {
            inner.next = 0;
        }
        self.push_front(&mut inner, unsent);
        self.room_changed();
        if inner.idle() {
            inner.retired = true;
        }
        inner.retired
    }

    fn push_front(&self, inner: &mut Inner, unsent: Vec<Out>) {
        for m in unsent.into_iter().rev() {
            // Never dropped, so taken whatever the budget says.
            self.budget.force_park(m.len());
            inner.bytes += m.len();
            inner.backlog.push_front(m);
        }
        let moved = self.refill_locked(inner);
        self.after_change(inner, moved);
    }

    /// Empties a backlog that has had no worker for `ttl` (and no worker
    /// leaving, which may still hand messages back); returns how many
    /// messages it held.
    pub fn expire(&self, ttl: std::time::Duration) -> usize {
        let mut inner = lock(&self.inner);
        let stale = inner.draining == 0
            && inner.workers.is_empty()
            && inner.workerless_since.is_some_and(|t| t.elapsed() >= ttl);
        if !stale {
            return 0;
        }
        self.clear(&mut inner, true)
    }

    /// Empties and retires a channel with no worker and none leaving, to
    /// give its name to a subscription; how many messages it held. `None`
    /// when it has workers.
    pub fn evict(&self) -> Option<usize> {
        let mut inner = lock(&self.inner);
        if !inner.workers.is_empty() || inner.draining > 0 {
            return None;
        }
        inner.retired = true;
        let n = self.clear(&mut inner, true);
        // Publishers waiting for its room look the name up again.
        self.space.notify_waiters();
        Some(n)
    }

    /// Empties the backlog at shutdown; returns how many messages it held.
    pub fn discard_backlog(&self) -> usize {
        let mut inner = lock(&self.inner);
        self.clear(&mut inner, false)
    }

    /// Drops what the channel holds (`settle`: in its store too: a
    /// shutdown keeps a durable channel's messages there for the next start).
    fn clear(&self, inner: &mut Inner, settle: bool) -> usize {
        let redo = inner.redo.take().unwrap_or_default();
        let n = inner.backlog.len() + redo.delayed.len();
        let n = n + inner.spilled.len();
        if let Some(log) = self.log.as_ref().filter(|_| settle) {
            log.settle(
                inner
                    .backlog
                    .iter()
                    .chain(redo.delayed.iter().map(|(_, m)| m)),
            );
            let on_disk: Vec<(u64, usize)> = inner
                .spilled
                .drain_all()
                .iter()
                .map(|m| (m.seq, m.size()))
                .collect();
            log.disk.settle(&log.name, &on_disk);
        }
        inner.backlog.clear();
        inner.spilled.clear();
        inner.spilled_bytes = 0;
        inner.spill_gen += 1;
        let delayed: usize = redo.delayed.iter().map(|(_, m)| m.len()).sum();
        let bytes = std::mem::take(&mut inner.bytes) + delayed;
        self.budget.give_back_parked(bytes);
        self.after_change(inner, n);
        n
    }
}

/// For acknowledging workers: what failed comes back, after its delay, and
/// what failed too often leaves for the dead-letter channel.
impl QueueState {
    /// Records that message `seq`, first delivered at `first_ms`, came back
    /// from a worker (`failed`: counted as a failure); what the channel now
    /// knows of it.
    pub fn note(&self, seq: u64, first_ms: u64, failed: bool) -> History {
        let mut inner = lock(&self.inner);
        let h = inner
            .redo
            .get_or_insert_with(Box::default)
            .history
            .entry(seq)
            .or_insert(History {
                failures: 0,
                first_ms,
            });
        if failed {
            h.failures += 1;
        }
        *h
    }

    /// Forgets message `seq`: acknowledged, or dead-lettered.
    /// Deliveries of stored messages (see [`Redo::stored`]) written to an
    /// acknowledging worker: kept until their answer is final.
    pub fn keep_stored(&self, written: impl IntoIterator<Item = (u64, Delivery)>) {
        let mut inner = lock(&self.inner);
        let stored = &mut inner.redo.get_or_insert_with(Box::default).stored;
        stored.extend(written);
        self.stored_len.store(stored.len(), Relaxed);
    }

    /// Some delivery's stored message waits for a final answer.
    pub fn holds_stored(&self) -> bool {
        self.stored_len.load(Relaxed) > 0
    }

    /// The stored messages of deliveries `seqs`, whose answer is final:
    /// out of the table, for their store to settle.
    pub fn take_stored(&self, seqs: impl IntoIterator<Item = u64>) -> Vec<Delivery> {
        self.take_stored_by(seqs).into_values().collect()
    }

    /// [`take_stored`](Self::take_stored), by number.
    pub fn take_stored_by(
        &self,
        seqs: impl IntoIterator<Item = u64>,
    ) -> std::collections::HashMap<u64, Delivery> {
        let mut inner = lock(&self.inner);
        let Some(redo) = inner.redo.as_mut().filter(|r| !r.stored.is_empty()) else {
            return Default::default();
        };
        let taken = seqs
            .into_iter()
            .filter_map(|s| Some((s, redo.stored.remove(&s)?)))
            .collect();
        self.stored_len.store(redo.stored.len(), Relaxed);
        taken
    }

    pub fn forget(&self, seq: u64) {
        if let Some(r) = &mut lock(&self.inner).redo {
            r.history.remove(&seq);
        }
    }

    /// Puts back messages written to a worker and not done: ahead of every
    /// message not yet delivered, oldest first, at once or after `delay`.
    /// Gives them back when the channel is retired.
    pub fn redeliver(
        &self,
        mut back: Vec<Out>,
        delay: std::time::Duration,
    ) -> Result<(), Vec<Out>> {
        let mut inner = lock(&self.inner);
        if inner.retired {
            return Err(back);
        }
        back.sort_by_key(|m| m.delivery.map_or(0, DeliveryId::seq));
        if delay.is_zero() {
            self.push_front(&mut inner, back);
        } else {
            let due = std::time::Instant::now() + delay;
            for m in back {
                self.budget.force_park(m.len());
                inner
                    .redo
                    .get_or_insert_with(Box::default)
                    .delayed
                    .push((due, m));
            }
        }
        Ok(())
    }

    /// Moves delayed messages whose time has come to the front of the
    /// backlog; true while some still wait.
    pub fn release_due(&self, now: std::time::Instant) -> bool {
        let mut inner = lock(&self.inner);
        let Some(redo) = inner.redo.as_mut().filter(|r| !r.delayed.is_empty()) else {
            return false;
        };
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut redo.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        let left = !wait.is_empty();
        redo.delayed = wait;
        if !due.is_empty() {
            let mut due: Vec<Out> = due.into_iter().map(|(_, m)| m).collect();
            due.sort_by_key(|m| m.delivery.map_or(0, DeliveryId::seq));
            // Parked while they waited; push_front parks them again.
            self.budget.give_back_parked(due.iter().map(Out::len).sum());
            self.push_front(&mut inner, due);
        }
        left
    }

    /// Messages waiting out a delay.
    pub fn delayed_len(&self) -> usize {
        lock(&self.inner)
            .redo
            .as_ref()
            .map_or(0, |r| r.delayed.len())
    }

    /// Routes a dead letter: to a worker, or into the backlog past its
    /// bounds (a dead letter is never dropped, nor does it wait: it comes
    /// from a worker's answer, not from a publisher).
    pub fn force_publish(&self, payload: Bytes, head: u16) -> Result<(), Retired> {
        self.place(&payload, head, true).map(|_| ())
    }
}

/// For durable channels: the backlog past the memory window, read back from
/// disk ahead of the workers.
impl QueueState {
    /// Whether the backlog in memory is low enough to read more back: under
    /// half its bounds.
    fn wants_more(&self, inner: &Inner) -> bool {
        !inner.spilled.is_empty()
            && inner.backlog.len() < (self.capacity.load(Relaxed) / 2).max(1)
            && inner.bytes < (self.max_bytes.load(Relaxed) / 2).max(1)
    }

    /// Starts the read-back task when the backlog in memory runs low.
    fn want_read(&self, inner: &mut Inner) {
        if inner.reading || !self.wants_more(inner) {
            return;
        }
        let Some(channel) = self
            .log
            .as_ref()
            .and_then(|l| l.channel.get())
            .and_then(std::sync::Weak::upgrade)
        else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        inner.reading = true;
        rt.spawn(async move {
            if let Kind::Queue(q) = &channel.kind {
                q.read_back().await;
            }
        });
    }

    /// Reads messages kept on disk only back into the backlog, oldest
    /// first, until the window is half full or none is left.
    async fn read_back(&self) {
        let Some(log) = self.log.as_deref() else {
            return;
        };
        let mut failures = 0u32;
        loop {
            let (batch, gen) = {
                let mut inner = lock(&self.inner);
                if !self.wants_more(&inner) {
                    inner.reading = false;
                    return;
                }
                let room_n = self
                    .capacity
                    .load(Relaxed)
                    .saturating_sub(inner.backlog.len());
                let room_b = self.max_bytes.load(Relaxed).saturating_sub(inner.bytes);
                let mut bytes = 0;
                let batch: Vec<Spilled> = inner
                    .spilled
                    .iter()
                    .take(room_n.clamp(1, READ_BATCH))
                    .take_while(|m| {
                        bytes += m.size();
                        bytes <= room_b.max(m.size())
                    })
                    .copied()
                    .collect();
                (batch, inner.spill_gen)
            };
            let end = batch.iter().map(|m| m.end).max().unwrap_or(0);
            log.disk.wait_confirmed(end, false).await;
            let disk = log.disk.clone();
            let locs: Vec<Loc> = batch.iter().map(Spilled::loc).collect();
            let read = tokio::task::spawn_blocking(move || disk.read(&locs))
                .await
                .unwrap_or_default();
            match self.take_read(log, &batch, read, gen, &mut failures) {
                Took::All => {}
                Took::OverBudget(size) => self.budget.room_for_parking(size).await,
                Took::Failed(e) => {
                    if failures == 1 {
                        tracing::error!(
                            "durable store: cannot read a stored message back: {e}; trying again"
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Puts what a read brought into the backlog (unless the backlog on
    /// disk was emptied meanwhile); the error that stopped it, if one did.
    fn take_read(
        &self,
        log: &ChannelLog,
        batch: &[Spilled],
        read: Vec<Result<(u64, u16, Bytes), String>>,
        gen: u64,
        failures: &mut u32,
    ) -> Took {
        let mut inner = lock(&self.inner);
        if inner.spill_gen != gen {
            return Took::All;
        }
        let mut bad = None;
        let mut over = None;
        for (m, r) in batch.iter().zip(read) {
            if inner.spilled.front().is_none_or(|f| f.seq != m.seq) {
                break;
            }
            let payload = match r {
                Ok((seq, head, payload)) if seq == m.seq => Some((head, payload)),
                Ok(_) => None,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            };
            // Counted in the budget, as any backlog is; past it, the rest
            // waits on disk (unless the backlog is empty: a worker must get
            // something).
            let size = m.size();
            if inner.backlog.is_empty() {
                self.budget.force_park(size);
            } else if !self.budget.try_park(size) {
                over = Some(size);
                break;
            }
            inner.spilled.pop_front();
            inner.spilled_bytes -= size;
            let Some((head, payload)) = payload else {
                // The file says something else at that place: the message
                // is lost, and said so.
                self.budget.give_back_parked(size);
                log.disk
                    .unreadable(&log.name, m.seq, size, "not the message recorded");
                continue;
            };
            let (Some(seq), Some(attempt)) = (
                std::num::NonZeroU64::new(m.seq),
                std::num::NonZeroU32::new(m.attempt),
            ) else {
                continue;
            };
            inner.bytes += payload.len();
            inner.backlog.push_back(Out {
                payload,
                delivery: Some(DeliveryId::new(seq, attempt)),
                sub: 0,
                head,
            });
            *failures = 0;
        }
        let moved = self.refill_locked(&mut inner);
        self.publish_len(&mut inner);
        if moved > 0 {
            self.space.notify_waiters();
        }
        let Some(e) = bad else {
            return over.map_or(Took::All, Took::OverBudget);
        };
        *failures += 1;
        log.disk.stats.errors.fetch_add(1, Relaxed);
        if *failures >= 10 {
            // Ten reads of it failed: it is given up, counted.
            if let Some(m) = inner.spilled.pop_front() {
                inner.spilled_bytes -= m.size();
                log.disk.unreadable(&log.name, m.seq, m.size(), &e);
            }
            *failures = 0;
            return Took::All;
        }
        Took::Failed(e)
    }
}

/// For the cluster's puller: how much room the workers have, JetStream
/// deliveries handed to them, and the backlog handed back when they are gone.
impl QueueState {
    /// Asks to be woken by [`wait_room`](Self::wait_room) at the next change of
    /// worker room. Called before looking at the room: `notify_one` keeps a
    /// permit, so a change between the look and the wait is not missed.
    pub fn want_room(&self) {
        self.room_wanted.store(true, Relaxed);
    }

    pub async fn wait_room(&self) {
        self.room.notified().await;
    }

    /// Messages the workers can take now without waiting: what a cluster
    /// puller may fetch. None while the local backlog has some, which goes first.
    pub fn worker_room(&self) -> usize {
        let inner = lock(&self.inner);
        if !inner.backlog.is_empty() {
            return 0;
        }
        inner.workers.iter().map(|w| w.room()).sum()
    }

    /// Hands a JetStream message to the next worker with room, to be
    /// acknowledged once written; gives it back when none has room (or the
    /// local backlog is not empty, which keeps its order).
    pub fn offer_delivery(&self, part: Part, delivery: Delivery) -> Result<(), (Part, Delivery)> {
        let mut inner = lock(&self.inner);
        if !inner.backlog.is_empty() {
            return Err((part, delivery));
        }
        let seq = inner.numbering.peek();
        let id = DeliveryId::new(seq, delivery.attempt());
        inner.round_robin((part, delivery), |w, (p, d)| {
            w.offer_delivery(p, id, d).map_err(|(refused, d)| {
                let (m, over_budget) = refused.into_message_and_budget();
                let p = Part {
                    bytes: m.payload,
                    head: m.head,
                };
                ((p, d), over_budget)
            })
        })?;
        inner.numbering.taken(seq);
        Ok(())
    }

    /// The backlog, when no worker is left to take it: a clustered broker
    /// hands it back to JetStream rather than hold it. Its bytes leave the budget.
    pub fn take_orphans(&self) -> Vec<Out> {
        let mut inner = lock(&self.inner);
        if !inner.workers.is_empty() || inner.draining > 0 || inner.backlog.is_empty() {
            return Vec::new();
        }
        let orphans: Vec<Out> = inner.backlog.drain(..).collect();
        let bytes = std::mem::take(&mut inner.bytes);
        self.budget.give_back_parked(bytes);
        self.after_change(&mut inner, orphans.len());
        orphans
    }

    /// Retires the channel if it has no worker, none leaving and no backlog.
    pub fn retire_if_idle(&self) -> bool {
        let mut inner = lock(&self.inner);
        if inner.idle() {
            inner.retired = true;
        }
        inner.retired
    }

    /// Messages found in the durable store at start, oldest first: on disk
    /// only, under their numbers, each as the attempt after the last one
    /// written to a worker; read back into memory as the window allows.
    pub fn restore_stored(&self, msgs: Vec<super::store::disk::Stored>) {
        let mut inner = lock(&self.inner);
        for m in msgs {
            let Some(seq) = std::num::NonZeroU64::new(m.seq) else {
                continue;
            };
            if seq.get() > inner.numbering.peek().get() {
                inner.numbering.taken(seq);
            }
            let s = Spilled {
                seq: m.seq,
                end: 0,
                segment: m.at.segment as u32,
                offset: m.at.offset,
                len: m.at.len,
                attempt: m.delivered.saturating_add(1),
            };
            inner.spilled_bytes += s.size();
            let dir = self.log.as_ref().map(|l| l.disk.dir());
            inner.spilled.push_back(s, dir);
        }
        self.after_change(&mut inner, 0);
    }

    /// Puts back orphans that could not be handed to JetStream.
    pub fn restore(&self, orphans: Vec<Out>) {
        let mut inner = lock(&self.inner);
        self.push_front(&mut inner, orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::conn::Conn;
    use crate::broker::router::Channel;
    use crate::broker::send_queue;
    use tokio_util::sync::CancellationToken;

    fn worker(
        id: u64,
        capacity: usize,
        budget: &Arc<Budget>,
    ) -> (Arc<Subscription>, send_queue::Receiver<Out>) {
        let (tx, rx) = send_queue::channel(capacity);
        let conn = Conn::new(
            id,
            "127.0.0.1:1".parse().unwrap(),
            tx,
            1 << 20,
            budget.clone(),
            Arc::default(),
            CancellationToken::new(),
        );
        // The queue never looks at its workers' channel.
        let channel = Arc::new(Channel::unregistered(Bytes::from_static(b"/queue/t")));
        (
            Arc::new(Subscription::new(
                Arc::new(conn),
                channel,
                crate::broker::subscription::Ids::V1,
            )),
            rx,
        )
    }

    /// A queue (backlog 100) with two workers whose send queues hold `capacity`.
    #[allow(clippy::type_complexity)]
    fn two_workers(
        capacity: usize,
    ) -> (
        QueueState,
        (Arc<Subscription>, send_queue::Receiver<Out>),
        (Arc<Subscription>, send_queue::Receiver<Out>),
    ) {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(100, 1 << 20, budget.clone());
        let a = worker(1, capacity, &budget);
        let b = worker(2, capacity, &budget);
        q.add_worker(a.0.clone());
        q.add_worker(b.0.clone());
        (q, a, b)
    }

    /// What a writer does: takes everything queued, then lets the backlog refill.
    fn drain(q: &QueueState, w: &Subscription, rx: &mut send_queue::Receiver<Out>) -> Vec<Bytes> {
        let mut got = Vec::new();
        while let Some(m) = rx.try_recv() {
            w.conn.taken(m.len());
            got.push(m.payload);
        }
        q.refill();
        got
    }

    #[tokio::test]
    async fn a_worker_that_drains_first_does_not_take_the_next_ones_turn() {
        let (q, (a, mut rx_a), (b, mut rx_b)) = two_workers(2);
        for m in ["1", "2", "3", "4", "5", "6"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        assert_eq!(q.backlog_len(), 2, "both queues full: 5 and 6 wait");
        // B's writer is quicker: the next turn is A's, so B waits for it.
        assert_eq!(drain(&q, &b, &mut rx_b), ["2", "4"]);
        assert_eq!(q.backlog_len(), 2, "A's turn: nothing moved to B");
        assert_eq!(drain(&q, &a, &mut rx_a), ["1", "3"]);
        assert_eq!(q.backlog_len(), 0);
        assert_eq!(drain(&q, &a, &mut rx_a), ["5"]);
        assert_eq!(drain(&q, &b, &mut rx_b), ["6"]);
    }

    #[tokio::test]
    async fn a_worker_stuck_on_its_socket_is_passed_over() {
        let (q, (a, _rx_a), (b, mut rx_b)) = two_workers(2);
        for m in ["1", "2", "3", "4", "5", "6"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        assert_eq!(drain(&q, &b, &mut rx_b), ["2", "4"]);
        // A's peer stopped reading: its writer waits on the socket.
        a.conn.set_blocked(true);
        q.refill();
        assert_eq!(q.backlog_len(), 0, "A's turn passed to B");
        assert_eq!(drain(&q, &b, &mut rx_b), ["5", "6"]);
        q.publish(Bytes::from("7"), 0).await.unwrap();
        assert_eq!(drain(&q, &b, &mut rx_b), ["7"], "published straight to B");
    }

    #[tokio::test]
    async fn turns_a_passed_over_worker_lost_are_given_back_once_it_has_room() {
        let (q, (a, mut rx_a), (b, mut rx_b)) = two_workers(4);
        for m in ["1", "2", "3", "4", "5", "6", "7", "8"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        // A's writer waits on the socket while B takes three of its turns.
        a.conn.set_blocked(true);
        assert_eq!(drain(&q, &b, &mut rx_b), ["2", "4", "6", "8"]);
        for m in ["9", "10", "11"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        assert_eq!(drain(&q, &b, &mut rx_b), ["9", "10", "11"]);
        a.conn.set_blocked(false);
        assert_eq!(drain(&q, &a, &mut rx_a), ["1", "3", "5", "7"]);
        for m in ["12", "13", "14", "15", "16", "17", "18"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        assert_eq!(
            drain(&q, &a, &mut rx_a),
            ["12", "13", "14", "15"],
            "its own turn and the three B took"
        );
        assert_eq!(drain(&q, &b, &mut rx_b), ["16", "18"]);
        assert_eq!(
            drain(&q, &a, &mut rx_a),
            ["17"],
            "then the rotation goes on"
        );
    }

    #[tokio::test]
    async fn a_refill_deals_no_worker_more_bytes_than_its_send_queue_holds() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(100, 1 << 20, budget.clone());
        let worker = |id| {
            let (tx, rx) = send_queue::channel(8);
            let conn = Conn::new(
                id,
                "127.0.0.1:1".parse().unwrap(),
                tx,
                10,
                budget.clone(),
                Arc::default(),
                CancellationToken::new(),
            );
            let channel = Arc::new(Channel::unregistered(Bytes::from_static(b"/queue/t")));
            let sub = Subscription::new(
                Arc::new(conn),
                channel,
                crate::broker::subscription::Ids::V1,
            );
            (Arc::new(sub), rx)
        };
        let ((a, mut rx_a), (b, mut rx_b)) = (worker(1), worker(2));
        q.add_worker(a.clone());
        q.add_worker(b.clone());
        let six = ["1xxxxx", "2xxxxx", "3xxxxx", "4xxxxx", "5xxxxx", "6xxxxx"];
        for m in six {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        assert_eq!(q.backlog_len(), 4, "a second message of 6 bytes passes 10");
        assert_eq!(drain(&q, &a, &mut rx_a), ["1xxxxx"]);
        assert_eq!(
            (a.conn.queued(), q.backlog_len()),
            ((1, 6), 3),
            "A's turn, one message; then B's, which is full by bytes"
        );
        assert_eq!(drain(&q, &b, &mut rx_b), ["2xxxxx"]);
        assert_eq!(drain(&q, &a, &mut rx_a), ["3xxxxx"]);
        assert_eq!(drain(&q, &b, &mut rx_b), ["4xxxxx"]);
        assert_eq!(drain(&q, &a, &mut rx_a), ["5xxxxx"]);
        assert_eq!(drain(&q, &b, &mut rx_b), ["6xxxxx"]);
        assert_eq!(q.backlog_len(), 0);
    }

    #[test]
    fn a_batch_behind_a_backlog_joins_it_within_its_bounds_and_the_budget() {
        let budget = Arc::new(Budget::new(1000));
        let q = QueueState::new(5, 1 << 20, budget.clone());
        let batch = |n: usize| -> Vec<(Bytes, u16)> {
            (0..n)
                .map(|i| (Bytes::from(vec![b'0' + i as u8; 10]), 0))
                .collect()
        };
        assert_eq!(q.try_publish_batch(&mut batch(1)).unwrap(), None);
        let mut six = batch(6);
        assert_eq!(q.try_publish_batch(&mut six).unwrap(), Some(Attempt::Full));
        assert_eq!(six.len(), 2, "four more fit a backlog of five");
        assert_eq!(six[0].0[0], b'4', "the first not taken comes first");
        assert_eq!(
            (q.backlog_len(), budget.parked(), budget.used()),
            (5, 50, 50)
        );
        assert_eq!(q.try_publish_batch(&mut six).unwrap(), Some(Attempt::Full));
        assert_eq!(six.len(), 2);

        // The backlogs' share of the budget is 500: a batch of 300-byte
        // messages that passes it goes message by message, and the one that
        // does not fit waits for the budget.
        let q = QueueState::new(100, 1 << 20, budget.clone());
        let big = |n: usize| -> Vec<(Bytes, u16)> {
            (0..n).map(|_| (Bytes::from(vec![b'x'; 300]), 0)).collect()
        };
        assert_eq!(q.try_publish_batch(&mut big(1)).unwrap(), None);
        let mut two = big(2);
        assert_eq!(
            q.try_publish_batch(&mut two).unwrap(),
            Some(Attempt::OverBudget)
        );
        assert_eq!(two.len(), 2);
        assert_eq!(budget.parked(), 350, "nothing parked past the share");
    }

    #[tokio::test]
    async fn a_worker_is_owed_no_more_than_the_bound() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(100, 1 << 20, budget.clone());
        let (a, _rx_a) = worker(1, 1, &budget);
        let (b, mut rx_b) = worker(2, 1, &budget);
        q.add_worker(a.clone());
        q.add_worker(b.clone());
        a.conn.set_blocked(true);
        for _ in 0..OWED_MAX + 10 {
            assert_eq!(
                q.try_publish(&Bytes::from_static(b"m"), 0).unwrap(),
                Attempt::Taken
            );
            drain(&q, &b, &mut rx_b);
        }
        assert_eq!(a.owed(), OWED_MAX);
    }

    #[tokio::test]
    async fn what_a_leaving_worker_hands_back_reaches_the_next_worker() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(10, 1 << 20, budget.clone());
        let (a, mut rx_a) = worker(1, 16, &budget);
        q.add_worker(a.clone());
        q.publish(Bytes::from_static(b"owed"), 0).await.unwrap();
        // The worker said goodbye: off the rotation, still owed its message.
        q.stop_routing(&a);
        // Its write fails; the message comes back. The channel must not have
        // retired in between, or the message would be held by nobody.
        let owed = rx_a.try_recv().unwrap();
        a.conn.taken(owed.len());
        assert!(
            !q.remove_worker(&a, vec![owed]),
            "not idle: a message waits"
        );
        assert_eq!(q.backlog_len(), 1);
        let (b, mut rx_b) = worker(2, 16, &budget);
        q.add_worker(b);
        assert_eq!(rx_b.try_recv().unwrap().payload, "owed");
        assert_eq!(budget.used(), 4, "counted once, now in the worker's queue");
    }

    #[tokio::test]
    async fn a_backlog_counts_its_places_and_gives_a_large_buffer_back_when_emptied() {
        let budget = Arc::new(Budget::new(1 << 30));
        let q = QueueState::new(10_000, 1 << 20, budget.clone());
        for _ in 0..1000 {
            q.publish(Bytes::from_static(b"x"), 0).await.unwrap();
        }
        let places = budget.overhead();
        assert!(places >= 1000 * std::mem::size_of::<Out>(), "{places}");
        let (w, mut rx) = worker(1, 2000, &budget);
        q.add_worker(w);
        assert_eq!(q.backlog_len(), 0);
        assert_eq!(
            budget.overhead(),
            0,
            "an emptied backlog keeps no large buffer"
        );
        assert_eq!(rx.try_recv().unwrap().payload, "x");
        drop(q);
        assert_eq!(budget.overhead(), 0);
    }

    #[tokio::test]
    async fn moving_backlog_to_a_worker_keeps_the_budget_count() {
        // Backlogs' share: 500 bytes; the rest has room for the backlog's
        // places (counted besides the payloads).
        let budget = Arc::new(Budget::new(1000));
        let q = QueueState::new(10, 1 << 20, budget.clone());
        q.publish(Bytes::from(vec![b'a'; 250]), 0).await.unwrap();
        q.publish(Bytes::from(vec![b'b'; 250]), 0).await.unwrap();
        assert_eq!(budget.used(), 500, "the backlog holds its whole share");
        assert_eq!(budget.parked(), 500);
        assert!(budget.overhead() > 0, "its places counted");
        // A spent share must not stop the backlog from reaching a worker.
        let (w, mut rx) = worker(1, 16, &budget);
        q.add_worker(w.clone());
        assert_eq!(q.backlog_len(), 0);
        assert_eq!(budget.used(), 500);
        assert_eq!(
            budget.parked(),
            0,
            "both moved to the worker: held, not parked"
        );
        let m = rx.try_recv().unwrap();
        w.conn.taken(m.len());
        assert_eq!(budget.used(), 250);
    }

    #[tokio::test]
    async fn a_backlog_is_bounded_in_bytes_and_its_publisher_waits() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(100, 10, budget.clone());
        q.publish(Bytes::from_static(b"123456"), 0).await.unwrap();
        let blocked = q.publish(Bytes::from_static(b"789012"), 0);
        tokio::pin!(blocked);
        assert!(
            futures::poll!(&mut blocked).is_pending(),
            "past 10 bytes: wait"
        );
        let (w, mut rx) = worker(1, 16, &budget);
        q.add_worker(w);
        assert_eq!(rx.try_recv().unwrap().payload, "123456");
        tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
            .await
            .expect("room made by the worker wakes the publisher")
            .unwrap();
    }

    #[tokio::test]
    async fn deliveries_are_numbered_per_channel_and_a_handed_back_one_keeps_its_attempt() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(10, 1 << 20, budget.clone());
        let (a, mut rx_a) = worker(1, 16, &budget);
        let (b, mut rx_b) = worker(2, 16, &budget);
        q.add_worker(a.clone());
        q.add_worker(b.clone());
        for m in ["1", "2", "3"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        let id = |m: &Out| m.delivery.map(|d| (d.seq(), d.attempt().get()));
        let at_a: Vec<Out> = std::iter::from_fn(|| rx_a.try_recv()).collect();
        let at_b = rx_b.try_recv().unwrap();
        assert_eq!(
            at_a.iter().map(id).collect::<Vec<_>>(),
            [Some((1, 1)), Some((3, 1))]
        );
        assert_eq!(id(&at_b), Some((2, 1)));
        // A leaves before writing its two: b gets them under the numbers
        // they had (a message keeps its number, by which the channel knows
        // its history), not as second attempts (none reached a socket).
        for m in &at_a {
            a.conn.taken(m.len());
        }
        q.remove_worker(&a, at_a);
        let again: Vec<Option<(u64, u32)>> = std::iter::from_fn(|| rx_b.try_recv())
            .map(|m| id(&m))
            .collect();
        assert_eq!(again, [Some((1, 1)), Some((3, 1))]);
    }

    #[tokio::test]
    async fn a_message_no_worker_had_room_for_gets_a_number_of_its_own() {
        let budget = Arc::new(Budget::new(1 << 20));
        let q = QueueState::new(100, 1 << 20, budget.clone());
        let (a, mut rx) = worker(1, 1, &budget);
        q.add_worker(a.clone());
        for m in ["1", "2", "3", "4"] {
            q.publish(Bytes::from(m), 0).await.unwrap();
        }
        // One at a time: each of 2, 3 and 4 was offered while the worker
        // was full and went to the backlog before it was taken.
        let mut seqs = Vec::new();
        while seqs.len() < 4 {
            let m = rx.try_recv().expect("the next message");
            a.conn.taken(m.len());
            seqs.push(m.delivery.map(|d| d.seq()));
            q.refill();
        }
        assert_eq!(seqs, [Some(1), Some(2), Some(3), Some(4)]);
    }
}
