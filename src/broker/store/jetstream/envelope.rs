//! Several `/queue` messages in one JetStream message.
//!
//! Every JetStream message costs three operations (the stored publish and its
//! acknowledgement, the pull delivery, the consumer acknowledgement), so one
//! per `/queue` message made NATS the cluster's limit. A publisher's messages
//! to one channel that arrive together travel together: the JetStream message
//! has the header `Aioq-Parts: N` and a payload of N parts, each a 4-byte
//! big-endian length and that many bytes. A message without the header is one
//! part, as it is (what a lone message, or another NATS client, publishes).
//! A part that begins with a protocol v2 header block says how long the
//! block is in the header `Aioq-Heads`: one length per part, comma
//! separated, there only when some part has a block (a broker that does not
//! know it delivers the block as payload bytes, as before it existed).

use async_nats::HeaderMap;
use bytes::{BufMut, Bytes, BytesMut};

use crate::broker::store::Part;

/// The header that marks a JetStream message as holding several parts.
pub const PARTS: &str = "Aioq-Parts";

/// The header that gives each part's header block length.
pub const HEADS: &str = "Aioq-Heads";

/// Most parts in one JetStream message.
pub const MAX_PARTS: usize = 256;

/// Payload bytes past which a JetStream message takes no more parts (one
/// larger message travels alone).
pub const MAX_BYTES: usize = 64 << 10;

/// The headers and payload of a JetStream message carrying `parts`.
pub fn seal(parts: &[Part]) -> (Option<HeaderMap>, Bytes) {
    let heads = parts.iter().any(|p| p.head > 0).then(|| {
        let list: Vec<String> = parts.iter().map(|p| p.head.to_string()).collect();
        list.join(",")
    });
    if let [one] = parts {
        let headers = heads.map(|h| {
            let mut headers = HeaderMap::new();
            headers.insert(HEADS, h.as_str());
            headers
        });
        return (headers, one.bytes.clone());
    }
    let len = parts.iter().map(|p| 4 + p.bytes.len()).sum();
    let mut payload = BytesMut::with_capacity(len);
    for p in parts {
        payload.put_u32(p.bytes.len() as u32);
        payload.put_slice(&p.bytes);
    }
    let mut headers = HeaderMap::new();
    headers.insert(PARTS, parts.len().to_string().as_str());
    if let Some(h) = heads {
        headers.insert(HEADS, h.as_str());
    }
    (Some(headers), payload.freeze())
}

/// A message published as it is (a `/topic` message across the cluster):
/// its header block's length from `Aioq-Heads`, if it has one.
pub fn lone(headers: Option<&HeaderMap>, payload: Bytes) -> Part {
    with_heads(headers, vec![payload]).remove(0)
}

/// What a stored header block is checked against: any block a broker
/// writes (a dead letter's may pass a publisher's limits).
const ANY_BLOCK: crate::proto::v2::HeaderLimits = crate::proto::v2::HeaderLimits {
    max_headers: 255,
    max_bytes: u16::MAX as usize,
};

/// Gives each part its header block length, from the `Aioq-Heads` header;
/// a list that does not fit (another count, a block longer than its part,
/// a header block that does not parse) is ignored: the parts then travel
/// as payload, as from a broker that sets no such header.
fn with_heads(headers: Option<&HeaderMap>, parts: Vec<Bytes>) -> Vec<Part> {
    let heads: Option<Vec<u16>> = headers
        .and_then(|h| h.get(HEADS))
        .and_then(|v| v.as_str().split(',').map(|n| n.parse().ok()).collect());
    let fits = |heads: &[u16]| {
        heads.len() == parts.len()
            && heads.iter().zip(&parts).all(|(&h, p)| {
                h == 0
                    || crate::proto::v2::header_block_len(p, ANY_BLOCK)
                        .is_ok_and(|n| n == usize::from(h))
            })
    };
    match heads {
        Some(heads) if fits(&heads) => parts
            .into_iter()
            .zip(heads)
            .map(|(bytes, head)| Part { bytes, head })
            .collect(),
        _ => parts.into_iter().map(Part::plain).collect(),
    }
}

