//! Arbitrary bytes as a whole connection to a running broker, beside a healthy
//! subscriber: the broker never panics (a panic in any task aborts the
//! process here), lets every connection go, holds no bytes afterwards, still
//! delivers to the healthy subscriber, and shuts down cleanly.
//!
//! Each input gets a broker of its own, so that an input's failure is that
//! input's alone and replays the same way by itself (no state is carried from
//! the inputs before it). Deadlines are generous (20 s): they catch a broker
//! that never lets go, not a loaded machine.
//!
//! Every broker listens on the same port. Each input closes three
//! connections, and a closed connection keeps its port in TIME_WAIT for a
//! minute: at a few hundred inputs a second a fresh ephemeral port per
//! listener ran the machine out of them (`Address already in use`, seen after
//! 18,000 inputs). SO_REUSEADDR lets a listener take a port that only closed
//! connections still hold, as a restarted server does.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;

use aioq::broker::{Broker, BrokerConfig, Inspector};

/// How long anything may take before it counts as stuck.
const DEADLINE: Duration = Duration::from_secs(20);

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // A panic in a broker task is caught by tokio; the fuzzer must see it.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The port every input's broker listens on, once the first has one.
static PORT: AtomicU16 = AtomicU16::new(0);

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

/// A listener on the shared port; a new one should something else have
/// taken it while no broker was listening.
fn listen() -> TcpListener {
    let port = PORT.load(Ordering::Relaxed);
    if port != 0 {
        if let Ok(listener) = bind(port) {
            return listener;
        }
    }
    let listener = bind(0).expect("no port to listen on");
    PORT.store(listener.local_addr().unwrap().port(), Ordering::Relaxed);
    listener
}

/// A broker of its own for one input: its port, a view of it, and a way to
/// stop it.
async fn start() -> (
    u16,
    Inspector,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<aioq::broker::stats::Summary>,
) {
    let listener = listen();
    let port = listener.local_addr().unwrap().port();
    let broker = Broker::new(BrokerConfig {
        max_frame: 4096,
        max_channel: 64,
        send_queue: 64,
        // Small enough that inputs fill the registry: an address's share
        // (one worker-less /queue) and eviction for subscriptions are run,
        // beside the healthy subscriber's channel, which must survive both.
        max_channels: 4,
        frame_timeout: Duration::from_millis(200),
        subscribe_timeout: Duration::from_millis(200),
        ..BrokerConfig::default()
    });
    let inspector = broker.inspector();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let run = tokio::spawn(broker.run(listener, async {
        let _ = stopped.await;
    }));
    (port, inspector, stop, run)
}

fn frame(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (port, b, stop, run) = start().await;
        // Subscribed before anything else happens: its own message, published
        // after its subscribe frame, comes back only once it is.
        let mut healthy = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut hello = frame(b"/topic/fuzz");
        hello.extend(frame(b"/topic/fuzz"));
        hello.extend(frame(b"ready"));
        healthy.write_all(&hello).await.unwrap();
        let ready = tokio::time::timeout(DEADLINE, read_frame(&mut healthy)).await;
        assert_eq!(
            ready.expect("not subscribed in time").as_deref(),
            Some(&b"ready"[..])
        );

        let mut hostile = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = hostile.write_all(data).await;
        let _ = hostile.shutdown().await;
        // Whatever it sent, the broker ends the connection (EOF, error,
        // deadline) and the client sees it close.
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, hostile.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the broker kept a finished connection open");
        drop(hostile);

        // The healthy subscriber still gets what it is sent.
        let mut p = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut wire = frame(b"/null");
        wire.extend(frame(b"/topic/fuzz"));
        wire.extend(frame(b"check"));
        wire.extend(frame(b""));
        p.write_all(&wire).await.unwrap();
        loop {
            let got = tokio::time::timeout(DEADLINE, read_frame(&mut healthy))
                .await
                .expect("healthy subscriber starved")
                .expect("healthy subscriber cut off");
            // The hostile bytes may have published to /topic/fuzz too.
            if got == b"check" {
                break;
            }
        }
        let _ = read_frame(&mut p).await;
        drop(p);
        healthy.write_all(&frame(b"")).await.unwrap();
        while let Some(f) = read_frame(&mut healthy).await {
            if f.is_empty() {
                break;
            }
        }
        drop(healthy);

        // Every connection let go, and nothing held but messages waiting in
        // /queue backlogs for workers to come (held for them, not leaked).
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while b.open_connections() != 0 || b.held_bytes() != b.backlog_bytes() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "leak: {} connections open, {} bytes held, {} of them in backlogs",
                b.open_connections(),
                b.held_bytes(),
                b.backlog_bytes()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        // And it stops: what backlogs hold is counted as dropped at shutdown.
        let _ = stop.send(());
        let summary = tokio::time::timeout(DEADLINE, run)
            .await
            .expect("the broker did not shut down")
            .expect("the broker's task failed");
        assert_eq!(b.held_bytes(), 0, "bytes held after shutdown: {summary}");
    });
});
