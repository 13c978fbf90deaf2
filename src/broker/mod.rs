//! The broker: accepts connections, routes frames, shuts down gracefully.
//!
//! Invariants this module exists to keep:
//! - Receiving and sending are decoupled. Each connection has a reader task (which
//!   routes what it reads) and a writer task (which drains that connection's own
//!   bounded send queue to its socket). Routing hands messages over with
//!   `try_send` and never awaits a subscriber's socket, so a slow subscriber can
//!   only fill its own queue.
//! - Every message that is not delivered is counted, per broker, per channel and
//!   per connection, under a [`stats::DropReason`].
//! - `/queue` messages are never dropped for being slow: a full backlog stops
//!   the publisher's reader, which is TCP back-pressure; a departing worker's
//!   queued messages go back to the channel. Only backlogs with no worker can
//!   go, counted: evicted for a subscription or for room, or expired.
//!
//! Shutdown order: stop accepting, stop reading, let every writer flush its queue
//! (and `/queue` backlogs) and send the end-of-stream frame, all within the drain
//! timeout; what is still unsent after it is counted as dropped at shutdown.

// Connection paths must not panic on any input: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod budget;
mod cluster;
mod conn;
mod delivery;
pub mod end;
mod held;
pub(crate) mod log_every;
pub mod monitor;
mod peer_log;
pub mod policy;
mod publish;
mod queue;
mod read_budget;
mod reader;
mod router;
mod send_queue;
mod session_v2;
mod shutdown;
mod spill_index;
pub mod stats;
mod store;
mod subscription;
mod writer;

pub use cluster::{redact, ClusterConfig};
pub use store::disk::{Disk, Fsync, OpenError as DiskOpenError, Recovered};

/// Replays arbitrary bytes as one segment of the durable store: how many
/// messages they hold unsettled. For the fuzzer.
#[doc(hidden)]
pub fn replay_segment(bytes: &[u8]) -> usize {
    store::disk::recover::replay_bytes(bytes).0
}

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use self::cluster::Cluster;
use self::peer_log::PeerLog;
use self::publish::Publisher;
use self::router::Router;
use self::stats::{BrokerStats, DropReason, Summary};
use self::store::Replies;
use crate::runtime::address_key;

/// Locks a mutex, carrying on past poisoning: the state these mutexes guard
/// (lists of subscribers, backlogs) stays consistent at every await-free step,
/// and a broker must not take every connection down because one task panicked.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What happens to a `/topic` subscriber whose send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicOverflow {
    /// The subscriber misses the message; the loss is counted.
    Drop,
    /// The subscriber is disconnected as a slow consumer; the loss is counted.
    Disconnect,
}

impl TopicOverflow {
    /// Its name in flags, config files and logs.
    pub fn name(self) -> &'static str {
        match self {
            TopicOverflow::Drop => "drop",
            TopicOverflow::Disconnect => "disconnect",
        }
    }
}

