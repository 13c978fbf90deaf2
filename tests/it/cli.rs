//! The command line as scripts see it: exit codes, help, errors.

use std::process::Command;

use crate::util::BIN;

fn aioq(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run aioq")
}

#[test]
fn bad_flag_exits_2_with_a_useful_message() {
    let out = aioq(&["serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    let out = aioq(&["serve", "--max-frame", "12 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));
    let out = aioq(&["send", "--interval", "soon"]);
    assert_eq!(out.status.code(), Some(2));
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
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("cannot use --cluster not a url ::"), "{err}");
}

#[test]
fn help_of_each_subcommand_renders_with_examples() {
    for cmd in ["serve", "listen", "send", "bench", "completions", "man"] {
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
