//! Bench payloads carry a sequence number, the time the message was due by
//! the publisher's schedule and the time it was sent; subscribers turn them
//! into loss, duplicate, reorder and latency figures. Latency from the due
//! time counts every delay a late publisher passed on to the messages after
//! it (coordinated omission); latency from the send time does not.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;

/// In untimed runs, messages between two readings of the clock.
pub const CLOCK_EVERY: u64 = 16;

/// Sequence number, due time and send time (8 bytes each), big-endian.
pub const HEADER: usize = 24;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on the monotonic clock shared by every task of the bench (the
/// publisher and subscribers always live in this one process).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A message due and sent at `now_ns` (no schedule: sent as fast as the
/// broker takes it; the caller reads the clock, as often as it needs to).
pub fn encode(seq: u64, now_ns: u64, size: usize) -> Bytes {
    stamped(seq, now_ns, now_ns, size)
}

/// A message the schedule wanted sent at `due_ns`, sent now.
pub fn encode_due(seq: u64, due_ns: u64, size: usize) -> Bytes {
    stamped(seq, due_ns, now_ns(), size)
}

fn stamped(seq: u64, due_ns: u64, sent_ns: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u64(seq);
    b.put_u64(due_ns);
    b.put_u64(sent_ns);
    b.resize(size.max(HEADER), b'.');
    b.freeze()
}

/// Sequence number, due time, send time.
pub fn decode(payload: &[u8]) -> Option<(u64, u64, u64)> {
    if payload.len() < HEADER {
        return None;
    }
    let word = |i: usize| payload[i..i + 8].try_into().ok().map(u64::from_be_bytes);
    Some((word(0)?, word(8)?, word(16)?))
}

pub fn new_histogram() -> Histogram<u64> {
    // Microseconds, up to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// What one subscriber saw.
#[derive(Debug, Clone)]
pub struct Tracker {
    seen: Vec<u64>,
    /// Messages with a sequence number below this are warm-up: counted for
    /// loss, left out of latency and rates.
    warmup: u64,
    max_seq: Option<u64>,
    pub received: u64,
    pub measured: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    /// From the send time.
    pub latency_us: Histogram<u64>,
    /// From the due time: corrected for coordinated omission.
    pub intended_us: Histogram<u64>,
    pub last_receive_ns: u64,
}

impl Tracker {
    pub fn new(warmup: u64) -> Self {
        Self {
            seen: Vec::new(),
            warmup,
            max_seq: None,
            received: 0,
            measured: 0,
            unique: 0,
            duplicates: 0,
            reordered: 0,
            malformed: 0,
            latency_us: new_histogram(),
            intended_us: new_histogram(),
            last_receive_ns: 0,
        }
    }

    pub fn record(&mut self, payload: &[u8]) {
        self.record_at(payload, Some(now_ns()));
    }

    /// Records `payload` for loss, duplicates and order only, without its
    /// latency: a flood's throughput needs no clock per message (reading it
    /// cost a fifth of the bench's CPU). The time of the last message is
    /// read every [`CLOCK_EVERY`] messages.
    pub fn record_untimed(&mut self, payload: &[u8]) {
        let now = self.received.is_multiple_of(CLOCK_EVERY).then(now_ns);
        self.record_at(payload, now);
    }

    /// Records `payload` as received at `now` (ns on the bench's clock), or
    /// untimed.
    fn record_at(&mut self, payload: &[u8], now: Option<u64>) {
        if let Some(now) = now {
            self.last_receive_ns = now;
        }
        self.received += 1;
        let Some((seq, due, sent)) = decode(payload) else {
            self.malformed += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        if self.max_seq.is_some_and(|m| seq < m) {
            self.reordered += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        if seq >= self.warmup {
            self.measured += 1;
            let Some(now) = now else {
                return;
            };
            let us = now.saturating_sub(sent) / 1000;
            let _ = self.latency_us.record(us.max(1));
            let us = now.saturating_sub(due.min(sent)) / 1000;
            let _ = self.intended_us.record(us.max(1));
        }
    }

    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = encode(42, now_ns(), 64);
        assert_eq!(p.len(), 64);
        let (seq, due, sent) = decode(&p).unwrap();
        assert_eq!(seq, 42);
        assert!(due <= sent && sent <= now_ns());
        assert_eq!(
            encode(1, now_ns(), 4).len(),
            HEADER,
            "payload never shorter than its header"
        );
    }

    #[test]
    fn counts_gaps_duplicates_and_reorders() {
        let mut t = Tracker::new(0);
        for seq in [0, 1, 3, 2, 3, 5] {
            t.record(&encode(seq, now_ns(), HEADER));
        }
        assert_eq!(t.received, 6);
        assert_eq!(t.unique, 5);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!((0..7).filter(|&s| !t.has(s)).count(), 2); // 4 and 6
        assert!(t.has(5) && !t.has(4));
        t.record(b"short");
        assert_eq!(t.malformed, 1);
    }

    #[test]
    fn warmup_is_left_out_of_latency() {
        let mut t = Tracker::new(10);
        for seq in 0..20 {
            t.record(&encode(seq, now_ns(), HEADER));
        }
        assert_eq!(t.measured, 10);
        assert_eq!(t.latency_us.len(), 10);
    }
}

#[cfg(test)]
mod intended {
    use super::*;

    #[test]
    fn latency_from_the_due_time_counts_what_a_late_publisher_passed_on() {
        let mut t = Tracker::new(0);
        // Due at 1 ms, sent at 51 ms (a publisher held back 50 ms), received
        // at 52 ms.
        let mut p = BytesMut::new();
        for word in [0u64, 1_000_000, 51_000_000] {
            p.put_u64(word);
        }
        t.record_at(&p, Some(52_000_000));
        assert_eq!(t.latency_us.max(), 1000);
        assert_eq!(
            t.intended_us.max(),
            t.intended_us.highest_equivalent(51_000)
        );
    }
}
