//! Operating `aioq serve`: the monitoring endpoint (`--http`), read while the
//! broker runs.

use tokio::io::AsyncWriteExt;

use crate::util::*;

/// The port of `serve --http 127.0.0.1:0`, from its log.
fn monitor_port(broker: &Broker) -> u16 {
    broker.monitor_port()
}

/// /healthz, /api/server and /metrics tell what the broker did: messages in
/// and delivered, drops by reason, open connections; /metrics parses as the
/// Prometheus text format (a real parser) with the standard process_*
/// series; /healthz turns 503 while the broker drains at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_endpoint_reports_what_the_broker_did() {
    let broker = Broker::spawn(&[
        "--http",
        "127.0.0.1:0",
        "--send-queue",
        "10",
        "--drain-timeout",
        "5s",
    ]);
    let port = monitor_port(&broker);
    assert_eq!(http(port, "GET", "/healthz", None).await.0, 200);

    let mut reader = Raw::subscribe(broker.port, "/topic/ops").await;
    let reading = tokio::spawn(async move { while reader.read().await.is_some() {} });
    // Reads nothing, with a small receive buffer: its queue fills and drops.
    let stalled = Raw::subscribe_small_buffer(broker.port, "/topic/ops").await;
    wait_subscribed(&broker, "/topic/ops", 2).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let payload = vec![b'x'; 16 * 1024];
    for _ in 0..200 {
        p.publish("/topic/ops", &payload).await;
    }
    let server = poll_until(10.0, "messages_in to reach 200", || async {
        let (status, server) = http(port, "GET", "/api/server", None).await;
        assert_eq!(status, 200);
        (server["totals"]["messages_in"] == 200)
            .then_some(server.clone())
            .ok_or(server.to_string())
    })
    .await;
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["totals"]["messages_in"], 200);
    assert_eq!(server["config"]["send_queue"], 10);
    assert!(server["open_connections"].as_u64().unwrap() >= 3);

    let text = metrics_text(port).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text format");
    let value = |name: &str, reason: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && reason.is_none_or(|r| s.labels.get("reason") == Some(r)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {reason:?} in\n{text}"))
    };
    assert_eq!(value("aioq_messages_in_total", None), 200.0);
    assert!(value("aioq_messages_delivered_total", None) >= 1.0);
    assert!(
        value("aioq_messages_dropped_total", Some("queue_full")) > 0.0,
        "{text}"
    );
    assert_eq!(
        value("aioq_messages_dropped_total", Some("memory_limit")),
        0.0
    );
    assert!(value("process_resident_memory_bytes", None) > 1e6);
    assert!(value("process_open_fds", None) > 3.0);
    assert!(value("process_start_time_seconds", None) > 1.6e9);

    // Shutdown drains toward the stalled subscriber for up to 5 s: meanwhile
    // the broker is not healthy for a load balancer.
    signal(&broker.child, "TERM");
    wait_until_async(5.0, "/healthz says draining", || {
        healthz_now(port) == Some(503)
    })
    .await;
    drop(stalled);
    reading.abort();
}

async fn metrics_text(port: u16) -> String {
    let (status, head, body) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body
}

