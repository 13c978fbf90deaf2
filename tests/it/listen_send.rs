//! `aioq listen` and `aioq send` against a real broker, including restarts.

use std::io::Write;

use crate::util::{Proc as Client, *};

#[test]
fn listen_prints_what_send_sends() {
    let broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let mut listen = Client::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--channel",
            "/queue/t",
            "--count",
            "3",
        ],
        false,
    );
    let mut send = Client::spawn(
        &[
            "send",
            "--port",
            &port,
            "--channel",
            "/queue/t",
            "--interval",
            "0",
            "--count",
            "3",
        ],
        false,
    );
    assert_eq!(send.exit_code(10.0), Some(0));
    assert_eq!(listen.exit_code(10.0), Some(0));
    let lines = listen.out.snapshot();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("Msg {i} from ")), "{l}");
    }
}

#[test]
fn stdin_lines_become_messages_and_json_format_is_parseable() {
    let broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let mut listen = Client::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--channel",
            "/queue/lines",
            "--count",
            "3",
            "--format",
            "json",
        ],
        false,
    );
    let mut send = Client::spawn(
        &[
            "send",
            "--port",
            &port,
            "--channel",
            "/queue/lines",
            "--stdin",
        ],
        true,
    );
    let mut stdin = send.child.stdin.take().unwrap();
    stdin.write_all(b"first\nsecond line\n\xff\xfe\n").unwrap();
    drop(stdin);
    assert_eq!(send.exit_code(10.0), Some(0));
    assert_eq!(listen.exit_code(10.0), Some(0));
    let docs: Vec<serde_json::Value> = listen
        .out
        .snapshot()
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["payload"], "first");
    assert_eq!(docs[0]["encoding"], "utf8");
    assert_eq!(docs[1]["payload"], "second line");
    assert_eq!(docs[1]["size"], 11);
    assert_eq!(docs[1]["channel"], "/queue/lines");
    assert!(docs[1]["received_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn raw_format_writes_payload_bytes_only() {
    let broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let mut listen = Client::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--channel",
            "/queue/raw",
            "--count",
            "2",
            "--format",
            "raw",
        ],
        false,
    );
    let mut send = Client::spawn(
        &[
            "send",
            "--port",
            &port,
            "--channel",
            "/queue/raw",
            "--message",
            "abc",
            "--count",
            "2",
        ],
        false,
    );
    assert_eq!(send.exit_code(10.0), Some(0));
    assert_eq!(listen.exit_code(10.0), Some(0));
    assert_eq!(listen.out.snapshot(), vec!["abcabc".to_string()]);
}

#[test]
fn listen_without_reconnect_exits_0_on_end_of_stream() {
    let mut broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let mut listen = Client::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--channel",
            "/topic/x",
            "--no-reconnect",
        ],
        false,
    );
    listen.err.wait_for(10.0, "subscribed to /topic/x");
    broker.log.wait_for(10.0, "subscribed to /topic/x");
    broker.terminate();
    assert_eq!(listen.exit_code(10.0), Some(0));
}

/// Restart the broker under a running listener and sender: both reconnect by
/// themselves, and everything the sender buffered while the broker was down
/// arrives, in order.
#[test]
fn listen_and_send_survive_a_broker_restart_without_losing_buffered_messages() {
    const N: usize = 80;
    let mut broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let listen = Client::spawn(&["listen", "--port", &port, "--channel", "/queue/r"], false);
    let mut send = Client::spawn(
        &[
            "send",
            "-v",
            "--port",
            &port,
            "--channel",
            "/queue/r",
            "--interval",
            "50ms",
            "--count",
            &N.to_string(),
        ],
        false,
    );
    wait_until(10.0, "first messages", || listen.out.len() >= 5);
    broker.terminate();
    // The sender notices, and keeps producing into its buffer while the broker is down.
    send.err.wait_for(10.0, "retrying with backoff");
    let before = listen.out.len();
    wait_until(10.0, "sender buffering", || {
        send.err
            .snapshot()
            .iter()
            .filter(|l| l.contains("retrying in"))
            .count()
            >= 3
    });
    let broker = Broker::spawn_on(broker.port, &[]);
    assert_eq!(send.exit_code(30.0), Some(0));
    let resent = send.err.wait_for(5.0, "buffered message(s)");
    let buffered: usize = resent
        .split("sending ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no count in {resent}"));
    assert!(buffered > 0, "{resent}");
    wait_until(20.0, "listener got the last message", || {
        listen.out.contains(&format!("Msg {} from", N - 1))
    });
    listen.err.wait_for(5.0, "reconnected to");
    let idx: Vec<usize> = listen
        .out
        .snapshot()
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let after = &idx[before..];
    // After the restart: a gapless, ordered run up to the last message that
    // covers at least everything that was buffered.
    for w in after.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or reorder after restart: {after:?}");
    }
    assert!(
        after.len() >= buffered,
        "{buffered} buffered, {} received after restart",
        after.len()
    );
    // Only messages in flight at the moment of shutdown may be missing.
    assert!(
        idx.len() >= N - 3,
        "lost too many: {} of {N}: {idx:?}",
        idx.len()
    );
    drop(broker);
}

