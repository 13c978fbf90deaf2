//! Acknowledged work queues (PROTOCOL.md, "Acknowledgements"), spoken byte
//! by byte to a real broker: a worker holds each delivery until it answers,
//! within its credit; what it does not finish comes back (attempt raised),
//! at its disconnect at once, after its ack wait, or after a `NAK`'s delay;
//! what fails too often reaches the dead-letter channel with its payload.

use std::time::{Duration, Instant};

use crate::util::v2::{self, Frame};
use crate::util::{http_get, within, Broker, Raw};

/// A delivery as a worker sees it: (delivery id, attempt, payload).
type Got = (u64, u32, Vec<u8>);

/// Reads frames until `n` deliveries came; panics on anything else but the
/// frames `skip` lets through.
async fn deliveries(c: &mut Raw, n: usize) -> Vec<Got> {
    let mut got = Vec::new();
    within(20.0, "the deliveries the test waits for", async {
        while got.len() < n {
            match c.next().await {
                Frame::Msg {
                    delivery,
                    attempt,
                    payload,
                    ..
                } => got.push((delivery, attempt, payload)),
                other => panic!("expected a MSG, got {other:?}"),
            }
        }
    })
    .await;
    got
}

/// Sends a `PING` and reads up to its `PONG`: the deliveries that came first.
async fn until_pong(c: &mut Raw, token: u64) -> Vec<Frame> {
    c.send_frame(&v2::ping(token)).await;
    let mut seen = Vec::new();
    within(10.0, "the PONG", async {
        loop {
            match c.next().await {
                Frame::Pong(t) if t == token => return,
                f => seen.push(f),
            }
        }
    })
    .await;
    seen
}

async fn worker(port: u16, credit: u32, channel: &str) -> Raw {
    let (mut c, hello) = Raw::hello(port, &["acks"]).await;
    assert_eq!(hello["features"], serde_json::json!(["acks"]), "{hello}");
    c.send_frame(&v2::sub_acked(1, credit, channel)).await;
    assert_eq!(c.next().await, Frame::Subscribed(1));
    c
}

use crate::util::v2::publish_confirmed as publish;

