//! A connection's send queue: bounded, filled by routing (any number of
//! senders through one [`Sender`]), emptied by the connection's one writer a
//! batch at a time.
//!
//! Not tokio's `mpsc`: that one pays several atomic read-modify-writes per
//! message on each side (a semaphore permit, a slot in a block list, the
//! receiver's waker) and allocates its first block of slots up front. Here a
//! send is one uncontended lock, a take is one lock for the whole batch, the
//! writer is woken only when it sleeps, and an idle queue holds no buffer.
//!
//! The places a queue holds are memory the broker's budget counts (as it
//! counts a channel's state): a one-byte message takes a 48-byte place, and
//! subscribers that stop reading would otherwise hold far more than the
//! payload bytes the budget saw (two stalled subscribers sent 1,200,000
//! one-byte messages: +71 MiB with a 4 MiB budget).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::budget::Budget;
use super::lock;

/// Places a queue takes at its first message after being idle.
const FIRST: usize = 16;

/// Why [`Sender::try_send`] gave a message back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The writer is gone.
    Closed(T),
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Mirror of the queue's length, read without the lock.
    len: AtomicUsize,
    capacity: usize,
    closed: AtomicBool,
    /// The writer sleeps here when the queue is empty.
    ready: Notify,
    /// Where the places the queue holds are counted, if anywhere.
    places: Option<Arc<Budget>>,
}

struct State<T> {
    items: VecDeque<T>,
    /// The writer found the queue empty and sleeps (or is about to).
    waiting: bool,
    /// The sending end is gone: nothing more will come.
    senders_gone: bool,
    /// Bytes of places counted in [`Shared::places`]: what `items` has
    /// room for, held or not.
    counted: usize,
}

/// A queue holding at most `capacity` messages (at least one).
#[cfg(test)]
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    with_places(capacity, None)
}

/// A queue holding at most `capacity` messages, the places it holds counted
/// in `budget`.
pub fn counted<T>(capacity: usize, budget: Arc<Budget>) -> (Sender<T>, Receiver<T>) {
    with_places(capacity, Some(budget))
}

fn with_places<T>(capacity: usize, places: Option<Arc<Budget>>) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waiting: false,
            senders_gone: false,
            counted: 0,
        }),
        len: AtomicUsize::new(0),
        capacity: capacity.max(1),
        closed: AtomicBool::new(false),
        ready: Notify::new(),
        places,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Shared<T> {
    /// Brings the count of places in line with what `items` has room for
    /// (after a change that may have grown or dropped its buffer).
    fn count_places(&self, state: &mut State<T>) {
        let Some(budget) = &self.places else {
            return;
        };
        let now = state.items.capacity() * std::mem::size_of::<T>();
        budget.recount_overhead(&mut state.counted, now);
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(budget) = &self.places {
            let state = self
                .state
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            budget.remove_overhead(state.counted);
        }
    }
}

