//! `/queue` channels: each message to exactly one worker, round robin, skipping
//! workers whose send queue is full; a bounded backlog when none has room; and
//! back-pressure on the publisher when the backlog is full. Nothing is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lock;
use tokio::sync::Notify;

use super::budget::Budget;
use super::router::Retired;
use super::subscriber::Subscriber;

pub struct QueueState {
    inner: Mutex<Inner>,
    /// Woken whenever the backlog shrinks, for publishers waiting for room.
    space: Notify,
    /// Mirror of the backlog's length, so workers can skip the lock when it is 0.
    backlog_len: AtomicUsize,
    capacity: usize,
    budget: Arc<Budget>,
}

#[derive(Default)]
struct Inner {
    workers: Vec<Arc<Subscriber>>,
    next: usize,
    backlog: VecDeque<Bytes>,
    retired: bool,
}

impl Inner {
    /// Hands `payload` to the next worker with room; gives it back if none has.
    fn dispatch(&mut self, payload: Bytes) -> Result<(), Bytes> {
        let n = self.workers.len();
        let mut payload = payload;
        for k in 0..n {
            let i = (self.next + k) % n;
            match self.workers[i].offer(payload) {
                Ok(()) => {
                    self.next = (i + 1) % n;
                    return Ok(());
                }
                Err(refused) => payload = refused.into_inner(),
            }
        }
        Err(payload)
    }

    /// Moves backlog to workers with room, oldest first; returns how many
    /// moved. A message's bytes move with it from the backlog's share of the
    /// budget to the worker's.
    fn refill(&mut self, budget: &Budget) -> usize {
        let mut moved = 0;
        while let Some(front) = self.backlog.pop_front() {
            let len = front.len();
            budget.give_back(len);
            if let Err(back) = self.dispatch(front) {
                budget.force_take(len);
                self.backlog.push_front(back);
                break;
            }
            moved += 1;
        }
        moved
    }
}

impl QueueState {
    pub fn new(capacity: usize, budget: Arc<Budget>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            space: Notify::new(),
            backlog_len: AtomicUsize::new(0),
            capacity,
            budget,
        }
    }

    pub fn worker_count(&self) -> usize {
        lock(&self.inner).workers.len()
    }

    pub fn backlog_bytes(&self) -> usize {
        lock(&self.inner).backlog.iter().map(Bytes::len).sum()
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog_len.load(Relaxed)
    }

    /// Publishes the backlog's new length and wakes publishers waiting for room.
    fn after_change(&self, inner: &Inner, moved: usize) {
        self.backlog_len.store(inner.backlog.len(), Relaxed);
        if moved > 0 {
            self.space.notify_waiters();
        }
    }

    pub fn add_worker(&self, sub: Arc<Subscriber>) {
        let mut inner = lock(&self.inner);
        inner.workers.push(sub);
        let moved = inner.refill(&self.budget);
        self.after_change(&inner, moved);
    }

    /// Routes one message, waiting for backlog room when the backlog is full.
    /// Order is kept: while a backlog exists, new messages join its tail.
    pub async fn publish(&self, payload: Bytes) -> Result<(), Retired> {
        loop {
            let room = self.space.notified();
            tokio::pin!(room);
            let mut over_budget = false;
            {
                let mut inner = lock(&self.inner);
                if inner.retired {
                    return Err(Retired);
                }
                let payload = if inner.backlog.is_empty() {
                    match inner.dispatch(payload.clone()) {
                        Ok(()) => return Ok(()),
                        Err(p) => p,
                    }
                } else {
                    payload.clone()
                };
                if inner.backlog.len() < self.capacity {
                    if self.budget.try_take(payload.len()) {
                        inner.backlog.push_back(payload);
                        self.backlog_len.store(inner.backlog.len(), Relaxed);
                        return Ok(());
                    }
                    over_budget = true;
                }
                // Register before unlocking so a refill in between is not missed.
                room.as_mut().enable();
            }
            // The budget is shared with every other channel: bytes freed there
            // must wake this publisher too.
            if over_budget {
                tokio::select! {
                    _ = &mut room => {}
                    _ = self.budget.room_for(payload.len()) => {}
                }
            } else {
                room.await;
            }
        }
    }

    /// Called by a worker's writer after it took messages off its send queue.
    pub fn refill(&self) {
        if self.backlog_len.load(Relaxed) == 0 {
            return;
        }
        let mut inner = lock(&self.inner);
        let moved = inner.refill(&self.budget);
        self.after_change(&inner, moved);
    }

    /// Removes a worker; `unsent` (its queued, unwritten messages, oldest first)
    /// go back to the front of the backlog and on to other workers. Returns
    /// true when the channel is now idle and has been retired. A worker that
    /// already left (and let the channel retire) may still hand back messages
    /// it failed to write: those are returned, for the router to put in the
    /// channel now live under the same name.
    pub fn remove_worker(&self, id: u64, unsent: Vec<Bytes>) -> Result<bool, Vec<Bytes>> {
        let mut inner = lock(&self.inner);
        if inner.retired {
            return if unsent.is_empty() {
                Ok(true)
            } else {
                Err(unsent)
            };
        }
        inner.workers.retain(|w| w.id != id);
        if inner.next >= inner.workers.len() {
            inner.next = 0;
        }
        self.push_front(&mut inner, unsent);
        if inner.workers.is_empty() && inner.backlog.is_empty() {
            inner.retired = true;
        }
        Ok(inner.retired)
    }

    /// Puts messages that were not delivered back at the head of the queue.
    pub fn requeue(&self, unsent: Vec<Bytes>) {
        let mut inner = lock(&self.inner);
        self.push_front(&mut inner, unsent);
    }

    fn push_front(&self, inner: &mut Inner, unsent: Vec<Bytes>) {
        for m in unsent.into_iter().rev() {
            // Never dropped, so taken whatever the budget says.
            self.budget.force_take(m.len());
            inner.backlog.push_front(m);
        }
        let moved = inner.refill(&self.budget);
        self.after_change(inner, moved);
    }

    /// Empties the backlog at shutdown; returns how many messages it held.
    pub fn discard_backlog(&self) -> usize {
        let mut inner = lock(&self.inner);
        let n = inner.backlog.len();
        let bytes = inner.backlog.drain(..).map(|m| m.len()).sum();
        self.budget.give_back(bytes);
        self.after_change(&inner, 0);
        n
    }
}
