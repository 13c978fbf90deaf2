//! Staying subscribed across broker restarts: the one connect → back off →
//! reconnect loop of every client (`listen`, `send`, `metrics`, `watch-db
//! --publish`).

use super::{ConnectOptions, Connection, Connector};
use crate::runtime::backoff::Backoff;

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
        loop {
            match self
                .connector
                .connect_with(&self.channel, self.options)
                .await
            {
                Ok(conn) => {
                    self.backoff.reset();
                    if self.was_connected {
                        tracing::warn!("reconnected to {}, {}", self.connector, self.role);
                    } else {
                        tracing::info!("connected to {}, {}", self.connector, self.role);
                    }
                    self.was_connected = true;
                    return Ok(conn);
                }
                Err(e) if self.once => return Err(e),
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    tracing::warn!("{e:#}; retrying in {delay:.1?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Says why the connection ended; the next [`connect`](Self::connect) follows.
    pub fn lost(&self, why: &str) {
        tracing::warn!("connection lost ({why}); reconnecting");
    }
}
