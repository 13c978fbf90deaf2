//! The publishing half of a client: keeps a connection up and writes what a
//! producer hands it, in order, reconnecting with backoff. Used by `aioq send`
//! and by everything else that forwards into a broker.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::reconnect::{Link, Reconnector};
use super::v2::Tally;
use super::{Connection, Connector, Protocol};
use crate::proto::v2::{decode_broker, encode, BrokerFrame};
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
    /// The broker said why it closed (a protocol v2 `ERROR`).
    #[error("the broker said: {0}")]
    Said(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_the_socket_took_whole_count_as_sent() {
        // "/t" + "abc": 4 + 2 + 4 + 3 = 13 bytes; "/t" + "de": 12 bytes.
        let outbox: VecDeque<Bytes> = [Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
            .into_iter()
            .collect();
        assert_eq!(whole_messages(2, &outbox, 0), 0);
        assert_eq!(whole_messages(2, &outbox, 12), 0);
        assert_eq!(whole_messages(2, &outbox, 13), 1);
        assert_eq!(whole_messages(2, &outbox, 24), 1);
        assert_eq!(whole_messages(2, &outbox, 25), 2);
    }
}

/// How a publisher behaves at the edges.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Exit on a broken connection instead of reconnecting.
    pub no_reconnect: bool,
    /// At the end, do not wait for the broker to confirm the goodbye (for
    /// brokers that do not answer it): flush, close, done.
    pub no_confirm: bool,
    /// Counts the connections made, for whoever reports reconnects.
    pub connects: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    pub protocol: super::Protocol,
    /// Protocol v2: wait for each publish's confirm before the next.
    pub confirm_each: bool,
}

impl Options {
    /// A forwarder's options: protocol v1, which every broker speaks (a
    /// forwarder's input never ends, so confirms would tell it nothing it
    /// reports).
    pub fn v1() -> Self {
        Self {
            protocol: Protocol::V1,
            ..Self::default()
        }
    }
}

/// What a publisher did, once its input ended.
#[derive(Debug)]
pub struct Sent {
    pub messages: u64,
    /// The broker confirmed, with end-of-stream after the goodbye, that it
    /// routed everything sent on the last connection.
    pub confirmed: bool,
    /// Over protocol v2: what each publish's answer said.
    pub v2: Option<Tally>,
}