/// Limits and policies of one broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Messages each `/topic` subscriber's send queue holds.
    pub send_queue: usize,
    /// Payload bytes any subscriber's send queue holds (topic or queue): a
    /// queue is full at either bound.
    pub send_queue_bytes: usize,
    /// Messages each `/queue` worker's send queue holds: its prefetch. Small, so
    /// that a stalled worker holds little work that others could be doing; what
    /// does not fit waits in the channel's backlog for whichever worker frees up.
    pub worker_queue: usize,
    /// Messages each `/queue` channel holds when no worker has room.
    pub backlog: usize,
    /// Payload bytes each `/queue` backlog holds (one message always fits).
    pub backlog_bytes: usize,
    /// A backlog that has had no worker for this long is discarded (counted
    /// as `expired`); `None` keeps backlogs until a worker comes.
    pub backlog_ttl: Option<Duration>,
    pub topic_overflow: TopicOverflow,
    pub max_frame: usize,
    pub max_channel: usize,
    /// Channels the registry holds at most: each costs memory outside the
    /// payload budget, and a `/queue` name creates one on first publish.
    pub max_channels: usize,
    /// Subscriptions one protocol v2 connection may hold at once.
    pub max_subscriptions: usize,
    /// How long an acknowledging worker may hold a delivery unanswered.
    pub ack_wait: Duration,
    /// Failed deliveries after which a message is dead-lettered.
    pub max_deliveries: u32,
    /// Unacknowledged deliveries one acknowledging worker may hold.
    pub max_credit: u32,
    pub max_connections: usize,
    /// How long a new connection has to send its subscribe frame.
    pub subscribe_timeout: Duration,
    /// Idle time before TCP keepalive probes start; `None` disables them.
    pub keepalive: Option<Duration>,
    pub drain_timeout: Duration,
    /// Payload bytes all send queues and backlogs may hold together.
    pub max_memory: usize,
    /// Connections one source address may hold; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// Loopback addresses are not held to `max_connections_per_ip` (its
    /// default, which protects against remote clients).
    pub per_ip_spares_loopback: bool,
    /// A subscriber whose socket accepts no bytes for this long while the broker
    /// has data for it is gone (or hopelessly stalled): it is disconnected.
    pub write_timeout: Duration,
    /// A connection that leaves a frame half-sent for this long is closed.
    pub frame_timeout: Duration,
    /// Prefixes of the `/queue` channels kept in the durable store.
    pub durable: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            send_queue: 65_536,
            send_queue_bytes: 32 << 20,
            worker_queue: 64,
            backlog: 10_000,
            backlog_bytes: 64 << 20,
            backlog_ttl: None,
            topic_overflow: TopicOverflow::Drop,
            max_frame: crate::proto::DEFAULT_MAX_FRAME,
            max_channel: crate::proto::DEFAULT_MAX_CHANNEL,
            max_channels: 100_000,
            max_subscriptions: 64,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_credit: 1024,
            max_connections: 10_000,
            subscribe_timeout: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(5),
            max_memory: 1 << 30,
            max_connections_per_ip: 0,
            per_ip_spares_loopback: true,
            write_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(30),
            durable: Vec::new(),
        }
    }
}

/// State every connection task shares.
struct Shared {
    config: Arc<BrokerConfig>,
    router: Arc<Router>,
    stats: Arc<BrokerStats>,
    next_id: AtomicU64,
    phases: shutdown::Phases,
    /// Open connections per source address, kept only when there is a limit.
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Serves TLS when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Read buffers past each connection's free allowance: a quarter of
    /// --max-memory, apart from the payload budget (a full payload budget must
    /// not stop /topic publishers, whose messages are then dropped and counted).
    reading: Arc<read_budget::ReadBudget>,
    /// Per-address rate limits of the warnings a client can cause.
    refused_log: PeerLog,
    /// TLS refusal reasons said so far.
    tls_reasons: peer_log::NewReasons,
    protocol_log: PeerLog,
    denied_log: PeerLog,
    /// Connections that have subscribed, by id: for the monitoring endpoint,
    /// and for a reload to end those its access rules no longer allow.
    connections: std::sync::Mutex<std::collections::HashMap<u64, Registered>>,
    /// Set once the broker has joined a cluster: the publish path forks there.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Set with `cluster`: how writers answer JetStream's deliveries.
    replies: std::sync::OnceLock<Replies>,
    /// This broker process, as protocol v2 hellos name it.
    server_id: String,
    /// Connections that have held deliveries (acknowledging workers), for
    /// the sweeper of ack waits.
    ackers: std::sync::Mutex<Vec<std::sync::Weak<conn::Conn>>>,
    /// `/queue` channels with failed messages waiting out a delay.
    delaying: std::sync::Mutex<Vec<Arc<router::Channel>>>,
    dead_letter_log: log_every::LogEvery,
    born: std::time::Instant,
}

