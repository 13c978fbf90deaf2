//! The channel registry and routing.
//!
//! Routing is synchronous: it hands a message to subscribers' send queues with
//! `try_send` and never awaits a socket. The only await is a `/queue` publisher
//! waiting for backlog space, which is how back-pressure reaches its TCP socket.
//!
//! Locks: the registry mutex is taken only to find, create or retire a channel
//! (readers keep their own cache of channels they publish to); each channel has its
//! own mutex. Order when both are needed: registry, then channel.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;

use super::lock;
use super::log_every::LogEvery;

use super::budget::Budget;
use super::conn::{Conn, Refused};
use super::delivery::Out;
use super::policy::{ChannelPolicy, Policy};
pub use super::queue::Retired;
use super::queue::{ChannelLog, QueueState};
use super::stats::{BrokerStats, ChannelStats, ConnStats, DropReason};
use super::store::disk::Disk;
use super::store::{Backend, ChannelLink};
use super::subscription::{Ids, Subscription};
use super::{BrokerConfig, TopicOverflow};
use crate::proto;
use crate::proto::v2;

/// What [`Router::drop_backlogs`] let go, for its one log line.
#[derive(Default)]
pub struct Dropped {
    pub messages: u64,
    pub channels: u64,
    /// The channel that held the most, and how many.
    pub most: (u64, String),
}

/// The registry holds `--max-channels` channels: no new one can be created.
#[derive(Debug)]
pub struct Full;

pub struct Channel {
    pub name: Bytes,
    pub stats: ChannelStats,
    pub kind: Kind,
    /// Where a `/queue` channel's messages are kept (`None` for a `/topic`),
    /// chosen once, when the channel is made.
    pub store: Option<Backend>,
    /// Its place in the cluster, when the broker is in one.
    pub link: ChannelLink,
    /// Disconnect (rather than skip) a `/topic` subscriber whose send queue
    /// is full: the channel's policy, which a reload may change.
    disconnect_slow: AtomicBool,
    /// Its own memory, counted in the budget for as long as it lives.
    _cost: Option<Cost>,
    /// The address (IPv6: its /64) whose publish created this worker-less
    /// `/queue` channel, until a worker comes: what that address holds of
    /// the registry. Read and written under the registry lock only.
    maker: Mutex<Option<IpAddr>>,
}

/// What a channel costs besides payloads: its state (counters, locks, queues,
/// the registry entry; 755 B of RSS each, measured over 100,000 worker-less
/// `/queue` channels, rounded up) and its name. Given back when the last
/// reference goes.
const CHANNEL_COST: usize = 1024;

struct Cost {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Cost {
    fn drop(&mut self) {
        self.budget.remove_overhead(self.bytes);
    }
}

/// A channel gaining or losing its place in the registry, for whoever follows
/// the router (the cluster, which subscribes or pulls while a channel exists).
pub enum Interest {
    On(Arc<Channel>),
    Off(Arc<Channel>),
}

// A channel's kind is made once inside its `Arc<Channel>` and never moved:
// boxing the queue would cost every queue message a pointer chase.
#[allow(clippy::large_enum_variant)]
pub enum Kind {
    Topic(Mutex<TopicState>),
    Queue(QueueState),
}

#[derive(Default)]
pub struct TopicState {
    subs: Vec<Arc<Subscription>>,
    retired: bool,
}

impl Channel {
    /// A `/topic` channel outside any registry, which nothing routes to: for
    /// tests of parts that hold a channel without looking at it.
    #[cfg(test)]
    pub fn unregistered(name: Bytes) -> Self {
        Channel {
            name,
            stats: ChannelStats::default(),
            kind: Kind::Topic(Mutex::new(TopicState {
                subs: Vec::new(),
                retired: true,
            })),
            store: None,
            link: ChannelLink::default(),
            disconnect_slow: AtomicBool::new(false),
            _cost: None,
            maker: Mutex::new(None),
        }
    }

    pub fn overflow(&self) -> TopicOverflow {
        if self.disconnect_slow.load(Relaxed) {
            TopicOverflow::Disconnect
        } else {
            TopicOverflow::Drop
        }
    }

    /// Applies a (reloaded) policy to a channel that exists: the overflow
    /// policy and the backlog's bounds; send queues keep the bounds they
    /// were made with.
    fn apply(&self, policy: &ChannelPolicy) {
        self.disconnect_slow
            .store(policy.topic_overflow == TopicOverflow::Disconnect, Relaxed);
        if let Kind::Queue(q) = &self.kind {
            q.set_bounds(policy.backlog, policy.backlog_bytes);
        }
    }

