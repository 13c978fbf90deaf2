//! Where a publish goes, whoever publishes: a connection's reader or the
//! broker's own process ([`super::Injector`]). One path owns the counters, the
//! empty-payload rule, `/topic` forwarding to the cluster, the fork by the
//! channel's store (memory, or JetStream), and local routing with its retry
//! when a channel retires underneath it; the cluster's inbound side routes
//! through the router's own `publish_topic` and queue hand-off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::access::{Identity, Rules};
use super::conn::Conn;
use super::log_every::LogEvery;
use super::queue::Attempt;
use super::router::{Channel, Full, Kind, Retired, Router};
use super::stats::DropReason;
use super::store::disk::Disk;
use super::store::jetstream::{Back, JetStream, Outbox};
use super::store::Backend;
use super::store::Part;
use crate::proto::v2;

/// Where `/topic` messages go besides this broker's subscribers: the
/// cluster's forwarder, which takes them without waiting.
pub trait Forward: Send + Sync {
    /// True when the message left for the other brokers (false: counted as
    /// not forwarded).
    fn forward(&self, name: &Bytes, payload: &Bytes, head: u16) -> bool;
}

/// What lies beyond this broker that a publish may go to.
#[derive(Clone, Copy, Default)]
pub(crate) struct Links<'a> {
    pub forward: Option<&'a dyn Forward>,
    /// The store of `/queue` channels kept in JetStream.
    pub jetstream: Option<&'a JetStream>,
}

/// How long a `/queue` publisher waits for the backlogs' share of the budget
/// before the oldest worker-less backlog is evicted to make room.
const EVICT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Channels a publisher remembers, so that publishing skips the registry lock.
const CHANNEL_CACHE: usize = 256;

/// What a connection may publish, decided per channel and remembered until
/// a reload changes the rules.
pub(crate) struct Rights {
    identity: Option<Identity>,
    rules: Rules,
    /// Every publish allowed: nothing to look up.
    all: bool,
    generation: u64,
    decisions: HashMap<Bytes, bool>,
    peer: SocketAddr,
    log: LogEvery,
    born: Instant,
}

impl Rights {
    pub fn new(
        identity: Option<Identity>,
        rules: Rules,
        generation: u64,
        peer: SocketAddr,
    ) -> Self {
        Self {
            all: rules.allows_every_publish(),
            identity,
            rules,
            generation,
            decisions: HashMap::new(),
            peer,
            log: LogEvery::default(),
            born: Instant::now(),
        }
    }

    fn may_publish(&mut self, router: &Router, name: &Bytes) -> bool {
        // Looked at here, the call made only after a reload: this runs for
        // every publish.
        if router.generation() != self.generation {
            self.refresh(router);
        }
        if self.all {
            return true;
        }
        if let Some(&d) = self.decisions.get(name) {
            return d;
        }
        let d = self.rules.may_publish(name);
        if self.decisions.len() >= CHANNEL_CACHE {
            self.decisions.clear();
        }
        self.decisions.insert(Bytes::copy_from_slice(name), d);
        d
    }

    /// Takes the rules in force after a reload.
    fn refresh(&mut self, router: &Router) {
        let now = router.generation();
        if now != self.generation {
            self.generation = now;
            self.rules = router
                .policy()
                .access
                .rules_for(self.identity.as_ref())
                .unwrap_or_else(Rules::none);
            self.all = self.rules.allows_every_publish();
            self.decisions.clear();
        }
    }

    fn denied(&self, name: &[u8]) {
        if let Some(n) = self.log.due(self.born) {
            tracing::warn!(
                "Remote {} ({}) may not publish to {}: {n} publish(es) refused since the last line",
                self.peer,
                self.identity
                    .as_ref()
                    .map_or_else(|| "no client certificate".to_string(), |i| i.shown()),
                crate::proto::shown(name)
            );
        }
    }
}

/// What [`Publisher::route_now`] did with a message.
enum Now {
    /// Routed, or counted as not routable (false: the publisher must stop).
    Done(bool),
    /// Its `/queue` backlog is full: wait for room.
    Wait,
    /// Its channel keeps its messages in JetStream.
    Stream(Arc<Channel>),
    /// A `/topic` channel, or a protocol 1 publisher's `/queue` in this
    /// broker's memory or store: the message joins those held for it.
    Hold(Arc<Channel>),
}

