//! The broker the job scenarios start when no `--target` is given: `aioq
//! serve` as a child process of this binary, on a free port, its `/queue/`
//! channels durable in a scratch directory, its monitoring face on: a
//! process of its own, as a broker is run, and one that can be killed.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::super::meter::MetricsUrl;

pub struct OwnBroker {
    child: tokio::process::Child,
    pub addr: String,
    pub metrics: MetricsUrl,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    /// Starts `aioq serve --durable /queue/bench-durable --fsync FSYNC` and
    /// waits until it listens.
    pub async fn start(fsync: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a scratch data directory")?;
        let exe = std::env::current_exe().context("this program's path")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--port", "0", "--http", "127.0.0.1:0"])
            .args(["--durable", "/queue/bench-durable", "--fsync", fsync])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting aioq serve")?;
        let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
        let started = async {
            let mut addr = None;
            let mut http = None;
            while addr.is_none() || http.is_none() {
                tokio::select! {
                    line = out.next_line(), if addr.is_none() => {
                        match line? {
                            Some(l) => addr = l.strip_prefix("listening on ").map(str::to_owned),
                            None => bail!("aioq serve ended before it listened"),
                        }
                    }
                    line = err.next_line(), if http.is_none() => {
                        match line? {
                            Some(l) => if let Some(i) = l.find("monitoring on http://") {
                                http = Some(l[i + "monitoring on ".len()..].trim().to_owned());
                            },
                            None => bail!("aioq serve ended before it listened"),
                        }
                    }
                }
            }
            anyhow::Ok((addr.unwrap_or_default(), http.unwrap_or_default()))
        };
        let (addr, http) = tokio::time::timeout(Duration::from_secs(10), started)
            .await
            .context("aioq serve did not listen within 10 s")??;
        // Its log goes on being read, so that a full pipe never stops it.
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        Ok(Self {
            child,
            addr,
            metrics: format!("{http}/metrics")
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?,
            _dir: dir,
        })
    }

    /// Stops it. Its data directory goes with it: SIGKILL loses nothing
    /// anybody will read.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
