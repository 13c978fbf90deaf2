//! `aioq metrics`: reporters, the collector, its SSE feed and page, over a real
//! broker; the page in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::util::*;

fn report(port: u16, name: &str, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec![
        "metrics",
        "report",
        "--port",
        &port,
        "--name",
        name,
        "--interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args, false)
}

fn collect(port: u16) -> (Proc, u16) {
    collect_with(port, &["--stale-after", "1s"])
}

/// A collector with its page on a free port, and that port.
fn collect_with(port: u16, extra: &[&str]) -> (Proc, u16) {
    let port = port.to_string();
    let mut args = vec![
        "metrics",
        "collect",
        "--port",
        &port,
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let c = Proc::spawn(&args, false);
    let line = c.err.wait_for(10.0, "serving the metrics page on http://");
    let http = line
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    (c, http)
}

fn samples(c: &Proc, name: &str) -> Vec<Value> {
    c.out
        .snapshot()
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON lines when stdout is not a terminal")
        })
        .filter(|s| s["name"] == name)
        .collect()
}

async fn reporter(http_port: u16, name: &str) -> Option<Value> {
    let (_, doc) = http(http_port, "GET", "/api/reporters", None).await;
    doc["reporters"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_the_collector_its_feed_and_api_and_go_stale() {
    let broker = Broker::spawn(&[]);
    let (c, web) = collect(broker.port);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let mut red = report(broker.port, "red", &[]);
    wait_until_async(10.0, "samples from red", || samples(&c, "red").len() >= 3).await;
    let s = &samples(&c, "red")[2];
    assert_eq!(s["pid"], red.child.id());
    assert!(s["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(
        s["timestamp"].as_str().unwrap().ends_with('Z'),
        "ISO 8601 UTC: {s}"
    );
    assert!(s["cpu_percent"].as_f64().is_some());
    assert!(s["memory_mib"].as_f64().unwrap() > 0.0);
    assert!(s["threads"].as_u64().unwrap() >= 1);

    // The SSE feed: history, then live samples, as `event: sample`.
    let mut sse = TcpStream::connect(("127.0.0.1", web)).await.unwrap();
    sse.write_all(b"GET /feed HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(sse).lines();
    let mut saw_header = false;
    let data = within(10.0, "an SSE sample from red", async {
        loop {
            let l = lines.next_line().await.unwrap().unwrap();
            saw_header |= l.eq_ignore_ascii_case("content-type: text/event-stream");
            if l == "event: sample" {
                let d = lines.next_line().await.unwrap().unwrap();
                if d.contains("\"red\"") {
                    return d;
                }
            }
        }
    })
    .await;
    assert!(saw_header, "served as text/event-stream");
    let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["name"], "red");

    let r = reporter(web, "red").await.expect("red in /api/reporters");
    assert_eq!(r["stale"], false);
    assert!(r["samples"].as_u64().unwrap() >= 3);
    assert_eq!(r["pid"], red.child.id());

    // Quiet for longer than --stale-after: marked stale.
    signal(&red.child, "KILL");
    let _ = red.exit_code(5.0);
    within(10.0, "red marked stale", async {
        while !reporter(web, "red")
            .await
            .is_some_and(|r| r["stale"] == true)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_resume_after_a_broker_restart_without_restarting_anyone() {
    let mut broker = Broker::spawn(&[]);
    let (c, _) = collect(broker.port);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let red = report(broker.port, "red", &[]);
    wait_until_async(10.0, "samples before the restart", || {
        samples(&c, "red").len() >= 2
    })
    .await;
    broker.terminate();
    let before = samples(&c, "red").len();
    let broker = Broker::spawn_on(broker.port, &[]);
    wait_until_async(20.0, "samples after the restart", || {
        samples(&c, "red").len() >= before + 3
    })
    .await;
    c.err.wait_for_async(5.0, "reconnected to").await;
    assert!(red.err.contains("reconnected to"), "{}", red.err.text());
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_exits_non_zero_when_the_watched_process_exits() {
    let broker = Broker::spawn(&[]);
    let mut sleeper = Command::new("sleep").arg("1").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let mut r = report(broker.port, "sleeper", &["--pid", &pid]);
    let _ = sleeper.wait();
    assert_eq!(r.exit_code(10.0), Some(1));
    assert!(
        r.err.contains(&format!("process {pid} exited")),
        "{}",
        r.err.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_reports_itself_with_its_counters() {
    let broker = Broker::spawn(&["--metrics", "--metrics-interval", "200ms"]);
    let (_c, web) = collect(broker.port);
    let r = within(10.0, "the broker among the reporters", async {
        loop {
            if let Some(r) = reporter(web, "aioq-serve").await {
                if r["samples"].as_u64().unwrap() >= 2 {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(r["pid"], broker.child.id());
    let counters = &r["broker"];
    assert!(counters["connections"].as_u64().unwrap() >= 1, "{counters}");
    for key in ["messages_in_per_s", "delivered_per_s", "dropped_total"] {
        assert!(counters.get(key).is_some(), "{key} in {counters}");
    }
}

fn playwright() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let module = dir.join("node_modules/playwright-core");
    if !module.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("playwright-core@1")
            .status()
            .expect("npm (Node.js) is needed for the browser test")
            .success();
        assert!(ok, "npm install playwright-core failed");
    }
    module
}

/// Publishes samples as reporter `name`, one per (pid, seq), a few
/// milliseconds apart (the collector stamps each with its own time).
async fn forge(port: u16, name: &str, samples: &[(u32, u64)]) {
    let mut p = Raw::subscribe(port, "/null").await;
    for &(pid, seq) in samples {
        let s = serde_json::json!({
            "name": name, "pid": pid, "host": "h", "timestamp": "2026-01-01T00:00:00Z",
            "cpu_percent": 1.0, "memory_mib": 10.0, "seq": seq, "started": 1000 + pid,
            "connects": 1, "cpus": 2,
        });
        p.publish("/topic/metrics", s.to_string().as_bytes()).await;
        p.goodbye().await;
        assert!(p.closed().await, "the broker confirmed the sample");
        p = Raw::subscribe(port, "/null").await;
    }
}

/// The page in a real headless Chromium: both charts draw a series for each of
/// two reporters, a gap and a restart are marked on the charts, the leaking
/// reporter is flagged in the table and the steady one is not. The
/// screenshot is left for people to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_draws_live_charts_in_headless_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Chromium is needed: apt-get install chromium (tests/run.sh installs it)"
    );
    let module = playwright();
    let broker = Broker::spawn(&[]);
    let (_c, web) = collect(broker.port);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let _red = report(broker.port, "red", &[]);
    let _green = report(broker.port, "green", &["--leak", "20000"]);
    // A reporter of its own making: samples lost on the way, then a restart.
    forge(
        broker.port,
        "forged",
        &[(1, 0), (1, 1), (1, 2), (1, 5), (2, 0)],
    )
    .await;
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-page.png");
    let _ = std::fs::remove_file(&shot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/metrics_page.cjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(format!("http://127.0.0.1:{web}/"))
            .arg(&shot)
            .env("PLAYWRIGHT_CORE", module)
            .output()
            .expect("node")
    });
    let out = within(60.0, "the page draws", out).await.unwrap();
    assert!(
        out.status.success(),
        "browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["drawn"]["cpu"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["drawn"]["mem"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["status"], "live");
    let marks = report["marks"].to_string();
    assert!(
        marks.contains("gap: 2 sample(s) lost") && marks.contains("restart"),
        "{marks}"
    );
    assert_eq!(
        report["flags"]["green"],
        serde_json::json!(["LEAK?"]),
        "{report}"
    );
    assert_eq!(report["flags"]["red"], serde_json::json!([]), "{report}");
    // Reporters named after colours are drawn in them; another name gets a
    // palette colour of its own.
    assert_eq!(report["colours"]["red"], "#d62728", "{report}");
    assert_eq!(report["colours"]["green"], "#2ca02c", "{report}");
    assert!(
        report["colours"]["forged"]
            .as_str()
            .is_some_and(|c| c.starts_with('#')),
        "{report}"
    );
    assert_eq!(report["errors"], serde_json::json!([]), "no script errors");
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-page.png");
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "a real screenshot"
    );
    eprintln!("screenshot: {}", png.display());
}

/// The README's `--leak` demo left running holds steady at --leak-limit
/// instead of taking the machine (100,000 items every 200 ms would be
/// 50 MB a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leak_demo_stops_at_its_limit() {
    let broker = Broker::spawn(&[]);
    let mut samples = Raw::subscribe(broker.port, "/topic/metrics").await;
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let demo = report(
        broker.port,
        "leaky",
        &["--leak", "100000", "--leak-limit", "8MiB"],
    );
    for _ in 0..12 {
        within(10.0, "a sample", samples.read_text()).await;
    }
    let rss_kib = proc_status(demo.child.id(), "VmRSS");
    assert!(
        rss_kib < 64 * 1024,
        "RSS {rss_kib} KiB after 12 samples of the demo"
    );
}

/// Any client of the broker can publish on /topic/metrics. Hostile samples
/// (a megabyte name, thousands of distinct names, a far-future timestamp, a
/// name holding terminal escapes) leave the collector bounded and its output
/// safe: long names are refused and counted, reporters past
/// --max-reporters too, times are the collector's, and names reach the
/// terminal escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_samples_leave_the_collector_bounded_and_its_display_safe() {
    let broker = Broker::spawn(&[]);
    let (c, http_port) = collect_with(broker.port, &["--max-reporters", "50"]);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let sample = |name: &str, timestamp: &str| {
        serde_json::json!({
            "name": name, "pid": 1, "host": "h", "timestamp": timestamp,
            "cpu_percent": 1.0, "memory_mib": 1.0,
        })
        .to_string()
    };
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish(
        "/topic/metrics",
        sample(&"x".repeat(1 << 20), "2026-01-01T00:00:00Z").as_bytes(),
    )
    .await;
    for i in 0..2000 {
        p.publish(
            "/topic/metrics",
            sample(&format!("r{i}"), "2026-01-01T00:00:00Z").as_bytes(),
        )
        .await;
    }
    p.publish(
        "/topic/metrics",
        sample("r0", "2999-01-01T00:00:00Z").as_bytes(),
    )
    .await;
    // 50 admitted, then r0 once more: 51 lines once every sample is handled.
    wait_until_async(20.0, "every sample handled", || c.out.len() >= 51).await;
    let doc = http(http_port, "GET", "/api/reporters", None).await.1;
    let reporters = doc["reporters"].as_array().unwrap();
    assert_eq!(reporters.len(), 50, "bounded by --max-reporters");
    assert_eq!(doc["refused"]["name_too_long"], 1, "{}", doc["refused"]);
    assert_eq!(
        doc["refused"]["too_many_reporters"], 1950,
        "{}",
        doc["refused"]
    );
    // Times are the collector's: nothing from 2999, nothing from January.
    for line in c.out.snapshot() {
        let s: Value = serde_json::from_str(&line).unwrap();
        let t = s["timestamp"].as_str().unwrap();
        assert!(
            !t.starts_with("2999") && !t.starts_with("2026-01-01"),
            "{t}"
        );
    }
}

/// On a terminal, names with control characters are shown escaped: a
/// reporter cannot clear or rewrite the operator's screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_name_cannot_steer_the_terminal() {
    let broker = Broker::spawn(&[]);
    let cmd = format!("{BIN} metrics collect --port {}", broker.port);
    let mut tty = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script(1), from bsdutils");
    let out = Lines::follow(tty.stdout.take().unwrap());
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let evil = "evil\u{1b}[2J\u{1b}[31mred";
    let sample = serde_json::json!({
        "name": evil, "pid": 1, "host": "h\u{7}", "timestamp": "x",
        "cpu_percent": 1.0, "memory_mib": 1.0,
    });
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/metrics", sample.to_string().as_bytes())
        .await;
    out.wait_for_async(10.0, "evil\\u{1b}[2J").await;
    assert!(
        !out.text().contains(evil),
        "the raw escape reached the terminal"
    );
    let _ = tty.kill();
    let _ = tty.wait();
}

/// A reporter whose memory grows at every sample is flagged (API, table,
/// Prometheus), a steady one is not; the collector's /metrics parses as the
/// Prometheus text format, one series per reporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_is_flagged_and_the_collector_exports_prometheus() {
    let broker = Broker::spawn(&[]);
    let (c, http_port) = collect(broker.port);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let _leaky = report(broker.port, "leaky", &["--leak", "100000"]);
    let _steady = report(broker.port, "steady", &[]);
    // report() samples every 200 ms: twelve samples fill the trend window.
    wait_until_async(20.0, "a full trend window", || {
        samples(&c, "leaky").len() >= 12
    })
    .await;
    let leaky = reporter(http_port, "leaky").await.unwrap();
    assert_eq!(leaky["leak_suspected"], true, "{leaky}");
    assert!(
        leaky["memory_growth_mib_per_min"].as_f64().unwrap() > 10.0,
        "{leaky}"
    );
    wait_until_async(20.0, "steady has a full window", || {
        samples(&c, "steady").len() >= 12
    })
    .await;
    let steady = reporter(http_port, "steady").await.unwrap();
    assert_eq!(steady["leak_suspected"], false, "{steady}");

    let (status, _, body) = http_get(http_port, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text format");
    let leak = |who: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "aioq_reporter_leak_suspected" && s.labels.get("reporter") == Some(who)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(leak("leaky"), Some(1.0), "{body}");
    assert_eq!(leak("steady"), Some(0.0), "{body}");
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "process_resident_memory_bytes"
            && s.labels.get("reporter") == Some("steady")));
}

/// A reporter that goes quiet is forgotten after --forget-after: the map of
/// reporters does not keep every name it ever saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_reporter_is_forgotten() {
    let broker = Broker::spawn(&[]);
    let (_c, http_port) = collect_with(broker.port, &["--forget-after", "1s"]);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let mut r = report(broker.port, "brief", &[]);
    poll_until(10.0, "the reporter to appear", || async {
        reporter(http_port, "brief")
            .await
            .ok_or("absent".to_string())
    })
    .await;
    let _ = r.child.kill();
    let _ = r.child.wait();
    poll_until(10.0, "the quiet reporter to be forgotten", || async {
        match reporter(http_port, "brief").await {
            Some(r) => Err(r.to_string()),
            None => Ok(()),
        }
    })
    .await;
}

/// The pipeline is watched: lost samples and restarts are counted and marked
/// in the API, and the history downloads as CSV (names defused for
/// spreadsheets) and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_restarts_are_counted_and_the_history_downloads() {
    let broker = Broker::spawn(&[]);
    let (_c, web) = collect(broker.port);
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    forge(
        broker.port,
        "=1+1",
        &[(7, 0), (7, 1), (7, 4), (8, 0), (8, 1)],
    )
    .await;
    let r = poll_until(10.0, "five samples of =1+1", || async {
        reporter(web, "=1+1")
            .await
            .filter(|r| r["samples"] == 5)
            .ok_or("fewer".to_string())
    })
    .await;
    assert_eq!(r["lost_samples"], 2, "{r}");
    assert_eq!(r["restarts"], 1, "{r}");
    assert_eq!(r["cpu_percent_of_machine"], 0.5, "{r}");
    let marks: Vec<&str> = r["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["what"].as_str().unwrap())
        .collect();
    assert_eq!(marks, ["gap: 2 sample(s) lost", "restart"]);

    let (status, head, csv) = http_get(web, "/history.csv").await;
    assert_eq!(status, 200);
    assert!(head.contains("attachment"), "{head}");
    let rows: Vec<&str> = csv.lines().filter(|l| l.contains("1+1")).collect();
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(
        rows.iter().all(|r| r.contains(",\"'=1+1\",")),
        "defused: {csv}"
    );
    assert!(rows[2].ends_with(",\"gap: 2 sample(s) lost\""), "{csv}");
    let (status, _, json) = http_get(web, "/history.json").await;
    assert_eq!(status, 200);
    let history: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(history.iter().filter(|s| s["name"] == "=1+1").count(), 5);
}

/// Quiet when nobody watches: with its stdout on /dev/null and no browser,
/// the collector tells reporters so, and they sample at --idle-interval; a
/// browser on the feed brings them back to --interval at once, and they slow
/// down again when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporters_slow_down_when_nobody_watches_and_speed_up_for_a_viewer() {
    let broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let mut c = Killed(
        std::process::Command::new(BIN)
            .args(["metrics", "collect", "--port", &port])
            .args(["--http", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = Lines::follow(c.0.stderr.take().unwrap());
    let web: u16 = log
        .wait_for(10.0, "serving the metrics page on http://")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let r = report(broker.port, "calm", &["--idle-interval", "3s"]);
    let since = |v: &Value| v["seconds_since_seen"].as_f64().unwrap_or(0.0);
    // Nobody watches: a sample every 3 s, so one goes unseen for over 1 s.
    let slowed = || async {
        match reporter(web, "calm").await {
            Some(v) if since(&v) > 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    poll_until(20.0, "the reporter to slow down", slowed).await;
    r.err.wait_for(5.0, "nobody watches: sampling every 3s");

    // A browser connects: at 200 ms again, within a second or two.
    let mut feed = TcpStream::connect(("127.0.0.1", web)).await.unwrap();
    feed.write_all(b"GET /feed HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(feed).lines();
    let live = within(15.0, "ten live samples", async {
        let mut live = Vec::new();
        while live.len() < 10 {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.starts_with("id:") {
                live.push(std::time::Instant::now());
            }
        }
        live
    })
    .await;
    let span = live[9].duration_since(live[5]);
    assert!(span < Duration::from_secs(2), "4 samples took {span:?}");
    r.err.wait_for(5.0, "someone watches: sampling every 200ms");

    // The browser leaves: slow again.
    drop(lines);
    poll_until(20.0, "the reporter to slow down again", slowed).await;
    drop(c);
}

/// Clients that open `/feed` and never read it cannot lock the page out:
/// feeds get half the places (past that, 503 with Retry-After), so the page
/// and the API keep answering. Before, 64 such clients took every place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_holders_cannot_lock_out_the_page() {
    let broker = Broker::spawn(&[]);
    let (_c, web) = collect_with(broker.port, &["--http-max-connections", "8"]);
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", web)).await.unwrap();
        s.write_all(b"GET /feed HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut first = BufReader::new(s);
        let mut status = String::new();
        within(5.0, "a feed opens", first.read_line(&mut status))
            .await
            .unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        holders.push(first);
    }
    let (status, head, _) = within(5.0, "a fifth feed", http_get(web, "/feed")).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    for _ in 0..3 {
        let (status, _, page) = within(5.0, "the page", http_get(web, "/")).await;
        assert_eq!(status, 200);
        assert!(page.contains("<html"), "{page}");
    }
    drop(holders);
}
