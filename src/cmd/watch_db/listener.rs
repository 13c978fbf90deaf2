//! The LISTEN connection: one connection for every table's channel, driven by
//! hand so notifications are not lost (tokio-postgres only hands them out
//! through `poll_message`), probed for liveness, and re-established with backoff.
//!
//! Notifications sent while it is down are gone for good, so every (re)connect
//! is announced with [`Feed::Connected`]: LISTEN is in place first, and only then
//! is the cache told to forget everything.

use std::time::Duration;

use anyhow::{anyhow, Context};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::schema;
use crate::runtime::backoff::Backoff;

/// How often the idle LISTEN connection is probed; a half-open TCP connection
/// would otherwise look like a quiet table forever.
const PROBE_EVERY: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Feed {
    /// LISTEN is in place; `first` is false after a reconnect.
    Connected {
        first: bool,
    },
    Notification {
        channel: String,
        payload: String,
    },
    /// The event queue was full: this many notifications were dropped, so
    /// the cache cannot know what changed.
    Overflow {
        missed: u64,
    },
}

/// Runs until `tx` closes. Fails only if the very first connection fails (a
/// wrong DSN should stop the program, not retry forever).
pub async fn run(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    channels: Vec<String>,
    queue: usize,
    tx: mpsc::Sender<Feed>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut connected_before = false;
    loop {
        let mut connected = false;
        let link = Link {
            config: &config,
            tls: &tls,
            channels: &channels,
            queue,
            tx: &tx,
        };
        match session(link, connected_before, &mut connected).await {
            Ok(()) => return Ok(()),
            Err(e) if !connected_before && !connected => return Err(e),
            Err(e) => {
                if connected {
                    backoff.reset();
                }
                connected_before = true;
                let delay = backoff.next_delay();
                tracing::warn!("LISTEN connection lost: {e:#}; reconnecting in {delay:.1?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What a session connects with, and where it sends what it hears.
#[derive(Clone, Copy)]
struct Link<'a> {
    config: &'a tokio_postgres::Config,
    tls: &'a tokio_postgres_rustls::MakeRustlsConnect,
    channels: &'a [String],
    /// Notifications held between the connection and the cache.
    queue: usize,
    tx: &'a mpsc::Sender<Feed>,
}

async fn session(link: Link<'_>, reconnect: bool, connected: &mut bool) -> anyhow::Result<()> {
    let Link {
        config,
        tls,
        channels,
        queue,
        tx,
    } = link;
    let mut config = config.clone();
    // Named, so operators (and tests) can tell this connection apart.
    config.application_name("aioq watch-db listener");
    let (client, mut connection) = config
        .connect(tls.clone())
        .await
        .context("connecting to PostgreSQL")?;
    // Bounded: the connection must go on being driven (the probes and the
    // LISTENs ride on it), so a notification that finds the queue full is
    // dropped and counted, and the cache is told to start over.
    let (ntx, mut nrx) = mpsc::channel(queue.max(1));
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dropping = dropped.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => match ntx.try_send(Ok(n)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropping.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                },
                Ok(_) => {}
                Err(e) => {
                    let _ = ntx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let _abort_driver = AbortOnDrop(driver);
    for channel in channels {
        let listen = schema::formatted(&client, "LISTEN %I", &[channel]).await?;
        client.batch_execute(&listen).await?;
    }
    // Prove that notifications reach us (they do not through a pooler in
    // transaction mode), on a channel of our own so no one else sees it.
    let probe = format!("aioq_probe_{}", std::process::id());
    client
        .batch_execute(&schema::formatted(&client, "LISTEN %I", &[&probe]).await?)
        .await?;
    client
        .execute("SELECT pg_notify($1, 'probe')", &[&probe])
        .await?;
    let got = tokio::time::timeout(Duration::from_secs(5), nrx.recv())
        .await
        .map_err(|_| anyhow!("LISTEN delivers no notifications (is this a pooler in transaction mode? use a direct connection)"))?;
    match got {
        Some(Ok(n)) if n.channel() == probe => {}
        Some(Err(e)) => return Err(e.into()),
        _ => return Err(anyhow!("connection closed while checking LISTEN")),
    }
    *connected = true;
    if tx
        .send(Feed::Connected { first: !reconnect })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut probe_timer = tokio::time::interval(PROBE_EVERY);
    probe_timer.tick().await;
    loop {
        let missed = dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if missed > 0 && tx.send(Feed::Overflow { missed }).await.is_err() {
            return Ok(());
        }
        tokio::select! {
            n = nrx.recv() => match n {
                Some(Ok(n)) if n.channel() == probe => {}
                Some(Ok(n)) => {
                    let feed = Feed::Notification { channel: n.channel().to_string(), payload: n.payload().to_string() };
                    if tx.send(feed).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e).context("LISTEN connection"),
                None => return Err(anyhow!("LISTEN connection closed")),
            },
            _ = probe_timer.tick() => {
                tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("SELECT 1"))
                    .await
                    .map_err(|_| anyhow!("no answer to a probe within {PROBE_TIMEOUT:?}"))?
                    .context("probe")?;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