    /// Subscribers (`/topic`) or workers (`/queue`) now.
    pub fn subscriber_count(&self) -> usize {
        match &self.kind {
            Kind::Topic(t) => lock(t).subs.len(),
            Kind::Queue(q) => q.worker_count(),
        }
    }

    /// Payload bytes in the backlog (`/queue`).
    pub fn backlog_bytes(&self) -> usize {
        match &self.kind {
            Kind::Topic(_) => 0,
            Kind::Queue(q) => q.backlog_bytes(),
        }
    }

    /// The name as logs show it (escaped: it is client text).
    pub fn display_name(&self) -> String {
        proto::shown(&self.name)
    }

    pub fn backlog_len(&self) -> usize {
        match &self.kind {
            Kind::Topic(_) => 0,
            Kind::Queue(q) => q.backlog_len(),
        }
    }
}

/// The channels by name, with what fair sharing of `--max-channels` needs:
/// who made each worker-less `/queue` channel, and their age.
#[derive(Default)]
struct Registry {
    map: HashMap<Bytes, Arc<Channel>>,
    /// `/queue` channels, oldest first: where eviction looks. Entries of
    /// channels gone are dropped when it looks, or when they outnumber the
    /// live ones.
    queues: VecDeque<Weak<Channel>>,
    /// Worker-less `/queue` channels each address created by publishing.
    made: HashMap<IpAddr, usize>,
}

impl Registry {
    fn holds(&self, channel: &Arc<Channel>) -> bool {
        self.map
            .get(&channel.name)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
    }

    fn insert(&mut self, channel: Arc<Channel>) {
        if matches!(channel.kind, Kind::Queue(_)) {
            if self.queues.len() > 2 * self.map.len() + 64 {
                self.queues.retain(|w| w.strong_count() > 0);
            }
            self.queues.push_back(Arc::downgrade(&channel));
        }
        if let Some(ip) = *lock(&channel.maker) {
            *self.made.entry(ip).or_insert(0) += 1;
        }
        self.map.insert(channel.name.clone(), channel);
    }

    /// Its maker no longer holds it: a worker came, or it is gone.
    fn unmake(&mut self, channel: &Channel) {
        if let Some(ip) = lock(&channel.maker).take() {
            if let Some(n) = self.made.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.made.remove(&ip);
                }
            }
        }
    }

    /// Takes `channel` out if it is the one under its name; true if it was.
    fn remove(&mut self, channel: &Arc<Channel>) -> bool {
        if !self.holds(channel) {
            return false;
        }
        self.map.remove(&channel.name);
        self.unmake(channel);
        true
    }

    fn made_by(&self, ip: IpAddr) -> usize {
        self.made.get(&ip).copied().unwrap_or(0)
    }

    /// The oldest `/queue` channel that `which` picks with no worker and none
    /// leaving, taken out of the registry with its backlog emptied; the
    /// backlog's length too.
    fn evict_oldest_where(
        &mut self,
        which: impl Fn(&Arc<Channel>) -> bool,
    ) -> Option<(Arc<Channel>, usize)> {
        // Each live channel is looked at once at most.
        let mut live = self.queues.len();
        while live > 0 {
            let weak = self.queues.pop_front()?;
            let Some(channel) = weak.upgrade().filter(|c| self.holds(c)) else {
                continue;
            };
            live -= 1;
            let Kind::Queue(q) = &channel.kind else {
                continue;
            };
            // A durable channel's messages wait for a worker, however long.
            if !which(&channel) || channel.store == Some(Backend::Disk) {
                self.queues.push_back(weak);
                continue;
            }
            match q.evict() {
                Some(n) => {
                    self.remove(&channel);
                    return Some((channel, n));
                }
                None => self.queues.push_back(weak),
            }
        }
        None
    }
}

