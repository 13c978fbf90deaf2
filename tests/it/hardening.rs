//! A broker left running on a network: memory bounded under floods, peers that
//! stop mid-way are let go, per-address limits, churn leaves nothing behind,
//! and ten thousand subscribers at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::util::*;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Floods four subscribers that never read with 256 MiB of 256 KiB messages
/// (1 GiB of deliveries); returns how far the broker's peak RSS rose, in MiB,
/// and its shutdown summary.
async fn flood_stalled_subscribers(max_memory: &str) -> (u64, String) {
    // Per-subscriber bounds far above the budget: only the budget can stop it.
    let mut broker = Broker::spawn(&[
        "--max-memory",
        max_memory,
        "--send-queue",
        "1000000",
        "--send-queue-bytes",
        "4GiB",
        "--write-timeout",
        "10min",
    ]);
    let pid = broker.child.id();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let s = Raw::subscribe_small_buffer(broker.port, "/topic/flood").await;
        stalled.push(s);
    }
    wait_subscribed(&broker, "/topic/flood", 4).await;
    let before = proc_status(pid, "VmRSS");
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let payload = vec![b'x'; 256 * 1024];
    within(
        120.0,
        "the flood is routed, never waiting on stalled sockets",
        async {
            for _ in 0..1024 {
                p.publish("/topic/flood", &payload).await;
            }
            p.goodbye().await;
            assert!(p.closed().await);
        },
    )
    .await;
    let peak = proc_status(pid, "VmHWM");
    drop(stalled);
    let summary = broker.terminate();
    (peak.saturating_sub(before) / 1024, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_bounds_the_broker_under_a_flood_to_stalled_subscribers() {
    let (bounded, summary) = flood_stalled_subscribers("32MiB").await;
    let over_budget = dropped(&summary, "memory_limit");
    assert!(over_budget > 0, "budget reached and counted: {summary}");
    let delivered = summary_field(&summary, "delivered");
    let lost: u64 = ["memory_limit", "subscriber_gone", "shutdown", "queue_full"]
        .iter()
        .map(|r| dropped(&summary, r))
        .sum();
    assert_eq!(delivered + lost, 4 * 1024, "all accounted for: {summary}");
    // 32 MiB of payload held, plus read buffers and allocator slack.
    assert!(
        bounded < 96,
        "peak RSS rose {bounded} MiB with a 32 MiB budget"
    );

    // The same flood with no effective budget, to show the bound is real.
    let (unbounded, summary) = flood_stalled_subscribers("64GiB").await;
    eprintln!("flood: peak RSS +{bounded} MiB with --max-memory 32MiB, +{unbounded} MiB without");
    assert_eq!(dropped(&summary, "memory_limit"), 0, "{summary}");
    assert!(
        unbounded > 2 * bounded && unbounded > 150,
        "without a budget the same flood holds far more: {unbounded} MiB vs {bounded} MiB"
    );
}

/// One-byte messages cost the broker far more than their byte each: every
/// message a send queue holds takes its place in the queue. The budget counts
/// those places, so a flood of tiny messages to stalled subscribers is
/// bounded by `--max-memory` as a flood of large ones is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_counts_the_places_tiny_messages_take() {
    const N: usize = 1_200_000;
    let mut broker = Broker::spawn(&[
        "--max-memory",
        "4MiB",
        "--send-queue",
        "2000000",
        "--write-timeout",
        "10min",
        "--http",
        "127.0.0.1:0",
    ]);
    let http = broker.monitor_port();
    let pid = broker.child.id();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(Raw::subscribe_small_buffer(broker.port, "/topic/tiny").await);
    }
    wait_subscribed(&broker, "/topic/tiny", 2).await;
    let before = proc_status(pid, "VmRSS");
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for _ in 0..10_000 {
        publish_wire(&mut wire, "/topic/tiny", b"x");
    }
    within(120.0, "the flood is routed", async {
        for _ in 0..N / 10_000 {
            p.stream.write_all(&wire).await.unwrap();
        }
        p.goodbye().await;
        assert!(p.closed().await);
    })
    .await;
    let risen = proc_status(pid, "VmHWM").saturating_sub(before) / 1024;
    // What the budget counted for the places, shown beside the payload.
    let places = metric(http, "aioq_held_overhead_bytes").await;
    assert!(places > 1 << 20, "{places} bytes of places counted");
    drop(stalled);
    let summary = broker.terminate();
    eprintln!("tiny-message flood: peak RSS +{risen} MiB with --max-memory 4MiB");
    assert!(dropped(&summary, "memory_limit") > 0, "{summary}");
    // Without the places counted: every payload byte within the budget,
    // and +71 MiB for the queues' places (measured).
    assert!(risen < 40, "peak RSS rose {risen} MiB with a 4 MiB budget");
}

