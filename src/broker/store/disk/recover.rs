//! Reading a data directory back at start: every segment in order, each
//! message published and not settled, with the attempt it was at. A record
//! cut short at the end of a segment (a crash mid-write) is truncated away;
//! a damaged one elsewhere ends the reading of its segment, whose file is
//! set aside under another name (kept for a human to look at) after what it
//! held before the damage is written again to a fresh segment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::{self, Bad, Record};

/// A message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub head: u16,
    pub payload: Bytes,
    /// The last attempt written to an acknowledging worker (0: never).
    pub delivered: u32,
    /// The segment its record is in.
    pub segment: u64,
}

/// What a data directory held.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Each channel's unsettled messages, oldest first.
    pub channels: Vec<(Bytes, Vec<Stored>)>,
    /// The highest number each channel had given, settled or not.
    pub last_seq: HashMap<Bytes, u64>,
    /// Segments read whole, by number.
    pub segments: Vec<u64>,
    /// Records cut short at a segment's end, truncated.
    pub torn: u64,
    /// Segments set aside for damage: (where they are now, the offset of
    /// the damage).
    pub quarantined: Vec<(PathBuf, u64)>,
    /// Messages found in segments set aside (before the damage): they are
    /// written to a fresh segment before the broker serves.
    pub rescued: u64,
}

/// The segment file of number `n`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.log"))
}