/// Messages a publisher holds before it routes them as one batch: a bound
/// on what it keeps (a read buffer of small messages holds hundreds). At
/// 64, the locks and counts a batch shares cost each message under 2 % of
/// what they cost it alone.
const HOLD_MAX: usize = 64;

/// Consecutive messages to one channel, from one read buffer, routed
/// together. A `/topic` batch takes one lock of the channel and one
/// hand-off per subscriber, where each message on its own would take both;
/// a `/queue` batch, one lock of the channel and of its backlog.
#[derive(Default)]
struct Held {
    /// The channel, the name it was published to, and whether the messages
    /// also went to the cluster's other brokers.
    to: Option<(Arc<Channel>, Bytes, bool)>,
    messages: Vec<(Bytes, u16)>,
    bytes: usize,
    /// A `/queue` batch stopped at a message its backlog refused, for this
    /// reason: it and those after it wait for room
    /// ([`Publisher::wait_held`]), and so does whatever the publisher does next.
    blocked: Option<Attempt>,
}

/// Done when `conn` is killed (never, for the broker's own process): a
/// publish waiting for room gives up then.
async fn killed(conn: Option<&Conn>) {
    match conn {
        Some(c) => c.kill.cancelled().await,
        None => std::future::pending().await,
    }
}

/// What [`Publisher::hold`] did with a message.
enum Hold {
    Held,
    /// Held, behind messages that wait for room: the reader waits too.
    Wait,
    /// Not held: what is held for another channel waits for room first.
    Back(Bytes),
}

/// A publish that must wait: see [`Publisher::publish_now`].
pub(crate) struct Later(LaterKind);

enum LaterKind {
    /// The messages held wait for their backlog's room (this one among them).
    Held,
    /// Its `/queue` backlog is full, or held messages for another channel are.
    Wait {
        name: Bytes,
        payload: Bytes,
        head: u16,
        elsewhere: bool,
    },
    /// The JetStream gathering is full: ship it, then gather `rest`.
    Ship {
        channel: Arc<Channel>,
        rest: Option<Part>,
    },
}

/// What a publish finds under its channel's name.
enum Found {
    Channel(Arc<Channel>),
    /// A `/topic` nobody subscribes to (or `/null`): nothing to route to.
    Unrouted,
    /// It would be a new channel, and the registry is full.
    Refused,
}

/// Publishes not yet added to the shared counters. A reader adds them once per
/// read buffer rather than per message: each add is an atomic read-modify-write
/// on a cache line that the writers' counters share.
#[derive(Default)]
struct Unsaid {
    /// The connection's `received`.
    received: (u64, u64),
    /// The broker's `published`.
    published: (u64, u64),
    /// The `published` of the channel last published to.
    channel: Option<(Arc<Channel>, u64, u64)>,
}

/// One source of publishes, with what it remembers between them.
pub(crate) struct Publisher<'a> {
    router: &'a Router,
    links: Links<'a>,
    /// Cancelled when the broker stops reading: a publish waiting for room gives up.
    stop: &'a CancellationToken,
    /// The publishing connection; `None` for the broker's own process.
    conn: Option<&'a Conn>,
    cache: HashMap<Bytes, Arc<Channel>>,
    /// The channel of the last publish: most publishers keep to one, and a
    /// comparison of names costs less than hashing one.
    last: Option<Arc<Channel>>,
    /// `/queue` messages on their way into JetStream; made at the first one
    /// (it allocates, and most connections of most brokers never need one).
    outbox: Option<Box<Outbox>>,
    /// The connection's rights; `None` for the broker's own process.
    rights: Option<Rights>,
    unsaid: Unsaid,
    /// Why the last publish was refused (a protocol v2 reason code), and
    /// the channel it named, if it was.
    refusal: Option<(u8, Bytes)>,
    /// Messages went to a durable channel since the last
    /// [`settle`](Self::settle) or [`take_stored`](Self::take_stored): the
    /// log position their confirm waits for, and whether it waits for a
    /// sync (some went to a channel whose fsync is `always`).
    stored: Option<(u64, bool)>,
    /// `/topic` messages not yet routed: routed before anything else this
    /// publisher does, and before its reader waits or answers.
    held: Held,
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        self.flush_counts();
        // Only when its reader ended without waiting for them (it waits
        // whenever it can): counted, never dropped unsaid.
        self.lose_held(DropReason::SubscriberGone);
    }
}