/// The parts of a JetStream message (slices of its payload, not copies).
/// `Err` for one that says it has parts and does not add up: it is then
/// delivered whole, as one message, since it came from outside aioq.
pub fn open(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Vec<Part>, String> {
    let Some(n) = headers.and_then(|h| h.get(PARTS)) else {
        return Ok(with_heads(headers, vec![payload.clone()]));
    };
    let n: usize = n
        .as_str()
        .parse()
        .map_err(|_| format!("{PARTS}: {:?} is not a count", n.as_str()))?;
    // Each part takes at least its 4-byte length: a count past that is a lie
    // that must not size an allocation.
    if n == 0 || n > payload.len() / 4 {
        return Err(format!(
            "{PARTS}: {n} parts cannot fit in {} bytes",
            payload.len()
        ));
    }
    let mut parts = Vec::with_capacity(n);
    let mut at = 0;
    while at < payload.len() {
        let Some(&[a, b, c, d]) = payload.get(at..at + 4) else {
            return Err(format!("a part's length cut short at byte {at}"));
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        let start = at + 4;
        if len > payload.len() - start {
            return Err(format!(
                "a part of {len} bytes at byte {start} runs past the end"
            ));
        }
        parts.push(payload.slice(start..start + len));
        at = start + len;
    }
    if parts.len() != n {
        return Err(format!("{PARTS}: {n}, but {} parts", parts.len()));
    }
    Ok(with_heads(headers, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &[&str]) -> Vec<Part> {
        v.iter()
            .map(|s| Part::plain(Bytes::copy_from_slice(s.as_bytes())))
            .collect()
    }

    /// A part with a header block of one entry (`k` = `v`) before `body`.
    fn with_block(k: &str, v: &str, body: &str) -> Part {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        b.put_u16(v.len() as u16);
        b.put_slice(v.as_bytes());
        let head = b.len() as u16;
        b.put_slice(body.as_bytes());
        Part {
            bytes: b.freeze(),
            head,
        }
    }

    #[test]
    fn header_blocks_travel_with_their_parts() {
        let many = vec![
            with_block("k", "v", "one"),
            parts(&["two"]).remove(0),
            with_block("trace", "t-1", ""),
        ];
        let sealed = seal(&many);
        assert_eq!(
            sealed.0.as_ref().unwrap().get(HEADS).unwrap().as_str(),
            "6,0,12"
        );
        assert_eq!(open(sealed.0.as_ref(), &sealed.1).unwrap(), many);
        let one = vec![with_block("k", "v", "alone")];
        let sealed = seal(&one);
        assert!(sealed.0.as_ref().unwrap().get(PARTS).is_none());
        assert_eq!(open(sealed.0.as_ref(), &sealed.1).unwrap(), one);
        // A list that does not fit its parts leaves them as payload.
        let mut lying = sealed.0.clone().unwrap();
        lying.insert(HEADS, "3");
        assert_eq!(
            open(Some(&lying), &sealed.1).unwrap(),
            vec![Part::plain(sealed.1.clone())]
        );
        lying.insert(HEADS, "6,6");
        assert_eq!(
            open(Some(&lying), &sealed.1).unwrap(),
            vec![Part::plain(sealed.1.clone())]
        );
    }

    #[test]
    fn sealed_parts_open_as_they_were() {
        for v in [vec!["one"], vec!["a", "", "ccc"], vec!["x"; MAX_PARTS]] {
            let sealed = seal(&parts(&v));
            assert_eq!(open(sealed.0.as_ref(), &sealed.1).unwrap(), parts(&v));
        }
    }

    #[test]
    fn a_lone_message_travels_without_envelope() {
        let (headers, payload) = seal(&parts(&["just this"]));
        assert!(headers.is_none());
        assert_eq!(&payload[..], b"just this");
        // And what another NATS client publishes is one message.
        assert_eq!(
            open(None, &payload).unwrap(),
            vec![Part::plain(payload.clone())]
        );
    }

    #[test]
    fn an_envelope_that_does_not_add_up_is_refused() {
        let (headers, payload) = seal(&parts(&["ab", "cd"]));
        let headers = headers.unwrap();
        let mut lying = HeaderMap::new();
        lying.insert(PARTS, "3");
        assert!(open(Some(&lying), &payload).is_err());
        let mut huge = HeaderMap::new();
        huge.insert(PARTS, "4000000000");
        assert!(open(Some(&huge), &payload).is_err());
        let mut word = HeaderMap::new();
        word.insert(PARTS, "two");
        assert!(open(Some(&word), &payload).is_err());
        assert!(open(Some(&headers), &payload.slice(..payload.len() - 1)).is_err());
        assert!(open(Some(&headers), &payload.slice(..5)).is_err());
        let mut longer = BytesMut::from(&payload[..]);
        longer.put_u8(0);
        assert!(open(Some(&headers), &longer.freeze()).is_err());
    }
}
