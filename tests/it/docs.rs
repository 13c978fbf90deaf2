//! Docs that run: every `aioq` command line in the README and in each
//! subcommand's `--help` examples is parsed by the real command-line parser,
//! so a renamed flag or a bad value in the docs fails here.

use std::process::Command;

use clap::Parser;

use crate::util::{BIN, SUBCOMMANDS};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Splits a shell line into words: quotes kept together, a comment, pipe,
/// redirection or `&` ends the command.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#' | '|' | '>' | '&' | ';') if !started || word.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// The `aioq ...` commands in a text: code lines (indented), `$ ` prompts
/// and `\` continuations handled; lines with placeholders (`...`) skipped.
fn commands(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        joined.push(std::mem::take(&mut pending));
    }
    joined
        .iter()
        // Two terminals side by side: `$ aioq serve ...        $ aioq listen ...`.
        .flat_map(|l| l.split("  $ "))
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("$ ");
            let at = l.find("aioq ")?;
            // A command, not prose: at the start, or after env assignments.
            let before = &l[..at];
            if !before.split_whitespace().all(|w| w.contains('=')) {
                return None;
            }
            let cmd = &l[at..];
            // Placeholders (`...`) and synopses (`[--flag VALUE]`) are not
            // commands to run.
            (!cmd.contains("...") && !cmd.contains(" [")).then(|| cmd.trim_end().to_string())
        })
        .collect()
}

fn parses(cmd: &str) -> Result<(), String> {
    let w = words(cmd);
    aioq::cli::Cli::try_parse_from(&w)
        .map(|_| ())
        .map_err(|e| format!("{cmd}\n  {w:?}\n  {e}"))
}

#[test]
fn every_command_in_the_readme_parses() {
    let readme = readme();
    let cmds = commands(&readme);
    assert!(cmds.len() > 25, "found only {} commands", cmds.len());
    let bad: Vec<String> = cmds.iter().filter_map(|c| parses(c).err()).collect();
    assert!(
        bad.is_empty(),
        "{} README command(s) do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_help_example_parses() {
    let mut found = 0;
    let mut bad = Vec::new();
    // The generators' own help has no examples; the top level has.
    for sub in SUBCOMMANDS.into_iter().chain([&[][..]]) {
        let out = Command::new(BIN).args(sub).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let examples = help.split("Examples:").nth(1).unwrap_or("");
        for cmd in commands(examples) {
            found += 1;
            if let Err(e) = parses(&cmd) {
                bad.push(e);
            }
        }
    }
    assert!(found > 20, "found only {found} examples");
    assert!(
        bad.is_empty(),
        "{} example(s) do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_shell_word_splitter_keeps_quotes_and_stops_at_pipes() {
    assert_eq!(
        words(r#"aioq send --message 'hello world' | jq ."#),
        ["aioq", "send", "--message", "hello world"]
    );
    assert_eq!(words("aioq listen   # a worker"), ["aioq", "listen"]);
    assert_eq!(
        words("aioq send --message ''"),
        ["aioq", "send", "--message", ""]
    );
}

/// The README's monitoring example: its file, started for real, and the
/// clients it names give the output it shows, field for field (times,
/// addresses and ids aside).
#[tokio::test]
async fn the_readme_monitoring_example_gives_its_own_output() {
    use crate::util::{http_get, Broker, Proc};
    let readme = readme();
    let lines: Vec<&str> = readme.lines().collect();
    // The indented block from `# orders.toml` to the first unindented line.
    let start = lines
        .iter()
        .position(|l| l.trim() == "# orders.toml")
        .expect("the README's orders.toml");
    let toml: Vec<String> = lines[start..]
        .iter()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.trim_start().to_string())
        .collect();
    let toml = toml.join("\n").replace("127.0.0.1:9090", "127.0.0.1:0");
    // What each curl line is shown to print: the indented lines after it.
    let shown = |path: &str| -> serde_json::Value {
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with("$ curl") && l.contains(path))
            .unwrap_or_else(|| panic!("no curl of {path}"));
        let json: String = lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("    ") && !l.trim_start().starts_with('$'))
            .map(|l| l.trim())
            .collect();
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}: {json}"))
    };
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, toml.as_bytes()).unwrap();
    let broker = Broker::spawn(&["--config", file.path().to_str().unwrap()]);
    let http = broker.monitor_port();
    let port = broker.port.to_string();
    let _listen = Proc::spawn(
        &["listen", "--port", &port, "--channel", "/topic/orders"],
        false,
    );
    broker.log.wait_for(10.0, "subscribed to /topic/orders");
    let mut send = Proc::spawn(
        &[
            "send",
            "--port",
            &port,
            "--channel",
            "/topic/orders",
            "--count",
            "3",
            "--message",
            "hi",
        ],
        false,
    );
    assert_eq!(send.exit_code(10.0), Some(0));
    let connections = "/api/connections?sort=messages_out&limit=1";
    crate::util::within(10.0, "the listener's three messages", async {
        while !http_get(http, connections)
            .await
            .2
            .contains(r#""messages_out":3"#)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    for (path, volatile) in [
        (
            connections,
            &["connected_seconds", "connected_since", "peer", "id"][..],
        ),
        ("/api/channels", &[][..]),
    ] {
        let mut got: serde_json::Value =
            serde_json::from_str(&http_get(http, path).await.2).unwrap();
        let mut want = shown(path);
        for v in [&mut got, &mut want] {
            let rows = v
                .as_object_mut()
                .unwrap()
                .values_mut()
                .find_map(|x| x.as_array_mut())
                .unwrap();
            for row in rows {
                for k in volatile {
                    row.as_object_mut().unwrap().remove(*k);
                }
            }
        }
        assert_eq!(
            got, want,
            "{path}: what the broker says, and what the README shows"
        );
    }
}

/// Every drop reason and every end reason the broker counts has its row in
/// the README's table: a new reason without one fails here.
#[test]
fn every_drop_and_end_reason_is_explained_in_the_readme() {
    let readme = readme();
    let start = readme
        .find("## Why a message was not delivered, or a connection ended")
        .expect("the README's reasons section");
    let section = &readme[start..readme[start..].find("## Exit codes").unwrap() + start];
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let names = aioq::broker::stats::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(aioq::broker::end::EndReason::NAMES);
    for name in names {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("| `{name}` |"))),
            "no row for `{name}` in the README's reasons tables"
        );
    }
}