impl<'a> Publisher<'a> {
    pub fn new(
        router: &'a Router,
        links: Links<'a>,
        stop: &'a CancellationToken,
        conn: Option<&'a Conn>,
    ) -> Self {
        Self {
            router,
            links,
            stop,
            conn,
            cache: HashMap::new(),
            last: None,
            outbox: None,
            rights: None,
            unsaid: Unsaid::default(),
            refusal: None,
            stored: None,
            held: Held::default(),
        }
    }

    /// Adds what this publisher counted to the shared counters. Called before
    /// a reader waits for more input, so that counters read by anyone else
    /// are never behind by more than what one read buffer holds.
    pub fn flush_counts(&mut self) {
        self.route_held();
        let u = &mut self.unsaid;
        if u.received.0 > 0 {
            if let Some(conn) = self.conn {
                conn.stats.received.add(u.received.0, u.received.1);
            }
            u.received = (0, 0);
        }
        if u.published.0 > 0 {
            self.router
                .stats()
                .published
                .add(u.published.0, u.published.1);
            u.published = (0, 0);
        }
        if let Some((channel, n, bytes)) = u.channel.take() {
            channel.stats.published.add(n, bytes);
        }
    }

    /// One more message published to `channel`.
    fn count_channel(&mut self, channel: &Arc<Channel>, len: u64) {
        self.count_channel_n(channel, 1, len);
    }

    /// `n` more messages, of `len` bytes in all, published to `channel`.
    fn count_channel_n(&mut self, channel: &Arc<Channel>, n: u64, len: u64) {
        match &mut self.unsaid.channel {
            Some((c, count, bytes)) if Arc::ptr_eq(c, channel) => {
                *count += n;
                *bytes += len;
            }
            slot => {
                if let Some((c, count, bytes)) = slot.replace((channel.clone(), n, len)) {
                    c.stats.published.add(count, bytes);
                }
            }
        }
    }

    /// Publishes only where `rights` allow.
    pub fn with_rights(mut self, rights: Rights) -> Self {
        self.rights = Some(rights);
        self
    }

    /// Routes one publish; false when the broker stopped or the connection was
    /// killed while it waited for `/queue` room (the message is counted lost).
    /// `head`: bytes at the front of `payload` that are its header block
    /// (protocol v2 headers, never on a clustered broker).
    pub async fn publish(&mut self, name: Bytes, payload: Bytes, head: u16) -> bool {
        match self.publish_now(&name, payload, head) {
            Ok(done) => done,
            Err(later) => Box::pin(self.publish_later(later)).await,
        }
    }

    /// A publish as far as it goes without waiting, which is all the way
    /// for nearly every one: `Ok` as [`Publisher::publish`] would answer,
    /// `Err` when it must wait (for `/queue` room, or to ship to
    /// JetStream), to be finished by [`Publisher::publish_later`]. Not
    /// async, so that a reader routing a read buffer's frames builds and
    /// moves no future per message.
    pub fn publish_now(&mut self, name: &Bytes, payload: Bytes, head: u16) -> Result<bool, Later> {
        let len = payload.len() as u64;
        self.unsaid.received.0 += 1;
        self.unsaid.received.1 += len;
        // Names under /$aioq/ are the protocol's own: nobody publishes there.
        // (One byte looked at first: this runs for every publish.)
        if name.get(1) == Some(&b'$') && crate::proto::v2::is_reserved(name) {
            let conn = self.conn.map(|c| &*c.stats);
            self.router.count_drop(None, conn, DropReason::Denied, 1);
            self.refusal = Some((v2::reason::RESERVED, name.clone()));
            return Ok(true);
        }
        if let Some(rights) = &mut self.rights {
            if !rights.may_publish(self.router, name) {
                rights.denied(name);
                let conn = self.conn.map(|c| &*c.stats);
                self.router.count_drop(None, conn, DropReason::Denied, 1);
                self.refusal = Some((v2::reason::DENIED, name.clone()));
                return Ok(true);
            }
        }
        if payload.len() == usize::from(head) {
            let conn = self.conn.map(|c| &*c.stats);
            self.router
                .count_drop(None, conn, DropReason::EmptyPayload, 1);
            self.refusal = Some((v2::reason::EMPTY_PAYLOAD, name.clone()));
            return Ok(true);
        }
        self.unsaid.published.0 += 1;
        self.unsaid.published.1 += len;
        // A /topic message that went to the other brokers was routed, whether
        // or not anyone here is subscribed.
        let elsewhere = match self.links.forward {
            Some(forward) if !crate::proto::is_queue(name) => forward.forward(name, &payload, head),
            _ => false,
        };
        self.route_message(name, payload, head, elsewhere)
    }

