//! The work queues the job scenarios measure, each in its own protocol with
//! its usual client: aioq (protocol 2: confirmed publishes, acknowledging
//! workers), RabbitMQ (lapin: publisher confirms, `basic.qos` prefetch,
//! manual `basic.ack` with `multiple`), NATS JetStream (async-nats: acked
//! publishes, one pull consumer with explicit acks shared by the workers) and
//! Redis Streams (`XADD`, `XREADGROUP` in one group, `XACK` of many ids).
//!
//! Every producer keeps up to a window of publishes unconfirmed; every
//! worker takes what one read brings and acknowledges it in one answer
//! where the protocol allows (aioq: `ACK` up to the last; RabbitMQ:
//! `multiple`; Redis: one `XACK`; JetStream acknowledges each message).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};

use crate::client::{self, ConnectOptions, Connector, Reader, Writer};
use crate::proto::v2;

/// A broker with work queues.
#[derive(Debug, Clone)]
pub enum Queues {
    Aioq(Connector),
    /// RabbitMQ: `amqp://user:pass@host:port` (guest:guest unless said).
    Amqp {
        uri: String,
        shown: String,
    },
    /// NATS JetStream.
    JetStream {
        url: String,
        shown: String,
    },
    /// Redis Streams.
    Streams {
        url: String,
        shown: String,
    },
}

/// One run's queue, named afresh so that runs never share messages.
#[derive(Debug, Clone)]
pub struct QueueName {
    /// aioq channel, RabbitMQ queue, JetStream stream subject, Redis key.
    pub name: String,
    /// Kept on disk with the broker's durable setting.
    pub durable: bool,
}

impl QueueName {
    pub fn new(scenario: &str, durable: bool) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self {
            name: format!("bench-{scenario}-{n}"),
            durable,
        }
    }

    pub fn aioq(&self) -> String {
        format!("/queue/{}", self.name)
    }

    fn stream(&self) -> String {
        self.name.replace('-', "_").to_uppercase()
    }

    fn subject(&self) -> String {
        self.name.replace('-', ".")
    }
}

const GROUP: &str = "aioq-bench";
const CONSUMER: &str = "aioq-bench";