/// Keeps a connection up and writes what the producer makes, in order. Of a
/// batch whose write failed, the messages the socket had not taken whole are
/// sent again after reconnecting; the others are not, which would double them.
pub async fn run(
    connector: Connector,
    channel_name: &str,
    mut rx: mpsc::Receiver<Bytes>,
    options: Options,
) -> anyhow::Result<Sent> {
    let channel = Bytes::copy_from_slice(channel_name.as_bytes());
    let mut outbox: VecDeque<Bytes> = VecDeque::new();
    let role = format!("publishing to {channel_name}");
    let mut link = Reconnector::new(connector, NULL_CHANNEL, role).once(options.no_reconnect);
    // Without confirms (--no-confirm), protocol 2 has nothing to add, and a
    // broker that answers nothing would not answer the hello either.
    let auto_v1 = options.protocol == Protocol::Auto && options.no_confirm;
    if options.protocol != Protocol::V1 && !auto_v1 {
        let v1_will_do = options.protocol == Protocol::Auto && !options.confirm_each;
        link = link.speak_v2(&[crate::proto::v2::feature::CONFIRMS], v1_will_do);
    }
    let mut messages = 0u64;
    // Sent on connections that ended without the broker confirming them.
    let mut unconfirmed = 0u64;
    let mut tally: Option<Tally> = None;
    loop {
        let (mut conn, v2) = match link.connect_link().await? {
            Link::V1(conn) => (conn, false),
            Link::V2(conn, _) => (conn, true),
        };
        if v2 && tally.is_none() {
            tally = Some(Tally::default());
        }
        if let Some(c) = &options.connects {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let buffered = outbox.len() + rx.len();
        if buffered > 0 && messages > 0 {
            tracing::info!("sending {buffered} buffered message(s)");
        }
        let target = link.connector().to_string();
        // Messages written on this connection: none is confirmed until the
        // broker answers the goodbye with end-of-stream.
        let mut written = 0u64;
        let ended = match (&mut tally, v2) {
            (Some(tally), true) => {
                let each = options.confirm_each;
                let s = SessionV2 {
                    conn: &mut conn,
                    channel: &channel,
                    tally,
                };
                s.run(&mut rx, &mut outbox, &mut written, each).await
            }
            _ => session(&mut conn, &channel, &mut rx, &mut outbox, &mut written).await,
        };
        messages += written;
        let not_confirmed = || {
            format!(
                "{written} message(s) sent on that connection were not confirmed \
                 (the broker may or may not have routed them)"
            )
        };
        match ended {
            Ok(()) if options.no_confirm => {
                use tokio::io::AsyncWriteExt;
                conn.send(Bytes::new()).await.context("saying goodbye")?;
                let _ = conn.get_mut().shutdown().await;
                return Ok(Sent {
                    messages,
                    confirmed: false,
                    v2: tally,
                });
            }
            Ok(()) if unconfirmed > 0 => {
                finish_any(&mut conn, tally.as_mut().filter(|_| v2), CONFIRM_WITHIN)
                    .await
                    .with_context(not_confirmed)
                    .with_context(|| target)?;
                anyhow::bail!(
                    "{unconfirmed} of {messages} message(s) were not confirmed: they were \
                     sent on connections that ended without end-of-stream, and the broker \
                     may or may not have routed them"
                );
            }
            Ok(()) => {
                tracing::debug!(
                    "input done, {written} message(s) written on this connection: saying \
                     goodbye and waiting for the broker to confirm"
                );
                finish_any(&mut conn, tally.as_mut().filter(|_| v2), CONFIRM_WITHIN)
                    .await
                    .with_context(not_confirmed)
                    .with_context(|| target)?;
                return Ok(Sent {
                    messages,
                    confirmed: true,
                    v2: tally,
                });
            }
            Err(why) if options.no_reconnect => {
                anyhow::bail!("connection to {target} broke: {why}; {}", not_confirmed())
            }
            Err(why) => {
                // An end-of-stream confirms what the broker read before it;
                // any other end confirms nothing. (Over protocol v2, what
                // was not answered.)
                let lost = match (&mut tally, v2) {
                    // Every publish read before the end-of-stream was
                    // answered: the rest were not read, and go again.
                    (Some(t), true) if matches!(why, Broken::EndOfStream) => {
                        let unread = t.unread();
                        messages -= unread.len() as u64;
                        for m in unread.into_iter().rev() {
                            outbox.push_front(m);
                        }
                        0
                    }
                    (Some(t), true) => t.abandon() as u64,
                    _ if matches!(why, Broken::EndOfStream) => 0,
                    _ => written,
                };
                if lost > 0 {
                    unconfirmed += lost;
                    tracing::warn!(
                        "{lost} message(s) sent on that connection were not confirmed (the \
                         broker may or may not have routed them)"
                    );
                }
                link.lost(&why.to_string())
            }
        }
    }
}

/// Runs until the input ends (Ok) or the connection breaks (Err).
async fn session(
    conn: &mut Connection,
    channel: &Bytes,
    rx: &mut mpsc::Receiver<Bytes>,
    outbox: &mut VecDeque<Bytes>,
    written: &mut u64,
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
        let start = conn.get_ref().written();
        let sent = async {
            for m in outbox.iter() {
                conn.feed(channel.clone()).await?;
                conn.feed(m.clone()).await?;
            }
            conn.flush().await
        };
        if let Err(e) = sent.await {
            // What the socket took whole is gone to the broker: sending it
            // again would deliver it twice. Only the rest is kept for the
            // next connection.
            let whole = whole_messages(channel.len(), outbox, conn.get_ref().written() - start);
            outbox.drain(..whole);
            *written += whole as u64;
            return Err(e.into());
        }
        *written += outbox.len() as u64;
        outbox.clear();
    }
}

/// How many of `outbox`'s messages (each a channel frame of `channel` bytes
/// and a payload frame) fit whole in the first `accepted` bytes.
fn whole_messages(channel: usize, outbox: &VecDeque<Bytes>, accepted: u64) -> usize {
    let mut end = 0u64;
    outbox
        .iter()
        .take_while(|m| {
            end += (2 * crate::proto::LEN_PREFIX + channel + m.len()) as u64;
            end <= accepted
        })
        .count()
}

/// A protocol v2 publishing connection.
struct SessionV2<'a> {
    conn: &'a mut Connection,
    channel: &'a Bytes,
    tally: &'a mut Tally,
}

