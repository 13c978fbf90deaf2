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

/// A message found unsettled: where its record is, not its payload (a
/// backlog larger than memory is read back as workers need it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub head: u16,
    /// Its payload's length.
    pub size: u32,
    /// The last attempt written to an acknowledging worker (0: never).
    pub delivered: u32,
    /// Where its record is.
    pub at: Loc,
    /// The payload, only for a message of a damaged segment: written again
    /// elsewhere before the broker serves.
    pub payload: Option<Bytes>,
}

/// Where a record is: its segment, its offset there and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
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
        self.segment_from(n, bytes, bytes.len() as u64)
            .unwrap_or(End::Damaged(0))
    }

    /// Applies the records of one segment, `total` bytes read from `file`
    /// a window at a time (a segment is never held whole in memory: a
    /// backlog larger than memory is recovered too).
    fn segment_from(
        &mut self,
        n: u64,
        mut file: impl std::io::Read,
        total: u64,
    ) -> std::io::Result<End> {
        let mut window = Window {
            buf: Vec::with_capacity(WINDOW),
            base: 0,
            at: 0,
            eof: false,
        };
        window.fill(&mut file, record::MAGIC.len())?;
        if window.buf.len() < record::MAGIC.len() {
            return Ok(End::Torn(0));
        }
        if &window.buf[..record::MAGIC.len()] != record::MAGIC {
            return Ok(End::Damaged(0));
        }
        window.at = record::MAGIC.len();
        let mut names: HashMap<u32, Bytes> = HashMap::new();
        loop {
            if window.at == window.buf.len() {
                window.fill(&mut file, WINDOW)?;
                if window.at == window.buf.len() {
                    return Ok(End::Clean);
                }
            }
            let offset = window.base + window.at as u64;
            let rest = &window.buf[window.at..];
            let (r, len) = match record::decode(rest) {
                Ok(ok) => ok,
                Err(Bad::Short) if !window.eof => {
                    let want = frame_len(rest).map_or(WINDOW, |l| (record::FRAME + l).max(WINDOW));
                    window.fill(&mut file, want)?;
                    continue;
                }
                Err(Bad::Short) => return Ok(End::Torn(offset)),
                // A bad checksum on the segment's last record is a write torn
                // inside (the length written, the rest not): what a crash
                // leaves, not damage.
                Err(Bad::Checksum)
                    if offset + (record::FRAME + frame_len(rest).unwrap_or(0)) as u64 >= total =>
                {
                    return Ok(End::Torn(offset))
                }
                Err(_) => return Ok(End::Damaged(offset)),
            };
            let at = offset;
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
                        return Ok(End::Damaged(at));
                    };
                    let last = self.last_seq.entry(name.clone()).or_default();
                    *last = (*last).max(seq);
                    self.live.entry(name).or_default().insert(
                        seq,
                        Stored {
                            seq,
                            head,
                            size: payload.len() as u32,
                            delivered: 0,
                            at: Loc {
                                segment: n,
                                offset: at as u32,
                                len: len as u32,
                            },
                            payload: None,
                        },
                    );
                }
                Record::Settle { idx, seqs } => {
                    let Some(name) = name(idx) else {
                        return Ok(End::Damaged(at));
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
                        return Ok(End::Damaged(at));
                    };
                    if let Some(m) = self.live.get_mut(&name).and_then(|l| l.get_mut(&seq)) {
                        m.delivered = m.delivered.max(attempt);
                    }
                }
            }
            window.at += len;
        }
    }
}

/// Bytes of a segment read at a time.
const WINDOW: usize = 1 << 20;

/// The part of a segment in memory while it is replayed.
struct Window {
    buf: Vec<u8>,
    /// The segment offset of `buf[0]`.
    base: u64,
    /// Where the next record starts in `buf`.
    at: usize,
    eof: bool,
}

impl Window {
    /// Drops what was replayed and reads until `want` bytes from `at` are
    /// in memory, or the end.
    fn fill(&mut self, file: &mut impl std::io::Read, want: usize) -> std::io::Result<()> {
        self.buf.drain(..self.at);
        self.base += self.at as u64;
        self.at = 0;
        // A record claiming more than any can be is damage, found by
        // decode; nothing is read for it.
        let want = want.min(record::MAX_RECORD + record::FRAME);
        let mut filled = self.buf.len();
        if filled >= want || self.eof {
            return Ok(());
        }
        self.buf.resize(want, 0);
        while filled < want && !self.eof {
            match file.read(&mut self.buf[filled..]) {
                Ok(got) => {
                    filled += got;
                    self.eof = got == 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(filled);
                    return Err(e);
                }
            }
        }
        self.buf.truncate(filled);
        Ok(())
    }
}

/// The length a frame at the front of `rest` claims, if its length is there.
fn frame_len(rest: &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize)
}

/// Reads every segment of `dir`: truncates torn ends, sets damaged segments
/// aside (renamed `*.log.damaged`), and returns what is unsettled.
pub fn recover(dir: &Path) -> std::io::Result<Recovered> {
    let mut replay = Replay::default();
    let mut out = Recovered::default();
    let mut damaged = Vec::new();
    for n in segment_numbers(dir)? {
        let path = segment_path(dir, n);
        let file = std::fs::File::open(&path)?;
        let total = file.metadata()?.len();
        match replay.segment_from(n, &file, total)? {
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
            End::Damaged(at) => {
                // What came before the damage is read now: its file is set
                // aside.
                use std::os::unix::fs::FileExt;
                for m in replay.live.values_mut().flat_map(|l| l.values_mut()) {
                    if m.at.segment == n {
                        let mut buf = vec![0; m.at.len as usize];
                        if file.read_exact_at(&mut buf, u64::from(m.at.offset)).is_ok() {
                            if let Ok((Record::Pub { payload, .. }, _)) = record::decode(&buf) {
                                m.payload = Some(record::owned(payload));
                            }
                        }
                    }
                }
                damaged.push((n, at));
            }
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
        .filter(|m| quarantined.contains(&m.at.segment))
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

    /// Hands out a few bytes per read, as a slow file system may.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(997);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_segment_read_a_window_at_a_time_replays_as_whole_records_larger_than_the_window() {
        let big = vec![7u8; 3 * WINDOW + 5];
        let seg = segment(|b| {
            put_chan(b, 0, b"/queue/a");
            for s in 1..=3000 {
                put_pub(b, 0, s, 0, format!("m{s}").as_bytes());
            }
            put_pub(b, 0, 3001, 0, &big);
            put_pub(b, 0, 3002, 0, b"after");
            put_settle(b, 0, &[2]);
        });
        let mut r = Replay::default();
        let end = r.segment_from(1, Trickle(&seg), seg.len() as u64).unwrap();
        assert_eq!(end, End::Clean);
        let live = &r.live[&Bytes::from_static(b"/queue/a")];
        assert_eq!(live.len(), 3001);
        assert_eq!(live[&3001].size as usize, big.len());
        // Where each record is, so that it can be read back alone.
        let m = &live[&3002];
        let (rec, _) = record::decode(&seg[m.at.offset as usize..]).unwrap();
        assert!(matches!(
            rec,
            Record::Pub {
                seq: 3002,
                payload: b"after",
                ..
            }
        ));
        // Cut inside the big record: torn there.
        let at = live[&3001].at.offset as usize;
        let mut r = Replay::default();
        let cut = &seg[..at + WINDOW + 10];
        assert_eq!(
            r.segment_from(1, Trickle(cut), cut.len() as u64).unwrap(),
            End::Torn(at as u64)
        );
    }
}