impl Queues {
    pub fn kind(&self) -> &'static str {
        match self {
            Queues::Aioq(_) => "aioq",
            Queues::Amqp { .. } => "rabbitmq",
            Queues::JetStream { .. } => "jetstream",
            Queues::Streams { .. } => "redis-streams",
        }
    }

    /// Makes the queue (a stream and its consumer, a group), empty.
    pub async fn prepare(
        &self,
        q: &QueueName,
        workers: usize,
        prefetch: u16,
        ack_wait: Duration,
    ) -> anyhow::Result<()> {
        match self {
            // A channel is made by its first publish.
            Queues::Aioq(_) => {}
            Queues::Amqp { .. } => {
                let conn = self.amqp().await?;
                let ch = conn.create_channel().await?;
                ch.queue_declare(
                    q.name.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        durable: q.durable,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .context("declaring the RabbitMQ queue")?;
                let _ = conn.close(200, "prepared".into()).await;
            }
            Queues::JetStream { .. } => {
                use async_nats::jetstream::{consumer, stream};
                let js = async_nats::jetstream::new(self.nats().await?);
                let s = js
                    .create_stream(stream::Config {
                        name: q.stream(),
                        subjects: vec![q.subject()],
                        storage: if q.durable {
                            stream::StorageType::File
                        } else {
                            stream::StorageType::Memory
                        },
                        retention: stream::RetentionPolicy::WorkQueue,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("creating the JetStream stream: {e}"))?;
                s.create_consumer(consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_ack_pending: (workers * prefetch as usize) as i64,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("creating the JetStream consumer: {e}"))?;
            }
            Queues::Streams { .. } => {
                let mut c = self.redis().await?;
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&q.name)
                    .arg(GROUP)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut c)
                    .await
                    .context("XGROUP CREATE")?;
            }
        }
        Ok(())
    }

    /// Removes what [`prepare`](Self::prepare) made, and what is left in it.
    pub async fn remove(&self, q: &QueueName) {
        match self {
            Queues::Aioq(_) => {}
            Queues::Amqp { .. } => {
                if let Ok(conn) = self.amqp().await {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(q.name.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = conn.close(200, "done".into()).await;
                }
            }
            Queues::JetStream { .. } => {
                if let Ok(c) = self.nats().await {
                    let _ = async_nats::jetstream::new(c)
                        .delete_stream(q.stream())
                        .await;
                }
            }
            Queues::Streams { .. } => {
                if let Ok(mut c) = self.redis().await {
                    let _ = redis::cmd("DEL")
                        .arg(&q.name)
                        .query_async::<()>(&mut c)
                        .await;
                }
            }
        }
    }

    pub async fn producer(&self, q: &QueueName) -> anyhow::Result<Producer> {
        Ok(match self {
            Queues::Aioq(c) => {
                let (conn, _) =
                    client::v2::connect(c, &[v2::feature::CONFIRMS], ConnectOptions::default())
                        .await?;
                let (reader, writer) = client::split(conn);
                let (tx, confirmed) = tokio::sync::watch::channel(Confirmed::default());
                tokio::spawn(read_confirms(reader, tx));
                Producer::Aioq {
                    writer,
                    channel: Bytes::from(q.aioq()),
                    next_id: 0,
                    sent: VecDeque::new(),
                    confirmed,
                }
            }
            Queues::Amqp { .. } => {
                let conn = self.amqp().await?;
                let ch = conn.create_channel().await?;
                ch.confirm_select(Default::default()).await?;
                Producer::Amqp {
                    _conn: conn,
                    ch,
                    queue: q.name.clone(),
                    persistent: q.durable,
                    pending: FuturesOrdered::new(),
                }
            }
            Queues::JetStream { .. } => Producer::JetStream {
                js: async_nats::jetstream::new(self.nats().await?),
                subject: q.subject(),
                pending: FuturesOrdered::new(),
            },
            Queues::Streams { .. } => Producer::Streams {
                conn: self.redis().await?,
                key: q.name.clone(),
                pending: FuturesOrdered::new(),
            },
        })
    }

    pub async fn worker(
        &self,
        q: &QueueName,
        prefetch: u16,
        n: usize,
        ack_wait: Duration,
    ) -> anyhow::Result<Worker> {
        Ok(match self {
            Queues::Aioq(c) => {
                let (mut conn, _) =
                    client::v2::connect(c, &[v2::feature::ACKS], ConnectOptions::default()).await?;
                conn.send(v2::encode::sub_acked(
                    1,
                    u32::from(prefetch),
                    q.aioq().as_bytes(),
                ))
                .await?;
                match conn.next().await {
                    Some(Ok(f)) => match v2::decode_broker(f) {
                        Ok(v2::BrokerFrame::Subscribed { sid: 1, .. }) => {}
                        other => bail!("subscribing to {}: {other:?}", q.aioq()),
                    },
                    _ => bail!("subscribing to {}: the connection ended", q.aioq()),
                }
                let (reader, writer) = client::split(conn);
                Worker::Aioq {
                    reader,
                    writer,
                    last: 0,
                }
            }
            Queues::Amqp { .. } => {
                let conn = self.amqp().await?;
                let ch = conn.create_channel().await?;
                ch.basic_qos(prefetch, Default::default()).await?;
                let consumer = ch
                    .basic_consume(
                        q.name.as_str().into(),
                        format!("aioq-bench-{n}").as_str().into(),
                        Default::default(),
                        Default::default(),
                    )
                    .await
                    .context("basic.consume")?;
                Worker::Amqp {
                    _conn: conn,
                    ch,
                    consumer,
                    last: None,
                }
            }
            Queues::JetStream { .. } => {
                use async_nats::jetstream::consumer::PullConsumer;
                let js = async_nats::jetstream::new(self.nats().await?);
                let stream = js
                    .get_stream(q.stream())
                    .await
                    .map_err(|e| anyhow::anyhow!("the JetStream stream: {e}"))?;
                let consumer: PullConsumer = stream
                    .get_consumer(CONSUMER)
                    .await
                    .map_err(|e| anyhow::anyhow!("the JetStream consumer: {e}"))?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(usize::from(prefetch))
                    .messages()
                    .await
                    .map_err(|e| anyhow::anyhow!("pulling from JetStream: {e}"))?;
                Worker::JetStream {
                    messages,
                    taken: Vec::new(),
                }
            }
            Queues::Streams { .. } => Worker::Streams {
                // Its own connection: a blocking read holds it.
                conn: self.redis().await?,
                key: q.name.clone(),
                name: format!("worker-{n}-{}", std::process::id()),
                prefetch,
                idle: ack_wait,
                taken: Vec::new(),
            },
        })
    }

    async fn amqp(&self) -> anyhow::Result<lapin::Connection> {
        let Queues::Amqp { uri, shown } = self else {
            unreachable!("an AMQP target")
        };
        lapin::Connection::connect(uri, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| unreachable_error(shown, e))
    }

    async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        let Queues::JetStream { url, shown } = self else {
            unreachable!("a NATS target")
        };
        async_nats::ConnectOptions::new()
            .name("aioq-bench")
            .connection_timeout(Duration::from_secs(5))
            .connect(url.as_str())
            .await
            .map_err(|e| unreachable_error(shown, e))
    }

    async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let Queues::Streams { url, shown } = self else {
            unreachable!("a Redis target")
        };
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| unreachable_error(shown, e))
    }

    /// A Redis setting, for the promise its figures are measured at.
    pub async fn redis_config(&self, key: &str) -> anyhow::Result<String> {
        let mut c = self.redis().await?;
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(key)
            .query_async(&mut c)
            .await?;
        Ok(pair.get(1).cloned().unwrap_or_default())
    }
}

