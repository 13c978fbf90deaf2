//! Test harness: the real `aioq` binary as a child process, a raw protocol client
//! written from PROTOCOL.md (not from aioq's own codec), and deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_aioq");

/// Fails the test if `fut` does not finish within `secs`.
pub async fn within<T>(secs: f64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs_f64(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Polls `cond` every 10 ms until it holds, failing after `secs`.
/// A port nobody listens on now (bound, read, let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A "broker" that accepts every connection and holds it, reading nothing:
/// its address, and word of each connection it took.
pub fn hole() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let (accepted, connected) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
            let _ = accepted.send(());
        }
    });
    (target, connected)
}

pub fn wait_until(secs: f64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub async fn wait_until_async(secs: f64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `probe` every 20 ms until it gives a value, failing after `secs`
/// with what it last said: for state read over the network (an HTTP API).
pub async fn poll_until<T, F, Fut>(secs: f64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {secs}s: {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects a child's output lines as they come.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Lines {
    pub fn follow(pipe: impl std::io::Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                l.0.lock().unwrap().push(line);
            }
            l.1.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        lines
    }

    /// Waits until the pipe is closed and every line is in: after a child
    /// exits, its last lines may still be on their way.
    pub fn wait_closed(&self, secs: f64) {
        wait_until(secs, "the output pipe to close", || {
            self.1.load(std::sync::atomic::Ordering::SeqCst)
        });
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub async fn wait_for_async(&self, secs: f64, needle: &str) -> String {
        self.wait_for_after(0, secs, needle).await
    }

    /// The first line from line `from` on (a [`len`](Self::len) taken
    /// earlier) that contains `needle`, waited for: a line said again after
    /// some event, not the same line said before it.
    pub async fn wait_for_after(&self, from: usize, secs: f64, needle: &str) -> String {
        let what = format!("output line containing {needle:?}");
        let found = || {
            self.0.lock().unwrap()[from..]
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        };
        wait_until_async(secs, &what, || found().is_some()).await;
        found().unwrap()
    }

    pub fn wait_for(&self, secs: f64, needle: &str) -> String {
        let mut found = String::new();
        wait_until(
            secs,
            &format!("output line containing {needle:?}"),
            || match self.0.lock().unwrap().iter().find(|l| l.contains(needle)) {
                Some(l) => {
                    found = l.clone();
                    true
                }
                None => false,
            },
        );
        found
    }
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -s {sig} {} failed", child.id());
}

pub fn wait_exit(child: &mut Child, secs: f64) -> ExitStatus {
    let mut status = None;
    wait_until(secs, "child process to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// An `aioq serve` process on a free port. Killed on drop; its log is printed
/// when the test panics.
pub struct Broker {
    pub child: Child,
    pub port: u16,
    pub log: Lines,
}

impl Broker {
    pub fn spawn(args: &[&str]) -> Broker {
        Self::spawn_on(0, args)
    }

    pub fn spawn_on(port: u16, args: &[&str]) -> Broker {
        let mut child = Command::new(BIN)
            .args(["serve", "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aioq serve");
        let log = Lines::follow(child.stderr.take().unwrap());
        let out = Lines::follow(child.stdout.take().unwrap());
        let first = out.wait_for(10.0, "listening on");
        let port = first
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("bad first line: {first}"));
        Broker { child, port, log }
    }

    /// The port of `serve --http 127.0.0.1:0`, from its log.
    pub fn monitor_port(&self) -> u16 {
        let line = self.log.wait_for(10.0, "monitoring on http://");
        line.rsplit(':').next().unwrap().trim().parse().unwrap()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then wait for a clean exit; returns the summary log line.
    pub fn terminate(&mut self) -> String {
        signal(&self.child, "TERM");
        let status = wait_exit(&mut self.child, 15.0);
        assert!(
            status.success(),
            "broker exited with {status}\n{}",
            self.log.text()
        );
        self.log.wait_for(5.0, "shutdown complete")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- broker log ---\n{}\n------------------",
                self.log.text()
            );
        }
    }
}

/// Reads `name=value` out of the broker's summary line.
pub fn summary_field(summary: &str, name: &str) -> u64 {
    summary_value(summary, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {summary}"))
}

pub fn summary_value<'a>(summary: &'a str, name: &str) -> Option<&'a str> {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
}

/// Messages a connection was sent, from its "disconnected" log line
/// (`... (in 0 msgs/0 B, out 42 msgs/1234 B, dropped 0)`).
pub fn out_count(line: &str) -> usize {
    line.split("out ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no out count in {line}"))
}

/// Dropped count for one reason (`queue_full`, `slow_consumer`, ...).
pub fn dropped(summary: &str, reason: &str) -> u64 {
    summary_value(summary, "dropped")
        .unwrap_or("0")
        .split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{reason}:")))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

/// Appends one publish (a channel frame and a payload frame) to `wire`, for
/// tests that send many in one write.
pub fn publish_wire(wire: &mut Vec<u8>, channel: &str, payload: &[u8]) {
    wire.extend_from_slice(&(channel.len() as u32).to_be_bytes());
    wire.extend_from_slice(channel.as_bytes());
    wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    wire.extend_from_slice(payload);
}

/// A protocol client written straight from PROTOCOL.md.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// Connects with a tiny receive buffer, so that a client that stops reading
    /// fills up fast.
    pub async fn connect_small_buffer(port: u16) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        Raw { stream }
    }

    /// Connects from source address `from` (any of 127.0.0.0/8): a client
    /// on another host, as far as the broker's per-address limits can tell.
    pub async fn connect_from(port: u16, from: std::net::Ipv4Addr) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((from, 0).into()).unwrap();
        let stream = sock
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// [`subscribe`](Self::subscribe) with a tiny receive buffer: a
    /// subscriber that, left unread, stalls the broker's writes to it fast.
    pub async fn subscribe_small_buffer(port: u16, channel: &str) -> Raw {
        let mut c = Raw::connect_small_buffer(port).await;
        c.frame(channel.as_bytes()).await;
        c
    }

    pub async fn subscribe(port: u16, channel: &str) -> Raw {
        let mut c = Raw::connect(port).await;
        c.frame(channel.as_bytes()).await;
        c
    }

    pub async fn frame(&mut self, payload: &[u8]) {
        let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(payload);
        self.stream.write_all(&buf).await.unwrap();
    }

    pub async fn publish(&mut self, channel: &str, payload: &[u8]) {
        let mut buf = Vec::with_capacity(8 + channel.len() + payload.len());
        publish_wire(&mut buf, channel, payload);
        self.stream.write_all(&buf).await.unwrap();
    }

    /// Next frame; `None` at EOF (or reset) on a frame boundary.
    pub async fn read(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).await.is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(body)
    }

    pub async fn read_text(&mut self) -> String {
        String::from_utf8(self.read().await.expect("a frame, got EOF")).unwrap()
    }

    /// True when the broker closed the connection (EOF or reset), after any
    /// end-of-stream frame.
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.read().await {
                None => return true,
                Some(f) if f.is_empty() => continue,
                Some(_) => return false,
            }
        }
    }

    /// Publishes to `channel` a payload frame that announces 100 bytes and
    /// sends 10: a publisher cut in the middle of a frame.
    pub async fn publish_cut(&mut self, channel: &str) {
        let mut wire = (channel.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(channel.as_bytes());
        wire.extend_from_slice(&100u32.to_be_bytes());
        wire.extend_from_slice(&[b'p'; 10]);
        self.stream.write_all(&wire).await.unwrap();
    }

    pub async fn goodbye(&mut self) {
        self.frame(b"").await;
    }
}

