//! The subscribing half of a client: stays subscribed to one channel across
//! broker restarts and hands every message on. Used by `aioq metrics collect`.

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::reconnect::Reconnector;
use super::Connector;

/// Runs until `tx` closes.
pub async fn run(connector: Connector, channel: String, tx: mpsc::Sender<Bytes>) {
    let role = format!("subscribed to {channel}");
    let mut link = Reconnector::new(connector, &channel, role);
    loop {
        let Ok(mut conn) = link.connect().await else {
            return;
        };
        let why = loop {
            match conn.next().await {
                Some(Ok(f)) if f.is_empty() => break "the broker closed the stream".to_string(),
                Some(Ok(f)) => {
                    if tx.send(f).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "closed by the broker".to_string(),
            }
        };
        if tx.is_closed() {
            return;
        }
        link.lost(&why);
    }
}