/// `/healthz`'s status now, over a blocking socket (for a wait condition).
fn healthz_now(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split(' ').nth(1)?.parse().ok()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

fn rewrite(f: &tempfile::NamedTempFile, text: &str) {
    std::fs::write(f.path(), text).unwrap();
}

/// The rows of `/api/{what}` with a query.
async fn rows(port: u16, what: &str, query: &str) -> Vec<serde_json::Value> {
    let (status, v) = http(port, "GET", &format!("/api/{what}{query}"), None).await;
    assert_eq!(status, 200, "{v}");
    v[what].as_array().unwrap().clone()
}

/// Publishes 16 KiB messages to both channels until the broker has dealt
/// with a stalled subscriber on each (dropped for it, or disconnected it).
async fn flood(broker_port: u16, channels: &[&str], n: usize) {
    let mut p = Raw::subscribe(broker_port, "/null").await;
    let payload = vec![b'x'; 16 * 1024];
    for _ in 0..n {
        for c in channels {
            p.publish(c, &payload).await;
        }
    }
    p.goodbye().await;
    assert!(p.closed().await);
}

/// A config file sets the flags (a flag given at start wins), `[[channel]]`
/// gives `/topic/orders` a policy of its own (a stalled subscriber there is
/// disconnected, one on `/topic/metrics` only misses messages), and
/// `/api/connections` and `/api/channels` show each connection and channel
/// with its counters, sorted and limited as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_flags_and_per_channel_policy_shown_per_connection() {
    let file = config_file(
        r#"
send-queue = 10
max-connections = 100
http = "127.0.0.1:0"

[[channel]]
prefix = "/topic/orders"
topic-overflow = "disconnect"
"#,
    );
    let path = file.path().to_str().unwrap();
    let broker = Broker::spawn(&["--config", path, "--max-connections", "50"]);
    let port = monitor_port(&broker);
    let (_, server) = http(port, "GET", "/api/server", None).await;
    assert_eq!(server["config"]["send_queue"], 10, "from the file");
    assert_eq!(server["config"]["max_connections"], 50, "the flag wins");

    let orders = Raw::subscribe_small_buffer(broker.port, "/topic/orders").await;
    let metrics = Raw::subscribe_small_buffer(broker.port, "/topic/metrics").await;
    wait_subscribed(&broker, "/topic/orders", 1).await;
    wait_subscribed(&broker, "/topic/metrics", 1).await;
    let channels = rows(port, "channels", "").await;
    let by_name = |n: &str| channels.iter().find(|c| c["name"] == n).cloned().unwrap();
    assert_eq!(by_name("/topic/orders")["topic_overflow"], "disconnect");
    assert_eq!(by_name("/topic/metrics")["topic_overflow"], "drop");
    assert_eq!(by_name("/topic/orders")["subscribers"], 1);

    flood(broker.port, &["/topic/orders", "/topic/metrics"], 300).await;
    broker
        .log
        .wait_for_async(10.0, "disconnected as a slow consumer on /topic/orders")
        .await;
    let channels = rows(port, "channels", "").await;
    let metrics_row = channels
        .iter()
        .find(|c| c["name"] == "/topic/metrics")
        .unwrap();
    assert_eq!(metrics_row["published"], 300);
    assert!(metrics_row["dropped_by_reason"]["queue_full"].as_u64() > Some(0));
    // The stalled orders subscriber is gone (and its channel with it); the
    // metrics one stays, with its drops.
    // Listed until its tasks are done, a moment after the log line.
    let conns = poll_until(10.0, "the orders subscriber to be gone", || async {
        let conns = rows(port, "connections", "").await;
        let gone = !conns.iter().any(|c| c["channel"] == "/topic/orders");
        gone.then_some(conns.clone()).ok_or(format!("{conns:?}"))
    })
    .await;
    let m = conns
        .iter()
        .find(|c| c["channel"] == "/topic/metrics")
        .unwrap();
    assert_eq!(m["send_queue"], 10);
    assert_eq!(m["tls"], false);
    assert!(m["dropped"].as_u64().unwrap() > 0, "{m}");
    assert!(m["queued_messages"].as_u64().unwrap() <= 10, "{m}");

    // Sorted by drops, limited to one: the stalled subscriber, not the others.
    let _idle = Raw::subscribe(broker.port, "/topic/idle").await;
    wait_subscribed(&broker, "/topic/idle", 1).await;
    let top = rows(port, "connections", "?sort=dropped&limit=1").await;
    assert!(rows(port, "connections", "").await.len() >= 2);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["channel"], "/topic/metrics");
    let (status, _) = http(port, "GET", "/api/connections?sort=colour", None).await;
    assert_eq!(status, 400);
    drop((orders, metrics));
}

/// SIGHUP reloads the file: a good file's per-channel policy applies to the
/// channels that exist, a setting that needs a restart is said to, and a
/// broken file is refused with the running configuration kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_file_and_refuses_a_broken_one() {
    let file = config_file("http = \"127.0.0.1:0\"\n");
    let broker = Broker::spawn(&["--config", file.path().to_str().unwrap()]);
    let port = monitor_port(&broker);
    let _s = Raw::subscribe(broker.port, "/topic/orders").await;
    wait_subscribed(&broker, "/topic/orders", 1).await;
    let overflow = |rows: Vec<serde_json::Value>| rows[0]["topic_overflow"].clone();
    assert_eq!(overflow(rows(port, "channels", "").await), "drop");

    rewrite(
        &file,
        "http = \"127.0.0.1:0\"\nmax-connections = 7\n[[channel]]\nprefix = \"/topic/\"\ntopic-overflow = \"disconnect\"\n",
    );
    signal(&broker.child, "HUP");
    broker.log.wait_for_async(10.0, "reloaded ").await;
    assert_eq!(overflow(rows(port, "channels", "").await), "disconnect");
    broker
        .log
        .wait_for_async(
            5.0,
            "max-connections changed, which needs a restart; still 10000",
        )
        .await;

    rewrite(
        &file,
        "[[channel]]\nprefix = \"/topic/\"\ntopic-overflow = \"sometimes\"\n",
    );
    signal(&broker.child, "HUP");
    let line = broker
        .log
        .wait_for_async(10.0, "refused, the running configuration stays")
        .await;
    assert!(line.contains("sometimes"), "{line}");
    assert_eq!(overflow(rows(port, "channels", "").await), "disconnect");
    // The broker still serves.
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/orders", b"still here").await;
}

