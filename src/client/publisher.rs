//! The publishing half of a client: keeps a connection up and writes what a
//! producer hands it, in order, reconnecting with backoff. Used by `aioq send`
//! and by everything else that forwards into a broker.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::reconnect::Backoff;
use super::{connect, Connection, Target};
use crate::proto::NULL_CHANNEL;

/// Frames written per flush when messages are waiting.
const BATCH: usize = 128;

/// Keeps a connection up and writes what the producer makes, in order. A batch
/// whose write failed is sent again after reconnecting.
pub async fn run(
    target: &Target,
    channel_name: &str,
    mut rx: mpsc::Receiver<Bytes>,
    no_reconnect: bool,
) -> anyhow::Result<()> {
    let channel = Bytes::copy_from_slice(channel_name.as_bytes());
    let mut outbox: VecDeque<Bytes> = VecDeque::new();
    let mut backoff = Backoff::default();
    let mut was_connected = false;
    loop {
        let mut conn = match connect(target, NULL_CHANNEL).await {
            Ok(c) => c,
            Err(e) if no_reconnect => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("{e:#}; retrying in {delay:.1?}");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        if was_connected {
            tracing::warn!(
                "reconnected to {}; sending {} buffered message(s)",
                target,
                outbox.len() + rx.len()
            );
        } else {
            tracing::info!("connected to {}, publishing to {}", target, channel_name);
        }
        was_connected = true;
        match session(&mut conn, &channel, &mut rx, &mut outbox).await {
            Ok(()) => return finish(&mut conn).await.with_context(|| format!("{target}")),
            Err(why) if no_reconnect => {
                anyhow::bail!("connection to {target} broke: {why}")
            }
            Err(why) => tracing::warn!("connection lost ({why}); reconnecting"),
        }
    }
}

/// Runs until the input ends (Ok) or the connection breaks (Err).
async fn session(
    conn: &mut Connection,
    channel: &Bytes,
    rx: &mut mpsc::Receiver<Bytes>,
    outbox: &mut VecDeque<Bytes>,
) -> Result<(), String> {
    loop {
        if outbox.is_empty() {
            tokio::select! {
                // The broker only writes to a publisher to say it is closing.
                frame = conn.next() => return Err(match frame {
                    Some(Ok(f)) if f.is_empty() => "the broker closed the stream".into(),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => e.to_string(),
                    None => "closed by the broker".into(),
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
            conn.feed(channel.clone())
                .await
                .map_err(|e| e.to_string())?;
            conn.feed(m.clone()).await.map_err(|e| e.to_string())?;
        }
        conn.flush().await.map_err(|e| e.to_string())?;
        outbox.clear();
    }
}

/// Says goodbye and waits for the broker's end-of-stream: only then has
/// everything sent been routed. A broker that ends the stream any other way
/// (a TLS alert for a refused certificate, a reset) did not confirm it.
async fn finish(conn: &mut Connection) -> anyhow::Result<()> {
    let wait = async {
        conn.send(Bytes::new()).await.context("saying goodbye")?;
        while let Some(frame) = conn.next().await {
            if frame?.is_empty() {
                break;
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(5), wait).await {
        Ok(r) => r.context("the broker did not confirm the end of the stream"),
        Err(_) => anyhow::bail!("no end-of-stream from the broker within 5s"),
    }
}
