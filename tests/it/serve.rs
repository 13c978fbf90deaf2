//! Routing and isolation: what `aioq serve` promises subscribers and publishers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_fans_out_to_every_subscriber_in_order() {
    let broker = Broker::spawn(&[]);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(Raw::subscribe(broker.port, "/topic/news").await);
    }
    let mut other = Raw::subscribe(broker.port, "/topic/other").await;
    wait_subscribed(&broker, "/topic/news", 3).await;
    let mut publisher = Raw::subscribe(broker.port, "/null").await;
    for i in 0..100 {
        publisher
            .publish("/topic/news", format!("m{i}").as_bytes())
            .await;
    }
    publisher.publish("/topic/other", b"elsewhere").await;
    for sub in &mut subs {
        for i in 0..100 {
            let got = within(5.0, "fan-out message", sub.read_text()).await;
            assert_eq!(got, format!("m{i}"));
        }
    }
    assert_eq!(
        within(5.0, "other topic", other.read_text()).await,
        "elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_subscribed_to_its_own_topic_receives_its_message() {
    let broker = Broker::spawn(&[]);
    let mut me = Raw::subscribe(broker.port, "/topic/echo").await;
    wait_subscribed(&broker, "/topic/echo", 1).await;
    me.publish("/topic/echo", b"hello me").await;
    assert_eq!(within(5.0, "own message", me.read_text()).await, "hello me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_round_robin_alternates_between_two_workers() {
    let broker = Broker::spawn(&[]);
    let mut a = Raw::subscribe(broker.port, "/queue/jobs").await;
    wait_subscribed(&broker, "/queue/jobs", 1).await;
    let mut b = Raw::subscribe(broker.port, "/queue/jobs").await;
    wait_subscribed(&broker, "/queue/jobs", 2).await;
    let mut publisher = Raw::subscribe(broker.port, "/null").await;
    for i in 0..10 {
        publisher
            .publish("/queue/jobs", format!("job{i}").as_bytes())
            .await;
    }
    for i in 0..5 {
        assert_eq!(
            within(5.0, "worker a", a.read_text()).await,
            format!("job{}", 2 * i)
        );
        assert_eq!(
            within(5.0, "worker b", b.read_text()).await,
            format!("job{}", 2 * i + 1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_backlog_waits_for_a_worker() {
    let broker = Broker::spawn(&[]);
    let mut publisher = Raw::subscribe(broker.port, "/null").await;
    for i in 0..50 {
        publisher
            .publish("/queue/later", format!("j{i}").as_bytes())
            .await;
    }
    publisher.goodbye().await;
    assert!(within(5.0, "publisher closed", publisher.closed()).await);
    let mut worker = Raw::subscribe(broker.port, "/queue/later").await;
    for i in 0..50 {
        assert_eq!(
            within(5.0, "backlog", worker.read_text()).await,
            format!("j{i}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_messages_without_subscribers_are_not_stored() {
    let broker = Broker::spawn(&[]);
    let mut publisher = Raw::subscribe(broker.port, "/null").await;
    publisher.publish("/topic/void", b"lost to nobody").await;
    publisher.goodbye().await;
    assert!(within(5.0, "publisher closed", publisher.closed()).await);
    let mut sub = Raw::subscribe(broker.port, "/topic/void").await;
    wait_subscribed(&broker, "/topic/void", 1).await;
    let mut publisher = Raw::subscribe(broker.port, "/null").await;
    publisher.publish("/topic/void", b"first seen").await;
    assert_eq!(within(5.0, "message", sub.read_text()).await, "first seen");
}

/// A burst in one write is routed a read buffer's worth at a time: to a
/// subscriber whose send queue takes only part of it, what fits goes in
/// order and every message that does not is counted, one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_half_fits_a_send_queue_is_delivered_or_counted_message_by_message() {
    const N: u32 = 20_000;
    let mut broker = Broker::spawn(&["--send-queue", "100"]);
    let mut stalled = Raw::subscribe_small_buffer(broker.port, "/topic/burst").await;
    wait_subscribed(&broker, "/topic/burst", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for i in 0..N {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(100, b'b');
        publish_wire(&mut wire, "/topic/burst", &m);
    }
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert_eq!(within(10.0, "publisher done", p.read()).await, Some(vec![]));
    // Now the stalled one reads what it was kept.
    stalled.goodbye().await;
    let mut kept = 0u64;
    let mut last = None;
    within(30.0, "the stalled subscriber's end of stream", async {
        while let Some(m) = stalled.read().await {
            if m.is_empty() {
                break;
            }
            let i = u32::from_be_bytes(m[..4].try_into().unwrap());
            assert!(last.is_none_or(|l| i > l), "{i} after {last:?}");
            last = Some(i);
            kept += 1;
        }
    })
    .await;
    let summary = broker.terminate();
    let lost = dropped(&summary, "queue_full");
    assert!(
        lost > 0,
        "the stalled subscriber cannot have taken all: {summary}"
    );
    assert_eq!(kept + lost, u64::from(N), "{summary}");
    assert_eq!(summary_field(&summary, "delivered"), kept, "{summary}");
}

/// The defining property: one subscriber that never reads (its socket buffer
/// full) costs the others nothing, and its losses are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_topic_subscriber_does_not_slow_publisher_or_others() {
    const N: usize = 20_000;
    let mut broker = Broker::spawn(&["--send-queue", "256"]);
    let stalled = Raw::subscribe_small_buffer(broker.port, "/topic/feed").await;
    let mut fast = Vec::new();
    for _ in 0..2 {
        fast.push(Raw::subscribe(broker.port, "/topic/feed").await);
    }
    wait_subscribed(&broker, "/topic/feed", 3).await;

    let payload = vec![b'x'; 2048];
    let mut p = Raw::subscribe(broker.port, "/null").await;
    // The publisher runs at the rate the fast subscribers keep up with (batches of
    // 100 in lockstep); 40 MB go through while one subscriber reads nothing.
    // Only isolation lets this finish: a broker that waited for the stalled
    // socket would stall the publisher after a few megabytes.
    let run = async {
        for batch in 0..N / 100 {
            for i in batch * 100..(batch + 1) * 100 {
                let mut m = format!("{i:08}").into_bytes();
                m.extend_from_slice(&payload[8..]);
                p.publish("/topic/feed", &m).await;
            }
            for sub in &mut fast {
                for i in batch * 100..(batch + 1) * 100 {
                    let m = sub.read().await.expect("fast subscriber cut off");
                    assert_eq!(&m[..8], format!("{i:08}").as_bytes(), "gap or reorder");
                }
            }
        }
    };
    within(60.0, "publisher and fast subscribers not slowed", run).await;
    p.goodbye().await;
    let summary = broker.terminate();
    let lost = dropped(&summary, "queue_full") + dropped(&summary, "shutdown");
    assert!(
        lost > 0,
        "the stalled subscriber cannot have taken all: {summary}"
    );
    assert!(
        broker.log.contains("is a slow consumer on /topic/feed"),
        "slow consumer logged:\n{}",
        broker.log.text()
    );
    // Every message is accounted for: delivered to someone, or counted as lost.
    let delivered = summary_field(&summary, "delivered");
    assert_eq!(delivered + lost, 3 * N as u64, "{summary}");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_under_disconnect_policy() {
    let broker = Broker::spawn(&["--send-queue", "16", "--topic-overflow", "disconnect"]);
    let mut stalled = Raw::subscribe_small_buffer(broker.port, "/topic/t").await;
    let mut fast = Raw::subscribe(broker.port, "/topic/t").await;
    wait_subscribed(&broker, "/topic/t", 2).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let big = vec![b'y'; 16 * 1024];
    // Lockstep with the fast subscriber, so only the stalled one can fall behind.
    for _ in 0..2000 {
        p.publish("/topic/t", &big).await;
        within(5.0, "fast subscriber", fast.read())
            .await
            .expect("fast subscriber cut off");
    }
    broker
        .log
        .wait_for_async(10.0, "disconnected as a slow consumer on /topic/t")
        .await;
    let line = broker
        .log
        .wait_for_async(
            5.0,
            "disconnected from /topic/t: disconnected as a slow consumer",
        )
        .await;
    // The stalled client, once it reads, finds what was written to it, then EOF.
    let mut got = 0;
    while within(10.0, "stalled client drained", stalled.read())
        .await
        .is_some()
    {
        got += 1;
    }
    assert!(
        line.contains(&format!("out {got} msgs")),
        "{got} read; {line}"
    );
}

/// Workers that stall never cause a `/queue` message to be lost: what the
/// stalled worker had queued goes to the other worker when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_never_drops_under_a_stalled_worker() {
    const N: usize = 3000;
    let mut broker = Broker::spawn(&["--worker-queue", "64"]);
    let stalled = Raw::subscribe_small_buffer(broker.port, "/queue/work").await;
    wait_subscribed(&broker, "/queue/work", 1).await;
    let mut fast = Raw::subscribe(broker.port, "/queue/work").await;
    wait_subscribed(&broker, "/queue/work", 2).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let filler = vec![b'z'; 4096];
    for i in 0..N {
        let mut m = format!("{i:08}").into_bytes();
        m.extend_from_slice(&filler);
        p.publish("/queue/work", &m).await;
    }
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = fast.read().await {
                if m.is_empty() {
                    break;
                }
                assert!(seen.lock().unwrap().insert(m[..8].to_vec()), "duplicate");
            }
        })
    };
    let count = || seen.lock().unwrap().len();
    wait_until_async(30.0, "fast worker busy", || count() >= N / 2).await;
    // The stalled worker vanishes: its queued messages move to the fast worker.
    drop(stalled);
    let line = broker
        .log
        .wait_for_async(10.0, "disconnected from /queue/work")
        .await;
    let written_to_stalled = out_count(&line);
    wait_until_async(10.0, "every message delivered once", || {
        count() + written_to_stalled >= N
    })
    .await;
    p.goodbye().await;
    let summary = broker.terminate();
    within(5.0, "collector sees end of stream", collector)
        .await
        .unwrap();
    assert_eq!(summary_value(&summary, "dropped"), Some("0"), "{summary}");
    assert_eq!(count() + written_to_stalled, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_queues_and_sends_end_of_stream() {
    let mut broker = Broker::spawn(&[]);
    let mut sub = Raw::subscribe_small_buffer(broker.port, "/topic/s").await;
    let mut worker = Raw::subscribe_small_buffer(broker.port, "/queue/s").await;
    wait_subscribed(&broker, "/topic/s", 1).await;
    wait_subscribed(&broker, "/queue/s", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let body = vec![b'q'; 1000];
    for _ in 0..1000 {
        p.publish("/topic/s", &body).await;
        p.publish("/queue/s", &body).await;
    }
    // Nobody has read anything yet: most of it sits in the broker's queues.
    p.goodbye().await;
    assert!(within(5.0, "publisher done", p.closed()).await);
    signal(&broker.child, "TERM");
    for (name, c) in [("topic", &mut sub), ("queue", &mut worker)] {
        let mut n = 0;
        loop {
            let f = within(10.0, "draining", c.read()).await;
            match f {
                Some(f) if f.is_empty() => break,
                Some(_) => n += 1,
                None => panic!("{name}: EOF before end-of-stream after {n} messages"),
            }
        }
        assert_eq!(
            n, 1000,
            "{name} subscriber got everything before end-of-stream"
        );
        assert!(within(5.0, "closed after EOS", c.read()).await.is_none());
    }
    let status = wait_exit(&mut broker.child, 10.0);
    assert!(status.success());
    let summary = broker.log.wait_for(5.0, "shutdown complete");
    assert_eq!(summary_field(&summary, "delivered"), 2000, "{summary}");
    assert_eq!(summary_value(&summary, "dropped"), Some("0"), "{summary}");
}

/// Clients may send their subscribe frame and first messages in one write;
/// the bytes after the subscribe frame must not wait for more input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_publish_in_one_write_are_both_handled() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::spawn(&[]);
    let mut c = Raw::connect(broker.port).await;
    let mut wire = Vec::new();
    for f in [&b"/topic/me"[..], b"/topic/me", b"at once"] {
        wire.extend_from_slice(&(f.len() as u32).to_be_bytes());
        wire.extend_from_slice(f);
    }
    c.stream.write_all(&wire).await.unwrap();
    assert_eq!(within(5.0, "own message", c.read_text()).await, "at once");
}

/// A subscriber disconnected as a slow consumer is said to be, whatever its
/// writer was doing at that moment: with a send queue of one, a burst fills
/// it while the writer is between writes, not blocked on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_disconnected_between_writes_is_logged_as_one() {
    let broker = Broker::spawn(&["--send-queue", "1", "--topic-overflow", "disconnect"]);
    let mut sub = Raw::subscribe(broker.port, "/topic/t").await;
    wait_subscribed(&broker, "/topic/t", 1).await;
    // It reads everything it is sent, as fast as it can.
    let reading = tokio::spawn(async move { while sub.read().await.is_some() {} });
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for _ in 0..10_000 {
        publish_wire(&mut wire, "/topic/t", b"m");
    }
    p.stream.write_all(&wire).await.unwrap();
    let line = broker
        .log
        .wait_for_async(10.0, "disconnected from /topic/t")
        .await;
    assert!(line.contains("disconnected as a slow consumer"), "{line}");
    within(10.0, "the subscriber's end of stream", reading)
        .await
        .unwrap();
}

/// The slow-consumer lines add up to the counter while the subscriber stays:
/// the last partial second of a burst is said a second later, not when the
/// subscriber leaves (walkthrough 10: the log said 6,671 while the counter
/// said 9,151, for 13 s), and "in all" counts what the lines count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_lines_catch_up_with_the_counter_while_it_stays() {
    let broker = Broker::spawn(&["--send-queue", "100", "--http", "127.0.0.1:0"]);
    let http_port: u16 = broker.monitor_port();
    let stalled = Raw::subscribe_small_buffer(broker.port, "/topic/feed").await;
    wait_subscribed(&broker, "/topic/feed", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let mut wire = Vec::new();
    for _ in 0..3000 {
        publish_wire(&mut wire, "/topic/feed", &[b'x'; 4000]);
    }
    p.stream.write_all(&wire).await.unwrap();
    p.goodbye().await;
    assert_eq!(within(20.0, "publisher done", p.read()).await, Some(vec![]));
    let counted = || async {
        let (_, _, body) = http_get(http_port, "/api/connections").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "/topic/feed")
            .map(|c| c["dropped_by_reason"]["queue_full"].as_u64().unwrap_or(0))
            .unwrap()
    };
    let dropped = counted().await;
    assert!(dropped > 0);
    let logged = || -> u64 {
        broker
            .log
            .snapshot()
            .iter()
            .filter(|l| l.contains("is a slow consumer on /topic/feed"))
            .filter_map(|l| {
                l.split("dropped ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    wait_until_async(10.0, "the log to say every loss", || logged() == dropped).await;
    // The subscriber is still there: nothing was said at its leaving.
    assert!(!broker.log.contains("before it left"));
    let last = broker
        .log
        .snapshot()
        .into_iter()
        .rev()
        .find(|l| l.contains("is a slow consumer on /topic/feed"))
        .unwrap();
    assert!(
        last.contains(&format!("{dropped} dropped in all")),
        "{last}"
    );
    drop(stalled);
}
