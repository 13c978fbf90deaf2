//! The command line as scripts see it: exit codes, help, errors.

use std::process::Command;

use crate::util::*;

fn aioq(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run aioq")
}

#[test]
fn bad_flag_exits_2_with_a_useful_message() {
    let out = aioq(&["serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    let out = aioq(&["send", "--size", "1.5KiB", "--port", "1", "--count", "0"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = aioq(&["serve", "--max-frame", "12 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));
    let out = aioq(&["send", "--interval", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = aioq(&["bench", "--size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 24 bytes"));
}

#[test]
fn zero_limits_are_refused_not_clamped() {
    for (flag, value) in [
        ("--max-memory", "0"),
        ("--write-timeout", "0s"),
        ("--frame-timeout", "0s"),
    ] {
        let out = aioq(&["serve", "--port", "0", flag, value]);
        // A value clap accepts but the broker cannot use is still a usage error.
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("more than 0"), "{err}");
    }
    for (flag, value) in [("--stall-timeout", "0s"), ("--duration", "0s")] {
        let out = aioq(&["bench", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag} must be more than 0")),
            "{err}"
        );
    }
}

#[test]
fn bad_cluster_flags_are_refused() {
    let code = |args: &[&str]| {
        let out = aioq(&[&["serve", "--port", "0"][..], args].concat());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Without --cluster its settings mean nothing: a usage error.
    let (c, err) = code(&["--cluster-ack-wait", "1s"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("--cluster"), "{err}");
    let (c, err) = code(&["--cluster", "nats://127.0.0.1:1", "--cluster-replicas", "6"]);
    assert_eq!(c, Some(2), "{err}");
    let (c, err) = code(&[
        "--cluster",
        "nats://127.0.0.1:1",
        "--cluster-ack-wait",
        "0s",
    ]);
    assert_eq!(c, Some(2), "{err}");
    assert!(
        err.contains("--cluster-ack-wait must be more than 0"),
        "{err}"
    );
    let (c, err) = code(&["--cluster", "not a url ::"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(
        err.contains("--cluster \"not a url ::\": not a URL"),
        "{err}"
    );
}

#[test]
fn help_of_each_subcommand_renders_with_examples() {
    for cmd in [
        "serve",
        "listen",
        "send",
        "work",
        "requeue",
        "bench",
        "watch-db",
        "metrics",
        "completions",
        "man",
    ] {
        let out = aioq(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd} --help has examples");
        assert!(text.contains(&format!("aioq {cmd}")), "{cmd} --help");
    }
}

#[test]
fn version_names_the_protocol() {
    let out = aioq(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("protocol 1"), "{text}");
}

#[test]
fn unreachable_broker_exits_3_without_reconnect() {
    // Port 1 on loopback: nothing listens there.
    for cmd in ["listen", "send"] {
        let out = aioq(&[cmd, "--port", "1", "--no-reconnect", "--count", "1"]);
        assert_eq!(out.status.code(), Some(3), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot reach the broker at localhost:1"),
            "{err}"
        );
        // Each cause once: the chain is printed, not the cause twice.
        assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    }
}

#[test]
fn port_in_use_is_a_clear_runtime_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = aioq(&["serve", "--port", &port]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn top_level_help_documents_exit_codes_and_environment() {
    let out = aioq(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["Exit status:", "AIOQ_PORT", "NO_COLOR", "130"] {
        assert!(text.contains(needle), "--help mentions {needle}");
    }
}

/// `AIOQ_PORT=abc` is reported under `--port`'s name by the parser: the
/// error must also name the variable, which is what holds the bad value.
#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let out = Command::new(BIN)
        .args(["listen", "--no-reconnect"])
        .env("AIOQ_PORT", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AIOQ_PORT=abc"), "{err}");
    let out = aioq(&["listen", "--port", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("AIOQ_PORT"), "given as a flag: {err}");
}

/// `--count 0`, as `head -n 0`, asks for nothing: exit 0 at once, with no
/// broker to reach (port 1: nothing listens there).
#[test]
fn a_count_of_zero_does_nothing_and_succeeds() {
    for cmd in ["listen", "send"] {
        let out = aioq(&[cmd, "--port", "1", "--no-reconnect", "--count", "0"]);
        assert_eq!(out.status.code(), Some(0), "{cmd}");
    }
}

#[test]
fn environment_supplies_default_port() {
    let out = Command::new(BIN)
        .args(["listen", "--no-reconnect", "--count", "1"])
        .env("AIOQ_PORT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("localhost:1"));
}

#[test]
fn a_duration_too_long_for_the_clock_is_a_usage_error_not_a_panic() {
    for flag in ["--drain-timeout", "--frame-timeout", "--write-timeout"] {
        let out = aioq(&["serve", "--port", "0", flag, "1e19"]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("too long a duration"), "{err}");
    }
}

#[test]
fn a_closed_stderr_changes_nothing_about_the_exit_code() {
    // The reading end of stderr is gone before aioq writes its error.
    let mut child = Command::new(BIN)
        .args(["listen", "--port", "1", "--no-reconnect"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(3), "not a panic (101)");
}

#[test]
fn an_empty_message_is_a_usage_error() {
    let out = aioq(&["send", "--message", "", "--port", "1", "--no-reconnect"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--message cannot be empty"), "{err}");
}

/// A client turned away by the broker's connection limit backs off like one
/// that cannot connect, says so once (each try only at -v), and with
/// --no-reconnect exits 5 without ever saying it connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_backs_off_says_it_once_and_exits_5_without_reconnect() {
    let broker = Broker::spawn(&["--max-connections", "1"]);
    let _holder = Raw::subscribe(broker.port, "/topic/held").await;
    wait_subscribed(&broker, "/topic/held", 1).await;
    let port = broker.port.to_string();

    for cmd in [&["listen"][..], &["send", "--message", "x"]] {
        let mut args = cmd.to_vec();
        args.extend(["--port", &port, "--no-reconnect"]);
        let mut c = Proc::spawn(&args, false);
        assert_eq!(c.exit_code(10.0), Some(5), "{args:?}: {}", c.err.text());
        let err = c.err.text();
        assert!(err.contains("turned the connection away"), "{err}");
        assert!(!err.contains("connected to"), "{err}");
    }

    let listen = Proc::spawn(&["listen", "-v", "--port", &port], false);
    // 100 ms, 200, 400, 800: the fifth try comes 1.5 s or more after the
    // first (jitter takes up to a quarter off); without backoff it would
    // come within milliseconds.
    let tries = |c: &Proc| {
        c.err
            .snapshot()
            .iter()
            .filter(|l| l.contains("retrying"))
            .count()
    };
    let first = std::time::Instant::now();
    wait_until(15.0, "five tries", || tries(&listen) >= 5);
    let took = first.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1100),
        "five tries in {took:?}: no backoff\n{}",
        listen.err.text()
    );
    let warned = listen
        .err
        .snapshot()
        .iter()
        .filter(|l| l.contains(" WARN ") && l.contains("turned the connection away"))
        .count();
    assert_eq!(warned, 1, "one WARN per episode:\n{}", listen.err.text());
}

/// The Exit status table of `aioq --help`, walked for every subcommand: a bad
/// flag is 2 everywhere, and SIGINT/SIGTERM follow one rule: 0 where a signal
/// is how the command ends (serve, metrics, an endless listen or send), 130
/// where it cuts short a job with an end (listen --count, send --count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_one_table_across_subcommands() {
    for cmd in SUBCOMMANDS {
        let mut args = cmd.to_vec();
        args.push("--no-such-flag");
        let out = aioq(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    }

    let mut broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let p = port.as_str();
    let cases: [(&[&str], &str, i32); 7] = [
        (
            &["listen", "--port", p, "--channel", "/topic/s"],
            "subscribed",
            0,
        ),
        (
            &[
                "listen",
                "--port",
                p,
                "--channel",
                "/topic/s",
                "--count",
                "5",
            ],
            "subscribed",
            130,
        ),
        (
            &[
                "send",
                "--port",
                p,
                "--channel",
                "/topic/s",
                "--interval",
                "20ms",
            ],
            "publishing",
            0,
        ),
        (
            &[
                "send",
                "--port",
                p,
                "--channel",
                "/topic/s",
                "--interval",
                "20ms",
                "--count",
                "100000",
            ],
            "publishing",
            130,
        ),
        (
            &[
                "metrics",
                "report",
                "--port",
                p,
                "--name",
                "me",
                "--interval",
                "100ms",
            ],
            "publishing",
            0,
        ),
        (
            &["metrics", "collect", "--port", p, "--http", "127.0.0.1:0"],
            "subscribed",
            0,
        ),
        (&["serve", "--port", "0"], "broker ready", 0),
    ];
    for (args, ready, want) in cases {
        for sig in ["INT", "TERM"] {
            let mut c = Proc::spawn(args, false);
            c.err.wait_for(10.0, ready);
            signal(&c.child, sig);
            assert_eq!(c.exit_code(15.0), Some(want), "{args:?} on SIG{sig}");
        }
    }
    // An endless send stopped by a signal still has its messages confirmed.
    let mut send = Proc::spawn(&["send", "--port", p, "--interval", "10ms"], false);
    send.err.wait_for(10.0, "publishing");
    signal(&send.child, "TERM");
    assert_eq!(send.exit_code(15.0), Some(0));
    assert!(
        send.err.contains("the broker confirmed all"),
        "{}",
        send.err.text()
    );
    broker.terminate();
}

/// A password in the environment never reaches `--help`.
#[test]
fn help_hides_the_dsn_from_the_environment() {
    let out = Command::new(BIN)
        .args(["watch-db", "--help"])
        .env("AIOQ_DSN", "postgres://u:s3cr3t@db.example/app")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("AIOQ_DSN"), "{help}");
    assert!(!help.contains("s3cr3t"), "{help}");
}

/// Mistakes in a command line are usage errors (2) with a fix, whichever
/// subcommand: a bare port for an HTTP address, a pid that names no process.
#[test]
fn a_bare_http_port_and_a_missing_pid_are_usage_errors() {
    for args in [
        &["metrics", "collect", "--http", "8088"][..],
        &["serve", "--http", "8088"],
        &[
            "watch-db",
            "--dsn",
            "postgres://x@127.0.0.1:1/x",
            "--table",
            "t",
            "--http",
            "8088",
        ],
    ] {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("127.0.0.1:8088"), "{args:?}: {err}");
    }
    let out = std::process::Command::new(BIN)
        .args(["metrics", "report", "--name", "x", "--pid", "4194305"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--pid 4194305: no such process"), "{err}");
}

/// Ctrl-C of a `send` that never reached the broker does not wait for a
/// confirm that cannot come: it exits 130 at once and says how many messages
/// were never sent (walkthrough 7: it waited 6 s and said nothing).
#[test]
fn an_interrupted_send_that_never_connected_says_what_was_never_sent() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut send = Proc::spawn(
        &["send", "--port", &port, "--count", "5", "--interval", "0"],
        false,
    );
    send.err.wait_for(10.0, "retrying with backoff");
    let start = std::time::Instant::now();
    signal(&send.child, "INT");
    assert_eq!(send.exit_code(10.0), Some(130));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "waited {:?} for a broker it never reached",
        start.elapsed()
    );
    assert!(
        send.err.contains("5 message(s) were never sent"),
        "{}",
        send.err.text()
    );
}

/// `serve --threads`: 0 is refused as a usage error; a count given by the
/// flag, the environment or the config file is the one the broker runs with
/// (its ready line says so).
#[tokio::test]
async fn serve_runs_on_the_threads_it_is_given_and_refuses_none() {
    let out = aioq(&["serve", "--port", "0", "--threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
    let b = crate::util::Broker::spawn(&["--threads", "5"]);
    b.log.wait_for_async(10.0, "5 thread(s))").await;
    let mut config = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut config, b"threads = 7\n").unwrap();
    let b = crate::util::Broker::spawn(&["--config", config.path().to_str().unwrap()]);
    b.log.wait_for_async(10.0, "7 thread(s))").await;
}