/// The README's table of metrics and a running broker's `/metrics` name the
/// same families (cluster-only ones aside): a metric added or renamed
/// without its row fails here.
#[tokio::test]
async fn the_readme_lists_every_metric_the_broker_serves() {
    let readme = readme();
    let start = readme
        .find("| metric | type | labels | what |")
        .expect("the metrics table");
    let documented: std::collections::BTreeSet<String> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap_or_default().to_string();
            first
                .split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.starts_with("aioq_cluster_"))
        .collect();
    // With a durable store: its series are served only then.
    let data = tempfile::tempdir().unwrap();
    let broker = crate::util::Broker::spawn(&[
        "--http",
        "127.0.0.1:0",
        "--durable",
        "/queue/",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let (_, _, body) = crate::util::http_get(broker.monitor_port(), "/metrics").await;
    let served: std::collections::BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        documented, served,
        "the README's metrics table and /metrics"
    );
}

/// The README's certificate recipe, run as written (every `openssl` and
/// `printf` line of it, in a scratch directory): the broker serves mutual
/// TLS with the files it makes, and the client certificate gets in.
#[tokio::test]
async fn the_readme_certificate_recipe_makes_certificates_that_work() {
    let readme = readme();
    let start = readme
        .find("A certificate recipe that works")
        .expect("the recipe");
    let end = start + readme[start..].find("#### Clustering over NATS").unwrap();
    // Indented lines, continuations joined; openssl and printf only.
    let mut script = String::new();
    for line in readme[start..end].lines().filter(|l| l.starts_with("    ")) {
        let line = line.trim();
        if script.ends_with("\\\n") || line.starts_with("openssl") || line.starts_with("printf") {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert!(script.matches("openssl x509").count() == 2, "{script}");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-ec", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let broker = crate::util::Broker::spawn(&[
        "--tls-cert",
        &f("broker.pem"),
        "--tls-key",
        &f("broker.key"),
        "--tls-client-ca",
        &f("ca.pem"),
        "--http",
        "127.0.0.1:0",
    ]);
    let http = broker.monitor_port();
    let port = broker.port.to_string();
    let mut send = crate::util::Proc::spawn(
        &[
            "send",
            "--port",
            &port,
            "--tls-ca",
            &f("ca.pem"),
            "--tls-cert",
            &f("reporter.pem"),
            "--tls-key",
            &f("reporter.key"),
            "--channel",
            "/topic/metrics",
            "--message",
            "hi",
        ],
        false,
    );
    assert_eq!(send.exit_code(20.0), Some(0), "{}", send.err.text());
    let _listen = crate::util::Proc::spawn(
        &[
            "listen",
            "--port",
            &port,
            "--tls-ca",
            &f("ca.pem"),
            "--tls-cert",
            &f("reporter.pem"),
            "--tls-key",
            &f("reporter.key"),
            "--channel",
            "/topic/metrics",
        ],
        false,
    );
    broker.log.wait_for(10.0, "subscribed to /topic/metrics");
    let (_, _, body) = crate::util::http_get(http, "/api/connections").await;
    assert!(
        body.contains(r#""identity":"CN=metrics-reporter""#),
        "{body}"
    );
}