/// `--check-config` says whether a file is valid without starting anything:
/// 0 and a summary, or 2 and what is wrong where.
#[test]
fn check_config_validates_without_serving() {
    let good = config_file(
        "send-queue = 100\n[[channel]]\nprefix = \"/topic/a\"\nsend-queue-bytes = \"1MiB\"\n\
         [access]\nplain = \"refuse\"\n[[access.identity]]\nmatch = \"CN=alice*\"\nsubscribe = [\"*\"]\n",
    );
    let run = |f: &tempfile::NamedTempFile| {
        let out = std::process::Command::new(BIN)
            .args(["serve", "--check-config", "--config"])
            .arg(f.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&good);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "1 [[channel]] entry, 1 [[access.identity]] entry, plain connections refused, \
             identities no entry names may do nothing"
        ),
        "{text}"
    );
    for (bad, says) in [
        ("send-queue = 0\n", "send-queue"),
        ("sendqueue = 1\n", "unknown setting \"sendqueue\""),
        (
            "[[channel]]\nprefix = \"/a\"\nbacklog = 0\n",
            "backlog must be at least 1",
        ),
        ("[access]\nplain = \"maybe\"\n", "expected \"refuse\""),
        ("send-queue = \n", "expected"),
        // A path to another file (a symlink to /etc/shadow, say): where the
        // error is, never what the line holds.
        (
            "root:$y$j9T$SECRETHASH:19000:0:99999:7:::\n",
            "line 1, column 5",
        ),
    ] {
        let (code, text) = run(&config_file(bad));
        assert_eq!(code, Some(2), "{bad}: {text}");
        assert!(text.contains(says), "{bad}: {text}");
        assert!(
            !text.contains("SECRETHASH"),
            "the file's text was shown: {text}"
        );
    }
    // A file anyone may write is said once: whoever can, sets the rules.
    let open = config_file("send-queue = 100\n");
    std::fs::set_permissions(
        open.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let (code, text) = run(&open);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text.matches("others than its owner may write it").count(),
        1,
        "{text}"
    );
    // A device is read no further than a config file could be long.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--check-config", "--config", "/dev/zero"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("not a regular file"), "{text}");
}

/// SIGHUP never kills the broker: not without --config (it says there is
/// nothing to reload), not when sent the moment it says it listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_handled_from_the_first_line_with_or_without_config() {
    let file = config_file("send-queue = 100\n");
    for args in [vec![], vec!["--config", file.path().to_str().unwrap()]] {
        for _ in 0..3 {
            // Broker::spawn returns as soon as `listening on` is read.
            let mut broker = Broker::spawn(&args);
            signal(&broker.child, "HUP");
            let said = if args.is_empty() {
                "nothing to reload"
            } else {
                "reloaded "
            };
            broker.log.wait_for_async(10.0, said).await;
            let mut s = Raw::subscribe(broker.port, "/topic/alive").await;
            wait_subscribed(&broker, "/topic/alive", 1).await;
            let mut p = Raw::subscribe(broker.port, "/null").await;
            p.publish("/topic/alive", b"yes").await;
            assert_eq!(within(5.0, "delivery", s.read_text()).await, "yes");
            broker.terminate();
        }
    }
}