    /// A publish, counted and allowed, as far as it goes without waiting.
    fn route_message(
        &mut self,
        name: &Bytes,
        payload: Bytes,
        head: u16,
        elsewhere: bool,
    ) -> Result<bool, Later> {
        match self.route_now(name, &payload, head, elsewhere) {
            Now::Done(done) => Ok(done),
            Now::Hold(channel) => match self.hold(channel, name, payload, head, elsewhere) {
                Hold::Held => Ok(true),
                Hold::Wait => Err(Later(LaterKind::Held)),
                Hold::Back(payload) => Err(Later(LaterKind::Wait {
                    name: name.clone(),
                    payload,
                    head,
                    elsewhere,
                })),
            },
            Now::Wait => Err(Later(LaterKind::Wait {
                name: name.clone(),
                payload,
                head,
                elsewhere,
            })),
            Now::Stream(channel) => match self.gather(
                &channel,
                Part {
                    bytes: payload,
                    head,
                },
            ) {
                Ok(()) => Ok(true),
                Err(rest) => Err(Later(LaterKind::Ship { channel, rest })),
            },
        }
    }

    /// The rest of a publish that [`Publisher::publish_now`] could not
    /// finish; boxed by its callers, so that the futures of the routing
    /// that waits (and of JetStream's) are no part of a reader's own.
    pub async fn publish_later(&mut self, later: Later) -> bool {
        let waited = self.wait_held().await;
        match later.0 {
            LaterKind::Held => waited.is_ok(),
            LaterKind::Wait {
                name,
                payload,
                head,
                elsewhere,
            } => {
                if let Err(reason) = waited {
                    if let Ok(channel) = self.target(&name, elsewhere) {
                        self.lost(&channel, reason);
                    }
                    return false;
                }
                // Tried again: it may have waited only for those held.
                match self.route_message(&name, payload, head, elsewhere) {
                    Ok(done) => done,
                    Err(Later(LaterKind::Wait {
                        name,
                        payload,
                        head,
                        elsewhere,
                    })) => {
                        self.route_locally(name, payload, head, false, elsewhere)
                            .await
                    }
                    Err(Later(LaterKind::Held)) => self.wait_held().await.is_ok(),
                    Err(Later(LaterKind::Ship { channel, rest })) => {
                        self.ship_and_gather(channel, rest).await
                    }
                }
            }
            LaterKind::Ship { channel, rest } => {
                let shipped = self.ship_and_gather(channel, rest).await;
                waited.is_ok() && shipped
            }
        }
    }

    /// Whether held `/queue` messages wait for room: the reader must
    /// [`wait_held`](Self::wait_held) before it reads on or ends.
    pub fn held_blocked(&self) -> bool {
        self.held.blocked.is_some()
    }

    /// Routes what is held, waiting for `/queue` room as long as it must;
    /// `Err` when the broker stopped or the connection was killed first
    /// (what was still held is counted lost, for this reason).
    pub async fn wait_held(&mut self) -> Result<(), DropReason> {
        let killed = killed(self.conn);
        tokio::pin!(killed);
        loop {
            let Some((channel, ..)) = self.held.to.clone() else {
                return Ok(());
            };
            let Kind::Queue(q) = &channel.kind else {
                self.route_held();
                return Ok(());
            };
            let room = q.space_notified();
            tokio::pin!(room);
            // Registered before the attempt, so a refill in between is not missed.
            room.as_mut().enable();
            self.route_held();
            let Some(why) = self.held.blocked else {
                return Ok(());
            };
            if !self
                .held
                .to
                .as_ref()
                .is_some_and(|(c, ..)| Arc::ptr_eq(c, &channel))
            {
                // Its channel retired and the name has another now: wait on that one.
                continue;
            }
            let len = self.held.messages.first().map_or(0, |(p, _)| p.len());
            // Biased: what can be routed at once is, even while the broker
            // is stopping (the attempt above).
            tokio::select! {
                biased;
                _ = q.wait_room_for(room, why, len) => {}
                _ = self.stop.cancelled() => {
                    self.lose_held(DropReason::Shutdown);
                    return Err(DropReason::Shutdown);
                }
                _ = &mut killed => {
                    self.lose_held(DropReason::SubscriberGone);
                    return Err(DropReason::SubscriberGone);
                }
                // As for one message waiting (see route_locally).
                _ = tokio::time::sleep(EVICT_AFTER) => {
                    if !self.router.budget.fits_parked(len) {
                        self.router.evict_for_room(&channel);
                    }
                }
            }
        }
    }

