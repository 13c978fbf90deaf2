//! Several `/queue` messages in one JetStream message.
//!
//! Every JetStream message costs three operations (the stored publish and its
//! acknowledgement, the pull delivery, the consumer acknowledgement), so one
//! per `/queue` message made NATS the cluster's limit. A publisher's messages
//! to one channel that arrive together travel together: the JetStream message
//! has the header `Aioq-Parts: N` and a payload of N parts, each a 4-byte
//! big-endian length and that many bytes. A message without the header is one
//! part, as it is (what a lone message, or another NATS client, publishes).

use async_nats::HeaderMap;
use bytes::{BufMut, Bytes, BytesMut};

/// The header that marks a JetStream message as holding several parts.
pub const PARTS: &str = "Aioq-Parts";

/// Most parts in one JetStream message.
pub const MAX_PARTS: usize = 256;

/// Payload bytes past which a JetStream message takes no more parts (one
/// larger message travels alone).
pub const MAX_BYTES: usize = 64 << 10;

/// The headers and payload of a JetStream message carrying `parts`.
pub fn seal(parts: &[Bytes]) -> (Option<HeaderMap>, Bytes) {
    if let [one] = parts {
        return (None, one.clone());
    }
    let len = parts.iter().map(|p| 4 + p.len()).sum();
    let mut payload = BytesMut::with_capacity(len);
    for p in parts {
        payload.put_u32(p.len() as u32);
        payload.put_slice(p);
    }
    let mut headers = HeaderMap::new();
    headers.insert(PARTS, parts.len().to_string().as_str());
    (Some(headers), payload.freeze())
}

/// The parts of a JetStream message (slices of its payload, not copies).
/// `Err` for one that says it has parts and does not add up: it is then
/// delivered whole, as one message, since it came from outside aioq.
pub fn open(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Vec<Bytes>, String> {
    let Some(n) = headers.and_then(|h| h.get(PARTS)) else {
        return Ok(vec![payload.clone()]);
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
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
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
        assert_eq!(open(None, &payload).unwrap(), vec![payload.clone()]);
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
