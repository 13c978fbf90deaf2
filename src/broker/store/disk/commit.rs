//! The store's one writing thread: takes every record gathered since its
//! last write, writes them, syncs as the store's mode says, then moves the
//! confirmed position on. Publishers append while it writes and syncs, so
//! the next write carries all of theirs: the more publishers wait on the
//! disk, the more records each fsync makes durable.
//!
//! A write that fails (a full disk, an I/O error) is undone to the file's
//! length before it and tried again later with the same bytes: nothing is
//! confirmed meanwhile, and publishers wait once the gathered records reach
//! the bound. A sync that fails is tried again after everything written to
//! the segment since its last good sync is written again: after a failed
//! fsync the kernel may have dropped the pages it could not write (Linux
//! marks them clean), so a second fsync alone would prove nothing. Those
//! bytes are kept until the sync that covers them, at most
//! [`UNSYNCED_MAX`]: past it the segment is synced before more is written.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::recover::segment_path;
use super::{lock, record, sync_dir, Disk, Fsync, Sleep, GATHER, GATHER_BYTES, MAX_PENDING};

/// Written buffers kept for the records that come next.
const SPARE_BUFFERS: usize = 2;

/// How long a failing write waits before it is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// Bytes written to a segment since its last sync kept to write again,
/// at most: a bound on the copy whatever the mode and the segment size.
const UNSYNCED_MAX: usize = 32 << 20;

pub(super) struct Open {
    seg: u64,
    file: File,
    len: u64,
    /// Written since its last sync.
    dirty: bool,
    /// Its length at its last good sync (or when it was opened).
    synced_len: u64,
    /// What was written after `synced_len`, to write again should a sync
    /// fail (see the module's documentation).
    unsynced: Vec<u8>,
    /// A sync failed: the file past `synced_len` is to be written again
    /// from `unsynced` before anything else goes to it.
    torn: bool,
}

impl Open {
    /// Writing `more` bytes must sync the segment first: a sync failed and
    /// what it covered is to be written again, or the copy kept for that
    /// would pass [`UNSYNCED_MAX`].
    fn syncs_before(&self, more: usize) -> bool {
        self.torn || self.unsynced.len() + more > UNSYNCED_MAX
    }

    /// Syncs what was written to the segment since its last sync; false
    /// when there was nothing to sync.
    fn sync(&mut self, store: &Disk) -> std::io::Result<bool> {
        if self.torn {
            self.rewrite()?;
        }
        if !self.dirty {
            return Ok(false);
        }
        let t = Instant::now();
        if let Err(e) = sync_data(store, self) {
            self.torn = true;
            return Err(e);
        }
        store.stats.fsyncs.fetch_add(1, Relaxed);
        store
            .stats
            .fsync_micros
            .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
        self.dirty = false;
        self.synced_len = self.len;
        // Kept for the next round when it is of the size rounds have.
        if self.unsynced.capacity() > 4 * self.unsynced.len().max(1 << 20) {
            self.unsynced = Vec::new();
        }
        self.unsynced.clear();
        Ok(true)
    }

    /// Writes again what was written since the last good sync, in place
    /// of what the file now holds there.
    fn rewrite(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.synced_len)?;
        self.len = self.synced_len;
        self.file.seek(SeekFrom::Start(self.synced_len))?;
        self.file.write_all(&self.unsynced)?;
        self.len += self.unsynced.len() as u64;
        self.dirty = true;
        self.torn = false;
        Ok(())
    }
}

/// `fsync` (data only). In tests a store can be told to fail some, as a
/// failing disk would: the pages not written are lost and the call says so.
fn sync_data(store: &Disk, o: &Open) -> std::io::Result<()> {
    #[cfg(test)]
    if store
        .fail_syncs
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        use std::os::unix::fs::FileExt;
        let lost = vec![0; (o.len - o.synced_len) as usize];
        o.file.write_all_at(&lost, o.synced_len)?;
        return Err(std::io::Error::other("fsync failed (injected)"));
    }
    let _ = store;
    o.file.sync_data()
}

