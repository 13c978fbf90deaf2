//! Deliveries an acknowledging worker holds: written to it and not yet
//! answered. Each connection keeps its own table, by the delivery ids it was
//! sent (so an answer can only ever reach a delivery of its own connection);
//! the writer fills it before the bytes reach the socket, the reader empties
//! it as answers come, and a sweeper takes back what outlived its ack wait.
//! What comes back goes to the front of its channel (at once, or after a
//! delay); what failed `max_deliveries` times, or was ended by `TERM`, goes to
//! the channel's dead-letter channel with its payload and headers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::conn::Conn;
use super::delivery::{DeliveryId, Out};
use super::lock;
use super::router::{Channel, Kind};
use super::stats::{DeadReason, Redelivery};
use super::subscription::Subscription;
use super::Shared;
use crate::proto::v2::Answer;

/// The longest delay a `NAK` may ask for: a worker cannot park a message
/// out of everyone's reach for longer (it still counts in the memory budget
/// while it waits).
pub const MAX_NAK_DELAY: Duration = Duration::from_secs(24 * 3600);

/// How often the sweeper looks for ack waits run out and delays over.
pub const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// One delivery held by a worker.
pub struct Entry {
    pub sub: Arc<Subscription>,
    pub out: Out,
    /// When its ack wait runs out.
    pub deadline: Instant,
    /// When it was written (Unix time, ms).
    pub delivered_ms: u64,
}

/// A connection's held deliveries, by delivery id.
#[derive(Default)]
pub struct Held {
    entries: BTreeMap<u64, Entry>,
    /// No entry's deadline is earlier (a lower bound: `WORKING` only moves
    /// deadlines later).
    earliest: Option<Instant>,
}

