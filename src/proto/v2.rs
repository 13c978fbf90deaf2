//! Protocol version 2's typed frames (`PROTOCOL.md`, "Version 2"): what a
//! frame's body means once the hello is done. The length prefix is
//! [`FrameCodec`](super::FrameCodec)'s, as under version 1; this module reads
//! and writes what is inside it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The name prefix a hello's first two frames carry.
pub const HELLO_PREFIX: &[u8] = b"/$aioq/hello/";

/// Names under this prefix are the protocol's own.
pub const RESERVED_PREFIX: &[u8] = b"/$aioq/";

/// Longest client hello (its JSON object), in bytes.
pub const MAX_HELLO: usize = 4096;

/// Frame types.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const SUB: u8 = 0x02;
    pub const UNSUB: u8 = 0x03;
    pub const PUB: u8 = 0x04;
    pub const PING: u8 = 0x05;
    pub const PONG: u8 = 0x06;
    pub const ACK: u8 = 0x07;
    pub const NAK: u8 = 0x08;
    pub const WORKING: u8 = 0x09;
    pub const TERM: u8 = 0x0a;
    pub const CREDIT: u8 = 0x0b;
    pub const MSG: u8 = 0x10;
    pub const SUBSCRIBED: u8 = 0x11;
    pub const ENDED: u8 = 0x12;
    pub const CONFIRM: u8 = 0x13;
    pub const REFUSED: u8 = 0x14;
    pub const LOST: u8 = 0x15;
    pub const ERROR: u8 = 0x16;
    pub const NOT_HELD: u8 = 0x17;
}

/// Reason codes of `ENDED`, `REFUSED` and `LOST`.
pub mod reason {
    pub const UNSUBSCRIBED: u8 = 0;
    pub const DENIED: u8 = 1;
    pub const TOO_LARGE: u8 = 2;
    pub const OVER_BUDGET: u8 = 3;
    pub const NO_SUCH_CHANNEL: u8 = 4;
    pub const MAX_CHANNELS: u8 = 5;
    pub const MAX_SUBSCRIPTIONS: u8 = 6;
    pub const RESERVED: u8 = 7;
    pub const SID_IN_USE: u8 = 8;
    pub const UNKNOWN_SID: u8 = 9;
    pub const EMPTY_PAYLOAD: u8 = 10;
    pub const OVERFLOW: u8 = 11;
    pub const SHUTTING_DOWN: u8 = 12;
    pub const NOT_A_QUEUE: u8 = 13;
    pub const DISK_FULL: u8 = 14;

    const NAMES: [&str; 15] = [
        "unsubscribed",
        "denied",
        "too_large",
        "over_budget",
        "no_such_channel",
        "max_channels",
        "max_subscriptions",
        "reserved",
        "sid_in_use",
        "unknown_sid",
        "empty_payload",
        "overflow",
        "shutting_down",
        "not_a_queue",
        "disk_full",
    ];

    /// The name `PROTOCOL.md` gives a code; `None` for one it does not define.
    pub fn name(code: u8) -> Option<&'static str> {
        NAMES.get(usize::from(code)).copied()
    }
}

/// `ERROR` codes.
pub mod error {
    pub const MALFORMED: u8 = 1;
    pub const UNKNOWN_TYPE: u8 = 2;
    pub const BAD_HELLO: u8 = 3;
    pub const HELLO_AGAIN: u8 = 4;
    pub const CONFIRM_ORDER: u8 = 5;
    pub const TOO_LARGE: u8 = 6;
    pub const HEADERS: u8 = 7;
}

/// Features a hello may ask for.
pub mod feature {
    pub const CONFIRMS: &str = "confirms";
    pub const LOSS: &str = "loss";
    pub const HEADERS: &str = "headers";
    pub const ACKS: &str = "acks";
}

/// A client's hello (its third frame), as far as the broker reads it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ClientHello {
    pub protocol: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