/// A reload that reads the file while it is being written must not lower
/// access: an empty file, or one without the `[access]` in force, is refused.
/// A FIFO in its place (a stand-in for a hung mount) is refused without
/// blocking the broker, and SIGTERM still stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_opens_access_nor_blocks_the_broker() {
    let rules = "http = \"127.0.0.1:0\"\n[access.plain]\nsubscribe = [\"/topic/a*\"]\npublish = [\"/topic/a\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aioq.toml");
    std::fs::write(&path, rules).unwrap();
    let mut broker = Broker::spawn(&["--config", path.to_str().unwrap()]);
    let refused = |why: &'static str| {
        let log = &broker.log;
        async move {
            let line = log
                .wait_for_async(10.0, "refused, the running configuration stays")
                .await;
            assert!(line.contains(why), "{line}");
        }
    };
    let still_closed = || async {
        let mut b = Raw::subscribe(broker.port, "/topic/b").await;
        assert_eq!(within(5.0, "refusal", b.read()).await, Some(Vec::new()));
    };

    std::fs::write(&path, "").unwrap();
    signal(&broker.child, "HUP");
    refused("the file is empty").await;
    still_closed().await;

    std::fs::write(&path, "http = \"127.0.0.1:0\"\n").unwrap();
    let before = broker.log.len();
    signal(&broker.child, "HUP");
    broker
        .log
        .wait_for_after(before, 10.0, "no [access] table while one is in force")
        .await;
    still_closed().await;

    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let before = broker.log.len();
    signal(&broker.child, "HUP");
    broker
        .log
        .wait_for_after(before, 10.0, "not a regular file")
        .await;
    let mut a = Raw::subscribe(broker.port, "/topic/a").await;
    wait_subscribed(&broker, "/topic/a", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/a", b"served").await;
    assert_eq!(within(5.0, "delivery", a.read_text()).await, "served");
    broker.terminate();
}

/// A setting that needs a restart is compared with what the broker started
/// with, and shown as what is in force, URL passwords hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_what_is_in_force_and_hides_passwords() {
    let file = config_file("send-queue = 100\n");
    let broker = Broker::spawn(&["--config", file.path().to_str().unwrap()]);
    for (text, says) in [
        (
            "max-connections = 200\n",
            "max-connections changed, which needs a restart; still 10000",
        ),
        (
            "max-connections = 300\n",
            "max-connections changed, which needs a restart; still 10000",
        ),
        (
            "cluster = \"nats://u:firstSECRET@127.0.0.1:1\"\n",
            "cluster changed, which needs a restart; still not set",
        ),
    ] {
        rewrite(&file, text);
        let before = broker.log.len();
        signal(&broker.child, "HUP");
        broker.log.wait_for_after(before, 10.0, says).await;
    }
    assert!(
        !broker.log.text().contains("SECRET"),
        "{}",
        broker.log.text()
    );
}

/// Connections without a client certificate follow `[access.plain]`, or are
/// refused with `plain = "refuse"`: end-of-stream before anything else, and
/// a publish they make is counted as denied, never routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connections_get_their_own_rules_or_are_refused() {
    let file = config_file(
        "http = \"127.0.0.1:0\"\n[access.plain]\nsubscribe = [\"/topic/a*\"]\npublish = [\"/topic/a\"]\n",
    );
    let broker = Broker::spawn(&["--config", file.path().to_str().unwrap()]);
    let port = monitor_port(&broker);
    let mut refused = Raw::subscribe(broker.port, "/topic/b").await;
    assert_eq!(refused.read().await, Some(Vec::new()), "end-of-stream");
    assert!(refused.closed().await);
    let mut a = Raw::subscribe(broker.port, "/topic/a").await;
    wait_subscribed(&broker, "/topic/a", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/ab", b"not allowed").await;
    p.publish("/topic/a", b"allowed").await;
    assert_eq!(a.read_text().await, "allowed");
    let (_, server) = http(port, "GET", "/api/server", None).await;
    assert_eq!(server["totals"]["denied"], 1, "{server}");

    rewrite(
        &file,
        "http = \"127.0.0.1:0\"\n[access]\nplain = \"refuse\"\n",
    );
    signal(&broker.child, "HUP");
    broker.log.wait_for_async(10.0, "reloaded ").await;
    // The open subscription is ended; a new connection is refused.
    assert!(a.closed().await);
    let mut late = Raw::subscribe(broker.port, "/topic/a").await;
    assert_eq!(late.read().await, Some(Vec::new()));
    // The publisher was ended too. A writer counts why just after it
    // closes the socket: read the counters until they say so.
    assert!(p.closed().await);
    // Both plain connections were ended by the reload: the subscriber and
    // the publisher (refused connections may not even publish).
    let server = poll_until(10.0, "both ends counted as denied", || async {
        let (_, server) = http(port, "GET", "/api/server", None).await;
        (server["totals"]["ended"] == serde_json::json!({"denied": 2}))
            .then_some(server.clone())
            .ok_or(server.to_string())
    })
    .await;
    assert_eq!(server["totals"]["denied"], 2, "{server}");
}

