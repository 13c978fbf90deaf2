//! Operating `aioq serve`: the monitoring endpoint (`--http`), read while the
//! broker runs.

use crate::util::*;

/// The port of `serve --http 127.0.0.1:0`, from its log.
fn monitor_port(broker: &Broker) -> u16 {
    let line = broker.log.wait_for(10.0, "monitoring on http://");
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
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
    let mut stalled = Raw::connect_small_buffer(broker.port).await;
    stalled.frame(b"/topic/ops").await;
    wait_subscribed(&broker, "/topic/ops", 2).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let payload = vec![b'x'; 16 * 1024];
    for _ in 0..200 {
        p.publish("/topic/ops", &payload).await;
    }
    let by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let server = loop {
        let (status, server) = http(port, "GET", "/api/server", None).await;
        assert_eq!(status, 200);
        if server["totals"]["messages_in"] == 200 {
            break server;
        }
        assert!(
            std::time::Instant::now() < by,
            "messages_in never reached 200: {server}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
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