/// A writer stuck on its socket holds the messages it took to write: they
/// stay in the budget until written. Thirty-two subscribers that never read,
/// each on a channel of its own, are each sent four 1 MiB messages under an
/// 8 MiB budget: what the budget has room for is held, the rest missed and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stuck_writer_holds_stays_in_the_budget() {
    const SUBSCRIBERS: usize = 32;
    let mut broker = Broker::spawn(&["--max-memory", "8MiB", "--write-timeout", "10min"]);
    let pid = broker.child.id();
    let mut stalled = Vec::new();
    for i in 0..SUBSCRIBERS {
        let channel = format!("/topic/own{i}");
        stalled.push(Raw::subscribe_small_buffer(broker.port, &channel).await);
        wait_subscribed(&broker, &channel, 1).await;
    }
    let before = proc_status(pid, "VmRSS");
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let body = vec![b'b'; 1 << 20];
    within(60.0, "the messages are routed", async {
        for _ in 0..4 {
            for i in 0..SUBSCRIBERS {
                p.publish(&format!("/topic/own{i}"), &body).await;
            }
        }
        p.goodbye().await;
        assert!(p.closed().await);
    })
    .await;
    let risen = proc_status(pid, "VmHWM").saturating_sub(before) / 1024;
    drop(stalled);
    let summary = broker.terminate();
    eprintln!("stuck writers: peak RSS +{risen} MiB with --max-memory 8MiB");
    assert!(dropped(&summary, "memory_limit") > 0, "{summary}");
    // Given back when taken, the stuck writers' messages were not counted:
    // +68 MiB (measured). What is left past the budget is each writer's copy
    // of its frame in its write buffer (32 x 1 MiB), not yet counted.
    assert!(risen < 56, "peak RSS rose {risen} MiB with an 8 MiB budget");
}