#[derive(Debug)]
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("len", &self.len.load(Relaxed))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<T> Sender<T> {
    /// Queues `m` without waiting; gives it back when the queue is full or
    /// the writer is gone.
    pub fn try_send(&self, m: T) -> Result<(), SendError<T>> {
        let wake = {
            let mut state = lock(&self.0.state);
            if self.0.closed.load(Relaxed) {
                return Err(SendError::Closed(m));
            }
            if state.items.len() >= self.0.capacity {
                return Err(SendError::Full(m));
            }
            if state.items.capacity() == 0 {
                // Released while idle: room for a few at once, not one at a time.
                state.items.reserve(FIRST.min(self.0.capacity));
            }
            state.items.push_back(m);
            self.0.len.store(state.items.len(), Relaxed);
            self.0.count_places(&mut state);
            std::mem::take(&mut state.waiting)
        };
        if wake {
            self.0.ready.notify_one();
        }
        Ok(())
    }

    /// Queues what `make` builds of `src`'s items, in order, as far as there
    /// is room: one lock and at most one wake for the lot. Returns how many
    /// were queued (none when the writer is gone).
    pub fn try_send_from<S>(&self, src: &[S], make: impl Fn(&S) -> T) -> usize {
        self.append(src.len(), |items, n| {
            items.extend(src[..n].iter().map(make))
        })
    }

    /// Moves items from the front of `items` into the queue, in order, as
    /// far as there is room: one lock and at most one wake for the lot.
    /// What did not fit stays in `items`; returns how many moved.
    pub fn try_send_drain(&self, items: &mut Vec<T>) -> usize {
        let want = items.len();
        self.append(want, |queue, n| queue.extend(items.drain(..n)))
    }

    /// Appends up to `want` items (`fill` pushes the `n` there is room for)
    /// under one lock, waking the writer once if it sleeps.
    fn append(&self, want: usize, fill: impl FnOnce(&mut VecDeque<T>, usize)) -> usize {
        let (n, wake) = {
            let mut state = lock(&self.0.state);
            if self.0.closed.load(Relaxed) {
                return 0;
            }
            let n = want.min(self.0.capacity.saturating_sub(state.items.len()));
            if n == 0 {
                return 0;
            }
            fill(&mut state.items, n);
            self.0.len.store(state.items.len(), Relaxed);
            self.0.count_places(&mut state);
            (n, std::mem::take(&mut state.waiting))
        };
        if wake {
            self.0.ready.notify_one();
        }
        n
    }

    /// Queues `m` past the capacity (a frame the connection owes its client,
    /// bounded by its sender); gives it back only when the writer is gone.
    pub fn force_send(&self, m: T) -> Result<(), T> {
        let wake = {
            let mut state = lock(&self.0.state);
            if self.0.closed.load(Relaxed) {
                return Err(m);
            }
            state.items.push_back(m);
            self.0.len.store(state.items.len(), Relaxed);
            self.0.count_places(&mut state);
            std::mem::take(&mut state.waiting)
        };
        if wake {
            self.0.ready.notify_one();
        }
        Ok(())
    }

    /// Takes out of the queue, in order, the items `pick` chooses.
    pub fn take_where(&self, mut pick: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut state = lock(&self.0.state);
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(state.items.len());
        for m in state.items.drain(..) {
            if pick(&m) {
                taken.push(m);
            } else {
                kept.push_back(m);
            }
        }
        state.items = kept;
        self.0.len.store(state.items.len(), Relaxed);
        self.0.count_places(&mut state);
        taken
    }

    /// Free places.
    pub fn capacity(&self) -> usize {
        self.0.capacity.saturating_sub(self.0.len.load(Relaxed))
    }

    pub fn max_capacity(&self) -> usize {
        self.0.capacity
    }

    /// The writer closed its end.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Relaxed)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        lock(&self.0.state).senders_gone = true;
        self.0.ready.notify_one();
    }
}

pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// Waits for messages and moves them, oldest first, into `buf` until it
    /// holds `limit`; returns how many moved. 0 only once the sending end is
    /// gone and the queue is empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        loop {
            {
                let mut state = lock(&self.0.state);
                let n = self.take(&mut state, buf, limit);
                if n > 0 || state.senders_gone {
                    return n;
                }
                // Seen by the next send, under the same lock: its wake
                // cannot fall between this look and the wait below (a
                // `notify_one` with nobody waiting yet is kept for them).
                state.waiting = true;
            }
            self.0.ready.notified().await;
        }
    }

    /// Moves what is queued, up to `limit` in `buf` in all, without waiting;
    /// returns how many moved.
    pub fn try_recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut state = lock(&self.0.state);
        self.take(&mut state, buf, limit)
    }

    fn take(&self, state: &mut State<T>, buf: &mut Vec<T>, limit: usize) -> usize {
        let n = state.items.len().min(limit.saturating_sub(buf.len()));
        buf.extend(state.items.drain(..n));
        self.0.len.store(state.items.len(), Relaxed);
        n
    }

    /// The oldest message, if any, without waiting.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = lock(&self.0.state);
        let m = state.items.pop_front();
        self.0.len.store(state.items.len(), Relaxed);
        m
    }

    pub fn is_empty(&self) -> bool {
        self.0.len.load(Relaxed) == 0
    }

    /// Refuses every later send; what is queued stays to be taken.
    pub fn close(&mut self) {
        // Under the lock, so that no send is halfway past the check.
        let _state = lock(&self.0.state);
        self.0.closed.store(true, Relaxed);
    }

    /// Gives back the queue's buffer while it is empty: an idle connection
    /// holds none (one that was once sent a burst would otherwise keep room
    /// for all of it for good).
    pub fn release(&mut self) {
        let mut state = lock(&self.0.state);
        if state.items.is_empty() && state.items.capacity() > 0 {
            state.items = VecDeque::new();
            self.0.count_places(&mut state);
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    #[test]
    fn bounded_and_in_order() {
        let (tx, mut rx) = channel::<Bytes>(2);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(tx.capacity(), 0);
        assert_eq!(
            tx.try_send(Bytes::from_static(b"c")),
            Err(SendError::Full(Bytes::from_static(b"c")))
        );
        let mut got = Vec::new();
        assert_eq!(rx.try_recv_many(&mut got, 10), 2);
        assert_eq!(got, ["a", "b"]);
        assert_eq!(tx.capacity(), 2);
    }

    #[test]
    fn a_closed_queue_refuses_and_keeps_what_it_holds() {
        let (tx, mut rx) = channel::<Bytes>(4);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"b")),
            Err(SendError::Closed(_))
        ));
        assert_eq!(rx.try_recv().unwrap(), "a");
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_sleeping_writer_wakes_for_a_send_from_another_thread() {
        let (tx, mut rx) = channel::<Bytes>(4);
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.recv_many(&mut got, 10).await;
            // Kept until the sends are done: a writer gone after the first
            // would make the second a send to a closed queue (seen under load).
            (got, rx)
        });
        // However the spawn and the sends interleave, the writer gets them.
        let sender = std::thread::spawn(move || {
            for m in ["a", "b"] {
                tx.try_send(Bytes::from(m)).unwrap();
            }
            tx
        });
        let (got, rx) = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("woken")
            .unwrap();
        assert!(!got.is_empty() && got[0] == "a");
        drop(sender.join().unwrap());
        drop(rx);
    }

    #[test]
    fn an_idle_queue_gives_its_buffer_back() {
        let (tx, mut rx) = channel::<Bytes>(1 << 16);
        for _ in 0..1000 {
            tx.try_send(Bytes::from_static(b"m")).unwrap();
        }
        let mut got = Vec::new();
        rx.try_recv_many(&mut got, 1000);
        rx.release();
        assert_eq!(lock(&rx.0.state).items.capacity(), 0);
        tx.try_send(Bytes::from_static(b"m")).unwrap();
        assert_eq!(rx.try_recv().unwrap(), "m");
    }

    #[test]
    fn the_places_a_queue_holds_are_counted_until_given_back() {
        let budget = Arc::new(Budget::new(1 << 30));
        let (tx, mut rx) = counted::<Bytes>(1 << 16, budget.clone());
        for _ in 0..1000 {
            tx.try_send(Bytes::from_static(b"m")).unwrap();
        }
        let held = budget.overhead();
        assert!(held >= 1000 * std::mem::size_of::<Bytes>(), "{held}");
        let mut got = Vec::new();
        rx.try_recv_many(&mut got, 1000);
        assert_eq!(budget.overhead(), held, "room kept while not idle");
        rx.release();
        assert_eq!(budget.overhead(), 0);
        tx.try_send(Bytes::from_static(b"m")).unwrap();
        assert!(budget.overhead() > 0);
        drop((tx, rx));
        assert_eq!(budget.overhead(), 0, "a queue gone gives all back");
    }

    #[tokio::test]
    async fn the_writer_learns_that_nothing_more_comes() {
        let (tx, mut rx) = channel::<Bytes>(4);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        drop(tx);
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 10).await, 1);
        assert_eq!(rx.recv_many(&mut got, 10).await, 0);
    }
}
