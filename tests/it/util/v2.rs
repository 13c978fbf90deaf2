//! A protocol v2 client for the tests, written from PROTOCOL.md's byte
//! layouts (not from the broker's code).

use super::Raw;

/// A frame the broker sends, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(serde_json::Value),
    Ping(u64),
    Pong(u64),
    Msg {
        sid: u32,
        delivery: u64,
        attempt: u32,
        payload: Vec<u8>,
    },
    /// A `MSG` with a header block (flag 0x02).
    MsgWithHeaders {
        sid: u32,
        headers: Vec<(String, Vec<u8>)>,
        payload: Vec<u8>,
    },
    Subscribed(u32),
    Ended {
        sid: u32,
        reason: u8,
        text: String,
    },
    Confirm(u64),
    Refused {
        id: u64,
        reason: u8,
        text: String,
    },
    Lost {
        sid: u32,
        count: u64,
        reason: u8,
        since: u64,
    },
    Error {
        code: u8,
        text: String,
    },
    /// Answers for deliveries the connection did not hold: how many, the first.
    NotHeld {
        count: u32,
        first: u64,
    },
    EndOfStream,
    Other(Vec<u8>),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

pub fn decode(f: &[u8]) -> Frame {
    let Some((&kind, b)) = f.split_first() else {
        return Frame::EndOfStream;
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match kind {
        0x01 => Frame::Hello(serde_json::from_slice(b).expect("HELLO json")),
        0x05 => Frame::Ping(be64(b)),
        0x06 => Frame::Pong(be64(b)),
        0x10 if b[16] == 0x02 => {
            let mut at = 18;
            let mut headers = Vec::new();
            for _ in 0..b[17] {
                let klen = b[at] as usize;
                let key = String::from_utf8(b[at + 1..at + 1 + klen].to_vec()).unwrap();
                at += 1 + klen;
                let vlen = u16::from_be_bytes([b[at], b[at + 1]]) as usize;
                headers.push((key, b[at + 2..at + 2 + vlen].to_vec()));
                at += 2 + vlen;
            }
            Frame::MsgWithHeaders {
                sid: be32(b),
                headers,
                payload: b[at..].to_vec(),
            }
        }
        0x10 => {
            assert_eq!(b[16], 0, "no flags but headers are defined");
            Frame::Msg {
                sid: be32(b),
                delivery: be64(&b[4..]),
                attempt: be32(&b[12..]),
                payload: b[17..].to_vec(),
            }
        }
        0x11 => Frame::Subscribed(be32(b)),
        0x12 => Frame::Ended {
            sid: be32(b),
            reason: b[4],
            text: text(&b[5..]),
        },
        0x13 => Frame::Confirm(be64(b)),
        0x14 => Frame::Refused {
            id: be64(b),
            reason: b[8],
            text: text(&b[9..]),
        },
        0x15 => Frame::Lost {
            sid: be32(b),
            count: be64(&b[4..]),
            reason: b[12],
            since: be64(&b[13..]),
        },
        0x17 => Frame::NotHeld {
            count: be32(b),
            first: be64(&b[4..]),
        },
        0x16 => Frame::Error {
            code: b[0],
            text: text(&b[1..]),
        },
        _ => Frame::Other(f.to_vec()),
    }
}

pub fn sub(sid: u32, channel: &str) -> Vec<u8> {
    let mut b = vec![0x02];
    b.extend_from_slice(&sid.to_be_bytes());
    b.push(0);
    b.extend_from_slice(channel.as_bytes());
    b
}

/// A `SUB` whose deliveries are acknowledged, holding at most `credit`.
pub fn sub_acked(sid: u32, credit: u32, channel: &str) -> Vec<u8> {
    let mut b = vec![0x02];
    b.extend_from_slice(&sid.to_be_bytes());
    b.push(0x01);
    b.extend_from_slice(&credit.to_be_bytes());
    b.extend_from_slice(channel.as_bytes());
    b
}

fn with_ids(mut b: Vec<u8>, ids: &[u64]) -> Vec<u8> {
    for id in ids {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b
}

pub fn ack(ids: &[u64]) -> Vec<u8> {
    with_ids(vec![0x07, 0], ids)
}

/// An `ACK` of every delivery held up to `id`.
pub fn ack_up_to(id: u64) -> Vec<u8> {
    with_ids(vec![0x07, 0x01], &[id])
}

pub fn nak(delay_ms: u32, ids: &[u64]) -> Vec<u8> {
    let mut b = vec![0x08];
    b.extend_from_slice(&delay_ms.to_be_bytes());
    with_ids(b, ids)
}

pub fn working(ids: &[u64]) -> Vec<u8> {
    with_ids(vec![0x09], ids)
}

pub fn term(ids: &[u64]) -> Vec<u8> {
    with_ids(vec![0x0a], ids)
}

pub fn credit(sid: u32, credit: u32) -> Vec<u8> {
    let mut b = vec![0x0b];
    b.extend_from_slice(&sid.to_be_bytes());
    b.extend_from_slice(&credit.to_be_bytes());
    b
}

pub fn unsub(sid: u32) -> Vec<u8> {
    let mut b = vec![0x03];
    b.extend_from_slice(&sid.to_be_bytes());
    b
}

pub fn publish(confirm: Option<u64>, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x04, u8::from(confirm.is_some())];
    if let Some(id) = confirm {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b.extend_from_slice(&(channel.len() as u16).to_be_bytes());
    b.extend_from_slice(channel.as_bytes());
    b.extend_from_slice(payload);
    b
}

/// A `PUB` with a header block made of `headers`.
pub fn publish_with_headers(channel: &str, headers: &[(&str, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x04, 0x02, headers.len() as u8];
    for (k, v) in headers {
        b.push(k.len() as u8);
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(v);
    }
    b.extend_from_slice(&(channel.len() as u16).to_be_bytes());
    b.extend_from_slice(channel.as_bytes());
    b.extend_from_slice(payload);
    b
}

pub fn ping(token: u64) -> Vec<u8> {
    let mut b = vec![0x05];
    b.extend_from_slice(&token.to_be_bytes());
    b
}

/// Appends a frame (length first) to `wire`.
pub fn put(wire: &mut Vec<u8>, body: &[u8]) {
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(body);
}

impl Raw {
    /// Says a v2 hello asking for `features`; returns the broker's `HELLO`.
    pub async fn hello(port: u16, features: &[&str]) -> (Raw, serde_json::Value) {
        Raw::hello_on(Raw::connect(port).await, features).await
    }

    /// [`hello`](Self::hello) on a connection already made.
    pub async fn hello_on(mut c: Raw, features: &[&str]) -> (Raw, serde_json::Value) {
        let name = format!("/$aioq/hello/t{}", std::process::id());
        let json = serde_json::json!({"protocol": 2, "client": "tests", "features": features});
        let mut wire = Vec::new();
        put(&mut wire, name.as_bytes());
        put(&mut wire, name.as_bytes());
        put(&mut wire, json.to_string().as_bytes());
        c.send(&wire).await;
        match c.next().await {
            Frame::Hello(h) => (c, h),
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    pub async fn send(&mut self, wire: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(wire).await.unwrap();
    }

    /// Sends one frame of body `body`.
    pub async fn send_frame(&mut self, body: &[u8]) {
        let mut wire = Vec::new();
        put(&mut wire, body);
        self.send(&wire).await;
    }

    /// The next frame, decoded; `EndOfStream` for an empty frame, panics at EOF.
    pub async fn next(&mut self) -> Frame {
        let f = self.read().await.expect("a frame, got EOF");
        decode(&f)
    }

    /// The next frame, or `None` at EOF.
    pub async fn next_or_eof(&mut self) -> Option<Frame> {
        self.read().await.map(|f| decode(&f))
    }
}

/// Publishes `payloads` to `channel` over a fresh protocol 2 connection, each
/// with a confirm id, and waits until the broker confirmed them all.
pub async fn publish_confirmed(port: u16, channel: &str, payloads: &[&[u8]]) {
    let (mut p, _) = Raw::hello(port, &["confirms"]).await;
    let mut wire = Vec::new();
    for (i, m) in payloads.iter().enumerate() {
        put(&mut wire, &publish(Some(i as u64 + 1), channel, m));
    }
    p.send(&wire).await;
    let last = payloads.len() as u64;
    super::within(10.0, "the publisher's confirms", async {
        loop {
            match p.next().await {
                Frame::Confirm(n) if n == last => return,
                Frame::Confirm(_) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
}
