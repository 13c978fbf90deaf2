//! The durable store of one broker: `/queue` channels whose messages must
//! outlive the process. One log for every durable channel, in segment files
//! of a data directory: a publish appends a record, a settlement (an ack, a
//! write to a worker that does not acknowledge, a dead letter) appends
//! another, and a segment whose every message is settled is deleted once
//! every older one is.
//!
//! Appends go to memory under one lock; one thread (`commit`) writes what
//! gathered and syncs it, so that every publisher whose records went into a
//! write shares its fsync (group commit). What is confirmed (a v2 `CONFIRM`,
//! a v1 end-of-stream) waits for [`Disk::confirmed`] to pass the records:
//! synced ones for a channel whose fsync is `always`, written ones otherwise.

mod commit;
pub mod record;
pub mod recover;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

pub use recover::{Loc, Recovered, Stored};

use super::super::lock;

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Once on disk: every write is followed by an fsync, shared by every
    /// publisher whose records it holds.
    Always,
    /// Once written to the file; synced every so often (a power loss can
    /// take what was written since the last sync; a crash of the broker
    /// alone cannot).
    Interval(Duration),
    /// Once written; synced when the system pleases.
    Never,
}

impl Fsync {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => match s.strip_prefix("interval:") {
                Some(d) => match crate::units::parse_duration(d) {
                    Ok(d) if !d.is_zero() => Ok(Self::Interval(d)),
                    Ok(_) => Err("interval:D needs D more than 0".into()),
                    Err(e) => Err(e),
                },
                None => Err(format!(
                    "{s:?} is not always, interval:DURATION (e.g. interval:1s) or never"
                )),
            },
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Always => "always".into(),
            Self::Interval(d) => format!("interval:{}", humantime::format_duration(d)),
            Self::Never => "never".into(),
        }
    }
}

/// The store's format, written in `FORMAT` in the data directory.
pub const FORMAT: u32 = 1;

/// Bytes of records gathered and not yet written past which publishers to
/// durable channels wait: the disk is slower than they are, or failing.
const MAX_PENDING: usize = 64 << 20;

/// What the store has done, for `/metrics` and the monitoring API.
#[derive(Debug, Default)]
pub struct DiskStats {
    pub fsyncs: AtomicU64,
    /// Records made durable by those fsyncs.
    pub synced_records: AtomicU64,
    /// Time spent in fsync, in microseconds.
    pub fsync_micros: AtomicU64,
    pub written_bytes: AtomicU64,
    /// Write or sync errors (a full disk, an I/O error): the store retries.
    pub errors: AtomicU64,
    pub segments_deleted: AtomicU64,
    /// Messages stored and not settled.
    pub messages: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
    /// From the start: what was read back, and how long it took.
    pub recovered: AtomicU64,
    pub recovery_micros: AtomicU64,
    pub torn: AtomicU64,
    pub quarantined: AtomicU64,
    /// Messages redelivered after a restart because a worker had them when
    /// the broker stopped.
    pub redelivered_after_restart: AtomicU64,
    /// Messages kept on disk only whose record could not be read back (the
    /// file damaged since it was written): lost, and said so.
    pub unreadable: AtomicU64,
}

/// What one durable channel has in the store.
#[derive(Debug, Default)]
struct Chan {
    /// Its number in the segment being written, once named there.
    idx: Option<u32>,
    /// Where its messages start in each segment that holds some: (first
    /// number, segment), oldest first. A message's segment is found by it.
    starts: VecDeque<(u64, u64)>,
    /// The highest number it gave.
    last: u64,
    live: u64,
    bytes: u64,
}

