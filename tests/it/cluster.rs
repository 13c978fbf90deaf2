//! `serve --cluster`: real nats-server processes with JetStream, two or three
//! real brokers, clients on different brokers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::util::nats::Nats;
use crate::util::*;

fn clustered(nats: &Nats, extra: &[&str]) -> Broker {
    let url = nats.url();
    let mut args = vec!["--cluster", url.as_str()];
    args.extend_from_slice(extra);
    Broker::spawn(&args)
}

/// Two clustered brokers with `a` and `b` flags, once each has found JetStream.
async fn two_brokers(nats: &Nats, a: &[&str], b: &[&str]) -> (Broker, Broker) {
    let (a, b) = (clustered(nats, a), clustered(nats, b));
    for broker in [&a, &b] {
        broker.log.wait_for_async(10.0, "JetStream available").await;
    }
    (a, b)
}

/// Waits until `broker` has joined `channel` on NATS: from then on, what
/// other brokers publish there reaches it.
async fn following(broker: &Broker, channel: &str) {
    broker
        .log
        .wait_for_async(10.0, &format!("cluster: following {channel}"))
        .await;
}

fn count(lines: &Lines, needle: &str) -> usize {
    lines
        .snapshot()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// A client that publishes (it subscribes to a channel nobody uses first,
/// as the protocol wants).
async fn publisher(port: u16) -> Raw {
    Raw::subscribe(port, "/queue/unused").await
}

/// Reads `n` messages, then says goodbye and checks that nothing else (a
/// duplicate) arrives before the end of the stream.
async fn read_exactly(mut sub: Raw, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(sub.read_text().await);
    }
    sub.goodbye().await;
    assert!(sub.closed().await, "a message past the {n} expected");
    got
}