/// The monitoring face answers only a Host it knows (a DNS-rebinding page
/// sends its own name), and a listing costs what its `limit` asks for: the
/// top rows by a field, however many channels there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_face_checks_the_host_and_lists_the_top_rows() {
    let broker = Broker::spawn(&[
        "--http",
        "127.0.0.1:0",
        "--http-allow-host",
        "broker.internal",
    ]);
    let port = monitor_port(&broker);
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for i in 0..2_000u32 {
        for _ in 0..=(i % 50) {
            publish_wire(&mut wire, &format!("/queue/c{i:04}"), b"x");
        }
    }
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert!(within(10.0, "publisher answered", p.closed()).await);
    let top = rows(port, "channels", "?sort=published&limit=3").await;
    let names: Vec<&str> = top.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["/queue/c0049", "/queue/c0099", "/queue/c0149"]);
    let (status, all) = http(port, "GET", "/api/channels?limit=0", None).await;
    assert_eq!(status, 200);
    assert_eq!(all["total"], 2_000, "{all}");
    let (status, refusal) = http(port, "GET", "/api/channels?sort=nonsense", None).await;
    assert_eq!(status, 400);
    assert!(
        refusal["sort_fields"]
            .as_array()
            .is_some_and(|f| f.contains(&"published".into())),
        "{refusal}"
    );

    let get = |host: &'static str| async move {
        let request =
            format!("GET /api/connections HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        http_raw(port, &request).await
    };
    assert_eq!(get("attacker.example").await.0, 403);
    assert_eq!(get("localhost:1").await.0, 200);
    assert_eq!(get("broker.internal").await.0, 200);
    assert_eq!(get("[::1]:9").await.0, 200);
}

/// Clients that ask for a large listing and never read it, as many as the
/// face has places, from three addresses: `/healthz` from a fourth still
/// answers at once (an address holds a quarter of the places, and a write
/// the client does not take for 10 s ends its connection). Before, the 64
/// places were held for good and a load balancer took the broker out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_slow_readers_hold_places() {
    let broker = Broker::spawn(&["--http", "127.0.0.1:0"]);
    let port = monitor_port(&broker);
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for i in 0..1_000u32 {
        publish_wire(&mut wire, &format!("/queue/{}{i}", "n".repeat(180)), b"x");
    }
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert!(within(10.0, "publisher answered", p.closed()).await);
    let mut held = Vec::new();
    for host in 2..5u8 {
        for _ in 0..30 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.bind((std::net::Ipv4Addr::new(127, 0, 0, host), 0).into())
                .unwrap();
            let Ok(mut s) = sock.connect(([127, 0, 0, 1], port).into()).await else {
                continue;
            };
            let _ = s
                .write_all(b"GET /api/channels?limit=10000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            held.push(s);
        }
    }
    for _ in 0..3 {
        let (status, _) = within(5.0, "/healthz", http(port, "GET", "/healthz", None)).await;
        assert_eq!(status, 200);
    }
    drop(held);
}

/// A second SIGTERM during the drain stops the broker at once with 130, as
/// the README promises (before: it waited out --drain-timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_the_drain_at_once() {
    let mut broker = Broker::spawn(&["--drain-timeout", "60s"]);
    let stalled = Raw::subscribe_small_buffer(broker.port, "/topic/owed").await;
    wait_subscribed(&broker, "/topic/owed", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for _ in 0..2_000 {
        publish_wire(&mut wire, "/topic/owed", &[b'o'; 1000]);
    }
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert!(within(10.0, "publisher answered", p.closed()).await);
    signal(&broker.child, "TERM");
    broker.log.wait_for_async(10.0, "shutting down").await;
    signal(&broker.child, "TERM");
    let status = wait_exit(&mut broker.child, 10.0);
    assert_eq!(status.code(), Some(130), "{}", broker.log.text());
    drop(stalled);
}

