//! Arbitrary bytes as the body of a protocol version 2 client frame: the
//! decoder never panics, and what it accepts encodes back to exactly the
//! bytes it came from (no frame has two readings). The same bytes as a frame
//! from a broker: the clients' decoder never panics either.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

use aioq::proto::v2::{self, encode, kind, ClientFrame, HeaderLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HeaderLimits {
        max_headers: 4,
        max_bytes: 64,
    };
    let _ = v2::decode_broker(Bytes::copy_from_slice(data));
    let Ok(frame) = v2::decode_client(Bytes::copy_from_slice(data), limits) else {
        return;
    };
    let again = match &frame {
        ClientFrame::Sub {
            sid,
            acks: None,
            channel,
        } => encode::sub(*sid, channel),
        ClientFrame::Sub {
            sid,
            acks: Some(credit),
            channel,
        } => encode::sub_acked(*sid, *credit, channel),
        ClientFrame::Answer { answer, up_to, ids } => {
            assert!(!ids.is_empty() && !ids.contains(&0));
            encode::answer(*answer, *up_to, ids)
        }
        ClientFrame::Credit { sid, credit } => encode::credit(*sid, *credit),
        ClientFrame::Unsub { sid } => encode::unsub(*sid),
        ClientFrame::Pub {
            confirm,
            headers,
            channel,
            payload,
        } => {
            if let Some(h) = headers {
                assert!(h.len() <= limits.max_bytes && h[0] as usize <= limits.max_headers);
            }
            encode::publish(*confirm, headers.as_deref(), channel, payload)
        }
        ClientFrame::Ping(t) => encode::token(kind::PING, *t),
        ClientFrame::Pong(t) => encode::token(kind::PONG, *t),
    };
    assert_eq!(&again[..], data, "{frame:?} encodes to other bytes");
});
