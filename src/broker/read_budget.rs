//! The read budget: memory for frames partly received, a quarter of
//! `--max-memory`, and who holds it. Connections that hold some and trickle
//! could keep it for as long as they like (a 16 MiB frame at the frame
//! timeout's floor of 16 KiB/s lasts 17 minutes), and every publisher of a
//! large message would wait behind them. So a reader that has waited
//! [`CONTENDED_AFTER`] for room cuts the slowest holder, if it is slower
//! than [`CONTENDED_RATE`]: contended, the budget goes to frames that move.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::budget::Budget;
use super::conn::Conn;
use super::end::EndReason;
use super::lock;

/// How long a reader waits for room before it looks for a holder to cut.
const CONTENDED_AFTER: Duration = Duration::from_secs(1);

/// A holder receiving its frame slower than this, in bytes per second, loses
/// its place to a reader that waits: 1 MiB/s, far below a LAN and a
/// broadband uplink, and 64 times what the frame timeout alone asks.
const CONTENDED_RATE: f64 = 1024.0 * 1024.0;

pub struct ReadBudget {
    pub budget: Budget,
    holders: Mutex<HashMap<u64, Holder>>,
}

struct Holder {
    conn: Arc<Conn>,
    /// Since when it has held budget, and what it had read then.
    since: Instant,
    read_then: u64,
    read: Arc<AtomicU64>,
}

impl Holder {
    /// Bytes a second since it first held budget, the bytes, and how long.
    fn pace(&self) -> (f64, u64, Duration) {
        let held = self.since.elapsed();
        let bytes = self.read.load(Relaxed).saturating_sub(self.read_then);
        (bytes as f64 / held.as_secs_f64().max(1e-3), bytes, held)
    }
}

impl ReadBudget {
    pub fn new(max: usize) -> Self {
        Self {
            budget: Budget::new(max),
            holders: Mutex::default(),
        }
    }

    /// `sub` holds some of the budget (from now, unless it did already);
    /// `read` counts the bytes its connection has read.
    pub fn hold(&self, conn: &Arc<Conn>, read: &Arc<AtomicU64>) {
        lock(&self.holders)
            .entry(conn.id)
            .or_insert_with(|| Holder {
                conn: conn.clone(),
                since: Instant::now(),
                read_then: read.load(Relaxed),
                read: read.clone(),
            });
    }

    /// `id` holds none of the budget any more.
    pub fn release(&self, id: u64) {
        lock(&self.holders).remove(&id);
    }

    /// Waits until `len` bytes fit; every [`CONTENDED_AFTER`] without room,
    /// cuts the slowest holder that has held budget longer than `me` if it
    /// is slower than [`CONTENDED_RATE`]. Only older holders: a frame that
    /// waits for room comes in slowly too, and must not be cut by those it
    /// waits behind.
    pub async fn room_for(&self, len: usize, me: u64) {
        loop {
            tokio::select! {
                _ = self.budget.room_for(len) => return,
                _ = tokio::time::sleep(CONTENDED_AFTER) => self.cut_slowest(me),
            }
        }
    }

    fn cut_slowest(&self, me: u64) {
        let holders = lock(&self.holders);
        let mine = holders.get(&me).map_or_else(Instant::now, |h| h.since);
        let slowest = holders
            .values()
            .filter(|h| h.since < mine && !h.conn.kill.is_cancelled())
            .filter_map(|h| {
                let (rate, bytes, held) = h.pace();
                (held >= CONTENDED_AFTER).then_some((rate, bytes, held, h))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((rate, bytes, held, h)) = slowest else {
            return;
        };
        if rate >= CONTENDED_RATE {
            return;
        }
        tracing::warn!(
            "Remote {} disconnected: it held read budget for {held:.1?} receiving a frame at \
             {:.0} KiB/s while other connections waited for room",
            h.conn.peer,
            rate / 1024.0
        );
        h.conn.set_end_reason(EndReason::FrameTooSlow {
            bytes,
            within: held,
        });
        h.conn.kill.cancel();
    }
}
