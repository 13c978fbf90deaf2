//! The broker-wide memory budget: payload bytes held in every send queue and
//! backlog together, and what holding them costs besides (their places, each
//! channel's state). Reaching it is handled like a full queue: `/topic`
//! subscribers miss the message (counted), `/queue` publishers wait.
//!
//! Fair shares: `/queue` backlogs (messages parked for workers that are not
//! there or not ready) may hold at most half of the budget between them, so
//! that no flood of worker-less queues can take the room live subscribers'
//! send queues need; each backlog is also bounded on its own (`--backlog`,
//! `--backlog-bytes`), and each send queue by `--send-queue-bytes`.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::sync::Notify;

#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
    /// Of `used`, the bytes parked in `/queue` backlogs, and their share.
    parked: AtomicUsize,
    max_parked: usize,
    /// Memory that is not payload but that clients cause: each channel's own
    /// state, and the places send queues and backlogs have room for (48
    /// bytes each, where a message's payload may be one). It leaves that
    /// much less room for payloads.
    overhead: AtomicUsize,
    /// `/queue` publishers waiting for bytes to be given back. Counted so that
    /// giving back stays a single atomic operation while nobody waits.
    waiting: AtomicUsize,
    freed: Notify,
}

/// Takes a waiter off the count however its wait ends (it may be cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
            parked: AtomicUsize::new(0),
            max_parked: (max / 2).max(1),
            overhead: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    fn fits(&self, len: usize) -> bool {
        let used = self.used.load(SeqCst);
        used == 0 || used + self.overhead.load(SeqCst) + len <= self.max
    }

    pub fn fits_parked(&self, len: usize) -> bool {
        let parked = self.parked.load(SeqCst);
        self.fits(len) && (parked == 0 || parked + len <= self.max_parked)
    }

    /// Waits until `len` more bytes would fit in a backlog.
    pub async fn room_for_parking(&self, len: usize) {
        self.wait_until(|b| b.fits_parked(len)).await
    }

    /// Takes `len` bytes for a backlog unless that would pass the budget or the
    /// backlogs' share of it (one message always fits an empty share).
    pub fn try_park(&self, len: usize) -> bool {
        let before = self.parked.fetch_add(len, SeqCst);
        if before > 0 && before + len > self.max_parked {
            self.unpark(len);
            return false;
        }
        if !self.try_take(len) {
            self.unpark(len);
            return false;
        }
        true
    }

    /// Parks bytes that must not be dropped (a departing worker's unsent
    /// messages, back in the backlog), past the share if need be.
    pub fn force_park(&self, len: usize) {
        self.parked.fetch_add(len, SeqCst);
        self.force_take(len);
    }

    /// Bytes leave a backlog for a worker's send queue: still held, no longer
    /// parked.
    pub fn unpark(&self, len: usize) {
        if len == 0 {
            return;
        }
        self.parked.fetch_sub(len, SeqCst);
        self.wake();
    }

    /// Bytes leave a backlog and the broker (discarded, or handed to JetStream).
    pub fn give_back_parked(&self, len: usize) {
        self.parked.fetch_sub(len, SeqCst);
        self.give_back(len);
    }

    /// Payload bytes parked in `/queue` backlogs.
    pub fn parked(&self) -> usize {
        self.parked.load(SeqCst)
    }

    /// Waits until `len` more bytes would fit.
    pub async fn room_for(&self, len: usize) {
        self.wait_until(|b| b.fits(len)).await
    }

    /// Waits until `fits` holds, woken by every give-back.
    async fn wait_until(&self, fits: impl Fn(&Self) -> bool) {
        let _waiting = Waiting(&self.waiting);
        self.waiting.fetch_add(1, SeqCst);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // Checked after registering, so bytes given back in between wake us.
            if fits(self) {
                return;
            }
            freed.await;
        }
    }

    /// Wakes the waiters, if any: giving back stays one atomic operation while
    /// nobody waits.
    fn wake(&self) {
        if self.waiting.load(SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Takes `len` bytes unless that would pass the budget. A message is always
    /// let through when nothing at all is held, so one message larger than the
    /// budget cannot wedge the broker.
    pub fn try_take(&self, len: usize) -> bool {
        let before = self.used.fetch_add(len, SeqCst);
        if before > 0 && before + self.overhead.load(SeqCst) + len > self.max {
            self.give_back(len);
            return false;
        }
        true
    }

    /// Takes `len` bytes only if they fit under the budget whole: for a
    /// batch of messages, which must not pass as the one message
    /// [`try_take`](Self::try_take) lets through when nothing is held (a
    /// batch refused here is offered one message at a time).
    pub fn try_take_within(&self, len: usize) -> bool {
        let before = self.used.fetch_add(len, SeqCst);
        if before + self.overhead.load(SeqCst) + len > self.max {
            self.give_back(len);
            return false;
        }
        true
    }

    /// Counts `len` bytes of non-payload memory (a channel's state).
    pub fn add_overhead(&self, len: usize) {
        self.overhead.fetch_add(len, SeqCst);
    }

    pub fn remove_overhead(&self, len: usize) {
        self.overhead.fetch_sub(len, SeqCst);
        self.wake();
    }

    /// Moves a holder's count of non-payload bytes from `*counted` to
    /// `now` (a queue whose buffer grew or was given back).
    pub fn recount_overhead(&self, counted: &mut usize, now: usize) {
        if now > *counted {
            self.add_overhead(now - *counted);
        } else if now < *counted {
            self.remove_overhead(*counted - now);
        }
        *counted = now;
    }

    /// Non-payload bytes counted (channels' own state, queues' places).
    pub fn overhead(&self) -> usize {
        self.overhead.load(SeqCst)
    }

    /// Takes `len` bytes even past the budget: for messages that must not be
    /// dropped (a departing `/queue` worker's unsent messages).
    pub fn force_take(&self, len: usize) {
        self.used.fetch_add(len, SeqCst);
    }

    pub fn give_back(&self, len: usize) {
        self.used.fetch_sub(len, SeqCst);
        self.wake();
    }

    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_to_its_bound_and_lets_one_large_message_through() {
        let b = Budget::new(10);
        assert!(b.try_take(20), "alone, even an oversized message passes");
        assert!(!b.try_take(1));
        b.give_back(20);
        assert!(b.try_take(6));
        assert!(!b.try_take(6));
        assert!(b.try_take(4));
        assert_eq!(b.used(), 10);
    }

    #[test]
    fn a_batch_is_taken_only_within_the_bound_even_when_nothing_is_held() {
        let b = Budget::new(10);
        assert!(!b.try_take_within(20), "a batch is not one message");
        assert_eq!(b.used(), 0);
        assert!(b.try_take_within(10));
        assert!(!b.try_take_within(1));
        assert_eq!(b.used(), 10);
    }

    #[test]
    fn backlogs_hold_at_most_half_and_leave_the_rest_to_send_queues() {
        let b = Budget::new(100);
        assert!(b.try_park(30));
        assert!(b.try_park(20));
        assert!(!b.try_park(1), "the backlogs' half is full");
        assert!(b.try_take(50), "send queues still have their half");
        b.unpark(20);
        assert_eq!(
            (b.used(), b.parked()),
            (100, 30),
            "moved to a worker: still held"
        );
        b.give_back(70);
        assert!(b.try_park(20));
        b.give_back_parked(50);
        assert_eq!((b.used(), b.parked()), (0, 0));
    }

    #[test]
    fn channels_state_leaves_less_room_for_payloads() {
        let b = Budget::new(100);
        b.add_overhead(60);
        assert!(b.try_take(30));
        assert!(!b.try_take(20), "30 payload + 60 channels: 10 left");
        b.remove_overhead(60);
        assert!(b.try_take(20));
        assert_eq!((b.used(), b.overhead()), (50, 0));
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_bytes_are_given_back() {
        let b = std::sync::Arc::new(Budget::new(10));
        assert!(b.try_take(10));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.room_for(5).await }
        });
        while b.waiting.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        b.give_back(5);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(b.waiting.load(SeqCst), 0);
    }
}
