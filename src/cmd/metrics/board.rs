//! What the collector knows about every reporter.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use comfy_table::{presets, Table};
use serde_json::{json, Value};

use super::sample::Sample;

/// Samples kept for browsers that connect later (their charts start full)
/// and for download: an hour of one reporter sampling every second, or a
/// shorter span of more (about 250 bytes each: a few MiB).
const HISTORY: usize = 20_000;
/// Bytes of history kept at most (each sample counted as its strings plus
/// [`SAMPLE_COST`]), so that long names cannot make the count's bound large.
const HISTORY_BYTES: usize = 8 << 20;
/// What a sample costs in the history besides its strings.
const SAMPLE_COST: usize = 200;

fn history_cost(s: &Sample) -> usize {
    SAMPLE_COST + s.name.len() + s.host.len() + s.mark.as_ref().map_or(0, String::len)
}

/// Marks (gaps, restarts, reconnects) remembered per reporter.
const MARKS: usize = 100;
/// Samples over which the memory trend is taken.
const TREND_WINDOW: usize = 10;

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A full window of readings that never fell (by more than 1 %, the jitter
/// of a process's other allocations coming and going) and rose at a third of
/// its steps at least: a climb, not one jump. On a loaded machine a reporter's
/// samples and its process's allocations drift apart, and many steps are flat.
fn leak_shape(memory: &VecDeque<(Instant, f64)>) -> bool {
    if memory.len() < TREND_WINDOW {
        return false;
    }
    let steps = || memory.iter().zip(memory.iter().skip(1));
    let rises = steps().filter(|(a, b)| b.1 > a.1).count();
    steps().all(|(a, b)| b.1 >= a.1 * 0.99) && rises * 3 >= memory.len() - 1
}

pub struct Reporter {
    pub last: Sample,
    pub samples: u64,
    cpu_sum: f64,
    /// Recent memory readings, with when they came.
    memory: VecDeque<(Instant, f64)>,
    last_seen: Instant,
    /// Samples that never came (gaps in the reporter's sequence).
    pub lost: u64,
    /// Times the watched process (or the reporter) started again.
    pub restarts: u64,
    /// Times the reporter reconnected to the broker.
    pub reconnects: u64,
    /// The latest marks: (collector time, what).
    pub marks: VecDeque<(String, String)>,
}

/// What changed between a reporter's last sample and this one, if anything
/// worth a mark: a restart (another pid or start time, or the sequence
/// starting over), samples lost on the way, a reconnect.
fn mark(last: &Sample, s: &Sample) -> Option<Mark> {
    let other_process =
        last.pid != s.pid || matches!((last.started, s.started), (Some(a), Some(b)) if a != b);
    let seq = last.seq.zip(s.seq);
    if other_process || seq.is_some_and(|(a, b)| b <= a) {
        return Some(Mark::Restart);
    }
    if let Some((a, b)) = seq.filter(|(a, b)| *b > a + 1) {
        return Some(Mark::Gap(b - a - 1));
    }
    match (last.connects, s.connects) {
        // From 0 (sampled before the first connection) is no reconnect.
        (Some(a), Some(b)) if a > 0 && b > a => Some(Mark::Reconnect(b - a)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Restart,
    /// Samples lost.
    Gap(u64),
    /// Connections made since the last sample.
    Reconnect(u64),
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mark::Restart => write!(f, "restart"),
            Mark::Gap(n) => write!(f, "gap: {n} sample(s) lost"),
            Mark::Reconnect(_) => write!(f, "reconnect"),
        }
    }
}

/// Memory growth past which a reporter is flagged as leaking, MiB per
/// minute, when it climbed over the last samples.
pub const LEAK_MIB_PER_MIN: f64 = 10.0;

/// Longest reporter name or host name accepted.
pub const MAX_NAME: usize = 128;

/// How the board is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stale_after: Duration,
    /// Reporters unseen this long are forgotten.
    pub forget_after: Duration,
    /// Reporters followed at once; samples from more are refused.
    pub max_reporters: usize,
}