fn unreachable_error(shown: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(crate::exit::Unreachable {
        addr: shown.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()),
    })
}

/// What an aioq producer's broker has confirmed.
#[derive(Debug, Default, Clone)]
pub struct Confirmed {
    pub up_to: u64,
    pub refused: u64,
    pub ended: bool,
}

async fn read_confirms(mut reader: Reader, tx: tokio::sync::watch::Sender<Confirmed>) {
    while let Some(Ok(f)) = reader.next().await {
        match v2::decode_broker(f) {
            Ok(v2::BrokerFrame::Confirm(up_to)) => tx.send_modify(|c| c.up_to = up_to),
            Ok(v2::BrokerFrame::Refused { .. }) => tx.send_modify(|c| c.refused += 1),
            Ok(v2::BrokerFrame::EndOfStream) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    tx.send_modify(|c| c.ended = true);
}

/// A job's answer from its broker: confirmed (stored as the queue
/// promises) or refused.
type Pending = BoxFuture<'static, (u64, anyhow::Result<bool>)>;

pub enum Producer {
    Aioq {
        writer: Writer,
        channel: Bytes,
        next_id: u64,
        /// Job numbers by confirm id, oldest first.
        sent: VecDeque<(u64, u64)>,
        confirmed: tokio::sync::watch::Receiver<Confirmed>,
    },
    Amqp {
        _conn: lapin::Connection,
        ch: lapin::Channel,
        queue: String,
        persistent: bool,
        pending: FuturesOrdered<Pending>,
    },
    JetStream {
        js: async_nats::jetstream::Context,
        subject: String,
        pending: FuturesOrdered<Pending>,
    },
    Streams {
        conn: redis::aio::MultiplexedConnection,
        key: String,
        pending: FuturesOrdered<Pending>,
    },
}

impl Producer {
    /// Publishes job `job`, asking for its confirm.
    pub async fn publish(&mut self, job: u64, payload: Bytes) -> anyhow::Result<()> {
        match self {
            Producer::Aioq {
                writer,
                channel,
                next_id,
                sent,
                ..
            } => {
                *next_id += 1;
                sent.push_back((*next_id, job));
                // Written as the buffer fills or the producer waits for
                // answers, as a pipelining client does (the peers' clients
                // batch their writes too): not one system call a job.
                writer
                    .feed(v2::encode::publish(Some(*next_id), None, channel, &payload))
                    .await?;
            }
            Producer::Amqp {
                ch,
                queue,
                persistent,
                pending,
                ..
            } => {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        Default::default(),
                        &payload,
                        lapin::BasicProperties::default().with_delivery_mode(if *persistent {
                            2
                        } else {
                            1
                        }),
                    )
                    .await?;
                pending.push_back(
                    async move {
                        let r = confirm
                            .await
                            .map(|c| c.is_ack())
                            .map_err(anyhow::Error::from);
                        (job, r)
                    }
                    .boxed(),
                );
            }
            Producer::JetStream {
                js,
                subject,
                pending,
            } => {
                let ack = js
                    .publish(subject.clone(), payload)
                    .await
                    .map_err(|e| anyhow::anyhow!("JetStream publish: {e}"))?;
                pending.push_back(
                    async move {
                        let r = ack
                            .await
                            .map(|_| true)
                            .map_err(|e| anyhow::anyhow!("JetStream publish ack: {e}"));
                        (job, r)
                    }
                    .boxed(),
                );
            }
            Producer::Streams { conn, key, pending } => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("XADD")
                    .arg(key.as_str())
                    .arg("*")
                    .arg("d")
                    .arg(payload.as_ref())
                    .to_owned();
                pending.push_back(
                    async move {
                        let r = cmd
                            .query_async::<String>(&mut conn)
                            .await
                            .map(|_| true)
                            .map_err(anyhow::Error::from);
                        (job, r)
                    }
                    .boxed(),
                );
            }
        }
        Ok(())
    }

    /// Publishes not yet answered.
    pub fn unanswered(&self) -> usize {
        match self {
            Producer::Aioq { sent, .. } => sent.len(),
            Producer::Amqp { pending, .. }
            | Producer::JetStream { pending, .. }
            | Producer::Streams { pending, .. } => pending.len(),
        }
    }

    /// Waits for the next answers: the jobs confirmed (true) or refused.
    pub async fn answers(&mut self, out: &mut Vec<(u64, bool)>) -> anyhow::Result<()> {
        match self {
            Producer::Aioq {
                sent,
                confirmed,
                writer,
                ..
            } => {
                writer.flush().await?;
                let refused_before = confirmed.borrow().refused;
                let c = confirmed
                    .wait_for(|c| c.ended || sent.front().is_some_and(|(id, _)| *id <= c.up_to))
                    .await
                    .context("the broker's answers ended")?
                    .clone();
                if c.refused > refused_before {
                    bail!(
                        "the broker refused {} publishes",
                        c.refused - refused_before
                    );
                }
                while let Some((id, job)) = sent.front().copied() {
                    if id > c.up_to {
                        break;
                    }
                    sent.pop_front();
                    out.push((job, true));
                }
                if out.is_empty() && c.ended {
                    bail!(
                        "the connection ended with {} publishes unanswered",
                        sent.len()
                    );
                }
            }
            Producer::Amqp { pending, .. }
            | Producer::JetStream { pending, .. }
            | Producer::Streams { pending, .. } => {
                let Some((job, r)) = pending.next().await else {
                    return Ok(());
                };
                out.push((job, r?));
                while let Some(Some((job, r))) = pending.next().now_or_never() {
                    out.push((job, r?));
                }
            }
        }
        Ok(())
    }
}

