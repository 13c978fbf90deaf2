//! The brokers the bench can measure, each in its own protocol: aioq, NATS
//! (core pub/sub, `/queue` as a queue group) and Redis (pub/sub, no queues).
//!
//! Every scenario drives the same three operations whatever the broker:
//! publish (pipelined), subscribe and take the next delivery, and a goodbye
//! that is confirmed once the broker has routed everything sent before it.
//! Publishers and measuring subscribers use each broker's usual client (aioq's
//! own, async-nats with its buffers raised so that the client library never
//! drops by itself, RESP over a socket for Redis); slow subscribers always
//! speak the protocol over a bare socket with a small receive buffer, so that
//! a stall reaches the broker instead of a client library's buffers.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::client::{self, ConnectOptions, Connection, Connector, Reader, Writer};
use crate::exit::usage;
use crate::proto::{v2, NULL_CHANNEL};

/// How long a goodbye may take to be confirmed.
pub const GOODBYE_WITHIN: Duration = Duration::from_secs(10);

/// How the bench speaks to an aioq broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Speak {
    /// Protocol 1.
    #[default]
    V1,
    /// Protocol 2 (publishers and measuring subscribers; the isolation
    /// runs' slow subscribers stay on protocol 1's bare socket).
    V2,
}

/// What a protocol 2 run asks of an aioq broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asks {
    /// Every publish asks a confirm.
    pub confirms: bool,
    /// `/queue` workers acknowledge what they are sent (one `ACK` up to the
    /// last delivery per read buffer).
    pub acks: bool,
}

/// A broker to measure.
#[derive(Debug, Clone)]
pub enum Target {
    /// An aioq broker, and what protocol 2 asks of it.
    Aioq(Connector, Speak, Asks),
    Nats {
        host: String,
        port: u16,
        /// `user:password` or a token, from the URL; never shown.
        auth: Option<String>,
    },
    Redis {
        host: String,
        port: u16,
    },
}

/// `host` as a URL holds it: an IPv6 address in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl fmt::Display for Target {
    /// The target as reports and errors show it: a password never is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Aioq(c, ..) => write!(f, "{c}"),
            Target::Nats { host, port, auth } => {
                let auth = match auth.as_deref().map(|a| a.split_once(':')) {
                    None => String::new(),
                    Some(Some((user, _))) => format!("{user}:***@"),
                    Some(None) => "***@".to_owned(),
                };
                write!(f, "nats://{auth}{}:{port}", url_host(host))
            }
            Target::Redis { host, port } => write!(f, "redis://{}:{port}", url_host(host)),
        }
    }
}

impl Target {
    /// The target spoken to in `speak` (aioq only), asking confirms when
    /// `confirms` (protocol 2 only).
    pub fn speaking(self, speak: Speak, asks: Asks) -> anyhow::Result<Self> {
        match self {
            Target::Aioq(c, ..) => {
                if asks != Asks::default() && speak != Speak::V2 {
                    return Err(usage("--confirms and --acks need --protocol v2"));
                }
                Ok(Target::Aioq(c, speak, asks))
            }
            other if speak == Speak::V2 || asks != Asks::default() => Err(usage(format!(
                "--protocol v2, --confirms and --acks are for aioq targets, not {}",
                other.kind()
            ))),
            other => Ok(other),
        }
    }

