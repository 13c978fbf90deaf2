//! Log lines for events that can come by the million (a slow consumer's
//! losses, a NATS connection failing): at most one a second, each saying how
//! many events it stands for.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

const EVERY_MS: u64 = 1000;

#[derive(Debug, Default)]
pub struct LogEvery {
    /// Milliseconds after `base` of the last line, plus one (0: never).
    last_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl LogEvery {
    /// For a `static`: a process-wide limit on one kind of line.
    pub const fn new() -> Self {
        Self {
            last_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// [`due`](Self::due) measured from the process's first use of it.
    pub fn due_now(&self) -> Option<u64> {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        self.due(*BASE.get_or_init(Instant::now))
    }

    /// Records one event; returns how many to report when a line is due.
    pub fn due(&self, base: Instant) -> Option<u64> {
        self.unlogged.fetch_add(1, Relaxed);
        let now = base.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        ((last == 0 || now >= last + EVERY_MS)
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok())
        .then(|| self.unlogged.swap(0, Relaxed))
    }
}

impl LogEvery {
    /// Events held back since the last line, when a line is due although
    /// no new event came (a sweeper's look): the last partial second of a
    /// burst is then said a second later, not when its source goes.
    pub fn due_idle(&self, base: Instant) -> Option<u64> {
        if self.unlogged.load(Relaxed) == 0 {
            return None;
        }
        let now = base.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        (now >= last + EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok())
        .then(|| self.unlogged.swap(0, Relaxed))
        .filter(|&n| n > 0)
    }

    /// The events not reported yet, now reported by the caller.
    pub fn take(&self) -> u64 {
        self.unlogged.swap(0, Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_says_how_many_events_it_stands_for() {
        let every = LogEvery::default();
        let base = Instant::now();
        assert_eq!(every.due(base), Some(1), "the first event is logged");
        assert_eq!(every.due(base), None);
        assert_eq!(every.due(base), None);
        // A second later the next line covers the two held back and itself.
        let earlier = base - Duration::from_millis(1100);
        assert_eq!(every.due(earlier), Some(3));
    }

    #[test]
    fn events_held_back_are_said_a_second_later_without_a_new_one() {
        let every = LogEvery::default();
        let base = Instant::now();
        assert_eq!(every.due(base), Some(1));
        assert_eq!(every.due(base), None);
        assert_eq!(every.due_idle(base), None, "not a second yet");
        let earlier = base - Duration::from_millis(1100);
        assert_eq!(every.due_idle(earlier), Some(1));
        assert_eq!(
            every.due_idle(earlier - Duration::from_secs(2)),
            None,
            "nothing left"
        );
    }
}