pub struct Board {
    pub reporters: BTreeMap<String, Reporter>,
    pub history: VecDeque<Sample>,
    /// How many samples have left the history: `history[0]`'s number.
    pub history_base: u64,
    history_bytes: usize,
    limits: Limits,
    /// Samples refused, by why: too long a name or host, too many reporters.
    pub refused: BTreeMap<&'static str, u64>,
}

impl Board {
    pub fn new(limits: Limits) -> Self {
        Self {
            reporters: BTreeMap::new(),
            history: VecDeque::new(),
            history_base: 0,
            history_bytes: 0,
            limits,
            refused: BTreeMap::new(),
        }
    }

    /// Takes a sample unless it breaks a bound (says why it did not); gives
    /// it back marked with what changed since the reporter's last one.
    pub fn admit(&mut self, s: Sample) -> Result<Sample, &'static str> {
        let why = if s.name.len() > MAX_NAME || s.host.len() > MAX_NAME {
            Some("name_too_long")
        } else if !self.reporters.contains_key(&s.name)
            && self.reporters.len() >= self.limits.max_reporters
        {
            self.forget_unseen();
            (self.reporters.len() >= self.limits.max_reporters).then_some("too_many_reporters")
        } else {
            None
        };
        if let Some(why) = why {
            *self.refused.entry(why).or_default() += 1;
            return Err(why);
        }
        Ok(self.record(s))
    }

    /// Forgets reporters not heard from for `forget_after`.
    pub fn forget_unseen(&mut self) {
        let after = self.limits.forget_after;
        self.reporters.retain(|_, r| r.last_seen.elapsed() < after);
    }

    fn record(&mut self, mut s: Sample) -> Sample {
        let r = self
            .reporters
            .entry(s.name.clone())
            .or_insert_with(|| Reporter {
                last: s.clone(),
                samples: 0,
                cpu_sum: 0.0,
                memory: VecDeque::new(),
                last_seen: Instant::now(),
                lost: 0,
                restarts: 0,
                reconnects: 0,
                marks: VecDeque::new(),
            });
        s.mark = None;
        if r.samples > 0 {
            if let Some(m) = mark(&r.last, &s) {
                match m {
                    Mark::Restart => {
                        r.restarts += 1;
                        // A new process: its memory is no trend of the old one.
                        r.memory.clear();
                    }
                    Mark::Gap(n) => r.lost += n,
                    Mark::Reconnect(n) => r.reconnects += n,
                }
                let text = m.to_string();
                r.marks.push_back((s.timestamp.clone(), text.clone()));
                if r.marks.len() > MARKS {
                    r.marks.pop_front();
                }
                s.mark = Some(text);
            }
        }
        r.samples += 1;
        r.cpu_sum += s.cpu_percent;
        r.memory.push_back((Instant::now(), s.memory_mib));
        if r.memory.len() > TREND_WINDOW {
            r.memory.pop_front();
        }
        r.last_seen = Instant::now();
        r.last = s.clone();
        self.history_bytes += history_cost(&s);
        self.history.push_back(s.clone());
        while self.history.len() > HISTORY || self.history_bytes > HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= history_cost(&old);
            self.history_base += 1;
        }
        s
    }

    /// Up to `n` samples of the history from number `from` on (or from the
    /// oldest still kept), as JSON, and the number after the last.
    pub fn history_page(&self, from: u64, n: usize) -> (u64, Vec<String>) {
        let start = from.max(self.history_base);
        let skip = (start - self.history_base) as usize;
        let page: Vec<String> = self
            .history
            .iter()
            .skip(skip)
            .take(n)
            .filter_map(|s| serde_json::to_string(s).ok())
            .collect();
        (start + page.len() as u64, page)
    }

    pub fn is_stale(&self, r: &Reporter) -> bool {
        r.last_seen.elapsed() > self.limits.stale_after
    }

    /// Memory change over the last samples, in MiB.
    fn trend(r: &Reporter) -> f64 {
        match (r.memory.front(), r.memory.back()) {
            (Some(a), Some(b)) => b.1 - a.1,
            _ => 0.0,
        }
    }

    /// Memory growth over the last samples, MiB per minute.
    pub fn growth_per_min(r: &Reporter) -> f64 {
        match (r.memory.front(), r.memory.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1 - a.1) / b.0.duration_since(a.0).as_secs_f64() * 60.0
            }
            _ => 0.0,
        }
    }

    /// A climb over a full trend window (see [`leak_shape`]) faster than
    /// [`LEAK_MIB_PER_MIN`]: a leak, not a burst.
    pub fn leaking(r: &Reporter) -> bool {
        leak_shape(&r.memory) && Self::growth_per_min(r) > LEAK_MIB_PER_MIN
    }

    pub fn api(&self) -> Value {
        let reporters: Vec<Value> = self
            .reporters
            .values()
            .map(|r| {
                json!({
                    "name": r.last.name,
                    "pid": r.last.pid,
                    "host": r.last.host,
                    "cpu_percent": r.last.cpu_percent,
                    "cpu_average": round1(r.cpu_sum / r.samples.max(1) as f64),
                    "memory_mib": r.last.memory_mib,
                    "memory_trend_mib": (Self::trend(r) * 100.0).round() / 100.0,
                    "memory_growth_mib_per_min": round1(Self::growth_per_min(r)),
                    "leak_suspected": Self::leaking(r),
                    "samples": r.samples,
                    "last_seen": r.last.timestamp,
                    "seconds_since_seen": r.last_seen.elapsed().as_secs_f64(),
                    "stale": self.is_stale(r),
                    "broker": r.last.broker,
                    "cpus": r.last.cpus,
                    "cpu_percent_of_machine": r.last.cpus.map(|n| round1(r.last.cpu_percent / n.max(1) as f64)),
                    "lost_samples": r.lost,
                    "restarts": r.restarts,
                    "reconnects": r.reconnects,
                    "marks": r.marks.iter().map(|(t, m)| json!({"at": t, "what": m})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "reporters": reporters, "refused": self.refused })
    }

    pub fn table(&self, color: bool) -> Table {
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED);
        if !color {
            t.force_no_tty();
        }
        t.set_header([
            "reporter",
            "pid",
            "host",
            "CPU %",
            "CPU avg",
            "memory MiB",
            // MiB gained or lost over the window, not a rate (the page's
            // chart gives MiB/min).
            "trend MiB",
            "samples",
            "lost",
            "restarts",
            "reconnects",
            "last seen",
            "flag",
        ]);
        for r in self.reporters.values() {
            let trend = Self::trend(r);
            // Names come from any client of the broker: shown with control
            // characters escaped, so none can steer the operator's terminal.
            t.add_row(vec![
                crate::proto::shown(r.last.name.as_bytes()),
                r.last.pid.to_string(),
                crate::proto::shown(r.last.host.as_bytes()),
                format!("{:.1}", r.last.cpu_percent),
                format!("{:.1}", r.cpu_sum / r.samples.max(1) as f64),
                format!("{:.1}", r.last.memory_mib),
                if trend.abs() < 0.05 {
                    "steady".into()
                } else {
                    format!("{trend:+.1}")
                },
                r.samples.to_string(),
                r.lost.to_string(),
                r.restarts.to_string(),
                r.reconnects.to_string(),
                format!("{:.0}s ago", r.last_seen.elapsed().as_secs_f64()),
                match (self.is_stale(r), Self::leaking(r)) {
                    (true, _) => "STALE".into(),
                    (false, true) => "LEAK?".into(),
                    (false, false) => String::new(),
                },
            ]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, seq: u64, started: u64, connects: u64) -> Sample {
        Sample {
            name: "r".into(),
            pid,
            host: "h".into(),
            timestamp: "2026-11-27T00:00:00Z".into(),
            cpu_percent: 1.0,
            memory_mib: 10.0,
            threads: None,
            open_files: None,
            broker: None,
            seq: Some(seq),
            started: Some(started),
            connects: Some(connects),
            cpus: Some(2),
            mark: None,
        }
    }

    #[test]
    fn history_is_bounded_in_bytes_and_read_in_pages() {
        let mut b = Board::new(Limits {
            stale_after: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
            max_reporters: 10,
        });
        for seq in 0..100 {
            let mut s = sample(1, seq, 100, 1);
            s.name = "n".repeat(MAX_NAME);
            b.admit(s).unwrap();
        }
        let per = history_cost(&b.history[0]);
        assert_eq!(b.history_bytes, 100 * per);
        // Pages continue where the last one stopped, however the history moved.
        let (next, page) = b.history_page(0, 30);
        assert_eq!((next, page.len()), (30, 30));
        let (next, page) = b.history_page(next, 100);
        assert_eq!((next, page.len()), (100, 70));
        assert!(b.history_page(next, 10).1.is_empty());
        // Past the byte bound the oldest go, and a reader behind them
        // resumes at the oldest kept.
        let big = HISTORY_BYTES / per + 10;
        for seq in 100..big as u64 {
            let mut s = sample(1, seq, 100, 1);
            s.name = "n".repeat(MAX_NAME);
            b.admit(s).unwrap();
        }
        assert!(b.history_bytes <= HISTORY_BYTES);
        assert!(b.history_base > 0);
        let (_, page) = b.history_page(0, 1);
        let first: Sample = serde_json::from_str(&page[0]).unwrap();
        assert_eq!(first.seq, Some(b.history_base));
    }

    #[test]
    fn gaps_restarts_and_reconnects_are_marked_and_counted() {
        let mut b = Board::new(Limits {
            stale_after: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
            max_reporters: 10,
        });
        let marks: Vec<Option<String>> = [
            sample(1, 0, 100, 1),
            sample(1, 1, 100, 1),
            sample(1, 4, 100, 1), // two lost
            sample(1, 5, 100, 2), // reconnected
            sample(2, 0, 200, 1), // another process
            sample(2, 1, 200, 1),
        ]
        .into_iter()
        .map(|s| b.admit(s).unwrap().mark)
        .collect();
        assert_eq!(
            marks,
            [
                None,
                None,
                Some("gap: 2 sample(s) lost".into()),
                Some("reconnect".into()),
                Some("restart".into()),
                None
            ]
        );
        let r = &b.reporters["r"];
        assert_eq!((r.lost, r.restarts, r.reconnects), (2, 1, 1));
        // Sampled before its first connection, then connected: no reconnect.
        assert_eq!(mark(&sample(1, 0, 100, 0), &sample(1, 1, 100, 1)), None);
    }

    fn window(mib: &[f64]) -> VecDeque<(Instant, f64)> {
        let t = Instant::now();
        mib.iter()
            .enumerate()
            .map(|(i, m)| (t + Duration::from_millis(200 * i as u64), *m))
            .collect()
    }

    #[test]
    fn a_flat_step_between_allocations_is_still_a_leak() {
        let mut m: Vec<f64> = (0..TREND_WINDOW).map(|i| 40.0 + 10.0 * i as f64).collect();
        m[5] = m[4];
        assert!(leak_shape(&window(&m)));
    }

    #[test]
    fn a_fall_or_a_single_jump_is_not_a_leak() {
        let mut m: Vec<f64> = (0..TREND_WINDOW).map(|i| 40.0 + 10.0 * i as f64).collect();
        m[5] = m[4] - 5.0;
        assert!(!leak_shape(&window(&m)));
        let jump: Vec<f64> = (0..TREND_WINDOW)
            .map(|i| if i < 7 { 40.0 } else { 50.0 })
            .collect();
        assert!(!leak_shape(&window(&jump)));
        assert!(!leak_shape(&window(&[40.0, 50.0, 60.0])));
    }

    #[test]
    fn a_climb_with_flat_steps_and_jitter_is_a_leak() {
        // Rising at every third step, with a 0.5 % dip: a starved leak.
        let m = [40.0, 40.0, 40.0, 50.0, 50.0, 49.8, 60.0, 60.0, 60.0, 70.0];
        assert!(leak_shape(&window(&m)));
    }
}