/// The same for `/queue` backlogs nobody works on: their places are counted,
/// so a publisher filling many of them with one-byte messages reaches the
/// budget, waits, and evicts the oldest worker-less backlog (counted), where
/// the broker's memory would otherwise grow by 48 bytes a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_counts_the_places_of_worker_less_backlogs() {
    const CHANNELS: usize = 40;
    let broker = Broker::spawn(&["--max-memory", "8MiB", "--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    let pid = broker.child.id();
    let before = proc_status(pid, "VmRSS");
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let flood = tokio::spawn(async move {
        for c in 0..CHANNELS {
            let mut wire = Vec::new();
            for _ in 0..10_000 {
                publish_wire(&mut wire, &format!("/queue/tiny{c}"), b"x");
            }
            if p.stream.write_all(&wire).await.is_err() {
                return;
            }
        }
    });
    let evicted = "aioq_messages_dropped_total{reason=\"evicted\"}";
    metric_reaches(http, evicted, 60.0, |n| n > 0).await;
    let risen = proc_status(pid, "VmHWM").saturating_sub(before) / 1024;
    eprintln!("tiny-message backlogs: peak RSS +{risen} MiB with --max-memory 8MiB");
    // Without the places counted no backlog is evicted: 400,000 payload
    // bytes are well within the budget, their places are not (300 such
    // channels raised the RSS by 198 MiB).
    assert!(risen < 24, "peak RSS rose {risen} MiB with an 8 MiB budget");
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_publisher_waits_at_the_memory_budget_and_nothing_is_lost() {
    const N: usize = 64;
    const MIB: u64 = 1 << 20;
    // Backlogs get half of the budget: room for two messages there, and the
    // other half for the broker's own samples (/topic messages, which would be
    // dropped with the budget spent).
    let broker = Broker::spawn(&[
        "--max-memory",
        "4200KiB",
        "--backlog",
        "100000",
        "--metrics",
        "--metrics-interval",
        "20ms",
        "--metrics-channel",
        "/topic/self",
    ]);
    let port = broker.port;
    let mut mon = Raw::subscribe(port, "/topic/self").await;
    // 64 x 1 MiB for a queue with no worker yet, more than socket buffers can
    // absorb: the backlog may hold two, then the publisher must wait.
    let publisher = tokio::spawn(async move {
        let mut p = Raw::subscribe(port, "/null").await;
        for i in 0..N {
            let mut m = format!("{i:08}").into_bytes();
            m.resize(MIB as usize, b'q');
            p.publish("/queue/big", &m).await;
        }
        p.goodbye().await;
        p.closed().await
    });
    // The broker's own count shows the backlogs' share reached, and never
    // passed (a third message would pass it).
    within(30.0, "the backlog fills its share of the budget", async {
        loop {
            let (_, held, _) = broker_counters(&mut mon).await;
            assert!(held < 3 * MIB, "{held} bytes held past the backlogs' share");
            if held >= 2 * MIB {
                return;
            }
        }
    })
    .await;
    assert!(
        !publisher.is_finished(),
        "publisher held back by the budget"
    );

    let mut worker = Raw::subscribe(broker.port, "/queue/big").await;
    within(60.0, "every message, in order", async {
        for i in 0..N {
            let m = worker.read().await.expect("worker cut off");
            assert_eq!(&m[..8], format!("{i:08}").as_bytes());
        }
    })
    .await;
    assert!(within(10.0, "publisher done", publisher).await.unwrap());
}

/// A connection whose source address is `ip` (any 127.x.y.z reaches loopback).
async fn connect_from(ip: &str, port: u16) -> Raw {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let stream = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    Raw { stream }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited_and_other_addresses_still_get_in() {
    let broker = Broker::spawn(&["--max-connections-per-ip", "2"]);
    let mut a = connect_from("127.0.0.1", broker.port).await;
    let mut b = connect_from("127.0.0.1", broker.port).await;
    a.frame(b"/topic/ip").await;
    b.frame(b"/topic/ip").await;
    wait_subscribed(&broker, "/topic/ip", 2).await;
    let mut third = connect_from("127.0.0.1", broker.port).await;
    assert_eq!(
        within(5.0, "end of stream", third.read()).await,
        Some(vec![])
    );
    assert!(within(5.0, "closed", third.closed()).await);
    broker
        .log
        .wait_for_async(5.0, "refused: 2 connections from 127.0.0.1 already")
        .await;

    let mut other = connect_from("127.0.0.2", broker.port).await;
    other.frame(b"/null").await;
    other.publish("/topic/ip", b"from elsewhere").await;
    assert_eq!(within(5.0, "a", a.read_text()).await, "from elsewhere");

    // A slot freed is a slot again.
    drop(b);
    broker
        .log
        .wait_for_async(5.0, "disconnected from /topic/ip")
        .await;
    let mut again = connect_from("127.0.0.1", broker.port).await;
    again.frame(b"/null").await;
    again.publish("/topic/ip", b"back in").await;
    assert_eq!(within(5.0, "a", a.read_text()).await, "back in");
}

/// A worker whose host vanished takes nothing: its socket stops accepting bytes.
/// The write deadline frees it and its queued messages go to the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_taking_data_is_cut_and_its_messages_go_to_others() {
    const N: usize = 400;
    let broker = Broker::spawn(&["--write-timeout", "1s", "--keepalive", "1s"]);
    let gone = Raw::subscribe_small_buffer(broker.port, "/queue/w").await;
    wait_subscribed(&broker, "/queue/w", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let body = vec![b'w'; 16 * 1024];
    // Alone, the vanished worker gets the first messages; its socket fills.
    for i in 0..N / 2 {
        let mut m = format!("{i:08}").into_bytes();
        m.extend_from_slice(&body);
        p.publish("/queue/w", &m).await;
    }
    let mut alive = Raw::subscribe(broker.port, "/queue/w").await;
    wait_subscribed(&broker, "/queue/w", 2).await;
    // The live worker reads all along (else it, too, would stop taking data).
    let seen = Arc::new(Mutex::new((HashSet::new(), Vec::new())));
    let reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(m) = alive.read().await {
                let i: usize = std::str::from_utf8(&m[..8]).unwrap().parse().unwrap();
                let mut seen = seen.lock().unwrap();
                if !seen.0.insert(i) {
                    seen.1.push(i);
                }
            }
        }
    });
    for i in N / 2..N {
        let mut m = format!("{i:08}").into_bytes();
        m.extend_from_slice(&body);
        p.publish("/queue/w", &m).await;
    }
    let line = broker
        .log
        .wait_for_async(10.0, "accepted nothing for 1s")
        .await;
    // What the broker wrote into the dead socket is gone with its host; all
    // the rest reaches the live worker, each message once.
    let taken = out_count(&line);
    wait_until_async(30.0, "the rest at the live worker", || {
        seen.lock().unwrap().0.len() >= N - taken
    })
    .await;
    assert!(!reader.is_finished(), "live worker cut off");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.0.len(), N - taken);
    assert!(seen.1.is_empty(), "delivered twice: {:?}", seen.1);
    assert!(taken < N / 2, "the dead socket took only what fit: {line}");
    drop(gone);
}

