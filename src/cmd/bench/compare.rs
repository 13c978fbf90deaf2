//! Comparable runs: every headline figure of a report, by a stable name, so a
//! run can be set beside a baseline (`--compare`), gate a CI job
//! (`--max-regression`), or go to a spreadsheet (`--csv`).

use serde::Serialize;
use serde_json::Value;

/// One figure of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

/// The figures of a report, read from its JSON form (so a baseline file of
/// an older run reads the same way as this run).
pub fn figures(doc: &Value) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut add = |name: String, v: Option<f64>, unit: &'static str, higher: bool| {
        if let Some(value) = v {
            out.push(Figure {
                name,
                value,
                unit,
                higher_is_better: higher,
            });
        }
    };
    let num = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_f64);
    for iso in doc["isolation"].as_array().into_iter().flatten() {
        let kind = iso["channel_kind"].as_str().unwrap_or("?");
        add(
            format!("isolation.{kind}.ratio"),
            num(iso, "/isolation_ratio"),
            "",
            true,
        );
        add(
            format!("isolation.{kind}.fast_delivered_per_s"),
            num(iso, "/with_slow/fast/delivered_per_s"),
            "msg/s",
            true,
        );
        add(
            format!("isolation.{kind}.fast_p99_us"),
            num(iso, "/with_slow/fast/latency/p99_us"),
            "µs",
            false,
        );
    }
    for t in doc["throughput"].as_array().into_iter().flatten() {
        let kind = t["channel_kind"].as_str().unwrap_or("?");
        add(
            format!("throughput.{kind}.delivered_per_s"),
            num(t, "/delivered_per_s"),
            "msg/s",
            true,
        );
        add(
            format!("throughput.{kind}.messages_per_write"),
            num(t, "/physics/messages_per_write"),
            "msg",
            true,
        );
        add(
            format!("throughput.{kind}.cpu_ns_per_delivery"),
            num(t, "/physics/cpu_ns_per_delivery"),
            "ns",
            false,
        );
    }
    let l = &doc["latency"];
    for (name, path) in [
        ("latency.p50_us", "/latency/p50_us"),
        ("latency.p99_us", "/latency/p99_us"),
        ("latency.p999_us", "/latency/p999_us"),
        ("latency.intended_p99_us", "/intended_latency/p99_us"),
    ] {
        add(name.into(), num(l, path), "µs", false);
    }
    let f = &doc["fanout"];
    add(
        "fanout.delivered_per_s".into(),
        num(f, "/delivered_per_s"),
        "msg/s",
        true,
    );
    add(
        "fanout.time_p99_us".into(),
        num(f, "/fanout_time/p99_us"),
        "µs",
        false,
    );
    add(
        "fanout.rss_per_connection_bytes".into(),
        num(f, "/rss_per_connection_bytes"),
        "B",
        false,
    );
    let w = &doc["work"];
    add(
        "work.jobs_per_s".into(),
        num(w, "/jobs_per_s"),
        "jobs/s",
        true,
    );
    add("work.p99_us".into(), num(w, "/latency/p99_us"), "µs", false);
    for d in doc["durable"].as_array().into_iter().flatten() {
        let n = d["publishers"].as_u64().unwrap_or(0);
        add(
            format!("durable.{n}_publishers.confirms_per_s"),
            num(d, "/confirms_per_s"),
            "jobs/s",
            true,
        );
        add(
            format!("durable.{n}_publishers.confirm_p99_us"),
            num(d, "/confirm_latency/p99_us"),
            "µs",
            false,
        );
    }
    add(
        "crash_worker.handed_on_ms".into(),
        num(&doc["crash_worker"], "/handed_on_ms"),
        "ms",
        false,
    );
    add(
        "crash_broker.first_job_ms".into(),
        num(&doc["crash_broker"], "/first_job_ms"),
        "ms",
        false,
    );
    for r in doc["recovery"].as_array().into_iter().flatten() {
        let n = r["jobs"].as_u64().unwrap_or(0);
        add(
            format!("recovery.{n}_jobs.first_job_ms"),
            num(r, "/first_job_ms"),
            "ms",
            false,
        );
        add(
            format!("recovery.{n}_jobs.drained_ms"),
            num(r, "/drained_ms"),
            "ms",
            false,
        );
    }
    out
}

/// A figure beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub name: String,
    pub baseline: f64,
    pub now: f64,
    pub unit: &'static str,
    /// Signed change in percent of the baseline, positive when better.
    pub better_by_pct: f64,
    /// "better", "worse" or "noise" (within the noise threshold).
    pub verdict: &'static str,
}

/// Every figure both runs have, compared.
pub fn compare(baseline: &[Figure], now: &[Figure], noise_pct: f64) -> Vec<Change> {
    now.iter()
        .filter_map(|n| {
            let b = baseline.iter().find(|b| b.name == n.name)?;
            let raw = if b.value == 0.0 {
                0.0
            } else {
                (n.value - b.value) / b.value.abs() * 100.0
            };
            let better_by_pct = if n.higher_is_better { raw } else { -raw };
            let verdict = if better_by_pct.abs() <= noise_pct {
                "noise"
            } else if better_by_pct > 0.0 {
                "better"
            } else {
                "worse"
            };
            Some(Change {
                name: n.name.clone(),
                baseline: b.value,
                now: n.value,
                unit: n.unit,
                better_by_pct,
                verdict,
            })
        })
        .collect()
}

/// The figures as CSV: a header, then `figure,value,unit` lines.
pub fn csv(figures: &[Figure]) -> String {
    let mut s = String::from("figure,value,unit\n");
    for f in figures {
        s.push_str(&format!("{},{},{}\n", f.name, f.value, f.unit));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_latency_is_better_and_small_changes_are_noise() {
        let fig = |name: &str, value: f64, higher: bool| Figure {
            name: name.into(),
            value,
            unit: "",
            higher_is_better: higher,
        };
        let base = [
            fig("rate", 100.0, true),
            fig("p99", 100.0, false),
            fig("x", 1.0, true),
        ];
        let now = [
            fig("rate", 103.0, true),
            fig("p99", 150.0, false),
            fig("y", 1.0, true),
        ];
        let c = compare(&base, &now, 5.0);
        assert_eq!(c.len(), 2, "only figures both runs have");
        assert_eq!(c[0].verdict, "noise");
        assert_eq!(c[1].verdict, "worse");
        assert!((c[1].better_by_pct + 50.0).abs() < 1e-9);
    }

    #[test]
    fn the_restart_scenarios_give_figures_named_by_their_stored_jobs() {
        let doc = serde_json::json!({
            "crash_broker": {"first_job_ms": 40.0, "drained_ms": 90.0},
            "recovery": [
                {"jobs": 100000, "first_job_ms": 120.0, "drained_ms": 900.0},
                {"jobs": 1000000, "first_job_ms": null, "drained_ms": null},
            ],
        });
        let names: Vec<(String, bool)> = figures(&doc)
            .into_iter()
            .map(|f| (f.name, f.higher_is_better))
            .collect();
        assert_eq!(
            names,
            [
                ("crash_broker.first_job_ms".to_string(), false),
                ("recovery.100000_jobs.first_job_ms".to_string(), false),
                ("recovery.100000_jobs.drained_ms".to_string(), false),
            ]
        );
    }
}
