//! `serve --cluster`: brokers on several machines joined through NATS.
//!
//! What the cluster promises (the README's design note says the same):
//! - `/topic`: a message published on any broker reaches every subscriber on
//!   every broker once, in publish order per publisher and channel. Each broker
//!   forwards its publishers' messages to core NATS and subscribes there only to
//!   the channels it has subscribers for; its NATS connection is `no_echo`, so
//!   nothing comes back to the broker it came from. Forwarding is one more
//!   bounded queue: NATS being slow or away never slows a publisher, and what
//!   cannot be forwarded is counted (`cluster_unforwarded`), while local
//!   subscribers keep getting everything.
//! - `/queue`: each channel is kept in JetStream, the store that
//!   `store/jetstream/` is (a work-queue stream per channel, one pull consumer
//!   shared by every broker, at-least-once). The cluster makes the NATS
//!   connection the store uses, tells the router to keep new `/queue`
//!   channels there, and starts a channel's puller when it appears.

mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::lock;
use super::log_every::LogEvery;
use super::publish::Forward;
use super::router::{Channel, Interest, Kind, Router};
use super::stats::BrokerStats;
use super::store::jetstream::{subject, JetStream, Settings};
use super::store::Part;
use super::store::{Backend, Replies};
use crate::runtime::backoff::Backoff;
/// Topic messages waiting to be forwarded, by count and by bytes.
const FORWARD_QUEUE: usize = 262_144;
const FORWARD_QUEUE_BYTES: usize = 64 << 20;

/// How a broker joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated.
    pub url: String,
    /// How long JetStream waits for a broker's acknowledgement before giving
    /// the message to another broker.
    pub ack_wait: Duration,
    /// Limits of each `/queue` stream; past them publishers wait. -1 for
    /// no byte limit: JetStream reserves a stream's byte limit in its store at
    /// creation, so a default limit would cap the number of channels.
    pub queue_max_bytes: i64,
    pub queue_max_messages: i64,
    pub replicas: usize,
    /// Keep `/queue` streams in memory instead of on disk.
    pub memory: bool,
    /// Shown to the NATS server as the connection name.
    pub name: String,
}

/// How long `join` waits for the first attempt to reach NATS.
const FIRST_ATTEMPT: Duration = Duration::from_secs(2);

/// The `--cluster` URL list as logs may show it: the password of any
/// `user:password@` replaced (a token alone, `token@`, too).
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let Some((userinfo, host)) = rest.rsplit_once('@') else {
                return url.to_owned();
            };
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            let scheme = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{scheme}{shown}@{host}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub struct Cluster {
    router: Arc<Router>,
    stats: Arc<BrokerStats>,
    client: async_nats::Client,
    connected: Arc<AtomicBool>,
    /// Where `/queue` channels are kept, over the same NATS connection.
    jetstream: Arc<JetStream>,
    forward: mpsc::Sender<(Bytes, Part)>,
    forward_bytes: AtomicUsize,
    /// Messages accepted for forwarding and not yet handed to the NATS client.
    forward_pending: AtomicUsize,
    base: Instant,
    unforwarded_log: LogEvery,
    too_large_log: LogEvery,
}