/// A protocol 1 client whose `/queue` publishes wait for a full backlog, cut
/// meanwhile for not reading its own subscription: what it sent and the
/// backlog never took is counted lost on the channel, every message of it,
/// and what the backlog took still reaches a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_cut_while_its_queue_publishes_wait_counts_them_lost() {
    const N: u64 = 40;
    let broker = Broker::spawn(&[
        "--backlog",
        "10",
        "--write-timeout",
        "1s",
        "--http",
        "127.0.0.1:0",
    ]);
    let http = broker.monitor_port();
    let mut cut = Raw::subscribe_small_buffer(broker.port, "/topic/feed").await;
    wait_subscribed(&broker, "/topic/feed", 1).await;
    // Nobody works on /queue/held: ten fit, the rest wait, and the reader
    // with them (one write, so they are read together).
    let mut wire = Vec::new();
    for i in 0..N {
        publish_wire(&mut wire, "/queue/held", format!("{i:04}").as_bytes());
    }
    cut.stream.write_all(&wire).await.unwrap();
    let backlog = "aioq_channel_backlog_messages{channel=\"/queue/held\"}";
    metric_reaches(http, backlog, 10.0, |n| n == 10).await;
    // Its own subscription's messages pile up unread (more than the
    // kernel's buffers take): the write deadline cuts it while its
    // publishes still wait.
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let body = vec![b'f'; 64 * 1024];
    for _ in 0..256 {
        p.publish("/topic/feed", &body).await;
    }
    let line = broker
        .log
        .wait_for_async(10.0, "accepted nothing for 1s")
        .await;
    // What it read of its publishes (the rest never left its socket or the
    // read buffer: not the broker's, as at a shutdown).
    let read: u64 = line
        .split("(in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no in count in {line}"));
    let placed = metric(http, backlog).await;
    assert!(read > placed, "some were read and waited: {line}");
    let dropped = "aioq_channel_dropped_total{channel=\"/queue/held\"}";
    metric_reaches(http, dropped, 10.0, |n| n == read - placed).await;
    let mut worker = Raw::subscribe(broker.port, "/queue/held").await;
    for i in 0..placed {
        let m = within(5.0, "the backlog", worker.read_text()).await;
        assert_eq!(m, format!("{i:04}"));
    }
    drop(cut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_left_half_sent_closes_the_connection_and_routes_nothing() {
    let broker = Broker::spawn(&["--frame-timeout", "500ms"]);
    let mut sub = Raw::subscribe(broker.port, "/topic/half").await;
    wait_subscribed(&broker, "/topic/half", 1).await;
    let mut half = Raw::subscribe(broker.port, "/null").await;
    half.publish_cut("/topic/half").await;
    // The connection stays open on the client side; the broker must end it.
    assert!(within(10.0, "closed by the broker", half.closed()).await);
    broker
        .log
        .wait_for_async(5.0, "half-sent for more than 500ms")
        .await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/half", b"whole").await;
    assert_eq!(within(5.0, "first message", sub.read_text()).await, "whole");
}

/// One client's life: connect, do something, leave in one of the ways a real
/// client does.
async fn churn_once(port: u16, k: usize) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let raw = |b: &[u8]| {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let topic = format!("/topic/churn/{}", k % 7);
    let queue = format!("/queue/churn/{}", k % 3);
    let _ = match k % 7 {
        // Subscriber that says goodbye.
        0 => {
            let mut w = raw(topic.as_bytes());
            w.extend(raw(b""));
            s.write_all(&w).await
        }
        // Worker that closes (FIN) with messages maybe queued for it.
        1 => s.write_all(&raw(queue.as_bytes())).await,
        // Publisher that resets the connection.
        2 | 3 => {
            let mut w = raw(b"/null");
            for i in 0..20 {
                let ch = if i % 2 == 0 { &topic } else { &queue };
                w.extend(raw(ch.as_bytes()));
                w.extend(raw(format!("churn {k} {i}").as_bytes()));
            }
            let r = s.write_all(&w).await;
            // Linger 0: the close sends RST instead of FIN.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            r
        }
        // Cut in the middle of a frame.
        4 => {
            let mut w = raw(b"/null");
            w.extend_from_slice(&1000u32.to_be_bytes());
            w.extend_from_slice(b"partial");
            s.write_all(&w).await
        }
        // Garbage.
        5 => s.write_all(&[0xff; 32]).await,
        // Connects, says nothing, leaves.
        _ => Ok(()),
    };
    drop(s);
}

/// Clients as processes killed with SIGKILL mid-way.
fn killed_clients(port: u16, n: usize) {
    let port = port.to_string();
    for i in 0..n {
        let args = if i % 2 == 0 {
            vec!["listen", "--port", &port, "--channel", "/topic/churn/1"]
        } else {
            let channel = "/queue/churn/1";
            vec![
                "send",
                "--port",
                &port,
                "--channel",
                channel,
                "--interval",
                "1ms",
            ]
        };
        let mut client = Proc::spawn(&args, false);
        // Killed only once it is connected, so the broker loses a live peer.
        client.err.wait_for(10.0, "connected to");
        client.child.kill().unwrap();
        client.child.wait().unwrap();
    }
}

/// Connections the kernel has completed and the broker not yet accepted on
/// its loopback listener (for a listening socket, /proc/net/tcp's rx_queue).
fn accept_queue(port: u16) -> u64 {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1] == local && f[3] == "0A")
        .map(|f| u64::from_str_radix(f[4].split(':').nth(1).unwrap(), 16).unwrap())
        .expect("the broker's listening socket")
}