    /// `HOST:PORT` (aioq), `nats://HOST:PORT` or `redis://HOST:PORT`.
    pub fn parse(flag: &str, text: &str, tls: &crate::tls::ClientTlsArgs) -> anyhow::Result<Self> {
        let (scheme, rest) = match text.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => {
                return Ok(Target::Aioq(
                    Connector::parse(flag, text, tls)?,
                    Speak::V1,
                    Asks::default(),
                ))
            }
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth.to_owned()), rest),
            None => (None, rest),
        };
        let bad = || {
            usage(format!(
                "{flag} {text:?}: expected HOST:PORT (aioq), nats://HOST:PORT or redis://HOST:PORT"
            ))
        };
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad());
        }
        if auth.is_some() && scheme != "nats" {
            return Err(usage(format!(
                "{flag}: credentials in the URL are taken for nats:// targets only"
            )));
        }
        let target = match scheme.as_str() {
            "aioq" => {
                return Ok(Target::Aioq(
                    Connector::parse(flag, rest, tls)?,
                    Speak::V1,
                    Asks::default(),
                ))
            }
            "nats" => Target::Nats { host, port, auth },
            "redis" => Target::Redis { host, port },
            _ => return Err(bad()),
        };
        if tls.enabled() {
            return Err(usage(format!(
                "{flag} {text}: --tls applies to aioq brokers only"
            )));
        }
        Ok(target)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Aioq(..) => "aioq",
            Target::Nats { .. } => "nats",
            Target::Redis { .. } => "redis",
        }
    }

    /// Whether the broker has work queues (`/queue` channels).
    pub fn has_queues(&self) -> bool {
        !matches!(self, Target::Redis { .. })
    }

    /// The broker's name for an aioq channel (see [`nats_subject`]); the
    /// others take it as it is.
    fn subject(&self, channel: &str) -> String {
        match self {
            Target::Nats { .. } => nats_subject(channel),
            _ => channel.to_owned(),
        }
    }

    /// A subscriber (a worker, on a `/queue` channel) that reads deliveries as
    /// they come, confirmed subscribed.
    pub async fn subscribe(&self, channel: &str) -> anyhow::Result<Sub> {
        match self {
            Target::Aioq(c, Speak::V2, asks) => {
                let acks = asks.acks && is_queue(channel);
                let features: &[&str] = if acks { &[v2::feature::ACKS] } else { &[] };
                let (mut conn, _) =
                    client::v2::connect(c, features, ConnectOptions::default()).await?;
                conn.send(if acks {
                    v2::encode::sub_acked(1, 0, channel.as_bytes())
                } else {
                    v2::encode::sub(1, channel.as_bytes())
                })
                .await?;
                match conn.next().await {
                    Some(Ok(f)) => match v2::decode_broker(f) {
                        Ok(v2::BrokerFrame::Subscribed { sid: 1, .. }) => {}
                        other => bail!("subscribing to {channel}: {other:?}"),
                    },
                    _ => bail!("subscribing to {channel}: the connection ended"),
                }
                let (reader, writer) = client::split(conn);
                Ok(Sub::AioqV2 {
                    reader,
                    writer,
                    acks,
                    unacked: 0,
                })
            }
            Target::Aioq(c, ..) => {
                let (reader, writer) = client::split(c.connect(channel).await?);
                Ok(Sub::Aioq { reader, writer })
            }
            Target::Nats { host, port, auth } => {
                let nats = nats_client(host, *port, auth.as_deref()).await?;
                let subject = self.subject(channel);
                let sub = if is_queue(channel) {
                    nats.queue_subscribe(subject, QUEUE_GROUP.into()).await
                } else {
                    nats.subscribe(subject).await
                }
                .context("subscribing on NATS")?;
                // The server has the subscription once it answers a ping.
                nats.flush().await.context("subscribing on NATS")?;
                Ok(Sub::Nats { sub, _nats: nats })
            }
            Target::Redis { .. } => self.subscribe_raw(channel, false).await,
        }
    }

    /// A subscriber over a bare socket in the broker's own protocol, with a
    /// 4 KiB receive buffer when `small_buffer`: the slow ones.
    pub async fn subscribe_raw(&self, channel: &str, small_buffer: bool) -> anyhow::Result<Sub> {
        let options = ConnectOptions {
            small_recv_buffer: small_buffer,
        };
        match self {
            Target::Aioq(c, ..) => {
                let (reader, writer) = client::split(c.connect_with(channel, options).await?);
                Ok(Sub::Aioq { reader, writer })
            }
            Target::Nats { host, port, auth } => {
                let mut wire = Wire::dial(Proto::Nats, host, *port, options).await?;
                let subject = self.subject(channel);
                let group = if is_queue(channel) { QUEUE_GROUP } else { "" };
                let mut connect = serde_json::json!({
                    "verbose": false, "pedantic": false, "protocol": 1, "name": "aioq-bench",
                });
                match auth.as_deref().map(|a| a.split_once(':')) {
                    Some(Some((user, pass))) => {
                        connect["user"] = user.into();
                        connect["pass"] = pass.into();
                    }
                    Some(None) => connect["auth_token"] = auth.clone().into(),
                    None => {}
                }
                wire.write(
                    format!("CONNECT {connect}\r\nSUB {subject} {group} 1\r\nPING\r\n").as_bytes(),
                )
                .await?;
                wire.expect_end("subscribing on NATS").await?;
                Ok(Sub::Wire(wire))
            }
            Target::Redis { host, port } => {
                let mut wire = Wire::dial(Proto::Redis, host, *port, options).await?;
                wire.write(&resp_command(&[b"SUBSCRIBE", channel.as_bytes()]))
                    .await?;
                wire.expect_end("subscribing on Redis").await?;
                Ok(Sub::Wire(wire))
            }
        }
    }

    /// A publisher that subscribes to nothing.
    pub async fn publisher(&self) -> anyhow::Result<Pub> {
        match self {
            Target::Aioq(c, Speak::V2, asks) => {
                let (conn, _) =
                    client::v2::connect(c, &[v2::feature::CONFIRMS], ConnectOptions::default())
                        .await?;
                let (reader, writer) = client::split(conn);
                let (tx, answers) = tokio::sync::watch::channel(Answers::default());
                tokio::spawn(read_answers(reader, tx));
                Ok(Pub::AioqV2 {
                    writer,
                    last_id: asks.confirms.then_some(0),
                    answers,
                })
            }
            Target::Aioq(c, ..) => Ok(Pub::Aioq(Box::new(c.connect(NULL_CHANNEL).await?))),
            Target::Nats { host, port, auth } => Ok(Pub::Nats {
                nats: nats_client(host, *port, auth.as_deref()).await?,
                subjects: Vec::new(),
            }),
            Target::Redis { host, port } => {
                let stream = client::dial(host, *port, ConnectOptions::default())
                    .await
                    .map_err(|source| crate::exit::Unreachable {
                        addr: self.to_string(),
                        source,
                    })?;
                stream.set_nodelay(true)?;
                let (rd, wr) = stream.into_split();
                let (replies_tx, replies) = tokio::sync::watch::channel(0);
                tokio::spawn(count_replies(rd, replies_tx));
                Ok(Pub::Redis {
                    out: BufWriter::with_capacity(64 * 1024, wr),
                    sent: 0,
                    replies,
                })
            }
        }
    }
}