/// A random name for this broker process (16 hex digits).
fn new_server_id() -> String {
    use std::hash::BuildHasher;
    let seed = (
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!(
        "{:016x}",
        std::collections::hash_map::RandomState::new().hash_one(seed)
    )
}

impl Shared {
    /// `channel` has messages waiting out a delay: the sweeper looks at it.
    fn delaying(&self, channel: &Arc<router::Channel>) {
        let mut list = lock(&self.delaying);
        if !list.iter().any(|c| Arc::ptr_eq(c, channel)) {
            list.push(channel.clone());
        }
    }

    /// What a publish may go to beyond this broker: the cluster's `/topic`
    /// forwarder and its JetStream store, once the broker has joined one.
    fn links(&self) -> publish::Links<'_> {
        match self.cluster.get() {
            Some(c) => publish::Links {
                forward: Some(&**c),
                jetstream: Some(c.jetstream()),
            },
            None => publish::Links::default(),
        }
    }

    /// Counts a new connection from `ip`; false when that address is at its limit.
    fn admit_ip(&self, ip: std::net::IpAddr) -> bool {
        if !self.counts_ip(ip) {
            return true;
        }
        let max = self.config.max_connections_per_ip;
        let ip = address_key(ip);
        let mut per_ip = lock(&self.per_ip);
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn counts_ip(&self, ip: std::net::IpAddr) -> bool {
        counts_ip(&self.config, ip)
    }

    fn release_ip(&self, ip: std::net::IpAddr) {
        if !self.counts_ip(ip) {
            return;
        }
        let ip = address_key(ip);
        let mut per_ip = lock(&self.per_ip);
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// A connection that has subscribed, as monitoring and reloads see it.
#[derive(Clone)]
pub(crate) struct Registered {
    pub conn: Arc<conn::Conn>,
    /// What its first frame subscribed to (none for a publisher).
    pub sub: Option<Arc<subscription::Subscription>>,
    pub since: std::time::SystemTime,
    pub identity: Option<access::Identity>,
    pub tls: bool,
    /// Ends the connection as a goodbye does: what it is owed, then
    /// end-of-stream.
    pub finish: CancellationToken,
}

impl Registered {
    /// The channel it subscribed to (the null channel for a publisher).
    pub fn name(&self) -> &[u8] {
        self.sub.as_ref().map_or(
            crate::proto::NULL_CHANNEL.as_bytes(),
            |s| &s.channel.name[..],
        )
    }
}

/// A connection's place under `--max-connections` and
/// `--max-connections-per-ip`, given back when the last of its tasks (reader,
/// writer) lets go: a writer still draining to a slow peer holds a socket too.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
    _permit: OwnedSemaphorePermit,
    /// Its id in `Shared::connections` once subscribed (0: not yet).
    registered: AtomicU64,
}

impl Slot {
    fn new(shared: &Arc<Shared>, ip: std::net::IpAddr, permit: OwnedSemaphorePermit) -> Arc<Self> {
        shared.stats.open.fetch_add(1, Relaxed);
        Arc::new(Self {
            shared: shared.clone(),
            ip,
            _permit: permit,
            registered: AtomicU64::new(0),
        })
    }

    /// Lists the connection until its last task lets go of the slot.
    fn register(&self, entry: Registered) {
        let id = entry.conn.id;
        lock(&self.shared.connections).insert(id, entry);
        self.registered.store(id, Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let id = self.registered.load(Relaxed);
        if id != 0 {
            lock(&self.shared.connections).remove(&id);
        }
        self.shared.release_ip(self.ip);
        self.shared.stats.open.fetch_sub(1, Relaxed);
    }
}

/// Whether connections from `ip` are counted against a per-address limit.
fn counts_ip(config: &BrokerConfig, ip: std::net::IpAddr) -> bool {
    config.max_connections_per_ip > 0
        && !(config.per_ip_spares_loopback && ip.to_canonical().is_loopback())
}

/// Reads a running broker's state.
pub struct Inspector(Arc<Shared>);

impl Inspector {
    pub fn open_connections(&self) -> u64 {
        self.0.stats.open.load(Relaxed)
    }

    /// Payload bytes held in send queues and backlogs.
    pub fn held_bytes(&self) -> usize {
        self.0.router.budget.used()
    }

    /// Payload bytes waiting in `/queue` backlogs for workers.
    pub fn backlog_bytes(&self) -> usize {
        self.0.router.backlog_bytes()
    }
}

/// Changes a running broker's policy.
#[derive(Clone)]
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Applies `policy`; returns how many connections it ended.
    pub fn apply(&self, policy: policy::Policy) -> usize {
        let shared = &self.0;
        shared.router.set_policy(policy);
        let policy = shared.router.policy();
        let entries: Vec<Registered> = lock(&shared.connections).values().cloned().collect();
        let mut ended = 0;
        for e in entries {
            // A protocol v2 connection: each of its subscriptions.
            let subs = e.conn.subscriptions();
            let names: Vec<&[u8]> = if e.conn.v2.is_some() {
                subs.iter().map(|s| &s.channel.name[..]).collect()
            } else {
                vec![e.name()]
            };
            let rules = policy.access.rules_for(e.identity.as_ref());
            let refused = names
                .iter()
                .find(|n| !rules.as_ref().is_some_and(|r| r.may_subscribe(n)));
            let allowed = rules.is_some() && refused.is_none();
            if !allowed && !e.finish.is_cancelled() {
                tracing::warn!(
                    "Remote {} ({}) ended: the reloaded access rules no longer allow {}",
                    e.conn.peer,
                    e.identity
                        .as_ref()
                        .map_or_else(|| "no client certificate".to_string(), |i| i.shown()),
                    crate::proto::shown(refused.copied().unwrap_or(e.name()))
                );
                e.conn.set_end_reason(end::EndReason::Denied);
                e.finish.cancel();
                ended += 1;
            }
        }
        ended
    }
}

/// Publishes into a running broker from its own process, as a client
/// connection would but without one (the broker's `--metrics` reporter).
#[derive(Clone)]
pub struct Injector(Arc<Shared>);

impl Injector {
    /// Routes one message to `channel` like a publish from a client; waits
    /// only where a client would (a full `/queue` backlog or stream).
    pub async fn publish(&self, channel: &bytes::Bytes, payload: bytes::Bytes) {
        let shared = &self.0;
        let mut publisher = Publisher::new(
            &shared.router,
            shared.links(),
            &shared.phases.stop_reading,
            None,
        );
        publisher.publish(channel.clone(), payload, 0).await;
        // Stored in JetStream (or routed here) before it counts as published.
        publisher.settle(&shared.phases.abort).await;
    }
}

/// A broker, ready to run on a listener.
pub struct Broker {
    shared: Arc<Shared>,
}

impl Broker {
    /// A plain-TCP broker.
    pub fn new(config: BrokerConfig) -> Self {
        Self::serving(config, None)
    }

    /// A broker serving TLS with `tls` (which may require client certificates),
    /// or plain TCP with `None`.
    pub fn serving(config: BrokerConfig, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let config = Arc::new(config);
        let reading = Arc::new(read_budget::ReadBudget::new((config.max_memory / 4).max(1)));
        let stats = Arc::new(BrokerStats::default());
        Self {
            shared: Arc::new(Shared {
                router: Arc::new(Router::new(config.clone(), stats.clone())),
                config,
                stats,
                next_id: AtomicU64::new(1),
                phases: shutdown::Phases::default(),
                per_ip: Default::default(),
                tls,
                reading,
                refused_log: PeerLog::new("refused connection(s) or TLS handshake(s)"),
                tls_reasons: Default::default(),
                protocol_log: PeerLog::new("protocol error(s)"),
                denied_log: PeerLog::new("subscription(s) refused by the access rules"),
                connections: Default::default(),
                cluster: std::sync::OnceLock::new(),
                replies: std::sync::OnceLock::new(),
                server_id: new_server_id(),
                ackers: Default::default(),
                delaying: Default::default(),
                dead_letter_log: Default::default(),
                born: std::time::Instant::now(),
            }),
        }
    }

    /// Live counters, for whoever embeds the broker.
    pub fn stats(&self) -> Arc<BrokerStats> {
        self.shared.stats.clone()
    }

    /// A live view of the running broker, for tests and fuzzing.
    pub fn inspector(&self) -> Inspector {
        Inspector(self.shared.clone())
    }

    /// Joins the cluster `config` names (see the `cluster` module). Channels created from
    /// now on are carried across it; call before [`run`](Self::run).
    pub async fn join_cluster(&self, config: ClusterConfig) -> anyhow::Result<()> {
        let shared = &self.shared;
        let c = Cluster::join(
            shared.router.clone(),
            shared.phases.stop_reading.clone(),
            config,
        )
        .await?;
        shared.stats.clustered.store(true, Relaxed);
        let _ = shared.replies.set(c.replies());
        let _ = shared.cluster.set(c);
        Ok(())
    }

    /// Puts a new policy in force (a reload): channels follow it at once,
    /// connections at their next subscribe or publish, and connections whose
    /// subscription it no longer allows are ended with end-of-stream.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.shared.clone())
    }

    /// A read-only view for monitoring.
    pub fn monitor(&self) -> monitor::Monitor {
        monitor::Monitor::new(self.shared.clone())
    }

    /// A way to publish into this broker from the same process.
    /// Keeps durable channels in `disk`, and puts back what it held
    /// (`recovered`): before the broker serves.
    pub fn use_disk(&self, disk: Arc<Disk>, recovered: Recovered) {
        self.shared.router.use_disk(disk);
        self.shared.router.restore(recovered.channels);
    }

    pub fn injector(&self) -> Injector {
        Injector(self.shared.clone())
    }

    /// The memory budget, to report how much of it is held.
    pub fn budget(&self) -> Arc<budget::Budget> {
        self.shared.router.budget.clone()
    }

    /// Serves `listener` until `shutdown` completes, then shuts down gracefully
    /// and returns the final counters.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Summary {
        let shared = self.shared;
        let permits = Arc::new(Semaphore::new(shared.config.max_connections));
        if let Some(ttl) = shared.config.backlog_ttl {
            tokio::spawn(expire_backlogs(shared.clone(), ttl));
        }
        tokio::spawn(say_held_back_drops(shared.clone()));
        tokio::spawn(held::sweep(shared.clone()));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    shared.stats.accepted.fetch_add(1, Relaxed);
                    if !shared.admit_ip(peer.ip()) {
                        shared.stats.refused.fetch_add(1, Relaxed);
                        if let Some(n) = shared.refused_log.due(peer.ip()) {
                            tracing::warn!(
                                "Remote {peer} refused: {} connections from {} already \
                                 ({n} refused from this address since the last line)",
                                shared.config.max_connections_per_ip,
                                peer.ip()
                            );
                        }
                        tokio::spawn(reader::refuse(stream, shared.tls.is_some()));
                        continue;
                    }
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let slot = Slot::new(&shared, peer.ip(), permit);
                            let s = shared.clone();
                            shared
                                .phases
                                .readers
                                .spawn(reader::serve(s, stream, peer, slot));
                        }
                        Err(_) => {
                            shared.release_ip(peer.ip());
                            shared.stats.refused.fetch_add(1, Relaxed);
                            if let Some(n) = shared.refused_log.due(peer.ip()) {
                                tracing::warn!(
                                    "Remote {peer} refused: connection limit of {} reached \
                                     ({n} refused from this address since the last line)",
                                    shared.config.max_connections
                                );
                            }
                            tokio::spawn(reader::refuse(stream, shared.tls.is_some()));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: transient, never fatal.
                    tracing::warn!("accept failed: {e}; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        shutdown_gracefully(&shared).await;
        let summary = shared.stats.summary();
        tracing::info!("shutdown complete: {summary}");
        summary
    }
}

/// Once a second, says the slow-consumer losses that no new loss came to
/// say: a subscriber that stays connected is not under-reported until it
/// leaves (walkthrough 10).
async fn say_held_back_drops(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shared.phases.stop_reading.cancelled() => return,
        }
        let due: Vec<(Registered, u64)> = lock(&shared.connections)
            .values()
            .filter_map(|e| Some((e.clone(), e.conn.drops_due()?)))
            .collect();
        for (e, n) in due {
            let conn = &e.conn;
            let shown = if conn.v2.is_some() {
                writer::shown_subscriptions(conn)
            } else {
                crate::proto::shown(e.name())
            };
            let (messages, bytes) = conn.bounds();
            tracing::warn!(
                "Remote {} is a slow consumer on {shown}: dropped {n} message(s), its send queue \
                 full ({messages} messages or {bytes} bytes) or the memory budget spent ({} \
                 dropped in all)",
                conn.peer,
                conn.overflow_drops(),
            );
        }
    }
}

