//! `aioq bench`: it measures isolation correctly, and it can fail.

use std::process::Command;

use serde_json::Value;

use crate::util::{free_port, hole, naive, Proc, BIN};

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
        assert_eq!(iso["verdict"], "measured", "{mode} {kind}\n{iso:#}");
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
        "verdict",
        "stall",
        "isolation_ratio",
        "p99_ratio",
    ] {
        assert!(iso.get(key).is_some(), "isolation.{key}");
    }
    for key in ["owed_bytes", "path_bytes", "publisher_held_back", "felt"] {
        assert!(iso["stall"].get(key).is_some(), "stall.{key}");
    }
    let run = &iso["with_slow"];
    for key in [
        "slow_subscribers",
        "target_rate",
        "published",
        "published_bytes",
        "publisher_held_back",
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
        // The embedded broker's physics: a flood is written in batches, and
        // the broker's threads spent CPU on it.
        let p = &t["physics"];
        assert!(p["messages_per_write"].as_f64().unwrap() >= 1.0, "{p}");
        assert!(p["bytes_per_write"].as_f64().unwrap() > 64.0, "{p}");
        assert!(p["cpu_ns_per_delivery"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert_eq!(
        doc["throughput"][1]["lost"], 0,
        "queue throughput never loses"
    );
    // Each worker's share of the queue: every worker got some, none all;
    // none for a topic.
    assert!(doc["throughput"][0]["worker_shares"].is_null());
    let shares = &doc["throughput"][1]["worker_shares"];
    let (lo, hi) = (shares[0].as_f64().unwrap(), shares[1].as_f64().unwrap());
    assert!(lo > 0.0 && lo <= hi && hi < 1.0, "{shares}");
    let l = &doc["latency"];
    assert_eq!(l["complete"], true);
    assert_eq!(l["received"], l["published"]);
    for key in lat {
        assert!(l["latency"].get(key).is_some(), "latency.{key}");
        assert!(l["intended_latency"].get(key).is_some(), "intended.{key}");
    }
    // From the due time is never less than from the send time.
    assert!(l["intended_latency"]["p50_us"].as_u64() >= l["latency"]["p50_us"].as_u64());
    let f = &doc["fanout"];
    assert_eq!(f["connections"], 50);
    assert_eq!(f["complete"], true, "{f:#}");
    assert_eq!(f["delivered"], 50 * 1000);
    assert!(f["rss_per_connection_bytes"].as_u64().is_some());
    for key in lat {
        assert!(f["fanout_time"].get(key).is_some(), "fanout_time.{key}");
    }
}

/// The bench never calls a broker that waits on each subscriber in turn
/// isolating: the runs a user would try (the default rate and size, and a
/// light one that the kernel's buffers could absorb) give it a ratio below
/// 0.5 or no verdict, never a pass; the same light run passes `aioq serve`.
/// Without the priming burst, a light run is inconclusive, and that fails
/// the gate.
#[test]
fn the_bench_never_calls_a_non_isolating_broker_isolating() {
    let port = naive::start();
    let naive_target = format!("127.0.0.1:{port}");
    let light = ["--rate", "2000", "--duration", "4s"];
    // The default rate and size, on a shorter run than the default 10 s.
    for extra in [&["--duration", "4s"][..], &light] {
        let mut args = vec!["--target", &naive_target, "--scenario", "isolation"];
        args.extend_from_slice(extra);
        args.extend(["--min-isolation", "0.9"]);
        let (code, doc, err) = bench(&args);
        let topic = &doc["isolation"][0];
        let passed = topic["isolation_ratio"].as_f64().is_some_and(|r| r >= 0.5);
        assert!(
            !passed,
            "{args:?}: the naive broker passed\n{topic:#}\n{err}"
        );
        if topic["verdict"] == "measured" {
            assert_eq!(topic["stall"]["felt"], true);
        }
        assert_eq!(code, Some(1), "{args:?}: --min-isolation must fail it");
    }

    let broker = crate::util::Broker::spawn(&[]);
    let target = format!("127.0.0.1:{}", broker.port);
    let mut args = vec!["--target", &target, "--scenario", "isolation"];
    args.extend_from_slice(&light);
    let (code, doc, err) = bench(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_isolated(&doc, "aioq serve, light run");

    let args = [
        "--target",
        &target,
        "--scenario",
        "isolation",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--no-prime",
        "--min-isolation",
        "0.5",
    ];
    let (code, doc, _) = bench(&args);
    let topic = &doc["isolation"][0];
    assert_eq!(topic["verdict"], "inconclusive", "{topic:#}");
    assert!(topic["isolation_ratio"].is_null());
    assert_eq!(code, Some(1), "an inconclusive run fails --min-isolation");
}

/// Comparable runs: a run set beside a baseline prints each figure with its
/// change; --max-regression fails a run that got worse by more; --csv gives
/// the same figures to a spreadsheet.
#[test]
fn compare_marks_changes_and_max_regression_gates_a_worse_run() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--scenario", "latency", "--latency-duration", "1s"];
    let (code, doc, err) = bench(&quick);
    assert_eq!(code, Some(0), "{err}");
    let base = dir.path().join("base.json");
    std::fs::write(&base, doc.to_string()).unwrap();
    let base_s = base.to_str().unwrap();

    let mut args = quick.to_vec();
    args.extend(["--compare", base_s, "--max-regression", "10000"]);
    let (code, now, err) = bench(&args);
    assert_eq!(code, Some(0), "{err}");
    let cmp = now["comparison"].as_array().unwrap();
    assert!(cmp.iter().any(|c| c["name"] == "latency.p99_us"), "{cmp:?}");
    for c in cmp {
        assert!(["better", "worse", "noise"].contains(&c["verdict"].as_str().unwrap()));
    }

    // A baseline that was ten times faster: this run is a regression.
    let mut fast = doc.clone();
    for p in ["p50_us", "p99_us", "p999_us"] {
        let v = fast["latency"]["latency"][p].as_f64().unwrap();
        fast["latency"]["latency"][p] = serde_json::json!((v / 10.0).max(1.0));
    }
    let fast_path = dir.path().join("fast.json");
    std::fs::write(&fast_path, fast.to_string()).unwrap();
    let mut args = quick.to_vec();
    args.extend([
        "--compare",
        fast_path.to_str().unwrap(),
        "--max-regression",
        "50",
    ]);
    let (code, _, err) = bench(&args);
    assert_eq!(code, Some(1), "{err}");
    // Which figure the gate names first depends on the run: every one of
    // the three is ten times worse than its baseline, save a base run whose
    // p99 was a spike the second run did not have.
    assert!(
        ["p50_us", "p99_us", "p999_us"]
            .iter()
            .any(|p| err.contains(&format!("latency.{p} got worse"))),
        "{err}"
    );
    assert!(err.contains("past --max-regression 50%"), "{err}");

    let out = Command::new(BIN)
        .args(["bench", "--csv"])
        .args(quick)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("figure,value,unit"));
    assert!(lines.any(|l| l.starts_with("latency.p99_us,")), "{csv}");
}

/// On a terminal the bench says each second what went through; piped, its
/// stderr stays quiet.
#[test]
fn a_live_line_on_a_terminal_and_nothing_when_piped() {
    let cmd = format!("{BIN} bench --scenario latency --latency-duration 2s");
    let tty = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
        .expect("script(1), from bsdutils");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(
        shown.contains("latency: sent ") && shown.contains("/s, delivered "),
        "{shown}"
    );
    let piped = Command::new(BIN)
        .args(["bench", "--scenario", "latency", "--latency-duration", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(!err.contains("sent "), "{err}");
}

/// Every scenario a broker supports, short, as `--json`.
fn peer_run(target: &str) -> Value {
    let (code, doc, err) = bench(&[
        "--target",
        target,
        "--duration",
        "2s",
        "--rate",
        "2000",
        "--messages",
        "20000",
        "--latency-duration",
        "1s",
        "--connections",
        "50",
    ]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    doc
}

/// What any lossless broker must show in a short run of every scenario.
fn assert_peer_measured(doc: &Value, broker: &str, kinds: &[&str]) {
    assert_eq!(doc["broker"], broker, "{doc:#}");
    let iso = doc["isolation"].as_array().unwrap();
    let got: Vec<&str> = iso
        .iter()
        .map(|i| i["channel_kind"].as_str().unwrap())
        .collect();
    assert_eq!(got, kinds, "{doc:#}");
    for i in iso {
        // Stalled in the broker's own protocol and owed past the kernel's
        // buffers: the stall reached the broker, so a ratio is claimed.
        assert_eq!(i["verdict"], "measured", "{i:#}");
        assert!(i["isolation_ratio"].as_f64().is_some(), "{i:#}");
        assert_eq!(i["baseline"]["fast"]["lost"], 0, "{i:#}");
        assert_eq!(i["with_slow"]["slow"].as_array().unwrap().len(), 1);
    }
    let tp = doc["throughput"].as_array().unwrap();
    assert_eq!(tp.len(), kinds.len(), "{doc:#}");
    for t in tp {
        assert_eq!(t["lost"], 0, "{t:#}");
        assert_eq!(t["delivered"], t["expected_deliveries"], "{t:#}");
    }
    let lat = &doc["latency"];
    assert_eq!(lat["complete"], true, "{lat:#}");
    assert_eq!(lat["received"], lat["published"], "{lat:#}");
    assert_eq!(doc["fanout"]["complete"], true, "{doc:#}");
}

#[test]
fn nats_is_measured_in_its_own_protocol_with_queue_groups() {
    let nats = crate::util::nats::Nats::start();
    let doc = peer_run(&nats.url());
    assert_peer_measured(&doc, "nats", &["topic", "queue"]);
    assert_eq!(doc["skipped"].as_array().unwrap().len(), 0);
}

#[test]
fn redis_is_measured_in_its_own_protocol_and_says_it_has_no_queues() {
    let redis = crate::util::redis::Redis::start();
    let doc = peer_run(&redis.url());
    assert_peer_measured(&doc, "redis", &["topic"]);
    let skipped = doc["skipped"].to_string();
    assert!(skipped.contains("/queue"), "{skipped}");
}

#[test]
fn a_target_in_no_known_protocol_is_a_usage_error() {
    for target in ["mqtt://127.0.0.1:1883", "nats://127.0.0.1", "redis://:6379"] {
        let out = Command::new(BIN)
            .args(["bench", "--target", target])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {err}");
        assert!(err.contains("nats://HOST:PORT"), "{target}: {err}");
    }
    // RabbitMQ is known, but only to the work-queue scenarios.
    let out = Command::new(BIN)
        .args(["bench", "--target", "amqp://127.0.0.1:5672"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--scenario work, durable or jobs"), "{err}");
}

/// A NATS or Redis target nobody listens on is "cannot be reached" (exit 3,
/// as for aioq), and a password in the URL is said nowhere.
#[test]
fn an_unreachable_peer_exits_3_and_never_shows_its_password() {
    let port = free_port();
    for target in [
        format!("nats://user:hunter2@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let out = Command::new(BIN)
            .args(["bench", "--target", &target, "--json"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{target}: {said}");
        assert!(said.contains("cannot reach"), "{target}: {said}");
        assert!(!said.contains("hunter2"), "{target}: {said}");
    }
}

/// Against a separate aioq broker, the physics come from its own counters
/// (`--target-metrics`): the messages and bytes per socket write agree with
/// what the broker says it wrote, and the kinds can be chosen.
#[test]
fn a_served_broker_reports_its_physics_through_its_metrics() {
    let broker = crate::util::Broker::spawn(&["--http", "127.0.0.1:0"]);
    let line = broker.log.wait_for(10.0, "monitoring on http://");
    let port = line.rsplit(':').next().unwrap().trim();
    let target = format!("127.0.0.1:{}", broker.port);
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let (code, doc, err) = bench(&[
        "--target",
        &target,
        "--target-metrics",
        &metrics,
        "--scenario",
        "throughput",
        "--kinds",
        "queue",
        "--messages",
        // Enough for the broker's CPU time (10 ms ticks) to show.
        "200000",
    ]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    let tp = doc["throughput"].as_array().unwrap();
    assert_eq!(tp.len(), 1, "only /queue was asked for: {doc:#}");
    assert_eq!(tp[0]["channel_kind"], "queue");
    let p = &tp[0]["physics"];
    let per_write = p["messages_per_write"].as_f64().expect("physics");
    let bytes = p["bytes_per_write"].as_f64().unwrap();
    assert!(per_write >= 1.0, "{p}");
    // Every frame is the 64-byte payload and its 4-byte length prefix.
    let frame = 68.0;
    assert!(
        (bytes / per_write - frame).abs() < 1.0,
        "{bytes} B per write for {per_write} messages: not {frame} B each: {p}"
    );
    assert!(p["cpu_ns_per_delivery"].as_f64().unwrap() > 0.0, "{p}");

    // A metrics page that does not answer costs the physics, not the run.
    let (code, doc, err) = bench(&[
        "--target",
        &target,
        "--target-metrics",
        "http://127.0.0.1:1/metrics",
        "--scenario",
        "throughput",
        "--kinds",
        "topic",
        "--messages",
        "2000",
    ]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_eq!(doc["throughput"][0]["lost"], 0, "{doc:#}");
    assert!(doc["throughput"][0]["physics"].is_null(), "{doc:#}");
    assert!(err.contains("127.0.0.1:1/metrics"), "{err}");

    // Only an aioq broker has these counters.
    let out = Command::new(BIN)
        .args(["bench", "--target", "nats://127.0.0.1:1"])
        .args(["--target-metrics", &metrics])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--target-metrics"), "{err}");
}

/// A broker that takes a connection and then reads nothing does not hang the
/// bench: the throughput run gives up after `--stall-timeout`, exit 1,
/// saying how far it got.
#[test]
fn a_broker_that_stops_reading_fails_the_run_after_the_stall_timeout() {
    let (target, _) = hole();
    let mut run = Proc::spawn(
        &[
            "bench",
            "--target",
            &target,
            "--scenario",
            "throughput",
            "--kinds",
            "queue",
            "--stall-timeout",
            "2s",
        ],
        false,
    );
    assert_eq!(run.exit_code(30.0), Some(1), "{}", run.err.text());
    let err = run.err.text();
    assert!(
        err.contains("throughput (queue): nothing sent or delivered for 2s")
            && err.contains("0 delivered")
            && err.contains("the broker stopped taking messages"),
        "{err}"
    );
}

/// Ctrl-C during a run ends the bench at once with 130 and says so, rather
/// than leaving without a word (here the run waits on a broker that reads
/// nothing, for a stall timeout far away).
#[test]
fn an_interrupted_bench_says_so_and_exits_130() {
    let (target, connected) = hole();
    let mut run = Proc::spawn(
        &[
            "bench",
            "--target",
            &target,
            "--scenario",
            "throughput",
            "--kinds",
            "queue",
            "--stall-timeout",
            "10m",
        ],
        false,
    );
    connected
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the bench connects");
    crate::util::signal(&run.child, "INT");
    assert_eq!(run.exit_code(10.0), Some(130), "{}", run.err.text());
    let err = run.err.text();
    assert!(err.contains("interrupted before any run finished"), "{err}");
}