pub(super) fn run(store: &Disk) {
    let mut last_sync = Instant::now();
    let mut synced_records = 0u64;
    let mut failures = 0u64;
    let mut sync_failures = 0u64;
    loop {
        {
            let mut st = lock(&store.state);
            let mut gathered = false;
            loop {
                st.sleep = Sleep::Busy;
                if !st.reclaim.is_empty()
                    || st.stop
                    || st.sync_wanted
                    || st.write_wanted
                    || st.pending >= GATHER_BYTES
                {
                    break;
                }
                let wait = if !st.chunks.is_empty() {
                    // Records nobody waits for yet: more may join them.
                    if gathered {
                        break;
                    }
                    gathered = true;
                    st.sleep = Sleep::Gathering;
                    Some(GATHER)
                } else {
                    st.sleep = Sleep::Idle;
                    match store.mode {
                        Fsync::Interval(every) if st.unsynced => {
                            let left = every.saturating_sub(last_sync.elapsed());
                            if left.is_zero() {
                                break;
                            }
                            Some(left)
                        }
                        _ => None,
                    }
                };
                st = match wait {
                    Some(left) => {
                        store
                            .wake
                            .wait_timeout(st, left)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0
                    }
                    None => store
                        .wake
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                };
            }
            st.sleep = Sleep::Busy;
        }
        // Taken under the writer's lock, so that what a waiting confirm
        // writes itself (`Disk::write_now`) and what this thread writes
        // reach the file in the order they were gathered.
        let mut writer = lock(&store.writer);
        let open = &mut *writer;
        let (chunks, upto, records, reclaim, stop, wanted) = {
            let mut st = lock(&store.state);
            st.write_wanted = false;
            st.unsynced |= !st.chunks.is_empty();
            (
                std::mem::take(&mut st.chunks),
                st.appended,
                st.records,
                std::mem::take(&mut st.reclaim),
                st.stop,
                std::mem::take(&mut st.sync_wanted),
            )
        };
        let taken: usize = chunks.iter().map(|(_, b)| b.len()).sum();
        // Where each chunk ends in the log: what is written is readable
        // while a later chunk waits for room (a backlog read back from disk
        // may be what makes that room, once its workers settle it).
        let mut at = start_of(&chunks, upto);
        for (i, (seg, bytes)) in chunks.iter().enumerate() {
            if i > 0 {
                store.written.fetch_max(at, Relaxed);
                store.wrote.notify_waiters();
            }
            at += bytes.len() as u64;
            // Tried until it goes: these records are promised to nobody
            // yet, and everything after them waits behind them.
            loop {
                match write(store, open, *seg, bytes) {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        store.stats.errors.fetch_add(1, Relaxed);
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::error!(
                                "durable store {}: cannot write segment {seg}: {e}; publishers \
                                 to durable channels wait until it can ({failures} failure(s))",
                                store.dir.display()
                            );
                        }
                        // A full disk: segments whose messages are all done
                        // make room (their settlements wait in memory; a
                        // crash meanwhile can only bring back nothing of them).
                        let freed = std::mem::take(&mut lock(&store.state).reclaim);
                        delete(store, open, freed);
                        std::thread::sleep(RETRY);
                    }
                }
            }
        }
        if !chunks.is_empty() {
            // Readable now (a backlog read back from disk waits for this).
            store.written.fetch_max(upto, Relaxed);
            store.wrote.notify_waiters();
        }
        if failures > 0 && !chunks.is_empty() {
            tracing::info!(
                "durable store {}: writing again after {failures} failure(s)",
                store.dir.display()
            );
            failures = 0;
        }
        // Synced when a record gathered waits for it (a channel whose fsync
        // is `always`), and as the store's mode says.
        let sync_due = wanted
            || match store.mode {
                Fsync::Always => stop,
                Fsync::Interval(every) => stop || last_sync.elapsed() >= every,
                Fsync::Never => stop,
            };
        if sync_due {
            match open.as_mut().map_or(Ok(false), |o| o.sync(store)) {
                Ok(synced) => {
                    if synced {
                        store
                            .stats
                            .synced_records
                            .fetch_add(records - synced_records, Relaxed);
                        synced_records = records;
                    }
                    if sync_failures > 0 {
                        tracing::info!(
                            "durable store {}: syncing again after {sync_failures} failure(s)",
                            store.dir.display()
                        );
                        sync_failures = 0;
                    }
                    last_sync = Instant::now();
                    lock(&store.state).unsynced = false;
                    store.synced.fetch_max(upto, Relaxed);
                }
                Err(e) => {
                    // Written again before the next try: see the module's
                    // documentation. Nothing more is confirmed meanwhile.
                    sync_failures += 1;
                    store.stats.errors.fetch_add(1, Relaxed);
                    if sync_failures == 1 || sync_failures.is_power_of_two() {
                        tracing::error!(
                            "durable store {}: fsync of segment {} failed: {e}; writing it \
                             again ({sync_failures} failure(s))",
                            store.dir.display(),
                            open.as_ref().map_or(0, |o| o.seg)
                        );
                    }
                    lock(&store.state).sync_wanted |= wanted;
                    std::thread::sleep(RETRY);
                }
            }
        }
        if sync_due {
            store.advanced.notify_waiters();
        }
        if !chunks.is_empty() {
            written_out(store, chunks, taken);
        }
        delete(store, open, reclaim);
        if stop && lock(&store.state).chunks.is_empty() {
            if let Some(o) = open.as_mut() {
                let _ = o.sync(store);
            }
            return;
        }
    }
}