impl Held {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The writer is about to write delivery `id`.
    pub fn insert(&mut self, id: u64, entry: Entry) {
        self.earliest = Some(
            self.earliest
                .map_or(entry.deadline, |e| e.min(entry.deadline)),
        );
        self.entries.insert(id, entry);
    }

    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        self.entries.remove(&id)
    }

    /// Every entry up to `id`, oldest first.
    fn take_up_to(&mut self, id: u64) -> Vec<Entry> {
        let rest = self.entries.split_off(&id.saturating_add(1));
        let taken = std::mem::replace(&mut self.entries, rest);
        taken.into_values().collect()
    }

    /// Every entry of subscription `local`, oldest first.
    pub fn take_sub(&mut self, local: u32) -> Vec<Entry> {
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.sub.ids.local == local)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| self.entries.remove(id))
            .collect()
    }

    /// Entries whose ack wait ran out by `now`.
    fn take_expired(&mut self, now: Instant) -> Vec<Entry> {
        if self.earliest.is_none_or(|e| e > now) {
            return Vec::new();
        }
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let taken = ids
            .iter()
            .filter_map(|id| self.entries.remove(id))
            .collect();
        self.earliest = self.entries.values().map(|e| e.deadline).min();
        taken
    }

    /// The oldest delivery's write time (Unix ms), per channel name.
    pub fn oldest_by_channel(&self) -> Vec<(Bytes, u64)> {
        let mut out: Vec<(Bytes, u64)> = Vec::new();
        for e in self.entries.values() {
            match out.iter_mut().find(|(n, _)| *n == e.sub.channel.name) {
                Some((_, t)) => *t = (*t).min(e.delivered_ms),
                None => out.push((e.sub.channel.name.clone(), e.delivered_ms)),
            }
        }
        out
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Answers of one frame for ids the connection does not hold: how many, the first.
#[derive(Debug, Default, Clone, Copy)]
pub struct NotHeld {
    pub count: u32,
    pub first: u64,
}

impl NotHeld {
    fn add(&mut self, id: u64) {
        if self.count == 0 {
            self.first = id;
        }
        self.count = self.count.saturating_add(1);
    }
}

/// A worker's answer for `ids` (see [`Answer`]).
pub fn answer(shared: &Shared, conn: &Conn, answer: Answer, up_to: bool, ids: &[u64]) -> NotHeld {
    let mut missing = NotHeld::default();
    let Some(v2) = &conn.v2 else {
        return missing;
    };
    let now = Instant::now();
    let taken = {
        let mut held = lock(&v2.held);
        let taken = match answer {
            Answer::Working => {
                for id in ids {
                    match held.entries.get_mut(id) {
                        Some(e) => {
                            let wait = e.sub.acks().map_or(shared.config.ack_wait, |a| a.ack_wait);
                            e.deadline = now + wait;
                        }
                        None => missing.add(*id),
                    }
                }
                Vec::new()
            }
            // An ACK up to an id that covers nothing held is no mistake:
            // what it covers may have been answered one by one.
            _ if up_to => held.take_up_to(ids[0]),
            _ => ids
                .iter()
                .filter_map(|id| {
                    let e = held.remove(*id);
                    if e.is_none() {
                        missing.add(*id);
                    }
                    e
                })
                .collect(),
        };
        v2.held_len.store(held.len(), Relaxed);
        taken
    };
    if missing.count > 0 {
        let n = u64::from(missing.count);
        conn.stats.acks.not_held.fetch_add(n, Relaxed);
        shared.stats.acks.not_held.fetch_add(n, Relaxed);
    }
    match answer {
        Answer::Ack => acked(shared, conn, taken),
        Answer::Nak(delay) => {
            let delay = Duration::from_millis(u64::from(delay)).min(MAX_NAK_DELAY);
            for e in taken {
                failed(shared, conn, e, Some(delay), Redelivery::Nak);
            }
        }
        Answer::Term => {
            for e in taken {
                let h = note(&e, false);
                settle(shared, conn, &e);
                let sub = e.sub.clone();
                dead_letter(shared, e, DeadReason::Term, h.map_or(0, |h| h.failures));
                refill(&sub);
            }
        }
        Answer::Working => {}
    }
    missing
}

/// What the writer wrote and the worker finished.
fn acked(shared: &Shared, conn: &Conn, done: Vec<Entry>) {
    if done.is_empty() {
        return;
    }
    let n = done.len() as u64;
    conn.stats.acks.acked.fetch_add(n, Relaxed);
    shared.stats.acks.acked.fetch_add(n, Relaxed);
    // Done with in a durable channel's store, a run of one channel at a time.
    let mut i = 0;
    while i < done.len() {
        let channel = &done[i].sub.channel;
        let end = done[i..]
            .iter()
            .position(|e| !Arc::ptr_eq(&e.sub.channel, channel))
            .map_or(done.len(), |k| i + k);
        stored_done(channel, done[i..end].iter().map(|e| &e.out));
        if let Some(replies) = shared.replies.get() {
            replies.written(jetstream_held(channel, done[i..end].iter().map(|e| &e.out)));
        }
        i = end;
    }
    let mut last: Option<&Arc<Subscription>> = None;
    for e in &done {
        settle(shared, conn, e);
        e.sub.channel.stats.acks.acked.fetch_add(1, Relaxed);
        if e.out.attempt().get() > 1 {
            if let (Kind::Queue(q), Some(d)) = (&e.sub.channel.kind, e.out.delivery) {
                q.forget(d.seq());
            }
        }
        // Room for more: once per run of one worker's deliveries.
        if !last.is_some_and(|s| Arc::ptr_eq(s, &e.sub)) {
            if let Some(s) = last {
                refill(s);
            }
            last = Some(&e.sub);
        }
    }
    if let Some(s) = last {
        refill(s);
    }
}

fn refill(sub: &Subscription) {
    if let Kind::Queue(q) = &sub.channel.kind {
        q.refill();
    }
}

/// Messages of `channel` done with: out of its store, if it is durable.
fn stored_done<'a>(channel: &Channel, outs: impl IntoIterator<Item = &'a Out>) {
    if let Kind::Queue(q) = &channel.kind {
        if let Some(log) = q.log() {
            log.settle(outs);
        }
    }
}

/// In a cluster: the JetStream messages of `outs` (of `channel`), kept
/// unanswered while a worker of this broker had the job; their answer is
/// final now.
fn jetstream_held<'a>(
    channel: &Channel,
    outs: impl IntoIterator<Item = &'a Out>,
) -> Vec<super::store::Delivery> {
    match &channel.kind {
        Kind::Queue(q) => {
            q.take_stored(outs.into_iter().filter_map(|o| o.delivery.map(|d| d.seq())))
        }
        Kind::Topic(_) => Vec::new(),
    }
}

fn part_of(out: &Out) -> super::store::Part {
    super::store::Part {
        bytes: out.payload.clone(),
        head: out.head,
    }
}

