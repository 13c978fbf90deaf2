//! `aioq bench`: it measures isolation correctly, and it can fail.

use std::process::Command;

use serde_json::Value;

use crate::util::{naive, BIN};

fn bench(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run aioq bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON document ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code(), doc, stderr)
}

fn assert_isolated(doc: &Value, mode: &str) {
    let runs = doc["isolation"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "topic and queue");
    for iso in runs {
        let kind = &iso["channel_kind"];
        let ratio = iso["isolation_ratio"].as_f64().unwrap();
        assert!(
            ratio >= 0.9,
            "{mode} {kind}: isolation ratio {ratio}\n{iso:#}"
        );
        for run in ["baseline", "with_slow"] {
            let r = &iso[run];
            assert_eq!(r["complete"], true, "{mode} {kind} {run}\n{r:#}");
            assert_eq!(
                r["fast"]["lost"], 0,
                "{mode} {kind} {run}: fast lost\n{r:#}"
            );
            assert_eq!(r["fast"]["duplicates"], 0, "{mode} {kind} {run}");
        }
        assert_eq!(iso["with_slow"]["slow"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn embedded_broker_isolates_a_stalled_subscriber() {
    let (code, doc, err) = bench(&[
        "--scenario",
        "isolation",
        "--slow-mode",
        "stall",
        "--duration",
        "4s",
        "--min-isolation",
        "0.5",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(doc["target"], "embedded");
    assert_isolated(&doc, "stall");
}

#[test]
fn embedded_broker_isolates_a_trickling_subscriber() {
    let (code, doc, err) = bench(&[
        "--scenario",
        "isolation",
        "--slow-mode",
        "trickle",
        "--duration",
        "4s",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_isolated(&doc, "trickle");
    let slow = &doc["isolation"][0]["with_slow"]["slow"][0];
    assert_eq!(slow["mode"], "trickle");
    assert!(
        slow["received"].as_u64().unwrap() > 0,
        "a trickler reads: {slow}"
    );
}

/// The bench can fail: a broker that awaits each subscriber's socket in turn
/// scores badly, and --min-isolation turns that into exit code 1.
#[test]
fn naive_broker_scores_below_half_and_fails_the_gate() {
    let port = naive::start();
    let target = format!("127.0.0.1:{port}");
    let (code, doc, _) = bench(&[
        "--target",
        &target,
        "--scenario",
        "isolation",
        "--slow-mode",
        "stall",
        "--duration",
        "2s",
        "--rate",
        "2000",
        "--size",
        "4KiB",
        "--min-isolation",
        "0.9",
    ]);
    assert_eq!(doc["target"], target.as_str());
    let topic = &doc["isolation"][0];
    assert_eq!(topic["channel_kind"], "topic");
    let ratio = topic["isolation_ratio"].as_f64().unwrap();
    assert!(
        ratio < 0.5,
        "naive broker should not look isolating: {ratio}\n{topic:#}"
    );
    assert_eq!(
        topic["with_slow"]["complete"], false,
        "publisher was held back"
    );
    assert_eq!(code, Some(1), "--min-isolation fails the run");
}

#[test]
fn json_report_has_every_documented_field() {
    let (code, doc, err) = bench(&[
        "--scenario",
        "all",
        "--duration",
        "1s",
        "--rate",
        "1000",
        "--messages",
        "20000",
        "--latency-duration",
        "1s",
        "--connections",
        "50",
    ]);
    assert_eq!(code, Some(0), "{err}");
    for key in [
        "schema_version",
        "aioq_version",
        "target",
        "isolation",
        "throughput",
        "latency",
        "fanout",
    ] {
        assert!(doc.get(key).is_some(), "missing {key}");
    }
    let lat = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "samples"];
    let iso = &doc["isolation"][0];
    for key in [
        "channel_kind",
        "baseline",
        "with_slow",
        "isolation_ratio",
        "p99_ratio",
    ] {
        assert!(iso.get(key).is_some(), "isolation.{key}");
    }
    let run = &iso["with_slow"];
    for key in [
        "slow_subscribers",
        "target_rate",
        "published",
        "publish_rate",
        "complete",
        "fast",
        "slow",
    ] {
        assert!(run.get(key).is_some(), "run.{key}");
    }
    for key in [
        "subscribers",
        "delivered_per_s",
        "delivered_fraction",
        "lost",
        "duplicates",
        "reordered",
        "latency",
    ] {
        assert!(run["fast"].get(key).is_some(), "fast.{key}");
    }
    for key in lat {
        assert!(run["fast"]["latency"].get(key).is_some(), "latency.{key}");
    }
    for key in ["mode", "received", "disconnected_by_broker"] {
        assert!(run["slow"][0].get(key).is_some(), "slow.{key}");
    }
    let tp = doc["throughput"].as_array().unwrap();
    assert_eq!(tp.len(), 2);
    for t in tp {
        for key in [
            "channel_kind",
            "subscribers",
            "size",
            "published",
            "published_per_s",
            "expected_deliveries",
            "delivered",
            "delivered_per_s",
            "delivered_mb_per_s",
            "lost",
            "complete",
        ] {
            assert!(t.get(key).is_some(), "throughput.{key}");
        }
        assert_eq!(t["published"], 20000);
    }
    assert_eq!(
        doc["throughput"][1]["lost"], 0,
        "queue throughput never loses"
    );
    let l = &doc["latency"];
    assert_eq!(l["complete"], true);
    assert_eq!(l["received"], l["published"]);
    for key in lat {
        assert!(l["latency"].get(key).is_some(), "latency.{key}");
    }
    let f = &doc["fanout"];
    assert_eq!(f["connections"], 50);
    assert_eq!(f["complete"], true, "{f:#}");
    assert_eq!(f["delivered"], 50 * 1000);
    assert!(f["rss_per_connection_bytes"].as_u64().is_some());
    for key in lat {
        assert!(f["fanout_time"].get(key).is_some(), "fanout_time.{key}");
    }
}