/// The numbers of the segments in `dir`, in order.
pub fn segment_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 20 {
            if let Ok(n) = stem.parse::<u64>() {
                found.push(n);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The state a replay builds, segment after segment.
#[derive(Default)]
struct Replay {
    live: HashMap<Bytes, BTreeMap<u64, Stored>>,
    last_seq: HashMap<Bytes, u64>,
}

/// How the reading of one segment's bytes ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// At the end of the bytes.
    Clean,
    /// A record cut short by the end of the bytes, at this offset.
    Torn(u64),
    /// Damage at this offset.
    Damaged(u64),
}

impl Replay {
    /// Applies the records of one segment's bytes (magic included).
    fn segment(&mut self, n: u64, bytes: &[u8]) -> End {
        if bytes.len() < record::MAGIC.len() {
            return End::Torn(0);
        }
        if &bytes[..record::MAGIC.len()] != record::MAGIC {
            return End::Damaged(0);
        }
        let mut names: HashMap<u32, Bytes> = HashMap::new();
        let mut at = record::MAGIC.len();
        while at < bytes.len() {
            let rest = &bytes[at..];
            let (r, len) = match record::decode(rest) {
                Ok(ok) => ok,
                Err(Bad::Short) => return End::Torn(at as u64),
                // A bad checksum on the segment's last record is a write torn
                // inside (the length written, the rest not): what a crash
                // leaves, not damage.
                Err(Bad::Checksum) if last_frame(rest) => return End::Torn(at as u64),
                Err(_) => return End::Damaged(at as u64),
            };
            let name = |idx: u32| names.get(&idx).cloned();
            match r {
                Record::Chan { idx, name } => {
                    names.insert(idx, Bytes::copy_from_slice(name));
                }
                Record::Pub {
                    idx,
                    seq,
                    head,
                    payload,
                } => {
                    let Some(name) = name(idx) else {
                        return End::Damaged(at as u64);
                    };
                    let last = self.last_seq.entry(name.clone()).or_default();
                    *last = (*last).max(seq);
                    self.live.entry(name).or_default().insert(
                        seq,
                        Stored {
                            seq,
                            head,
                            payload: record::owned(payload),
                            delivered: 0,
                            segment: n,
                        },
                    );
                }
                Record::Settle { idx, seqs } => {
                    let Some(name) = name(idx) else {
                        return End::Damaged(at as u64);
                    };
                    if let Some(live) = self.live.get_mut(&name) {
                        for s in Record::settled(seqs) {
                            live.remove(&s);
                        }
                        if live.is_empty() {
                            self.live.remove(&name);
                        }
                    }
                }
                Record::Delivered { idx, seq, attempt } => {
                    let Some(name) = name(idx) else {
                        return End::Damaged(at as u64);
                    };
                    if let Some(m) = self.live.get_mut(&name).and_then(|l| l.get_mut(&seq)) {
                        m.delivered = m.delivered.max(attempt);
                    }
                }
            }
            at += len;
        }
        End::Clean
    }
}

/// Whether the frame at the front of `rest` claims to end exactly where
/// the bytes do (or past them).
fn last_frame(rest: &[u8]) -> bool {
    let len = u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
    record::FRAME + len >= rest.len()
}

/// Reads every segment of `dir`: truncates torn ends, sets damaged segments
/// aside (renamed `*.log.damaged`), and returns what is unsettled.
pub fn recover(dir: &Path) -> std::io::Result<Recovered> {
    let mut replay = Replay::default();
    let mut out = Recovered::default();
    let mut damaged = Vec::new();
    for n in segment_numbers(dir)? {
        let path = segment_path(dir, n);
        let bytes = std::fs::read(&path)?;
        match replay.segment(n, &bytes) {
            End::Clean => out.segments.push(n),
            End::Torn(at) => {
                // What the crash cut: never confirmed (a confirm waits for
                // the write, whole), so nothing promised is lost with it.
                out.torn += 1;
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                if at == 0 {
                    f.set_len(0)?;
                    drop(f);
                    std::fs::remove_file(&path)?;
                } else {
                    f.set_len(at)?;
                    f.sync_all()?;
                    out.segments.push(n);
                }
            }
            End::Damaged(at) => damaged.push((n, at)),
        }
    }
    for (n, at) in damaged {
        let path = segment_path(dir, n);
        let aside = path.with_extension("log.damaged");
        std::fs::rename(&path, &aside)?;
        out.quarantined.push((aside, at));
    }
    let quarantined: Vec<u64> = out
        .quarantined
        .iter()
        .filter_map(|(p, _)| {
            p.file_name()?
                .to_str()?
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .collect();
    let mut channels: Vec<(Bytes, Vec<Stored>)> = replay
        .live
        .into_iter()
        .map(|(name, live)| {
            let msgs: Vec<Stored> = live.into_values().collect();
            (name, msgs)
        })
        .collect();
    channels.sort_by(|a, b| a.0.cmp(&b.0));
    out.rescued = channels
        .iter()
        .flat_map(|(_, m)| m)
        .filter(|m| quarantined.contains(&m.segment))
        .count() as u64;
    out.channels = channels;
    out.last_seq = replay.last_seq;
    Ok(out)
}

/// Replays arbitrary bytes as one segment: for the fuzzer, which wants no
/// panic and no allocation past what the bytes could hold.
pub fn replay_bytes(bytes: &[u8]) -> (usize, End) {
    let mut replay = Replay::default();
    let end = replay.segment(1, bytes);
    (replay.live.values().map(BTreeMap::len).sum(), end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::store::disk::record::{put_chan, put_delivered, put_pub, put_settle};

    fn segment(records: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = record::MAGIC.to_vec();
        records(&mut b);
        b
    }

    #[test]
    fn what_is_settled_later_does_not_come_back_and_the_rest_keeps_its_order() {
        let mut r = Replay::default();
        let one = segment(|b| {
            put_chan(b, 0, b"/queue/a");
            for s in 1..=4 {
                put_pub(b, 0, s, 0, format!("m{s}").as_bytes());
            }
            put_delivered(b, 0, 3, 1);
        });
        let two = segment(|b| {
            // Another number for the same name in this segment.
            put_chan(b, 5, b"/queue/a");
            put_settle(b, 5, &[1, 4]);
        });
        assert_eq!(r.segment(1, &one), End::Clean);
        assert_eq!(r.segment(2, &two), End::Clean);
        let live: Vec<(u64, u32)> = r.live[&Bytes::from_static(b"/queue/a")]
            .values()
            .map(|m| (m.seq, m.delivered))
            .collect();
        assert_eq!(live, [(2, 0), (3, 1)]);
    }

    #[test]
    fn a_segment_cut_at_every_byte_of_its_last_record_is_torn_there_and_loses_only_it() {
        let whole = segment(|b| {
            put_chan(b, 0, b"/queue/a");
            put_pub(b, 0, 1, 0, b"first");
            put_pub(b, 0, 2, 0, b"second");
        });
        let mut probe = Replay::default();
        assert_eq!(probe.segment(1, &whole), End::Clean);
        let last = {
            let mut b = Vec::new();
            put_pub(&mut b, 0, 2, 0, b"second");
            b.len()
        };
        let start = whole.len() - last;
        for cut in start + 1..whole.len() {
            let mut r = Replay::default();
            assert_eq!(
                r.segment(1, &whole[..cut]),
                End::Torn(start as u64),
                "cut {cut}"
            );
            assert_eq!(r.live.values().map(BTreeMap::len).sum::<usize>(), 1);
        }
    }

    #[test]
    fn a_flipped_bit_in_a_middle_record_is_damage_not_a_torn_end() {
        let mut seg = segment(|b| {
            put_chan(b, 0, b"/queue/a");
            put_pub(b, 0, 1, 0, b"first");
            put_pub(b, 0, 2, 0, b"second");
            put_pub(b, 0, 3, 0, b"third");
        });
        let third = {
            let mut b = Vec::new();
            put_pub(&mut b, 0, 3, 0, b"third");
            b.len()
        };
        let second = {
            let mut b = Vec::new();
            put_pub(&mut b, 0, 2, 0, b"second");
            b.len()
        };
        let at = seg.len() - third - second;
        seg[at + record::FRAME + 3] ^= 0x10;
        let mut r = Replay::default();
        assert_eq!(r.segment(1, &seg), End::Damaged(at as u64));
        assert_eq!(r.live.values().map(BTreeMap::len).sum::<usize>(), 1);
    }
}
