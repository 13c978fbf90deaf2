//! Protocol v2 (PROTOCOL.md, "Version 2"), spoken byte by byte to a real
//! broker: the hello, several subscriptions on one connection, confirms and
//! refusals, loss notices, and hostile clients that must be answered with an
//! `ERROR` and closed while everyone else is served.

use crate::util::v2::{self, Frame};
use crate::util::{http_get, within, Broker, Proc, Raw};

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
    let mut broker = Broker::spawn(&[]);
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
    // A hello after a v1 subscribe is a publish to a reserved name: refused,
    // counted as denied, and the connection stays v1.
    v1.publish("/$aioq/hello/late", br#"{"protocol":2}"#).await;
    v1.publish("/topic/mixed", b"still v1").await;
    assert_eq!(within(5.0, "v1 still", v1.read_text()).await, "still v1");
    let summary = broker.terminate();
    assert_eq!(crate::util::dropped(&summary, "denied"), 1, "{summary}");
}

#[tokio::test]
async fn subscriptions_past_the_limit_and_ids_in_use_are_refused_with_reasons() {
    let broker = Broker::spawn(&["--max-subscriptions", "2", "--http", "127.0.0.1:0"]);
    let http_port = broker.monitor_port();
    let (mut c, _) = Raw::hello(broker.port, &["confirms"]).await;
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
    // Monitoring shows the connection's protocol, subscriptions and
    // confirms not yet answered; /metrics counts frames and refusals.
    let (_, _, body) = http_get(http_port, "/api/connections").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = &v["connections"][0];
    assert_eq!(row["protocol"], 2, "{v}");
    assert_eq!(
        row["subscriptions"],
        serde_json::json!([{"sid": 1, "channel": "/topic/a"}, {"sid": 2, "channel": "/queue/q"}])
    );
    assert_eq!(row["unanswered_confirms"], 0);
    let (_, _, metrics) = http_get(http_port, "/metrics").await;
    for line in [
        r#"aioq_v2_frames_total{type="sub"} 6"#,
        r#"aioq_v2_refusals_total{reason="max_subscriptions"} 3"#,
        r#"aioq_v2_refusals_total{reason="sid_in_use"} 1"#,
        "aioq_v2_connections_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
}

/// A v2 `/topic` subscriber that lost messages to a full send queue is told
/// how many, and the counts add up to the broker's drop counter for it.
#[tokio::test]
async fn a_subscriber_that_lost_messages_is_told_how_many_and_the_counts_match_the_brokers() {
    let broker = Broker::spawn(&["--send-queue", "16", "--http", "127.0.0.1:0"]);
    let http_port = broker.monitor_port();
    let mut c = loss_listener(broker.port, 7, "/topic/flood").await;
    // A v1 publisher floods while the subscriber reads nothing.
    flood(broker.port, "/topic/flood", 5000).await;
    let dropped = dropped_for_subscriber(http_port).await;
    assert!(dropped > 0, "the flood must overflow a 16-message queue");
    let lost = read_all(&mut c, 7, 5000).await;
    assert_eq!(lost, dropped, "LOST counts add up to the broker's drops");
}

/// A protocol 2 connection with a 4 KiB receive buffer, granted `loss`,
/// subscribed to `channel` as `sid`.
async fn loss_listener(port: u16, sid: u32, channel: &str) -> Raw {
    let mut c = Raw::connect_small_buffer(port).await;
    let name = "/$aioq/hello/loss";
    let mut wire = Vec::new();
    v2::put(&mut wire, name.as_bytes());
    v2::put(&mut wire, name.as_bytes());
    v2::put(&mut wire, br#"{"protocol":2,"features":["loss"]}"#);
    v2::put(&mut wire, &v2::sub(sid, channel));
    c.send(&wire).await;
    assert!(matches!(c.next().await, Frame::Hello(_)));
    assert_eq!(c.next().await, Frame::Subscribed(sid));
    c
}

/// `n` messages of 1000 bytes to `channel` from a protocol 1 publisher, all
/// routed (its end-of-stream came).
async fn flood(port: u16, channel: &str, n: usize) {
    let mut p = Raw::subscribe(port, "/null").await;
    let payload = vec![b'x'; 1000];
    let mut wire = Vec::new();
    for _ in 0..n {
        crate::util::publish_wire(&mut wire, channel, &payload);
    }
    p.send(&wire).await;
    p.goodbye().await;
    assert_eq!(
        within(20.0, "the publisher's end-of-stream", p.read()).await,
        Some(vec![])
    );
}

/// Reads subscription `sid`'s deliveries and loss notices until they account
/// for `n` messages; how many were lost (each notice says `overflow`).
async fn read_all(c: &mut Raw, sid: u32, n: u64) -> u64 {
    let (mut lost, mut delivered) = (0, 0);
    within(20.0, "every message or loss notice", async {
        while lost + delivered < n {
            match c.next().await {
                Frame::Msg { sid: s, .. } if s == sid => delivered += 1,
                Frame::Lost {
                    sid: s,
                    count,
                    reason,
                    since,
                } if s == sid => {
                    assert_eq!(reason, 11, "overflow");
                    assert!(since > 1_600_000_000_000, "Unix ms: {since}");
                    lost += count;
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert_eq!(lost + delivered, n);
    lost
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

/// Reads until the broker closes; returns the `ERROR` it said first.
async fn error_then_close(c: &mut Raw) -> (u8, String) {
    within(10.0, "ERROR and close", async {
        loop {
            match c.next_or_eof().await {
                Some(Frame::Error { code, text }) => {
                    assert_eq!(c.next_or_eof().await, None, "closed after ERROR");
                    return (code, text);
                }
                Some(_) => continue,
                None => panic!("closed without an ERROR"),
            }
        }
    })
    .await
}

/// Every way a v2 client can break the protocol gets its `ERROR` code and
/// the connection closed, counted; a client beside them is served throughout.
#[tokio::test]
async fn broken_v2_frames_get_an_error_with_its_code_and_the_connection_closed() {
    let broker = Broker::spawn(&["--max-frame", "64KiB", "--http", "127.0.0.1:0"]);
    let http_port = broker.monitor_port();
    let (mut good, _) = Raw::hello(broker.port, &["confirms"]).await;
    good.send_frame(&v2::sub(1, "/topic/ok")).await;
    assert_eq!(good.next().await, Frame::Subscribed(1));

    // (what, frames, features asked for, the ERROR code)
    type Case = (&'static str, Vec<Vec<u8>>, &'static [&'static str], u8);
    let cases: Vec<Case> = vec![
        ("unknown type", vec![vec![0x7f, 1, 2]], &[], 2),
        (
            "a HELLO after the hello",
            vec![vec![0x01, b'{', b'}']],
            &[],
            4,
        ),
        (
            "confirm ids not rising",
            vec![
                v2::publish(Some(5), "/topic/x", b"a"),
                v2::publish(Some(5), "/topic/x", b"b"),
            ],
            &["confirms"],
            5,
        ),
        (
            "a confirm id without the feature",
            vec![v2::publish(Some(1), "/topic/x", b"a")],
            &[],
            1,
        ),
        (
            "headers not granted",
            vec![{
                let mut p = vec![0x04, 0x02, 1, 1, b'k', 0, 1, b'v'];
                p.extend_from_slice(&8u16.to_be_bytes());
                p.extend_from_slice(b"/topic/x");
                p.extend_from_slice(b"payload");
                p
            }],
            &[],
            7,
        ),
        (
            "a reserved flag bit",
            vec![vec![0x02, 0, 0, 0, 1, 0x80, b'/']],
            &[],
            1,
        ),
        (
            "a publish with no channel",
            vec![v2::publish(None, "", b"x")],
            &[],
            1,
        ),
    ];
    for (what, frames, features, code) in cases {
        let (mut c, _) = Raw::hello(broker.port, features).await;
        let mut wire = Vec::new();
        for f in &frames {
            v2::put(&mut wire, f);
        }
        c.send(&wire).await;
        let (got, text) = error_then_close(&mut c).await;
        assert_eq!(got, code, "{what}: {text}");
    }
    // Every client frame type cut short at every byte.
    let whole = [
        v2::sub(1, "/topic/x"),
        v2::unsub(1),
        v2::publish(Some(1), "/topic/x", b"p"),
        v2::ping(1),
        {
            let mut p = vec![0x06];
            p.extend_from_slice(&1u64.to_be_bytes());
            p
        },
    ];
    let mut cut = 0;
    for f in &whole {
        // A name or a payload is "the rest": a SUB cut inside its name is a
        // SUB of a shorter one, a PUB cut in its payload one of less.
        let shortest_whole = match f[0] {
            0x02 => 7,
            0x04 => f.len() - 1,
            _ => f.len(),
        };
        for len in 1..shortest_whole {
            let (mut c, _) = Raw::hello(broker.port, &["confirms"]).await;
            c.send_frame(&f[..len]).await;
            let (code, text) = error_then_close(&mut c).await;
            assert_eq!(code, 1, "type 0x{:02x} cut at {len}: {text}", f[0]);
            cut += 1;
        }
    }
    // Too large a frame: refused before it is read.
    let (mut c, _) = Raw::hello(broker.port, &[]).await;
    c.send(&(100_000u32).to_be_bytes()).await;
    let (code, _) = error_then_close(&mut c).await;
    assert_eq!(code, 6);
    // A hello that is not one.
    for (second, json) in [
        ("/$aioq/hello/other", r#"{"protocol":2}"#),
        ("/$aioq/hello/same", r#" {"protocol":2}"#),
        ("/$aioq/hello/same", r#"{"protocol":"two"}"#),
        ("/$aioq/hello/same", r#"{"protocol":1}"#),
    ] {
        let mut c = Raw::connect(broker.port).await;
        let mut wire = Vec::new();
        v2::put(&mut wire, b"/$aioq/hello/same");
        v2::put(&mut wire, second.as_bytes());
        v2::put(&mut wire, json.as_bytes());
        c.send(&wire).await;
        let (code, text) = error_then_close(&mut c).await;
        assert_eq!(code, 3, "{second} {json}: {text}");
    }

    // The client beside them was served throughout.
    good.send_frame(&v2::publish(Some(1), "/topic/ok", b"still here"))
        .await;
    let frames = read_until(&mut good, |f| f.contains(&Frame::Confirm(1))).await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Msg { payload, .. } if payload == b"still here")),
        "{frames:?}"
    );
    let (_, _, metrics) = http_get(http_port, "/metrics").await;
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("aioq_protocol_errors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no protocol error counter in {metrics}"));
    assert_eq!(errors, 7 + cut + 1 + 4, "each broken client counted once");
}

/// A client that sends a million subscribe frames and reads nothing is held
/// back by TCP once its unwritten answers reach their bound: the broker does
/// not buffer a million refusals, and serves a client beside it meanwhile.
#[tokio::test]
async fn a_million_subscribe_frames_are_answered_in_bounded_memory() {
    let broker = Broker::spawn(&["--max-subscriptions", "64", "--http", "127.0.0.1:0"]);
    let http_port = broker.monitor_port();
    let (flood, _) = Raw::hello(broker.port, &[]).await;
    let mut wire = Vec::with_capacity(1_000_000 * 19);
    for sid in 0..1_000_000u32 {
        v2::put(&mut wire, &v2::sub(sid, "/topic/same"));
    }
    let (mut rd, mut wr) = flood.stream.into_split();
    let sending = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&wire).await.unwrap();
        wr
    });
    // The broker stops reading it: the flood does not get through while
    // nothing is read.
    let (mut good, _) = Raw::hello(broker.port, &["confirms"]).await;
    good.send_frame(&v2::sub(1, "/topic/same")).await;
    assert_eq!(good.next().await, Frame::Subscribed(1));
    good.send_frame(&v2::publish(Some(1), "/topic/same", b"hi"))
        .await;
    let frames = read_until(&mut good, |f| f.contains(&Frame::Confirm(1))).await;
    assert!(frames.iter().any(|f| matches!(f, Frame::Msg { .. })));
    // Once the broker has read past its bound of unwritten answers (1024),
    // it reads only as fast as the answers leave: far from all of them.
    let subs_read = || async {
        let (_, _, metrics) = http_get(http_port, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"aioq_v2_frames_total{type="sub"} "#))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    crate::util::poll_until(10.0, "the broker reading the flood", || async {
        let n = subs_read().await;
        if n > 2048 {
            Ok(())
        } else {
            Err(format!("{n} read"))
        }
    })
    .await;
    // Watched for two seconds (an observation window, not a wait for an
    // event): a broker with no bound reads the whole flood in that time.
    let watch_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < watch_until {
        let read = subs_read().await;
        assert!(
            read < 200_000,
            "subscribes read while none was answered: {read}"
        );
    }
    assert!(
        !sending.is_finished(),
        "20 MB of subscribes went through unread answers"
    );
    let pid = broker.child.id();
    let rss_kib = crate::util::proc_status(pid, "VmRSS");
    assert!(rss_kib < 200 * 1024, "the broker holds {rss_kib} KiB");
    // Now read every answer: 64 subscribed, the rest refused.
    let (mut subscribed, mut refused) = (0u32, 0u32);
    within(120.0, "a million answers", async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        let mut pending: Vec<u8> = Vec::new();
        while subscribed + refused < 1_000_000 {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed");
            pending.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while pending.len() - at >= 4 {
                let len = u32::from_be_bytes(pending[at..at + 4].try_into().unwrap()) as usize;
                if pending.len() - at - 4 < len {
                    break;
                }
                match v2::decode(&pending[at + 4..at + 4 + len]) {
                    Frame::Subscribed(_) => subscribed += 1,
                    Frame::Ended { reason: 6, .. } => refused += 1,
                    Frame::Msg { .. } => {}
                    other => panic!("{other:?}"),
                }
                at += 4 + len;
            }
            pending.drain(..at);
        }
    })
    .await;
    assert_eq!((subscribed, refused), (64, 1_000_000 - 64));
    within(10.0, "the flood sent", sending).await.unwrap();
}

/// A subscription id may be used again once its `ENDED` came; a `/queue`
/// subscription's unsent messages go back to the channel at once on
/// unsubscribe, for its other workers.
#[tokio::test]
async fn unsubscribe_gives_queue_messages_back_and_ids_can_be_used_again() {
    let broker = Broker::spawn(&["--worker-queue", "1000"]);
    // A worker that reads slowly: its socket fills, and jobs wait unsent.
    let (mut w, _) = Raw::hello_on(Raw::connect_small_buffer(broker.port).await, &[]).await;
    w.send_frame(&v2::sub(1, "/queue/jobs")).await;
    assert_eq!(w.next().await, Frame::Subscribed(1));
    let (mut p, _) = Raw::hello(broker.port, &["confirms"]).await;
    let mut wire = Vec::new();
    let job = vec![b'j'; 100_000];
    for i in 0..300u64 {
        v2::put(&mut wire, &v2::publish(Some(i + 1), "/queue/jobs", &job));
    }
    v2::put(&mut wire, &v2::ping(0));
    p.send(&wire).await;
    let _ = read_until(&mut p, |f| f.contains(&Frame::Pong(0))).await;
    // The worker read one, and leaves the rest in its send queue... then
    // unsubscribes: what was not written comes back to the channel.
    let Frame::Msg { sid: 1, .. } = w.next().await else {
        panic!("a job");
    };
    w.send_frame(&v2::unsub(1)).await;
    let mut got = 1;
    within(10.0, "ENDED", async {
        loop {
            match w.next().await {
                Frame::Msg { sid: 1, .. } => got += 1,
                Frame::Ended {
                    sid: 1, reason: 0, ..
                } => break,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(
        got < 300,
        "every job was written before the unsubscribe: nothing to give back"
    );
    // The id again, on the same channel: the jobs not written to the first
    // subscription come to the second.
    w.send_frame(&v2::sub(1, "/queue/jobs")).await;
    assert_eq!(w.next().await, Frame::Subscribed(1));
    within(10.0, "the jobs handed back", async {
        while got < 300 {
            match w.next().await {
                Frame::Msg {
                    sid: 1, attempt, ..
                } => {
                    assert_eq!(attempt, 1, "handed back unwritten: not an attempt");
                    got += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
}

/// `listen` and `send` speak v2 to a broker that does: several channels on
/// one connection, each message labelled with its channel; refusals with
/// their reasons and exit code 6. Against a v1 broker (the naive one the
/// bench tests use), a client that needs nothing of v2 falls back after one
/// line, and one that does says so and stops.
#[tokio::test]
async fn listen_and_send_speak_v2_and_fall_back_to_v1_where_nothing_needs_it() {
    let dir = std::env::temp_dir().join(format!("aioq-v2-clients-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("aioq.toml");
    std::fs::write(
        &config,
        "[access.default]\nsubscribe = [\"/topic/*\", \"/queue/*\"]\npublish = [\"/topic/open*\", \"/queue/*\"]\n",
    )
    .unwrap();
    let broker = Broker::spawn(&["--config", config.to_str().unwrap()]);
    let port = broker.port.to_string();
    let mut listen = Proc::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--channel",
            "/topic/open",
            "--channel",
            "/queue/jobs",
            "--count",
            "2",
            "--format",
            "json",
        ],
        false,
    );
    listen.err.wait_for(10.0, "connected to");
    crate::util::wait_until(10.0, "the two subscriptions", || {
        broker.log.contains("speaks protocol 2")
    });
    let send = |channel: &str, message: &str| -> (Option<i32>, String) {
        let mut p = Proc::spawn(
            &[
                "send",
                "--port",
                &port,
                "--channel",
                channel,
                "--message",
                message,
            ],
            false,
        );
        let code = p.exit_code(20.0);
        (code, p.err.text())
    };
    // A /topic message reaches the listener once its subscriptions are in:
    // one warm-up, sent again only when none arrived within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while listen.out.len() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never got a message"
        );
        let (code, _) = send("/topic/open", "warm-up");
        assert_eq!(code, Some(0));
        let sent = std::time::Instant::now();
        while listen.out.len() == 0 && sent.elapsed() < std::time::Duration::from_secs(1) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let (code, err) = send("/queue/jobs", "job 1");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("the broker confirmed all 1 routed"), "{err}");
    assert_eq!(listen.exit_code(10.0), Some(0));
    let lines: Vec<serde_json::Value> = listen
        .out
        .snapshot()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["channel"], "/topic/open");
    assert_eq!(lines[1]["channel"], "/queue/jobs");
    assert_eq!(lines[1]["payload"], "job 1");

    // Refused: exit 6, and the last line says how many and why.
    let (code, err) = send("/topic/secret", "no");
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains("0 routed, 1 refused (denied: 1)")
            && err.contains("may not publish to /topic/secret"),
        "{err}"
    );

    // A v1 broker.
    let v1 = crate::util::naive::start().to_string();
    let mut one = Proc::spawn(
        &[
            "listen",
            "--port",
            &v1,
            "--channel",
            "/topic/x",
            "--count",
            "1",
        ],
        false,
    );
    one.err
        .wait_for(10.0, "speaks protocol 1 only: using protocol 1");
    let mut p = Proc::spawn(
        &[
            "send",
            "--port",
            &v1,
            "--channel",
            "/topic/x",
            "--message",
            "hi",
            "--no-confirm",
        ],
        false,
    );
    assert_eq!(p.exit_code(20.0), Some(0));
    assert_eq!(one.exit_code(10.0), Some(0));
    assert_eq!(one.out.snapshot(), ["hi"]);
    let mut p = Proc::spawn(
        &[
            "listen",
            "--port",
            &v1,
            "--channel",
            "/topic/a",
            "--channel",
            "/topic/b",
            "--no-reconnect",
        ],
        false,
    );
    assert_eq!(p.exit_code(20.0), Some(1));
    assert!(p.err.contains("speaks protocol 1 only"), "{}", p.err.text());
    let mut p = Proc::spawn(
        &[
            "send",
            "--port",
            &v1,
            "--channel",
            "/topic/x",
            "--message",
            "hi",
            "--confirm",
        ],
        false,
    );
    assert_eq!(p.exit_code(20.0), Some(1));
    assert!(p.err.contains("needs protocol 2"), "{}", p.err.text());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Subscriptions are held in the memory budget like messages: past it, a
/// subscribe is refused with `over_budget`; what an unsubscribe gives back
/// serves the next one.
#[tokio::test]
async fn subscriptions_count_in_the_memory_budget() {
    let broker = Broker::spawn(&["--max-memory", "32KiB", "--max-subscriptions", "1000"]);
    let (mut c, _) = Raw::hello(broker.port, &[]).await;
    let mut wire = Vec::new();
    for sid in 0..200 {
        v2::put(&mut wire, &v2::sub(sid, &format!("/topic/budget/{sid}")));
    }
    c.send(&wire).await;
    let frames = read_until(&mut c, |f| f.len() == 200).await;
    let held: Vec<u32> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Subscribed(sid) => Some(*sid),
            _ => None,
        })
        .collect();
    let over = frames
        .iter()
        .filter(|f| matches!(f, Frame::Ended { reason: 3, .. }))
        .count();
    assert!(!held.is_empty() && over > 0, "{frames:?}");
    assert_eq!(held.len() + over, 200);
    // Given back on unsubscribe: a new subscription fits again. Eight go:
    // the last channel made may have taken its own state (1 KiB, counted
    // apart) past the budget, and an emptied channel's state leaves only
    // once its ENDED is written.
    assert!(held.len() > 9, "{held:?}");
    for sid in &held[..8] {
        c.send_frame(&v2::unsub(*sid)).await;
        assert!(matches!(c.next().await, Frame::Ended { reason: 0, .. }));
    }
    // A channel that is still there, named as long as those that went.
    c.send_frame(&v2::sub(10_000, &format!("/topic/budget/{}", held[8])))
        .await;
    assert_eq!(c.next().await, Frame::Subscribed(10_000));
}

/// Headers (granted on a broker outside a cluster) reach a v2 subscriber or
/// worker as sent, at their limits; a v1 subscriber of the same channel gets
/// the payload alone.
#[tokio::test]
async fn headers_reach_v2_subscribers_and_v1_ones_get_the_payload_alone() {
    let broker = Broker::spawn(&[]);
    let mut v1 = Raw::subscribe(broker.port, "/topic/h").await;
    let (mut sub, hello) = Raw::hello(broker.port, &["headers"]).await;
    assert_eq!(hello["features"], serde_json::json!(["headers"]));
    sub.send_frame(&v2::sub(1, "/topic/h")).await;
    sub.send_frame(&v2::sub(2, "/queue/h")).await;
    assert_eq!(sub.next().await, Frame::Subscribed(1));
    assert_eq!(sub.next().await, Frame::Subscribed(2));
    // A v2 subscriber that did not ask for headers.
    let (mut bare, _) = Raw::hello(broker.port, &[]).await;
    bare.send_frame(&v2::sub(9, "/topic/h")).await;
    assert_eq!(bare.next().await, Frame::Subscribed(9));
    crate::util::wait_subscribed(&broker, "/topic/h", 3).await;
    let (mut p, _) = Raw::hello(broker.port, &["headers", "confirms"]).await;
    // At the limits: 32 headers, a block of exactly 4096 bytes (the count
    // byte, 31 of 5 bytes, and one with a 3-byte key and its lengths).
    let big = vec![b'v'; 4096 - 1 - 31 * 5 - (1 + 3 + 2)];
    let mut many: Vec<(&str, &[u8])> = vec![("k", b"v"); 31];
    many.push(("big", &big));
    let mut wire = Vec::new();
    v2::put(
        &mut wire,
        &v2::publish_with_headers("/topic/h", &[("trace-id", b"abc")], b"one"),
    );
    v2::put(
        &mut wire,
        &v2::publish_with_headers("/queue/h", &[("attempt", b"1")], b"job"),
    );
    v2::put(
        &mut wire,
        &v2::publish_with_headers("/topic/h", &many, b"full"),
    );
    p.send(&wire).await;
    let got = read_until(&mut sub, |f| f.len() == 3).await;
    assert_eq!(
        got[0],
        Frame::MsgWithHeaders {
            sid: 1,
            headers: vec![("trace-id".into(), b"abc".to_vec())],
            payload: b"one".to_vec()
        }
    );
    assert!(got.contains(&Frame::MsgWithHeaders {
        sid: 2,
        headers: vec![("attempt".into(), b"1".to_vec())],
        payload: b"job".to_vec()
    }));
    assert!(got.iter().any(|f| matches!(f,
        Frame::MsgWithHeaders { sid: 1, headers, payload } if headers.len() == 32 && payload == b"full")));
    assert_eq!(within(5.0, "v1", v1.read_text()).await, "one");
    assert!(matches!(bare.next().await, Frame::Msg { sid: 9, payload, .. } if payload == b"one"));
    assert_eq!(within(5.0, "v1", v1.read_text()).await, "full");
    // One byte past the block's limit: ERROR headers.
    let mut over: Vec<(&str, &[u8])> = vec![("k", b"v"); 31];
    let bigger = vec![b'v'; big.len() + 1];
    over.push(("big", &bigger));
    p.send_frame(&v2::publish_with_headers("/topic/h", &over, b"x"))
        .await;
    let (code, _) = error_then_close(&mut p).await;
    assert_eq!(code, 7);
}

/// A `[[channel]]` entry's send-queue bound holds for a protocol 2
/// subscription too, though its connection's one send queue is sized by the
/// defaults (seen: a v2 listener of a channel bounded at 16 messages queued
/// 2000 of them).
#[tokio::test]
async fn a_channel_entrys_send_queue_bounds_a_v2_subscription() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[[channel]]\nprefix = \"/topic/tight\"\nsend-queue = 16\nsend-queue-bytes = \"8MiB\"\n",
    )
    .unwrap();
    let broker = Broker::spawn(&[
        "--config",
        file.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    let http_port = broker.monitor_port();
    let mut c = loss_listener(broker.port, 1, "/topic/tight").await;
    let (_, _, body) = http_get(http_port, "/api/connections").await;
    assert!(
        body.contains(r#""send_queue":16,"send_queue_bytes":8388608"#),
        "the subscription shows its own bound: {body}"
    );
    flood(broker.port, "/topic/tight", 2000).await;
    let dropped = dropped_for_subscriber(http_port).await;
    assert!(
        dropped > 0,
        "16 messages at most queued: the rest are dropped"
    );
    let lost = read_all(&mut c, 1, 2000).await;
    assert_eq!(lost, dropped);
}

/// Frames in one write take effect in their order, however the broker
/// routes a read buffer's publishes: a connection that subscribes between
/// its own publishes gets those after and none before; the `PONG` comes
/// after all of them.
#[tokio::test]
async fn a_subscription_between_publishes_in_one_write_sees_only_those_after_it() {
    let broker = Broker::spawn(&[]);
    // The channel exists before: the first publish has a subscriber to reach.
    let (mut other, _) = Raw::hello(broker.port, &[]).await;
    other.send_frame(&v2::sub(1, "/topic/order")).await;
    assert_eq!(other.next().await, Frame::Subscribed(1));
    let (mut c, _) = Raw::hello(broker.port, &[]).await;
    let mut wire = Vec::new();
    for m in [&b"before 1"[..], b"before 2"] {
        v2::put(&mut wire, &v2::publish(None, "/topic/order", m));
    }
    v2::put(&mut wire, &v2::sub(7, "/topic/order"));
    v2::put(&mut wire, &v2::publish(None, "/topic/order", b"after 1"));
    v2::put(&mut wire, &v2::publish(None, "/topic/order", b"after 2"));
    v2::put(&mut wire, &v2::ping(9));
    c.send(&wire).await;
    let seen = read_until(&mut c, |f| {
        f.contains(&Frame::Pong(9))
            && f.iter().filter(|f| matches!(f, Frame::Msg { .. })).count() >= 2
    })
    .await;
    let payloads: Vec<_> = seen
        .iter()
        .filter_map(|f| match f {
            Frame::Msg { payload, .. } => Some(payload.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, [&b"after 1"[..], b"after 2"], "{seen:?}");
    assert_eq!(seen[0], Frame::Subscribed(7), "{seen:?}");
    // The other subscriber got all four, in order.
    let mut got = Vec::new();
    within(10.0, "the other subscriber's four", async {
        while got.len() < 4 {
            if let Frame::Msg { payload, .. } = other.next().await {
                got.push(payload);
            }
        }
    })
    .await;
    assert_eq!(got, [&b"before 1"[..], b"before 2", b"after 1", b"after 2"]);
}