impl ClientHello {
    /// Reads frame 3 of a hello: a JSON object of at most [`MAX_HELLO`]
    /// bytes, `{` first, with a numeric `protocol`.
    pub fn parse(frame: &[u8]) -> Result<Self, &'static str> {
        if frame.len() > MAX_HELLO {
            return Err("the client's hello is longer than 4096 bytes");
        }
        if frame.first() != Some(&b'{') {
            return Err("the client's hello is not a JSON object");
        }
        serde_json::from_slice(frame)
            .map_err(|_| "the client's hello is not a JSON object with a numeric protocol")
    }

    pub fn wants(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// Frame 3 of a hello, as a client sends it.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The broker's `HELLO`, after its type byte.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ServerHello {
    pub protocol: u32,
    pub server: String,
    pub server_id: String,
    pub features: Vec<String>,
    pub max_frame: u64,
    pub max_channel: u64,
    pub max_subscriptions: u64,
    pub max_credit: u64,
    /// Deliveries queued for one connection before a `/topic` subscription
    /// loses messages (`aioq serve --send-queue`).
    #[serde(default)]
    pub send_queue: u64,
    pub max_headers: u64,
    pub max_header_bytes: u64,
}

impl ServerHello {
    /// The whole `HELLO` frame body, type byte first.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(kind::HELLO);
        b.put_slice(&serde_json::to_vec(self).unwrap_or_default());
        b.freeze()
    }

    /// Reads a `HELLO` frame body (type byte first).
    pub fn parse(frame: &[u8]) -> Option<Self> {
        match frame.split_first() {
            Some((&kind::HELLO, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
    }

    pub fn grants(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// `PUB` flag: a confirm id follows.
pub const FLAG_CONFIRM: u8 = 0x01;
/// `PUB` and `MSG` flag: a header block follows.
pub const FLAG_HEADERS: u8 = 0x02;
/// `SUB` flag: the subscription acknowledges its deliveries (a `/queue`
/// channel; its credit follows the flags).
pub const FLAG_ACKS: u8 = 0x01;
/// `ACK` flag: its one id acknowledges every delivery held up to it.
pub const FLAG_UP_TO: u8 = 0x01;

/// What a worker says of deliveries it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Done.
    Ack,
    /// Not done: deliver again after the delay (ms; 0: the channel's backoff).
    Nak(u32),
    /// Still working: its ack wait starts again.
    Working,
    /// Never to be delivered again: to the dead-letter channel now.
    Term,
}

/// Whether a first frame is a version 2 hello: the prefix, then a nonce of
/// 1 to 64 bytes of `[A-Za-z0-9_-]`.
pub fn is_hello(name: &[u8]) -> bool {
    name.strip_prefix(HELLO_PREFIX).is_some_and(|nonce| {
        (1..=64).contains(&nonce.len())
            && nonce
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    })
}

/// Whether a channel name is reserved for the protocol.
pub fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// Limits a header block is read under.
#[derive(Clone, Copy, Debug)]
pub struct HeaderLimits {
    pub max_headers: usize,
    pub max_bytes: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        Self {
            max_headers: 32,
            max_bytes: 4096,
        }
    }
}

/// A frame a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Sub {
        sid: u32,
        /// With acknowledgements: the credit asked for (0: the broker's default).
        acks: Option<u32>,
        channel: Bytes,
    },
    /// `ACK`, `NAK`, `WORKING`, `TERM`: the ids, in the frame's order (with
    /// `up_to`, one id that covers every delivery held up to it).
    Answer {
        answer: Answer,
        up_to: bool,
        ids: Vec<u64>,
    },
    Credit {
        sid: u32,
        credit: u32,
    },
    Unsub {
        sid: u32,
    },
    Pub {
        confirm: Option<u64>,
        /// The header block as sent (count byte first), checked.
        headers: Option<Bytes>,
        channel: Bytes,
        payload: Bytes,
    },
    Ping(u64),
    Pong(u64),
}

/// Why a frame could not be read: each is an `ERROR` code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Malformed(&'static str),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("a hello after the hello")]
    HelloAgain,
    #[error("header block: {0}")]
    Headers(&'static str),
}

impl DecodeError {
    /// The `ERROR` code `PROTOCOL.md` gives it.
    pub fn code(&self) -> u8 {
        match self {
            Self::Malformed(_) => 1,
            Self::UnknownType(_) => 2,
            Self::HelloAgain => 4,
            Self::Headers(_) => 7,
        }
    }
}

fn need(body: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if body.len() < n {
        Err(DecodeError::Malformed(what))
    } else {
        Ok(())
    }
}

