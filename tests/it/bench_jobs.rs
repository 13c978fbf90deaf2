//! `aioq bench --scenario jobs` against aioq and the work queues people pick
//! instead (RabbitMQ, NATS JetStream, Redis Streams), each a real server
//! started for the test: every job arrives once where nothing is slow or
//! killed, and every figure says the promise it was measured at.

use serde_json::Value;

use crate::util::*;

/// A short run of both job scenarios, as `--json`.
fn jobs_run(extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec!["bench", "--json"];
    let defaults = [
        ("--scenario", "jobs"),
        ("--jobs", "3000"),
        ("--workers", "3"),
        ("--prefetch", "32"),
        ("--publishers", "1,4"),
        ("--stall-timeout", "20s"),
        ("--ack-wait", "1s"),
        ("--recovery-jobs", "3000"),
    ];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend_from_slice(&[flag, value]);
        }
    }
    args.extend_from_slice(extra);
    let out = std::process::Command::new(BIN)
        .args(&args)
        .output()
        .expect("run aioq bench");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc, err)
}

/// A broker the bench started, SIGKILLed and started again: every job it
/// confirmed came back once, nothing came that was never sent.
fn assert_kept_across_a_kill(run: &Value) {
    assert_eq!(run["durable"], true, "{run:#}");
    assert!(run["confirmed"].as_u64().unwrap() > 0, "{run:#}");
    for field in ["confirmed_lost", "duplicates", "never_published"] {
        assert_eq!(run[field], 0, "{field}: {run:#}");
    }
    assert!(run["first_job_ms"].as_f64().is_some(), "{run:#}");
}

/// The bench's --broker-cmd for a broker that promised no durability:
/// every confirmed job is gone after the kill, counted, and the run does
/// not call it a defect.
fn assert_lost_as_promised(code: Option<i32>, doc: &Value, err: &str) {
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    let c = &doc["crash_broker"];
    assert_eq!(c["durable"], false, "{c:#}");
    let confirmed = c["confirmed"].as_u64().unwrap();
    assert!(confirmed > 0, "{c:#}");
    assert_eq!(c["confirmed_lost"].as_u64(), Some(confirmed), "{c:#}");
    assert!(
        c["promise"]["settings"]
            .as_str()
            .unwrap()
            .starts_with("no durable promise"),
        "{c:#}"
    );
}

