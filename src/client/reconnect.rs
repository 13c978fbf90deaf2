//! Staying subscribed across broker restarts: the one connect → back off →
//! reconnect loop of every client (`listen`, `send`, `metrics`, `watch-db
//! --publish`).
//!
//! Every way a connection ends goes through the same backoff: a failed
//! connect, and a connection the broker ends at once (its refusal when a
//! connection limit is reached is an immediate end-of-stream). Only a
//! connection that lived starts the backoff over. Retries are said once per
//! episode at WARN, each try at DEBUG (`-v`), and a reminder every minute.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::{ConnectOptions, Connection, Connector, Diagnosis};
use crate::runtime::backoff::Backoff;

/// A connection that ends sooner than this after it was made was turned away
/// (or met a broker that was stopping): reconnecting at once would spin.
pub const SETTLED: Duration = Duration::from_secs(1);

/// How long a new connection is watched for the broker's refusal (an
/// end-of-stream sent as soon as it accepts) before it is said to be
/// connected. Later refusals (a slow network) are caught by [`SETTLED`].
const REFUSAL_WINDOW: Duration = Duration::from_millis(20);

/// How often a retry episode that goes on is said again at WARN.
const REMIND_EVERY: Duration = Duration::from_secs(60);

pub struct Reconnector {
    connector: Connector,
    channel: String,
    /// What the connection is for, as log lines say it ("subscribed to
    /// /topic/x", "publishing to /queue/y").
    role: String,
    options: ConnectOptions,
    backoff: Backoff,
    was_connected: bool,
    /// `--no-reconnect`: a failed connect is returned, not retried.
    once: bool,
    connected_at: Option<Instant>,
    /// The wait owed before the next try, after a connection ended at once.
    pause: Option<Duration>,
    /// Failed tries (connects and immediate ends) since the last connection
    /// that lived, and when that was last said at WARN.
    tries: u64,
    said_at: Option<Instant>,
    /// Speak protocol v2 asking for these features, when the broker does.
    hello: Option<Vec<&'static str>>,
    /// A broker that speaks only protocol v1 will do (nothing asked for needs v2).
    v1_will_do: bool,
    /// The broker was found to speak only v1, and that was said.
    said_v1: bool,
}

/// A connection, in the protocol the broker speaks.
pub enum Link {
    V2(Connection, crate::proto::v2::ServerHello),
    /// Subscribed to the reconnector's channel under protocol v1.
    V1(Connection),
}

impl Reconnector {
    /// Subscribes to `channel` (the null channel for a publisher); `role` says
    /// what for in the log.
    pub fn new(connector: Connector, channel: &str, role: String) -> Self {
        Self {
            connector,
            channel: channel.to_owned(),
            role,
            options: ConnectOptions::default(),
            backoff: Backoff::default(),
            was_connected: false,
            once: false,
            connected_at: None,
            pause: None,
            tries: 0,
            said_at: None,
            hello: None,
            v1_will_do: true,
            said_v1: false,
        }
    }

