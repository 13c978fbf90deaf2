//! A subscriber as routing sees it: the sending end of its bounded send queue,
//! its counters, and a way to disconnect it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stats::ConnStats;

/// How often, at most, one subscriber's losses are logged.
const DROP_LOG_EVERY_MS: u64 = 1000;
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
pub struct Subscriber {
    pub id: u64,
    pub peer: SocketAddr,
    pub tx: mpsc::Sender<Bytes>,
    pub stats: Arc<ConnStats>,
    /// Cancelled to close the connection at once (slow consumer, protocol error).
    pub kill: CancellationToken,
    /// Set when routing disconnected it as a slow consumer, so that what is still
    /// queued for it is counted under that reason.
    pub slow: AtomicBool,
    /// Why the connection ended, as the first side to notice tells it.
    end_reason: Mutex<Option<String>>,
    born: Instant,
    last_drop_log_ms: AtomicU64,
    drops_unlogged: AtomicU64,
}

impl Subscriber {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        stats: Arc<ConnStats>,
        kill: CancellationToken,
    ) -> Self {
        Self {
            id,
            peer,
            tx,
            stats,
            kill,
            slow: AtomicBool::new(false),
            end_reason: Mutex::new(None),
            born: Instant::now(),
            last_drop_log_ms: AtomicU64::new(NEVER),
            drops_unlogged: AtomicU64::new(0),
        }
    }

    /// Records one message lost to a full queue; returns how many to report when
    /// it is time to log (at most once a second per subscriber), else `None`.
    pub fn note_drop(&self) -> Option<u64> {
        self.drops_unlogged.fetch_add(1, Relaxed);
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_drop_log_ms.load(Relaxed);
        let due = last == NEVER || now >= last + DROP_LOG_EVERY_MS;
        if due
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.drops_unlogged.swap(0, Relaxed))
        } else {
            None
        }
    }

    /// Records why the connection ends; the first reason given wins.
    pub fn set_end_reason(&self, reason: impl Into<String>) {
        let mut r = self.end_reason.lock().unwrap();
        if r.is_none() {
            *r = Some(reason.into());
        }
    }

    pub fn end_reason(&self) -> String {
        self.end_reason
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "closed".into())
    }
}