/// An entry leaves the table: its credit and its budget are free.
fn settle(shared: &Shared, conn: &Conn, e: &Entry) {
    e.sub.settled(1);
    conn.give_back_budget(e.out.len());
    conn.stats.acks.settled(1);
    e.sub.channel.stats.acks.settled(1);
    shared.stats.acks.settled(1);
}

/// The channel's record of a message that came back.
fn note(e: &Entry, failed: bool) -> Option<super::queue::History> {
    match (&e.sub.channel.kind, e.out.delivery) {
        (Kind::Queue(q), Some(d)) => Some(q.note(d.seq(), e.delivered_ms, failed)),
        _ => None,
    }
}

/// The message, delivered once more: attempt raised.
fn next_attempt(out: &Out) -> Out {
    let mut out = out.clone();
    if let Some(d) = out.delivery {
        let attempt = d.attempt().saturating_add(1);
        out.delivery = Some(DeliveryId::new(
            std::num::NonZeroU64::new(d.seq()).unwrap_or(std::num::NonZeroU64::MIN),
            attempt,
        ));
    }
    out.sub = 0;
    out
}

/// A delivery that failed (`NAK`, ack wait run out): back to its channel
/// after the delay asked for (`None` or zero: the channel's backoff), or to
/// the dead-letter channel once it failed `max_deliveries` times.
fn failed(shared: &Shared, conn: &Conn, e: Entry, delay: Option<Duration>, cause: Redelivery) {
    let sub = e.sub.clone();
    failed_inner(shared, conn, e, delay, cause);
    // Its credit is free: what waits may go to it.
    refill(&sub);
}

fn failed_inner(
    shared: &Shared,
    conn: &Conn,
    e: Entry,
    delay: Option<Duration>,
    cause: Redelivery,
) {
    let h = note(&e, true);
    settle(shared, conn, &e);
    let failures = h.map_or(1, |h| h.failures);
    let Some(policy) = e.sub.acks() else {
        return;
    };
    if failures >= policy.max_deliveries && policy.dead_letter.is_some() {
        let reason = if cause == Redelivery::Timeout {
            DeadReason::Expired
        } else {
            DeadReason::MaxDeliveries
        };
        return dead_letter(shared, e, reason, failures);
    }
    let delay = match delay {
        Some(d) if !d.is_zero() => d,
        _ => policy.backoff_for(failures),
    };
    conn.stats.acks.redelivered(cause, 1);
    shared.stats.acks.redelivered(cause, 1);
    e.sub.channel.stats.acks.redelivered(cause, 1);
    redeliver(shared, &e.sub.channel, vec![next_attempt(&e.out)], delay);
}

/// Puts messages back on `channel`; `delay` before they go out again.
fn redeliver(shared: &Shared, channel: &Arc<Channel>, back: Vec<Out>, delay: Duration) {
    let Kind::Queue(q) = &channel.kind else {
        return;
    };
    match q.redeliver(back, delay) {
        Ok(()) if !delay.is_zero() => shared.delaying(channel),
        Ok(()) => {}
        // Retired meanwhile (its last worker left): the channel under that
        // name now, made again if need be.
        Err(back) => {
            for m in back {
                // A job JetStream keeps for this broker goes back to it, for
                // any broker's workers.
                if let Some(replies) = shared.replies.get() {
                    if let [d] = &jetstream_held(channel, [&m])[..] {
                        replies.give_back([(d.clone(), part_of(&m))]);
                        continue;
                    }
                }
                republish(shared, &channel.name, m.payload.clone(), m.head);
                // Stored again under the channel's new number (if durable).
                stored_done(channel, [&m]);
            }
        }
    }
}

/// A message to `name`'s channel as it is now, never dropped in silence.
fn republish(shared: &Shared, name: &Bytes, payload: Bytes, head: u16) {
    for _ in 0..3 {
        match shared.router.lookup(name, None) {
            Ok(Some(c)) => match &c.kind {
                Kind::Queue(q) => {
                    if q.force_publish(payload.clone(), head).is_ok() {
                        return;
                    }
                }
                Kind::Topic(_) => break,
            },
            Ok(None) => break,
            Err(_) => break,
        }
    }
    // --max-channels reached, and no room for the channel: counted.
    shared
        .router
        .count_drop(None, None, super::stats::DropReason::ChannelLimit, 1);
    tracing::warn!(
        "A message for {} was dropped: the broker holds --max-channels channels",
        crate::proto::shown(name)
    );
}

