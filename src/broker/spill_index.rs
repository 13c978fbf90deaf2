//! Where a durable channel keeps the places on disk of its messages past
//! the memory window, oldest first. The first [`MEM_ENTRIES`] are in memory;
//! the rest go to an unnamed file in the data directory, 32 bytes each, and
//! come back into memory as the front drains. Memory for a backlog on disk is
//! then bounded however long the backlog grows (an entry per message in
//! memory was 400 MB for ten million messages, outside `--max-memory`).
//! The file is scratch: recovery rebuilds the index from the log.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Entries kept in memory before the rest go to the file: 2 MiB.
pub const MEM_ENTRIES: usize = 65_536;

/// One message kept on disk only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spilled {
    pub seq: u64,
    /// The log position at its record's end: readable once written there.
    pub end: u64,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    /// The attempt its next delivery is.
    pub attempt: u32,
}

const ENTRY: usize = 32;

impl Spilled {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        for v in [self.segment, self.offset, self.len, self.attempt] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Self {
            seq: u64_at(0),
            end: u64_at(8),
            segment: u32_at(16),
            offset: u32_at(20),
            len: u32_at(24),
            attempt: u32_at(28),
        }
    }
}

/// Entries past the memory window, in their file.
struct Overflow {
    file: File,
    /// Entries written, and read back, so far.
    written: u64,
    read: u64,
    /// The newest entries, not written yet: the file is written by the
    /// [`TAIL_BYTES`], not by the entry (a system call per message spilled,
    /// and a million at a recovery, under the channel's lock).
    tail: Vec<u8>,
}

/// Entries gathered before they are written to the file: 2,048.
const TAIL_BYTES: usize = 64 << 10;

impl Overflow {
    fn entries(&self) -> usize {
        (self.written - self.read) as usize + self.tail.len() / ENTRY
    }
}

/// The index (see the module's documentation).
pub struct SpillIndex {
    mem: VecDeque<Spilled>,
    overflow: Option<Overflow>,
    mem_entries: usize,
    /// The file could not be made or written: said once, then kept in memory.
    file_failed: bool,
}

impl Default for SpillIndex {
    fn default() -> Self {
        Self::with_capacity(MEM_ENTRIES)
    }
}

impl SpillIndex {
    /// An index that keeps `mem_entries` in memory (tests use a few).
    pub fn with_capacity(mem_entries: usize) -> Self {
        Self {
            mem: VecDeque::new(),
            overflow: None,
            mem_entries: mem_entries.max(2),
            file_failed: false,
        }
    }

    pub fn len(&self) -> usize {
        self.mem.len() + self.overflow.as_ref().map_or(0, Overflow::entries)
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty() && self.overflow.is_none()
    }

    /// Entries held in its file, not in memory.
    #[cfg(test)]
    pub fn on_file(&self) -> usize {
        self.len() - self.mem.len()
    }

    pub fn front(&self) -> Option<&Spilled> {
        self.mem.front()
    }

    /// The oldest entries, those in memory (the file's are read in as the
    /// front drains, half the memory's entries at a time).
    pub fn iter(&self) -> impl Iterator<Item = &Spilled> {
        self.mem.iter()
    }

    /// Adds the newest entry; `dir`: where its file goes if memory is full.
    pub fn push_back(&mut self, s: Spilled, dir: Option<&Path>) {
        if self.overflow.is_none() && (self.mem.len() < self.mem_entries || self.file_failed) {
            self.mem.push_back(s);
            return;
        }
        if let Err(e) = self.write(s, dir) {
            if !self.file_failed {
                tracing::warn!(
                    "durable store: the index of a backlog on disk stays in memory: cannot \
                     write its file ({e})"
                );
            }
            self.file_failed = true;
            // In order: what the file holds comes first.
            self.unspill_all();
            self.mem.push_back(s);
        }
    }

    fn write(&mut self, s: Spilled, dir: Option<&Path>) -> std::io::Result<()> {
        if self.overflow.is_none() {
            let dir = dir.ok_or_else(|| std::io::Error::other("no data directory"))?;
            self.overflow = Some(Overflow {
                file: tempfile::tempfile_in(dir)?,
                written: 0,
                read: 0,
                tail: Vec::with_capacity(TAIL_BYTES),
            });
        }
        let Some(o) = self.overflow.as_mut() else {
            return Ok(());
        };
        s.encode(&mut o.tail);
        if o.tail.len() >= TAIL_BYTES {
            o.file.write_all_at(&o.tail, o.written * ENTRY as u64)?;
            o.written += (o.tail.len() / ENTRY) as u64;
            o.tail.clear();
        }
        Ok(())
    }