/// Reads a client frame (a non-empty frame after the hello; the empty one is
/// goodbye and never reaches here).
pub fn decode_client(mut frame: Bytes, limits: HeaderLimits) -> Result<ClientFrame, DecodeError> {
    need(&frame, 1, "empty typed frame")?;
    let kind = frame.get_u8();
    match kind {
        kind::SUB => {
            need(&frame, 5, "SUB too short")?;
            let sid = frame.get_u32();
            let flags = frame.get_u8();
            if flags & !FLAG_ACKS != 0 {
                return Err(DecodeError::Malformed("SUB flag bits are reserved"));
            }
            let acks = if flags & FLAG_ACKS != 0 {
                need(&frame, 4, "SUB credit cut short")?;
                Some(frame.get_u32())
            } else {
                None
            };
            if frame.is_empty() {
                return Err(DecodeError::Malformed("SUB of an empty channel name"));
            }
            Ok(ClientFrame::Sub {
                sid,
                acks,
                channel: frame,
            })
        }
        kind::UNSUB => {
            if frame.len() != 4 {
                return Err(DecodeError::Malformed("UNSUB is a u32 only"));
            }
            Ok(ClientFrame::Unsub {
                sid: frame.get_u32(),
            })
        }
        kind::PUB => {
            need(&frame, 1, "PUB too short")?;
            let flags = frame.get_u8();
            if flags & !(FLAG_CONFIRM | FLAG_HEADERS) != 0 {
                return Err(DecodeError::Malformed("PUB flag bits are reserved"));
            }
            let confirm = if flags & FLAG_CONFIRM != 0 {
                need(&frame, 8, "PUB confirm id cut short")?;
                match frame.get_u64() {
                    0 => return Err(DecodeError::Malformed("confirm id 0")),
                    id => Some(id),
                }
            } else {
                None
            };
            let headers = if flags & FLAG_HEADERS != 0 {
                let len = header_block_len(&frame, limits)?;
                Some(frame.split_to(len))
            } else {
                None
            };
            need(&frame, 2, "PUB channel length cut short")?;
            let len = frame.get_u16() as usize;
            if len == 0 {
                return Err(DecodeError::Malformed("PUB to an empty channel name"));
            }
            need(&frame, len, "PUB channel cut short")?;
            let channel = frame.split_to(len);
            Ok(ClientFrame::Pub {
                confirm,
                headers,
                channel,
                payload: frame,
            })
        }
        kind::PING | kind::PONG => {
            if frame.len() != 8 {
                return Err(DecodeError::Malformed("PING and PONG carry a u64 only"));
            }
            let token = frame.get_u64();
            Ok(if kind == kind::PING {
                ClientFrame::Ping(token)
            } else {
                ClientFrame::Pong(token)
            })
        }
        kind::ACK => {
            need(&frame, 1, "ACK too short")?;
            let flags = frame.get_u8();
            if flags & !FLAG_UP_TO != 0 {
                return Err(DecodeError::Malformed("ACK flag bits are reserved"));
            }
            let up_to = flags & FLAG_UP_TO != 0;
            let ids = delivery_ids(frame)?;
            if up_to && ids.len() != 1 {
                return Err(DecodeError::Malformed("an ACK up to an id carries one id"));
            }
            Ok(ClientFrame::Answer {
                answer: Answer::Ack,
                up_to,
                ids,
            })
        }
        kind::NAK => {
            need(&frame, 4, "NAK too short")?;
            let delay = frame.get_u32();
            Ok(ClientFrame::Answer {
                answer: Answer::Nak(delay),
                up_to: false,
                ids: delivery_ids(frame)?,
            })
        }
        kind::WORKING | kind::TERM => Ok(ClientFrame::Answer {
            answer: if kind == kind::WORKING {
                Answer::Working
            } else {
                Answer::Term
            },
            up_to: false,
            ids: delivery_ids(frame)?,
        }),
        kind::CREDIT => {
            if frame.len() != 8 {
                return Err(DecodeError::Malformed("CREDIT is a sid and a credit"));
            }
            Ok(ClientFrame::Credit {
                sid: frame.get_u32(),
                credit: frame.get_u32(),
            })
        }
        kind::HELLO => Err(DecodeError::HelloAgain),
        other => Err(DecodeError::UnknownType(other)),
    }
}

/// The delivery ids that make up the rest of an answer frame: at least one,
/// none of them 0.
fn delivery_ids(mut frame: Bytes) -> Result<Vec<u64>, DecodeError> {
    if frame.is_empty() || !frame.len().is_multiple_of(8) {
        return Err(DecodeError::Malformed(
            "delivery ids are one or more u64s, nothing else",
        ));
    }
    let mut ids = Vec::with_capacity(frame.len() / 8);
    while !frame.is_empty() {
        match frame.get_u64() {
            0 => return Err(DecodeError::Malformed("delivery id 0")),
            id => ids.push(id),
        }
    }
    Ok(ids)
}

