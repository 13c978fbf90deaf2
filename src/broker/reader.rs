//! One connection's reader: the subscribe handshake, then publish pairs routed
//! until the client says goodbye, breaks the protocol, or the broker stops.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedRead};
use tokio_util::sync::CancellationToken;

use super::access::{Identity, Rules};
use super::conn::Conn;
use super::end::EndReason;
use super::publish::{Later, Publisher, Rights};
use super::read_budget::ReadBudget;
use super::session_v2::{Granted, Next, SessionV2};
use super::stats::ConnStats;
use super::{writer, Registered, Shared, Slot};
use crate::proto::message::{channel_name, ProtocolError, Request, RequestParser};
use crate::proto::v2::{self, ClientHello, ServerHello};
use crate::proto::{FrameCodec, FrameError};

/// Unsent bytes a `/queue` worker's socket may hold. Left alone, loopback
/// autotunes the send buffer to megabytes, and a stalled worker would hoard that
/// much work that other workers could be doing. Capping the send buffer itself
/// (32 KiB was tried) also caps what is in flight: below two of loopback's
/// 64 KiB segments every segment waited for a delayed ACK, and 256 KiB messages
/// crawled at 2 MB/s. This caps only what the peer has not been sent yet.
const QUEUE_WORKER_NOTSENT: u32 = 32 * 1024;

/// Frames a reader takes straight from its read buffer before it looks again
/// whether the broker is stopping or the connection was killed.
const FRAMES_BETWEEN_LOOKS: u32 = 64;

/// The handshake's read buffer: room for a subscribe frame of a usual name.
const HANDSHAKE_BUFFER: usize = 256;

/// At shutdown, how long a reader waits for more of what a client is sending
/// before it takes the input as complete.
const SHUTDOWN_QUIET: std::time::Duration = std::time::Duration::from_millis(50);

/// Slowest a frame in progress may arrive, in bytes per second.
const MIN_FRAME_RATE: u64 = 16 * 1024;

/// A connection's reader: counts the bytes it gave (so the watchdog can tell a
/// frame that moves from one that trickles), and holds its read buffer to the
/// broker's read budget. The first [`FREE_READ_BUFFER`] bytes a connection has
/// buffered are its own; past them, each further chunk is taken from the read
/// budget before it is read, and the socket is not read while the budget is
/// spent (TCP back-pressure): partially received frames cannot take more
/// memory than the budget, however many connections send them.
pub struct Counted<R> {
    inner: R,
    read: u64,
    /// `read`, for the read budget to judge this connection's pace by.
    progress: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of the frames handed on: `read - consumed` is in the read buffer.
    consumed: u64,
    budget: Arc<ReadBudget>,
    conn: Arc<Conn>,
    /// Bytes of the read budget this connection holds.
    charged: usize,
    waiting: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

/// Read buffer a connection may hold outside the read budget: every frame up
/// to this size is read without asking.
pub const FREE_READ_BUFFER: usize = 64 * 1024;

impl<R> Counted<R> {
    fn new(inner: R, budget: Arc<ReadBudget>, conn: Arc<Conn>) -> Self {
        Self {
            inner,
            read: 0,
            progress: Arc::default(),
            consumed: 0,
            budget,
            conn,
            charged: 0,
            waiting: None,
        }
    }

    fn count_read(&mut self, n: usize) {
        self.read += n as u64;
        if self.charged > 0 {
            self.progress.store(self.read, Relaxed);
        }
    }

    /// A frame of `len` payload bytes left the read buffer.
    pub fn frame_done(&mut self, len: usize) {
        self.consumed += (crate::proto::LEN_PREFIX + len) as u64;
        self.settle();
    }

    /// Waiting for read budget: the socket is not being read, on purpose.
    pub fn held_back(&self) -> bool {
        self.waiting.is_some()
    }

    fn buffered(&self) -> usize {
        self.read.saturating_sub(self.consumed) as usize
    }

