//! A throwaway rabbitmq-server: its own node name, data and log directories
//! in a temp dir, a free AMQP port and a free distribution port; stopped
//! (with its Erlang VM) on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use super::{wait_until, Lines};

const BIN: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct Rabbit {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    log: Lines,
}

impl Rabbit {
    pub fn start() -> Rabbit {
        assert!(
            std::path::Path::new(BIN).exists(),
            "no {BIN}: install it with `apt-get install rabbitmq-server`"
        );
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, dist) = (free(), free());
        let dir = tempfile::Builder::new()
            .prefix("aioq-rabbit-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("plugins"), "[].\n").unwrap();
        // The Erlang cookie lives in $HOME: one of its own, so that runs never
        // share (or fight over) the user's.
        let mut child = Command::new(BIN)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", format!("aioq{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
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