pub struct Router {
    channels: Mutex<Registry>,
    /// Told of every channel created and retired, when someone follows (the cluster).
    interest: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Interest>>,
    /// Where new `/queue` channels keep their messages: memory unless a
    /// store was named before the broker ran (the cluster's JetStream).
    queue_store: std::sync::OnceLock<Backend>,
    /// The durable store, when the broker has one.
    disk: std::sync::OnceLock<Arc<Disk>>,
    pub budget: Arc<Budget>,
    config: Arc<BrokerConfig>,
    /// Swapped whole on reload; read when a channel or a connection begins.
    policy: RwLock<Arc<Policy>>,
    /// Bumped at every reload, so that connections know to look again.
    generation: AtomicU64,
    stats: Arc<BrokerStats>,
    born: std::time::Instant,
    channel_limit_log: LogEvery,
    evicted_log: LogEvery,
    /// Channels evicted for subscriptions.
    evicted: AtomicU64,
}

impl Router {
    pub fn new(config: Arc<BrokerConfig>, stats: Arc<BrokerStats>) -> Self {
        Self {
            born: std::time::Instant::now(),
            channel_limit_log: LogEvery::default(),
            evicted_log: LogEvery::default(),
            evicted: AtomicU64::new(0),
            channels: Mutex::new(Registry::default()),
            interest: std::sync::OnceLock::new(),
            queue_store: std::sync::OnceLock::new(),
            disk: std::sync::OnceLock::new(),
            budget: Arc::new(Budget::new(config.max_memory)),
            policy: RwLock::new(Arc::new(Policy::from_config(&config))),
            generation: AtomicU64::new(0),
            config,
            stats,
        }
    }

    /// `/queue` channels made from now on keep their messages in `store`.
    pub fn store_queues_in(&self, store: Backend) {
        let _ = self.queue_store.set(store);
    }

    /// Durable channels keep their messages in `disk` from now on.
    pub fn use_disk(&self, disk: Arc<Disk>) {
        let _ = self.disk.set(disk);
    }

    pub fn disk(&self) -> Option<&Arc<Disk>> {
        self.disk.get()
    }