pub enum Worker {
    Aioq {
        reader: Reader,
        writer: Writer,
        /// The last delivery read and not yet acknowledged (0: none).
        last: u64,
    },
    Amqp {
        _conn: lapin::Connection,
        ch: lapin::Channel,
        consumer: lapin::Consumer,
        last: Option<u64>,
    },
    JetStream {
        messages: async_nats::jetstream::consumer::pull::Stream,
        taken: Vec<async_nats::jetstream::Message>,
    },
    Streams {
        conn: redis::aio::MultiplexedConnection,
        key: String,
        name: String,
        prefetch: u16,
        /// Jobs another consumer has held unanswered this long are
        /// claimed (`XAUTOCLAIM`), as a Redis worker pool must do itself.
        idle: Duration,
        taken: Vec<String>,
    },
}

/// How long a Redis worker blocks in one read: short, so that it sees the
/// end of a run.
const REDIS_BLOCK_MS: usize = 200;

impl Worker {
    /// The payloads of the next jobs, as many as one read brings (none
    /// after a quiet while on Redis); [`Worker::ack`] answers them all.
    pub async fn take(&mut self, out: &mut Vec<Bytes>) -> anyhow::Result<()> {
        match self {
            Worker::Aioq { reader, last, .. } => loop {
                let f = reader.next().await.context("the connection ended")??;
                match v2::decode_broker(f) {
                    Ok(v2::BrokerFrame::Msg {
                        payload, delivery, ..
                    }) => {
                        *last = delivery;
                        out.push(payload);
                        if reader.read_buffer().len() < 4 {
                            return Ok(());
                        }
                    }
                    Ok(v2::BrokerFrame::Error { .. }) | Err(_) => {
                        bail!("the broker ended the connection")
                    }
                    Ok(_) => {}
                }
            },
            Worker::Amqp { consumer, last, .. } => {
                let d = consumer.next().await.context("the consumer ended")??;
                *last = Some(d.delivery_tag);
                out.push(Bytes::from(d.data));
                while let Some(Some(d)) = consumer.next().now_or_never() {
                    let d = d?;
                    *last = Some(d.delivery_tag);
                    out.push(Bytes::from(d.data));
                }
                Ok(())
            }
            Worker::JetStream { messages, taken } => {
                let m = messages
                    .next()
                    .await
                    .context("the pull ended")?
                    .map_err(|e| anyhow::anyhow!("pulling from JetStream: {e}"))?;
                out.push(m.payload.clone());
                taken.push(m);
                while let Some(Some(m)) = messages.next().now_or_never() {
                    let m = m.map_err(|e| anyhow::anyhow!("pulling from JetStream: {e}"))?;
                    out.push(m.payload.clone());
                    taken.push(m);
                }
                Ok(())
            }
            Worker::Streams {
                conn,
                key,
                name,
                prefetch,
                idle,
                taken,
            } => {
                let reply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(name.as_str())
                    .arg("COUNT")
                    .arg(*prefetch)
                    .arg("BLOCK")
                    .arg(REDIS_BLOCK_MS)
                    .arg("STREAMS")
                    .arg(key.as_str())
                    .arg(">")
                    .query_async(conn)
                    .await;
                let reply: Option<redis::streams::StreamReadReply> = match reply {
                    // Just restarted, reading its AOF back: not serving yet.
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return Ok(());
                    }
                    r => r.context("XREADGROUP")?,
                };
                let mut entries: Vec<redis::streams::StreamId> = reply
                    .into_iter()
                    .flat_map(|r| r.keys)
                    .flat_map(|k| k.ids)
                    .collect();
                if entries.is_empty() {
                    // Nothing new: what a dead worker held is due.
                    let claimed: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                        .arg(key.as_str())
                        .arg(GROUP)
                        .arg(name.as_str())
                        .arg(idle.as_millis() as u64)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(*prefetch)
                        .query_async(conn)
                        .await
                        .context("XAUTOCLAIM")?;
                    entries = claimed.claimed;
                }
                for entry in entries {
                    if let Some(redis::Value::BulkString(b)) = entry.map.get("d") {
                        out.push(Bytes::copy_from_slice(b));
                    }
                    taken.push(entry.id);
                }
                Ok(())
            }
        }
    }

    /// Acknowledges everything taken so far, in one answer where it can.
    pub async fn ack(&mut self) -> anyhow::Result<()> {
        match self {
            Worker::Aioq { writer, last, .. } => {
                if *last > 0 {
                    let up_to = std::mem::take(last);
                    writer
                        .send(v2::encode::answer(v2::Answer::Ack, true, &[up_to]))
                        .await?;
                }
            }
            Worker::Amqp { ch, last, .. } => {
                if let Some(tag) = last.take() {
                    ch.basic_ack(tag, lapin::options::BasicAckOptions { multiple: true })
                        .await?;
                }
            }
            Worker::JetStream { taken, .. } => {
                for m in taken.drain(..) {
                    m.ack()
                        .await
                        .map_err(|e| anyhow::anyhow!("JetStream ack: {e}"))?;
                }
            }
            Worker::Streams {
                conn, key, taken, ..
            } => {
                if !taken.is_empty() {
                    redis::cmd("XACK")
                        .arg(key.as_str())
                        .arg(GROUP)
                        .arg(&taken[..])
                        .query_async::<u64>(conn)
                        .await
                        .context("XACK")?;
                    taken.clear();
                }
            }
        }
        Ok(())
    }
}

/// When a job was published, in the payload: its number and the publisher's
/// clock (this process: publishers and workers share it).
pub fn job_payload(job: u64, size: usize, base: Instant) -> Bytes {
    let mut b = Vec::with_capacity(size.max(16));
    b.extend_from_slice(&job.to_be_bytes());
    b.extend_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
    b.resize(size.max(16), b'.');
    Bytes::from(b)
}

/// The job number and publish time (ns since `base`) a payload carries.
pub fn job_of(payload: &[u8]) -> Option<(u64, u64)> {
    let job = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let at = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((job, at))
}