struct State {
    /// The segment being written.
    seg: u64,
    /// Its size, counting what is gathered.
    seg_bytes: u64,
    /// Numbers given to channel names in this segment.
    next_idx: u32,
    /// Records gathered, by segment, not yet handed to the write.
    chunks: Vec<(u64, Vec<u8>)>,
    /// Buffers written and given back, for the next chunks.
    spare: Vec<Vec<u8>>,
    pending: usize,
    /// Bytes of records appended since the start (a position in the log).
    appended: u64,
    records: u64,
    /// Unsettled messages per segment, every segment that exists.
    live: BTreeMap<u64, u64>,
    chans: HashMap<Bytes, Chan>,
    /// Segments to delete (every message settled, none older left).
    reclaim: Vec<u64>,
    /// Bytes of every segment file that exists, counting what is gathered.
    sizes: BTreeMap<u64, u64>,
    disk_bytes: u64,
    /// A record gathered is confirmed only once synced: the next write is.
    sync_wanted: bool,
    /// Someone waits for a record gathered to be written: write now.
    write_wanted: bool,
    /// Records were written since the last sync (by the commit thread or
    /// by a confirm that wrote them itself).
    unsynced: bool,
    /// What the commit thread is doing, so that appends wake it only when
    /// it sleeps (each wake is a system call, and a context switch).
    sleep: Sleep,
    stop: bool,
}

/// What the commit thread does, as appenders see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sleep {
    /// Writing, or woken already: it looks at what is gathered next.
    Busy,
    /// Nothing gathered: the next record wakes it.
    Idle,
    /// Records gathered that nobody waits for: it lets more join them for
    /// up to [`GATHER`], unless one that is waited for comes.
    Gathering,
}

/// How long records that nobody waits for (messages of channels whose
/// fsync is not `always`, settlements, deliveries to acknowledging
/// workers) are gathered before they are written. A write per few records
/// cost a wake of the commit thread per batch a reader or writer routed,
/// a third of a durable `/queue`'s broker CPU in a profile; a confirm or a
/// read back from disk asks for its write and is not delayed.
pub(super) const GATHER: Duration = Duration::from_millis(1);

/// Bytes gathered past which the commit thread writes without waiting for
/// [`GATHER`] to end.
pub(super) const GATHER_BYTES: usize = 1 << 20;

/// The store: see the module's documentation.
pub struct Disk {
    dir: PathBuf,
    mode: Fsync,
    segment_size: u64,
    state: Mutex<State>,
    /// Wakes the commit thread.
    wake: Condvar,
    /// The log position up to which records are synced to disk.
    synced: AtomicU64,
    /// The log position up to which records are in their files.
    written: AtomicU64,
    /// Woken at every advance of `synced`.
    advanced: tokio::sync::Notify,
    /// Woken at every advance of `written`.
    wrote: tokio::sync::Notify,
    /// Woken when gathered records fall back under the bound.
    room: tokio::sync::Notify,
    congested: AtomicBool,
    /// Segment files hold `max_disk` bytes (0: no bound): publishes wait
    /// (protocol 1) or are refused (protocol 2) until settled ones go.
    max_disk: u64,
    full: AtomicBool,
    pub stats: DiskStats,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The segment last read back from, kept open for the next read (a
    /// backlog is read back a batch at a time, mostly from one segment).
    /// Dropped when segments are deleted, so that no deleted file's room
    /// is held.
    reading: Mutex<Option<(u64, Arc<std::fs::File>)>>,
    /// The segment being written: held by whoever writes (the commit
    /// thread, or a confirm writing for itself), from taking what is
    /// gathered until it is in the file.
    writer: Mutex<Option<commit::Open>>,
    /// Segments numbered below it are deleted (they are deleted oldest
    /// first): records still gathered for one are not written, or the
    /// file would come back with nothing left to delete it.
    gone_below: AtomicU64,
    /// Held for as long as the store is open: a second broker is refused.
    _lock: std::fs::File,
    /// Syncs to fail, as a failing disk would (see `commit::sync_data`).
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicU32,
}

/// Why a data directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "data directory {dir} is in use by another aioq serve{pid}: stop it, or give this one \
         another --data-dir"
    )]
    Locked { dir: PathBuf, pid: String },
    #[error(
        "data directory {dir} holds store format {found}; this aioq reads format {FORMAT}: run \
         the aioq that wrote it, or move the directory aside"
    )]
    Format { dir: PathBuf, found: String },
}