/// NATS subjects are separated by dots: `/topic/x` is `topic.x`.
fn nats_subject(channel: &str) -> String {
    channel.trim_start_matches('/').replace('/', ".")
}

/// The queue group every bench worker joins on NATS.
const QUEUE_GROUP: &str = "aioq-bench";

fn is_queue(channel: &str) -> bool {
    channel.starts_with("/queue/")
}

async fn nats_client(
    host: &str,
    port: u16,
    auth: Option<&str>,
) -> anyhow::Result<async_nats::Client> {
    let shown = Target::Nats {
        host: host.to_owned(),
        port,
        auth: auth.map(str::to_owned),
    }
    .to_string();
    let auth = auth.map(|a| format!("{a}@")).unwrap_or_default();
    async_nats::ConnectOptions::new()
        .name("aioq-bench")
        // Raised far past a run's messages, so that the client library never
        // drops a delivery (or holds a publish back) by itself.
        .subscription_capacity(1 << 20)
        .client_capacity(1 << 16)
        .read_buffer_capacity(u16::MAX)
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("nats://{auth}{}:{port}", url_host(host)))
        .await
        .map_err(|e| {
            // async-nats's error may quote the URL it was given: only the
            // redacted one is said.
            let kind = e.kind();
            anyhow::Error::new(crate::exit::Unreachable {
                addr: shown,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("{kind:?}"),
                ),
            })
        })
}

/// What a subscriber read.
#[derive(Debug)]
pub enum Event {
    Message(Bytes),
    /// The broker confirmed a goodbye: nothing more is owed.
    End,
    /// The connection ended.
    Closed,
    /// A NATS server's ping, answered by the subscriber itself.
    Ping,
}

