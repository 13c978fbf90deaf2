//! The store's one writing thread: takes every record gathered since its
//! last write, writes them, syncs as the store's mode says, then moves the
//! confirmed position on. Publishers append while it writes and syncs, so
//! the next write carries all of theirs: the more publishers wait on the
//! disk, the more records each fsync makes durable.
//!
//! A write or sync that fails (a full disk, an I/O error) is undone to the
//! file's length before it and tried again later with the same bytes:
//! nothing is confirmed meanwhile, and publishers wait once the gathered
//! records reach the bound. (After a failed fsync the kernel may have
//! dropped the pages it could not write; writing them again, rather than
//! syncing again, is what makes the retry mean something.)

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

pub(super) struct Open {
    seg: u64,
    file: File,
    len: u64,
    /// Written since its last sync.
    dirty: bool,
}

pub(super) fn run(store: &Disk) {
    let mut last_sync = Instant::now();
    let mut synced_records = 0u64;
    let mut failures = 0u64;
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
        for (seg, bytes) in &chunks {
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
            if let Some(o) = open.as_mut().filter(|o| o.dirty) {
                let t = Instant::now();
                match o.file.sync_data() {
                    Ok(()) => {
                        o.dirty = false;
                        store.stats.fsyncs.fetch_add(1, Relaxed);
                        store
                            .stats
                            .fsync_micros
                            .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
                        store
                            .stats
                            .synced_records
                            .fetch_add(records - synced_records, Relaxed);
                        synced_records = records;
                    }
                    Err(e) => {
                        // Written again: see the module's documentation.
                        // Only the last chunk is in this file unsynced (a
                        // switch of segment synced the one before).
                        store.stats.errors.fetch_add(1, Relaxed);
                        tracing::error!(
                            "durable store {}: fsync of segment {} failed: {e}; writing again",
                            store.dir.display(),
                            o.seg
                        );
                        let mut chunks = chunks;
                        if let (Some(last), Some(o)) = (chunks.pop(), open.take()) {
                            let _ = o.file.set_len(o.len - last.1.len() as u64);
                            let mut st = lock(&store.state);
                            st.chunks.insert(0, last);
                            st.sync_wanted |= wanted;
                        }
                        std::thread::sleep(RETRY);
                        continue;
                    }
                }
            }
            last_sync = Instant::now();
            lock(&store.state).unsynced = false;
            store.synced.fetch_max(upto, Relaxed);
        }
        if sync_due {
            store.advanced.notify_waiters();
        }
        if !chunks.is_empty() {
            written_out(store, chunks, taken);
        }
        delete(store, open, reclaim);
        if stop && lock(&store.state).chunks.is_empty() {
            if let Some(o) = open.as_mut().filter(|o| o.dirty) {
                let _ = o.file.sync_data();
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
        if st.chunks.is_empty()
            || st.sync_wanted
            || st.stop
            || st.pending > WRITE_NOW_BYTES
            || st.chunks.iter().any(|(s, _)| Some(*s) != seg)
        {
            return false;
        }
        st.unsynced = true;
        (std::mem::take(&mut st.chunks), st.appended)
    };
    let mut chunks = chunks.into_iter();
    let mut done = Vec::new();
    let mut written = 0;
    while let Some((seg, bytes)) = chunks.next() {
        if write(store, open, seg, &bytes).is_err() {
            // The commit thread tries again, and says why.
            written_out(store, done, written);
            let mut st = lock(&store.state);
            let rest: Vec<_> = std::iter::once((seg, bytes)).chain(chunks).collect();
            st.chunks.splice(0..0, rest);
            st.write_wanted = true;
            store.nudge(&mut st, true);
            return false;
        }
        written += bytes.len();
        done.push((seg, bytes));
    }
    store.written.fetch_max(upto, Relaxed);
    written_out(store, done, written);
    drop(writer);
    store.wrote.notify_waiters();
    true
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
    if let Some(o) = open.as_mut().filter(|o| o.seg != seg && o.dirty) {
        // The segment before is done: on disk before anything after it
        // can be confirmed (whatever the mode: a channel whose fsync is
        // `always` may have records in it; once per segment).
        o.file.sync_data()?;
        store.stats.fsyncs.fetch_add(1, Relaxed);
        o.dirty = false;
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
        });
    }
    let Some(o) = open.as_mut() else {
        return Err(std::io::Error::other("no segment open"));
    };
    match o.file.write_all(bytes) {
        Ok(()) => {
            o.len += bytes.len() as u64;
            o.dirty = true;
            Ok(())
        }
        Err(e) => {
            let _ = o.file.set_len(o.len);
            let _ = o.file.seek(SeekFrom::Start(o.len));
            Err(e)
        }
    }
}
