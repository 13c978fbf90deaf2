//! `aioq work -- CMD` and `aioq listen --ack` as a user runs them, against a
//! real broker: jobs acknowledged by exit status, failures retried and then
//! dead-lettered with their payload, a worker killed with SIGKILL whose job
//! reaches another worker, a SIGINT that lets the running job finish.

use crate::util::v2::{self, Frame};
use crate::util::{metric, twenty_jobs, within, work_failing_bad_jobs, Broker, Proc, Raw};

/// Publishes `payloads` (text) with confirms.
async fn publish(port: u16, channel: &str, payloads: &[String]) {
    let bytes: Vec<&[u8]> = payloads.iter().map(String::as_bytes).collect();
    v2::publish_confirmed(port, channel, &bytes).await;
}

/// `listen --ack --count N` on `channel`: what it printed, line by line.
fn take_acked(port: &str, channel: &str, n: usize) -> Vec<String> {
    let count = n.to_string();
    let mut listen = Proc::spawn(
        &[
            "listen",
            "--port",
            port,
            "--channel",
            channel,
            "--ack",
            "--count",
            &count,
        ],
        false,
    );
    assert_eq!(listen.exit_code(10.0), Some(0), "{}", listen.err.text());
    listen.out.text().lines().map(str::to_string).collect()
}