    /// What is still held will not be routed: each counted lost.
    fn lose_held(&mut self, reason: DropReason) {
        let Some((channel, ..)) = self.held.to.take() else {
            return;
        };
        let n = self.held.messages.len() as u64;
        if n > 0 {
            let conn = self.conn.map(|c| &*c.stats);
            self.router.count_drop(Some(&channel), conn, reason, n);
        }
        self.held.messages.clear();
        self.held.bytes = 0;
        self.held.blocked = None;
    }

    /// Waits for the `/queue` messages still on their way into JetStream and
    /// routes here those it would not take: what a client published is stored
    /// (or routed) before its connection is done, since a `send` that gets
    /// end-of-stream is owed that.
    pub async fn settle(&mut self, stop: &CancellationToken) {
        if let Some((upto, sync)) = self.stored.take() {
            if let Some(disk) = self.router.disk() {
                tokio::select! {
                    _ = disk.wait_confirmed(upto, sync) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        let Some(jetstream) = self.links.jetstream else {
            return;
        };
        let Some(outbox) = self.outbox.as_mut().filter(|o| !o.is_empty()) else {
            return;
        };
        let back = outbox.settle(jetstream, stop).await;
        self.route_back(back).await;
    }

    /// `/queue` messages gathered for JetStream wait for this before they
    /// leave: a reader calls it before it waits for more input.
    pub fn holds_open(&self) -> bool {
        self.outbox.as_ref().is_some_and(|o| o.holds_open())
    }

    /// Sends the `/queue` messages gathered for JetStream; false when the
    /// broker stopped or the connection was killed while one that JetStream
    /// would not take waited for room here.
    pub async fn ship(&mut self) -> bool {
        let (Some(jetstream), Some(outbox)) = (self.links.jetstream, self.outbox.as_mut()) else {
            return true;
        };
        let back = outbox.ship(jetstream, self.stop).await;
        self.route_back(back).await
    }

    /// Routes here what JetStream did not take (already counted as published).
    async fn route_back(&mut self, back: Back) -> bool {
        for (channel, part) in back {
            if !self
                .route_locally(channel.name.clone(), part.bytes, part.head, true, false)
                .await
            {
                return false;
            }
        }
        true
    }

    /// A message for a `/queue` channel stored in JetStream: gathered for
    /// its stream without waiting, as nearly every one is. Not async: its
    /// state would be part of every publish's future, which each frame
    /// moves into place (its size showed as memcpy in the reader's profile).
    /// `Err`: the gathering is full or cannot take it, ship first.
    fn gather(&mut self, channel: &Arc<Channel>, payload: Part) -> Result<(), Option<Part>> {
        self.count_channel(channel, payload.len() as u64);
        let outbox = self.outbox.get_or_insert_with(Box::default);
        match outbox.gather(channel, payload) {
            Ok(()) if !outbox.full() => Ok(()),
            Ok(()) => Err(None),
            Err(p) => Err(Some(p)),
        }
    }

    /// Ships what is gathered, then gathers `rest` (the message the
    /// gathering could not take), shipping again as it fills. Boxed by its
    /// caller: JetStream's futures are large, and would otherwise make every
    /// publish, clustered or not, carry their size.
    async fn ship_and_gather(&mut self, channel: Arc<Channel>, mut rest: Option<Part>) -> bool {
        let mut shipped = true;
        loop {
            shipped = self.ship().await && shipped;
            let Some(p) = rest.take() else {
                return shipped;
            };
            let outbox = self.outbox.get_or_insert_with(Box::default);
            match outbox.gather(&channel, p) {
                Ok(()) if !outbox.full() => return shipped,
                Ok(()) => {}
                Err(p) => rest = Some(p),
            }
        }
    }

    /// The channel of the last publish, if it had one.
    pub fn last_channel(&self) -> Option<Arc<Channel>> {
        self.last.clone()
    }

    /// Whether `channel` is that of the last publish.
    pub fn is_last_channel(&self, channel: &Arc<Channel>) -> bool {
        self.last.as_ref().is_some_and(|l| Arc::ptr_eq(l, channel))
    }

    fn channel(&mut self, name: &Bytes) -> Found {
        // The same bytes, when the reader found the name the last one's.
        if let Some(c) = self.last.as_ref().filter(|c| {
            (c.name.as_ptr() == name.as_ptr() && c.name.len() == name.len()) || c.name == name
        }) {
            return Found::Channel(c.clone());
        }
        if let Some(c) = self.cache.get(name) {
            self.last = Some(c.clone());
            return Found::Channel(c.clone());
        }
        let c = match self.router.lookup(name, self.conn.map(|c| c.peer.ip())) {
            Ok(Some(c)) => c,
            Ok(None) => return Found::Unrouted,
            Err(Full) => return Found::Refused,
        };
        if self.cache.len() >= CHANNEL_CACHE {
            self.cache.clear();
        }
        // Keyed by the channel's own copy of the name, not the read buffer's.
        self.cache.insert(c.name.clone(), c.clone());
        self.last = Some(c.clone());
        Found::Channel(c)
    }

    /// Counts a publish refused before it reached the publisher (a v2
    /// `PUB` whose channel name is too long).
    pub fn count_refused(&mut self, reason: DropReason) {
        self.unsaid.received.0 += 1;
        let conn = self.conn.map(|c| &*c.stats);
        self.router.count_drop(None, conn, reason, 1);
    }

    /// Who publishes, as logs name it.
    pub fn who(&self) -> String {
        self.rights
            .as_ref()
            .and_then(|r| r.identity.as_ref())
            .map_or_else(|| "no client certificate".to_string(), |i| i.shown())
    }

    /// Whether the connection's rules let it subscribe to `name`.
    pub fn may_subscribe(&mut self, name: &[u8]) -> bool {
        match &mut self.rights {
            Some(rights) => {
                rights.refresh(self.router);
                rights.rules.may_subscribe(name)
            }
            None => true,
        }
    }

    /// Why the last publish was refused (a protocol v2 reason code) and the
    /// channel it named, if it was; a publish that reached no subscriber was
    /// not refused.
    pub fn take_refusal(&mut self) -> Option<(u8, Bytes)> {
        self.refusal.take()
    }

    /// `/queue` messages are on their way into JetStream and not yet
    /// stored: a confirm for them waits for [`settle`](Self::settle).
    pub fn in_jetstream(&self) -> bool {
        self.outbox.as_ref().is_some_and(|o| !o.is_empty())
    }

    /// What the publishes to durable channels since the last call (or
    /// [`settle`](Self::settle)) wait for to be confirmed: the log position
    /// and whether it must be synced; the caller takes over the wait.
    pub fn take_stored(&mut self) -> Option<(u64, bool)> {
        self.stored.take()
    }

    pub fn disk(&self) -> Option<&Arc<Disk>> {
        self.router.disk()
    }

    /// A publish that would have created a channel past `--max-channels`.
    fn refused(&mut self, name: &Bytes) {
        self.refusal = Some((v2::reason::MAX_CHANNELS, name.clone()));
        let conn = self.conn.map(|c| &*c.stats);
        self.router
            .count_drop(None, conn, DropReason::ChannelLimit, 1);
        self.router.channel_limit_reached();
    }

    /// Routes one message without waiting, when its channel's store is this
    /// broker's memory.
    fn route_now(&mut self, name: &Bytes, payload: &Bytes, head: u16, elsewhere: bool) -> Now {
        loop {
            let channel = match self.target(name, elsewhere) {
                Ok(c) => c,
                Err(done) => return Now::Done(done),
            };
            let holds = match (&channel.kind, channel.store) {
                (Kind::Topic(_), _) => true,
                (Kind::Queue(_), Some(Backend::JetStream)) => false,
                // Protocol 2 answers each publish: one at a time.
                (Kind::Queue(_), _) => self.conn.is_some_and(|c| c.v2.is_none()),
            };
            if holds {
                return Now::Hold(channel);
            }
            // In the order they came: what is held goes first.
            self.route_held();
            if self.held.blocked.is_some() {
                return Now::Wait;
            }
            let routed = match (&channel.kind, channel.store) {
                (Kind::Queue(_), Some(Backend::JetStream)) => return Now::Stream(channel),
                (Kind::Topic(_), _) => unreachable!("a /topic message is held"),
                (Kind::Queue(q), _) => match q.try_publish(payload, head) {
                    Ok(Attempt::Taken) => Ok(()),
                    // Protocol 2 can say why; protocol 1 can only wait.
                    Ok(Attempt::DiskFull) if self.conn.is_some_and(|c| c.v2.is_some()) => {
                        self.refusal = Some((v2::reason::DISK_FULL, name.clone()));
                        self.lost(&channel, DropReason::DiskFull);
                        return Now::Done(true);
                    }
                    Ok(
                        Attempt::Full
                        | Attempt::OverBudget
                        | Attempt::StoreFull
                        | Attempt::DiskFull,
                    ) => return Now::Wait,
                    Err(retired) => Err(retired),
                },
            };
            if self.after(name, &channel, routed, false, payload.len()) {
                return Now::Done(true);
            }
        }
    }

    /// Holds a message for [`route_held`](Self::route_held), which runs
    /// first when it is for another channel than those held.
    fn hold(
        &mut self,
        channel: Arc<Channel>,
        name: &Bytes,
        payload: Bytes,
        head: u16,
        elsewhere: bool,
    ) -> Hold {
        match &self.held.to {
            Some((c, _, e)) if Arc::ptr_eq(c, &channel) && *e == elsewhere => {}
            _ => {
                self.route_held();
                if self.held.blocked.is_some() {
                    return Hold::Back(payload);
                }
                self.held.to = Some((channel.clone(), name.clone(), elsewhere));
            }
        }
        // A /queue message is counted once its backlog took it.
        if matches!(channel.kind, Kind::Topic(_)) {
            self.count_channel(&channel, payload.len() as u64);
        }
        self.held.bytes += payload.len();
        self.held.messages.push((payload, head));
        if self.held.blocked.is_none() && self.held.messages.len() >= HOLD_MAX {
            self.route_held();
        }
        if self.held.blocked.is_some() {
            Hold::Wait
        } else {
            Hold::Held
        }
    }

    /// Routes the messages held. Called before this publisher does anything
    /// else, and by its reader before it waits for input, answers a client
    /// or handles any frame but a publish: a message is held only while its
    /// reader goes through a read buffer without a pause. `/queue` messages
    /// their backlog has no room for stay held ([`Held::blocked`]).
    pub fn route_held(&mut self) {
        let Some((channel, name, elsewhere)) = self.held.to.take() else {
            return;
        };
        if let Kind::Queue(q) = &channel.kind {
            let held = self.held.messages.len();
            match q.try_publish_batch(&mut self.held.messages) {
                Ok(why) => {
                    let left: usize = self.held.messages.iter().map(|(p, _)| p.len()).sum();
                    let taken = held - self.held.messages.len();
                    if taken > 0 {
                        self.placed(&channel, taken, self.held.bytes - left);
                    }
                    self.held.bytes = left;
                    self.held.blocked = why;
                    if why.is_some() {
                        self.held.to = Some((channel, name, elsewhere));
                    }
                }
                Err(Retired) => {
                    // Retired underneath: to the channel that now has the
                    // name, if any (each message that finds none is counted).
                    self.cache.remove(&name);
                    self.last = None;
                    self.held.blocked = None;
                    while !self.held.messages.is_empty() {
                        if let Ok(c) = self.target(&name, elsewhere) {
                            self.held.to = Some((c, name, elsewhere));
                            return self.route_held();
                        }
                        let (payload, _) = self.held.messages.remove(0);
                        self.held.bytes -= payload.len();
                    }
                }
            }
            return;
        }
        let mut messages = std::mem::take(&mut self.held.messages);
        let bytes = std::mem::take(&mut self.held.bytes);
        if self
            .router
            .publish_topic_batch(&channel, &messages, bytes, elsewhere)
            .is_err()
        {
            // Retired underneath: each is routed as a publish would be after
            // a retry, to the channel that now has the name, if any.
            self.cache.remove(&name);
            self.last = None;
            for (payload, head) in messages.drain(..) {
                self.route_topic(&name, &payload, head, elsewhere);
            }
        }
        messages.clear();
        // The buffer is kept: the next read buffer fills it again.
        self.held.messages = messages;
    }

    /// `n` messages of `bytes` in all went to `channel`'s `/queue`.
    fn placed(&mut self, channel: &Arc<Channel>, n: usize, bytes: usize) {
        self.track_stored(channel);
        self.count_channel_n(channel, n as u64, bytes as u64);
    }

    /// Something went to `channel`: when it is durable, a confirm waits for
    /// its store to hold what it has taken so far.
    fn track_stored(&mut self, channel: &Channel) {
        if let Some(log) = match &channel.kind {
            Kind::Queue(q) => q.log(),
            Kind::Topic(_) => None,
        } {
            let (upto, sync) = self.stored.get_or_insert((0, false));
            *upto = (*upto).max(log.last_end.load(Relaxed));
            *sync |= log.sync;
        }
    }

    /// One `/topic` message routed now, already counted for its channel.
    fn route_topic(&mut self, name: &Bytes, payload: &Bytes, head: u16, elsewhere: bool) {
        loop {
            let Ok(channel) = self.target(name, elsewhere) else {
                return;
            };
            let routed = self
                .router
                .publish_topic(&channel, payload, head, elsewhere);
            if self.after(name, &channel, routed, true, payload.len()) {
                return;
            }
        }
    }

    /// Routes one message to this broker's subscribers or workers, waiting
    /// for `/queue` room when it must. `counted`: the channel's publish
    /// counter already has it; `elsewhere`: it went to the cluster too.
    async fn route_locally(
        &mut self,
        name: Bytes,
        payload: Bytes,
        head: u16,
        counted: bool,
        elsewhere: bool,
    ) -> bool {
        let killed = killed(self.conn);
        tokio::pin!(killed);
        loop {
            let channel = match self.target(&name, elsewhere) {
                Ok(c) => c,
                Err(done) => return done,
            };
            let routed = match &channel.kind {
                Kind::Topic(_) => self
                    .router
                    .publish_topic(&channel, &payload, head, elsewhere),
                // Biased: a message that can be routed at once is, even
                // while the broker is stopping.
                Kind::Queue(q) => tokio::select! {
                    biased;
                    r = q.publish(payload.clone(), head) => r,
                    _ = self.stop.cancelled() => {
                        self.lost(&channel, DropReason::Shutdown);
                        return false;
                    }
                    _ = &mut killed => {
                        self.lost(&channel, DropReason::SubscriberGone);
                        return false;
                    }
                    // The backlogs' share is full, and this one is not what
                    // fills it: worker-less backlogs that nobody may ever
                    // come for must not hold every other queue's publishers
                    // for good. The oldest goes, counted.
                    _ = tokio::time::sleep(EVICT_AFTER) => {
                        if !self.router.budget.fits_parked(payload.len()) {
                            self.router.evict_for_room(&channel);
                        }
                        continue;
                    }
                },
            };
            if self.after(&name, &channel, routed, counted, payload.len()) {
                return true;
            }
        }
    }

    /// The channel a publish to `name` goes to; when there is none, the
    /// publish is done (and counted as unrouted, unless it went `elsewhere`:
    /// to the cluster's other brokers; or refused).
    fn target(&mut self, name: &Bytes, elsewhere: bool) -> Result<Arc<Channel>, bool> {
        match self.channel(name) {
            Found::Channel(c) => Ok(c),
            Found::Unrouted => {
                if !elsewhere {
                    self.router.stats().unrouted.fetch_add(1, Relaxed);
                }
                Err(true)
            }
            Found::Refused => {
                self.refused(name);
                Err(true)
            }
        }
    }

    /// After a routing attempt: true when the message was routed (and counted
    /// unless `counted`); false when the channel had retired, which is then
    /// forgotten so that the next attempt looks the name up again.
    fn after(
        &mut self,
        name: &Bytes,
        channel: &Arc<Channel>,
        routed: Result<(), Retired>,
        counted: bool,
        len: usize,
    ) -> bool {
        if routed.is_err() {
            self.cache.remove(name);
            self.last = None;
            return false;
        }
        self.track_stored(channel);
        if !counted {
            self.count_channel(channel, len as u64);
        }
        true
    }

    fn lost(&self, channel: &Channel, reason: DropReason) {
        let conn = self.conn.map(|c| &*c.stats);
        self.router.count_drop(Some(channel), conn, reason, 1);
    }
}