/// Bytes gathered past which a waiting confirm leaves the write to the
/// commit thread rather than writing them itself on its own thread.
const WRITE_NOW_BYTES: usize = 4 << 20;

/// Writes what is gathered on the caller's thread, for a confirm that
/// waits for a write (not a sync): the commit thread's wake and the wake
/// back were most of a confirmed `--fsync interval` publish's round trip,
/// which a publisher's window of unconfirmed publishes is bounded by. Only
/// when it is cheap: the writer is free (not syncing), nothing gathered
/// asks for a sync, and every record goes to the segment already open (a
/// switch syncs the segment before). False: left to the commit thread.
pub(super) fn write_now(store: &Disk) -> bool {
    let Ok(mut writer) = store.writer.try_lock() else {
        return false;
    };
    let open = &mut *writer;
    let (chunks, upto) = {
        let mut st = lock(&store.state);
        let seg = open.as_ref().map(|o| o.seg);
        // (Nor when the write would sync first: a sync is the commit
        // thread's.)
        let syncs = open.as_ref().is_some_and(|o| o.syncs_before(st.pending));
        if st.chunks.is_empty()
            || st.sync_wanted
            || st.stop
            || st.pending > WRITE_NOW_BYTES
            || syncs
            || st.chunks.iter().any(|(s, _)| Some(*s) != seg)
        {
            return false;
        }
        st.unsynced = true;
        (std::mem::take(&mut st.chunks), st.appended)
    };
    let mut at = start_of(&chunks, upto);
    let mut chunks = chunks.into_iter();
    let mut done = Vec::new();
    let mut written = 0;
    while let Some((seg, bytes)) = chunks.next() {
        if write(store, open, seg, &bytes).is_err() {
            // The commit thread tries again, and says why.
            store.written.fetch_max(at, Relaxed);
            written_out(store, done, written);
            let mut st = lock(&store.state);
            let rest: Vec<_> = std::iter::once((seg, bytes)).chain(chunks).collect();
            st.chunks.splice(0..0, rest);
            st.write_wanted = true;
            store.nudge(&mut st, true);
            return false;
        }
        written += bytes.len();
        at += bytes.len() as u64;
        done.push((seg, bytes));
    }
    store.written.fetch_max(upto, Relaxed);
    written_out(store, done, written);
    drop(writer);
    store.wrote.notify_waiters();
    true
}

/// Where the first of `chunks` starts in the log, the last ending at `upto`.
fn start_of(chunks: &[(u64, Vec<u8>)], upto: u64) -> u64 {
    upto - chunks.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
}

