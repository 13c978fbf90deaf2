//! Bad input and limits: each is handled without disturbing other clients.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::util::*;

/// A healthy subscriber/publisher pair, to show others carry on.
async fn still_works(port: u16, channel: &str) {
    let mut sub = Raw::subscribe(port, channel).await;
    let mut p = Raw::subscribe(port, "/null").await;
    // The subscription may not be in place yet: publish until it is seen.
    let got = within(10.0, "healthy pair", async {
        loop {
            p.publish(channel, b"still fine").await;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.read()).await {
                return m;
            }
        }
    })
    .await;
    assert_eq!(got, b"still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_prefix_disconnects_before_reading_the_body() {
    let broker = Broker::spawn(&["--max-frame", "1KiB"]);
    let mut bystander = Raw::subscribe(broker.port, "/topic/ok").await;
    wait_subscribed(&broker, "/topic/ok", 1).await;
    let mut bad = Raw::subscribe(broker.port, "/null").await;
    // Announce 1 GiB and send nothing more: the broker must not wait for it.
    bad.stream
        .write_all(&(1u32 << 30).to_be_bytes())
        .await
        .unwrap();
    assert!(within(5.0, "disconnected at once", bad.closed()).await);
    let line = broker
        .log
        .wait_for_async(5.0, "breaking the protocol")
        .await;
    assert!(
        line.contains("1073741824 bytes announced, limit is 1024"),
        "{line}"
    );
    assert!(line.contains("Remote 127.0.0.1:"), "names the peer: {line}");
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/ok", b"after").await;
    assert_eq!(
        within(5.0, "bystander", bystander.read_text()).await,
        "after"
    );
}