    /// Takes the oldest entry, reading more from the file once memory holds
    /// fewer than half its entries.
    pub fn pop_front(&mut self) -> Option<Spilled> {
        let s = self.mem.pop_front();
        if self.mem.len() < self.mem_entries / 2 {
            self.refill(self.mem_entries / 2);
        }
        s
    }

    /// Reads up to `n` entries of the file into memory; the file goes once
    /// it is read to its end. An entry that cannot be read is lost from the
    /// index (its message stays in the log, and comes back at the next
    /// start): said, never a panic.
    fn refill(&mut self, n: usize) {
        let Some(o) = self.overflow.as_mut() else {
            return;
        };
        if o.read == o.written {
            // The file is read to its end: what follows is in the tail.
            let take = (o.tail.len() / ENTRY).min(n);
            self.mem.extend(
                o.tail
                    .drain(..take * ENTRY)
                    .collect::<Vec<u8>>()
                    .chunks_exact(ENTRY)
                    .map(Spilled::decode),
            );
            if o.tail.is_empty() {
                self.overflow = None;
            }
            return;
        }
        let take = (o.written - o.read).min(n as u64) as usize;
        let mut buf = vec![0u8; take * ENTRY];
        match o.file.read_exact_at(&mut buf, o.read * ENTRY as u64) {
            Ok(()) => {
                self.mem
                    .extend(buf.chunks_exact(ENTRY).map(Spilled::decode));
                o.read += take as u64;
            }
            Err(e) => {
                tracing::error!(
                    "durable store: {} entries of a backlog's index cannot be read back ({e}); \
                     their messages stay on disk and come back at the next start",
                    o.written - o.read
                );
                o.read = o.written;
            }
        }
        if o.read == o.written && o.tail.is_empty() {
            self.overflow = None;
        }
    }

    /// Every entry back in memory (the file could not be written further).
    fn unspill_all(&mut self) {
        while self.overflow.is_some() {
            self.refill(usize::MAX);
        }
    }

    /// Every entry, oldest first, the file's read back; the index is empty after.
    pub fn drain_all(&mut self) -> Vec<Spilled> {
        self.unspill_all();
        self.mem.drain(..).collect()
    }

    pub fn clear(&mut self) {
        self.mem.clear();
        self.overflow = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Spilled {
        Spilled {
            seq,
            end: seq * 100,
            segment: (seq % 7) as u32,
            offset: seq as u32 * 3,
            len: 40 + (seq % 5) as u32,
            attempt: 1 + (seq % 3) as u32,
        }
    }

    #[test]
    fn entries_past_memory_go_to_the_file_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = SpillIndex::with_capacity(8);
        // Past a few tails' worth, so that the file is written more than once.
        const N: u64 = 10_000;
        for seq in 1..=N {
            ix.push_back(entry(seq), Some(dir.path()));
            assert!(ix.mem.len() <= 8, "memory holds at most its entries");
        }
        assert_eq!(ix.len(), N as usize);
        assert_eq!(ix.on_file(), N as usize - 8);
        let o = ix.overflow.as_ref().unwrap();
        assert!(
            o.written > 0 && o.tail.len() < TAIL_BYTES,
            "written by the tail"
        );
        // Taken in order, with more pushed while it drains.
        let mut next = N + 1;
        let mut want = 1;
        while let Some(s) = ix.pop_front() {
            assert_eq!(s, entry(want), "in order");
            want += 1;
            assert!(ix.mem.len() <= 8 + 4);
            if next <= N + 5_000 {
                ix.push_back(entry(next), Some(dir.path()));
                next += 1;
            }
        }
        assert_eq!(want, N + 5_001, "every entry once");
        assert!(ix.is_empty() && ix.overflow.is_none(), "the file is gone");
    }

    #[test]
    fn without_a_place_for_the_file_it_stays_in_memory_in_order() {
        let mut ix = SpillIndex::with_capacity(4);
        for seq in 1..=10 {
            ix.push_back(entry(seq), None);
        }
        assert_eq!(ix.len(), 10);
        let all = ix.drain_all();
        assert_eq!(all, (1..=10).map(entry).collect::<Vec<_>>());
    }

    #[test]
    fn drain_all_reads_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = SpillIndex::with_capacity(4);
        for seq in 1..=5_000 {
            ix.push_back(entry(seq), Some(dir.path()));
        }
        assert_eq!(ix.drain_all(), (1..=5_000).map(entry).collect::<Vec<_>>());
        assert!(ix.is_empty());
    }
}
