//! A throwaway redis-server: loopback, a free port, no persistence; stopped
//! on drop.

use std::process::{Child, Command, Stdio};

use super::Lines;

pub struct Redis {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
    log: Lines,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&["--appendonly", "no"])
    }

    /// With these settings (`--appendonly yes --appendfsync always`), in a
    /// scratch directory of its own.
    pub fn start_with(settings: &[&str]) -> Redis {
        let port = super::free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .args(settings)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start redis-server ({e}): install it with `apt-get install redis-server`")
            });
        let log = Lines::follow(child.stdout.take().unwrap());
        log.wait_for(15.0, "Ready to accept connections");
        Redis {
            port,
            _dir: dir,
            child,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- redis-server log ---\n{}\n---", self.log.text());
        }
    }
}
