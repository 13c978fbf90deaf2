//! One metrics sample: what a reporter publishes and a collector reads, as JSON.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub name: String,
    pub pid: u32,
    pub host: String,
    /// ISO 8601, UTC.
    pub timestamp: String,
    /// Percent of one core (a process using two full cores shows 200).
    pub cpu_percent: f64,
    /// Resident memory.
    pub memory_mib: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<usize>,
    /// Present when the reporter is the broker itself (`aioq serve --metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerCounters>,
    /// The reporter's count of samples, from 0 when it starts: a jump is
    /// samples lost on the way, a fall a reporter that restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the watched process started, seconds since the Unix epoch: a
    /// change is a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// Connections the reporter has made to the broker (1 until it reconnects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connects: Option<u64>,
    /// Logical CPUs of the host: `cpu_percent / cpus` is the share of the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<usize>,
    /// What the collector noticed on arrival (a gap, a restart, a reconnect):
    /// set by the collector only, never read from a reporter.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerCounters {
    pub connections: u64,
    pub messages_in_per_s: f64,
    pub delivered_per_s: f64,
    pub dropped_total: u64,
    /// Tasks alive in the broker's runtime (two per connection, and a few more).
    #[serde(default)]
    pub tasks: u64,
    /// Payload bytes held in send queues and backlogs, against `--max-memory`.
    #[serde(default)]
    pub held_bytes: u64,
    /// Messages that reached this broker's clients from other brokers of its
    /// cluster (0 outside a cluster).
    #[serde(default)]
    pub from_cluster: u64,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub fn host_name() -> String {
    System::host_name().unwrap_or_else(|| "unknown".into())
}

/// Samples one process through sysinfo.
pub struct Sampler {
    sys: System,
    pid: Pid,
}

impl Sampler {
    pub fn new(pid: u32) -> Self {
        let mut s = Self {
            sys: System::new(),
            pid: Pid::from_u32(pid),
        };
        // CPU usage is measured between two refreshes: prime the first.
        s.refresh();
        s
    }

    /// The process is there (at the last refresh).
    pub fn exists(&self) -> bool {
        self.sys.process(self.pid).is_some()
    }

    fn refresh(&mut self) {
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
    }

    /// `None` once the process is gone.
    pub fn sample(&mut self, name: &str, host: &str) -> Option<Sample> {
        self.refresh();
        let p = self.sys.process(self.pid)?;
        Some(Sample {
            name: name.to_string(),
            pid: self.pid.as_u32(),
            host: host.to_string(),
            timestamp: now_rfc3339(),
            cpu_percent: (p.cpu_usage() as f64 * 10.0).round() / 10.0,
            memory_mib: (p.memory() as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0,
            threads: p.tasks().map(|t| t.len().max(1)),
            // A directory listing, not parsing: cheap, and absent off Linux.
            open_files: std::fs::read_dir(format!("/proc/{}/fd", self.pid.as_u32()))
                .ok()
                .map(|d| d.count()),
            broker: None,
            seq: None,
            started: Some(p.start_time()),
            connects: None,
            cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
            mark: None,
        })
    }
}