/// The length of the header block at the start of `body`, checked against
/// the limits and the format.
pub fn header_block_len(body: &[u8], limits: HeaderLimits) -> Result<usize, DecodeError> {
    let bad = DecodeError::Headers;
    let (&count, mut rest) = body.split_first().ok_or(bad("cut short"))?;
    if count == 0 {
        return Err(bad("a block holds at least one header"));
    }
    if count as usize > limits.max_headers {
        return Err(bad("more headers than max_headers"));
    }
    let mut len = 1usize;
    for _ in 0..count {
        let (&klen, r) = rest.split_first().ok_or(bad("cut short"))?;
        let klen = klen as usize;
        if klen == 0 {
            return Err(bad("an empty key"));
        }
        if r.len() < klen + 2 {
            return Err(bad("cut short"));
        }
        if !r[..klen].iter().all(|b| b.is_ascii_graphic() && *b != b':') {
            return Err(bad("a key that is not printable ASCII without ':'"));
        }
        let vlen = u16::from_be_bytes([r[klen], r[klen + 1]]) as usize;
        let r = &r[klen + 2..];
        if r.len() < vlen {
            return Err(bad("cut short"));
        }
        rest = &r[vlen..];
        len += 1 + klen + 2 + vlen;
        if len > limits.max_bytes {
            return Err(bad("longer than max_header_bytes"));
        }
    }
    Ok(len)
}

/// A header block for `headers`; an error where a count or a length does not
/// fit its field. The broker's limits (its hello) are checked by
/// [`header_block_len`], as the broker reads it.
pub fn header_block(headers: &[(&str, &[u8])]) -> Result<Bytes, DecodeError> {
    let bad = DecodeError::Headers;
    let count = u8::try_from(headers.len()).map_err(|_| bad("more than 255 headers"))?;
    if count == 0 {
        return Err(bad("a block holds at least one header"));
    }
    let mut b = BytesMut::new();
    b.put_u8(count);
    for (k, v) in headers {
        b.put_u8(u8::try_from(k.len()).map_err(|_| bad("a key past 255 bytes"))?);
        b.put_slice(k.as_bytes());
        b.put_u16(u16::try_from(v.len()).map_err(|_| bad("a value past 65535 bytes"))?);
        b.put_slice(v);
    }
    Ok(b.freeze())
}

/// A frame a broker sends after the hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerFrame {
    Ping(u64),
    Pong(u64),
    Msg {
        sid: u32,
        delivery: u64,
        attempt: u32,
        /// The header block as sent (count byte first), when there is one.
        headers: Option<Bytes>,
        payload: Bytes,
    },
    /// `sid`, and for an acknowledging subscription its ack wait (ms).
    Subscribed {
        sid: u32,
        ack_wait_ms: Option<u32>,
    },
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
        since_ms: u64,
    },
    Error {
        code: u8,
        text: String,
    },
    /// Answers for deliveries the connection does not hold: how many, the first.
    NotHeld {
        count: u32,
        first: u64,
    },
    /// The empty frame.
    EndOfStream,
}

