//! The JetStream store: each `/queue` channel a work-queue stream with one
//! durable pull consumer that every broker of a cluster shares.
//!
//! A publisher's messages that the broker reads together travel as one
//! JetStream message ([`envelope`]): JetStream's cost is per JetStream
//! message. Publishers wait for JetStream's acknowledgement, a window of them
//! in flight per connection ([`Outbox`]), so a full stream back-pressures them
//! as a full backlog does on one broker; what JetStream will not take (NATS
//! unreachable) is routed on the broker it was published to, counted
//! (`cluster_kept_local`). A broker pulls what its workers have room for and a
//! little more, and acknowledges a JetStream message once every message in it
//! is written to a worker's socket, not when it is queued: a broker killed
//! with messages in its workers' send queues has acknowledged none of them,
//! and JetStream gives them to another broker after `--cluster-ack-wait`.
//! At-least-once: a message can arrive twice, never zero times once JetStream
//! acknowledged the publish.
//!
//! The store takes a NATS connection that someone else made and watches (the
//! cluster); it knows nothing of `/topic` forwarding.

pub mod envelope;
mod outbox;
mod pull;
pub mod subject;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Part, Replies, Reply, Token};
use crate::broker::lock;
use crate::broker::log_every::LogEvery;
use crate::broker::router::{Channel, Router};
use crate::broker::stats::BrokerStats;

pub use outbox::{Back, Outbox};

/// Name of the durable pull consumer every broker shares on each stream.
const CONSUMER: &str = "aioq";
/// How long storing a message's given-back parts apart may take before the
/// whole message goes back instead.
const RESTORE_WITHIN: Duration = Duration::from_secs(5);

/// How streams are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long JetStream waits for a delivery's acknowledgement.
    pub ack_wait: Duration,
    /// Each stream's bounds (-1: none).
    pub max_bytes: i64,
    pub max_messages: i64,
    pub replicas: usize,
    /// Streams in NATS's memory rather than on its disk.
    pub memory: bool,
}

pub struct JetStream {
    router: Arc<Router>,
    stats: Arc<BrokerStats>,
    client: async_nats::Client,
    /// Kept by whoever watches the NATS connection's events.
    connected: Arc<AtomicBool>,
    js: jetstream::Context,
    settings: Settings,
    /// The NATS URL as logs show it (no password).
    shown_url: String,
    replies: Replies,
    consumers: Mutex<HashMap<Bytes, Arc<tokio::sync::OnceCell<jetstream::consumer::PullConsumer>>>>,
    base: Instant,
    kept_local_log: LogEvery,
    too_large_log: LogEvery,
    envelope_log: LogEvery,
}

impl JetStream {
    /// The store over `client`, whose state `connected` follows; starts the
    /// tasks that answer deliveries and check that NATS offers JetStream.
    pub fn start(
        router: Arc<Router>,
        client: async_nats::Client,
        connected: Arc<AtomicBool>,
        settings: Settings,
        shown_url: String,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let (replies, replies_rx) = Replies::new();
        let store = Arc::new(Self {
            stats: router.stats().clone(),
            router,
            js: jetstream::new(client.clone()),
            client,
            connected,
            settings,
            shown_url,
            replies,
            consumers: Mutex::new(HashMap::new()),
            base: Instant::now(),
            kept_local_log: LogEvery::default(),
            too_large_log: LogEvery::default(),
            envelope_log: LogEvery::default(),
        });
        tokio::spawn(acknowledge(store.clone(), replies_rx));
        tokio::spawn(check_jetstream(store.clone(), stop));
        store
    }

    /// How the broker's writers answer this store's deliveries.
    pub fn replies(&self) -> Replies {
        self.replies.clone()
    }

    fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// Pulls `channel`'s messages for this broker's workers until `stop`.
    pub fn follow(self: &Arc<Self>, channel: Arc<Channel>, stop: CancellationToken) {
        tokio::spawn(pull::pull(self.clone(), channel, stop));
    }

    /// At shutdown: sends every acknowledgement queued so far.
    pub async fn flush(&self, within: Duration) {
        self.replies.flush(within).await;
    }