/// Sends a message to its channel's dead-letter channel, with headers that
/// say where it came from and why.
fn dead_letter(shared: &Shared, e: Entry, reason: DeadReason, failures: u32) {
    let channel = &e.sub.channel;
    let first_ms = match (&channel.kind, e.out.delivery) {
        (Kind::Queue(q), Some(d)) => {
            let first = q.note(d.seq(), e.delivered_ms, false).first_ms;
            q.forget(d.seq());
            first
        }
        _ => e.delivered_ms,
    };
    // Looked up in a cluster only: elsewhere no store keeps the job.
    let held_by_jetstream = shared
        .replies
        .get()
        .and_then(|r| Some((r, jetstream_held(channel, [&e.out]).pop()?)));
    let Some(dead) = e.sub.acks().and_then(|a| a.dead_letter.clone()) else {
        // A dead-letter channel's own message ended by TERM: nowhere further.
        shared
            .router
            .count_drop(Some(channel), None, super::stats::DropReason::Terminated, 1);
        stored_done(channel, [&e.out]);
        if let Some((replies, d)) = held_by_jetstream {
            replies.written([d]);
        }
        return;
    };
    let attempts = e.out.attempt().get();
    let (payload, head) = with_death(&e.out, &channel.name, attempts, reason, first_ms, failures);
    shared.stats.acks.dead_lettered(reason);
    channel.stats.acks.dead_lettered(reason);
    if let Some(n) = shared.dead_letter_log.due(shared.born) {
        tracing::warn!(
            "Dead letter: a message of {} went to {} after {attempts} deliveries ({}); \
             {n} dead letter(s) since the last line",
            channel.display_name(),
            crate::proto::shown(&dead),
            reason.as_str()
        );
    }
    // In a cluster, stored in the dead-letter channel's stream before
    // JetStream hears that the job is done with.
    if let Some((replies, d)) = held_by_jetstream {
        let letter = super::store::Part {
            bytes: payload,
            head,
        };
        replies.dead_letter(dead, letter, d, part_of(&e.out));
        return;
    }
    // Stored in the dead-letter channel (if durable) before it leaves this one.
    republish(shared, &dead, payload, head);
    stored_done(channel, [&e.out]);
}

/// The message's header block (what it had, then `aioq-*` entries saying
/// where it came from and why) in front of its payload.
fn with_death(
    out: &Out,
    channel: &[u8],
    attempts: u32,
    reason: DeadReason,
    first_ms: u64,
    failures: u32,
) -> (Bytes, u16) {
    let head = usize::from(out.head);
    let (old, body) = out.payload.split_at(head);
    let ours: [(&str, String); 6] = [
        (
            "aioq-channel",
            String::from_utf8_lossy(channel).into_owned(),
        ),
        ("aioq-attempts", attempts.to_string()),
        ("aioq-failures", failures.to_string()),
        ("aioq-reason", reason.as_str().to_string()),
        ("aioq-first-delivery", first_ms.to_string()),
        ("aioq-last-delivery", now_ms().to_string()),
    ];
    let old_count = old.first().copied().unwrap_or(0);
    // At most 255 headers in a block: ours go in front of what fits.
    let keep = usize::from(old_count).min(255 - ours.len());
    let mut block = BytesMut::with_capacity(head + 160 + body.len());
    block.put_u8((keep + ours.len()) as u8);
    for (k, v) in &ours {
        block.put_u8(k.len() as u8);
        block.put_slice(k.as_bytes());
        block.put_u16(v.len() as u16);
        block.put_slice(v.as_bytes());
    }
    // The old entries as they were (their count byte left out).
    let mut rest = old.get(1..).unwrap_or_default();
    for _ in 0..keep {
        let Some((&klen, r)) = rest.split_first() else {
            break;
        };
        let klen = usize::from(klen);
        if r.len() < klen + 2 {
            break;
        }
        let vlen = usize::from(u16::from_be_bytes([r[klen], r[klen + 1]]));
        let whole = 1 + klen + 2 + vlen;
        if rest.len() < whole {
            break;
        }
        block.put_slice(&rest[..whole]);
        rest = &rest[whole..];
    }
    let head = block.len();
    block.put_slice(body);
    // A block of 255 entries could pass 64 KiB only with values far past
    // max_header_bytes, which a publish cannot carry.
    (block.freeze(), u16::try_from(head).unwrap_or(u16::MAX))
}