/// The reader takes a publish to the channel of the one before straight
/// from its buffer: the frame limit holds there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_to_the_channel_just_published_to_is_refused() {
    // Small enough that both pairs fit the read buffer a connection starts with.
    let broker = Broker::spawn(&["--max-frame", "100", "--max-channel", "64"]);
    let mut sub = Raw::subscribe(broker.port, "/topic/same").await;
    wait_subscribed(&broker, "/topic/same", 1).await;
    let mut bad = Raw::subscribe(broker.port, "/null").await;
    let pair = |payload: &[u8]| {
        let name = b"/topic/same";
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name);
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(payload);
        b
    };
    // One write: the second pair is whole in the broker's read buffer.
    let mut both = pair(b"first");
    both.extend(pair(&[b'x'; 150]));
    bad.stream.write_all(&both).await.unwrap();
    assert!(within(5.0, "disconnected", bad.closed()).await);
    let line = broker
        .log
        .wait_for_async(5.0, "breaking the protocol")
        .await;
    assert!(line.contains("150 bytes announced, limit is 100"), "{line}");
    assert_eq!(within(5.0, "the first", sub.read_text()).await, "first");
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/same", b"after").await;
    assert_eq!(
        within(5.0, "the next, not the oversized one", sub.read_text()).await,
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_are_a_protocol_error_for_that_client_only() {
    let broker = Broker::spawn(&[]);
    let mut bad = Raw::connect(broker.port).await;
    bad.stream.write_all(&[0xff; 64]).await.unwrap();
    assert!(within(5.0, "garbage client closed", bad.closed()).await);
    broker
        .log
        .wait_for_async(5.0, "breaking the protocol")
        .await;
    still_works(broker.port, "/topic/after-garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_name_over_the_limit_is_refused() {
    let broker = Broker::spawn(&["--max-channel", "16"]);
    let mut bad = Raw::subscribe(broker.port, "/topic/this-name-is-too-long").await;
    assert!(within(5.0, "closed", bad.closed()).await);
    let line = broker
        .log
        .wait_for_async(5.0, "breaking the protocol")
        .await;
    assert!(
        line.contains("channel name of 28 bytes, limit is 16"),
        "{line}"
    );
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/also-far-too-long", b"x").await;
    assert!(within(5.0, "publisher closed", p.closed()).await);
    still_works(broker.port, "/topic/short").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_socket_is_closed_after_the_subscribe_deadline() {
    let broker = Broker::spawn(&["--subscribe-timeout", "300ms"]);
    let mut silent = Raw::connect(broker.port).await;
    assert!(within(5.0, "silent socket closed", silent.closed()).await);
    broker
        .log
        .wait_for_async(5.0, "no subscribe frame within 300ms")
        .await;
    still_works(broker.port, "/topic/after-silence").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_cut_mid_frame_routes_nothing_partial() {
    let broker = Broker::spawn(&[]);
    let mut sub = Raw::subscribe(broker.port, "/topic/cut").await;
    wait_subscribed(&broker, "/topic/cut", 1).await;
    let mut cut = Raw::subscribe(broker.port, "/null").await;
    // Channel frame complete, payload frame announces 100 bytes, sends 10.
    cut.publish_cut("/topic/cut").await;
    drop(cut);
    broker
        .log
        .wait_for_async(5.0, "closed in the middle of a frame")
        .await;
    // A second client cut between the channel frame and its payload.
    let mut half = Raw::subscribe(broker.port, "/null").await;
    half.frame(b"/topic/cut").await;
    drop(half);
    broker
        .log
        .wait_for_async(5.0, "between a channel frame and its payload")
        .await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/cut", b"whole").await;
    assert_eq!(within(5.0, "first message", sub.read_text()).await, "whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_payload_is_discarded_and_counted() {
    let mut broker = Broker::spawn(&[]);
    let mut sub = Raw::subscribe(broker.port, "/topic/e").await;
    wait_subscribed(&broker, "/topic/e", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    p.publish("/topic/e", b"").await;
    p.publish("/topic/e", b"non-empty").await;
    assert_eq!(within(5.0, "message", sub.read_text()).await, "non-empty");
    p.goodbye().await;
    sub.goodbye().await;
    let summary = broker.terminate();
    assert_eq!(dropped(&summary, "empty_payload"), 1, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_cleanly() {
    let broker = Broker::spawn(&["--max-connections", "2"]);
    let _a = Raw::subscribe(broker.port, "/topic/a").await;
    let _b = Raw::subscribe(broker.port, "/topic/a").await;
    wait_subscribed(&broker, "/topic/a", 2).await;
    let mut c = Raw::connect(broker.port).await;
    assert_eq!(within(5.0, "end of stream", c.read()).await, Some(vec![]));
    assert!(within(5.0, "closed", c.closed()).await);
    broker
        .log
        .wait_for_async(5.0, "connection limit of 2 reached")
        .await;
    drop(_a);
    broker
        .log
        .wait_for_async(5.0, "disconnected from /topic/a")
        .await;
    // A slot is free again: a client that publishes to its own topic gets in.
    let mut me = Raw::subscribe(broker.port, "/topic/me").await;
    wait_subscribed(&broker, "/topic/me", 1).await;
    me.publish("/topic/me", b"in").await;
    assert_eq!(within(5.0, "own message", me.read_text()).await, "in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodbye_flushes_and_closes() {
    let broker = Broker::spawn(&[]);
    let mut sub = Raw::subscribe(broker.port, "/topic/g").await;
    wait_subscribed(&broker, "/topic/g", 1).await;
    let mut p = Raw::subscribe(broker.port, "/null").await;
    for i in 0..10 {
        p.publish("/topic/g", format!("{i}").as_bytes()).await;
    }
    p.goodbye().await;
    assert!(within(5.0, "publisher closed", p.closed()).await);
    sub.goodbye().await;
    let mut n = 0;
    while let Some(f) = within(5.0, "owed messages", sub.read()).await {
        if f.is_empty() {
            break;
        }
        n += 1;
    }
    assert_eq!(n, 10);
    assert!(within(5.0, "closed", sub.read()).await.is_none());
}