/// Reads a frame a broker sent after its `HELLO`.
pub fn decode_broker(mut frame: Bytes) -> Result<BrokerFrame, DecodeError> {
    if frame.is_empty() {
        return Ok(BrokerFrame::EndOfStream);
    }
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let kind = frame.get_u8();
    Ok(match kind {
        kind::PING | kind::PONG => {
            need(&frame, 8, "PING and PONG carry a u64")?;
            let token = frame.get_u64();
            if kind == kind::PING {
                BrokerFrame::Ping(token)
            } else {
                BrokerFrame::Pong(token)
            }
        }
        kind::MSG => {
            need(&frame, 17, "MSG too short")?;
            let sid = frame.get_u32();
            let delivery = frame.get_u64();
            let attempt = frame.get_u32();
            let flags = frame.get_u8();
            let headers = if flags & FLAG_HEADERS != 0 {
                let limits = HeaderLimits {
                    max_headers: 255,
                    max_bytes: usize::MAX,
                };
                let len = header_block_len(&frame, limits)?;
                Some(frame.split_to(len))
            } else {
                None
            };
            BrokerFrame::Msg {
                sid,
                delivery,
                attempt,
                headers,
                payload: frame,
            }
        }
        kind::SUBSCRIBED => {
            need(&frame, 4, "SUBSCRIBED too short")?;
            BrokerFrame::Subscribed {
                sid: frame.get_u32(),
                ack_wait_ms: (frame.len() >= 4).then(|| frame.get_u32()),
            }
        }
        kind::ENDED => {
            need(&frame, 5, "ENDED too short")?;
            BrokerFrame::Ended {
                sid: frame.get_u32(),
                reason: frame.get_u8(),
                text: text(&frame),
            }
        }
        kind::CONFIRM => {
            need(&frame, 8, "CONFIRM too short")?;
            BrokerFrame::Confirm(frame.get_u64())
        }
        kind::REFUSED => {
            need(&frame, 9, "REFUSED too short")?;
            BrokerFrame::Refused {
                id: frame.get_u64(),
                reason: frame.get_u8(),
                text: text(&frame),
            }
        }
        kind::LOST => {
            need(&frame, 21, "LOST too short")?;
            BrokerFrame::Lost {
                sid: frame.get_u32(),
                count: frame.get_u64(),
                reason: frame.get_u8(),
                since_ms: frame.get_u64(),
            }
        }
        kind::ERROR => {
            need(&frame, 1, "ERROR too short")?;
            BrokerFrame::Error {
                code: frame.get_u8(),
                text: text(&frame),
            }
        }
        kind::NOT_HELD => {
            need(&frame, 12, "NOT_HELD too short")?;
            BrokerFrame::NotHeld {
                count: frame.get_u32(),
                first: frame.get_u64(),
            }
        }
        kind::HELLO => return Err(DecodeError::HelloAgain),
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// Writers of frame bodies (the length prefix is the codec's).
pub mod encode {
    use super::*;

    pub fn sub(sid: u32, channel: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(6 + channel.len());
        b.put_u8(kind::SUB);
        b.put_u32(sid);
        b.put_u8(0);
        b.put_slice(channel);
        b.freeze()
    }

    /// A `SUB` with acknowledgements and `credit` (0: the broker's default).
    pub fn sub_acked(sid: u32, credit: u32, channel: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(10 + channel.len());
        b.put_u8(kind::SUB);
        b.put_u32(sid);
        b.put_u8(FLAG_ACKS);
        b.put_u32(credit);
        b.put_slice(channel);
        b.freeze()
    }

    /// `ACK`, `NAK`, `WORKING` or `TERM` of `ids` (`up_to`: an `ACK` of one id
    /// that covers every delivery held up to it).
    pub fn answer(answer: Answer, up_to: bool, ids: &[u64]) -> Bytes {
        let mut b = BytesMut::with_capacity(5 + 8 * ids.len());
        match answer {
            Answer::Ack => {
                b.put_u8(kind::ACK);
                b.put_u8(if up_to { FLAG_UP_TO } else { 0 });
            }
            Answer::Nak(delay) => {
                b.put_u8(kind::NAK);
                b.put_u32(delay);
            }
            Answer::Working => b.put_u8(kind::WORKING),
            Answer::Term => b.put_u8(kind::TERM),
        }
        for id in ids {
            b.put_u64(*id);
        }
        b.freeze()
    }

    pub fn credit(sid: u32, credit: u32) -> Bytes {
        let mut b = BytesMut::with_capacity(9);
        b.put_u8(kind::CREDIT);
        b.put_u32(sid);
        b.put_u32(credit);
        b.freeze()
    }

    pub fn not_held(count: u32, first: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(13);
        b.put_u8(kind::NOT_HELD);
        b.put_u32(count);
        b.put_u64(first);
        b.freeze()
    }

    pub fn unsub(sid: u32) -> Bytes {
        self::sid(kind::UNSUB, sid)
    }

    /// # Panics
    ///
    /// When `channel` is longer than its `u16` length field: a client checks
    /// names against the broker's `max_channel` before.
    pub fn publish(
        confirm: Option<u64>,
        headers: Option<&[u8]>,
        channel: &[u8],
        payload: &[u8],
    ) -> Bytes {
        let mut b = BytesMut::with_capacity(
            12 + headers.map_or(0, <[u8]>::len) + channel.len() + payload.len(),
        );
        b.put_u8(kind::PUB);
        let flags = confirm.map_or(0, |_| FLAG_CONFIRM) | headers.map_or(0, |_| FLAG_HEADERS);
        b.put_u8(flags);
        if let Some(id) = confirm {
            b.put_u64(id);
        }
        if let Some(h) = headers {
            b.put_slice(h);
        }
        let len = u16::try_from(channel.len()).expect("a channel name past 65535 bytes");
        b.put_u16(len);
        b.put_slice(channel);
        b.put_slice(payload);
        b.freeze()
    }

    pub fn token(kind: u8, token: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(9);
        b.put_u8(kind);
        b.put_u64(token);
        b.freeze()
    }

    /// A `MSG` frame's head: the payload goes after it, in the same frame.
    pub fn msg_head(sid: u32, delivery: u64, attempt: u32, headers: Option<&[u8]>) -> Bytes {
        let mut b = BytesMut::with_capacity(18 + headers.map_or(0, <[u8]>::len));
        b.put_u8(kind::MSG);
        b.put_u32(sid);
        b.put_u64(delivery);
        b.put_u32(attempt);
        b.put_u8(headers.map_or(0, |_| FLAG_HEADERS));
        if let Some(h) = headers {
            b.put_slice(h);
        }
        b.freeze()
    }

    /// `SUBSCRIBED`, with the ack wait of an acknowledging subscription.
    pub fn subscribed(sid: u32, ack_wait: Option<std::time::Duration>) -> Bytes {
        let mut b = BytesMut::with_capacity(9);
        b.put_u8(kind::SUBSCRIBED);
        b.put_u32(sid);
        if let Some(w) = ack_wait {
            b.put_u32(u32::try_from(w.as_millis()).unwrap_or(u32::MAX));
        }
        b.freeze()
    }

    pub fn sid(kind: u8, sid: u32) -> Bytes {
        let mut b = BytesMut::with_capacity(5);
        b.put_u8(kind);
        b.put_u32(sid);
        b.freeze()
    }

    pub fn ended(sid: u32, reason: u8, text: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(6 + text.len());
        b.put_u8(kind::ENDED);
        b.put_u32(sid);
        b.put_u8(reason);
        b.put_slice(text.as_bytes());
        b.freeze()
    }

    pub fn refused(confirm: u64, reason: u8, text: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(10 + text.len());
        b.put_u8(kind::REFUSED);
        b.put_u64(confirm);
        b.put_u8(reason);
        b.put_slice(text.as_bytes());
        b.freeze()
    }

    pub fn lost(sid: u32, count: u64, reason: u8, since_ms: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(22);
        b.put_u8(kind::LOST);
        b.put_u32(sid);
        b.put_u64(count);
        b.put_u8(reason);
        b.put_u64(since_ms);
        b.freeze()
    }

    pub fn error(code: u8, text: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + text.len());
        b.put_u8(kind::ERROR);
        b.put_u8(code);
        b.put_slice(text.as_bytes());
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: Bytes) -> Result<ClientFrame, DecodeError> {
        decode_client(b, HeaderLimits::default())
    }

    #[test]
    fn hello_names_are_told_from_channels() {
        assert!(is_hello(b"/$aioq/hello/3f9c2a71"));
        assert!(is_hello(b"/$aioq/hello/a_b-C"));
        assert!(!is_hello(b"/$aioq/hello/"));
        assert!(!is_hello(b"/$aioq/hello/a b"));
        assert!(!is_hello(&[HELLO_PREFIX, &[b'a'; 65]].concat()));
        assert!(!is_hello(b"/topic/$aioq/hello/x"));
        assert!(is_reserved(b"/$aioq/other"));
        assert!(!is_reserved(b"/topic/a"));
    }

    #[test]
    fn the_worked_exchange_of_protocol_md_decodes() {
        // SUB sid 1, "/topic/a", and PUB confirm id 1, as PROTOCOL.md shows them.
        let sub = Bytes::from_static(&[
            0x02, 0, 0, 0, 1, 0, b'/', b't', b'o', b'p', b'i', b'c', b'/', b'a',
        ]);
        assert_eq!(
            decode(sub.clone()),
            Ok(ClientFrame::Sub {
                sid: 1,
                acks: None,
                channel: Bytes::from_static(b"/topic/a")
            })
        );
        assert_eq!(encode::sub(1, b"/topic/a"), sub);
        let publish = encode::publish(Some(1), None, b"/topic/a", b"hi");
        assert_eq!(
            &publish[..],
            &[
                0x04, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 8, b'/', b't', b'o', b'p', b'i', b'c', b'/',
                b'a', b'h', b'i'
            ]
        );
        assert_eq!(
            encode::msg_head(1, 1, 1, None)[..],
            [0x10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
        );
    }

    #[test]
    fn publishes_round_trip_with_and_without_confirms_and_headers() {
        let h = header_block(&[("trace", b"abc"), ("k", b"")]).unwrap();
        for (confirm, headers) in [
            (None, None),
            (Some(7), None),
            (None, Some(&h)),
            (Some(9), Some(&h)),
        ] {
            let f = encode::publish(confirm, headers.map(|h| &h[..]), b"/queue/j", b"payload");
            assert_eq!(
                decode(f),
                Ok(ClientFrame::Pub {
                    confirm,
                    headers: headers.cloned(),
                    channel: Bytes::from_static(b"/queue/j"),
                    payload: Bytes::from_static(b"payload"),
                })
            );
        }
    }

    #[test]
    fn every_client_frame_cut_at_every_byte_is_an_error_not_a_panic() {
        let h = header_block(&[("a", b"1")]).unwrap();
        let frames = [
            encode::sub(3, b"/topic/x"),
            encode::unsub(3),
            encode::publish(Some(5), Some(&h), b"/topic/x", b""),
            encode::token(kind::PING, 42),
            encode::token(kind::PONG, 42),
        ];
        for f in frames {
            assert!(decode(f.clone()).is_ok(), "{f:?}");
            // The PUB's payload is empty, so every shorter prefix cuts a
            // field; a SUB's name is the rest of its frame, so a cut inside
            // it is another name: cut up to its first byte.
            let fields = if f[0] == kind::SUB { 7 } else { f.len() };
            for cut in 0..fields {
                assert!(decode(f.slice(..cut)).is_err(), "{f:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn unknown_types_reserved_bits_and_a_second_hello_are_refused_with_their_codes() {
        assert_eq!(decode(Bytes::from_static(&[0x7f])).unwrap_err().code(), 2);
        assert_eq!(
            decode(Bytes::from_static(&[0x10, 0])).unwrap_err().code(),
            2
        );
        assert_eq!(decode(Bytes::from_static(b"\x01{}")).unwrap_err().code(), 4);
        assert_eq!(
            decode(Bytes::from_static(&[0x02, 0, 0, 0, 1, 0x80, b'/']))
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(
            decode(Bytes::from_static(&[0x04, 0x04, 0, 1, b'/']))
                .unwrap_err()
                .code(),
            1
        );
        // Confirm id 0 is not an id.
        let zero = encode::publish(Some(0), None, b"/t", b"x");
        assert_eq!(decode(zero).unwrap_err().code(), 1);
    }

    #[test]
    fn header_blocks_at_their_limits_pass_and_one_past_fails() {
        let limits = HeaderLimits {
            max_headers: 2,
            max_bytes: 20,
        };
        // 1 + (1 + 1 + 2 + 5) * 2 = 19 bytes; then 20; then 21.
        let at = header_block(&[("a", b"12345"), ("b", b"12345")]).unwrap();
        assert_eq!(header_block_len(&at, limits), Ok(19));
        let at = header_block(&[("a", b"12345"), ("b", b"123456")]).unwrap();
        assert_eq!(header_block_len(&at, limits), Ok(20));
        let past = header_block(&[("a", b"12345"), ("b", b"1234567")]).unwrap();
        assert!(header_block_len(&past, limits).is_err());
        let three = header_block(&[("a", b""), ("b", b""), ("c", b"")]).unwrap();
        assert!(header_block_len(&three, limits).is_err());
        assert!(header_block_len(&[0], limits).is_err());
        // What does not fit its field is an error, not a truncated block.
        assert!(header_block(&[]).is_err());
        let long_key = "k".repeat(256);
        assert!(header_block(&[(&long_key, b"")]).is_err());
        assert!(header_block(&[("k", &[0u8; 65536])]).is_err());
        let many: Vec<(&str, &[u8])> = vec![("k", b""); 256];
        assert!(header_block(&many).is_err());
        assert!(header_block_len(&header_block(&[("a:b", b"")]).unwrap(), limits).is_err());
        assert!(header_block_len(&header_block(&[("a b", b"")]).unwrap(), limits).is_err());
    }
}
