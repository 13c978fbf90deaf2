//! The subscribing half of a client: stays subscribed to one channel across
//! broker restarts and hands every message on. Used by `aioq metrics collect`.

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::reconnect::Backoff;
use super::{connect, Target};

/// Runs until `tx` closes.
pub async fn run(target: Target, channel: String, tx: mpsc::Sender<Bytes>) {
    let mut backoff = Backoff::default();
    let mut was_connected = false;
    loop {
        match connect(&target, &channel).await {
            Ok(mut conn) => {
                backoff.reset();
                if was_connected {
                    tracing::warn!("reconnected to {target}, subscribed to {channel}");
                } else {
                    tracing::info!("connected to {target}, subscribed to {channel}");
                }
                was_connected = true;
                let why = loop {
                    match conn.next().await {
                        Some(Ok(f)) if f.is_empty() => {
                            break "the broker closed the stream".to_string()
                        }
                        Some(Ok(f)) => {
                            if tx.send(f).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "closed by the broker".to_string(),
                    }
                };
                tracing::warn!("connection lost ({why}); reconnecting");
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("{e:#}; retrying in {delay:.1?}");
                tokio::time::sleep(delay).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}
