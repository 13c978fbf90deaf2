//! Protocol v2 (PROTOCOL.md, "Version 2"), spoken byte by byte to a real
//! broker: the hello, several subscriptions on one connection, confirms and
//! refusals, loss notices, and hostile clients that must be answered with an
//! `ERROR` and closed while everyone else is served.

use crate::util::v2::{self, Frame};
use crate::util::{http_get, within, Broker, Raw};

/// Reads frames until `done` says it has what it waits for; returns them all.
async fn read_until(c: &mut Raw, mut done: impl FnMut(&[Frame]) -> bool) -> Vec<Frame> {
    let mut seen = Vec::new();
    within(10.0, "the frames the test waits for", async {
        while !done(&seen) {
            seen.push(c.next().await);
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn a_hello_is_answered_with_the_brokers_limits_and_the_features_granted() {
    let broker = Broker::spawn(&["--max-subscriptions", "3"]);
    let (_c, hello) = Raw::hello(broker.port, &["confirms", "loss", "telepathy"]).await;
    assert_eq!(hello["protocol"], 2);
    assert_eq!(hello["features"], serde_json::json!(["confirms", "loss"]));
    assert_eq!(hello["max_subscriptions"], 3);
    assert_eq!(hello["max_frame"], 16 * 1024 * 1024);
    assert!(hello["server"].as_str().unwrap().starts_with("aioq/"));
    let (_d, again) = Raw::hello(broker.port, &[]).await;
    assert_eq!(
        again["server_id"], hello["server_id"],
        "one id per broker process"
    );
    assert_eq!(again["features"], serde_json::json!([]));
}

#[tokio::test]
async fn one_connection_subscribes_to_several_channels_publishes_with_confirms_and_hears_refusals()
{
    let broker = Broker::spawn(&[]);
    let (mut c, _) = Raw::hello(broker.port, &["confirms"]).await;
    let mut wire = Vec::new();
    v2::put(&mut wire, &v2::sub(1, "/topic/a"));
    v2::put(&mut wire, &v2::sub(2, "/queue/jobs"));
    v2::put(&mut wire, &v2::sub(3, "/topic/b"));
    c.send(&wire).await;
    let subscribed = read_until(&mut c, |f| f.len() == 3).await;
    assert_eq!(
        subscribed,
        [
            Frame::Subscribed(1),
            Frame::Subscribed(2),
            Frame::Subscribed(3)
        ]
    );

    let mut wire = Vec::new();
    v2::put(&mut wire, &v2::publish(Some(1), "/topic/a", b"hi"));
    v2::put(&mut wire, &v2::publish(Some(2), "/topic/a", b""));
    v2::put(&mut wire, &v2::publish(Some(5), "/queue/jobs", b"job"));
    v2::put(&mut wire, &v2::publish(Some(6), "/$aioq/mine", b"r"));
    v2::put(&mut wire, &v2::publish(None, "/topic/b", b"b"));
    v2::put(&mut wire, &v2::publish(Some(7), "/topic/nobody", b"n"));
    v2::put(&mut wire, &v2::ping(42));
    c.send(&wire).await;
    let frames = read_until(&mut c, |f| f.contains(&Frame::Pong(42))).await;
    let msgs: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Msg {
                sid,
                delivery,
                attempt,
                payload,
            } => Some((*sid, *delivery, *attempt, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        msgs,
        [
            (1, 1, 1, b"hi".to_vec()),
            (2, 2, 1, b"job".to_vec()),
            (3, 3, 1, b"b".to_vec())
        ],
        "each delivery names its subscription; ids count the connection's deliveries: {frames:?}"
    );
    let answers: Vec<_> = frames
        .iter()
        .filter(|f| matches!(f, Frame::Confirm(_) | Frame::Refused { .. }))
        .collect();
    // Refusals come before any confirm that covers their ids, in id order.
    let refusals: Vec<_> = answers
        .iter()
        .filter_map(|f| match f {
            Frame::Refused { id, reason, text } => Some((*id, *reason, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 2, "{answers:?}");
    assert_eq!(
        (refusals[0].0, refusals[0].1),
        (2, 10),
        "empty_payload: {answers:?}"
    );
    assert_eq!(
        (refusals[1].0, refusals[1].1),
        (6, 7),
        "reserved: {answers:?}"
    );
    assert!(refusals[1].2.contains("reserved"), "{}", refusals[1].2);
    let mut highest_confirm = 0;
    for a in &answers {
        match a {
            Frame::Confirm(up_to) => highest_confirm = *up_to,
            Frame::Refused { id, .. } => assert!(
                *id > highest_confirm,
                "REFUSED {id} after a CONFIRM up to {highest_confirm}"
            ),
            _ => {}
        }
    }
    assert_eq!(
        highest_confirm, 7,
        "a publish nobody hears is confirmed: {answers:?}"
    );

    // Unsubscribe: ENDED, and nothing more for that id.
    let mut wire = Vec::new();
    v2::put(&mut wire, &v2::unsub(1));
    v2::put(&mut wire, &v2::unsub(9));
    v2::put(&mut wire, &v2::publish(Some(8), "/topic/a", b"after"));
    v2::put(&mut wire, &v2::publish(Some(9), "/topic/b", b"still"));
    c.send(&wire).await;
    let frames = read_until(&mut c, |f| f.contains(&Frame::Confirm(9))).await;
    assert!(frames.contains(&Frame::Ended {
        sid: 1,
        reason: 0,
        text: "unsubscribed".into()
    }));
    assert!(
        frames.iter().any(|f| matches!(
            f,
            Frame::Ended {
                sid: 9,
                reason: 9,
                ..
            }
        )),
        "unknown_sid: {frames:?}"
    );
    let delivered: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Msg { sid, payload, .. } => Some((*sid, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [(3, b"still".to_vec())], "{frames:?}");

    // Goodbye: end-of-stream though publishes were refused (each was said).
    c.send_frame(b"").await;
    assert_eq!(c.next().await, Frame::EndOfStream);
    assert_eq!(c.next_or_eof().await, None);
}

#[tokio::test]
async fn a_v1_client_never_notices_v2_and_reserved_names_are_refused_to_it() {
    let broker = Broker::spawn(&[]);
    let mut v1 = Raw::subscribe(broker.port, "/topic/mixed").await;
    crate::util::wait_subscribed(&broker, "/topic/mixed", 1).await;
    let (mut c, _) = Raw::hello(broker.port, &[]).await;
    c.send_frame(&v2::publish(None, "/topic/mixed", b"from v2"))
        .await;
    assert_eq!(
        within(5.0, "the v1 delivery", v1.read_text()).await,
        "from v2"
    );
    // A v1 subscription to a reserved name is refused with end-of-stream.
    let mut reserved = Raw::subscribe(broker.port, "/$aioq/x").await;
    assert_eq!(
        within(5.0, "the refusal", reserved.read()).await,
        Some(vec![])
    );
}

#[tokio::test]
async fn subscriptions_past_the_limit_and_ids_in_use_are_refused_with_reasons() {
    let broker = Broker::spawn(&["--max-subscriptions", "2"]);
    let (mut c, _) = Raw::hello(broker.port, &[]).await;
    let mut wire = Vec::new();
    v2::put(&mut wire, &v2::sub(1, "/topic/a"));
    v2::put(&mut wire, &v2::sub(1, "/topic/b"));
    v2::put(&mut wire, &v2::sub(2, "/queue/q"));
    v2::put(&mut wire, &v2::sub(3, "/topic/c"));
    v2::put(&mut wire, &v2::sub(4, "/null"));
    v2::put(&mut wire, &v2::sub(5, "/$aioq/x"));
    c.send(&wire).await;
    let frames = read_until(&mut c, |f| f.len() == 6).await;
    let reasons: Vec<_> = frames
        .iter()
        .map(|f| match f {
            Frame::Subscribed(sid) => (*sid, None),
            Frame::Ended { sid, reason, .. } => (*sid, Some(*reason)),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (1, None),
            (1, Some(8)),
            (2, None),
            (3, Some(6)),
            (4, Some(6)),
            (5, Some(6))
        ]
    );
}

/// A v2 `/topic` subscriber that lost messages to a full send queue is told
/// how many, and the counts add up to the broker's drop counter for it.
#[tokio::test]
async fn a_subscriber_that_lost_messages_is_told_how_many_and_the_counts_match_the_brokers() {
    let broker = Broker::spawn(&["--send-queue", "16", "--http", "127.0.0.1:0"]);
    let http_port = broker_http_port(&broker);
    let mut c = Raw::connect_small_buffer(broker.port).await;
    let name = "/$aioq/hello/loss";
    let mut wire = Vec::new();
    v2::put(&mut wire, name.as_bytes());
    v2::put(&mut wire, name.as_bytes());
    v2::put(&mut wire, br#"{"protocol":2,"features":["loss"]}"#);
    v2::put(&mut wire, &v2::sub(7, "/topic/flood"));
    c.send(&wire).await;
    assert!(matches!(c.next().await, Frame::Hello(_)));
    assert_eq!(c.next().await, Frame::Subscribed(7));
    // A v1 publisher floods while the subscriber reads nothing.
    let mut p = Raw::subscribe(broker.port, "/null").await;
    let payload = vec![b'x'; 1000];
    let mut flood = Vec::new();
    for _ in 0..5000 {
        crate::util::publish_wire(&mut flood, "/topic/flood", &payload);
    }
    p.send(&flood).await;
    p.goodbye().await;
    assert_eq!(
        within(20.0, "the publisher's end-of-stream", p.read()).await,
        Some(vec![])
    );
    let dropped = dropped_for_subscriber(http_port).await;
    assert!(dropped > 0, "the flood must overflow a 16-message queue");
    let mut lost = 0;
    let mut delivered = 0;
    within(20.0, "every message or loss notice", async {
        while lost + delivered < 5000 {
            match c.next().await {
                Frame::Msg { sid: 7, .. } => delivered += 1,
                Frame::Lost {
                    sid: 7,
                    count,
                    reason,
                    since,
                } => {
                    assert_eq!(reason, 11, "overflow");
                    assert!(since > 1_600_000_000_000, "Unix ms: {since}");
                    lost += count;
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert_eq!(lost, dropped, "LOST counts add up to the broker's drops");
    assert_eq!(lost + delivered, 5000);
}

fn broker_http_port(broker: &Broker) -> u16 {
    let line = broker.log.wait_for(10.0, "monitoring on http://");
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

async fn dropped_for_subscriber(http_port: u16) -> u64 {
    let (_, _, body) = http_get(http_port, "/api/connections").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = v["connections"].as_array().unwrap_or_else(|| panic!("{v}"));
    rows.iter()
        .find(|r| r["protocol"] == 2)
        .map(|r| r["dropped"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("no v2 connection in {v}"))
}