pub enum Sub {
    Aioq {
        reader: Reader,
        writer: Writer,
    },
    AioqV2 {
        reader: Reader,
        writer: Writer,
        /// It acknowledges its deliveries; the last one read and not yet
        /// acknowledged (0: none).
        acks: bool,
        unacked: u64,
    },
    Nats {
        sub: async_nats::Subscriber,
        _nats: async_nats::Client,
    },
    Wire(Wire),
}

impl Sub {
    pub async fn next(&mut self) -> Event {
        match self {
            Sub::Aioq { reader, .. } => match reader.next().await {
                Some(Ok(f)) if !f.is_empty() => Event::Message(f),
                Some(Ok(_)) => Event::End,
                _ => Event::Closed,
            },
            Sub::AioqV2 {
                reader,
                writer,
                acks,
                unacked,
            } => loop {
                // What was read is acknowledged once nothing more is
                // buffered: one ACK per read, as a worker that batches.
                if *unacked > 0 && reader.read_buffer().len() < 4 {
                    let up_to = std::mem::take(unacked);
                    let ack = v2::encode::answer(v2::Answer::Ack, true, &[up_to]);
                    if writer.send(ack).await.is_err() {
                        break Event::Closed;
                    }
                }
                match reader.next().await {
                    Some(Ok(f)) => match v2::decode_broker(f) {
                        Ok(v2::BrokerFrame::Msg {
                            payload, delivery, ..
                        }) => {
                            if *acks {
                                *unacked = delivery;
                            }
                            break Event::Message(payload);
                        }
                        Ok(v2::BrokerFrame::EndOfStream) => break Event::End,
                        Ok(v2::BrokerFrame::Error { .. }) | Err(_) => break Event::Closed,
                        Ok(_) => continue,
                    },
                    _ => break Event::Closed,
                }
            },
            Sub::Nats { sub, .. } => match sub.next().await {
                Some(m) => Event::Message(m.payload),
                None => Event::Closed,
            },
            Sub::Wire(w) => w.next().await,
        }
    }

