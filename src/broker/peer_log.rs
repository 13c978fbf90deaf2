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

#[derive(Debug)]
pub struct PeerLog {
    /// What is logged, for the shutdown line ("protocol error(s)").
    what: &'static str,
    base: Instant,
    peers: Mutex<HashMap<IpAddr, LogEvery>>,
    /// Events of addresses forgotten when the table started afresh.
    forgotten: std::sync::atomic::AtomicU64,
}

impl PeerLog {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            base: Instant::now(),
            peers: Mutex::new(HashMap::new()),
            forgotten: Default::default(),
        }
    }

    /// Records one event from `ip`; returns how many to report when a line is
    /// due for that address.
    pub fn due(&self, ip: IpAddr) -> Option<u64> {
        let mut peers = lock(&self.peers);
        if peers.len() >= ADDRESSES && !peers.contains_key(&ip) {
            let unsaid: u64 = peers.values().map(LogEvery::take).sum();
            self.forgotten
                .fetch_add(unsaid, std::sync::atomic::Ordering::Relaxed);
            peers.clear();
        }
        peers.entry(ip).or_default().due(self.base)
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
        let n = self.forgotten.swap(0, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            tracing::warn!("{n} more {} from addresses not listed", self.what);
        }
    }
}
