//! Warnings about one client (refused, broke the protocol, failed its TLS
//! handshake) come at the rate a client chooses: a loop of bad connections
//! would otherwise write a line each. Each source address gets at most a line
//! a second per kind, carrying how many events it stands for; what is left
//! unsaid is said at shutdown, so the lines add up to the counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::lock;
use super::log_every::LogEvery;

/// Addresses remembered at most; past it the table starts afresh (a few
/// extra lines, never unbounded memory).
const ADDRESSES: usize = 4096;

/// Lines a second for all addresses together: a client with many addresses
/// (a whole IPv6 /64 counts as one, but many hosts do not) would otherwise
/// get a line per address. Past it, one line a second says how many more.
const LINES_A_SECOND: u32 = 20;

#[derive(Debug)]
pub struct PeerLog {
    /// What is logged, for the shutdown line ("protocol error(s)").
    what: &'static str,
    base: Instant,
    peers: Mutex<HashMap<IpAddr, LogEvery>>,
    /// Events of addresses forgotten when the table started afresh.
    forgotten: std::sync::atomic::AtomicU64,
    /// The second lines are being counted in (since `base`), lines said in
    /// it, and events whose line was held back by [`LINES_A_SECOND`].
    window: Mutex<(u64, u32, u64)>,
}

impl PeerLog {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            base: Instant::now(),
            peers: Mutex::new(HashMap::new()),
            forgotten: Default::default(),
            window: Mutex::new((0, 0, 0)),
        }
    }

    /// Records one event from `ip`; returns how many to report when a line is
    /// due for that address.
    pub fn due(&self, ip: IpAddr) -> Option<u64> {
        let ip = super::address_key(ip);
        let n = {
            let mut peers = lock(&self.peers);
            if peers.len() >= ADDRESSES && !peers.contains_key(&ip) {
                let unsaid: u64 = peers.values().map(LogEvery::take).sum();
                self.forgotten
                    .fetch_add(unsaid, std::sync::atomic::Ordering::Relaxed);
                peers.clear();
            }
            peers.entry(ip).or_default().due(self.base)?
        };
        let mut window = lock(&self.window);
        let second = self.base.elapsed().as_secs();
        if window.0 != second {
            let held = window.2;
            *window = (second, 0, 0);
            if held > 0 {
                window.1 += 1;
                tracing::warn!(
                    "{held} more {} from other addresses in the last second (at most \
                     {LINES_A_SECOND} lines a second)",
                    self.what
                );
            }
        }
        if window.1 >= LINES_A_SECOND {
            window.2 += n;
            return None;
        }
        window.1 += 1;
        Some(n)
    }

    /// Says what was not said yet, one line per address (and one for the
    /// addresses forgotten).
    pub fn flush(&self) {
        let peers = lock(&self.peers);
        for (ip, every) in peers.iter() {
            let n = every.take();
            if n > 0 {
                tracing::warn!("{n} more {} from {ip}", self.what);
            }
        }
        let n = self.forgotten.swap(0, std::sync::atomic::Ordering::Relaxed)
            + std::mem::take(&mut lock(&self.window).2);
        if n > 0 {
            tracing::warn!("{n} more {} from addresses not listed", self.what);
        }
    }
}
/// Reasons said so far, so that a reason not seen before is said even when the
/// address's line of this second was said already: the limit is against
/// repetition, and a new reason is news (a client with a certificate from
/// another CA right after one with none showed only "no certificates").
#[derive(Debug, Default)]
pub struct NewReasons {
    seen: Mutex<std::collections::HashSet<String>>,
}

/// Distinct reasons remembered; past it none counts as new (a client cannot
/// grow the set, nor the log, by making up reasons).
const REASONS: usize = 64;

impl NewReasons {
    /// True the first time `reason` is given.
    pub fn first(&self, reason: &str) -> bool {
        let mut seen = lock(&self.seen);
        if seen.len() >= REASONS || seen.contains(reason) {
            return false;
        }
        seen.insert(reason.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_new_once_and_made_up_ones_cannot_grow_the_set() {
        let reasons = NewReasons::default();
        assert!(reasons.first("peer sent no certificates"));
        assert!(!reasons.first("peer sent no certificates"));
        assert!(reasons.first("invalid peer certificate: UnknownIssuer"));
        for i in 0..1000 {
            reasons.first(&format!("made up {i}"));
        }
        assert_eq!(lock(&reasons.seen).len(), REASONS);
        assert!(!reasons.first("yet another"));
    }
}