/// A worker leaves (disconnects, unsubscribes): what it held goes back to
/// its channel at once, attempt raised, ahead of its unsent messages.
pub fn take_back(shared: &Shared, conn: &Conn, sub: &Subscription) -> Vec<Out> {
    let Some(v2) = &conn.v2 else {
        return Vec::new();
    };
    let entries = {
        let mut held = lock(&v2.held);
        let e = held.take_sub(sub.ids.local);
        v2.held_len.store(held.len(), Relaxed);
        e
    };
    if entries.is_empty() {
        return Vec::new();
    }
    let n = entries.len() as u64;
    conn.stats.acks.redelivered(Redelivery::Disconnect, n);
    shared.stats.acks.redelivered(Redelivery::Disconnect, n);
    sub.channel
        .stats
        .acks
        .redelivered(Redelivery::Disconnect, n);
    entries
        .iter()
        .map(|e| {
            note(e, false);
            settle(shared, conn, e);
            next_attempt(&e.out)
        })
        .collect()
}

/// Takes back, every [`SWEEP_EVERY`], the deliveries whose ack wait ran
/// out, and lets out the delayed messages whose time came; until shutdown.
pub async fn sweep(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shared.phases.stop_reading.cancelled() => return,
        }
        let now = Instant::now();
        // Nothing held anywhere (the usual case): no connection to look at.
        let holding = shared.stats.acks.in_flight.load(Relaxed) > 0;
        let ackers: Vec<Arc<Conn>> = {
            let mut list = lock(&shared.ackers);
            list.retain(|w| w.strong_count() > 0);
            if holding {
                list.iter().filter_map(Weak::upgrade).collect()
            } else {
                Vec::new()
            }
        };
        for conn in ackers {
            let Some(v2) = &conn.v2 else { continue };
            if v2.held_len.load(Relaxed) == 0 {
                continue;
            }
            let expired = {
                let mut held = lock(&v2.held);
                let e = held.take_expired(now);
                v2.held_len.store(held.len(), Relaxed);
                e
            };
            for e in expired {
                failed(&shared, &conn, e, None, Redelivery::Timeout);
            }
        }
        let delaying: Vec<Arc<Channel>> = std::mem::take(&mut *lock(&shared.delaying));
        let mut still = Vec::new();
        for c in delaying {
            if let Kind::Queue(q) = &c.kind {
                if q.release_due(now) {
                    still.push(c);
                }
            }
        }
        let mut list = lock(&shared.delaying);
        for c in still {
            if !list.iter().any(|k| Arc::ptr_eq(k, &c)) {
                list.push(c);
            }
        }
    }
}

/// Held deliveries' budget and registration, for the writer: `entries`
/// (delivery id, entry) are about to be written.
pub fn hold(shared: &Shared, conn: &Arc<Conn>, entries: Vec<(u64, Entry)>) {
    let Some(v2) = &conn.v2 else {
        return;
    };
    let n = entries.len() as u64;
    let bytes: usize = entries.iter().map(|(_, e)| e.out.len()).sum();
    conn.hold_budget(bytes);
    conn.stats.acks.in_flight.fetch_add(n, Relaxed);
    shared.stats.acks.in_flight.fetch_add(n, Relaxed);
    for (_, e) in &entries {
        e.sub.channel.stats.acks.in_flight.fetch_add(1, Relaxed);
    }
    let mut held = lock(&v2.held);
    for (id, e) in entries {
        held.insert(id, e);
    }
    v2.held_len.store(held.len(), Relaxed);
    drop(held);
    if !v2.acker.swap(true, Relaxed) {
        lock(&shared.ackers).push(Arc::downgrade(conn));
    }
}

/// Deliveries registered by [`hold`] that were not written after all (the
/// write failed): out of the table, to be handed back unwritten.
pub fn unhold(shared: &Shared, conn: &Conn, ids: &[u64]) {
    let Some(v2) = &conn.v2 else {
        return;
    };
    let mut held = lock(&v2.held);
    for id in ids {
        if let Some(e) = held.remove(*id) {
            settle(shared, conn, &e);
        }
    }
    v2.held_len.store(held.len(), Relaxed);
}