impl SessionV2<'_> {
    /// As [`session`]: runs until the input ends (Ok) or the connection
    /// breaks (Err). Each publish asks for a confirm; with `each`, the next
    /// waits for it.
    async fn run(
        mut self,
        rx: &mut mpsc::Receiver<Bytes>,
        outbox: &mut VecDeque<Bytes>,
        written: &mut u64,
        each: bool,
    ) -> Result<(), Broken> {
        let batch = if each { 1 } else { BATCH };
        loop {
            if each {
                while self.tally.waiting() > 0 {
                    self.hear().await?;
                }
            }
            if outbox.is_empty() {
                tokio::select! {
                    r = self.hear() => { r?; continue }
                    m = rx.recv() => match m {
                        Some(m) => outbox.push_back(m),
                        None => return Ok(()),
                    },
                }
                while outbox.len() < batch {
                    match rx.try_recv() {
                        Ok(m) => outbox.push_back(m),
                        Err(_) => break,
                    }
                }
            }
            let n = outbox.len().min(batch);
            let start = self.conn.get_ref().written();
            let conn = &mut *self.conn;
            let tally = &mut *self.tally;
            let channel = self.channel;
            let sent = async {
                for m in outbox.iter().take(n) {
                    let id = tally.next_id(m);
                    conn.feed(encode::publish(Some(id), None, channel, m))
                        .await?;
                }
                conn.flush().await
            };
            if let Err(e) = sent.await {
                let took = self.conn.get_ref().written() - start;
                let whole = whole_v2(self.channel.len(), outbox, n, took);
                outbox.drain(..whole);
                *written += whole as u64;
                self.tally.unwritten(n - whole);
                return Err(e.into());
            }
            outbox.drain(..n);
            *written += n as u64;
        }
    }

    /// Reads one frame and takes in what it answers.
    async fn hear(&mut self) -> Result<(), Broken> {
        let frame = match self.conn.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Broken::Closed),
        };
        match decode_broker(frame) {
            Ok(BrokerFrame::EndOfStream) => Err(Broken::EndOfStream),
            Ok(BrokerFrame::Error { text, .. }) => Err(Broken::Said(text)),
            Ok(f) => {
                self.tally.hear(&f);
                Ok(())
            }
            Err(e) => Err(Broken::Said(format!(
                "a frame this client cannot read: {e}"
            ))),
        }
    }
}

/// How many of the first `n` of `outbox`'s messages, each a v2 `PUB` with a
/// confirm id to a channel of `channel` bytes, fit whole in `accepted` bytes.
fn whole_v2(channel: usize, outbox: &VecDeque<Bytes>, n: usize, accepted: u64) -> usize {
    let mut end = 0u64;
    outbox
        .iter()
        .take(n)
        .take_while(|m| {
            end += (crate::proto::LEN_PREFIX + 12 + channel + m.len()) as u64;
            end <= accepted
        })
        .count()
}

/// [`finish`], or under protocol v2 the goodbye after which every publish
/// is answered before end-of-stream.
async fn finish_any(
    conn: &mut Connection,
    tally: Option<&mut Tally>,
    within: Duration,
) -> anyhow::Result<()> {
    let Some(tally) = tally else {
        return finish(conn, within).await;
    };
    let wait = async {
        conn.send(Bytes::new()).await.context("saying goodbye")?;
        while let Some(frame) = conn.next().await {
            match decode_broker(frame?) {
                Ok(BrokerFrame::EndOfStream) => return anyhow::Ok(()),
                Ok(BrokerFrame::Error { text, .. }) => anyhow::bail!("the broker said: {text}"),
                Ok(f) => {
                    tally.hear(&f);
                }
                Err(e) => anyhow::bail!("a frame this client cannot read: {e}"),
            }
        }
        anyhow::bail!("the connection closed without end-of-stream")
    };
    match tokio::time::timeout(within, wait).await {
        Ok(r) => r.context("the broker did not answer the goodbye"),
        Err(_) => anyhow::bail!("no end-of-stream from the broker within {within:?}"),
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
        anyhow::bail!(
            "the connection closed without end-of-stream (an aioq broker does this when it \
             refused some of them: access rules, or its channel limit; its log says which)"
        )
    };
    match tokio::time::timeout(within, wait).await {
        Ok(r) => r.context("the broker did not confirm the end of the stream"),
        Err(_) => anyhow::bail!(
            "no end-of-stream from the broker within {within:?} (for a broker that does \
             not answer the goodbye, use --no-confirm)"
        ),
    }
}