/// Every job of every run arrived once, at the promise `synced` says.
fn assert_nothing_lost(doc: &Value, broker: &str, synced: bool) {
    assert_eq!(doc["broker"], broker, "{doc:#}");
    let w = &doc["work"];
    assert_eq!(
        (w["lost"].as_u64(), w["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "{w:#}"
    );
    assert!(w["jobs_per_s"].as_f64().unwrap() > 0.0, "{w:#}");
    let shares = w["worker_shares"].as_array().unwrap();
    assert_eq!(shares.len(), 3, "{w:#}");
    let sum: f64 = shares.iter().map(|s| s.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-9, "{w:#}");
    assert_eq!(w["latency"]["samples"], 3000, "{w:#}");
    // The killed worker's jobs all reached another worker; what it had
    // finished but not yet acknowledged may come twice, and is counted.
    let c = &doc["crash_worker"];
    assert_eq!(c["lost"], 0, "{c:#}");
    assert!(c["held_by_killed"].as_u64().unwrap() > 0, "{c:#}");
    assert!(c["acked_by_killed"].as_u64().unwrap() > 0, "{c:#}");
    assert!(c["handed_on_ms"].as_f64().is_some(), "{c:#}");
    let d = doc["durable"].as_array().unwrap();
    let publishers: Vec<u64> = d
        .iter()
        .map(|r| r["publishers"].as_u64().unwrap())
        .collect();
    assert_eq!(publishers, [1, 4], "{doc:#}");
    for r in d {
        assert_eq!(
            (r["lost"].as_u64(), r["duplicates"].as_u64()),
            (Some(0), Some(0)),
            "{r:#}"
        );
        assert_eq!(r["confirm_latency"]["samples"], 3000, "{r:#}");
        assert_eq!(r["promise"]["synced_before_confirm"], synced, "{r:#}");
        assert!(!r["promise"]["settings"].as_str().unwrap().is_empty());
    }
}

/// Without --target the bench starts `aioq serve` itself, durable under
/// --fsync always: records per fsync come from its /metrics.
#[test]
fn aioq_keeps_every_job_and_says_its_fsync() {
    let (code, doc, err) = jobs_run(&[]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_nothing_lost(&doc, "aioq", true);
    for r in doc["durable"].as_array().unwrap() {
        assert!(r["records_per_fsync"].as_f64().unwrap() >= 1.0, "{r:#}");
        assert!(r["promise"]["settings"]
            .as_str()
            .unwrap()
            .contains("--fsync always"));
    }
    assert_kept_across_a_kill(&doc["crash_broker"]);
    let recovery = doc["recovery"].as_array().unwrap();
    assert_eq!(recovery.len(), 1, "{doc:#}");
    assert_kept_across_a_kill(&recovery[0]);
    assert_eq!(recovery[0]["confirmed"], 3000, "{doc:#}");
}

/// Pointed at an aioq broker that keeps `/queue` in memory, crash-broker
/// finds the loss it is built to find.
#[test]
fn crash_broker_counts_what_an_in_memory_queue_loses() {
    let cmd = format!("{BIN} serve --port {{port}} --http 127.0.0.1:{{http_port}}");
    let (code, doc, err) = jobs_run(&[
        "--scenario",
        "crash-broker",
        "--broker-cmd",
        &cmd,
        "--stall-timeout",
        "3s",
    ]);
    assert_lost_as_promised(code, &doc, &err);
}

#[test]
fn rabbitmq_is_measured_with_confirms_and_manual_acks() {
    let rabbit = crate::util::rabbitmq::Rabbit::start();
    let (code, doc, err) = jobs_run(&["--target", &rabbit.url()]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_nothing_lost(&doc, "rabbitmq", true);
    assert!(doc["durable"][0]["records_per_fsync"].is_null());
    assert!(
        doc["skipped"]
            .to_string()
            .contains("crash-broker: the bench kills only a broker it started"),
        "{doc:#}"
    );
    drop(rabbit);

    let cmd = crate::util::rabbitmq::Rabbit::command_line();
    let (code, doc, err) = jobs_run(&[
        "--scenario",
        "crash-broker",
        "--target",
        "amqp://127.0.0.1:{port}",
        "--broker-cmd",
        &cmd.line,
    ]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}\n{}", cmd.log_tail());
    assert_kept_across_a_kill(&doc["crash_broker"]);
}

/// JetStream's file store syncs on its own timer unless the server says
/// otherwise: the figures say "not synced" unless told `--nats-sync always`.
#[test]
fn jetstream_is_measured_with_a_pull_consumer_and_its_sync_stated() {
    let nats = crate::util::nats::Nats::start();
    let (code, doc, err) = jobs_run(&["--target", &nats.url()]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_nothing_lost(&doc, "jetstream", false);
    assert!(doc["durable"][0]["promise"]["settings"]
        .as_str()
        .unwrap()
        .contains("file storage"));

    let store = tempfile::tempdir().unwrap();
    let cmd = format!("nats-server -js -p {{port}} -sd {}", store.path().display());
    let (code, doc, err) = jobs_run(&[
        "--scenario",
        "crash-broker",
        "--target",
        "nats://127.0.0.1:{port}",
        "--broker-cmd",
        &cmd,
    ]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_kept_across_a_kill(&doc["crash_broker"]);
}

/// Redis Streams with AOF fsync always promises durability; without AOF it
/// promises none, and no durable figure is reported for it.
#[test]
fn redis_streams_are_durable_only_with_aof() {
    let redis =
        crate::util::redis::Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (code, doc, err) = jobs_run(&["--target", &redis.url()]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_nothing_lost(&doc, "redis-streams", true);

    let bare = crate::util::redis::Redis::start();
    let (code, doc, err) = jobs_run(&["--target", &bare.url()]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_eq!(doc["work"]["lost"], 0, "{doc:#}");
    assert_eq!(doc["durable"], serde_json::json!([]), "{doc:#}");
    let skipped = doc["skipped"].to_string();
    assert!(
        skipped.contains("durable: Redis keeps nothing across a restart without AOF"),
        "{skipped}"
    );

    // Killed and started again by the bench: with AOF every confirmed job
    // is back; without, every one is gone, as promised.
    let dir = tempfile::tempdir().unwrap();
    let redis_cmd = |aof: &str| {
        format!(
            "redis-server --port {{port}} --dir {} --save '' --appendonly {aof} \
             --appendfsync always",
            dir.path().display()
        )
    };
    let crash = |cmd: &str| {
        jobs_run(&[
            "--scenario",
            "crash-broker",
            "--target",
            "redis://127.0.0.1:{port}",
            "--broker-cmd",
            cmd,
            "--stall-timeout",
            "3s",
        ])
    };
    let (code, doc, err) = crash(&redis_cmd("yes"));
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_kept_across_a_kill(&doc["crash_broker"]);
    let (code, doc, err) = crash(&redis_cmd("no"));
    assert_lost_as_promised(code, &doc, &err);
}

/// An aioq broker that keeps no durable store gets no durable figure; one
/// whose prefix misses the bench's channel fails the run rather than
/// calling memory durable.
#[test]
fn an_aioq_broker_without_a_store_gets_no_durable_figure() {
    let broker = Broker::spawn(&["--http", "127.0.0.1:0"]);
    let target = format!("127.0.0.1:{}", broker.port);
    let metrics = format!("http://127.0.0.1:{}/metrics", broker.monitor_port());
    let (code, doc, err) = jobs_run(&["--target", &target, "--target-metrics", &metrics]);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_eq!(doc["durable"], serde_json::json!([]), "{doc:#}");
    assert!(
        doc["skipped"]
            .to_string()
            .contains("keeps no durable store"),
        "{doc:#}"
    );

    let data = tempfile::tempdir().unwrap();
    let elsewhere = Broker::spawn(&[
        "--http",
        "127.0.0.1:0",
        "--durable",
        "/queue/orders",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let target = format!("127.0.0.1:{}", elsewhere.port);
    let metrics = format!("http://127.0.0.1:{}/metrics", elsewhere.monitor_port());
    let (code, _, err) = jobs_run(&[
        "--target",
        &target,
        "--target-metrics",
        &metrics,
        "--scenario",
        "durable",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not keep /queue/bench-durable"), "{err}");

    // The same, with more jobs than the in-memory backlog holds: the
    // publishers are held back and nothing drains, so the run ends at its
    // stall timeout with the reason (it used to wait forever).
    let data = tempfile::tempdir().unwrap();
    let held = Broker::spawn(&[
        "--http",
        "127.0.0.1:0",
        "--durable",
        "/queue/orders",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--backlog",
        "500",
    ]);
    let target = format!("127.0.0.1:{}", held.port);
    let metrics = format!("http://127.0.0.1:{}/metrics", held.monitor_port());
    let (code, _, err) = jobs_run(&[
        "--target",
        &target,
        "--target-metrics",
        &metrics,
        "--scenario",
        "durable",
        "--stall-timeout",
        "3s",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not keep /queue/bench-durable"), "{err}");
}

/// A --broker-cmd that ends before it listens fails the run at once, with
/// what it said, rather than leaving the bench waiting on a port.
#[test]
fn a_broker_command_that_never_listens_fails_the_run_with_its_words() {
    // Were the ending not seen, the bench would wait 180 s for the port,
    // past the suite's 120 s backstop.
    let (code, _, err) = jobs_run(&[
        "--scenario",
        "crash-broker",
        "--broker-cmd",
        "echo no such broker here >&2; exit 3",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the broker ended"), "{err}");
    assert!(err.contains("no such broker here"), "{err}");
}
