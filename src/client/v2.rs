//! Protocol v2 from the client's side (`PROTOCOL.md`, "Version 2"): the
//! hello that tells a version 2 broker from a version 1 one in one round
//! trip, and reading what the broker says after it.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::Connection;
use crate::proto::v2::{self, BrokerFrame, ClientHello, ServerHello};
use crate::proto::FrameCodec;

/// How long a broker has to answer a hello. A version 1 broker answers it
/// too (it sends the client's hello back), so only something that is no
/// broker at all waits this long.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Who answered a hello.
#[derive(Debug)]
pub enum Greeting {
    /// A version 2 broker, and what it said.
    V2(ServerHello),
    /// A version 1 broker: it took the hello for a subscription and a
    /// publish. `refused`: it answered with end-of-stream, as a version 1
    /// broker refusing the hello's name does, and as any broker turning a
    /// connection away does.
    V1 { refused: bool },
}

/// A fresh hello name: `/$aioq/hello/` and a nonce of this process and moment.
pub fn hello_name() -> String {
    use std::hash::BuildHasher;
    let seed = (
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let nonce = std::collections::hash_map::RandomState::new().hash_one(seed);
    format!("/$aioq/hello/{nonce:016x}")
}

/// Frame 3 of a hello asking for `features`.
pub fn client_hello(features: &[&str]) -> Bytes {
    ClientHello {
        protocol: 2,
        client: Some(concat!("aioq/", env!("CARGO_PKG_VERSION")).to_string()),
        features: features.iter().map(|f| f.to_string()).collect(),
    }
    .encode()
}

/// Reads the answer to a hello whose three frames were sent (`sent` is
/// frame 3, which a version 1 broker sends back). On a version 2 broker, the
/// connection's codec is set to take its largest deliveries.
pub async fn greeting(conn: &mut Connection, sent: &[u8]) -> anyhow::Result<Greeting> {
    let first = tokio::time::timeout(ANSWER_WITHIN, conn.next())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer to the protocol 2 hello within {ANSWER_WITHIN:?} (every aioq broker \
                 answers it; for a broker that answers nothing, use --no-confirm, or \
                 --protocol 1)"
            )
        })?;
    let frame = match first {
        Some(Ok(f)) => f,
        // Kept as the error itself: the caller tells a TLS alert from a reset.
        Some(Err(e)) => return Err(e.into()),
        None => anyhow::bail!("the broker closed the connection instead of answering the hello"),
    };
    // Sent back (a version 1 broker), or an end-of-stream (one that refused
    // the hello's subscription): version 1 either way.
    if frame.is_empty() || frame == sent {
        return Ok(Greeting::V1 {
            refused: frame.is_empty(),
        });
    }
    if let Some(hello) = ServerHello::parse(&frame) {
        // A delivery is its head (and headers) and a payload of up to
        // max_frame.
        let max = (hello.max_frame as usize)
            .saturating_add(64)
            .saturating_add(hello.max_header_bytes as usize);
        *conn.codec_mut() = FrameCodec::new(max);
        return Ok(Greeting::V2(hello));
    }
    match v2::decode_broker(frame) {
        Ok(BrokerFrame::Error { text, .. }) => {
            anyhow::bail!("the broker refused the hello: {text}")
        }
        _ => anyhow::bail!("the broker answered the hello with something that is not a hello"),
    }
}

/// How a reason code reads.
pub fn reason_name(code: u8) -> String {
    v2::reason::name(code).map_or_else(|| format!("reason {code}"), str::to_string)
}

/// What a protocol v2 publisher heard about the publishes it asked to hear
/// about: each confirm id it wrote is confirmed, refused, or still waiting.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// The last confirm id used (ids rise across connections).
    last_id: u64,
    /// Ids written on this connection and not answered yet, with their
    /// payloads, oldest first.
    waiting: std::collections::VecDeque<(u64, Bytes)>,
    pub routed: u64,
    /// Refusals by reason name.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// What the first refusal of each reason said.
    pub said: std::collections::BTreeMap<String, String>,
}

impl Tally {
    /// The confirm id of the next publish (of `payload`), counted as waiting.
    pub fn next_id(&mut self, payload: &Bytes) -> u64 {
        self.last_id += 1;
        self.waiting.push_back((self.last_id, payload.clone()));
        self.last_id
    }

    /// Publishes written and not answered yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The last `n` ids taken were never written (the connection broke).
    pub fn unwritten(&mut self, n: usize) {
        for _ in 0..n {
            self.waiting.pop_back();
        }
    }

    /// The connection ended: what still waits will never be answered;
    /// returns how many that is.
    pub fn abandon(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        n
    }

    /// The broker said end-of-stream, after answering every publish it
    /// read: what still waits was not read, and is given back (oldest
    /// first) to be sent again.
    pub fn unread(&mut self) -> Vec<Bytes> {
        self.waiting.drain(..).map(|(_, p)| p).collect()
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Takes in a frame the broker sent a publisher; false when it was no
    /// answer to a publish.
    pub fn hear(&mut self, frame: &BrokerFrame) -> bool {
        match frame {
            BrokerFrame::Confirm(up_to) => {
                while self.waiting.front().is_some_and(|(id, _)| id <= up_to) {
                    self.waiting.pop_front();
                    self.routed += 1;
                }
                true
            }
            BrokerFrame::Refused { id, reason, text } => {
                if let Some(at) = self.waiting.iter().position(|(w, _)| w == id) {
                    self.waiting.remove(at);
                    let name = reason_name(*reason);
                    self.said
                        .entry(name.clone())
                        .or_insert_with(|| text.clone());
                    *self.refused.entry(name).or_default() += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// "12 refused (denied: 10, empty_payload: 2)".
    pub fn refusals(&self) -> String {
        let by: Vec<String> = self
            .refused
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        format!("{} refused ({})", self.refused_total(), by.join(", "))
    }
}

/// Connects to a broker that must speak protocol v2 (no reconnecting, no
/// fallback): the connection after its `HELLO`.
pub async fn connect(
    connector: &super::Connector,
    features: &[&str],
    options: super::ConnectOptions,
) -> anyhow::Result<(Connection, ServerHello)> {
    use futures::SinkExt;
    let name = hello_name();
    let sent = client_hello(features);
    let mut conn = connector.connect_with(&name, options).await?;
    conn.feed(Bytes::copy_from_slice(name.as_bytes())).await?;
    conn.feed(sent.clone()).await?;
    conn.flush().await?;
    match greeting(&mut conn, &sent).await? {
        Greeting::V2(hello) => Ok((conn, hello)),
        Greeting::V1 { .. } => anyhow::bail!("the broker at {connector} speaks protocol 1 only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cumulative_confirm_counts_every_waiting_id_up_to_it_but_the_refused() {
        let mut t = Tally::default();
        let p = Bytes::from_static(b"p");
        let ids: Vec<u64> = (0..5).map(|_| t.next_id(&p)).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert!(t.hear(&BrokerFrame::Refused {
            id: 2,
            reason: v2::reason::DENIED,
            text: "may not publish to /x".into()
        }));
        assert!(t.hear(&BrokerFrame::Confirm(4)));
        assert_eq!((t.routed, t.refused_total(), t.waiting()), (3, 1, 1));
        assert_eq!(t.refusals(), "1 refused (denied: 1)");
        assert!(!t.hear(&BrokerFrame::Subscribed {
            sid: 1,
            ack_wait_ms: None
        }));
        assert_eq!(t.abandon(), 1);
    }
}
