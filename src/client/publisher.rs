//! The publishing half of a client: keeps a connection up and writes what a
//! producer hands it, in order, reconnecting with backoff. Used by `aioq send`
//! and by everything else that forwards into a broker.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::reconnect::Reconnector;
use super::{Connection, Connector};
use crate::proto::{FrameError, NULL_CHANNEL};

/// Frames written per flush when messages are waiting.
const BATCH: usize = 128;

/// How long the broker has to confirm a goodbye with end-of-stream.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// Why a publishing connection ended before its input did.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    /// The broker said end-of-stream (it is shutting down, or refused us).
    #[error("the broker closed the stream")]
    EndOfStream,
    /// The socket closed without end-of-stream.
    #[error("closed by the broker")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Keeps a connection up and writes what the producer makes, in order. A batch
/// whose write failed is sent again after reconnecting.
pub async fn run(
    connector: Connector,
    channel_name: &str,
    mut rx: mpsc::Receiver<Bytes>,
    no_reconnect: bool,
) -> anyhow::Result<()> {
    let channel = Bytes::copy_from_slice(channel_name.as_bytes());
    let mut outbox: VecDeque<Bytes> = VecDeque::new();
    let role = format!("publishing to {channel_name}");
    let mut link = Reconnector::new(connector, NULL_CHANNEL, role).once(no_reconnect);
    loop {
        let mut conn = link.connect().await?;
        let buffered = outbox.len() + rx.len();
        if buffered > 0 {
            tracing::info!("sending {buffered} buffered message(s)");
        }
        let target = link.connector().to_string();
        match session(&mut conn, &channel, &mut rx, &mut outbox).await {
            Ok(()) => {
                return finish(&mut conn, CONFIRM_WITHIN)
                    .await
                    .with_context(|| target)
            }
            Err(why) if no_reconnect => {
                anyhow::bail!("connection to {target} broke: {why}")
            }
            Err(why) => link.lost(&why.to_string()),
        }
    }
}

/// Runs until the input ends (Ok) or the connection breaks (Err).
async fn session(
    conn: &mut Connection,
    channel: &Bytes,
    rx: &mut mpsc::Receiver<Bytes>,
    outbox: &mut VecDeque<Bytes>,
) -> Result<(), Broken> {
    loop {
        if outbox.is_empty() {
            tokio::select! {
                // The broker only writes to a publisher to say it is closing.
                frame = conn.next() => return Err(match frame {
                    Some(Ok(f)) if f.is_empty() => Broken::EndOfStream,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => e.into(),
                    None => Broken::Closed,
                }),
                m = rx.recv() => match m {
                    Some(m) => outbox.push_back(m),
                    None => return Ok(()),
                },
            }
            while outbox.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => outbox.push_back(m),
                    Err(_) => break,
                }
            }
        }
        for m in outbox.iter() {
            conn.feed(channel.clone()).await?;
            conn.feed(m.clone()).await?;
        }
        conn.flush().await?;
        outbox.clear();
    }
}

/// Says goodbye and waits for the broker's end-of-stream: only then has
/// everything sent been routed. A broker that ends the stream any other way
/// (a TLS alert for a refused certificate, a reset) did not confirm it.
pub async fn finish<S>(conn: &mut S, within: Duration) -> anyhow::Result<()>
where
    S: futures::Sink<Bytes, Error = std::io::Error>
        + futures::Stream<Item = Result<Bytes, FrameError>>
        + Unpin,
{
    let wait = async {
        conn.send(Bytes::new()).await.context("saying goodbye")?;
        while let Some(frame) = conn.next().await {
            if frame?.is_empty() {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the connection closed without end-of-stream")
    };
    match tokio::time::timeout(within, wait).await {
        Ok(r) => r.context("the broker did not confirm the end of the stream"),
        Err(_) => anyhow::bail!("no end-of-stream from the broker within {within:?}"),
    }
}