/// Looks for stale backlogs a few times per `ttl`, until shutdown.
async fn expire_backlogs(shared: Arc<Shared>, ttl: Duration) {
    let mut every = tokio::time::interval((ttl / 4).max(Duration::from_millis(100)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => shared.router.expire_backlogs(ttl),
            _ = shared.phases.stop_reading.cancelled() => return,
        }
    }
}

async fn shutdown_gracefully(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
    tracing::info!(
        "shutting down: {} connection(s) open, draining for up to {:?}",
        shared.stats.open.load(Relaxed),
        shared.config.drain_timeout
    );
    // Half of the drain timeout to read what clients sent before the stop; the
    // rest to write what they are owed.
    shared
        .phases
        .stop_readers(shared.config.drain_timeout)
        .await;
    shared.refused_log.flush();
    if !shared.phases.drain_writers(deadline).await {
        tracing::warn!("drain timeout passed: closing the remaining connections");
    }
    if let Some(c) = shared.cluster.get() {
        // Acknowledgements of what was written, and messages handed back, must
        // reach JetStream before the process ends.
        c.flush(Duration::from_secs(2)).await;
    }
    shared.protocol_log.flush();
    shared.denied_log.flush();
    // One line for all of them: a broker can hold millions of backlogs.
    // A durable channel's backlog stays in the store for the next start.
    let d = shared.router.drop_backlogs(DropReason::Shutdown, |q| {
        if q.log().is_some() {
            0
        } else {
            q.discard_backlog()
        }
    });
    if let Some(disk) = shared.router.disk() {
        tracing::info!(
            "{} message(s) ({} bytes) kept in the durable store {} for the next start",
            disk.stats.messages.load(Relaxed),
            disk.stats.bytes.load(Relaxed),
            disk.dir().display()
        );
    }
    if d.messages > 0 {
        tracing::warn!(
            "{} message(s) left in the backlogs of {} /queue channel(s) at shutdown (most \
             in {}: {})",
            d.messages,
            d.channels,
            d.most.1,
            d.most.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{address_key, counts_ip, BrokerConfig};

    #[test]
    fn the_default_per_address_limit_spares_loopback_only() {
        let default = BrokerConfig {
            max_connections_per_ip: 2500,
            per_ip_spares_loopback: true,
            ..BrokerConfig::default()
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(!counts_ip(&default, ip("127.0.0.2")));
        assert!(!counts_ip(&default, ip("::1")));
        assert!(!counts_ip(&default, ip("::ffff:127.0.0.1")));
        assert!(counts_ip(&default, ip("192.0.2.1")));
        assert!(counts_ip(&default, ip("2001:db8::1")));
        let given = BrokerConfig {
            per_ip_spares_loopback: false,
            ..default
        };
        assert!(counts_ip(&given, ip("127.0.0.1")));
        let off = BrokerConfig {
            max_connections_per_ip: 0,
            ..given
        };
        assert!(!counts_ip(&off, ip("192.0.2.1")));
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_network() {
        let a = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            address_key(mapped),
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
    }
}