    /// Puts back what the durable store held at start: each channel made,
    /// its messages in its backlog in order, with the attempt each is at
    /// (a message written to an acknowledging worker before the stop comes
    /// back as the attempt after, counted). Before the broker serves.
    pub fn restore(&self, channels: Vec<(Bytes, Vec<super::store::disk::Stored>)>) {
        for (name, msgs) in channels {
            let channel = {
                let mut reg = lock(&self.channels);
                match reg.map.get(&name) {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.new_channel(name.clone(), None);
                        reg.insert(c.clone());
                        c
                    }
                }
            };
            let Kind::Queue(q) = &channel.kind else {
                continue;
            };
            let again = msgs.iter().filter(|m| m.delivered > 0).count() as u64;
            if let Some(disk) = self.disk() {
                disk.stats
                    .redelivered_after_restart
                    .fetch_add(again, Relaxed);
            }
            q.restore_stored(msgs);
        }
    }

    /// Reports channels created and retired to `interest` from now on.
    pub fn follow(&self, interest: tokio::sync::mpsc::UnboundedSender<Interest>) {
        let _ = self.interest.set(interest);
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Which policy connections should be following: it changes at reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Puts `policy` in force: for channels made from now on, and for the
    /// overflow policy and backlog bounds of those that exist.
    pub fn set_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy.clone();
        self.generation.fetch_add(1, Relaxed);
        for c in self.channels() {
            c.apply(&policy.for_channel(&c.name));
        }
    }

    /// A new channel. Its name is copied out of the read buffer it came in:
    /// a slice would keep that whole buffer alive as long as the channel.
    /// `maker`: the address whose publish makes it (worker-less until a
    /// worker comes).
    fn new_channel(&self, name: Bytes, maker: Option<IpAddr>) -> Arc<Channel> {
        let name = Bytes::copy_from_slice(&name);
        let policy = self.policy().for_channel(&name);
        let (kind, store) = if proto::is_queue(&name) {
            let queue = QueueState::new(policy.backlog, policy.backlog_bytes, self.budget.clone());
            let store = self.queue_store.get().copied().unwrap_or(Backend::Memory);
            // Durable by policy, or because the store still holds some of
            // its messages (a policy changed since must not lose them).
            match self
                .disk
                .get()
                .filter(|d| store == Backend::Memory && (policy.durable || d.channel(&name).0 > 0))
            {
                Some(disk) => (
                    Kind::Queue(
                        queue.durable(ChannelLog::new(
                            disk.clone(),
                            name.clone(),
                            policy
                                .fsync_always
                                .unwrap_or(disk.mode() == super::Fsync::Always),
                            policy.max_disk,
                        )),
                    ),
                    Some(Backend::Disk),
                ),
                None => (Kind::Queue(queue), Some(store)),
            }
        } else {
            (Kind::Topic(Mutex::new(TopicState::default())), None)
        };
        let bytes = CHANNEL_COST + name.len();
        self.budget.add_overhead(bytes);
        let channel = Arc::new(Channel {
            name,
            stats: ChannelStats::default(),
            kind,
            store,
            link: ChannelLink::default(),
            disconnect_slow: AtomicBool::new(policy.topic_overflow == TopicOverflow::Disconnect),
            _cost: Some(Cost {
                budget: self.budget.clone(),
                bytes,
            }),
            maker: Mutex::new(maker),
        });
        if let Kind::Queue(q) = &channel.kind {
            if let Some(log) = q.log() {
                log.set_channel(Arc::downgrade(&channel));
            }
        }
        // Sent under the registry lock, so On and Off reach the follower in the
        // order channels come and go.
        if let Some(tx) = self.interest.get() {
            let _ = tx.send(Interest::On(channel.clone()));
        }
        channel
    }

    /// Channels in the registry now.
    pub fn channel_count(&self) -> usize {
        lock(&self.channels).map.len()
    }

    /// Worker-less `/queue` channels one address may create by publishing:
    /// a tenth of the registry, so that one client (or a few) cannot take
    /// the names everyone else needs.
    pub fn share(&self) -> usize {
        self.config.max_channels.div_ceil(10)
    }

    /// Subscribes `conn` to channel `name`, creating the channel if needed.
    /// (The null channel is not one: a publish-only client subscribes to
    /// nothing, and its caller does not ask.)
    pub fn subscribe(&self, name: Bytes, conn: &Arc<Conn>) -> Result<Arc<Subscription>, Full> {
        self.subscribe_as(name, conn, Ids::V1, None, || {})
    }

    /// Subscribes `conn` to `name` under `ids`. `announce` runs once the
    /// subscription cannot fail and before any message can be routed to it:
    /// a protocol v2 connection queues `SUBSCRIBED` there, so that it comes
    /// before the subscription's first `MSG`.
    pub fn subscribe_as(
        &self,
        name: Bytes,
        conn: &Arc<Conn>,
        ids: Ids,
        acks: Option<u32>,
        announce: impl FnOnce(),
    ) -> Result<Arc<Subscription>, Full> {
        // What it costs the memory budget was taken by the caller (v2).
        let charged = if conn.v2.is_some() {
            super::subscription::cost(&name)
        } else {
            0
        };
        debug_assert!(!proto::is_null(&name));
        let mut channels = lock(&self.channels);
        let channel = match channels.map.get(&name) {
            Some(c) => c.clone(),
            None => {
                if channels.map.len() >= self.config.max_channels {
                    // A subscriber is someone waiting for messages: it takes
                    // the name of a channel nobody waits on.
                    let Some((old, n)) = channels.evict_oldest_where(|_| true) else {
                        return Err(Full);
                    };
                    self.evicted(&old, n);
                }
                let c = self.new_channel(name, None);
                channels.insert(c.clone());
                c
            }
        };
        let mut sub = Subscription::new(conn.clone(), channel.clone(), ids).charged(charged);
        if conn.v2.is_some() && matches!(channel.kind, Kind::Topic(_)) {
            // One send queue for all a connection's subscriptions, sized by
            // the defaults: a channel whose entry bounds it tighter gets its
            // bound per subscription.
            let (messages, bytes) = self
                .policy()
                .for_channel(&channel.name)
                .send_bounds(&channel.name);
            let (conn_messages, conn_bytes) = conn.bounds();
            if messages < conn_messages || bytes < conn_bytes {
                sub = sub.with_topic_bound(messages.min(conn_messages), bytes.min(conn_bytes));
            }
        }
        if conn.v2.is_some() && matches!(channel.kind, Kind::Queue(_)) {
            let policy = self.policy();
            let prefetch = policy.for_channel(&channel.name).worker_queue;
            sub = match acks {
                Some(asked) => {
                    let max = self.config.max_credit as usize;
                    let credit = match asked {
                        0 => prefetch.min(max),
                        n => (n as usize).min(max),
                    };
                    sub.with_acks(policy.acks_for(&channel.name), credit)
                }
                None => sub.with_prefetch(prefetch),
            };
        }
        let sub = Arc::new(sub);
        announce();
        // Held by the connection before anything can be routed to it: a
        // backlog reaches a new worker at once, and a protocol 2 writer
        // that woke for it would not know the subscription it names (and
        // skip the message).
        conn.hold(sub.clone());
        match &channel.kind {
            Kind::Topic(t) => lock(t).subs.push(sub.clone()),
            Kind::Queue(q) => {
                q.add_worker(sub.clone());
                channels.unmake(&channel);
            }
        }
        Ok(sub)
    }

    /// Evicts the oldest worker-less `/queue` backlog other than `except`'s,
    /// for a publisher that has waited for the backlogs' share of the budget.
    pub fn evict_for_room(&self, except: &Arc<Channel>) {
        let mut channels = lock(&self.channels);
        let evicted =
            channels.evict_oldest_where(|c| !Arc::ptr_eq(c, except) && c.backlog_len() > 0);
        if let Some((channel, n)) = evicted {
            // Under the registry lock, as every retirement is told.
            self.evicted(&channel, n);
        }
    }

    /// Tells the follower, if any, that `channel` left the registry. Called
    /// under the registry lock, so On and Off reach it in order.
    fn retired(&self, channel: &Arc<Channel>) {
        if let Some(tx) = self.interest.get() {
            let _ = tx.send(Interest::Off(channel.clone()));
        }
    }

    /// Counts and tells (at most once a second) a channel evicted for a
    /// subscription or for room; told to the cluster as a retirement.
    fn evicted(&self, channel: &Arc<Channel>, messages: usize) {
        self.count_drop(Some(channel), None, DropReason::Evicted, messages as u64);
        self.evicted.fetch_add(1, Relaxed);
        self.retired(channel);
        if let Some(n) = self.evicted_log.due(self.born) {
            tracing::warn!(
                "{n} worker-less /queue channel(s) evicted to make room for new subscriptions \
                 (--max-channels {} reached) or for other queues' publishers (the backlogs' \
                 half of --max-memory full); last {}, {messages} message(s) dropped with it; \
                 {} evicted in all",
                self.config.max_channels,
                channel.display_name(),
                self.evicted.load(Relaxed),
            );
        }
    }

    /// The channel a publish to `name` goes to. `/topic` channels with no
    /// subscriber do not exist (nothing would be stored); `/queue` channels are
    /// created so their backlog can hold messages for workers yet to come.
    ///
    /// `maker`: the publishing connection's address. An address holds at
    /// most [`share`](Self::share) worker-less channels it created; the
    /// broker's own publishes (`None`) are not counted.
    pub fn lookup(
        &self,
        name: &Bytes,
        maker: Option<IpAddr>,
    ) -> Result<Option<Arc<Channel>>, Full> {
        if proto::is_null(name) {
            return Ok(None);
        }
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.map.get(name) {
            return Ok(Some(c.clone()));
        }
        if !proto::is_queue(name) {
            return Ok(None);
        }
        if channels.map.len() >= self.config.max_channels {
            return Err(Full);
        }
        let maker = maker.map(super::address_key);
        if maker.is_some_and(|ip| channels.made_by(ip) >= self.share()) {
            return Err(Full);
        }
        let c = self.new_channel(name.clone(), maker);
        channels.insert(c.clone());
        Ok(Some(c))
    }

    /// Routes one `/topic` message; never waits. `elsewhere`: it also went to
    /// the cluster's other brokers, so no subscriber here does not make it
    /// unrouted.
    pub fn publish_topic(
        &self,
        channel: &Channel,
        payload: &Bytes,
        head: u16,
        elsewhere: bool,
    ) -> Result<(), Retired> {
        self.publish_topic_batch(
            channel,
            &[(payload.clone(), head)],
            payload.len(),
            elsewhere,
        )
    }

    /// Routes `/topic` messages in order; never waits. One lock of the
    /// channel, and per subscriber one hand-off for as many as fit whole in
    /// its send queue (`bytes`: the payloads' sum); what does not fit is
    /// offered one by one, and each one refused is counted.
    pub fn publish_topic_batch(
        &self,
        channel: &Channel,
        batch: &[(Bytes, u16)],
        bytes: usize,
        elsewhere: bool,
    ) -> Result<(), Retired> {
        let Kind::Topic(state) = &channel.kind else {
            unreachable!("publish_topic_batch on a queue channel")
        };
        let mut state = lock(state);
        if state.retired {
            return Err(Retired);
        }
        if state.subs.is_empty() {
            if !elsewhere {
                let n = batch.len() as u64;
                channel.stats.unrouted.fetch_add(n, Relaxed);
                self.stats.unrouted.fetch_add(n, Relaxed);
            }
            return Ok(());
        }
        let mut evict = false;
        for s in &state.subs {
            let taken = s.offer_batch(batch, bytes);
            for (payload, head) in &batch[taken..] {
                if let Err(refused) = s.offer(payload.clone(), *head) {
                    // Gone or cut off: the rest would have found it gone
                    // from the channel, had each been routed on its own.
                    if self.refused_topic(channel, s, refused) {
                        evict = true;
                        break;
                    }
                }
            }
        }
        if evict {
            self.evict_gone(channel, &mut state);
        }
        Ok(())
    }

    /// Takes off `channel` the subscribers that are gone or were cut off.
    fn evict_gone(&self, channel: &Channel, state: &mut TopicState) {
        state.subs.retain(|s| {
            let s = &s.conn;
            let keep = !s.kill.is_cancelled() && !s.is_closed();
            if !keep && s.slow.load(Relaxed) {
                self.stats.slow_consumers_disconnected.fetch_add(1, Relaxed);
                tracing::warn!(
                    "Remote {} disconnected as a slow consumer on {}: send queue full \
                     ({} messages or {} bytes)",
                    s.peer,
                    channel.display_name(),
                    s.bounds().0,
                    s.bounds().1,
                );
            }
            keep
        });
    }

    /// Counts a `/topic` message that subscription `s` refused; true when
    /// `s` is to leave the channel (gone, or disconnected as slow).
    fn refused_topic(&self, channel: &Channel, s: &Subscription, refused: Refused) -> bool {
        let sub = &s.conn;
        match refused {
            Refused::Full(_) => match channel.overflow() {
                TopicOverflow::Drop => {
                    self.count_drop(Some(channel), Some(&sub.stats), DropReason::QueueFull, 1);
                    s.note_lost(1, v2::reason::OVERFLOW);
                    if let Some(n) = sub.note_drop() {
                        tracing::warn!(
                            "Remote {} is a slow consumer on {}: dropped {n} message(s), \
                             its send queue is full ({} messages or {} bytes; {} dropped in all)",
                            sub.peer,
                            channel.display_name(),
                            sub.bounds().0,
                            sub.bounds().1,
                            sub.overflow_drops(),
                        );
                    }
                    false
                }
                TopicOverflow::Disconnect => {
                    self.count_drop(Some(channel), Some(&sub.stats), DropReason::SlowConsumer, 1);
                    sub.slow.store(true, Relaxed);
                    sub.kill.cancel();
                    true
                }
            },
            // Every subscriber finds the budget spent, fast or slow: nobody
            // is disconnected for it, whatever the overflow policy.
            Refused::OverBudget(_) => {
                self.count_drop(Some(channel), Some(&sub.stats), DropReason::MemoryLimit, 1);
                s.note_lost(1, v2::reason::OVER_BUDGET);
                if let Some(n) = sub.note_drop() {
                    tracing::warn!(
                        "Remote {} on {}: dropped {n} message(s), the broker's memory \
                         budget of {} bytes is spent ({} dropped in all)",
                        sub.peer,
                        channel.display_name(),
                        self.config.max_memory,
                        sub.overflow_drops(),
                    );
                }
                false
            }
            Refused::Closed(_) => {
                self.count_drop(
                    Some(channel),
                    Some(&sub.stats),
                    DropReason::SubscriberGone,
                    1,
                );
                true
            }
        }
    }

    /// The one place a loss is counted: at the broker, and at the channel and
    /// the connection when the message had one (an empty payload has no
    /// channel; a backlog discarded at shutdown, or a message from inside the
    /// broker, has no connection).
    pub fn count_drop(
        &self,
        channel: Option<&Channel>,
        conn: Option<&ConnStats>,
        reason: DropReason,
        n: u64,
    ) {
        if n == 0 {
            return;
        }
        if let Some(channel) = channel {
            channel.stats.dropped.add(reason, n);
        }
        if let Some(conn) = conn {
            conn.dropped.add(reason, n);
        }
        self.stats.dropped.add(reason, n);
    }

    /// Stops routing to `sub`, which is still being sent what it is owed;
    /// [`leave`](Self::leave) follows.
    pub fn stop_routing(&self, sub: &Arc<Subscription>) {
        match &sub.channel.kind {
            Kind::Topic(_) => self.leave(sub, Vec::new(), false),
            Kind::Queue(q) => q.stop_routing(sub),
        }
    }

    /// Takes `sub` off `channel` for good. `unsent` are messages that were queued
    /// for it and not written: `/queue` messages go back to the front of the
    /// backlog for other workers; `/topic` ones are counted as dropped.
    pub fn leave(&self, sub: &Arc<Subscription>, unsent: Vec<Out>, shutdown: bool) {
        let channel = &sub.channel;
        let mut channels = lock(&self.channels);
        let empty = match &channel.kind {
            Kind::Topic(state) => {
                let mut state = lock(state);
                state.subs.retain(|s| !Arc::ptr_eq(s, sub));
                let sub = &sub.conn;
                let reason = if sub.slow.load(Relaxed) {
                    DropReason::SlowConsumer
                } else if shutdown {
                    DropReason::Shutdown
                } else {
                    DropReason::SubscriberGone
                };
                self.count_drop(Some(channel), Some(&sub.stats), reason, unsent.len() as u64);
                let empty = state.subs.is_empty();
                if empty {
                    state.retired = true;
                }
                empty
            }
            Kind::Queue(q) => q.remove_worker(sub, unsent),
        };
        if empty && channels.remove(channel) {
            self.retired(channel);
        }
    }

    /// Payload bytes waiting in every `/queue` backlog.
    pub fn backlog_bytes(&self) -> usize {
        self.channels()
            .iter()
            .map(|c| match &c.kind {
                Kind::Queue(q) => q.backlog_bytes(),
                Kind::Topic(_) => 0,
            })
            .sum()
    }

    /// Says (at most once a second) that channels were refused at the limit.
    pub fn channel_limit_reached(&self) {
        if let Some(n) = self.channel_limit_log.due(self.born) {
            tracing::warn!(
                "{n} publish(es) or subscription(s) refused: the broker holds \
                 --max-channels {} channels ({} refused in all)",
                self.config.max_channels,
                self.stats.dropped.get(DropReason::ChannelLimit),
            );
        }
    }

    /// Every channel, for counters and the shutdown summary.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        lock(&self.channels).map.values().cloned().collect()
    }

    /// Discards the backlogs of `/queue` channels that have had no worker for
    /// `ttl` (counted as `expired`) and retires those channels; one line for all.
    pub fn expire_backlogs(&self, ttl: std::time::Duration) {
        let d = self.drop_backlogs(DropReason::Expired, |q| q.expire(ttl));
        if d.messages > 0 {
            tracing::warn!(
                "{} message(s) expired in the backlogs of {} /queue channel(s) that had no \
                 worker for {ttl:?} (--backlog-ttl)",
                d.messages,
                d.channels
            );
        }
    }

    /// Empties what `take` takes from each `/queue` backlog, counting it under
    /// `reason`; channels left idle retire.
    pub fn drop_backlogs(
        &self,
        reason: DropReason,
        take: impl Fn(&QueueState) -> usize,
    ) -> Dropped {
        let mut d = Dropped::default();
        for channel in self.channels() {
            let Kind::Queue(q) = &channel.kind else {
                continue;
            };
            let n = take(q) as u64;
            if n == 0 {
                continue;
            }
            self.count_drop(Some(&channel), None, reason, n);
            d.messages += n;
            d.channels += 1;
            if n > d.most.0 {
                d.most = (n, channel.display_name());
            }
            self.retire_if_idle(&channel);
        }
        d
    }

    /// Largest payload a subscriber here can be sent.
    pub fn max_frame(&self) -> usize {
        self.config.max_frame
    }

    /// Retires `/queue` channel `channel` if nothing uses it here (no worker,
    /// none leaving, no backlog): for the cluster, whose worker-less channels
    /// would otherwise stay (and be pulled for) for ever. True when retired.
    pub fn retire_if_idle(&self, channel: &Arc<Channel>) -> bool {
        let mut channels = lock(&self.channels);
        let Kind::Queue(q) = &channel.kind else {
            return false;
        };
        if !q.retire_if_idle() {
            return false;
        }
        if channels.remove(channel) {
            self.retired(channel);
        }
        true
    }

    pub fn stats(&self) -> &Arc<BrokerStats> {
        &self.stats
    }
}