async fn channel_acks(http: u16, name: &str) -> serde_json::Value {
    let (_, _, body) = http_get(http, "/api/channels").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["acks"].clone())
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[tokio::test]
async fn a_worker_holds_at_most_its_credit_until_it_acknowledges() {
    let broker = Broker::spawn(&["--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    let mut w = worker(broker.port, 2, "/queue/jobs").await;
    let jobs: Vec<Vec<u8>> = (1..=5).map(|i| format!("job {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = jobs.iter().map(Vec::as_slice).collect();
    publish(broker.port, "/queue/jobs", &refs).await;
    let first = deliveries(&mut w, 2).await;
    assert_eq!(
        first,
        [(1, 1, b"job 1".to_vec()), (2, 1, b"job 2".to_vec())]
    );
    // Everything the broker would send before the PONG is here: nothing
    // past the credit.
    assert_eq!(until_pong(&mut w, 1).await, []);
    let acks = channel_acks(http, "/queue/jobs").await;
    assert_eq!(acks["in_flight"], 2, "{acks}");
    // One ack, one more delivery; an ACK up to an id covers the rest.
    w.send_frame(&v2::ack(&[1])).await;
    assert_eq!(deliveries(&mut w, 1).await, [(3, 1, b"job 3".to_vec())]);
    w.send_frame(&v2::ack_up_to(3)).await;
    assert_eq!(
        deliveries(&mut w, 2).await,
        [(4, 1, b"job 4".to_vec()), (5, 1, b"job 5".to_vec())]
    );
    w.send_frame(&v2::ack(&[4, 5])).await;
    assert_eq!(until_pong(&mut w, 2).await, []);
    let acks = channel_acks(http, "/queue/jobs").await;
    assert_eq!(acks["acked"], 5, "{acks}");
    assert_eq!(acks["in_flight"], 0, "{acks}");
    // Raised credit: the worker is sent more at once.
    w.send_frame(&v2::credit(1, 10)).await;
    let more: Vec<Vec<u8>> = (6..=13).map(|i| format!("job {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = more.iter().map(Vec::as_slice).collect();
    publish(broker.port, "/queue/jobs", &refs).await;
    assert_eq!(deliveries(&mut w, 8).await.len(), 8);
}

#[tokio::test]
async fn a_worker_that_disconnects_gives_back_what_it_held_at_once_attempt_raised() {
    // An ack wait far longer than the test: only the disconnect can do it.
    let broker = Broker::spawn(&["--ack-wait", "1h"]);
    let mut a = worker(broker.port, 1, "/queue/jobs").await;
    publish(broker.port, "/queue/jobs", &[b"the job"]).await;
    assert_eq!(deliveries(&mut a, 1).await, [(1, 1, b"the job".to_vec())]);
    let mut b = worker(broker.port, 1, "/queue/jobs").await;
    drop(a);
    let got = deliveries(&mut b, 1).await;
    assert_eq!(got, [(1, 2, b"the job".to_vec())], "attempt 2, on B");
}

#[tokio::test]
async fn an_ack_wait_that_runs_out_redelivers_and_working_keeps_the_job() {
    let broker = Broker::spawn(&["--ack-wait", "600ms"]);
    let mut w = worker(broker.port, 2, "/queue/jobs").await;
    publish(broker.port, "/queue/jobs", &[b"forgotten", b"long"]).await;
    let got = deliveries(&mut w, 2).await;
    let sent = Instant::now();
    assert_eq!(got[0], (1, 1, b"forgotten".to_vec()));
    assert_eq!(got[1], (2, 1, b"long".to_vec()));
    // The long job is still being worked on: WORKING every 200 ms, while
    // the forgotten one's wait runs out.
    let again = within(10.0, "the forgotten job, again", async {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => w.send_frame(&v2::working(&[2])).await,
                f = w.next() => match f {
                    Frame::Msg { delivery, attempt, payload, .. } => {
                        return (delivery, attempt, payload)
                    }
                    other => panic!("{other:?}"),
                },
            }
        }
    })
    .await;
    assert_eq!(again, (3, 2, b"forgotten".to_vec()));
    assert!(
        sent.elapsed() >= Duration::from_millis(550),
        "not before its ack wait: {:?}",
        sent.elapsed()
    );
    // Two more waits of WORKING: the long job never came back.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < until {
        tick.tick().await;
        w.send_frame(&v2::working(&[2, 3])).await;
    }
    w.send_frame(&v2::ack(&[2, 3])).await;
    assert_eq!(until_pong(&mut w, 9).await, [], "nothing redelivered");
}

#[tokio::test]
async fn a_nak_delay_is_kept_and_max_deliveries_sends_the_payload_to_the_dead_letters() {
    let broker = Broker::spawn(&["--max-deliveries", "3", "--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    // Someone reads the dead letters, headers and all.
    let (mut dead, _) = Raw::hello(broker.port, &["headers"]).await;
    dead.send_frame(&v2::sub(9, "/queue/jobs/dead")).await;
    assert_eq!(dead.next().await, Frame::Subscribed(9));
    let mut w = worker(broker.port, 4, "/queue/jobs").await;
    publish(broker.port, "/queue/jobs", &[b"poison", b"fine"]).await;
    let got = deliveries(&mut w, 2).await;
    assert_eq!(got[0].2, b"poison");
    w.send_frame(&v2::ack(&[got[1].0])).await;
    // First failure, with a delay: not back before it.
    let naked = Instant::now();
    w.send_frame(&v2::nak(400, &[got[0].0])).await;
    let (id, attempt, payload) = deliveries(&mut w, 1).await.remove(0);
    assert!(
        naked.elapsed() >= Duration::from_millis(390),
        "{:?}",
        naked.elapsed()
    );
    assert_eq!((attempt, payload.as_slice()), (2, &b"poison"[..]));
    // Second and third failures: the third sends it to the dead letters.
    w.send_frame(&v2::nak(0, &[id])).await;
    let (id, attempt, _) = deliveries(&mut w, 1).await.remove(0);
    assert_eq!(attempt, 3);
    w.send_frame(&v2::nak(0, &[id])).await;
    let letter = within(10.0, "the dead letter", dead.next()).await;
    let Frame::MsgWithHeaders {
        sid: 9,
        headers,
        payload,
    } = letter
    else {
        panic!("{letter:?}");
    };
    assert_eq!(payload, b"poison", "the payload, whole");
    let h = |k: &str| {
        headers
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .unwrap_or_else(|| panic!("no {k} in {headers:?}"))
    };
    assert_eq!(h("aioq-channel"), "/queue/jobs");
    assert_eq!(h("aioq-attempts"), "3");
    assert_eq!(h("aioq-failures"), "3");
    assert_eq!(h("aioq-reason"), "max_deliveries");
    let first: u64 = h("aioq-first-delivery").parse().unwrap();
    let last: u64 = h("aioq-last-delivery").parse().unwrap();
    assert!(last >= first + 390, "first {first}, last {last}");
    // Nothing more for the worker; the counters add up.
    assert_eq!(until_pong(&mut w, 1).await, []);
    let acks = channel_acks(http, "/queue/jobs").await;
    assert_eq!(acks["acked"], 1, "{acks}");
    assert_eq!(acks["redelivered"]["nak"], 2, "{acks}");
    assert_eq!(acks["dead_lettered"]["max_deliveries"], 1, "{acks}");
    assert_eq!(acks["in_flight"], 0, "{acks}");
}

#[tokio::test]
async fn term_dead_letters_at_once_keeping_the_publishers_headers() {
    let broker = Broker::spawn(&[]);
    let (mut dead, _) = Raw::hello(broker.port, &["headers"]).await;
    dead.send_frame(&v2::sub(1, "/queue/jobs/dead")).await;
    assert_eq!(dead.next().await, Frame::Subscribed(1));
    let mut w = worker(broker.port, 1, "/queue/jobs").await;
    let (mut p, _) = Raw::hello(broker.port, &["headers"]).await;
    p.send_frame(&v2::publish_with_headers(
        "/queue/jobs",
        &[("trace", b"abc")],
        b"unworkable",
    ))
    .await;
    let (id, _, payload) = deliveries(&mut w, 1).await.remove(0);
    assert_eq!(
        payload, b"unworkable",
        "a worker not granted headers: payload alone"
    );
    w.send_frame(&v2::term(&[id])).await;
    let Frame::MsgWithHeaders {
        headers, payload, ..
    } = within(10.0, "the dead letter", dead.next()).await
    else {
        panic!("expected a MSG with headers");
    };
    assert_eq!(payload, b"unworkable");
    assert!(
        headers.contains(&("trace".into(), b"abc".to_vec())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("aioq-reason".into(), b"term".to_vec())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("aioq-attempts".into(), b"1".to_vec())),
        "{headers:?}"
    );
}

#[tokio::test]
async fn hostile_workers_are_bounded_and_counted_while_others_are_served() {
    let broker = Broker::spawn(&["--max-credit", "3", "--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    // Asks for a credit of 2^32 - 1, never acknowledges: holds 3.
    let mut greedy = worker(broker.port, u32::MAX, "/queue/jobs").await;
    let jobs: Vec<Vec<u8>> = (1..=10).map(|i| format!("job {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = jobs.iter().map(Vec::as_slice).collect();
    publish(broker.port, "/queue/jobs", &refs).await;
    let held = deliveries(&mut greedy, 3).await;
    assert_eq!(
        until_pong(&mut greedy, 1).await,
        [],
        "no more than --max-credit"
    );
    // Another worker is served the rest.
    let mut honest = worker(broker.port, 2, "/queue/jobs").await;
    let mut done = 0;
    while done < 7 {
        let got = deliveries(&mut honest, 1).await;
        honest.send_frame(&v2::ack(&[got[0].0])).await;
        done += 1;
    }
    // The honest worker cannot answer for the greedy one's deliveries
    // (its ids name its own), nor for ids never sent, nor twice.
    honest
        .send_frame(&v2::ack(&[held[0].0 + 1000, held[1].0 + 1000]))
        .await;
    assert_eq!(
        until_pong(&mut honest, 2).await,
        [Frame::NotHeld {
            count: 2,
            first: held[0].0 + 1000
        }]
    );
    honest.send_frame(&v2::ack(&[1])).await;
    assert_eq!(
        until_pong(&mut honest, 3).await,
        [Frame::NotHeld { count: 1, first: 1 }],
        "acknowledged before"
    );
    // A nak with a delay of a year waits (capped), counted as delayed.
    greedy.send_frame(&v2::nak(u32::MAX, &[held[0].0])).await;
    // WORKING spam for what it holds is harmless.
    let mut spam = Vec::new();
    for _ in 0..10_000 {
        v2::put(&mut spam, &v2::working(&[held[1].0, held[2].0]));
    }
    greedy.send(&spam).await;
    assert_eq!(until_pong(&mut greedy, 4).await, []);
    let acks = channel_acks(http, "/queue/jobs").await;
    assert_eq!(acks["in_flight"], 2, "{acks}");
    assert_eq!(acks["delayed"], 1, "{acks}");
    assert_eq!(acks["acked"], 7, "{acks}");
    let (_, _, metrics) = http_get(http, "/metrics").await;
    assert!(
        metrics.contains("\naioq_in_flight 2\n"),
        "the broker's gauge counts what its workers hold: {}",
        metrics
            .lines()
            .filter(|l| l.contains("in_flight"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("aioq_ack_not_held_total 3"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("not_held"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn acknowledgements_are_refused_where_they_cannot_be_kept() {
    let broker = Broker::spawn(&[]);
    let (mut c, _) = Raw::hello(broker.port, &["acks"]).await;
    c.send_frame(&v2::sub_acked(1, 0, "/topic/news")).await;
    match c.next().await {
        Frame::Ended { sid: 1, reason, .. } => assert_eq!(reason, 13, "not_a_queue"),
        other => panic!("{other:?}"),
    }
    // CREDIT for a subscription the connection does not hold.
    c.send_frame(&v2::credit(99, 5)).await;
    match c.next().await {
        Frame::Ended {
            sid: 99, reason, ..
        } => assert_eq!(reason, 9, "unknown_sid"),
        other => panic!("{other:?}"),
    }
    // A SUB with acknowledgements on a connection not granted them.
    let (mut d, _) = Raw::hello(broker.port, &[]).await;
    d.send_frame(&v2::sub_acked(1, 0, "/queue/jobs")).await;
    match d.next().await {
        Frame::Error { code, .. } => assert_eq!(code, 1, "malformed"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_channel_entry_sets_its_ack_wait_backoff_and_dead_letter_channel() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[[channel]]\nprefix = \"/queue/fast/\"\nack-wait = \"300ms\"\nmax-deliveries = 2\n\
          backoff = \"250ms\"\ndead-letter = \"/queue/graveyard\"\n",
    )
    .unwrap();
    let broker = Broker::spawn(&["--config", file.path().to_str().unwrap()]);
    let (mut dead, _) = Raw::hello(broker.port, &[]).await;
    dead.send_frame(&v2::sub(1, "/queue/graveyard")).await;
    assert_eq!(dead.next().await, Frame::Subscribed(1));
    let (mut w, _) = Raw::hello(broker.port, &["acks"]).await;
    w.send_frame(&v2::sub_acked(1, 1, "/queue/fast/x")).await;
    // SUBSCRIBED carries the channel's ack wait: 300 ms.
    match w.next().await {
        Frame::Subscribed(1) => {}
        other => panic!("{other:?}"),
    }
    publish(broker.port, "/queue/fast/x", &[b"flaky"]).await;
    let (id, attempt, _) = deliveries(&mut w, 1).await.remove(0);
    assert_eq!(attempt, 1);
    let naked = Instant::now();
    w.send_frame(&v2::nak(0, &[id])).await;
    // The backoff, not at once.
    let (_, attempt, _) = deliveries(&mut w, 1).await.remove(0);
    assert_eq!(attempt, 2);
    assert!(
        naked.elapsed() >= Duration::from_millis(240),
        "{:?}",
        naked.elapsed()
    );
    // The second failure is its ack wait running out: dead-lettered, to
    // the channel the entry names.
    let Frame::Msg { payload, .. } = within(10.0, "the dead letter", dead.next()).await else {
        panic!("expected the dead letter");
    };
    assert_eq!(payload, b"flaky");
    assert_eq!(until_pong(&mut w, 1).await, []);

    let bad = |toml: &str| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, toml.as_bytes()).unwrap();
        let out = std::process::Command::new(crate::util::BIN)
            .args(["serve", "--check-config", "--config"])
            .arg(f.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (toml, says) in [
        (
            "[[channel]]\nprefix = \"/queue/\"\nbackoff = \"soon\"\n",
            "backoff",
        ),
        (
            "[[channel]]\nprefix = \"/queue/\"\nack-wait = \"0s\"\n",
            "ack-wait",
        ),
        (
            "[[channel]]\nprefix = \"/queue/\"\nmax-deliveries = 0\n",
            "max-deliveries",
        ),
        (
            "[[channel]]\nprefix = \"/queue/\"\ndead-letter = \"/topic/x\"\n",
            "not a /queue",
        ),
    ] {
        let (code, err) = bad(toml);
        assert_eq!(code, Some(2), "{toml}: {err}");
        assert!(err.contains(says), "{toml}: {err}");
    }
}

#[tokio::test]
async fn a_dead_letter_channel_never_dead_letters_and_a_term_there_is_counted() {
    let broker = Broker::spawn(&["--max-deliveries", "1", "--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    let mut w = worker(broker.port, 2, "/queue/jobs/dead").await;
    publish(broker.port, "/queue/jobs/dead", &[b"again", b"drop me"]).await;
    let got = deliveries(&mut w, 2).await;
    // Past --max-deliveries, a NAK still brings it back: there is no
    // /queue/jobs/dead/dead.
    w.send_frame(&v2::nak(0, &[got[0].0])).await;
    let (_, attempt, payload) = deliveries(&mut w, 1).await.remove(0);
    assert_eq!((attempt, payload.as_slice()), (2, &b"again"[..]));
    w.send_frame(&v2::term(&[got[1].0])).await;
    assert_eq!(until_pong(&mut w, 1).await, []);
    assert_eq!(
        crate::util::metric(http, "aioq_messages_dropped_total{reason=\"terminated\"}").await,
        1
    );
    assert_eq!(
        crate::util::metric(http, "aioq_dead_lettered_total{reason=\"term\"}").await,
        0
    );
    assert_eq!(
        crate::util::metric(http, "aioq_dead_lettered_total{reason=\"max_deliveries\"}").await,
        0
    );
}