    /// Asks the broker to end the subscription once it has delivered what it
    /// still owes; [`Event::End`] follows the last of it.
    pub async fn goodbye(&mut self) {
        let _ = match self {
            Sub::Aioq { writer, .. } | Sub::AioqV2 { writer, .. } => {
                writer.send(Bytes::new()).await.map_err(Into::into)
            }
            Sub::Nats { sub, .. } => sub.unsubscribe().await.map_err(Into::into),
            Sub::Wire(w) => w.goodbye().await,
        };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Nats,
    Redis,
}

/// A subscriber speaking NATS or Redis over a bare socket.
pub struct Wire {
    proto: Proto,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Wire {
    async fn dial(
        proto: Proto,
        host: &str,
        port: u16,
        options: ConnectOptions,
    ) -> anyhow::Result<Self> {
        let scheme = if proto == Proto::Nats {
            "nats"
        } else {
            "redis"
        };
        let stream: TcpStream =
            client::dial(host, port, options)
                .await
                .map_err(|source| crate::exit::Unreachable {
                    addr: format!("{scheme}://{}:{port}", url_host(host)),
                    source,
                })?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        Ok(Self {
            proto,
            rd,
            wr,
            buf: BytesMut::with_capacity(8192),
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.wr.write_all(bytes).await?;
        Ok(())
    }

    /// Reads until the broker confirms (NATS: the pong; Redis: the
    /// subscription), within a few seconds.
    async fn expect_end(&mut self, doing: &str) -> anyhow::Result<()> {
        let confirmed = async {
            loop {
                match self.next().await {
                    Event::End => return Ok(()),
                    Event::Message(_) | Event::Ping => {}
                    Event::Closed => bail!("the broker closed the connection"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), confirmed)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within 5 s"))?
            .context(doing.to_owned())
    }

    async fn goodbye(&mut self) -> anyhow::Result<()> {
        match self.proto {
            Proto::Nats => self.write(b"UNSUB 1\r\nPING\r\n").await,
            Proto::Redis => self.write(&resp_command(&[b"UNSUBSCRIBE"])).await,
        }
    }

    async fn next(&mut self) -> Event {
        loop {
            let parsed = match self.proto {
                Proto::Nats => nats_frame(&mut self.buf),
                Proto::Redis => resp_frame(&mut self.buf).map(|r| r.map(redis_event)),
            };
            match parsed {
                Ok(Some(Some(Event::Ping))) => {
                    // Alive, however slow: a ping read is answered.
                    if self.write(b"PONG\r\n").await.is_err() {
                        return Event::Closed;
                    }
                }
                Ok(Some(Some(event))) => return event,
                Ok(Some(None)) => {}
                Ok(None) => {
                    self.buf.reserve(8192);
                    match self.rd.read_buf(&mut self.buf).await {
                        Ok(0) | Err(_) => return Event::Closed,
                        Ok(_) => {}
                    }
                }
                Err(()) => return Event::Closed,
            }
        }
    }
}

/// One NATS server frame from the front of `buf`: `Some(Some(event))` for a
/// delivery, the pong that confirms a ping, or an error (the end);
/// `Some(None)` for what needs no answer; `None` until a frame is whole.
fn nats_frame(buf: &mut BytesMut) -> Result<Option<Option<Event>>, ()> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..eol];
    if line.starts_with(b"MSG ") {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let len: usize = std::str::from_utf8(fields.last().ok_or(())?)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())?;
        if buf.len() < eol + 2 + len + 2 {
            return Ok(None);
        }
        buf.advance(eol + 2);
        let payload = buf.split_to(len).freeze();
        buf.advance(2);
        return Ok(Some(Some(Event::Message(payload))));
    }
    let event = if line == b"PONG" {
        Some(Event::End)
    } else if line == b"PING" {
        Some(Event::Ping)
    } else if line.starts_with(b"-ERR") {
        Some(Event::Closed)
    } else {
        None // INFO, +OK
    };
    buf.advance(eol + 2);
    Ok(Some(event))
}

/// A RESP value, as much of it as the bench needs.
#[derive(Debug)]
enum Resp {
    Simple,
    Error,
    Int,
    Bulk(Option<Bytes>),
    Array(Vec<Resp>),
}

/// One RESP value from the front of `buf`, `None` until it is whole.
fn resp_frame(buf: &mut BytesMut) -> Result<Option<Resp>, ()> {
    let mut at = 0;
    match resp_value(buf, &mut at)? {
        Some(v) => {
            buf.advance(at);
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

fn resp_value(buf: &BytesMut, at: &mut usize) -> Result<Option<Resp>, ()> {
    let Some(eol) = buf[*at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[*at..*at + eol];
    let (&kind, rest) = line.split_first().ok_or(())?;
    let number = || -> Result<i64, ()> {
        std::str::from_utf8(rest)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())
    };
    let after_line = *at + eol + 2;
    Ok(Some(match kind {
        b'+' => {
            *at = after_line;
            Resp::Simple
        }
        b'-' => {
            *at = after_line;
            Resp::Error
        }
        b':' => {
            *at = after_line;
            Resp::Int
        }
        b'$' => {
            let len = number()?;
            if len < 0 {
                *at = after_line;
                Resp::Bulk(None)
            } else {
                let len = len as usize;
                if buf.len() < after_line + len + 2 {
                    return Ok(None);
                }
                *at = after_line + len + 2;
                Resp::Bulk(Some(Bytes::copy_from_slice(
                    &buf[after_line..after_line + len],
                )))
            }
        }
        b'*' => {
            let n = number()?.max(0) as usize;
            let mut items = Vec::with_capacity(n.min(16));
            let mut cursor = after_line;
            for _ in 0..n {
                match resp_value(buf, &mut cursor)? {
                    Some(v) => items.push(v),
                    None => return Ok(None),
                }
            }
            *at = cursor;
            Resp::Array(items)
        }
        _ => return Err(()),
    }))
}

/// What a subscribed Redis connection's value means to the bench.
fn redis_event(value: Resp) -> Option<Event> {
    match value {
        Resp::Array(mut items) if items.len() == 3 => {
            let kind = match &items[0] {
                Resp::Bulk(Some(k)) => k.clone(),
                _ => return None,
            };
            match &kind[..] {
                b"message" => match items.pop() {
                    Some(Resp::Bulk(Some(payload))) => Some(Event::Message(payload)),
                    _ => None,
                },
                b"subscribe" | b"unsubscribe" => Some(Event::End),
                _ => None,
            }
        }
        Resp::Error => Some(Event::Closed),
        _ => None,
    }
}

fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Counts a Redis publisher's replies, one per PUBLISH, said once per read;
/// the count's sender goes when the connection ends.
async fn count_replies(mut rd: OwnedReadHalf, replies: tokio::sync::watch::Sender<u64>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut n = 0;
    loop {
        loop {
            match resp_frame(&mut buf) {
                Ok(Some(_)) => n += 1,
                Ok(None) => break,
                // Not RESP: nothing more can be counted.
                Err(()) => return,
            }
        }
        replies.send_replace(n);
        buf.reserve(64 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What a protocol v2 publisher's broker answered.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// The highest `CONFIRM` (everything up to it not refused is routed).
    pub confirmed: u64,
    pub refused: u64,
    /// End-of-stream came: every publish is answered.
    pub ended: bool,
}

/// Reads a v2 publisher's answers until its connection ends; the watch
/// closes with it (after `ended`, when the broker said end-of-stream).
async fn read_answers(mut reader: Reader, tx: tokio::sync::watch::Sender<Answers>) {
    while let Some(Ok(f)) = reader.next().await {
        match v2::decode_broker(f) {
            Ok(v2::BrokerFrame::Confirm(up_to)) => tx.send_modify(|a| a.confirmed = up_to),
            Ok(v2::BrokerFrame::Refused { .. }) => tx.send_modify(|a| a.refused += 1),
            Ok(v2::BrokerFrame::EndOfStream) => {
                tx.send_modify(|a| a.ended = true);
                // Held until the bench has read it.
                let _ = tx.closed().await;
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

pub enum Pub {
    Aioq(Box<Connection>),
    AioqV2 {
        writer: Writer,
        /// The last confirm id used, when every publish asks for one.
        last_id: Option<u64>,
        /// What the broker answered, as its reader task saw it.
        answers: tokio::sync::watch::Receiver<Answers>,
    },
    Nats {
        nats: async_nats::Client,
        /// Subjects already made, by channel.
        subjects: Vec<(Bytes, async_nats::Subject)>,
    },
    Redis {
        out: BufWriter<OwnedWriteHalf>,
        sent: u64,
        /// Replies counted so far; closed when the connection ends.
        replies: tokio::sync::watch::Receiver<u64>,
    },
}

impl Pub {
    /// Queues one message; it goes out with the next flush at the latest.
    pub async fn feed(&mut self, channel: &Bytes, payload: Bytes) -> anyhow::Result<()> {
        match self {
            Pub::Aioq(conn) => {
                conn.feed(channel.clone()).await?;
                conn.feed(payload).await?;
            }
            Pub::AioqV2 {
                writer, last_id, ..
            } => {
                let id = last_id.as_mut().map(|n| {
                    *n += 1;
                    *n
                });
                writer
                    .feed(v2::encode::publish(id, None, channel, &payload))
                    .await?;
            }
            Pub::Nats { nats, subjects } => {
                let subject = match subjects.iter().find(|(c, _)| c == channel) {
                    Some((_, s)) => s.clone(),
                    None => {
                        let name = std::str::from_utf8(channel)?;
                        let s = async_nats::Subject::from(nats_subject(name));
                        subjects.push((channel.clone(), s.clone()));
                        s
                    }
                };
                nats.publish(subject, payload).await?;
            }
            Pub::Redis { out, sent, .. } => {
                out.write_all(&resp_command(&[b"PUBLISH", channel, &payload]))
                    .await?;
                *sent += 1;
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Pub::Aioq(conn) => conn.flush().await?,
            Pub::AioqV2 { writer, .. } => SinkExt::<Bytes>::flush(writer).await?,
            // The client writes as soon as its connection task can.
            Pub::Nats { .. } => {}
            Pub::Redis { out, .. } => out.flush().await?,
        }
        Ok(())
    }

    pub async fn send(&mut self, channel: &Bytes, payload: Bytes) -> anyhow::Result<()> {
        self.feed(channel, payload).await?;
        self.flush().await
    }

    /// Waits, up to [`GOODBYE_WITHIN`], until the broker has routed
    /// everything published: aioq's confirmed goodbye, a NATS message to itself that came back,
    /// a reply to every Redis PUBLISH.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Pub::Aioq(conn) => {
                crate::client::publisher::finish(conn, GOODBYE_WITHIN).await?;
            }
            Pub::AioqV2 {
                writer,
                last_id,
                answers,
            } => {
                writer.send(Bytes::new()).await?;
                let a = tokio::time::timeout(GOODBYE_WITHIN, answers.wait_for(|a| a.ended))
                    .await
                    .context("no end-of-stream within the goodbye time")?
                    .context("the connection ended without end-of-stream")?
                    .clone();
                if a.refused > 0 {
                    bail!("the broker refused {} publishes", a.refused);
                }
                if let Some(last) = last_id {
                    if a.confirmed < *last {
                        bail!("the broker confirmed up to {} of {last}", a.confirmed);
                    }
                }
            }
            Pub::Nats { nats, .. } => {
                // A flush only writes the socket: a message to itself that
                // comes back shows that the server read every publish before
                // it (one connection's messages are processed in order).
                let round_trip = async {
                    let inbox = nats.new_inbox();
                    let mut echo = nats.subscribe(inbox.clone()).await?;
                    nats.publish(inbox, Bytes::new()).await?;
                    nats.flush().await?;
                    echo.next().await.context("the connection ended")?;
                    anyhow::Ok(())
                };
                tokio::time::timeout(GOODBYE_WITHIN, round_trip)
                    .await
                    .context("NATS did not confirm within the goodbye time")??;
            }
            Pub::Redis { out, sent, replies } => {
                out.flush().await?;
                let sent = *sent;
                tokio::time::timeout(GOODBYE_WITHIN, replies.wait_for(|n| *n >= sent))
                    .await
                    .context("Redis did not answer every publish within the goodbye time")?
                    .context("the Redis connection ended before every publish was answered")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_show_a_password_and_keep_ipv6_brackets() {
        let tls = crate::tls::ClientTlsArgs::default();
        let shown = |t: &str| Target::parse("--target", t, &tls).unwrap().to_string();
        assert_eq!(
            shown("nats://user:hunter2@127.0.0.1:4222"),
            "nats://user:***@127.0.0.1:4222"
        );
        assert_eq!(shown("nats://s3cret@h:1"), "nats://***@h:1");
        assert_eq!(shown("NATS://[::1]:4222"), "nats://[::1]:4222");
        assert_eq!(shown("redis://[::1]:6379"), "redis://[::1]:6379");
        assert!(Target::parse("--target", "redis://:hunter2@h:1", &tls).is_err());
    }

    #[test]
    fn nats_frames_split_anywhere_parse_whole() {
        let wire = b"INFO {}\r\nMSG a.b 1 5\r\nhello\r\nPING\r\nMSG a.b 1 q 0\r\n\r\nPONG\r\n";
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for &b in wire.iter() {
            buf.extend_from_slice(&[b]);
            while let Ok(Some(e)) = nats_frame(&mut buf) {
                if let Some(e) = e {
                    got.push(format!("{e:?}"));
                }
            }
        }
        assert_eq!(
            got,
            ["Message(b\"hello\")", "Ping", "Message(b\"\")", "End"]
        );
    }

    #[test]
    fn redis_messages_split_anywhere_parse_whole() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$4\r\nab\r\n\r\n";
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for &b in wire.iter() {
            buf.extend_from_slice(&[b]);
            while let Ok(Some(v)) = resp_frame(&mut buf) {
                if let Some(e) = redis_event(v) {
                    got.push(format!("{e:?}"));
                }
            }
        }
        assert_eq!(got, ["End", "Message(b\"ab\\r\\n\")"]);
    }
}