/// Only the broker's end-of-stream after a goodbye says everything sent was
/// routed: a connection that just closes has confirmed nothing, and `send`
/// must not report success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_does_not_take_a_close_for_a_confirmation() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // A broker that reads everything, goodbye included, and closes unanswered.
    let broker = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let expected = (4 + "/null".len()) + (4 + "/topic/x".len()) + (4 + "hi".len()) + 4;
        let mut wire = vec![0u8; expected];
        s.read_exact(&mut wire).await.unwrap();
        assert!(wire.ends_with(&[0, 0, 0, 0]), "the goodbye came last");
    });
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["send", "--port", &port.to_string(), "--channel", "/topic/x"])
            // This scripted broker reads protocol 1's bytes exactly.
            .args(["--message", "hi", "--no-reconnect", "--protocol", "1"])
            .output()
            .unwrap()
    });
    let out = within(15.0, "send exits", out).await.unwrap();
    within(5.0, "fake broker", broker).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("end-of-stream"), "{err}");
}

/// A broker shutting down while a publisher's messages still wait to be read
/// (a /queue backlog full, no worker) must not confirm them: no end-of-stream,
/// and `send` exits 1 saying how many were not confirmed.
#[test]
fn a_shutdown_does_not_confirm_what_it_never_read() {
    let mut broker = Broker::spawn(&["--backlog", "10"]);
    let port = broker.port.to_string();
    let mut send = Client::spawn(
        &[
            "send",
            "--port",
            &port,
            "--channel",
            "/queue/q",
            "--count",
            "1000",
            "--interval",
            "0",
            "--no-reconnect",
            "-v",
        ],
        false,
    );
    send.err
        .wait_for(10.0, "saying goodbye and waiting for the broker to confirm");
    let summary = broker.terminate();
    assert!(summary_field(&summary, "messages_in") < 1000, "{summary}");
    assert_eq!(send.exit_code(10.0), Some(1), "{}", send.err.text());
    let err = send.err.text();
    assert!(
        err.contains("1000 message(s) sent on that connection were not confirmed"),
        "{err}"
    );
    assert!(summary.contains("input_cut:1"), "{summary}");
}

/// Against a broker that never answers the goodbye (one that knows nothing of
/// it), `send` fails saying which flag to use, and with it flushes and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirm_is_for_brokers_that_never_answer_the_goodbye() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Reads everything and answers nothing, for as long as the client stays.
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    let run = |extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(["send", "--port", &port.to_string(), "--message", "hi"])
                .args(["--no-reconnect"])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let out = within(15.0, "send --no-confirm", run(&["--no-confirm"]))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("not confirmed (--no-confirm)"), "{err}");
    let out = within(15.0, "send", run(&[])).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("use --no-confirm"), "{err}");
}

/// A broker restarted while `send` writes a batch of large messages: what it
/// read of the batch it routed; sending that again after the restart would
/// deliver it twice. Some messages may be lost with the broker (protocol 1 has
/// no acknowledgements, and `send` says how many were not confirmed); none may
/// come twice.
#[test]
fn send_never_sends_twice_what_a_restarted_broker_had_taken() {
    const N: usize = 3000;
    let mut broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let listen = Client::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--channel",
            "/queue/big",
            "--format",
            "json",
        ],
        false,
    );
    wait_until(10.0, "listener subscribed", || {
        broker.log.contains("subscribed to /queue/big")
    });
    let mut send = Client::spawn(
        &[
            "send",
            "--port",
            &port,
            "--channel",
            "/queue/big",
            "--interval",
            "0",
            "--count",
            &N.to_string(),
            "--size",
            "65536",
        ],
        false,
    );
    wait_until(20.0, "first messages", || listen.out.len() >= 100);
    broker.terminate();
    send.err.wait_for(10.0, "retrying with backoff");
    let mut broker = Broker::spawn_on(broker.port, &[]);
    // Cut off mid-flood, `send` cannot know what the first broker routed: it
    // says so and fails, rather than sending any of it twice.
    assert_eq!(send.exit_code(60.0), Some(1), "{}", send.err.text());
    assert!(
        send.err.contains("were not confirmed"),
        "{}",
        send.err.text()
    );
    // Everything the second broker took reaches the listener before its
    // end-of-stream.
    broker.terminate();
    listen.err.wait_for(10.0, "end of stream");
    let mut seen = std::collections::HashSet::new();
    for line in listen.out.snapshot() {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let payload = v["payload"].as_str().unwrap();
        let i: usize = payload.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(seen.insert(i), "Msg {i} delivered twice");
    }
}