/// What a write took is no longer pending: publishers held back for room
/// go on, and the buffers are given back for the next records (a fresh
/// buffer grown to a gathering's size was a realloc, and an mremap, per
/// write).
fn written_out(store: &Disk, chunks: Vec<(u64, Vec<u8>)>, bytes: usize) {
    store.stats.written_bytes.fetch_add(bytes as u64, Relaxed);
    let mut st = lock(&store.state);
    st.pending = st.pending.saturating_sub(bytes);
    if st.pending <= MAX_PENDING / 2 && store.congested.swap(false, Relaxed) {
        store.room.notify_waiters();
    }
    for (_, mut buf) in chunks {
        if st.spare.len() < SPARE_BUFFERS && buf.capacity() <= 2 * GATHER_BYTES {
            buf.clear();
            st.spare.push(buf);
        }
    }
}

/// Deletes settled segments (closing the open one if it is among them).
fn delete(store: &Disk, open: &mut Option<Open>, segments: Vec<u64>) {
    if !segments.is_empty() {
        store.forget_reading();
    }
    for seg in segments {
        if open.as_ref().is_some_and(|o| o.seg == seg) {
            *open = None;
        }
        store.gone_below.fetch_max(seg + 1, Relaxed);
        match std::fs::remove_file(segment_path(&store.dir, seg)) {
            Ok(()) => {
                store.stats.segments_deleted.fetch_add(1, Relaxed);
                // Durable before the next (newer) one goes: a segment that a
                // crash brings back must find the segments that settle its
                // messages still there, or they would come back.
                if store.mode != Fsync::Never {
                    if let Err(e) = sync_dir(&store.dir) {
                        tracing::warn!(
                            "durable store {}: cannot sync the directory: {e}",
                            store.dir.display()
                        );
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "durable store {}: cannot delete settled segment {seg}: {e}",
                store.dir.display()
            ),
        }
    }
}

/// Writes `bytes` at the end of segment `seg`, opening (making) it first
/// when it is not the one open; on error the file is cut back to where it
/// was.
fn write(store: &Disk, open: &mut Option<Open>, seg: u64, bytes: &[u8]) -> std::io::Result<()> {
    if seg < store.gone_below.load(Relaxed) {
        // Settled whole, and deleted, before these records of it were
        // written (a disk that was full held them back): nothing in them
        // is wanted.
        return Ok(());
    }
    if let Some(o) = open.as_mut().filter(|o| o.seg != seg) {
        // The segment before is done: on disk before anything after it
        // can be confirmed (whatever the mode: a channel whose fsync is
        // `always` may have records in it; once per segment).
        o.sync(store)?;
    }
    if open.as_ref().is_none_or(|o| o.seg != seg) {
        *open = None;
        // Opened again after a failure: what it holds is kept.
        let path = segment_path(&store.dir, seg);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let mut len = file.metadata()?.len();
        if len < record::MAGIC.len() as u64 {
            file.set_len(0)?;
            file.write_all(record::MAGIC)?;
            len = record::MAGIC.len() as u64;
            if store.mode != Fsync::Never {
                file.sync_data()?;
                sync_dir(&store.dir)?;
            }
        }
        file.seek(SeekFrom::Start(len))?;
        *open = Some(Open {
            seg,
            file,
            len,
            dirty: false,
            synced_len: len,
            unsynced: Vec::new(),
            torn: false,
        });
    }
    let Some(o) = open.as_mut() else {
        return Err(std::io::Error::other("no segment open"));
    };
    if o.syncs_before(bytes.len()) {
        o.sync(store)?;
    }
    match o.file.write_all(bytes) {
        Ok(()) => {
            o.len += bytes.len() as u64;
            o.dirty = true;
            o.unsynced.extend_from_slice(bytes);
            Ok(())
        }
        Err(e) => {
            let _ = o.file.set_len(o.len);
            let _ = o.file.seek(SeekFrom::Start(o.len));
            Err(e)
        }
    }
}
