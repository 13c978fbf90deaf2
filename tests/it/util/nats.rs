//! A throwaway nats-server with JetStream: a temp store, loopback, a free port;
//! stopped on drop. It can be killed and started again on the same port and
//! store, as an operator restarting it would.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use super::{wait_until, Lines};

pub struct Nats {
    store: tempfile::TempDir,
    pub port: u16,
    /// The HTTP monitoring port (`/subsz`, `/jsz`).
    pub monitor: u16,
    child: Option<Child>,
    pub log: Lines,
}

pub fn find_bin() -> &'static str {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "nats-server"
}

impl Nats {
    pub fn start() -> Nats {
        let store = tempfile::Builder::new()
            .prefix("aioq-nats-")
            .tempdir_in("/tmp")
            .unwrap();
        let free = super::free_port;
        let mut nats = Nats {
            store,
            port: free(),
            monitor: free(),
            child: None,
            log: Lines::default(),
        };
        nats.run();
        nats
    }

    fn run(&mut self) {
        // A fixed, small store: JetStream sets aside each stream's byte limit
        // against it, so the tests see the same room on every machine
        // instead of three quarters of whatever disk the machine has free.
        let conf = self.store.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  max_file_store: 4GB\n  max_memory_store: 1GB\n}}\n",
                self.store.path()
            ),
        )
        .unwrap();
        let mut child = Command::new(find_bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start nats-server ({e}): install it with `apt-get install nats-server`")
            });
        self.log = Lines::follow(child.stderr.take().unwrap());
        self.child = Some(child);
        self.log.wait_for(15.0, "Server is ready");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Subjects with a subscription on the server now.
    pub async fn subjects(&self) -> Vec<String> {
        let (_, v) = super::http(self.monitor, "GET", "/subsz?subs=1&limit=10000", None).await;
        v["subscriptions_list"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["subject"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills the server at once (no lame-duck goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let port = self.port;
        wait_until(10.0, "the NATS port to be free", || {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
    }

    /// Starts the server again, same port, same store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- nats-server log ---\n{}\n---", self.log.text());
        }
    }
}