    /// Speaks protocol v2 asking for `features`; `v1_will_do`: a broker that
    /// speaks only v1 is used with v1 (else it is an error).
    pub fn speak_v2(mut self, features: &[&'static str], v1_will_do: bool) -> Self {
        self.hello = Some(features.to_vec());
        self.v1_will_do = v1_will_do;
        self
    }

    /// Connects as [`connect`](Self::connect) does, saying a v2 hello first
    /// when asked to ([`speak_v2`](Self::speak_v2)); against a broker that
    /// speaks only v1, subscribes under v1 (when that will do) after one
    /// line that says so.
    pub async fn connect_link(&mut self) -> anyhow::Result<Link> {
        let Some(features) = self.hello.clone() else {
            return Ok(Link::V1(self.connect().await?));
        };
        loop {
            let sent = super::v2::client_hello(&features);
            let mut conn = self.connect_as(&super::v2::hello_name(), &sent).await?;
            match super::v2::greeting(&mut conn, &sent).await {
                Ok(super::v2::Greeting::V2(hello)) => {
                    return Ok(Link::V2(self.connected(conn), hello))
                }
                Ok(super::v2::Greeting::V1 { refused }) => {
                    drop(conn);
                    if !self.v1_will_do {
                        if refused {
                            let why = Diagnosis::Refused(
                                "end of stream as soon as it said hello (it refuses more \
                                 connections, is stopping, or speaks protocol 1 and refused \
                                 the hello)"
                                    .into(),
                            );
                            let e = why.into_error(self.connector.to_string());
                            if self.once || crate::exit::is_lasting(&e) {
                                return Err(e);
                            }
                            self.back_off(format!("{e:#}"));
                            continue;
                        }
                        anyhow::bail!(
                            "the broker at {} speaks protocol 1 only, and {} needs protocol 2",
                            self.connector,
                            self.role
                        );
                    }
                    let conn = self.connect().await?;
                    if !self.said_v1 {
                        self.said_v1 = true;
                        tracing::info!(
                            "the broker at {} speaks protocol 1 only: using protocol 1",
                            self.connector
                        );
                    }
                    return Ok(Link::V1(conn));
                }
                Err(e) => {
                    // A TLS alert or a reset reads as what it means (a
                    // certificate refused, flags that do not match).
                    let e = match e
                        .downcast_ref::<crate::proto::FrameError>()
                        .and_then(|f| super::explain(f))
                    {
                        Some(d) => d.into_error(self.connector.to_string()),
                        None => e,
                    };
                    if self.once || crate::exit::is_lasting(&e) {
                        return Err(e);
                    }
                    self.back_off(format!("{e:#}"));
                }
            }
        }
    }

    /// With `once`, [`connect`](Self::connect) tries one time.
    pub fn once(mut self, once: bool) -> Self {
        self.once = once;
        self
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Connects, retrying with backoff while the broker is unreachable; fails
    /// only in `once` mode. Cancel-safe: it holds no connection while it waits.
    pub async fn connect(&mut self) -> anyhow::Result<Connection> {
        let channel = self.channel.clone();
        self.connect_as(&channel, &[]).await
    }

    /// Connects with `first` as the first frame, and `then` (when not empty)
    /// as the next two: a v2 hello's name again and its JSON.
    async fn connect_as(&mut self, first: &str, then: &[u8]) -> anyhow::Result<Connection> {
        loop {
            if let Some(pause) = self.pause {
                tokio::time::sleep(pause).await;
                self.pause = None;
            }
            let mut connected = self.connector.connect_with(first, self.options).await;
            if let (Ok(conn), false) = (&mut connected, then.is_empty()) {
                use futures::SinkExt;
                let sent = async {
                    conn.feed(Bytes::copy_from_slice(first.as_bytes())).await?;
                    conn.feed(Bytes::copy_from_slice(then)).await?;
                    conn.flush().await
                };
                if let Err(e) = sent.await {
                    // Closed under the hello: what the broker said first
                    // (its refusal's end-of-stream) says why.
                    let e = match refused_at_once(conn).await {
                        Some(why) => why.into_error(self.connector.to_string()),
                        None => anyhow::Error::new(e).context("saying hello"),
                    };
                    if self.once || crate::exit::is_lasting(&e) {
                        return Err(e);
                    }
                    self.back_off(format!("{e:#}"));
                    continue;
                }
            }
            match connected {
                Ok(mut conn) => {
                    // A hello's answer is read by its caller (an end-of-stream
                    // there may be a version 1 broker refusing the hello's
                    // name), who says it connected.
                    if !then.is_empty() {
                        return Ok(conn);
                    }
                    let Some(why) = refused_at_once(&mut conn).await else {
                        return Ok(self.connected(conn));
                    };
                    let e = why.into_error(self.connector.to_string());
                    if self.once || crate::exit::is_lasting(&e) {
                        return Err(e);
                    }
                    self.back_off(format!("{e:#}"));
                }
                // A mistake in the flags (TLS on one side only, a CA not
                // trusted) or a refused certificate: waiting cannot fix it.
                Err(e) if self.once || crate::exit::is_lasting(&e) => return Err(e),
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    self.retrying(&format!("{e:#}"), delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn connected(&mut self, conn: Connection) -> Connection {
        let after = match self.tries {
            0 => String::new(),
            n => format!(" after {n} failed tr{}", if n == 1 { "y" } else { "ies" }),
        };
        if self.was_connected {
            tracing::warn!("reconnected to {}{after}, {}", self.connector, self.role);
        } else if self.tries > 0 {
            tracing::warn!("connected to {}{after}, {}", self.connector, self.role);
        } else {
            tracing::info!("connected to {}, {}", self.connector, self.role);
        }
        self.was_connected = true;
        self.connected_at = Some(Instant::now());
        conn
    }

    /// True when the connection ended sooner than [`SETTLED`] after it was
    /// made: the broker turned it away (or was stopping).
    fn ended_at_once(&self) -> bool {
        self.connected_at.is_some_and(|t| t.elapsed() < SETTLED)
    }

    /// Says why the connection ended; the next [`connect`](Self::connect)
    /// follows, at once after a connection that lived, after the backoff's
    /// next step after one that ended at once.
    pub fn lost(&mut self, why: &str) {
        if self.ended_at_once() {
            self.back_off(format!(
                "the broker at {} ended the connection at once ({why}): it refuses more \
                 connections, or is stopping",
                self.connector
            ));
        } else {
            self.backoff.reset();
            self.tries = 0;
            self.said_at = None;
            tracing::warn!("connection lost ({why}); reconnecting");
        }
        self.connected_at = None;
    }

    /// A connection ended at once: the next try waits the backoff's next step.
    fn back_off(&mut self, what: String) {
        let delay = self.backoff.next_delay();
        self.pause = Some(delay);
        self.connected_at = None;
        self.retrying(&what, delay);
    }

    /// One failed try: said at WARN when an episode starts and once a
    /// minute while it lasts, at DEBUG otherwise.
    fn retrying(&mut self, what: &str, delay: Duration) {
        self.tries += 1;
        let due = self.said_at.is_none_or(|t| t.elapsed() >= REMIND_EVERY);
        if !due {
            tracing::debug!("{what}; retrying in {delay:.1?}");
        } else if self.tries == 1 {
            self.said_at = Some(Instant::now());
            tracing::warn!("{what}; retrying with backoff (every try is logged with -v)");
        } else {
            self.said_at = Some(Instant::now());
            tracing::warn!("{what}; still retrying ({} tries so far)", self.tries);
        }
    }
}

/// Whether the broker ended a new connection as soon as it accepted it (its
/// refusal: an end-of-stream, a close, a TLS alert for our certificate),
/// and why. A message that arrives meanwhile is put back, unread.
async fn refused_at_once(conn: &mut Connection) -> Option<Diagnosis> {
    const AT_ONCE: &str = "as soon as it accepted (it refuses more connections, or is stopping)";
    let first = match tokio::time::timeout(REFUSAL_WINDOW, conn.next()).await {
        Err(_) => return None,
        Ok(first) => first,
    };
    match first {
        Some(Ok(frame)) if !frame.is_empty() => {
            let buf = conn.read_buffer_mut();
            let rest = buf.split();
            buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            buf.extend_from_slice(&frame);
            buf.unsplit(rest);
            None
        }
        Some(Ok(_)) => Some(Diagnosis::Refused(format!("end of stream {AT_ONCE}"))),
        Some(Err(e)) => {
            Some(super::explain(&e).unwrap_or_else(|| Diagnosis::Refused(format!("{e} {AT_ONCE}"))))
        }
        None => Some(Diagnosis::Refused(format!("closed {AT_ONCE}"))),
    }
}