/// `--check-config` says what is in force, the file and the flags together,
/// and that a file without `[access]` lets everyone do everything
/// (walkthrough 13: one line listing no setting, "by the default rules").
#[test]
fn check_config_says_what_is_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t4.toml");
    std::fs::write(&file, "send-queue = 5\nbacklog = 77\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--send-queue",
            "7",
        ])
        .arg("--check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("no [access]: every client may do everything"),
        "{text}"
    );
    assert!(text.contains("send-queue 7,"), "the flag wins: {text}");
    assert!(text.contains("backlog 77,"), "the file's: {text}");
    assert!(text.contains("max-subscriptions 64,"), "a default: {text}");
}

/// Under systemd (`Type=notify`): the broker says READY=1 once it serves,
/// and STOPPING=1 when a SIGTERM starts its shutdown.
#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut child = crate::util::Killed(
        std::process::Command::new(BIN)
            .args(["serve", "--port", "0"])
            .env("NOTIFY_SOCKET", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let n = socket.recv(&mut buf).expect("STOPPING=1 within 10 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = crate::util::wait_exit(&mut child.0, 10.0);
    assert_eq!(status.code(), Some(0));
}

/// `/metrics` gives the channels with the most messages published series of
/// their own, as many as `--http-channel-series` says and no more however
/// many channels clients make, with the figures `/api/channels` has, a
/// channel name's quotes escaped; the rest are counted as left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_has_series_for_the_busiest_channels_only() {
    let broker = Broker::spawn(&["--http", "127.0.0.1:0", "--http-channel-series", "3"]);
    let port = monitor_port(&broker);
    let mut sub = Raw::subscribe(broker.port, "/topic/say \"hi\"").await;
    wait_subscribed(&broker, "/topic/say \"hi\"", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for i in 0..50u32 {
        for _ in 0..=i {
            publish_wire(&mut wire, &format!("/queue/c{i:02}"), b"x");
        }
    }
    for _ in 0..45 {
        publish_wire(&mut wire, "/topic/say \"hi\"", b"hello");
    }
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert!(within(10.0, "publisher answered", p.closed()).await);
    for _ in 0..45 {
        assert!(within(5.0, "a topic message", sub.read()).await.is_some());
    }

    let text = metrics_text(port).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text format");
    let series = |name: &str| -> std::collections::BTreeMap<String, f64> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                };
                (s.labels.get("channel").unwrap().to_string(), v)
            })
            .collect()
    };
    let expect = |pairs: &[(&str, f64)]| -> std::collections::BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(
        series("aioq_channel_published_total"),
        expect(&[
            ("/queue/c49", 50.0),
            ("/queue/c48", 49.0),
            ("/queue/c47", 48.0)
        ]),
        "{text}"
    );
    assert_eq!(
        series("aioq_channel_backlog_messages"),
        expect(&[
            ("/queue/c49", 50.0),
            ("/queue/c48", 49.0),
            ("/queue/c47", 48.0)
        ])
    );
    assert_eq!(
        series("aioq_channel_subscribers"),
        expect(&[
            ("/queue/c49", 0.0),
            ("/queue/c48", 0.0),
            ("/queue/c47", 0.0)
        ])
    );
    assert!(
        text.contains("\naioq_channels_without_series 48\n"),
        "{text}"
    );

    // A worker takes c49's backlog; a busier topic channel overtakes the
    // rest, and its name is escaped, not broken.
    let mut wire = Vec::new();
    for _ in 0..10 {
        publish_wire(&mut wire, "/topic/say \"hi\"", b"hello");
    }
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert!(within(10.0, "publisher answered", p.closed()).await);
    let mut worker = Raw::subscribe(broker.port, "/queue/c49").await;
    for _ in 0..50 {
        assert!(within(5.0, "a job", worker.read()).await.is_some());
    }
    for _ in 0..10 {
        assert!(within(5.0, "a topic message", sub.read()).await.is_some());
    }
    let text = metrics_text(port).await;
    assert!(
        text.contains("aioq_channel_published_total{channel=\"/topic/say \\\"hi\\\"\"} 55\n"),
        "{text}"
    );
    assert!(
        text.contains("aioq_channel_delivered_total{channel=\"/topic/say \\\"hi\\\"\"} 55\n"),
        "{text}"
    );
    assert!(
        text.contains("aioq_channel_delivered_total{channel=\"/queue/c49\"} 50\n"),
        "{text}"
    );
    assert!(
        text.contains("aioq_channel_subscribers{channel=\"/queue/c49\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("channel=\"/queue/c47\""),
        "c47 is fourth now: {text}"
    );
    assert!(
        text.contains("\naioq_channels_without_series 48\n"),
        "{text}"
    );
}
