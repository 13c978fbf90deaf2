//! The records of a durable store's log, as bytes. Every record is framed
//! `length (u32 LE) | crc32c (u32 LE) | kind (u8) | body`, the length and
//! the checksum covering kind and body: a record that was written only in
//! part (a crash mid-write) is told from one that was damaged afterwards.
//!
//! A segment begins with [`MAGIC`]. Channels are named once per segment
//! (`CHAN`, giving the name a number for that segment only), so that a
//! message's record carries four bytes of name, not the name.

use bytes::{BufMut, Bytes};

/// The first bytes of every segment: which format its records have.
pub const MAGIC: &[u8; 8] = b"aioqlog1";

/// Length and checksum in front of every record.
pub const FRAME: usize = 8;

/// A record longer than this is damage, not a message: no frame the broker
/// accepts (`--max-frame` is at most 1 GiB) comes near it.
pub const MAX_RECORD: usize = (1 << 30) + 4096;

pub mod kind {
    /// A channel's name and its number within the segment.
    pub const CHAN: u8 = 1;
    /// A message published to a durable channel.
    pub const PUB: u8 = 2;
    /// Messages done with: acknowledged, written to a worker that does not
    /// acknowledge, dead-lettered, expired.
    pub const SETTLE: u8 = 3;
    /// A message written to an acknowledging worker, and which attempt that
    /// was: after a crash it comes back as the next attempt.
    pub const DELIVERED: u8 = 4;
}

/// One record, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Chan {
        idx: u32,
        name: &'a [u8],
    },
    Pub {
        idx: u32,
        seq: u64,
        head: u16,
        payload: &'a [u8],
    },
    /// Several numbers of one channel.
    Settle {
        idx: u32,
        seqs: &'a [u8],
    },
    Delivered {
        idx: u32,
        seq: u64,
        attempt: u32,
    },
}

impl Record<'_> {
    /// The numbers a `SETTLE` names.
    pub fn settled(seqs: &[u8]) -> impl Iterator<Item = u64> + '_ {
        seqs.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
    }
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The bytes end inside the record: what a crash mid-write leaves.
    Short,
    /// The checksum does not match: damage, or a write torn inside.
    Checksum,
    /// The frame is whole and its checksum right, but it is no record this
    /// format has (a newer writer's, or a bug's).
    Malformed,
}

/// Appends one record of `kind` whose body `body` writes.
fn put(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.push(kind);
    body(out);
    let len = (out.len() - start - FRAME) as u32;
    let crc = crc32c::crc32c(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

pub fn put_chan(out: &mut Vec<u8>, idx: u32, name: &[u8]) -> usize {
    put(out, kind::CHAN, |b| {
        b.put_u32_le(idx);
        b.extend_from_slice(name);
    })
}

/// Bytes a `PUB` record has besides its payload.
pub const PUB_OVERHEAD: usize = FRAME + 1 + 4 + 8 + 2;

pub fn put_pub(out: &mut Vec<u8>, idx: u32, seq: u64, head: u16, payload: &[u8]) -> usize {
    put(out, kind::PUB, |b| {
        b.put_u32_le(idx);
        b.put_u64_le(seq);
        b.put_u16_le(head);
        b.extend_from_slice(payload);
    })
}

pub fn put_settle(out: &mut Vec<u8>, idx: u32, seqs: &[u64]) -> usize {
    put(out, kind::SETTLE, |b| {
        b.put_u32_le(idx);
        for s in seqs {
            b.put_u64_le(*s);
        }
    })
}

pub fn put_delivered(out: &mut Vec<u8>, idx: u32, seq: u64, attempt: u32) -> usize {
    put(out, kind::DELIVERED, |b| {
        b.put_u32_le(idx);
        b.put_u64_le(seq);
        b.put_u32_le(attempt);
    })
}

/// The record at the front of `buf` and its length in bytes.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), Bad> {
    if buf.len() < FRAME {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    if len == 0 || len > MAX_RECORD {
        return Err(Bad::Checksum);
    }
    let Some(rec) = buf.get(FRAME..FRAME + len) else {
        return Err(Bad::Short);
    };
    if crc32c::crc32c(rec) != crc {
        return Err(Bad::Checksum);
    }
    let (kind, body) = (rec[0], &rec[1..]);
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    let record = match kind {
        kind::CHAN => u32_at(0).map(|idx| Record::Chan {
            idx,
            name: &body[4..],
        }),
        kind::PUB => (|| {
            let head = u16::from_le_bytes(body.get(12..14)?.try_into().ok()?);
            let payload = &body[14..];
            (usize::from(head) < payload.len()).then_some(Record::Pub {
                idx: u32_at(0)?,
                seq: u64_at(4)?,
                head,
                payload,
            })
        })(),
        kind::SETTLE => u32_at(0)
            .filter(|_| (body.len() - 4).is_multiple_of(8))
            .map(|idx| Record::Settle {
                idx,
                seqs: &body[4..],
            }),
        kind::DELIVERED => (|| {
            Some(Record::Delivered {
                idx: u32_at(0)?,
                seq: u64_at(4)?,
                attempt: u32_at(12)?,
            })
        })(),
        _ => None,
    };
    record.map(|r| (r, FRAME + len)).ok_or(Bad::Malformed)
}

/// A payload read back, in memory of its own (not a slice of the segment,
/// which would keep every segment whole while one of its messages waits).
pub fn owned(payload: &[u8]) -> Bytes {
    Bytes::copy_from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let mut buf = Vec::new();
        put_chan(&mut buf, 7, b"/queue/jobs");
        put_pub(&mut buf, 7, 42, 3, b"hi!payload");
        put_settle(&mut buf, 7, &[1, 2, 42]);
        put_delivered(&mut buf, 7, 42, 2);
        let mut at = 0;
        let mut got = Vec::new();
        while at < buf.len() {
            let (r, n) = decode(&buf[at..]).unwrap();
            got.push(format!("{r:?}"));
            at += n;
        }
        assert_eq!(got.len(), 4);
        let (r, _) = decode(&buf[0..]).unwrap();
        assert_eq!(
            r,
            Record::Chan {
                idx: 7,
                name: b"/queue/jobs"
            }
        );
    }

    #[test]
    fn a_record_cut_anywhere_is_short_and_a_flipped_bit_fails_its_checksum() {
        let mut buf = Vec::new();
        put_pub(&mut buf, 1, 9, 0, b"some payload");
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]).unwrap_err(), Bad::Short, "cut at {cut}");
        }
        for bit in (FRAME * 8)..(buf.len() * 8) {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&bad).unwrap_err(), Bad::Checksum, "bit {bit}");
        }
    }
}