#[tokio::test]
async fn work_acknowledges_by_exit_status_and_dead_letters_what_keeps_failing() {
    let broker = Broker::spawn(&["--max-deliveries", "3", "--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    let (mut dead, _) = Raw::hello(broker.port, &["headers"]).await;
    dead.send_frame(&v2::sub(1, "/queue/jobs/dead")).await;
    assert_eq!(dead.next().await, Frame::Subscribed(1));
    let jobs = twenty_jobs();
    publish(broker.port, "/queue/jobs", &jobs).await;
    let work = work_failing_bad_jobs(broker.port, "/queue/jobs", &jobs);
    let mut letters = Vec::new();
    within(10.0, "four dead letters", async {
        while letters.len() < 4 {
            match dead.next().await {
                Frame::MsgWithHeaders {
                    headers, payload, ..
                } => letters.push((String::from_utf8(payload).unwrap(), headers)),
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    letters.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = letters.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["bad-10", "bad-15", "bad-20", "bad-5"],
        "payloads intact"
    );
    let shown: Vec<String> = letters
        .iter()
        .map(|(p, h)| {
            let hs: Vec<String> = h
                .iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                .collect();
            format!("{p}: {}", hs.join(" "))
        })
        .collect();
    for (_, h) in &letters {
        assert!(
            h.contains(&("aioq-attempts".into(), b"3".to_vec())),
            "{shown:#?}\n{}",
            work.err.text()
        );
        assert!(
            h.contains(&("aioq-reason".into(), b"max_deliveries".to_vec())),
            "{h:?}"
        );
    }
    assert_eq!(metric(http, "aioq_acked_total").await, 16);
    assert_eq!(
        metric(http, "aioq_redelivered_total{cause=\"nak\"}").await,
        8
    );
    assert_eq!(
        metric(http, "aioq_dead_lettered_total{reason=\"max_deliveries\"}").await,
        4
    );
    assert_eq!(metric(http, "aioq_in_flight").await, 0);
    let err = work.err.text();
    assert!(err.contains("(attempt 3): exit 3"), "{err}");
    assert!(err.contains("16 job(s) done, 12 failed"), "{err}");
}

#[tokio::test]
async fn a_worker_killed_with_sigkill_mid_job_hands_the_job_to_another_at_once() {
    // An ack wait far past the test: only the disconnect can bring it back.
    let broker = Broker::spawn(&["--ack-wait", "1h"]);
    let port = broker.port.to_string();
    publish(broker.port, "/queue/jobs", &["the job".to_string()]).await;
    let mut work = Proc::spawn(
        &[
            "work",
            "--port",
            &port,
            "--channel",
            "/queue/jobs",
            "--",
            "sh",
            "-c",
            "echo started $$; exec sleep 30",
        ],
        false,
    );
    let started = work.out.wait_for(10.0, "started");
    let child: i32 = started.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (mut other, _) = Raw::hello(broker.port, &["acks"]).await;
    other.send_frame(&v2::sub_acked(1, 1, "/queue/jobs")).await;
    assert!(matches!(other.next().await, Frame::Subscribed(1)));
    work.child.kill().unwrap();
    work.child.wait().unwrap();
    let got = within(10.0, "the job, on the other worker", other.next()).await;
    // The orphaned command is no longer anyone's.
    unsafe_kill(child);
    match got {
        Frame::Msg {
            attempt,
            payload,
            delivery,
            ..
        } => {
            assert_eq!(payload, b"the job");
            assert_eq!(attempt, 2);
            other.send_frame(&v2::ack(&[delivery])).await;
        }
        other => panic!("{other:?}"),
    }
    // Once: nothing more comes for it (the PONG is in order after anything
    // the broker had to send).
    other.send_frame(&v2::ping(1)).await;
    assert_eq!(
        within(10.0, "the PONG", other.next()).await,
        Frame::Pong(1),
        "the job came back once"
    );
}

fn unsafe_kill(pid: i32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn sigint_lets_the_running_job_finish_acknowledges_it_and_exits_130() {
    let broker = Broker::spawn(&["--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    let port = broker.port.to_string();
    publish(
        broker.port,
        "/queue/jobs",
        &["a".to_string(), "b".to_string()],
    )
    .await;
    let mut work = Proc::spawn(
        &[
            "work",
            "--port",
            &port,
            "--channel",
            "/queue/jobs",
            "--",
            "sh",
            "-c",
            "echo started; sleep 0.5; echo finished",
        ],
        false,
    );
    work.out.wait_for(10.0, "started");
    let pid = work.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert_eq!(work.exit_code(10.0), Some(130));
    assert_eq!(
        work.out.text().matches("finished").count(),
        1,
        "one job, run to its end"
    );
    assert_eq!(metric(http, "aioq_acked_total").await, 1);
    // The other job waits for a worker, not lost.
    let got = take_acked(&port, "/queue/jobs", 1);
    assert_eq!(got, ["b"]);
    assert_eq!(
        metric(http, "aioq_acked_total").await,
        2,
        "listen --ack acknowledged it"
    );
}

#[tokio::test]
async fn work_refuses_what_it_cannot_do_with_a_clear_error() {
    let broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let mut topic = Proc::spawn(
        &[
            "work",
            "--port",
            &port,
            "--channel",
            "/topic/x",
            "--",
            "true",
        ],
        false,
    );
    assert_eq!(topic.exit_code(10.0), Some(2));
    assert!(
        topic.err.text().contains("must be a /queue channel"),
        "{}",
        topic.err.text()
    );
    publish(broker.port, "/queue/jobs", &["j".to_string()]).await;
    let mut missing = Proc::spawn(
        &[
            "work",
            "--port",
            &port,
            "--channel",
            "/queue/jobs",
            "--",
            "/no/such/command",
        ],
        false,
    );
    assert_eq!(missing.exit_code(10.0), Some(2));
    assert!(
        missing.err.text().contains("cannot run"),
        "{}",
        missing.err.text()
    );
    // The job was given back, not lost.
    let got = take_acked(&port, "/queue/jobs", 1);
    assert_eq!(got, ["j"]);
}

#[tokio::test]
async fn requeue_puts_dead_letters_back_and_leaves_nothing_behind() {
    let broker = Broker::spawn(&["--http", "127.0.0.1:0"]);
    let http = broker.monitor_port();
    let port = broker.port.to_string();
    let (mut w, _) = Raw::hello(broker.port, &["acks"]).await;
    w.send_frame(&v2::sub_acked(1, 4, "/queue/jobs")).await;
    assert!(matches!(w.next().await, Frame::Subscribed(1)));
    publish(
        broker.port,
        "/queue/jobs",
        &["p1".to_string(), "p2".to_string()],
    )
    .await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        match within(10.0, "the jobs", w.next()).await {
            Frame::Msg { delivery, .. } => ids.push(delivery),
            other => panic!("{other:?}"),
        }
    }
    w.send_frame(&v2::term(&ids)).await;
    // The worker leaves; the dead letters wait with no worker.
    drop(w);
    let mut requeue = Proc::spawn(
        &[
            "requeue",
            "--port",
            &port,
            "--from",
            "/queue/jobs/dead",
            "--to",
            "/queue/jobs",
        ],
        false,
    );
    assert_eq!(requeue.exit_code(20.0), Some(0), "{}", requeue.err.text());
    assert!(
        requeue
            .err
            .text()
            .contains("moved 2 message(s) from /queue/jobs/dead to /queue/jobs"),
        "{}",
        requeue.err.text()
    );
    let got = take_acked(&port, "/queue/jobs", 2);
    let mut got = got;
    got.sort();
    assert_eq!(got, ["p1", "p2"]);
    assert_eq!(
        metric(http, "aioq_dead_lettered_total{reason=\"term\"}").await,
        2
    );
    // Requeue acknowledged what it moved: nothing is left to move.
    let mut again = Proc::spawn(
        &[
            "requeue",
            "--port",
            &port,
            "--from",
            "/queue/jobs/dead",
            "--to",
            "/queue/jobs",
        ],
        false,
    );
    assert_eq!(again.exit_code(20.0), Some(0));
    assert!(
        again.err.text().contains("moved 0 message(s)"),
        "{}",
        again.err.text()
    );
}