/// Waits until the broker logged `n` subscriptions to `channel`, so that a test
/// publishes only once everyone is in.
pub async fn wait_subscribed(broker: &Broker, channel: &str, n: usize) {
    let needle = format!("subscribed to {channel}");
    wait_until_async(10.0, &format!("{n} subscriber(s) on {channel}"), || {
        broker
            .log
            .snapshot()
            .iter()
            .filter(|l| l.ends_with(&needle))
            .count()
            >= n
    })
    .await;
}

/// A child process killed (and waited for) however the test ends, for one
/// spawned with its own stdio rather than as a [`Proc`].
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Any `aioq` subcommand as a child process, its output followed line by line.
pub struct Proc {
    pub child: Child,
    pub out: Lines,
    pub err: Lines,
}

impl Proc {
    pub fn spawn(args: &[&str], stdin: bool) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Lines::follow(child.stdout.take().unwrap());
        let err = Lines::follow(child.stderr.take().unwrap());
        Proc { child, out, err }
    }

    /// Waits for the process to exit and for all it printed.
    pub fn exit_code(&mut self, secs: f64) -> Option<i32> {
        let status = wait_exit(&mut self.child, secs);
        self.out.wait_closed(5.0);
        self.err.wait_closed(5.0);
        if !status.success() {
            eprintln!("stderr:\n{}", self.err.text());
        }
        status.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {:?} stderr ---\n{}", self.child.id(), self.err.text());
        }
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, JSON body or Null).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, payload) = http_raw(port, &req).await;
    (
        status,
        serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
    )
}