impl Cluster {
    /// Connects to NATS (in the background if it is not reachable yet) and
    /// starts the tasks that carry channels between the broker and the cluster.
    /// Follows `router`'s channels from then on; its tasks end with `stop`.
    pub(super) async fn join(
        router: Arc<Router>,
        stop: CancellationToken,
        config: ClusterConfig,
    ) -> anyhow::Result<Arc<Self>> {
        // Shown in logs and errors without the password a URL may carry.
        let url = redact(&config.url);
        let failed_log = Arc::new(LogEvery::default());
        // Kept from the client's events: its own state sits behind a lock,
        // too dear for the per-message check on the forwarding path.
        let connected = Arc::new(AtomicBool::new(false));
        let up = connected.clone();
        // Set when the first connection attempt has succeeded or failed.
        let tried = Arc::new(tokio::sync::Notify::new());
        let tried_event = tried.clone();
        let started = Instant::now();
        let backoff = Mutex::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ));
        let client = async_nats::ConnectOptions::new()
            .name(&config.name)
            .no_echo()
            // Room for bursts between the forwarder and the socket writer; the
            // default 2048 commands throttles a broker's forwarding.
            .client_capacity(65_536)
            .retry_on_initial_connect()
            .max_reconnects(None)
            // The first try at once (a broker starting next to NATS should not
            // wait), then 100 ms doubling up to 2 s.
            .reconnect_delay_callback(move |attempts| {
                let mut backoff = lock(&backoff);
                if attempts <= 1 {
                    backoff.reset();
                    return Duration::ZERO;
                }
                backoff.next_delay()
            })
            .event_callback(move |event| {
                let (url, failed_log, up) = (url.clone(), failed_log.clone(), up.clone());
                let tried = tried_event.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            // Before the wake-up: the start reads it at once,
                            // and said "not reachable yet" when it came first.
                            up.store(true, Relaxed);
                            tried.notify_one();
                            tracing::info!("cluster: connected to NATS at {url}")
                        }
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            up.store(false, Relaxed);
                            tracing::warn!(
                                "cluster: NATS at {url} unreachable; local delivery goes on, \
                                 /topic messages are not forwarded until it is back"
                            )
                        }
                        // Every failed reconnect says so: once in a while is enough.
                        async_nats::Event::ClientError(e) => {
                            tried.notify_one();
                            if let Some(n) = failed_log.due(started) {
                                tracing::warn!(
                                    "cluster: cannot reach NATS at {url}: {e} ({n} failed attempt(s) since the last line); \
                                     retrying"
                                );
                            }
                        }
                        other => tracing::warn!("cluster: NATS says: {other}"),
                    }
                }
            })
            .connect(config.url.as_str())
            .await
            .with_context(|| format!("cannot use --cluster {}", redact(&config.url)))?;
        // The first attempt's outcome, so that a broker started next to its
        // NATS server forwards from its first message; but not long: a NATS
        // that does not answer must not hold the port's announcement back.
        let first = tokio::time::timeout(FIRST_ATTEMPT, tried.notified()).await;
        if first.is_err() || !connected.load(Relaxed) {
            tracing::warn!(
                "cluster: NATS at {} not reachable yet; serving locally until it is",
                redact(&config.url)
            );
        }
        let jetstream = JetStream::start(
            router.clone(),
            client.clone(),
            connected.clone(),
            Settings {
                ack_wait: config.ack_wait,
                max_bytes: config.queue_max_bytes,
                max_messages: config.queue_max_messages,
                replicas: config.replicas,
                memory: config.memory,
            },
            redact(&config.url),
            stop.clone(),
        );
        let (forward, forward_rx) = mpsc::channel(FORWARD_QUEUE);
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            stats: router.stats().clone(),
            router: router.clone(),
            client,
            connected,
            jetstream,
            forward,
            forward_bytes: AtomicUsize::new(0),
            forward_pending: AtomicUsize::new(0),
            base: Instant::now(),
            unforwarded_log: LogEvery::default(),
            too_large_log: LogEvery::default(),
        });
        tokio::spawn(topics::forward(cluster.clone(), forward_rx));
        tokio::spawn(follow(cluster.clone(), interest_rx, stop));
        router.store_queues_in(Backend::JetStream);
        router.follow(interest);
        Ok(cluster)
    }

    /// How the broker's writers answer JetStream deliveries.
    pub fn replies(&self) -> Replies {
        self.jetstream.replies()
    }

    /// The store of this broker's `/queue` channels.
    pub fn jetstream(&self) -> &JetStream {
        &self.jetstream
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }
}

