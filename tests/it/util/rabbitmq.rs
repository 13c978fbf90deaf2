//! A throwaway rabbitmq-server: its own node name, data and log directories
//! in a temp dir, a free AMQP port and a free distribution port; stopped
//! (with its Erlang VM) on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{wait_until, Lines};

const BIN: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct Rabbit {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    log: Lines,
}

/// Its own directory in /tmp (an Erlang node name must stay short).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("aioq-rabbit-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(dir.path().join("plugins"), "[].\n").unwrap();
    dir
}

/// The environment of a node of its own in `d`. The Erlang cookie lives
/// in $HOME: one of its own, so that runs never share (or fight over) the
/// user's.
fn settings(d: &Path, port: &str, dist: &str) -> Vec<(&'static str, String)> {
    let at = |name: &str| d.join(name).display().to_string();
    vec![
        ("HOME", d.display().to_string()),
        (
            "RABBITMQ_NODENAME",
            format!(
                "aioq{}@localhost",
                d.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace(['-', '.'], "")
            ),
        ),
        ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
        ("RABBITMQ_NODE_PORT", port.into()),
        ("RABBITMQ_DIST_PORT", dist.into()),
        ("RABBITMQ_MNESIA_BASE", at("mnesia")),
        ("RABBITMQ_LOG_BASE", at("log")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", at("plugins")),
        ("RABBITMQ_CONFIG_FILE", at("rabbitmq")),
        ("RABBITMQ_PID_FILE", at("pid")),
    ]
}

/// A node for `aioq bench --broker-cmd`, which starts and kills it: the
/// command line, with `{port}` and `{dist_port}` for the bench to fill.
pub struct RabbitCommand {
    pub line: String,
    dir: tempfile::TempDir,
}

impl RabbitCommand {
    /// The last lines of each log the node wrote, for a failure to show
    /// what the node did (a restarted node that listens but does not yet
    /// serve, or recovers its queues slowly, says so there).
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) else {
            return "(no log directory)".into();
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            out += &format!(
                "--- {} ---\n{}\n",
                entry.path().display(),
                lines[from..].join("\n")
            );
        }
        out
    }
}

impl Drop for RabbitCommand {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

impl Rabbit {
    pub fn command_line() -> RabbitCommand {
        let dir = scratch();
        let env: Vec<String> = settings(dir.path(), "{port}", "{dist_port}")
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        RabbitCommand {
            line: format!("{} {BIN}", env.join(" ")),
            dir,
        }
    }

    pub fn start() -> Rabbit {
        assert!(
            std::path::Path::new(BIN).exists(),
            "no {BIN}: install it with `apt-get install rabbitmq-server`"
        );
        let (port, dist) = (super::free_port(), super::free_port());
        let dir = scratch();
        let mut command = Command::new(BIN);
        for (k, v) in settings(dir.path(), &port.to_string(), &dist.to_string()) {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start rabbitmq-server: {e}"));
        let log = Lines::follow(child.stdout.take().unwrap());
        wait_until(60.0, "RabbitMQ to take connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Rabbit {
            port,
            dir,
            child,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        // The script's child is the Erlang VM: its pid file says which.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- rabbitmq-server log ---\n{}\n---", self.log.text());
        }
    }
}