/// One request written as given (headers and all) over a fresh connection:
/// (status, head, body).
pub async fn http_raw(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// `GET path` with only a Host header.
pub async fn http_get(port: u16, path: &str) -> (u16, String, String) {
    http_raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Every subcommand as typed, nested ones included.
pub const SUBCOMMANDS: [&[&str]; 9] = [
    &["serve"],
    &["listen"],
    &["send"],
    &["bench"],
    &["watch-db"],
    &["metrics", "report"],
    &["metrics", "collect"],
    &["completions"],
    &["man"],
];

/// Twenty jobs, every fifth one `bad-N` (the rest `job-N`): what
/// [`work_failing_bad_jobs`] runs.
pub fn twenty_jobs() -> Vec<String> {
    (1..=20)
        .map(|i| format!("{}-{i}", if i % 5 == 0 { "bad" } else { "job" }))
        .collect()
}

/// `aioq work --concurrency 3 --count 28` on `channel` at `port` with a
/// command that exits 3 for a `bad` job and notes every other with its
/// attempt; checks it exits 0 having done each good job of `jobs` once, at
/// its first attempt (with `--max-deliveries 3`: 16 good jobs once, 4 bad
/// ones three times). The finished process, for what it said.
pub fn work_failing_bad_jobs(port: u16, channel: &str, jobs: &[String]) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let script = format!(
        "x=$(cat); case \"$x\" in bad*) exit 3;; esac; echo \"$x $AIOQ_ATTEMPT\" >> {}",
        done.display()
    );
    let port = port.to_string();
    let mut work = Proc::spawn(
        &[
            "work",
            "--port",
            &port,
            "--channel",
            channel,
            "--concurrency",
            "3",
            "--count",
            "28",
            "--",
            "sh",
            "-c",
            &script,
        ],
        false,
    );
    assert_eq!(work.exit_code(30.0), Some(0), "{}", work.err.text());
    let mut lines: Vec<String> = std::fs::read_to_string(&done)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    let mut want: Vec<String> = jobs
        .iter()
        .filter(|j| j.starts_with("job"))
        .map(|j| format!("{j} 1"))
        .collect();
    want.sort();
    assert_eq!(
        lines, want,
        "every good job done once, at its first attempt"
    );
    work
}

pub mod naive;
pub mod nats;
pub mod pg;
pub mod rabbitmq;
pub mod redis;
pub mod v2;

/// A field of /proc/PID/status, in KiB (VmRSS, VmHWM, Threads...).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A series of the broker's `/metrics` whose line starts with `line_start`
/// (a name, with its labels): its value.
pub async fn metric(http: u16, line_start: &str) -> u64 {
    let (_, _, body) = http_get(http, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// Waits until a `/metrics` series (see [`metric`]) satisfies `want`,
/// saying the last value when it never does (a series not shown yet, such
/// as a channel's before it exists, is waited for too).
pub async fn metric_reaches(http: u16, line_start: &str, secs: f64, want: impl Fn(u64) -> bool) {
    poll_until(secs, &format!("{line_start} as wanted"), || async {
        let (_, _, body) = http_get(http, "/metrics").await;
        let v = body
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok());
        match v {
            Some(v) if want(v) => Ok(()),
            Some(v) => Err(format!("{v}")),
            None => Err("not shown".into()),
        }
    })
    .await;
}