impl Disk {
    /// Opens (or makes) the store in `dir` and reads back what it holds.
    pub fn open(
        dir: &Path,
        mode: Fsync,
        segment_size: u64,
        max_disk: Option<u64>,
    ) -> Result<(Arc<Self>, Recovered), OpenError> {
        let dir = &std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let io = |e| OpenError::Io(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        if lock_file.try_lock().is_err() {
            let pid = std::fs::read_to_string(dir.join("LOCK"))
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .map_or(String::new(), |p| format!(" (pid {p})"));
            return Err(OpenError::Locked {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        {
            use std::io::Write;
            lock_file.set_len(0).map_err(io)?;
            (&lock_file)
                .write_all(format!("{}\n", std::process::id()).as_bytes())
                .map_err(io)?;
        }
        let format_path = dir.join("FORMAT");
        match std::fs::read_to_string(&format_path) {
            Ok(text) => {
                let found = text.trim().trim_start_matches("aioq store ").to_string();
                if found != FORMAT.to_string() {
                    return Err(OpenError::Format {
                        dir: dir.to_path_buf(),
                        found,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(&format_path, format!("aioq store {FORMAT}\n")).map_err(io)?;
                sync_dir(dir).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        let started = std::time::Instant::now();
        let mut recovered = recover::recover(dir).map_err(io)?;
        // New records go to a segment of their own: a recovered one is
        // never written again (its end may have been cut).
        let seg = recovered.segments.last().map_or(1, |n| n + 1);
        let mut live: BTreeMap<u64, u64> = recovered.segments.iter().map(|&n| (n, 0)).collect();
        live.insert(seg, 0);
        let mut chans: HashMap<Bytes, Chan> = HashMap::new();
        let quarantined: Vec<u64> = recovered
            .quarantined
            .iter()
            .filter_map(|(p, _)| p.file_name()?.to_str()?.get(..20)?.parse().ok())
            .collect();
        let store = Arc::new(Self {
            dir: dir.to_path_buf(),
            mode,
            segment_size: segment_size.max(4096),
            state: Mutex::new(State {
                seg,
                seg_bytes: record::MAGIC.len() as u64,
                next_idx: 0,
                chunks: Vec::new(),
                spare: Vec::new(),
                pending: 0,
                appended: 0,
                records: 0,
                live: BTreeMap::new(),
                chans: HashMap::new(),
                reclaim: Vec::new(),
                sizes: BTreeMap::new(),
                disk_bytes: 0,
                sync_wanted: false,
                write_wanted: false,
                unsynced: false,
                sleep: Sleep::Busy,
                stop: false,
            }),
            wake: Condvar::new(),
            synced: AtomicU64::new(0),
            written: AtomicU64::new(0),
            advanced: tokio::sync::Notify::new(),
            wrote: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
            congested: AtomicBool::new(false),
            max_disk: max_disk.unwrap_or(0),
            full: AtomicBool::new(false),
            stats: DiskStats::default(),
            thread: Mutex::new(None),
            reading: Mutex::new(None),
            writer: Mutex::new(None),
            gone_below: AtomicU64::new(0),
            _lock: lock_file,
            #[cfg(test)]
            fail_syncs: Default::default(),
        });
        {
            let mut st = lock(&store.state);
            for (name, msgs) in &mut recovered.channels {
                let chan = chans.entry(name.clone()).or_default();
                for m in msgs {
                    // What was in a damaged segment is written again here:
                    // its file is no longer read at the next start.
                    if quarantined.contains(&m.at.segment) {
                        let payload = m.payload.take().unwrap_or_default();
                        m.at = store.append_locked(
                            &mut st,
                            name,
                            |buf, idx| record::put_pub(buf, idx, m.seq, m.head, &payload),
                            None,
                        );
                    }
                    let segment = m.at.segment;
                    *live.entry(segment).or_default() += 1;
                    if chan.starts.back().is_none_or(|&(_, s)| s != segment) {
                        chan.starts.push_back((m.seq, segment));
                    }
                    chan.live += 1;
                    chan.bytes += u64::from(m.size);
                }
                chan.last = recovered.last_seq.get(name).copied().unwrap_or(0);
            }
            // Names given in the rescue stay valid for the segment.
            for (name, c) in std::mem::take(&mut st.chans) {
                chans.entry(name).or_default().idx = c.idx;
            }
            st.live = live;
            st.chans = chans;
            for &n in &recovered.segments {
                let size = std::fs::metadata(recover::segment_path(dir, n)).map_or(0, |m| m.len());
                *st.sizes.entry(n).or_default() += size;
                st.disk_bytes += size;
            }
            let messages: u64 = st.chans.values().map(|c| c.live).sum();
            let bytes: u64 = st.chans.values().map(|c| c.bytes).sum();
            store.stats.messages.store(messages, Relaxed);
            store.stats.bytes.store(bytes, Relaxed);
            store.stats.recovered.store(messages, Relaxed);
            // Segments left with nothing unsettled go at once.
            store.reclaim_locked(&mut st);
        }
        store.stats.torn.store(recovered.torn, Relaxed);
        store
            .stats
            .quarantined
            .store(recovered.quarantined.len() as u64, Relaxed);
        store
            .stats
            .recovery_micros
            .store(started.elapsed().as_micros() as u64, Relaxed);
        let thread = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("aioq-store".into())
                .spawn(move || commit::run(&store))
                .map_err(io)?
        };
        *lock(&store.thread) = Some(thread);
        if recovered.rescued > 0 {
            // Confirmed once: on disk again before anything is served.
            let upto = {
                let mut st = lock(&store.state);
                st.sync_wanted = true;
                store.nudge(&mut st, true);
                st.appended
            };
            while store.confirmed(mode != Fsync::Never) < upto {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok((store, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mode(&self) -> Fsync {
        self.mode
    }

    /// Appends a record made by `put` (given the buffer and the channel's
    /// number in the segment), opening a new segment first when the one
    /// being written is full.
    fn append_locked(
        &self,
        st: &mut State,
        name: &Bytes,
        put: impl FnOnce(&mut Vec<u8>, u32) -> usize,
        published: Option<(u64, usize)>,
    ) -> Loc {
        if st.seg_bytes >= self.segment_size {
            st.seg += 1;
            let seg = st.seg;
            st.live.insert(seg, 0);
            st.seg_bytes = record::MAGIC.len() as u64;
            st.next_idx = 0;
            for c in st.chans.values_mut() {
                c.idx = None;
            }
            // Retired names have nothing left to number.
            st.chans.retain(|_, c| c.live > 0);
        }
        let seg = st.seg;
        let State {
            chunks,
            spare,
            chans,
            next_idx,
            live,
            ..
        } = st;
        let buf = match chunks.last_mut() {
            Some((s, buf)) if *s == seg => buf,
            _ => {
                let buf = spare.pop().unwrap_or_else(|| Vec::with_capacity(64 << 10));
                chunks.push((seg, buf));
                &mut chunks.last_mut().unwrap_or_else(|| unreachable!()).1
            }
        };
        let mut added = 0;
        // Looked up once per record, the name copied only the first time.
        let chan = match chans.get_mut(name) {
            Some(c) => c,
            None => chans.entry(name.clone()).or_default(),
        };
        if let Some((seq, len)) = published {
            *live.entry(seg).or_default() += 1;
            if chan.starts.back().is_none_or(|&(_, s)| s != seg) {
                chan.starts.push_back((seq, seg));
            }
            chan.last = chan.last.max(seq);
            chan.live += 1;
            chan.bytes += len as u64;
        }
        let idx = match chan.idx {
            Some(i) => i,
            None => {
                let i = *next_idx;
                *next_idx += 1;
                chan.idx = Some(i);
                added += record::put_chan(buf, i, name);
                i
            }
        };
        let offset = st.seg_bytes + added as u64;
        let len = put(buf, idx);
        added += len;
        *st.sizes.entry(seg).or_insert(record::MAGIC.len() as u64) += added as u64;
        st.disk_bytes += added as u64;
        if self.max_disk > 0 && st.disk_bytes >= self.max_disk && !self.full.swap(true, Relaxed) {
            tracing::warn!(
                "durable store {}: its segments hold {} bytes, --max-disk {}: publishers to \
                 durable channels wait (protocol 1) or are refused with disk_full (protocol 2) \
                 until workers settle enough for a segment to go",
                self.dir.display(),
                st.disk_bytes,
                self.max_disk
            );
        }
        st.pending += added;
        st.seg_bytes += added as u64;
        st.appended += added as u64;
        st.records += 1;
        let urgent = st.sync_wanted || st.pending >= GATHER_BYTES;
        self.nudge(st, urgent);
        if st.pending > MAX_PENDING {
            self.congested.store(true, Relaxed);
        }
        Loc {
            segment: seg,
            offset: offset as u32,
            len: len as u32,
        }
    }

    /// Wakes the commit thread if it sleeps: from idleness always (it then
    /// gathers, or writes at once when `urgent`), from gathering only when
    /// `urgent` (a record is waited for, or enough are gathered).
    fn nudge(&self, st: &mut State, urgent: bool) {
        match st.sleep {
            Sleep::Idle => {}
            Sleep::Gathering if urgent => {}
            Sleep::Busy | Sleep::Gathering => return,
        }
        st.sleep = Sleep::Busy;
        self.wake.notify_one();
    }

    /// A message published to durable channel `name` under number `seq`:
    /// on its way to disk. Called under the channel's lock, before any
    /// worker can have it (its settlement must follow it in the log).
    /// Where its record is, and the log position at its end (readable from
    /// the file once [`written`](Self::written) passes it).
    /// `sync`: it is confirmed only once synced (its channel's fsync is
    /// `always`), so the write that takes it is followed by an fsync.
    /// `None`, and nothing appended, when the channel keeps `max_bytes` of
    /// payload stored already (0: no bound of its own).
    pub fn append(
        &self,
        name: &Bytes,
        seq: u64,
        head: u16,
        payload: &[u8],
        sync: bool,
        max_bytes: u64,
    ) -> Option<(Loc, u64)> {
        let mut st = lock(&self.state);
        // A channel's own bound, looked at under the lock the append takes
        // anyway.
        if max_bytes > 0 && st.chans.get(name).is_some_and(|c| c.bytes >= max_bytes) {
            return None;
        }
        st.sync_wanted |= sync;
        let at = self.append_locked(
            &mut st,
            name,
            |buf, idx| record::put_pub(buf, idx, seq, head, payload),
            Some((seq, payload.len())),
        );
        self.stats.messages.fetch_add(1, Relaxed);
        self.stats.bytes.fetch_add(payload.len() as u64, Relaxed);
        Some((at, st.appended))
    }

    /// The log position up to which records are in their files (readable).
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    /// Reads back the messages whose records are at `locs` (written, each
    /// a `PUB`): (number, head, payload) of each, or why it could not be.
    /// Blocking: file reads.
    pub fn read(&self, locs: &[Loc]) -> Vec<Result<(u64, u16, Bytes), String>> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::with_capacity(locs.len());
        let mut file: Option<(u64, std::io::Result<Arc<std::fs::File>>)> =
            lock(&self.reading).clone().map(|(seg, f)| (seg, Ok(f)));
        let mut i = 0;
        while i < locs.len() {
            let seg = locs[i].segment;
            if file.as_ref().is_none_or(|(s, _)| *s != seg) {
                let opened =
                    std::fs::File::open(recover::segment_path(&self.dir, seg)).map(Arc::new);
                if let Ok(f) = &opened {
                    *lock(&self.reading) = Some((seg, f.clone()));
                }
                file = Some((seg, opened));
            }
            // One read for a run of records of one segment, unless what
            // lies between them (other channels' records) is much more.
            let mut j = i + 1;
            let mut wanted = u64::from(locs[i].len);
            while j < locs.len()
                && locs[j].segment == seg
                && locs[j].offset >= locs[j - 1].offset
                && u64::from(locs[j].offset + locs[j].len - locs[i].offset)
                    <= (wanted + u64::from(locs[j].len)) * 4 + (64 << 10)
            {
                wanted += u64::from(locs[j].len);
                j += 1;
            }
            let start = locs[i].offset;
            let end = locs[j - 1].offset + locs[j - 1].len;
            let mut buf = vec![0u8; (end - start) as usize];
            let read = match &file {
                Some((_, Ok(f))) => f.read_exact_at(&mut buf, u64::from(start)),
                Some((_, Err(e))) => Err(std::io::Error::new(e.kind(), e.to_string())),
                None => Err(std::io::Error::other("no segment")),
            };
            for at in &locs[i..j] {
                let r = match &read {
                    Err(e) => Err(format!(
                        "{}: {e}",
                        recover::segment_path(&self.dir, seg).display()
                    )),
                    Ok(()) => {
                        let from = (at.offset - start) as usize;
                        match buf.get(from..from + at.len as usize).map(record::decode) {
                            Some(Ok((
                                record::Record::Pub {
                                    seq, head, payload, ..
                                },
                                _,
                            ))) => Ok((seq, head, record::owned(payload))),
                            _ => Err(format!(
                                "{} byte {}: not the message recorded there",
                                recover::segment_path(&self.dir, seg).display(),
                                at.offset
                            )),
                        }
                    }
                };
                out.push(r);
            }
            i = j;
        }
        out
    }

    /// Messages of `name` done with: (number, payload bytes) of each.
    pub fn settle(&self, name: &Bytes, done: &[(u64, usize)]) {
        if done.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        let seqs: Vec<u64> = done.iter().map(|d| d.0).collect();
        self.append_locked(
            &mut st,
            name,
            |buf, idx| record::put_settle(buf, idx, &seqs),
            None,
        );
        let mut emptied = false;
        let State { chans, live, .. } = &mut *st;
        let Some(chan) = chans.get_mut(name) else {
            return;
        };
        for &(seq, len) in done {
            let at = chan.starts.partition_point(|&(first, _)| first <= seq);
            let Some(&(_, seg)) = at.checked_sub(1).and_then(|i| chan.starts.get(i)) else {
                continue;
            };
            if let Some(n) = live.get_mut(&seg) {
                if *n > 0 {
                    *n -= 1;
                    emptied |= *n == 0;
                    chan.live = chan.live.saturating_sub(1);
                    chan.bytes = chan.bytes.saturating_sub(len as u64);
                    self.stats.messages.fetch_sub(1, Relaxed);
                    self.stats.bytes.fetch_sub(len as u64, Relaxed);
                }
            }
        }
        // Starts in segments that are gone name nothing.
        while chan.starts.len() > 1
            && chan
                .starts
                .front()
                .is_some_and(|&(_, s)| !live.contains_key(&s))
        {
            chan.starts.pop_front();
        }
        if emptied {
            self.reclaim_locked(&mut st);
        }
        drop(st);
        // A channel under its own max-disk may take publishes again.
        self.room.notify_waiters();
    }

    /// Message `seq` of `name`, kept on disk only, cannot be read back: it
    /// is settled (lost), counted and logged.
    pub fn unreadable(&self, name: &Bytes, seq: u64, size: usize, why: &str) {
        self.stats.unreadable.fetch_add(1, Relaxed);
        tracing::error!(
            "durable store: message {seq} of {} cannot be read back ({why}): lost, counted \
             in aioq_store_unreadable_messages_total",
            String::from_utf8_lossy(name)
        );
        self.settle(name, &[(seq, size)]);
    }

    /// Messages of `name` written to an acknowledging worker, (number,
    /// attempt) of each: after a crash each comes back as the attempt after.
    pub fn delivered(&self, name: &Bytes, written: impl Iterator<Item = (u64, u32)>) {
        let mut st = lock(&self.state);
        for (seq, attempt) in written {
            self.append_locked(
                &mut st,
                name,
                |buf, idx| record::put_delivered(buf, idx, seq, attempt),
                None,
            );
        }
    }

    /// Queues for deletion the oldest segments with nothing unsettled
    /// (never the one being written).
    fn reclaim_locked(&self, st: &mut State) {
        while let Some((&n, &live)) = st.live.iter().next() {
            if live > 0 || n == st.seg {
                break;
            }
            st.live.remove(&n);
            st.reclaim.push(n);
            st.disk_bytes -= st.sizes.remove(&n).unwrap_or(0);
        }
        if st.disk_bytes < self.max_disk && self.full.swap(false, Relaxed) {
            tracing::info!(
                "durable store {}: under --max-disk again ({} bytes): durable publishes go on",
                self.dir.display(),
                st.disk_bytes
            );
            self.room.notify_waiters();
        }
        if !st.reclaim.is_empty() {
            self.wake.notify_one();
        }
    }

    /// The number the next message of `name` should have at least: past
    /// every one the store holds.
    pub fn last_seq(&self, name: &Bytes) -> u64 {
        let st = lock(&self.state);
        st.chans.get(name).map_or(0, |c| c.last)
    }

    /// Stored messages and bytes of channel `name`.
    pub fn channel(&self, name: &[u8]) -> (u64, u64) {
        let st = lock(&self.state);
        st.chans.get(name).map_or((0, 0), |c| (c.live, c.bytes))
    }

    /// The log position up to which records are confirmed: synced
    /// (`sync`: for a channel whose fsync is `always`), or written.
    pub fn confirmed(&self, sync: bool) -> u64 {
        if sync {
            self.synced.load(Relaxed)
        } else {
            self.written()
        }
    }

    /// Waits until everything up to log position `upto` is confirmed (see
    /// [`confirmed`](Self::confirmed)).
    pub async fn wait_confirmed(&self, upto: u64, sync: bool) {
        let notify = if sync { &self.advanced } else { &self.wrote };
        let mut asked = false;
        loop {
            let advanced = notify.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.confirmed(sync) >= upto {
                return;
            }
            // What lies before `upto` may be records that ask for no sync
            // (settlements after the publish waited for): one is asked for.
            // Records nobody waited for may be gathering: written now.
            if !asked {
                asked = true;
                if !sync && commit::write_now(self) {
                    continue;
                }
                let mut st = lock(&self.state);
                if sync {
                    st.sync_wanted = true;
                } else {
                    st.write_wanted = true;
                }
                self.nudge(&mut st, true);
            }
            advanced.await;
        }
    }

    /// More is gathered than the disk has taken: publishers wait.
    pub fn congested(&self) -> bool {
        self.congested.load(Relaxed)
    }

    /// The segment files hold `--max-disk`: no more publishes until some go.
    pub fn full(&self) -> bool {
        self.full.load(Relaxed)
    }

    /// The bound on the segment files' bytes (0: none).
    pub fn max_disk(&self) -> u64 {
        self.max_disk
    }

    /// Waits until the store takes appends to channel `name` again: not
    /// congested, under `--max-disk`, and the channel under `max` stored
    /// payload bytes (0: no bound of its own).
    pub async fn room(&self, name: &[u8], max: u64) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if !self.congested() && !self.full() && (max == 0 || self.channel(name).1 < max) {
                return;
            }
            room.await;
        }
    }

    /// Forgets the segment kept open for reading (segments are going).
    pub(super) fn forget_reading(&self) {
        lock(&self.reading).take();
    }

    /// Writes and syncs what is gathered, then stops the commit thread.
    pub fn close(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_one();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// Makes a file's creation or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose mode is `--fsync interval`, nothing recovered.
    fn open_interval(dir: &tempfile::TempDir, every: Duration, segment_size: u64) -> Arc<Disk> {
        Disk::open(dir.path(), Fsync::Interval(every), segment_size, None)
            .unwrap()
            .0
    }

    /// Waits (at most 10 s) until the store confirms up to `end`.
    async fn confirmed(disk: &Disk, end: u64, sync: bool) {
        tokio::time::timeout(Duration::from_secs(10), disk.wait_confirmed(end, sync))
            .await
            .expect("confirmed within 10 s");
    }

    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Records nobody waits for are gathered, not forgotten: the commit
    /// thread writes them on its own, from idleness and from a gathering.
    #[test]
    fn records_nobody_waits_for_are_written_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open_interval(&dir, Duration::from_secs(3600), 1 << 20);
        let name = Bytes::from_static(b"/queue/a");
        for round in 0..50u64 {
            let (_, end) = disk.append(&name, round, 0, b"payload", false, 0).unwrap();
            until("a lone record is written", || disk.written() >= end);
        }
        // Many, faster than one write each.
        let mut end = 0;
        for seq in 50..5_000u64 {
            end = disk.append(&name, seq, 0, b"payload", false, 0).unwrap().1;
        }
        until("a gathering is written", || disk.written() >= end);
        disk.close();
    }

    /// A confirm waits for a write, not for the gathering to end, and a
    /// record of a channel whose fsync is `always` is synced at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_record_waited_for_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open_interval(&dir, Duration::from_secs(3600), 1 << 20);
        let name = Bytes::from_static(b"/queue/a");
        for seq in 0..200u64 {
            let (_, end) = disk.append(&name, seq, 0, b"payload", false, 0).unwrap();
            confirmed(&disk, end, false).await;
            let (_, end) = disk.append(&name, seq, 0, b"payload", true, 0).unwrap();
            confirmed(&disk, end, true).await;
        }
        assert!(disk.stats.fsyncs.load(Relaxed) >= 200);
        disk.close();
    }

    /// What a waiting confirm writes on its own thread is still synced
    /// within the interval (the commit thread is told it is unsynced), and
    /// its records and the commit thread's reach the file in the order
    /// they were appended, across segments.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_a_confirm_writes_itself_are_synced_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open_interval(&dir, Duration::from_millis(20), 64 << 10);
        let name = Bytes::from_static(b"/queue/a");
        // The first opens the segment (the commit thread's work), the
        // second finds it open and is written by the confirm.
        for seq in 0..2 {
            let fsyncs = disk.stats.fsyncs.load(Relaxed);
            let (_, end) = disk.append(&name, seq, 0, b"payload", false, 0).unwrap();
            confirmed(&disk, end, false).await;
            let synced = disk.clone();
            tokio::task::spawn_blocking(move || {
                until("written records are synced within the interval", || {
                    synced.stats.fsyncs.load(Relaxed) > fsyncs
                })
            })
            .await
            .unwrap();
        }
        let mut seq = 2;
        for round in 0..300u64 {
            // Some left to the commit thread, then one waited for.
            for _ in 0..round % 7 {
                disk.append(&name, seq, 0, &[seq as u8; 100], false, 0)
                    .unwrap();
                seq += 1;
            }
            let (_, end) = disk
                .append(&name, seq, 0, &[seq as u8; 100], false, 0)
                .unwrap();
            seq += 1;
            confirmed(&disk, end, false).await;
        }
        disk.close();
        drop(disk);
        let (disk, recovered) = Disk::open(dir.path(), Fsync::Always, 64 << 10, None).unwrap();
        assert!(recovered.segments.len() > 2, "{:?}", recovered.segments);
        let got: Vec<u64> = recovered.channels[0].1.iter().map(|s| s.seq).collect();
        assert_eq!(got, (0..seq).collect::<Vec<_>>());
        assert_eq!(recovered.torn, 0);
        assert!(recovered.quarantined.is_empty());
        disk.close();
    }

    /// A failed fsync loses nothing written since the last good one: the
    /// disk may have dropped every page it could not write (the injected
    /// failure zeroes them all), and every write since is written again
    /// before the sync is tried again, not only the last one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_fsync_writes_again_everything_since_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open_interval(&dir, Duration::from_secs(3600), 1 << 20);
        let name = Bytes::from_static(b"/queue/a");
        // Written one at a time (confirmed when written), none synced.
        for seq in 0..20u64 {
            let (_, end) = disk
                .append(&name, seq, 0, &[seq as u8; 100], false, 0)
                .unwrap();
            confirmed(&disk, end, false).await;
        }
        disk.fail_syncs.store(2, Relaxed);
        let (_, end) = disk.append(&name, 20, 0, &[20; 100], true, 0).unwrap();
        confirmed(&disk, end, true).await;
        assert_eq!(disk.stats.errors.load(Relaxed), 2);
        disk.close();
        drop(disk);
        let (disk, recovered) = Disk::open(dir.path(), Fsync::Always, 1 << 20, None).unwrap();
        assert_eq!(recovered.torn, 0);
        assert!(
            recovered.quarantined.is_empty(),
            "{:?}",
            recovered.quarantined
        );
        let got: Vec<u64> = recovered.channels[0].1.iter().map(|s| s.seq).collect();
        assert_eq!(got, (0..=20).collect::<Vec<_>>());
        disk.close();
    }

    /// What a failed sync would have to write again is bounded: with no
    /// sync due for an hour, more than `UNSYNCED_MAX` written to one
    /// segment is synced before more goes to it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bytes_kept_for_a_failed_sync_are_bounded_by_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open_interval(&dir, Duration::from_secs(3600), 1 << 30);
        let name = Bytes::from_static(b"/queue/a");
        let payload = vec![7u8; 64 << 10];
        let mut end = 0;
        // 40 MiB, in writes of about 1 MiB, into one segment.
        for seq in 0..640u64 {
            end = disk.append(&name, seq, 0, &payload, false, 0).unwrap().1;
            if seq % 16 == 15 {
                confirmed(&disk, end, false).await;
            }
        }
        confirmed(&disk, end, false).await;
        assert_eq!(disk.stats.fsyncs.load(Relaxed), 1);
        disk.close();
    }
}