    /// Gives back what the buffer no longer needs.
    fn settle(&mut self) {
        let need = self.buffered().saturating_sub(FREE_READ_BUFFER);
        if self.charged > need {
            self.budget.budget.give_back(self.charged - need);
            self.charged = need;
            if need == 0 {
                self.budget.release(self.conn.id);
            }
        }
    }
}

impl<R> Drop for Counted<R> {
    fn drop(&mut self) {
        if self.charged > 0 {
            self.budget.budget.give_back(self.charged);
            self.budget.release(self.conn.id);
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        self.settle();
        let free = (FREE_READ_BUFFER + self.charged).saturating_sub(self.buffered());
        let mut allowed = buf.remaining().min(free);
        if allowed == 0 {
            let step = buf.remaining().min(FREE_READ_BUFFER);
            loop {
                if let Some(wait) = self.waiting.as_mut() {
                    if wait.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.waiting = None;
                }
                if self.budget.budget.try_take(step) {
                    if self.charged == 0 {
                        self.progress.store(self.read, Relaxed);
                        self.budget.hold(&self.conn, &self.progress);
                    }
                    self.charged += step;
                    allowed = step;
                    break;
                }
                let budget = self.budget.clone();
                let me = self.conn.id;
                self.waiting = Some(Box::pin(async move { budget.room_for(step, me).await }));
            }
        }
        if allowed == buf.remaining() {
            let before = buf.filled().len();
            let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
            let n = buf.filled().len() - before;
            self.count_read(n);
            return r;
        }
        // Fewer bytes than `buf` has room for: through a buffer of that size
        // (a copy, only while a large frame is being received).
        let mut chunk = vec![0u8; allowed];
        let mut limited = tokio::io::ReadBuf::new(&mut chunk);
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.put_slice(&chunk[..n]);
        self.count_read(n);
        r
    }
}

/// Closes a connection over the limit with an end-of-stream frame, so the client
/// knows it was turned away on purpose. A TLS port just closes: spending a
/// handshake on a connection that is refused anyway would be a gift to a flood.
pub async fn refuse(mut stream: TcpStream, tls: bool) {
    if !tls {
        let _ = stream.write_all(&0u32.to_be_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

/// End-of-stream and close, for a subscription refused after the handshake;
/// a peer that reads nothing cannot hold the connection past --write-timeout.
async fn say_refused<W: AsyncWrite + Unpin>(shared: &Shared, w: &mut W) {
    let eos = async {
        w.write_all(&0u32.to_be_bytes()).await?;
        w.shutdown().await
    };
    let _ = tokio::time::timeout(shared.config.write_timeout, eos).await;
}

fn configure(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    if let Some(idle) = shared.config.keepalive {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle / 3)
            .with_retries(3);
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
    }
}

/// Waiting until a reader has bytes for us without holding a buffer for them:
/// an idle connection then holds no read buffer at all.
pub trait WaitData {
    /// Whether [`wait_data`](Self::wait_data) waits: false where it cannot
    /// (the reader then keeps its buffer).
    const WAITS: bool = true;
    /// Returns once bytes (or the end of the stream, or an error) are there
    /// to be read.
    fn wait_data(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

impl WaitData for tokio::net::tcp::OwnedReadHalf {
    async fn wait_data(&mut self) {
        // A one-byte peek waits for data the way a read would, consumes
        // nothing, and needs no heap buffer.
        let mut byte = [0u8; 1];
        let _ = self.peek(&mut byte).await;
    }
}

impl WaitData for tokio::io::ReadHalf<TlsStream> {
    // TLS keeps its own buffers in rustls; there is no socket to peek past
    // them, so a TLS reader keeps its read buffer too.
    const WAITS: bool = false;
    async fn wait_data(&mut self) {}
}

impl<R: AsyncRead + WaitData + Send> WaitData for tokio::io::Chain<std::io::Cursor<Bytes>, R> {
    const WAITS: bool = R::WAITS;
    async fn wait_data(&mut self) {
        let (first, rest) = self.get_mut();
        if (first.position() as usize) < first.get_ref().len() {
            return;
        }
        rest.wait_data().await
    }
}

impl<R: WaitData + Send> WaitData for Counted<R> {
    const WAITS: bool = R::WAITS;
    async fn wait_data(&mut self) {
        self.inner.wait_data().await
    }
}

/// Read buffer a connection takes when bytes arrive.
const READ_BUFFER: usize = 8 * 1024;

/// The next frame, holding no read buffer while the connection is idle: when
/// nothing is buffered and nothing is on the socket, the buffer is given back
/// and taken again once bytes arrive. A busy connection never lets go of it.
async fn next_frame<R: AsyncRead + WaitData + Unpin + Send>(
    frames: &mut FramedRead<Counted<R>, FrameCodec>,
) -> Option<Result<Bytes, FrameError>> {
    loop {
        if !R::WAITS || !frames.read_buffer().is_empty() {
            return frames.next().await;
        }
        // Polled once: a frame that is there is read at once.
        if let Some(frame) = frames.next().now_or_never() {
            return frame;
        }
        if !frames.read_buffer().is_empty() {
            // Part of a frame came: its buffer stays while the rest comes.
            return frames.next().await;
        }
        *frames.read_buffer_mut() = bytes::BytesMut::new();
        frames.get_mut().wait_data().await;
        // A fresh buffer, not a reserve on the empty one: a BytesMut
        // remembers the capacity it was made with, and grows in steps of it
        // (from an empty one, reads of a few bytes at a time).
        *frames.read_buffer_mut() = bytes::BytesMut::with_capacity(READ_BUFFER);
    }
}

/// A connection's byte stream: plain TCP, or TLS over it. Split into a reader
/// and a writer once the client has subscribed.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Reader: AsyncRead + WaitData + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;
    fn tcp(&self) -> &TcpStream;
    fn split(self) -> (Self::Reader, Self::Writer);
    /// The client certificate's identity, when it presented one.
    fn identity(&self) -> Option<Identity> {
        None
    }
    fn is_tls(&self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

impl Transport for TlsStream {
    type Reader = tokio::io::ReadHalf<TlsStream>;
    type Writer = tokio::io::WriteHalf<TlsStream>;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }

    fn identity(&self) -> Option<Identity> {
        let certs = self.get_ref().1.peer_certificates()?;
        Identity::from_der(certs.first()?)
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Serves one admitted connection; `slot` is its place under the connection
/// limits, held by the reader here and by the writer until both are done.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, slot: Arc<Slot>) {
    configure(&stream, &shared);
    // One deadline for the TLS handshake and the subscribe frame together: a
    // peer that starts either and goes quiet holds a slot no longer than a
    // silent one.
    let deadline = tokio::time::Instant::now() + shared.config.subscribe_timeout;
    match shared.tls.clone() {
        None => serve_on(&shared, stream, peer, slot, deadline).await,
        Some(acceptor) => {
            let accepted = tokio::select! {
                _ = shared.phases.stop_reading.cancelled() => None,
                r = tokio::time::timeout_at(deadline, Box::pin(acceptor.accept(stream))) => Some(r),
            };
            match accepted {
                // Boxed: a plain connection's task does not carry the
                // larger state of a TLS one.
                Some(Ok(Ok(tls))) => Box::pin(serve_on(&shared, tls, peer, slot, deadline)).await,
                Some(Ok(Err(e))) => {
                    // A refusal (no certificate, or a stranger's), said as one
                    // and counted as one.
                    shared.stats.refused.fetch_add(1, Relaxed);
                    let new = shared.tls_reasons.first(&e.to_string());
                    match shared.refused_log.due(peer.ip()) {
                        Some(n) => tracing::warn!(
                            "Remote {peer} refused: TLS handshake failed: {e} ({n} from this \
                             address since the last line)"
                        ),
                        None if new => tracing::warn!(
                            "Remote {peer} refused: TLS handshake failed: {e} (a reason not \
                             said before; counted in this address's next line)"
                        ),
                        None => {}
                    }
                }
                Some(Err(_)) => tracing::info!(
                    "Remote {peer} closed: no TLS handshake within {:?}",
                    shared.config.subscribe_timeout
                ),
                None => {}
            }
        }
    }
}

async fn serve_on<T: Transport>(
    shared: &Arc<Shared>,
    stream: T,
    peer: SocketAddr,
    slot: Arc<Slot>,
    deadline: tokio::time::Instant,
) {
    // Admitted in a function of its own: what only the handshake needs (the
    // channel name is a slice of the handshake's read buffer) is not kept in
    // the connection's task for its whole life.
    let Some(admitted) = admit(shared, stream, peer, slot, deadline).await else {
        return;
    };
    let Admitted {
        mut frames,
        conn,
        finish,
        null,
        rights,
        session,
    } = admitted;
    // A publish-only client is owed nothing: at shutdown it can be told at once,
    // so that it stops sending while what it sent is still read.
    let early_eos = null.then_some(&finish);
    let end = read_loop(shared, &mut frames, &conn, early_eos, rights, session).await;
    match end {
        End::Finish(reason) => {
            conn.set_end_reason(reason);
            finish.cancel();
        }
        End::Close(reason) => {
            conn.set_end_reason(reason);
            conn.kill.cancel();
        }
        End::Stop => {}
    }
}

/// A reader with the bytes that came with the handshake in front of it.
type Early<R> = tokio::io::Chain<std::io::Cursor<Bytes>, R>;

/// A connection that subscribed (or will only publish), its writer started.
struct Admitted<R> {
    frames: FramedRead<Counted<R>, FrameCodec>,
    conn: Arc<Conn>,
    /// Cancelled to have the writer finish: what is owed, then end-of-stream.
    finish: CancellationToken,
    /// A publish-only client.
    null: bool,
    rights: Rights,
    /// How it speaks after the handshake.
    session: Session,
}

/// How a connection's frames are read after its first: version 1's pairs, or
/// version 2's typed frames.
enum Session {
    V1(RequestParser),
    V2(Box<SessionV2>),
}

impl Session {
    /// A request is partly received (a channel frame without its payload).
    fn mid_request(&self) -> bool {
        match self {
            Session::V1(parser) => parser.mid_pair(),
            Session::V2(_) => false,
        }
    }
}

/// What a connection's first frame (or frames) said.
enum First {
    /// A version 1 subscribe (or the null channel).
    Channel(Bytes),
    /// A version 2 hello, whole.
    Hello(ClientHello),
}

/// The subscribe frame, the access rules, the connection and its writer;
/// `None` when the connection was refused or closed.
async fn admit<T: Transport>(
    shared: &Arc<Shared>,
    stream: T,
    peer: SocketAddr,
    slot: Arc<Slot>,
    deadline: tokio::time::Instant,
) -> Option<Admitted<Early<T::Reader>>> {
    // The subscribe frame is a channel name: read with that limit, so nobody
    // makes the broker buffer a whole --max-frame before subscribing; and into
    // a buffer sized for one, which is all most connections ever send.
    let mut framed = Framed::with_capacity(
        stream,
        FrameCodec::new(shared.config.max_channel),
        HANDSHAKE_BUFFER,
    );
    let name = match handshake(shared, &mut framed, peer, deadline).await? {
        First::Channel(name) => name,
        First::Hello(hello) => {
            return Box::pin(admit_v2(shared, framed, peer, slot, hello)).await;
        }
    };
    let identity = framed.get_ref().identity();
    let tls = framed.get_ref().is_tls();
    // Read before the policy: a reload in between is then seen at once.
    let generation = shared.router.generation();
    let policy = shared.router.policy();
    let rules = policy.access.rules_for(identity.as_ref());
    // Names under /$aioq/ are the protocol's own (a hello is read above).
    let allowed = rules.as_ref().is_some_and(|r| r.may_subscribe(&name)) && !v2::is_reserved(&name);
    if !allowed {
        shared.stats.denied.fetch_add(1, Relaxed);
        if let Some(n) = shared.denied_log.due(peer.ip()) {
            let who = identity
                .as_ref()
                .map_or_else(|| "no client certificate".to_string(), |i| i.shown());
            let why = if rules.is_none() {
                "connections without a client certificate are refused".to_string()
            } else {
                format!("may not subscribe to {}", crate::proto::shown(&name))
            };
            tracing::warn!(
                "Remote {peer} ({who}) refused: {why} ({n} from this address since the last line)"
            );
        }
        say_refused(shared, framed.get_mut()).await;
        return None;
    }
    let channel_policy = policy.for_channel(&name);
    if crate::proto::is_queue(&name) {
        let _ = socket2::SockRef::from(framed.get_ref().tcp())
            .set_tcp_notsent_lowat(QUEUE_WORKER_NOTSENT);
    }
    let (rd, wr) = split_after_handshake(framed);
    let (capacity, max_bytes) = channel_policy.send_bounds(&name);
    let (conn, rx) = new_conn(shared, peer, capacity, max_bytes, false);
    // A publish-only client (the null channel) subscribes to nothing.
    let null = crate::proto::is_null(&name);
    let sub = if null {
        None
    } else {
        match shared.router.subscribe(name.clone(), &conn) {
            Ok(sub) => Some(sub),
            Err(_) => {
                // Told with end-of-stream, like a refusal at the connection limit.
                shared.stats.refused.fetch_add(1, Relaxed);
                shared.router.channel_limit_reached();
                tracing::debug!("Remote {peer} refused: --max-channels reached");
                let mut wr = wr;
                say_refused(shared, &mut wr).await;
                return None;
            }
        }
    };
    tracing::info!("Remote {peer} subscribed to {}", crate::proto::shown(&name));
    let rights = Rights::new(
        identity.clone(),
        rules.unwrap_or_else(Rules::allow_all),
        generation,
        peer,
    );
    Some(start(
        shared,
        slot,
        Start {
            rd,
            wr,
            conn,
            rx,
            sub,
            identity,
            tls,
            rights,
            null,
            session: Session::V1(RequestParser::new(shared.config.max_channel)),
        },
    ))
}

/// The reading half of a connection after its handshake, with the bytes
/// the client sent right after its first frames in front of it (they are
/// in the handshake's read buffer, and go on to the reader with the codec:
/// a FramedRead given a filled buffer would still wait for the socket
/// before decoding it). Copied out, so that the handshake's buffer is not
/// kept for the connection's life (nothing to copy, and no allocation, for
/// most); and its writing half.
fn split_after_handshake<T: Transport>(
    framed: Framed<T, FrameCodec>,
) -> (Early<T::Reader>, T::Writer) {
    let parts = framed.into_parts();
    let (rd, wr) = parts.io.split();
    let early = Bytes::copy_from_slice(&parts.read_buf);
    // Given back now, not when the caller ends with the connection.
    drop((parts.read_buf, parts.write_buf));
    (
        tokio::io::AsyncReadExt::chain(std::io::Cursor::new(early), rd),
        wr,
    )
}

/// A new connection's state and the receiving end of its send queue.
fn new_conn(
    shared: &Shared,
    peer: SocketAddr,
    capacity: usize,
    max_bytes: usize,
    v2: bool,
) -> (Arc<Conn>, super::send_queue::Receiver<super::delivery::Out>) {
    let (tx, rx) = super::send_queue::counted(capacity, shared.router.budget.clone());
    let conn = Conn::new(
        shared.next_id.fetch_add(1, Relaxed),
        peer,
        tx,
        max_bytes,
        shared.router.budget.clone(),
        Arc::new(ConnStats::default()),
        shared.phases.abort.child_token(),
    );
    let conn = if v2 { conn.speaking_v2() } else { conn };
    (Arc::new(conn), rx)
}

/// What an admitted connection starts with.
struct Start<R, W> {
    rd: Early<R>,
    wr: W,
    conn: Arc<Conn>,
    rx: super::send_queue::Receiver<super::delivery::Out>,
    sub: Option<Arc<super::subscription::Subscription>>,
    identity: Option<Identity>,
    tls: bool,
    rights: Rights,
    null: bool,
    session: Session,
}

/// Registers an admitted connection (for monitoring and reloads), starts
/// its writer, and hands the reader what its read loop needs.
fn start<R, W>(shared: &Arc<Shared>, slot: Arc<Slot>, s: Start<R, W>) -> Admitted<Early<R>>
where
    R: AsyncRead + WaitData + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let rd = Counted::new(s.rd, shared.reading.clone(), s.conn.clone());
    let frames =
        FramedRead::with_capacity(rd, FrameCodec::new(shared.config.max_frame), READ_BUFFER);
    let finish = CancellationToken::new();
    slot.register(Registered {
        conn: s.conn.clone(),
        sub: s.sub,
        since: std::time::SystemTime::now(),
        identity: s.identity,
        tls: s.tls,
        finish: finish.clone(),
    });
    shared.phases.writers.spawn(writer::run(
        shared.clone(),
        s.wr,
        s.rx,
        s.conn.clone(),
        finish.clone(),
        slot,
    ));
    Admitted {
        frames,
        conn: s.conn,
        finish,
        null: s.null,
        rights: s.rights,
        session: s.session,
    }
}

/// A version 2 hello was read: the broker's `HELLO`, then a connection that
/// holds no subscription until it asks for some.
async fn admit_v2<T: Transport>(
    shared: &Arc<Shared>,
    mut framed: Framed<T, FrameCodec>,
    peer: SocketAddr,
    slot: Arc<Slot>,
    hello: ClientHello,
) -> Option<Admitted<Early<T::Reader>>> {
    let identity = framed.get_ref().identity();
    let tls = framed.get_ref().is_tls();
    let generation = shared.router.generation();
    let policy = shared.router.policy();
    let Some(rules) = policy.access.rules_for(identity.as_ref()) else {
        shared.stats.denied.fetch_add(1, Relaxed);
        if let Some(n) = shared.denied_log.due(peer.ip()) {
            tracing::warn!(
                "Remote {peer} (no client certificate) refused: connections without a client \
                 certificate are refused ({n} from this address since the last line)"
            );
        }
        say_refused(shared, framed.get_mut()).await;
        return None;
    };
    let granted = Granted {
        confirms: hello.wants(v2::feature::CONFIRMS),
        loss: hello.wants(v2::feature::LOSS),
        headers: hello.wants(v2::feature::HEADERS),
        acks: hello.wants(v2::feature::ACKS),
    };
    let (capacity, max_bytes) = policy.for_channel(b"").send_bounds(b"");
    let mut features = Vec::new();
    if granted.confirms {
        features.push(v2::feature::CONFIRMS.to_string());
    }
    if granted.loss {
        features.push(v2::feature::LOSS.to_string());
    }
    if granted.headers {
        features.push(v2::feature::HEADERS.to_string());
    }
    if granted.acks {
        features.push(v2::feature::ACKS.to_string());
    }
    let answer = ServerHello {
        protocol: 2,
        server: concat!("aioq/", env!("CARGO_PKG_VERSION")).to_string(),
        server_id: shared.server_id.clone(),
        features,
        max_frame: shared.config.max_frame as u64,
        max_channel: shared.config.max_channel as u64,
        max_subscriptions: shared.config.max_subscriptions as u64,
        max_credit: u64::from(shared.config.max_credit),
        send_queue: capacity as u64,
        max_headers: v2::HeaderLimits::default().max_headers as u64,
        max_header_bytes: v2::HeaderLimits::default().max_bytes as u64,
    };
    let sent =
        tokio::time::timeout(shared.config.write_timeout, framed.send(answer.encode())).await;
    if !matches!(sent, Ok(Ok(()))) {
        return None;
    }
    shared.stats.v2_connections.fetch_add(1, Relaxed);
    let (rd, wr) = split_after_handshake(framed);
    let (conn, rx) = new_conn(shared, peer, capacity, max_bytes, true);
    if let Some(v2) = &conn.v2 {
        v2.headers.store(granted.headers, Relaxed);
    }
    tracing::info!(
        "Remote {peer} speaks protocol 2 ({})",
        hello.client.as_deref().map_or_else(
            || "a client that gave no name".to_string(),
            |c| { format!("client {}", crate::proto::shown(c.as_bytes())) }
        )
    );
    let rights = Rights::new(identity.clone(), rules, generation, peer);
    Some(start(
        shared,
        slot,
        Start {
            rd,
            wr,
            conn,
            rx,
            sub: None,
            identity,
            tls,
            rights,
            null: false,
            session: Session::V2(Box::new(SessionV2::new(
                granted,
                shared.config.max_subscriptions,
            ))),
        },
    ))
}

/// Reads the subscribe frame (or a version 2 hello's three) within the
/// deadline; `None` closes the connection.
async fn handshake<T: Transport>(
    shared: &Shared,
    frames: &mut Framed<T, FrameCodec>,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<First> {
    let first = tokio::select! {
        _ = shared.phases.stop_reading.cancelled() => return None,
        r = tokio::time::timeout_at(deadline, frames.next()) => r,
    };
    let frame = match first {
        Err(_) => {
            tracing::info!(
                "Remote {peer} closed: no subscribe frame within {:?}",
                shared.config.subscribe_timeout
            );
            return None;
        }
        Ok(None) => {
            tracing::debug!("Remote {peer} disconnected before subscribing");
            return None;
        }
        Ok(Some(Err(FrameError::TooLarge { announced, .. })))
            if crate::proto::looks_like_tls(announced) =>
        {
            protocol_error(shared, peer, "it speaks TLS, and this port does not");
            // An end-of-stream is not a TLS record: the client's TLS library
            // reports a corrupt message, not an end of file that would look
            // like a refusal.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), frames.send(Bytes::new()))
                    .await;
            return None;
        }
        // Read with the name limit: too long a frame is too long a name.
        Ok(Some(Err(FrameError::TooLarge { announced, max }))) => {
            let e = ProtocolError::ChannelTooLong {
                len: announced as usize,
                max,
            };
            protocol_error(shared, peer, &e.to_string());
            return None;
        }
        Ok(Some(Err(e))) => {
            protocol_error(shared, peer, &e.to_string());
            return None;
        }
        Ok(Some(Ok(frame))) => frame,
    };
    match channel_name(frame, shared.config.max_channel) {
        // Boxed: a v1 connection's task does not carry the hello's reads.
        Ok(Some(name)) if v2::is_hello(&name) => {
            Box::pin(hello(shared, frames, peer, deadline, name)).await
        }
        Ok(Some(name)) => Some(First::Channel(name)),
        Ok(None) => {
            tracing::debug!("Remote {peer} said goodbye before subscribing");
            None
        }
        Err(e) => {
            protocol_error(shared, peer, &e.to_string());
            None
        }
    }
}

/// Reads the rest of a version 2 hello (frame 1, `name`, was read); on a
/// malformed one, says `ERROR` and closes.
async fn hello<T: Transport>(
    shared: &Shared,
    frames: &mut Framed<T, FrameCodec>,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    name: Bytes,
) -> Option<First> {
    // Between frames: the codec can be swapped for one that takes the
    // client's hello, which may be longer than a channel name.
    *frames.codec_mut() = FrameCodec::new(shared.config.max_channel.max(v2::MAX_HELLO));
    let mut next = async || {
        tokio::select! {
            _ = shared.phases.stop_reading.cancelled() => None,
            r = tokio::time::timeout_at(deadline, frames.next()) => match r {
                Ok(Some(Ok(f))) => Some(Ok(f)),
                Ok(Some(Err(FrameError::TooLarge { .. }))) => {
                    Some(Err("the client's hello is longer than 4096 bytes"))
                }
                Ok(None | Some(Err(_))) => None,
                Err(_) => Some(Err("the hello was not complete within --subscribe-timeout")),
            },
        }
    };
    let second = match next().await? {
        Ok(f) if f == name => Ok(()),
        Ok(_) => Err("the hello's second frame is not its first again"),
        Err(e) => Err(e),
    };
    let parsed = match second {
        Ok(()) => match next().await? {
            Ok(json) => ClientHello::parse(&json),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let why = match parsed {
        Ok(h) if h.protocol >= 2 => return Some(First::Hello(h)),
        Ok(_) => "the hello asks for a protocol below 2",
        Err(e) => e,
    };
    protocol_error(shared, peer, why);
    let error = v2::encode::error(v2::error::BAD_HELLO, why);
    let _ = tokio::time::timeout(shared.config.write_timeout, frames.send(error)).await;
    None
}

fn protocol_error(shared: &Shared, peer: SocketAddr, why: &str) {
    shared.stats.protocol_errors.fetch_add(1, Relaxed);
    if let Some(n) = shared.protocol_log.due(peer.ip()) {
        tracing::warn!(
            "Remote {peer} disconnected for breaking the protocol: {why} ({n} from this \
             address since the last line)"
        );
    }
}

enum End {
    /// Flush what the client is owed, then close (goodbye, or the client closed).
    Finish(EndReason),
    /// Close at once.
    Close(EndReason),
    /// The broker is shutting down, or the connection was already killed.
    Stop,
}

async fn read_loop<R: AsyncRead + WaitData + Unpin + Send>(
    shared: &Shared,
    frames: &mut FramedRead<Counted<R>, FrameCodec>,
    conn: &Arc<Conn>,
    early_eos: Option<&CancellationToken>,
    rights: Rights,
    mut session: Session,
) -> End {
    let mut publisher = Publisher::new(
        &shared.router,
        shared.links(),
        &shared.phases.stop_reading,
        Some(conn),
    )
    .with_rights(rights);
    let mut end = read_frames(
        shared,
        frames,
        conn,
        &mut publisher,
        early_eos,
        &mut session,
    )
    .await;
    publisher.flush_counts();
    // What is held waits for room before the connection is done: an
    // end-of-stream says all of it was routed.
    if publisher.held_blocked()
        && Box::pin(publisher.wait_held()).await.is_err()
        && matches!(end, End::Finish(_))
    {
        end = cut_short(shared, conn);
    }
    // Boxed: the cluster's settling (JetStream futures, several KiB) would
    // otherwise be part of every connection's task, clustered or not,
    // for the whole life of the connection.
    Box::pin(publisher.settle(&shared.phases.abort)).await;
    if let Session::V2(v2) = &mut session {
        // Every confirm id read is answered before end-of-stream.
        Box::pin(v2.answer(conn, &mut publisher, shared)).await;
    }
    end
}

/// Handles one frame (or the end of input) of either version; `Some` ends
/// the connection. A macro, not a function: each version's step is
/// synchronous for what nearly every frame needs, and only the rest (a
/// publish that waits, a refusal said, a ping answered) is a future, boxed,
/// so that no future is built and moved into place per message.
macro_rules! step {
    ($shared:expr, $conn:expr, $publisher:expr, $session:expr, $frame:expr) => {
        match $session {
            Session::V1(parser) => match step_v1($shared, $conn, $publisher, parser, $frame) {
                Ok(end) => end,
                Err(later) => Box::pin(finish_v1($shared, $conn, $publisher, later)).await,
            },
            Session::V2(v2) => match step_v2($shared, $conn, $publisher, v2, $frame) {
                Ok(end) => end,
                Err(rest) => Box::pin(finish_v2($shared, $conn, $publisher, v2, rest)).await,
            },
        }
    };
}

async fn read_frames<R: AsyncRead + WaitData + Unpin + Send>(
    shared: &Shared,
    frames: &mut FramedRead<Counted<R>, FrameCodec>,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    early_eos: Option<&CancellationToken>,
    session: &mut Session,
) -> End {
    // Created once: a fresh `cancelled()` per frame registers and deregisters a
    // waiter (two lock round trips) for every message read.
    let stop = shared.phases.stop_reading.cancelled();
    let killed = conn.kill.cancelled();
    // Checks for a frame left half-sent. Polled only when no frame is ready, so
    // a busy connection never touches the timer.
    let frame_timeout = shared.config.frame_timeout;
    let mut watchdog =
        tokio::time::interval_at(tokio::time::Instant::now() + frame_timeout, frame_timeout);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A frame in progress must move at MIN_FRAME_RATE: one byte now and then
    // would otherwise hold a --max-frame buffer for ever.
    let min_progress = (MIN_FRAME_RATE as f64 * frame_timeout.as_secs_f64()) as u64;
    let mut frames_read = 0u64;
    // (frames read, bytes read) at the last tick that found a frame in
    // progress: the next tick judges the progress over one whole interval.
    let mut last_check: Option<(u64, u64)> = None;
    // Set once the broker is shutting down: what the client already sent is
    // still read and routed, so that an end-of-stream confirms all of it.
    let mut stopping = false;
    // Frames taken from the read buffer since the select below last ran.
    let mut unlooked = 0u32;
    // The channel of the publisher's last publish, for publishes read in place.
    let mut same: Option<Arc<super::router::Channel>> = None;
    tokio::pin!(stop, killed);
    loop {
        if stopping {
            if let Some(end) = before_waiting(
                shared,
                conn,
                !frames.read_buffer().is_empty(),
                publisher,
                session,
            )
            .await
            {
                return end;
            }
            let partial = in_progress(frames, session);
            let frame = tokio::select! {
                biased;
                _ = &mut killed => return End::Stop,
                _ = shared.phases.cut_reading.cancelled() => return End::Close(EndReason::InputCut),
                f = frames.next() => f,
                // Nothing more is coming: what was sent is routed. A frame
                // left half-sent was not, so that client gets no end-of-stream.
                _ = tokio::time::sleep(SHUTDOWN_QUIET) => return if partial {
                    End::Close(EndReason::InputCut)
                } else {
                    End::Stop
                },
            };
            if let Some(Ok(f)) = &frame {
                frames.get_mut().frame_done(f.len());
            }
            match step!(shared, conn, publisher, session, frame) {
                Some(end) => return end,
                None => continue,
            }
        }
        // A protocol 1 publish to the channel of the one before, whole in the
        // read buffer: its name is checked where it lies, never cut out (a
        // cut and its drop are two atomic operations on the read buffer's
        // count, a tenth of a `/queue` flood's broker CPU with the payload's).
        if unlooked < FRAMES_BETWEEN_LOOKS && matches!(session, Session::V1(_)) {
            // Taken again only when it changed: a count of the channel's
            // own per message would be one more atomic operation each.
            if !same.as_ref().is_some_and(|c| publisher.is_last_channel(c)) {
                same = publisher.last_channel();
            }
            if let Some(step) = step_in_place(shared, conn, publisher, frames, session, &same) {
                unlooked += 2;
                frames_read += 2;
                let end = match step {
                    Ok(end) => end,
                    Err(later) => Box::pin(finish_v1(shared, conn, publisher, later)).await,
                };
                if let Some(end) = end {
                    return end;
                }
                continue;
            }
        }
        // A frame already in the read buffer is taken without the select:
        // polling the two cancellation futures costs four lock round trips,
        // more than routing a small message. Every FRAMES_BETWEEN_LOOKS
        // frames the select runs anyway, so a flood cannot hide a stop or a kill.
        let buffered = if unlooked < FRAMES_BETWEEN_LOOKS && !frames.read_buffer().is_empty() {
            match whole_frame(frames) {
                Some(frame) => Some(Some(Ok(frame))),
                None => frames.next().now_or_never(),
            }
        } else {
            None
        };
        let frame = if let Some(frame) = buffered {
            unlooked += 1;
            frame
        } else {
            unlooked = 0;
            if let Some(end) = before_waiting(
                shared,
                conn,
                !frames.read_buffer().is_empty(),
                publisher,
                session,
            )
            .await
            {
                return end;
            }
            // A durable publish's confirm is sent once the store has it,
            // while the reader reads on: boxed, and only when one waits,
            // so that no other connection's task carries it.
            let mut stored = match session {
                Session::V2(v2) => v2
                    .stored_wait()
                    .zip(shared.router.disk())
                    .map(|((upto, sync), disk)| Box::pin(disk.wait_confirmed(upto, sync))),
                Session::V1(_) => None,
            };
            tokio::select! {
            biased;
            _ = &mut stop => {
                stopping = true;
                // Between frames, nothing routed waits for this client: the
                // end-of-stream goes now, a well-behaved client stops sending,
                // and what it sent until then arrives and is read below.
                let partial = in_progress(frames, session);
                if let (Some(eos), false) = (early_eos, partial) {
                    eos.cancel();
                }
                continue;
            }
            _ = &mut killed => return End::Stop,
            // Confirmed: said before more is read (the loop's next turn).
            _ = async { match stored.as_mut() {
                Some(w) => w.await,
                None => std::future::pending().await,
            } } => continue,
            f = next_frame(frames) => f,
            _ = watchdog.tick() => {
                let partial = in_progress(frames, session);
                // Held back by the read budget, the frame cannot move: that
                // is the broker's doing, not the client's.
                if !partial || frames.get_ref().held_back() {
                    last_check = None;
                    continue;
                }
                let now = (frames_read, frames.get_ref().read);
                if let Some((frames_then, read_then)) = last_check {
                    if frames_then == now.0 {
                        let arrived = now.1 - read_then;
                        if arrived == 0 {
                            return End::Close(EndReason::HalfFrame(frame_timeout));
                        }
                        if arrived < min_progress {
                            return End::Close(EndReason::FrameTooSlow {
                                bytes: arrived,
                                within: frame_timeout,
                            });
                        }
                    }
                }
                last_check = Some(now);
                continue;
            }
            }
        };
        frames_read += 1;
        if let Some(Ok(f)) = &frame {
            frames.get_mut().frame_done(f.len());
        }
        if let Some(end) = step!(shared, conn, publisher, session, frame) {
            return end;
        }
    }
}

/// The next frame, when the read buffer holds all of it and the codec is
/// between frames: cut straight from the buffer. Through the stream it
/// would cost a poll of the framed reader and the general length codec's
/// decode, a fifth of a `/queue` publish's broker CPU in a profile. `None`
/// leaves the rest (a partial frame, an oversized one) to the codec.
#[inline]
fn whole_frame<R>(frames: &mut FramedRead<R, FrameCodec>) -> Option<Bytes> {
    if frames.decoder().mid_frame() {
        return None;
    }
    let max = frames.decoder().max_frame();
    let buf = frames.read_buffer_mut();
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    if len > max || buf.len() - 4 < len {
        return None;
    }
    bytes::Buf::advance(buf, 4);
    Some(buf.split_to(len).freeze())
}

/// A protocol 1 publish to `same`, the `/queue` channel of the one before,
/// taken whole from the read buffer (see [`same_channel_pair`]) and routed
/// as [`step_v1`] routes one; `None` when the buffer does not start with one.
fn step_in_place<R>(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    frames: &mut FramedRead<Counted<R>, FrameCodec>,
    session: &Session,
    same: &Option<Arc<super::router::Channel>>,
) -> Option<Result<Option<End>, Later>> {
    let (Session::V1(parser), Some(channel)) = (session, same) else {
        return None;
    };
    if parser.mid_pair() || !matches!(channel.kind, super::router::Kind::Queue(_)) {
        return None;
    }
    let (name_len, payload) = same_channel_pair(frames, &channel.name)?;
    frames.get_mut().frame_done(name_len);
    frames.get_mut().frame_done(payload.len());
    Some(publish_v1(shared, conn, publisher, &channel.name, payload))
}

/// A protocol 1 channel-and-payload pair whose channel is `name`, when the
/// read buffer holds all of it and the codec is between frames: the name's
/// frame is stepped over, the payload's cut out. `None` leaves the buffer
/// as it was.
#[inline]
fn same_channel_pair<R>(
    frames: &mut FramedRead<R, FrameCodec>,
    name: &[u8],
) -> Option<(usize, Bytes)> {
    if frames.decoder().mid_frame() {
        return None;
    }
    let max = frames.decoder().max_frame();
    let buf = frames.read_buffer_mut();
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    if len != name.len() || buf.get(4..4 + len)? != name {
        return None;
    }
    let at = 4 + len;
    let payload = u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
    if payload > max || buf.len() - at - 4 < payload {
        return None;
    }
    bytes::Buf::advance(buf, at + 4);
    Some((len, buf.split_to(payload).freeze()))
}

/// What a reader does before it may wait for input: once the read buffer is
/// empty (`buffered` false), it sends the `/queue` messages gathered for
/// JetStream, since nothing more is about to join them; and it adds what it
/// counted to the shared counters. `Some` ends the connection.
async fn before_waiting(
    shared: &Shared,
    conn: &Conn,
    buffered: bool,
    publisher: &mut Publisher<'_>,
    session: &mut Session,
) -> Option<End> {
    // Boxed, as the settling at the end: JetStream's futures are large.
    if !buffered && publisher.holds_open() && !Box::pin(publisher.ship()).await {
        return Some(cut_short(shared, conn));
    }
    publisher.flush_counts();
    // Boxed, as the waits of single publishes: rare but in a flood.
    if publisher.held_blocked() && Box::pin(publisher.wait_held()).await.is_err() {
        return Some(cut_short(shared, conn));
    }
    if let Session::V2(v2) = session {
        if !v2.answer_now(conn, publisher) {
            Box::pin(v2.answer(conn, publisher, shared)).await;
        }
        if conn.control_full() {
            // The client reads none of what it is owed: read no more from
            // it until its writer catches up (or gives up on it). Boxed:
            // rare, and not to be carried by every connection's task.
            let room = Box::pin(async {
                tokio::select! {
                    _ = conn.control_room() => true,
                    _ = conn.kill.cancelled() => false,
                }
            });
            if !room.await {
                return Some(End::Stop);
            }
        }
    }
    None
}

/// How a connection ends when one of its publishes could not be routed.
fn cut_short(shared: &Shared, conn: &Conn) -> End {
    if shared.phases.stop_reading.is_cancelled() && !conn.kill.is_cancelled() {
        // A publish cut by the shutdown: this client's input was not
        // all routed, so it must not get an end-of-stream.
        End::Close(EndReason::InputCut)
    } else {
        End::Stop
    }
}

/// A frame, or a channel-and-payload pair, is partly received.
fn in_progress<R>(frames: &FramedRead<R, FrameCodec>, session: &Session) -> bool {
    !frames.read_buffer().is_empty() || frames.decoder().mid_frame() || session.mid_request()
}

/// What a frame read says before either version looks at it: `Err` ends
/// the connection (end of input, a broken or oversized frame).
#[inline(always)]
fn frame_or_end(
    shared: &Shared,
    conn: &Conn,
    mid_request: bool,
    frame: Option<Result<Bytes, FrameError>>,
) -> Result<Bytes, End> {
    match frame {
        None if mid_request => Err(End::Close(EndReason::ClosedMidPair)),
        None => Err(End::Finish(EndReason::ClientClosed)),
        Some(Err(e @ FrameError::TooLarge { .. })) => {
            protocol_error(shared, conn.peer, &e.to_string());
            conn.last_word(v2::encode::error(v2::error::TOO_LARGE, &e.to_string()));
            Err(End::Close(EndReason::Protocol(e.to_string())))
        }
        Some(Err(e)) if e.is_truncated() => Err(End::Close(EndReason::ClosedMidFrame)),
        Some(Err(e)) => Err(End::Close(EndReason::ReadError(e.to_string()))),
        Some(Ok(frame)) => Ok(frame),
    }
}

/// One protocol 1 frame: half of a channel-and-payload pair, or a goodbye.
/// `Err`: a publish that must wait, for [`finish_v1`].
fn step_v1(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    parser: &mut RequestParser,
    frame: Option<Result<Bytes, FrameError>>,
) -> Result<Option<End>, Later> {
    let frame = match frame_or_end(shared, conn, parser.mid_pair(), frame) {
        Ok(frame) => frame,
        Err(end) => return Ok(Some(end)),
    };
    let (channel, payload) = match parser.push(frame) {
        Err(e) => {
            protocol_error(shared, conn.peer, &e.to_string());
            return Ok(Some(End::Close(EndReason::Protocol(e.to_string()))));
        }
        Ok(None) => return Ok(None),
        Ok(Some(Request::Goodbye)) => return Ok(Some(End::Finish(EndReason::Goodbye))),
        Ok(Some(Request::Publish { channel, payload })) => (channel, payload),
    };
    publish_v1(shared, conn, publisher, &channel, payload)
}

/// A protocol 1 publish, as far as it goes without waiting.
fn publish_v1(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    channel: &Bytes,
    payload: Bytes,
) -> Result<Option<End>, Later> {
    if !publisher.publish_now(channel, payload, 0)? {
        return Ok(Some(cut_short(shared, conn)));
    }
    // A refusal is counted, and said to nobody: protocol 1 has no words for it.
    publisher.take_refusal();
    Ok(None)
}

/// A protocol 1 publish that waits.
async fn finish_v1(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    later: Later,
) -> Option<End> {
    if !publisher.publish_later(later).await {
        return Some(cut_short(shared, conn));
    }
    publisher.take_refusal();
    None
}

/// What a protocol 2 frame still needs after [`step_v2`]: a wait.
enum RestV2 {
    /// A publish that waits for room, then is confirmed or refused.
    Publish { later: Later, confirm: Option<u64> },
    /// A publish refused, to be said.
    Refused {
        confirm: Option<u64>,
        code: u8,
        name: Bytes,
    },
    /// Anything but a publish.
    Other(Result<Next, super::session_v2::Broken>),
}

/// One protocol 2 frame, as far as it goes without waiting.
fn step_v2(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    v2: &mut SessionV2,
    frame: Option<Result<Bytes, FrameError>>,
) -> Result<Option<End>, RestV2> {
    let frame = match frame_or_end(shared, conn, false, frame) {
        Ok(frame) => frame,
        Err(end) => return Ok(Some(end)),
    };
    let (channel, payload, head, confirm) = match v2.step(shared, conn, publisher, frame) {
        Ok(Next::Publish {
            confirm,
            channel,
            payload,
            head,
        }) => (channel, payload, head, confirm),
        // Acknowledgements and credit, on a worker's connection.
        Ok(Next::Go) => return Ok(None),
        other => return Err(RestV2::Other(other)),
    };
    match publisher.publish_now(&channel, payload, head) {
        Ok(true) => {}
        Ok(false) => return Ok(Some(cut_short(shared, conn))),
        Err(later) => return Err(RestV2::Publish { later, confirm }),
    }
    match publisher.take_refusal() {
        None => v2.routed(confirm),
        Some((code, name)) => {
            return Err(RestV2::Refused {
                confirm,
                code,
                name,
            })
        }
    }
    Ok(None)
}

/// The rest of a protocol 2 frame, when it waits.
async fn finish_v2(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    v2: &mut SessionV2,
    rest: RestV2,
) -> Option<End> {
    // What waits here comes after every message held.
    publisher.route_held();
    let (confirm, code, name) = match rest {
        RestV2::Other(next) => return v2_other(shared, conn, publisher, v2, next).await,
        RestV2::Refused {
            confirm,
            code,
            name,
        } => (confirm, code, name),
        RestV2::Publish { later, confirm } => {
            if !publisher.publish_later(later).await {
                return Some(cut_short(shared, conn));
            }
            match publisher.take_refusal() {
                None => {
                    v2.routed(confirm);
                    return None;
                }
                Some((code, name)) => (confirm, code, name),
            }
        }
    };
    v2.refuse(shared, conn, publisher, confirm, code, &name)
        .await;
    None
}

/// A v2 frame's outcome other than a publish to route.
async fn v2_other(
    shared: &Shared,
    conn: &Arc<Conn>,
    publisher: &mut Publisher<'_>,
    v2: &mut SessionV2,
    next: Result<Next, super::session_v2::Broken>,
) -> Option<End> {
    match next {
        Ok(Next::Go | Next::Publish { .. }) => None,
        Ok(Next::Goodbye) => Some(End::Finish(EndReason::Goodbye)),
        Ok(Next::Refuse {
            confirm,
            code,
            channel,
        }) => {
            v2.refuse(shared, conn, publisher, confirm, code, &channel)
                .await;
            None
        }
        Ok(Next::Ping(token)) => {
            v2.pong(shared, conn, publisher, token).await;
            None
        }
        Err(broken) => {
            protocol_error(shared, conn.peer, &broken.text);
            conn.last_word(v2::encode::error(broken.code, &broken.text));
            Some(End::Close(EndReason::Protocol(broken.text)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(max: usize, bytes: &[u8]) -> FramedRead<tokio::io::Empty, FrameCodec> {
        let mut f = FramedRead::new(tokio::io::empty(), FrameCodec::new(max));
        f.read_buffer_mut().extend_from_slice(bytes);
        f
    }

    #[test]
    fn whole_frames_are_cut_from_the_buffer_and_the_rest_left_to_the_codec() {
        let mut f = framed(16, b"\0\0\0\x02hi\0\0\0\0\0\0\0\x05abc");
        assert_eq!(whole_frame(&mut f).as_deref(), Some(&b"hi"[..]));
        assert_eq!(whole_frame(&mut f).as_deref(), Some(&b""[..]));
        // Three of five bytes: the codec waits for the rest.
        assert_eq!(whole_frame(&mut f), None);
        assert_eq!(&f.read_buffer()[..], b"\0\0\0\x05abc");
        // Not even a length prefix.
        let mut f = framed(16, b"\0\0");
        assert_eq!(whole_frame(&mut f), None);
    }

    #[test]
    fn an_oversized_frame_is_left_for_the_codec_to_refuse() {
        let mut f = framed(4, b"\0\0\0\x05abcde");
        assert_eq!(whole_frame(&mut f), None);
        let refused = futures::executor::block_on(f.next());
        assert!(
            matches!(
                refused,
                Some(Err(FrameError::TooLarge {
                    announced: 5,
                    max: 4
                }))
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_frame_whose_header_the_codec_took_is_finished_by_the_codec() {
        // The codec has read the header of a 6-byte frame and waits for its
        // body: the buffer's first bytes are body, not a length.
        let (mut client, broker) = tokio::io::duplex(64);
        let mut f = FramedRead::new(broker, FrameCodec::new(64));
        futures::executor::block_on(client.write_all(b"\0\0\0\x06\0\0")).unwrap();
        assert!(f.next().now_or_never().is_none(), "nothing more has come");
        // The body's first bytes would read as a whole 1-byte frame.
        f.read_buffer_mut().extend_from_slice(b"\0\x01xy");
        assert!(f.decoder().mid_frame());
        assert_eq!(whole_frame(&mut f), None);
        drop(client);
        let body = futures::executor::block_on(f.next()).map(Result::unwrap);
        assert_eq!(body.as_deref(), Some(&b"\0\0\0\x01xy"[..]));
    }
}