/// Checks that `got` holds each publisher's messages once and in its order.
fn in_order_once(got: &[String], publishers: &[&str], n: usize) {
    let mut next: HashMap<&str, usize> = publishers.iter().map(|p| (*p, 0)).collect();
    for m in got {
        let (p, i) = m.split_once(':').unwrap();
        let want = next
            .get_mut(p)
            .unwrap_or_else(|| panic!("unknown message {m}"));
        assert_eq!(
            i.parse::<usize>().unwrap(),
            *want,
            "out of order or twice: {m}"
        );
        *want += 1;
    }
    for (p, k) in next {
        assert_eq!(k, n, "publisher {p}: {k} of {n} messages");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_messages_reach_every_broker_once_in_order_per_publisher() {
    const N: usize = 2000;
    let nats = Nats::start();
    let brokers: Vec<Broker> = (0..3).map(|_| clustered(&nats, &[])).collect();
    let idle = clustered(&nats, &[]);
    // Two subscribers on the first broker (where one publisher is: no echo may
    // double its messages), one on each other broker.
    let ports = [
        brokers[0].port,
        brokers[0].port,
        brokers[1].port,
        brokers[2].port,
    ];
    let mut subs = Vec::new();
    for port in ports {
        subs.push(Raw::subscribe(port, "/topic/t").await);
    }
    for b in &brokers {
        following(b, "/topic/t").await;
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|s| tokio::spawn(read_exactly(s, 2 * N)))
        .collect();
    let mut pubs = Vec::new();
    for (name, port) in [("a", brokers[0].port), ("b", brokers[1].port)] {
        let mut p = publisher(port).await;
        pubs.push(tokio::spawn(async move {
            for i in 0..N {
                p.publish("/topic/t", format!("{name}:{i}").as_bytes())
                    .await;
            }
            p.goodbye().await;
            assert!(p.closed().await);
        }));
    }
    for p in pubs {
        within(30.0, "publishers", p).await.unwrap();
    }
    for r in readers {
        let got = within(30.0, "every message at every subscriber", r)
            .await
            .unwrap();
        in_order_once(&got, &["a", "b"], N);
    }
    // Interest follows subscriptions: a broker without subscribers never
    // subscribed, and once everyone left, NATS holds no subscription to it.
    assert!(!idle.log.contains("following /topic/t"));
    within(10.0, "the subscriptions on NATS to go", async {
        while nats.subjects().await.iter().any(|s| s == "aioq.t./topic/t") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut brokers = brokers;
    let third = brokers[2].terminate();
    assert_eq!(
        summary_field(&third, "from_cluster"),
        2 * N as u64,
        "{third}"
    );
    let first = brokers[0].terminate();
    assert_eq!(summary_field(&first, "from_cluster"), N as u64, "{first}");
    assert!(summary_field(&first, "to_cluster") >= N as u64, "{first}");
    assert_eq!(summary_field(&first, "cluster_unforwarded"), 0, "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_work_is_shared_across_brokers_each_message_once() {
    // Up to 256 travel in one JetStream message, and a broker pulls a couple
    // of those ahead: enough of them that both brokers' pullers get some.
    const N: usize = 20_000;
    let nats = Nats::start();
    let a = clustered(&nats, &[]);
    let b = clustered(&nats, &[]);
    // The operator is told JetStream is there (nats-server 2.9's account
    // reply once made every broker warn that it was not).
    for broker in [&a, &b] {
        broker.log.wait_for_async(10.0, "JetStream available").await;
        assert!(!broker.log.contains("offers no JetStream"));
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for (name, port) in [("a", a.port), ("b", b.port)] {
        let mut w = Raw::subscribe(port, "/queue/jobs").await;
        let got = got.clone();
        workers.push(tokio::spawn(async move {
            while let Some(m) = w.read().await {
                if m.is_empty() {
                    break;
                }
                got.lock()
                    .unwrap()
                    .push((name, String::from_utf8(m).unwrap()));
            }
        }));
    }
    wait_subscribed(&a, "/queue/jobs", 1).await;
    wait_subscribed(&b, "/queue/jobs", 1).await;
    let mut p = publisher(a.port).await;
    for i in 0..N {
        p.publish("/queue/jobs", format!("job:{i}").as_bytes())
            .await;
    }
    p.goodbye().await;
    assert!(within(30.0, "publisher done", p.closed()).await);
    wait_until_async(30.0, "every job delivered", || {
        got.lock().unwrap().len() >= N
    })
    .await;
    let mut a = a;
    let mut b = b;
    // Graceful shutdown: workers get end-of-stream; nothing more may come.
    let sa = a.terminate();
    let sb = b.terminate();
    for w in workers {
        within(10.0, "workers end", w).await.unwrap();
    }
    let got = got.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().map(|(_, m)| m).collect();
    assert_eq!(got.len(), N, "duplicates: {} delivered", got.len());
    assert_eq!(unique.len(), N);
    let on_a = got.iter().filter(|(w, _)| *w == "a").count();
    eprintln!("{on_a} of {N} on a's worker");
    assert!(
        on_a > 0 && on_a < N,
        "both brokers' workers shared the work: {on_a} of {N} on a"
    );
    assert_eq!(
        summary_field(&sa, "from_cluster") + summary_field(&sb, "from_cluster"),
        N as u64,
        "{sa}\n{sb}"
    );
    assert_eq!(summary_field(&sa, "cluster_kept_local"), 0, "{sa}");
}

async fn from_cluster(mon: &mut Raw) -> u64 {
    let m = within(10.0, "a metrics sample", mon.read()).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    v["broker"]["from_cluster"].as_u64().unwrap()
}

/// Flags for a broker whose own `from_cluster` count a test reads on
/// `/topic/self` (see [`from_cluster`]).
const SELF_REPORT: [&str; 6] = [
    "--metrics",
    "--metrics-interval",
    "100ms",
    "--metrics-channel",
    "/topic/self",
    "--cluster-ack-wait",
];

/// Publishes `n` messages of `size` bytes to `channel` on the broker at
/// `port`, each starting with a 6-byte id (`m:0042`), and says goodbye.
async fn publish_numbered(port: u16, channel: &str, n: usize, size: usize) {
    let pad = "x".repeat(size - 6);
    let mut p = publisher(port).await;
    for i in 0..n {
        p.publish(channel, format!("m:{i:04}{pad}").as_bytes())
            .await;
    }
    p.goodbye().await;
    assert!(within(30.0, "publisher done", p.closed()).await);
}

/// A worker on `a` that reads nothing, and `n` messages of `size` bytes (more
/// than socket buffers take) published on `b` to `channel`: returns once `a`
/// holds a full send queue of them for the worker, pulled from JetStream and
/// not acknowledged. Each payload starts with a 6-byte id (`m:0042`).
async fn stalled_worker_on(a: &Broker, b: &Broker, channel: &str, n: usize, size: usize) -> Raw {
    stalled_worker(a, channel, publish_numbered(b.port, channel, n, size)).await
}

/// A worker on `a` that reads nothing; returns once `a` holds a full send
/// queue for it of what `publish` (run once the worker is subscribed) sent.
async fn stalled_worker(a: &Broker, channel: &str, publish: impl Future<Output = ()>) -> Raw {
    let stalled = Raw::subscribe_small_buffer(a.port, channel).await;
    wait_subscribed(a, channel, 1).await;
    let mut mon = Raw::subscribe(a.port, "/topic/self").await;
    publish.await;
    // The worker queue holds 64 by default.
    within(20.0, "a to hold messages for its worker", async {
        while from_cluster(&mut mon).await < 64 {}
    })
    .await;
    stalled
}

/// The worker `stalled` on `broker` vanishes (a reset: nothing more reaches
/// it); returns how many of the `n` messages for it `broker` had written.
async fn vanish(broker: &Broker, stalled: Raw, channel: &str, n: usize) -> usize {
    socket2::SockRef::from(&stalled.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stalled);
    let line = broker
        .log
        .wait_for_async(10.0, &format!("disconnected from {channel}"))
        .await;
    let written = out_count(&line);
    assert!(written < n, "{line}");
    written
}

fn id(m: Vec<u8>) -> String {
    String::from_utf8(m[..6].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_held_by_a_killed_broker_reach_a_worker_on_another() {
    const N: usize = 500;
    let nats = Nats::start();
    let mut a = clustered(&nats, &[&SELF_REPORT[..], &["1s"]].concat());
    let b = clustered(&nats, &["--cluster-ack-wait", "1s"]);
    let mut stalled = stalled_worker_on(&a, &b, "/queue/work", N, 4096).await;
    signal(&a.child, "KILL");
    wait_exit(&mut a.child, 10.0);
    // What a wrote to the stalled worker's socket before it died is the
    // worker's; the rest must come to the worker on b.
    let mut got: Vec<String> = Vec::new();
    while let Some(m) = within(10.0, "the dead broker's bytes", stalled.read()).await {
        if m.is_empty() {
            break;
        }
        got.push(id(m));
    }
    let on_a = got.len();
    let mut w = Raw::subscribe(b.port, "/queue/work").await;
    let mut seen: HashSet<String> = got.iter().cloned().collect();
    within(30.0, "every message, at one worker or the other", async {
        while seen.len() < N {
            let m = id(w.read().await.expect("a message"));
            got.push(m.clone());
            seen.insert(m);
        }
    })
    .await;
    let mut b = b;
    let summary = b.terminate();
    eprintln!(
        "killed broker's worker had {on_a}; {} delivered in all for {N} ({} twice)",
        got.len(),
        got.len() - N
    );
    assert!(on_a < N, "the killed broker held some back");
    assert!(
        summary_field(&summary, "cluster_redelivered") > 0,
        "what the killed broker held came back from JetStream: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_nats_restarts_and_local_delivery_never_stops() {
    let mut nats = Nats::start();
    let mut a = clustered(&nats, &[]);
    let b = clustered(&nats, &[]);
    let mut on_a = Raw::subscribe(a.port, "/topic/live").await;
    let mut on_b = Raw::subscribe(b.port, "/topic/live").await;
    following(&a, "/topic/live").await;
    following(&b, "/topic/live").await;
    let mut p = publisher(a.port).await;
    p.publish("/topic/live", b"before").await;
    assert_eq!(within(10.0, "local", on_a.read_text()).await, "before");
    assert_eq!(within(10.0, "remote", on_b.read_text()).await, "before");

    nats.kill();
    a.log.wait_for_async(10.0, "unreachable").await;
    for i in 0..10 {
        p.publish("/topic/live", format!("during:{i}").as_bytes())
            .await;
    }
    for i in 0..10 {
        assert_eq!(
            within(10.0, "local delivery without NATS", on_a.read_text()).await,
            format!("during:{i}")
        );
    }

    nats.restart();
    let reconnected = |broker: &Broker| count(&broker.log, "connected to NATS") >= 2;
    wait_until_async(20.0, "both brokers back on NATS", || {
        reconnected(&a) && reconnected(&b)
    })
    .await;
    // Subscriptions come back with the connection; until NATS has b's, a
    // publish may go nowhere, so a probe repeats until one arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = on_b.read().await {
            let _ = tx.send(String::from_utf8(m).unwrap());
        }
    });
    let first = within(20.0, "a message through the restarted NATS", async {
        let mut i = 0;
        loop {
            p.publish("/topic/live", format!("after:{i}").as_bytes())
                .await;
            i += 1;
            if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                return m.unwrap();
            }
        }
    })
    .await;
    assert!(
        first.starts_with("after:"),
        "b got {first}: nothing published while NATS was down was forwarded"
    );

    // JetStream kept the stream on disk: queues work again too.
    let mut worker = Raw::subscribe(b.port, "/queue/after").await;
    wait_subscribed(&b, "/queue/after", 1).await;
    p.publish("/queue/after", b"job").await;
    assert_eq!(
        within(20.0, "a queue message", worker.read_text()).await,
        "job"
    );
    let summary = a.terminate();
    assert!(
        summary_field(&summary, "cluster_unforwarded") >= 10,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_across_two_brokers_of_a_cluster() {
    let nats = Nats::start();
    let a = clustered(&nats, &[]);
    let b = clustered(&nats, &[]);
    let (pub_at, sub_at) = (a.addr(), b.addr());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["bench", "--target", &pub_at, "--subscribe-target", &sub_at])
            .args(["--scenario", "throughput", "--messages", "20000", "--json"])
            .output()
            .unwrap()
    });
    let out = within(120.0, "bench throughput", out).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(doc["target"].as_str().unwrap().contains("subscribers on"));
    let runs = doc["throughput"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "topic and queue");
    for r in runs {
        assert_eq!(r["complete"], true, "{r:#}");
        assert_eq!(r["lost"], 0, "{r:#}");
        assert!(r["delivered_per_s"].as_f64().unwrap() > 0.0);
    }
    let mut b = b;
    let summary = b.terminate();
    // Every delivery on b came through the cluster: b had no publisher.
    assert_eq!(
        summary_field(&summary, "from_cluster"),
        20_000 + 20_000,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_on_one_broker_does_not_slow_the_others_across_the_cluster() {
    const N: usize = 20_000;
    let nats = Nats::start();
    let a = clustered(&nats, &[]);
    // 20 MB to a subscriber that reads nothing: past its 1 MiB queue and what
    // socket buffers hold, it must miss messages, and only it.
    let mut b = clustered(&nats, &["--send-queue-bytes", "1MiB"]);
    let stalled = Raw::subscribe_small_buffer(b.port, "/topic/iso").await;
    let fast = Raw::subscribe(b.port, "/topic/iso").await;
    following(&b, "/topic/iso").await;
    wait_subscribed(&b, "/topic/iso", 2).await;
    // The publisher keeps at most 200 messages ahead of the fast subscriber:
    // the test's own reader shares two cores with three servers, and must not
    // be what falls behind.
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let read = read.clone();
        let mut fast = fast;
        tokio::spawn(async move {
            let mut got = Vec::with_capacity(N);
            while got.len() < N {
                let m = fast.read_text().await;
                got.push(m.rsplit_once(':').unwrap().0.to_string());
                read.store(got.len(), std::sync::atomic::Ordering::Relaxed);
            }
            fast.goodbye().await;
            assert!(fast.closed().await, "a message past the {N} expected");
            got
        })
    };
    let mut p = publisher(a.port).await;
    let pad = "x".repeat(1000);
    for i in 0..N {
        if i % 100 == 0 && i >= 200 {
            wait_until_async(20.0, "the fast subscriber to keep up", || {
                read.load(std::sync::atomic::Ordering::Relaxed) >= i - 200
            })
            .await;
        }
        p.publish("/topic/iso", format!("a:{i}:{pad}").as_bytes())
            .await;
    }
    p.goodbye().await;
    assert!(within(30.0, "publisher done", p.closed()).await);
    let got = within(30.0, "the fast subscriber's messages", reader)
        .await
        .unwrap();
    in_order_once(&got, &["a"], N);
    let summary = b.terminate();
    assert!(
        dropped(&summary, "queue_full") > 0,
        "the stalled subscriber's losses are counted: {summary}"
    );
    assert_eq!(
        summary_field(&summary, "from_cluster"),
        N as u64,
        "{summary}"
    );
    drop(stalled);
}

/// The JetStream streams on the NATS server, from its monitor.
/// nats-server's `/jsz?QUERY`, whole (a long answer comes in chunks).
async fn jsz(nats: &Nats, query: &str) -> serde_json::Value {
    let req = format!("GET /jsz?{query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (_, head, body) = http_raw(nats.monitor, &req).await;
    let body = if head.to_ascii_lowercase().contains("chunked") {
        let mut whole = String::new();
        let mut rest = body.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            whole.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        whole
    } else {
        body
    };
    serde_json::from_str(&body).unwrap()
}

async fn streams(nats: &Nats) -> Vec<serde_json::Value> {
    let v = jsz(nats, "streams=true").await;
    v["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Messages JetStream holds in `/queue` channel streams.
async fn stream_messages(nats: &Nats) -> u64 {
    streams(nats)
        .await
        .iter()
        .map(|s| s["state"]["messages"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_holds_the_publisher_back_and_loses_nothing() {
    // A JetStream message carries at most 256 of them: more than 100 fill it.
    const N: usize = 26_000;
    let nats = Nats::start();
    let a = clustered(&nats, &["--cluster-queue-messages", "100"]);
    let b = clustered(&nats, &[]);
    let mut p = publisher(a.port).await;
    for i in 0..N {
        p.publish("/queue/full", format!("f:{i}").as_bytes()).await;
    }
    p.goodbye().await;
    let done = tokio::spawn(async move { p.closed().await });
    within(20.0, "the stream to fill", async {
        while stream_messages(&nats).await < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(stream_messages(&nats).await, 100, "the limit holds");
    assert!(
        !done.is_finished(),
        "the publisher is held back: its end of stream waits for the rest to be stored"
    );
    // A worker on the other broker drains the stream; the rest follows.
    let mut w = Raw::subscribe(b.port, "/queue/full").await;
    let mut seen = HashSet::new();
    within(30.0, "every message", async {
        while seen.len() < N {
            seen.insert(w.read_text().await);
        }
    })
    .await;
    assert!(within(10.0, "publisher done", done).await.unwrap());
    let mut a = a;
    let summary = a.terminate();
    assert_eq!(
        summary_field(&summary, "cluster_kept_local"),
        0,
        "{summary}"
    );
    assert_eq!(summary_field(&summary, "to_cluster"), N as u64, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_leaves_hands_its_queue_back_to_the_cluster_at_once() {
    const N: usize = 300;
    let nats = Nats::start();
    // An acknowledgement wait far past the test's deadlines: only a negative
    // acknowledgement can bring the messages back in time.
    let a = clustered(&nats, &[&SELF_REPORT[..], &["5m"]].concat());
    let b = clustered(&nats, &[]);
    // Small enough that several travel in one JetStream message: the worker
    // leaves with some of a message's parts written and some not.
    let stalled = stalled_worker_on(&a, &b, "/queue/back", N, 1024).await;
    // What a had written to the worker's socket goes with it; what a still
    // held goes back to JetStream.
    let written = vanish(&a, stalled, "/queue/back", N).await;
    let mut w = Raw::subscribe(b.port, "/queue/back").await;
    let mut got = HashSet::new();
    let rest = async {
        while got.len() < N - written {
            let m = id(w.read().await.expect("a message"));
            // One publisher, one worker: it was written the first ones.
            let n: usize = m[2..].parse().unwrap();
            assert!(
                n >= written,
                "{m} again, though the first {written} were written to the worker that left"
            );
            assert!(got.insert(m.clone()), "{m} twice");
        }
    };
    within(
        20.0,
        "the rest at the other broker, long before the ack wait",
        rest,
    )
    .await;
}

/// NATS credentials travel in the `--cluster` URL: no log line may show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_credentials_never_reach_the_log() {
    let nats = Nats::start();
    let url = format!("nats://someone:s3cr3t@127.0.0.1:{}", nats.port);
    let mut broker = Broker::spawn(&["--cluster", &url, "-v"]);
    drop(nats);
    broker
        .log
        .wait_for_async(10.0, "cluster: NATS at nats://someone:***@127.0.0.1")
        .await;
    broker.terminate();
    assert!(
        !broker.log.text().contains("s3cr3t"),
        "{}",
        broker.log.text()
    );
}

/// A message from another broker larger than this broker's `--max-frame`
/// cannot be written to any subscriber here: it is counted, and the
/// subscriber stays (before, its writer failed and it was disconnected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_this_broker_is_counted_not_fatal() {
    let nats = Nats::start();
    let a = clustered(&nats, &[]);
    let mut b = clustered(&nats, &["--max-frame", "64KiB"]);
    let mut sub = Raw::subscribe(b.port, "/topic/big").await;
    following(&b, "/topic/big").await;
    let mut p = publisher(a.port).await;
    p.publish("/topic/big", &vec![b'x'; 100 << 10]).await;
    p.publish("/topic/big", b"small").await;
    assert_eq!(
        within(10.0, "the small one", sub.read_text()).await,
        "small"
    );
    let summary = b.terminate();
    assert_eq!(dropped(&summary, "too_large"), 1, "{summary}");
}

/// Each new `/queue` name published to on a clustered broker becomes a
/// channel with a puller; with no worker here, its messages wait in
/// JetStream, and the channel retires instead of being pulled for for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_less_queue_channels_retire_and_their_messages_wait_in_jetstream() {
    const N: usize = 50;
    let nats = Nats::start();
    let broker = clustered(&nats, &["-v"]);
    let mut p = publisher(broker.port).await;
    for i in 0..N {
        p.publish(&format!("/queue/idle-{i}"), format!("m{i}").as_bytes())
            .await;
    }
    wait_until_async(20.0, "every idle channel retired", || {
        count(&broker.log, "retired here: no worker") >= N
    })
    .await;
    let mut worker = Raw::subscribe(broker.port, "/queue/idle-7").await;
    assert_eq!(
        within(10.0, "from JetStream", worker.read_text()).await,
        "m7"
    );
}

/// `--cluster` trouble is said at start, not discovered later: a value that
/// is not a NATS URL is a usage error; an unreachable NATS does not hold back
/// `listening on`; a NATS without JetStream is named in one warning; and a
/// publish-only client is not followed on NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_trouble_is_said_at_start() {
    for bad in ["foo", "http://127.0.0.1:4222", "nats://"] {
        let mut serve = Proc::spawn(&["serve", "--port", "0", "--cluster", bad], false);
        assert_eq!(serve.exit_code(10.0), Some(2), "--cluster {bad}");
        assert!(serve.err.contains("--cluster"));
    }

    let started = std::time::Instant::now();
    let unreachable = Broker::spawn(&["--cluster", "nats://127.0.0.1:1"]);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(4),
        "`listening on` after {took:?} (the wait for NATS is 2 s at most)"
    );
    unreachable
        .log
        .wait_for_async(5.0, "not reachable yet")
        .await;
    // Nothing can reach NATS, so there is nothing to wait for at shutdown:
    // it took the whole 2 s flush bound before (about 5 ms with NATS up).
    let stopping = std::time::Instant::now();
    signal(&unreachable.child, "INT");
    wait_until_async(10.0, "the unclustered broker exits", || {
        unreachable.log.contains("shutdown complete")
    })
    .await;
    let took = stopping.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "shutdown with NATS unreachable took {took:?}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut plain_nats = std::process::Command::new(crate::util::nats::find_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let nats_log = Lines::follow(plain_nats.stderr.take().unwrap());
    nats_log.wait_for(15.0, "Server is ready");
    let broker = Broker::spawn(&["--cluster", &format!("nats://127.0.0.1:{port}")]);
    broker.log.wait_for_async(10.0, "offers no JetStream").await;
    // NATS was there from the start: connected, never "not reachable yet"
    // (said first, 61 µs before "connected", when the flag came late).
    assert!(
        broker.log.contains("connected to NATS") && !broker.log.contains("not reachable yet"),
        "{}",
        broker.log.text()
    );

    let mut send = Proc::spawn(
        &["send", "--port", &broker.port.to_string(), "--message", "x"],
        false,
    );
    assert_eq!(send.exit_code(10.0), Some(0));
    assert!(
        !broker.log.contains("following /null"),
        "{}",
        broker.log.text()
    );
    let _ = plain_nats.kill();
    let _ = plain_nats.wait();
}

/// Publishes `payload` on NATS subject `subject` with `headers` (`Name: value`
/// lines), as any NATS client may, over the plain NATS protocol.
async fn nats_publish(nats: &Nats, subject: &str, headers: &[&str], payload: &[u8]) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", nats.port))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    let mut info = String::new();
    stream.read_line(&mut info).await.unwrap();
    let mut head = String::from("NATS/1.0\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = format!(
        "CONNECT {{\"verbose\":false,\"headers\":true}}\r\nHPUB {subject} {} {}\r\n{head}",
        head.len(),
        head.len() + payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\nPING\r\n");
    stream.get_mut().write_all(&out).await.unwrap();
    let mut pong = String::new();
    while !pong.starts_with("PONG") {
        pong.clear();
        stream.read_line(&mut pong).await.unwrap();
        assert!(!pong.starts_with("-ERR"), "{pong}");
    }
}

/// Other NATS clients may publish into a `/queue` channel's stream: a plain
/// message is one message, and one whose `Aioq-Parts` header does not match
/// its payload is delivered whole, never cut into made-up parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_from_other_nats_clients_arrive_whole() {
    let nats = Nats::start();
    let broker = clustered(&nats, &[]);
    let mut w = Raw::subscribe(broker.port, "/queue/outside").await;
    wait_subscribed(&broker, "/queue/outside", 1).await;
    let mut p = publisher(broker.port).await;
    // Its publisher stays connected: a lone message leaves for JetStream
    // when the broker has read all there is, not when more arrive.
    p.publish("/queue/outside", b"through aioq").await;
    assert_eq!(
        within(10.0, "a message through JetStream", w.read_text()).await,
        "through aioq"
    );
    let subject = "aioq.q./queue/outside";
    nats_publish(&nats, subject, &[], b"plain").await;
    // Says 3 parts; holds one 4-byte length that claims far more than follows.
    let forged = b"\x7f\xff\xff\xffforged";
    nats_publish(&nats, subject, &["Aioq-Parts: 3"], forged).await;
    // A well-formed envelope from outside is taken at its word.
    nats_publish(
        &nats,
        subject,
        &["Aioq-Parts: 2"],
        b"\0\0\0\x03one\0\0\0\x03two",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            within(10.0, "messages from outside", w.read())
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        got,
        [&b"plain"[..], &forged[..], b"one", b"two"],
        "{:?}",
        got.iter()
            .map(|m| String::from_utf8_lossy(m))
            .collect::<Vec<_>>()
    );
}

/// A broker pulls a little ahead of its workers' room, so that they never
/// wait for a round trip to NATS. When its only worker stops reading, what
/// it pulled ahead goes back to JetStream for workers on other brokers,
/// instead of waiting here for as long as the worker stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_broker_pulled_ahead_for_a_stalled_worker_goes_to_other_brokers() {
    const N: usize = 3000;
    let nats = Nats::start();
    // An acknowledgement wait far past the test's deadlines: nothing comes
    // back by JetStream's own timeout.
    let a = clustered(&nats, &[&SELF_REPORT[..], &["5m"]].concat());
    let b = clustered(&nats, &[]);
    let mut slow = Raw::subscribe_small_buffer(a.port, "/queue/ahead").await;
    wait_subscribed(&a, "/queue/ahead", 1).await;
    let mut mon = Raw::subscribe(a.port, "/topic/self").await;
    // Reads a little, then nothing more.
    let reader = tokio::spawn(async move {
        for _ in 0..100 {
            slow.read().await.expect("a message");
        }
        slow
    });
    publish_numbered(b.port, "/queue/ahead", N, 1024).await;
    let stalled = within(20.0, "the first 100 read", reader).await.unwrap();
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut w = Raw::subscribe(b.port, "/queue/ahead").await;
    let counter = {
        let got = got.clone();
        tokio::spawn(async move {
            while w.read().await.is_some() {
                got.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    // Everything but what a gave its worker, and the rest of the one
    // JetStream message it had begun to give it (64 KiB: 63 of these),
    // reaches the worker on b.
    within(20.0, "what a pulled ahead, at b", async {
        loop {
            let at_a = from_cluster(&mut mon).await as usize;
            let at_b = got.load(std::sync::atomic::Ordering::Relaxed);
            if at_a + at_b >= N - 63 {
                break;
            }
        }
    })
    .await;
    counter.abort();
    drop(stalled);
}

/// A worker slower than the acknowledgement wait keeps what its broker queued
/// for it: the broker tells JetStream it still holds those messages, so that
/// none is given to another broker's worker as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_slower_than_the_ack_wait_gets_its_messages_once() {
    const N: usize = 300;
    let nats = Nats::start();
    let a = clustered(&nats, &[&SELF_REPORT[..], &["1s"]].concat());
    let b = clustered(&nats, &["--cluster-ack-wait", "1s"]);
    // 1500 bytes: a JetStream message carries five or six of them (a reader's
    // 8 KiB), so the 64 the worker's queue holds end partway into one: a
    // parcel is both in the queue and held by the puller, and both must be
    // kept alive.
    let slow = stalled_worker_on(&a, &b, "/queue/slow", N, 1500).await;
    let mut mon = Raw::subscribe(a.port, "/topic/self").await;
    // What each worker gets. b's takes what a does not hold, and would take
    // what a holds too if JetStream gave it out again.
    let read_into = |mut worker: Raw, got: Arc<Mutex<Vec<String>>>| {
        tokio::spawn(async move {
            while let Some(m) = worker.read().await {
                got.lock().unwrap().push(id(m));
            }
        })
    };
    let at_a: Arc<Mutex<Vec<String>>> = Arc::default();
    let at_b: Arc<Mutex<Vec<String>>> = Arc::default();
    let on_b = read_into(Raw::subscribe(b.port, "/queue/slow").await, at_b.clone());
    // The scenario, not a synchronisation: the worker reads nothing for three
    // acknowledgement waits, then everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on_a = read_into(slow, at_a.clone());
    // Done when every message reached a worker, and the slow one has read
    // all that a handed it (a's count, sampled every 100 ms).
    within(
        30.0,
        "every message at a worker, and all a handed its own",
        async {
            loop {
                let handed = from_cluster(&mut mon).await as usize;
                let (a, b) = (at_a.lock().unwrap(), at_b.lock().unwrap());
                let seen: HashSet<&String> = a.iter().chain(b.iter()).collect();
                if seen.len() == N && a.len() >= handed {
                    break;
                }
            }
        },
    )
    .await;
    on_a.abort();
    on_b.abort();
    let at_a = at_a.lock().unwrap().clone();
    let at_b = at_b.lock().unwrap().clone();
    let twice: Vec<&String> = at_a.iter().filter(|m| at_b.contains(m)).collect();
    eprintln!(
        "slow worker on a: {}; worker on b: {}",
        at_a.len(),
        at_b.len()
    );
    assert!(
        twice.is_empty(),
        "{} at both workers: {twice:?}",
        twice.len()
    );
    assert_eq!(
        at_a.len() + at_b.len(),
        N,
        "a message came twice to one worker"
    );
}

/// A worker leaves partway into a JetStream message while the stream is full:
/// the parts it was not written cannot be stored apart as a message of their
/// own, so the whole message goes back instead (the parts already written
/// come twice), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_leaves_while_the_stream_is_full_loses_nothing() {
    // One JetStream message of 256 parts of 1 KiB: far more than the worker's
    // queue and socket take, so the worker leaves partway into it, and it is
    // the only message a settles then (no acknowledgement of another frees
    // room in the stream at that moment).
    const PARTS: usize = 256;
    const FLOOD: usize = 5_000;
    const LIMIT: u64 = 20;
    let limit = LIMIT.to_string();
    let nats = Nats::start();
    let a = clustered(
        &nats,
        &[
            &SELF_REPORT[..],
            &["5m", "--cluster-queue-messages", &limit, "-vv"],
        ]
        .concat(),
    );
    let b = clustered(&nats, &["--cluster-queue-messages", &limit]);
    let pad = "x".repeat(1024 - 6);
    let mut envelope = Vec::new();
    for i in 0..PARTS {
        let part = format!("m:{i:04}{pad}");
        envelope.extend_from_slice(&(part.len() as u32).to_be_bytes());
        envelope.extend_from_slice(part.as_bytes());
    }
    let parts = format!("Aioq-Parts: {PARTS}");
    let publish = async {
        within(10.0, "a's puller to make the stream", async {
            while streams(&nats).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        nats_publish(&nats, "aioq.q./queue/fullback", &[&parts], &envelope).await;
    };
    let stalled = stalled_worker(&a, "/queue/fullback", publish).await;
    // A flood fills the stream to its limit and its publisher is held back.
    let mut flood = publisher(b.port).await;
    let flooding = tokio::spawn(async move {
        let mut wire = Vec::new();
        for i in 0..FLOOD {
            publish_wire(
                &mut wire,
                "/queue/fullback",
                format!("f{i:05}{pad}").as_bytes(),
            );
        }
        flood.stream.write_all(&wire).await.unwrap();
        flood.goodbye().await;
        flood.closed().await
    });
    within(20.0, "the stream to fill", async {
        while stream_messages(&nats).await < LIMIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let written = vanish(&a, stalled, "/queue/fullback", PARTS).await;
    let fallback = a
        .log
        .wait_for_async(10.0, "the whole message goes back")
        .await;
    println!("{written} of {PARTS} parts written to the worker that left; {fallback}");
    // A worker on the other broker drains the stream: every message, those
    // given back included, long before the acknowledgement wait.
    let mut w = Raw::subscribe(b.port, "/queue/fullback").await;
    let mut got = HashSet::new();
    within(30.0, "every message at the other broker", async {
        while got.len() < PARTS + FLOOD {
            got.insert(id(w.read().await.expect("a message")));
        }
    })
    .await;
    assert!(within(10.0, "the flood's publisher done", flooding)
        .await
        .unwrap());
}

/// What a broker pulls ahead of a slow worker is bounded in bytes, not only
/// in parts: messages larger than an envelope travel one per JetStream
/// message, and room + lookahead parts of them were hundreds of MiB held
/// outside the memory budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_pulls_ahead_of_a_slow_worker_a_bounded_number_of_bytes() {
    const N: usize = 300;
    const SIZE: usize = 600 * 1024;
    let nats = Nats::start();
    // The worker's own queue holds 4 (2.4 MB), so what a holds beyond that
    // is what it pulled ahead.
    let a = clustered(&nats, &["--worker-queue", "4"]);
    let b = clustered(&nats, &[]);
    // 180 MB wait in JetStream before any worker comes.
    publish_numbered(b.port, "/queue/big", N, SIZE).await;
    let pid = a.child.id();
    let before = proc_status(pid, "VmRSS");
    let mut w = Raw::subscribe(a.port, "/queue/big").await;
    within(60.0, "every message, slowly", async {
        for _ in 0..N {
            w.read().await.expect("a message");
            // A slow worker: JetStream could give a far more than this.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let grew = proc_status(pid, "VmHWM").saturating_sub(before) / 1024;
    println!("a's peak resident memory grew {grew} MiB for a slow worker of {N} × 600 KB");
    assert!(
        grew < 40,
        "a held {grew} MiB for a worker with room for 4 messages of 600 KB"
    );
}

/// A `/topic` message that went to the other brokers was routed, though
/// nobody on its own broker was subscribed: that broker counts it sent to the
/// cluster, not unrouted (walkthrough 15: it counted both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_message_forwarded_to_the_cluster_is_not_unrouted() {
    const N: usize = 100;
    let nats = Nats::start();
    let mut a = clustered(&nats, &[]);
    let b = clustered(&nats, &[]);
    let sub = Raw::subscribe(b.port, "/topic/f").await;
    following(&b, "/topic/f").await;
    let reader = tokio::spawn(read_exactly(sub, N));
    let mut p = publisher(a.port).await;
    for i in 0..N {
        p.publish("/topic/f", format!("a:{i}").as_bytes()).await;
    }
    p.goodbye().await;
    assert!(p.closed().await);
    let got = within(30.0, "every message at b", reader).await.unwrap();
    in_order_once(&got, &["a"], N);
    let summary = a.terminate();
    assert!(
        summary_field(&summary, "to_cluster") >= N as u64,
        "{summary}"
    );
    assert_eq!(summary_field(&summary, "unrouted"), 0, "{summary}");
}

/// Protocol v2 across a cluster: a confirm of a `/queue` publish comes once
/// JetStream stored it: with the publisher's broker killed (SIGKILL) right
/// after the confirms, a v2 worker on the other broker gets every confirmed
/// job, each once. A `/topic` message reaches a v2 subscriber across.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_confirms_of_queue_publishes_come_after_jetstream_stored_them() {
    use crate::util::v2::{self, Frame};
    const N: u64 = 500;
    let nats = Nats::start();
    let mut a = clustered(&nats, &["--http", "127.0.0.1:0"]);
    let b = clustered(&nats, &[]);
    for broker in [&a, &b] {
        broker.log.wait_for_async(10.0, "JetStream available").await;
    }
    let http_port: u16 = a.monitor_port();
    let (mut p, _) = Raw::hello(a.port, &["confirms"]).await;

    // A /topic message from a v2 publisher on a reaches a v2 subscriber on b.
    let (mut w, _) = Raw::hello(b.port, &[]).await;
    w.send_frame(&v2::sub(5, "/topic/v2news")).await;
    assert_eq!(w.next().await, Frame::Subscribed(5));
    following(&b, "/topic/v2news").await;
    p.send_frame(&v2::publish(Some(1), "/topic/v2news", b"across"))
        .await;
    within(10.0, "the topic message across the cluster", async {
        loop {
            if let Frame::Msg {
                sid: 5, payload, ..
            } = w.next().await
            {
                assert_eq!(payload, b"across");
                break;
            }
        }
    })
    .await;

    let mut wire = Vec::new();
    for i in 2..=N + 1 {
        v2::put(
            &mut wire,
            &v2::publish(Some(i), "/queue/v2held", format!("{i}").as_bytes()),
        );
    }
    p.send(&wire).await;
    within(30.0, "every publish confirmed", async {
        loop {
            match p.next().await {
                Frame::Confirm(up_to) if up_to == N + 1 => break,
                Frame::Confirm(_) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    // Confirmed means stored: JetStream acknowledged every one (they travel
    // many to a JetStream message), and nobody has taken any yet.
    let (_, server) = http(http_port, "GET", "/api/server", None).await;
    // (and the /topic message, forwarded).
    assert_eq!(server["totals"]["cluster"]["to_cluster"], N + 1, "{server}");
    // The publisher's broker dies at once: nothing of it is asked to stop.
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    w.send_frame(&v2::sub(4, "/queue/v2held")).await;
    assert_eq!(w.next().await, Frame::Subscribed(4));
    let mut got = HashSet::new();
    within(30.0, "every confirmed job on the other broker", async {
        while (got.len() as u64) < N {
            match w.next().await {
                Frame::Msg {
                    sid: 4, payload, ..
                } => {
                    assert!(got.insert(payload), "a job twice");
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
}

/// "following" has its pair: when a channel's last local subscriber leaves,
/// the broker says it stopped taking the channel from the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_says_when_it_stops_following_a_channel() {
    let nats = Nats::start();
    let broker = clustered(&nats, &[]);
    let mut sub = Raw::subscribe(broker.port, "/topic/brief").await;
    following(&broker, "/topic/brief").await;
    sub.goodbye().await;
    assert!(sub.closed().await);
    broker
        .log
        .wait_for_async(10.0, "cluster: no longer following /topic/brief")
        .await;
}

/// An acknowledging worker on a clustered broker: (connection, its broker).
async fn acking_worker(port: u16, credit: u32, channel: &str) -> Raw {
    use crate::util::v2::{self, Frame};
    let (mut c, hello) = Raw::hello(port, &["acks", "headers"]).await;
    assert!(hello["features"].to_string().contains("acks"), "{hello}");
    c.send_frame(&v2::sub_acked(1, credit, channel)).await;
    assert_eq!(c.next().await, Frame::Subscribed(1));
    c
}

/// The next delivery: (delivery id, attempt, payload).
async fn next_job(c: &mut Raw, what: &str) -> (u64, u32, Vec<u8>) {
    use crate::util::v2::Frame;
    within(20.0, what, async {
        loop {
            match c.next().await {
                Frame::Msg {
                    delivery,
                    attempt,
                    payload,
                    ..
                } => return (delivery, attempt, payload),
                Frame::Ping(_) | Frame::Pong(_) => {}
                other => panic!("{what}: expected a MSG, got {other:?}"),
            }
        }
    })
    .await
}

/// In a cluster a job an acknowledging worker holds is JetStream's until the
/// worker answers: neither the worker's death nor its broker's loses it, and
/// an acknowledged job never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_an_acknowledging_worker_outlives_its_broker() {
    use crate::util::v2::{self, publish_confirmed};
    let nats = Nats::start();
    let (a, mut b) = two_brokers(
        &nats,
        &["--cluster-ack-wait", "1s"],
        &["--cluster-ack-wait", "1s", "--ack-wait", "1h"],
    )
    .await;
    let mut w = acking_worker(b.port, 2, "/queue/held").await;
    // Two publishes, two JetStream messages: one is acknowledged, one held.
    publish_confirmed(a.port, "/queue/held", &[b"done on b"]).await;
    publish_confirmed(a.port, "/queue/held", &[b"held on b"]).await;
    let (first, attempt, payload) = next_job(&mut w, "the first job on b").await;
    assert_eq!((attempt, payload.as_slice()), (1, &b"done on b"[..]));
    let (_, _, payload) = next_job(&mut w, "the second job on b").await;
    assert_eq!(payload, b"held on b");
    w.send_frame(&v2::ack(&[first])).await;
    // The acknowledgement has reached b once b answers a PING after it.
    w.send_frame(&v2::ping(7)).await;
    within(10.0, "the PONG", async {
        while w.next().await != crate::util::v2::Frame::Pong(7) {}
    })
    .await;
    // b's acknowledgement of the first job reaches JetStream on its own time:
    // give it the round trip a NATS flush takes before b dies.
    until_pending(
        &nats,
        "/queue/held",
        10.0,
        "the first job settled in JetStream",
        |n| n == 1,
    )
    .await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    drop(w);

    let mut other = acking_worker(a.port, 2, "/queue/held").await;
    let (id, attempt, payload) = next_job(&mut other, "the held job on a").await;
    assert_eq!(payload, b"held on b", "the acknowledged job came back");
    assert_eq!(attempt, 2, "JetStream's second delivery of it");
    other.send_frame(&v2::ack(&[id])).await;
    // Nothing else: the acknowledged job is not redelivered, then or after
    // a job published now.
    publish_confirmed(a.port, "/queue/held", &[b"marker"]).await;
    let (_, _, payload) = next_job(&mut other, "the marker").await;
    assert_eq!(payload, b"marker", "the acknowledged job came back");
}

/// A job a worker ends with `TERM` on one broker is a dead letter of the
/// cluster: a listener on another broker reads it with its payload, its
/// headers and the reasons, and it is stored before the job leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_in_a_cluster_keeps_its_payload_and_headers_on_every_broker() {
    use crate::util::v2::{self, Frame};
    let nats = Nats::start();
    let (a, mut b) = two_brokers(&nats, &[], &["--max-deliveries", "2"]).await;
    let mut w = acking_worker(b.port, 4, "/queue/dl").await;
    let (mut p, _) = Raw::hello(a.port, &["confirms", "headers"]).await;
    let mut wire = Vec::new();
    v2::put(
        &mut wire,
        &v2::publish_with_headers("/queue/dl", &[("trace", b"t-1")], b"poison"),
    );
    v2::put(
        &mut wire,
        &v2::publish(Some(9), "/queue/dl", b"fails twice"),
    );
    p.send(&wire).await;
    within(10.0, "the confirm", async {
        while p.next().await != Frame::Confirm(9) {}
    })
    .await;
    let mut seen = Vec::new();
    within(20.0, "both jobs, with their headers", async {
        while seen.len() < 2 {
            match w.next().await {
                Frame::MsgWithHeaders {
                    headers, payload, ..
                } => {
                    assert_eq!(payload, b"poison");
                    assert_eq!(headers, [("trace".to_string(), b"t-1".to_vec())]);
                    seen.push("poison");
                }
                Frame::Msg { payload, .. } => {
                    assert_eq!(payload, b"fails twice");
                    seen.push("fails");
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    // Delivery ids 1 and 2, in publish order.
    w.send_frame(&v2::term(&[1])).await;
    w.send_frame(&v2::nak(0, &[2])).await;
    let (id, attempt, payload) = next_job(&mut w, "the second attempt").await;
    assert_eq!((attempt, payload.as_slice()), (2, &b"fails twice"[..]));
    w.send_frame(&v2::nak(0, &[id])).await;
    // Both are dead letters now; b dies before anyone reads them.
    let (mut d, _) = Raw::hello(a.port, &["headers"]).await;
    until_pending(
        &nats,
        "/queue/dl/dead",
        20.0,
        "both dead letters stored in JetStream",
        |n| n >= 2,
    )
    .await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    d.send_frame(&v2::sub(3, "/queue/dl/dead")).await;
    assert_eq!(d.next().await, Frame::Subscribed(3));
    let mut dead = Vec::new();
    within(20.0, "both dead letters on the other broker", async {
        while dead.len() < 2 {
            match d.next().await {
                Frame::MsgWithHeaders {
                    headers, payload, ..
                } => {
                    let h = |k: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    };
                    assert_eq!(h("aioq-channel").as_deref(), Some("/queue/dl"));
                    match payload.as_slice() {
                        b"poison" => {
                            assert_eq!(h("aioq-reason").as_deref(), Some("term"));
                            assert_eq!(h("trace").as_deref(), Some("t-1"), "{headers:?}");
                        }
                        b"fails twice" => {
                            assert_eq!(h("aioq-reason").as_deref(), Some("max_deliveries"));
                            assert_eq!(h("aioq-attempts").as_deref(), Some("2"));
                        }
                        other => panic!("{}", String::from_utf8_lossy(other)),
                    }
                    dead.push(payload);
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    // And the jobs themselves are settled: nothing of /queue/dl is left.
    let mut w = acking_worker(a.port, 4, "/queue/dl").await;
    crate::util::v2::publish_confirmed(a.port, "/queue/dl", &[b"marker"]).await;
    let (_, _, payload) = next_job(&mut w, "the marker").await;
    assert_eq!(payload, b"marker", "a dead-lettered job came back");
}

/// Polls [`consumer_pending`] until `ok` holds of it, within `secs`.
async fn until_pending(
    nats: &Nats,
    channel: &str,
    secs: f64,
    what: &str,
    ok: impl Fn(u64) -> bool,
) {
    poll_until(secs, what, || async {
        let n = consumer_pending(nats, channel).await;
        if ok(n) {
            Ok(())
        } else {
            Err(format!("{n} pending"))
        }
    })
    .await;
}

/// Messages of `channel`'s JetStream consumer that wait for a broker or
/// that a broker holds unacknowledged (0 before the stream exists).
async fn consumer_pending(nats: &Nats, channel: &str) -> u64 {
    // The stream's name as brokers compute it (FNV-1a 64 of the channel).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in channel.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let name = format!("AIOQ_{h:016X}");
    let v = jsz(nats, "streams=true&consumers=true").await;
    v["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["name"] == name.as_str())
        .flat_map(|s| s["consumer_detail"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            c["num_pending"].as_u64().unwrap_or(0) + c["num_ack_pending"].as_u64().unwrap_or(0)
        })
        .sum()
}

/// Headers cross the cluster: a `/topic` message over NATS and a `/queue`
/// message through JetStream reach a subscriber on another broker with their
/// header block, and a version 1 subscriber there gets the payload alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_cross_the_cluster() {
    use crate::util::v2::{self, Frame};
    let nats = Nats::start();
    let (a, b) = two_brokers(&nats, &[], &[]).await;
    let (mut s, hello) = Raw::hello(b.port, &["headers"]).await;
    assert_eq!(hello["features"], serde_json::json!(["headers"]), "{hello}");
    s.send_frame(&v2::sub(1, "/topic/h")).await;
    assert_eq!(s.next().await, Frame::Subscribed(1));
    s.send_frame(&v2::sub(2, "/queue/h")).await;
    assert_eq!(s.next().await, Frame::Subscribed(2));
    let mut old = Raw::subscribe(b.port, "/topic/h").await;
    following(&b, "/topic/h").await;
    let (mut p, _) = Raw::hello(a.port, &["headers", "confirms"]).await;
    let mut wire = Vec::new();
    v2::put(
        &mut wire,
        &v2::publish_with_headers("/topic/h", &[("trace", b"t-7")], b"news"),
    );
    v2::put(
        &mut wire,
        &v2::publish_with_headers("/queue/h", &[("k", b"v")], b"job"),
    );
    p.send(&wire).await;
    let mut got = Vec::new();
    within(20.0, "both messages with their headers", async {
        while got.len() < 2 {
            match s.next().await {
                Frame::MsgWithHeaders {
                    sid,
                    headers,
                    payload,
                } => got.push((sid, headers, payload)),
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [
            (
                1,
                vec![("trace".to_string(), b"t-7".to_vec())],
                b"news".to_vec()
            ),
            (2, vec![("k".to_string(), b"v".to_vec())], b"job".to_vec()),
        ]
    );
    assert_eq!(old.read_text().await, "news");
}

/// An acknowledging worker that dies mid-job: with no other worker on its
/// broker, the job goes back to JetStream at once (not after the cluster's
/// acknowledgement wait) and reaches a worker on another broker, attempt
/// raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_an_acknowledging_worker_that_dies_reaches_another_broker() {
    use crate::util::v2::publish_confirmed;
    let nats = Nats::start();
    let (a, b) = two_brokers(
        &nats,
        &["--cluster-ack-wait", "5m"],
        &["--cluster-ack-wait", "5m"],
    )
    .await;
    let mut w = acking_worker(b.port, 1, "/queue/dies").await;
    publish_confirmed(a.port, "/queue/dies", &[b"the job"]).await;
    let (_, attempt, payload) = next_job(&mut w, "the job on b").await;
    assert_eq!((attempt, payload.as_slice()), (1, &b"the job"[..]));
    drop(w);
    let mut other = acking_worker(a.port, 1, "/queue/dies").await;
    let (_, attempt, payload) = next_job(&mut other, "the job on a").await;
    assert_eq!(payload, b"the job");
    assert!(attempt >= 2, "a second delivery, not {attempt}");
}

/// `aioq work` on one broker of a cluster, jobs published and dead letters
/// read on the other: good jobs done once, failing ones dead-lettered after
/// exactly `--max-deliveries` with their payload, and JetStream left holding
/// nothing of the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_across_a_cluster_does_each_job_once_and_dead_letters_the_failures() {
    use crate::util::v2::{self, Frame};
    let nats = Nats::start();
    let (a, b) = two_brokers(&nats, &[], &["--max-deliveries", "3"]).await;
    let (mut dead, _) = Raw::hello(a.port, &["headers"]).await;
    dead.send_frame(&v2::sub(1, "/queue/cjobs/dead")).await;
    assert_eq!(dead.next().await, Frame::Subscribed(1));
    let jobs = crate::util::twenty_jobs();
    let bytes: Vec<&[u8]> = jobs.iter().map(String::as_bytes).collect();
    v2::publish_confirmed(a.port, "/queue/cjobs", &bytes).await;
    crate::util::work_failing_bad_jobs(b.port, "/queue/cjobs", &jobs);
    let mut letters = Vec::new();
    within(20.0, "four dead letters on the other broker", async {
        while letters.len() < 4 {
            match dead.next().await {
                Frame::MsgWithHeaders {
                    headers, payload, ..
                } => {
                    assert!(
                        headers.contains(&("aioq-attempts".into(), b"3".to_vec())),
                        "{headers:?}"
                    );
                    letters.push(String::from_utf8(payload).unwrap());
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    letters.sort();
    assert_eq!(letters, ["bad-10", "bad-15", "bad-20", "bad-5"]);
    until_pending(
        &nats,
        "/queue/cjobs",
        10.0,
        "every job answered in JetStream",
        |n| n == 0,
    )
    .await;
}