    /// Counts a message from the cluster too large for this broker's
    /// `--max-frame`.
    fn too_large(&self, channel: &Channel, len: usize) {
        self.router.count_drop(
            Some(channel),
            None,
            crate::broker::stats::DropReason::TooLarge,
            1,
        );
        if let Some(n) = self.too_large_log.due(self.base) {
            tracing::warn!(
                "cluster: {n} message(s) from other brokers dropped: larger than this \
                 broker's --max-frame {} (the last, {len} bytes, on {})",
                self.router.max_frame(),
                channel.display_name()
            );
        }
    }

    /// Counts `/queue` messages kept on this broker because JetStream could
    /// not take them.
    fn kept_local(&self, n: usize, why: &str) {
        self.stats.cluster_kept_local.fetch_add(n as u64, Relaxed);
        if let Some(n) = self.kept_local_log.due(self.base) {
            tracing::warn!(
                "cluster: {n} /queue message(s) kept on this broker: {why} ({} in all)",
                self.stats.cluster_kept_local.load(Relaxed)
            );
        }
    }

    /// The shared pull consumer of `/queue` channel `name`, creating its stream
    /// and consumer on first use.
    async fn consumer(&self, name: &Bytes) -> anyhow::Result<jetstream::consumer::PullConsumer> {
        let cell = lock(&self.consumers)
            .entry(name.clone())
            .or_default()
            .clone();
        let consumer = cell
            .get_or_try_init(|| async {
                let stream = self
                    .js
                    .get_or_create_stream(jetstream::stream::Config {
                        name: subject::stream_name(name),
                        subjects: vec![subject::encode(name)],
                        retention: jetstream::stream::RetentionPolicy::WorkQueue,
                        discard: jetstream::stream::DiscardPolicy::New,
                        max_bytes: self.settings.max_bytes,
                        max_messages: self.settings.max_messages,
                        num_replicas: self.settings.replicas,
                        storage: if self.settings.memory {
                            jetstream::stream::StorageType::Memory
                        } else {
                            jetstream::stream::StorageType::File
                        },
                        description: Some(format!(
                            "aioq channel {}",
                            String::from_utf8_lossy(name)
                        )),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        // 10047: the store is full, or set aside for the byte
                        // limits of streams created before.
                        let hint = if e.to_string().contains("10047") {
                            " (JetStream's storage is used up or set aside by \
                             other streams' byte limits; see --cluster-queue-bytes)"
                        } else {
                            ""
                        };
                        anyhow::anyhow!("creating the stream: {e}{hint}")
                    })?;
                let subjects = &stream.cached_info().config.subjects;
                anyhow::ensure!(
                    subjects.len() == 1 && subjects[0] == subject::encode(name),
                    "stream {} already holds {subjects:?}",
                    subject::stream_name(name)
                );
                stream
                    .get_or_create_consumer(
                        CONSUMER,
                        jetstream::consumer::pull::Config {
                            durable_name: Some(CONSUMER.into()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ack_wait: self.settings.ack_wait,
                            max_ack_pending: -1,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("creating the consumer: {e}"))
            })
            .await?;
        Ok(consumer.clone())
    }

    /// Publishes `parts` to `subject` as one JetStream message (see
    /// `envelope`); its acknowledgement comes later.
    async fn publish_parts(
        &self,
        subject: async_nats::Subject,
        parts: &[Part],
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        match envelope::seal(parts) {
            (None, payload) => self.js.publish(subject, payload).await,
            (Some(headers), payload) => {
                self.js
                    .publish_with_headers(subject, headers, payload)
                    .await
            }
        }
    }

    /// Forgets what is known of `channel`'s stream, after an error that
    /// suggests it is gone (a NATS server restarted without its store).
    fn forget(&self, channel: &Channel) {
        channel.link.set_stream_known(false);
        lock(&self.consumers).remove(&channel.name);
    }
}

async fn acknowledge(store: Arc<JetStream>, mut rx: mpsc::UnboundedReceiver<Reply>) {
    while let Some(a) = rx.recv().await {
        let r = match a {
            Reply::Settled(p) => {
                let Token::JetStream(msg) = p.token();
                match p.given_back() {
                    (back, _) if back.is_empty() => msg.ack().await,
                    (_, true) => msg.ack_with(jetstream::AckKind::Nak(None)).await,
                    (back, false) => restore(&store, msg, back).await,
                }
            }
            Reply::Nak(token) => {
                let Token::JetStream(msg) = *token;
                msg.ack_with(jetstream::AckKind::Nak(None)).await
            }
            Reply::DeadLetter {
                to,
                letter,
                delivery,
                part,
            } => {
                tokio::spawn(dead_letter(store.clone(), to, letter, delivery, part));
                Ok(())
            }
            Reply::Flush(done) => {
                let _ = store.client.flush().await;
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = r {
            // JetStream redelivers what it was not told about: at-least-once holds.
            tracing::debug!("cluster: acknowledgement not sent: {e}");
        }
    }
}

/// A JetStream message some of whose parts were written and some given back:
/// those go back to the stream as a new message before the old one is
/// acknowledged. If that fails, the whole message goes back (the parts
/// already written may then be delivered twice: at-least-once holds).
async fn restore(
    store: &JetStream,
    msg: &jetstream::Message,
    back: Vec<Part>,
) -> Result<(), async_nats::Error> {
    let stored = async {
        store
            .publish_parts(msg.subject.clone(), &back)
            .await?
            .await?;
        Ok::<_, async_nats::Error>(())
    };
    match tokio::time::timeout(RESTORE_WITHIN, stored).await {
        Ok(Ok(())) => msg.ack().await,
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {RESTORE_WITHIN:?}"),
            };
            tracing::debug!(
                "cluster: parts given back not stored apart ({why}); the whole message goes back"
            );
            msg.ack_with(jetstream::AckKind::Nak(None)).await
        }
    }
}

/// Stores a dead letter in its channel's stream, then settles the job it
/// was (the order that loses nothing if this broker dies in between: the job
/// comes back, and a second dead letter may be stored, never none). A dead
/// letter that cannot be stored gives the job back to JetStream instead.
async fn dead_letter(
    store: Arc<JetStream>,
    to: Bytes,
    letter: Part,
    delivery: Delivery,
    part: Part,
) {
    let stored = match store.router.lookup(&to, None) {
        Ok(Some(channel)) => {
            let stop = CancellationToken::new();
            let store_it =
                outbox::store_parts(&store, &channel, std::slice::from_ref(&letter), &stop);
            match tokio::time::timeout(RESTORE_WITHIN, store_it).await {
                Ok(Ok(())) => Ok(()),
                _ => Err("JetStream did not store it in time"),
            }
        }
        _ => Err("the broker holds --max-channels channels"),
    };
    match stored {
        Ok(()) => store.replies.written([delivery]),
        Err(why) => {
            tracing::warn!(
                "cluster: a dead letter for {} was not stored ({why}): its job goes back to JetStream",
                crate::proto::shown(&to)
            );
            store.replies.give_back([(delivery, part)]);
        }
    }
}

/// Says once, when NATS is first reached, whether it offers JetStream:
/// without it `/queue` channels cannot be shared, and every `/queue` message
/// would wait in its broker while the store is retried.
async fn check_jetstream(store: Arc<JetStream>, stop: CancellationToken) {
    while !store.connected() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Asked raw: async-nats's typed account reply expects fields that older
    // servers (2.9) do not send, and would call every one JetStream-less.
    let answer = store
        .js
        .request::<_, _, serde_json::Value>("INFO", b"")
        .await
        .map_err(|e| e.to_string())
        .and_then(|reply| match reply.get("error") {
            Some(error) => Err(error
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("refused")
                .to_owned()),
            None => Ok(()),
        });
    match answer {
        Ok(()) => tracing::info!("cluster: JetStream available: /queue channels are shared"),
        Err(e) => tracing::warn!(
            "cluster: NATS at {} offers no JetStream ({e}): /queue channels cannot be shared \
             across brokers; start nats-server with -js (until then each /queue message waits \
             on its broker)",
            store.shown_url
        ),
    }
}
