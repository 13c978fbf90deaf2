//! A broker the job scenarios start themselves, so that they can kill it
//! (SIGKILL) and start it again: `aioq serve` when no `--target` is given
//! (its `/queue/bench-durable` channels durable in a scratch directory, its
//! monitoring face on), or the user's `--broker-cmd`. Ports are picked by
//! the bench and kept across restarts, as is the data directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::super::meter::MetricsUrl;

/// How long a broker may take to listen after it is started: RabbitMQ
/// boots an Erlang node, and a store with a million jobs is read back.
const LISTEN_WITHIN: Duration = Duration::from_secs(180);

pub struct Started {
    argv: Vec<String>,
    child: Option<tokio::process::Child>,
    pub port: u16,
    /// The monitoring port: aioq's `--http`, or `{http_port}` in the
    /// command.
    http_port: Option<u16>,
    /// Scratch: the own broker's data directory and every broker's log.
    dir: tempfile::TempDir,
    /// The text shown in reports.
    pub shown: String,
}

impl Started {
    /// `aioq serve --durable /queue/bench-durable --fsync FSYNC`.
    pub fn own(fsync: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a scratch data directory")?;
        let (port, http_port) = (free_port()?, free_port()?);
        let exe = std::env::current_exe().context("this program's path")?;
        let argv = vec![
            exe.to_string_lossy().into_owned(),
            "serve".into(),
            "--port".into(),
            port.to_string(),
            "--http".into(),
            format!("127.0.0.1:{http_port}"),
            "--durable".into(),
            "/queue/bench-durable".into(),
            "--fsync".into(),
            fsync.into(),
            "--data-dir".into(),
            dir.path().join("data").to_string_lossy().into_owned(),
        ];
        Ok(Self {
            argv,
            child: None,
            port,
            http_port: Some(http_port),
            dir,
            shown: format!(
                "aioq serve started by the bench (--durable /queue/bench-durable, --fsync {fsync})"
            ),
        })
    }

    /// The user's command, through `sh -c`, `{port}`, `{http_port}` and
    /// `{dist_port}` (RabbitMQ's Erlang distribution) replaced by free
    /// ports, the same at every start.
    pub fn command(cmd: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a scratch directory")?;
        let port = free_port()?;
        let http_port = cmd.contains("{http_port}").then(free_port).transpose()?;
        let mut line = cmd.replace("{port}", &port.to_string());
        if line.contains("{dist_port}") {
            line = line.replace("{dist_port}", &free_port()?.to_string());
        }
        if let Some(h) = http_port {
            line = line.replace("{http_port}", &h.to_string());
        }
        Ok(Self {
            argv: vec!["sh".into(), "-c".into(), line],
            child: None,
            port,
            http_port,
            dir,
            shown: format!("started by the bench: {cmd}"),
        })
    }

    /// `text` (a `--target`) with `{port}` replaced.
    pub fn fill(&self, text: &str) -> String {
        text.replace("{port}", &self.port.to_string())
    }

    pub fn metrics(&self) -> Option<MetricsUrl> {
        self.http_port
            .and_then(|h| format!("http://127.0.0.1:{h}/metrics").parse().ok())
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Starts it and waits until its port accepts a connection; how long
    /// that took.
    pub async fn start(&mut self) -> anyhow::Result<Duration> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .context("the broker's log file")?;
        let started = Instant::now();
        let child = tokio::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a SIGKILL reaches every process the
            // command started, not only the shell.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.argv.join(" ")))?;
        self.child = Some(child);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(started.elapsed());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "the broker ended ({status}) before it listened on port {}; its log:\n{}",
                        self.port,
                        self.log_tail()
                    );
                }
            }
            if started.elapsed() > LISTEN_WITHIN {
                bail!(
                    "the broker did not listen on port {} within {LISTEN_WITHIN:?}; its log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL to its whole process group, and waits for it to go.
    pub async fn kill(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Some(pid) = c.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status()
                .await;
        }
        let _ = c.kill().await;
        // The command's other processes die a moment later; until the
        // port refuses, a restart would time an old listener.
        let gone = Instant::now();
        while gone.elapsed() < Duration::from_secs(10)
            && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("a free port")?
        .local_addr()?
        .port())
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}