impl Forward for Cluster {
    /// Hands a local `/topic` message to the forwarder without waiting; counts
    /// it when it cannot be forwarded.
    fn forward(&self, name: &Bytes, payload: &Bytes, head: u16) -> bool {
        let len = payload.len();
        if !self.connected() {
            self.unforwarded("NATS is unreachable");
            return false;
        }
        let queued = self.forward_bytes.fetch_add(len, Relaxed);
        // The forward queue holds payloads like a send queue does: it counts
        // against --max-memory too.
        let refused = if queued > 0 && queued + len > FORWARD_QUEUE_BYTES {
            Some("the forward queue is full")
        } else if !self.router.budget.try_take(len) {
            Some("the memory budget is spent")
        } else {
            self.forward_pending.fetch_add(1, Relaxed);
            if self
                .forward
                .try_send((
                    name.clone(),
                    Part {
                        bytes: payload.clone(),
                        head,
                    },
                ))
                .is_err()
            {
                self.forward_pending.fetch_sub(1, Relaxed);
                self.router.budget.give_back(len);
                Some("the forward queue is full")
            } else {
                None
            }
        };
        match refused {
            Some(why) => {
                self.forward_bytes.fetch_sub(len, Relaxed);
                self.unforwarded(why);
                false
            }
            None => true,
        }
    }
}

impl Cluster {
    /// Counts a message from the cluster too large for this broker's
    /// `--max-frame`.
    fn too_large(&self, channel: &Channel, len: usize) {
        self.router
            .count_drop(Some(channel), None, super::stats::DropReason::TooLarge, 1);
        if let Some(n) = self.too_large_log.due(self.base) {
            tracing::warn!(
                "cluster: {n} message(s) from other brokers dropped: larger than this \
                 broker's --max-frame {} (the last, {len} bytes, on {})",
                self.router.max_frame(),
                channel.display_name()
            );
        }
    }

    fn unforwarded(&self, why: &str) {
        self.stats.cluster_unforwarded.fetch_add(1, Relaxed);
        if let Some(n) = self.unforwarded_log.due(self.base) {
            tracing::warn!(
                "cluster: {n} /topic message(s) not forwarded: {why} ({} in all); \
                 local subscribers still got them",
                self.stats.cluster_unforwarded.load(Relaxed)
            );
        }
    }

    /// At shutdown: forwards what local publishers sent (counting what cannot
    /// go in time as unforwarded) and sends every acknowledgement queued so far.
    pub(super) async fn flush(&self, within: Duration) {
        // With NATS unreachable nothing queued can leave: waiting would only
        // hold the shutdown for the whole bound (2 s against 3 ms).
        let deadline = tokio::time::Instant::now()
            + if self.connected.load(Relaxed) {
                within
            } else {
                Duration::ZERO
            };
        while self.forward_pending.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = self.forward_pending.load(Relaxed);
        if left > 0 {
            self.stats
                .cluster_unforwarded
                .fetch_add(left as u64, Relaxed);
            tracing::warn!("cluster: {left} /topic message(s) not forwarded before shutdown");
        }
        if !self.connected.load(Relaxed) {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.jetstream
            .flush(left.max(Duration::from_millis(500)))
            .await;
    }
}

/// Follows the router's channels: a topic with local subscribers is
/// subscribed on NATS, a queue channel gets a puller; both stop when the
/// channel retires.
async fn follow(
    cluster: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<Interest>,
    stop: CancellationToken,
) {
    let mut following: HashMap<Bytes, (Arc<Channel>, CancellationToken)> = HashMap::new();
    while let Some(event) = rx.recv().await {
        match event {
            Interest::On(channel) => {
                let stop = stop.child_token();
                if let Some((_, old)) =
                    following.insert(channel.name.clone(), (channel.clone(), stop.clone()))
                {
                    old.cancel();
                }
                match &channel.kind {
                    Kind::Topic(_) => {
                        tokio::spawn(topics::inbound(cluster.clone(), channel, stop));
                    }
                    Kind::Queue(_) => cluster.jetstream.follow(channel, stop),
                }
            }
            Interest::Off(channel) => {
                if following
                    .get(&channel.name)
                    .is_some_and(|(c, _)| Arc::ptr_eq(c, &channel))
                {
                    if let Some((_, stop)) = following.remove(&channel.name) {
                        stop.cancel();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_reach_a_log_line() {
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact("nats://tok@h"), "nats://***@h");
        assert_eq!(
            redact("nats://a:1@h1,nats://h2:4222"),
            "nats://a:***@h1,nats://h2:4222"
        );
        assert_eq!(redact("nats://h"), "nats://h");
    }
}