/// The broker's own report of its runtime: (tasks, held payload bytes, open
/// connections).
async fn broker_counters(mon: &mut Raw) -> (u64, u64, u64) {
    let m = within(10.0, "a metrics sample", mon.read()).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    (
        v["broker"]["tasks"].as_u64().unwrap(),
        v["broker"]["held_bytes"].as_u64().unwrap(),
        v["broker"]["connections"].as_u64().unwrap(),
    )
}

async fn churn(port: u16, rounds: usize) {
    let mut tasks = Vec::new();
    for t in 0..50 {
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                churn_once(port, t * rounds + r).await;
            }
        }));
    }
    let killer = tokio::task::spawn_blocking(move || killed_clients(port, rounds / 10));
    for t in tasks {
        t.await.unwrap();
    }
    killer.await.unwrap();
}

/// Takes what the churn left in the `/queue` backlogs (messages waiting for a
/// worker are held, not leaked), then waits until the broker is back to
/// `fds` descriptors and `tasks` tasks holding no payload.
///
/// The workers stay until every churned connection is gone: the kernel
/// completes handshakes the broker has not accepted yet, so a publisher can
/// still be routing long after the test's client side has finished.
async fn wait_idle(port: u16, pid: u32, mon: &mut Raw, idle: (usize, u64, u64)) {
    let (fds, tasks, connections) = idle;
    let mut workers = Vec::new();
    for q in 0..3 {
        let mut w = Raw::subscribe(port, &format!("/queue/churn/{q}")).await;
        workers.push(tokio::spawn(
            async move { while w.read().await.is_some() {} },
        ));
    }
    let mut seen = (0, 0, 0, 0);
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (_, held, open) = broker_counters(mon).await;
            seen = (held, open, open_fds(pid), accept_queue(port));
            if held == 0 && open <= connections + 3 && seen.2 <= fds + 3 && seen.3 == 0 {
                return;
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "queues not drained: (held bytes, connections, fds, accept queue) = {seen:?}, \
         idle was (0, {connections}, {fds}, 0) before 3 workers joined"
    );
    for w in workers {
        w.abort();
    }
    let mut last = (0, 0, 0);
    let idle = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (t, held, _) = broker_counters(mon).await;
            last = (open_fds(pid), t, held);
            // A margin of two for the broker's own reporter reconnecting or a
            // timer task in flight; a leak over thousands of connections shows
            // as hundreds.
            if last.0 <= fds + 2 && last.1 <= tasks + 2 && last.2 == 0 {
                return;
            }
        }
    })
    .await;
    assert!(
        idle.is_ok(),
        "not back to idle: (fds, tasks, held bytes) = {last:?}, idle was ({fds}, {tasks}, 0), margin 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_descriptor_task_or_memory_behind() {
    let mut broker = Broker::spawn(&[
        "--metrics",
        "--metrics-interval",
        "100ms",
        "--metrics-channel",
        "/topic/self",
        "--subscribe-timeout",
        "1s",
        "--frame-timeout",
        "1s",
    ]);
    let pid = broker.child.id();
    let port = broker.port;
    let mut mon = Raw::subscribe(port, "/topic/self").await;
    // Idle once the broker's own reporter and this monitor are settled in: the
    // same counts three samples in a row.
    let (mut idle, mut same) = ((0, 0, 0), 0);
    while same < 3 {
        let (tasks, _, connections) = broker_counters(&mut mon).await;
        let now = (open_fds(pid), tasks, connections);
        same = if now == idle { same + 1 } else { 1 };
        idle = now;
    }
    let (idle_fds, idle_tasks, _) = idle;

    // A first round warms the allocator's pools; memory is compared after it.
    within(120.0, "warm-up churn", churn(port, 20)).await;
    wait_idle(port, pid, &mut mon, idle).await;
    let warm_rss = proc_status(pid, "VmRSS");

    within(240.0, "churn", churn(port, 200)).await;
    wait_idle(port, pid, &mut mon, idle).await;
    let rss = proc_status(pid, "VmRSS");
    let grown = rss.saturating_sub(warm_rss) / 1024;
    assert!(
        grown < 16,
        "RSS grew {grown} MiB over 10,000 churned connections ({warm_rss} KiB -> {rss} KiB)"
    );
    drop(mon);
    let summary = broker.terminate();
    let connections = summary_field(&summary, "connections");
    eprintln!(
        "churn: {connections} connections; back to {idle_fds} fds and {idle_tasks} tasks; \
         RSS {warm_rss} KiB after warm-up, {rss} KiB after"
    );
    assert!(connections > 10_000, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscribers_each_get_every_message_in_order() {
    const CONNS: usize = 10_000;
    const MSGS: usize = 20;
    // This process holds one end of every connection.
    let hard = rlimit::Resource::NOFILE.get().unwrap().1;
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    assert!(
        hard >= CONNS as u64 + 200,
        "the hard open-file limit ({hard}) must allow {CONNS} sockets: raise it (ulimit -Hn)"
    );
    let broker = Broker::spawn(&["--max-connections", "20000"]);
    let mut subs = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut s = Raw::connect(broker.port).await;
        s.frame(b"/topic/many").await;
        subs.push(s);
    }
    wait_subscribed(&broker, "/topic/many", CONNS).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    for i in 0..MSGS {
        p.publish("/topic/many", format!("{i:04}").as_bytes()).await;
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for i in 0..MSGS {
                    let m = s.read().await.expect("subscriber cut off");
                    assert_eq!(m, format!("{i:04}").as_bytes());
                }
            })
        })
        .collect();
    within(120.0, "every subscriber reads every message", async {
        for r in readers {
            r.await.unwrap();
        }
    })
    .await;
}
