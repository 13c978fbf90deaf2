//! Channel names as NATS subjects and JetStream stream names.
//!
//! A channel name is any byte string; a NATS subject is printable, has no
//! whitespace, and gives `.`, `*` and `>` special meaning. The encoding keeps
//! what is safe and readable and escapes every other byte as `%XX`:
//!
//! - kept as is: `A-Z a-z 0-9 - _ /` (so `/topic/news` stays recognisable);
//! - every other byte `b`, `%` included: `%` and two upper-case hex digits.
//!
//! The whole name is one subject token after a prefix, `aioq.t.` for topics and
//! `aioq.q.` for queues: `/topic/a.b` is `aioq.t./topic/a%2Eb`. Decoding undoes
//! it exactly, so any channel name maps to one subject and back.
//!
//! Stream names may not hold `/` either, and end up as directory names, so a
//! `/queue` channel's stream is named by a hash of the channel: `AIOQ_` and 16
//! hex digits of FNV-1a 64. The stream's one subject is the encoded channel,
//! which is what tells two channels with the same hash apart (creating the
//! second stream fails loudly instead of mixing them).

const TOPIC_PREFIX: &str = "aioq.t.";
const QUEUE_PREFIX: &str = "aioq.q.";

fn kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/')
}

/// The subject that carries channel `name`.
pub fn encode(name: &[u8]) -> String {
    let prefix = if crate::proto::is_queue(name) {
        QUEUE_PREFIX
    } else {
        TOPIC_PREFIX
    };
    let mut s = String::with_capacity(prefix.len() + name.len() + 8);
    s.push_str(prefix);
    for &b in name {
        if kept(b) {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    s
}

/// The channel name a subject carries; `None` for a subject this encoding
/// never produces. Brokers never need it (a subscription knows its channel):
/// it exists to prove, by round trip, that no two names share a subject.
#[cfg(test)]
pub fn decode(subject: &str) -> Option<Vec<u8>> {
    let body = subject
        .strip_prefix(TOPIC_PREFIX)
        .or_else(|| subject.strip_prefix(QUEUE_PREFIX))?;
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if kept(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    (!out.is_empty() && crate::proto::is_queue(&out) == subject.starts_with(QUEUE_PREFIX))
        .then_some(out)
}

/// The JetStream stream that holds `/queue` channel `name`.
pub fn stream_name(name: &[u8]) -> String {
    // FNV-1a 64: stable across versions and machines, which a std hasher is not
    // promised to be, and every broker must compute the same name.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("AIOQ_{h:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_names_stay_readable() {
        assert_eq!(encode(b"/topic/news"), "aioq.t./topic/news");
        assert_eq!(encode(b"/queue/jobs-1"), "aioq.q./queue/jobs-1");
        assert_eq!(
            encode(b"/topic/a.b c*>%"),
            "aioq.t./topic/a%2Eb%20c%2A%3E%25"
        );
    }

    #[test]
    fn every_byte_string_round_trips_through_a_valid_subject() {
        let mut names: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        names.push((0..=255u8).collect());
        names.push(b"/queue/\xff\x00.\t".to_vec());
        // A cheap deterministic scramble of many lengths.
        let mut x: u32 = 12345;
        for len in 1..200 {
            let name: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            names.push(name);
        }
        for name in names {
            let s = encode(&name);
            let token = &s[7..];
            assert!(
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>')),
                "{s:?} is not one valid subject token"
            );
            assert_eq!(decode(&s).as_deref(), Some(&name[..]), "{s}");
        }
    }

    #[test]
    fn foreign_subjects_are_not_channels() {
        for s in [
            "aioq.t.",
            "other./topic/x",
            "aioq.t./topic/%2",
            "aioq.t./topic/%zz",
            "aioq.t./topic/%2e",
            "aioq.t.a.b",
            "aioq.q./topic/x",
            "aioq.t./queue/x",
        ] {
            assert_eq!(decode(s), None, "{s}");
        }
    }

    #[test]
    fn stream_names_are_stable_and_legal() {
        let n = stream_name(b"/queue/jobs");
        assert_eq!(n, stream_name(b"/queue/jobs"));
        assert_ne!(n, stream_name(b"/queue/jobz"));
        assert_eq!(n.len(), 21);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}
