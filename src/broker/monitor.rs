//! A read-only view of a running broker, for the monitoring endpoint
//! (`serve --http`): counters are read, never locked per message.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::stats::{BrokerStats, DropReason, Summary};
use super::{BrokerConfig, Shared};

#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
    started: Instant,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Monitor")
    }
}

impl Monitor {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            started: Instant::now(),
        }
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// True once shutdown has begun: no new connection is accepted.
    pub fn draining(&self) -> bool {
        self.shared.stop_reading.is_cancelled()
    }

    pub fn summary(&self) -> Summary {
        self.shared.stats.summary()
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.shared.stats
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.shared.stats.dropped.get(reason)
    }

    pub fn open_connections(&self) -> u64 {
        self.shared.stats.open.load(Relaxed)
    }

    /// Payload bytes held in send queues and backlogs.
    pub fn held_bytes(&self) -> usize {
        self.shared.router.budget.used()
    }

    pub fn channels(&self) -> usize {
        self.shared.router.channel_count()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    pub fn clustered(&self) -> bool {
        self.shared.cluster.get().is_some()
    }
}
