//! The client side of the protocol, shared by `listen`, `send`, `metrics`,
//! `watch-db --publish` and `bench`.
//!
//! [`Target`] is the flags; [`Target::connector`] checks them once and gives a
//! [`Connector`], which every connection and reconnection reuses;
//! [`reconnect::Reconnector`] keeps one subscription up across broker restarts.

pub mod publisher;
pub mod reconnect;
pub mod subscriber;
pub mod v2;

/// Which protocol a client speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Version 2 when the broker speaks it, else version 1.
    #[default]
    Auto,
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
}

use anyhow::Context;
use bytes::Bytes;
use futures::SinkExt;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::{Framed, FramedRead, FramedWrite};
use tokio_util::either::Either;

use crate::exit::{as_usage, usage, Unreachable};
use crate::proto::FrameCodec;
use crate::tls::{ClientTlsArgs, TlsClient};

/// Where the broker is, as the flags say.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Broker host name or address.
    #[arg(long, default_value = "localhost", env = "AIOQ_HOST")]
    pub host: String,
    /// Broker TCP port.
    #[arg(long, default_value_t = 25000, env = "AIOQ_PORT")]
    pub port: u16,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl Target {
    pub fn new(host: impl Into<String>, port: u16, tls: ClientTlsArgs) -> Self {
        Self {
            host: host.into(),
            port,
            tls,
        }
    }

    /// Checks the flags (certificate files are read here, once) and gives what
    /// every connection to the broker reuses. A bad value is a usage error.
    pub fn connector(&self) -> anyhow::Result<Connector> {
        Ok(Connector {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.client(&self.host).map_err(as_usage)?,
        })
    }
}

/// How to reach one broker: its address and, for TLS, a ready client.
#[derive(Debug, Clone)]
pub struct Connector {
    host: String,
    port: u16,
    tls: Option<TlsClient>,
}

/// Socket choices a client may make.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// A 4 KiB receive buffer, so that a client that stops reading is felt by
    /// the broker within seconds rather than after the kernel has absorbed
    /// megabytes (the bench's stalled subscribers).
    pub small_recv_buffer: bool,
}

/// A TCP connection to `host:port`, with the socket `options` asks for.
pub async fn dial(host: &str, port: u16, options: ConnectOptions) -> std::io::Result<TcpStream> {
    if !options.small_recv_buffer {
        return TcpStream::connect((host, port)).await;
    }
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
        })?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(4096)?;
    socket.connect(addr).await
}

impl Connector {
    /// A plain-TCP connector.
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
        }
    }

    /// `HOST:PORT` (an IPv6 address in brackets), with TLS from `tls` when on;
    /// `flag` names where it came from in a usage error.
    pub fn parse(flag: &str, addr: &str, tls: &ClientTlsArgs) -> anyhow::Result<Self> {
        let bad = || usage(format!("{flag} {addr:?}: expected HOST:PORT"));
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls: tls.client(host).map_err(as_usage)?,
        })
    }

    /// Connects and subscribes to `channel`.
    pub async fn connect(&self, channel: &str) -> anyhow::Result<Connection> {
        self.connect_with(channel, ConnectOptions::default()).await
    }

    pub async fn connect_with(
        &self,
        channel: &str,
        options: ConnectOptions,
    ) -> anyhow::Result<Connection> {
        let unreachable = |source| Unreachable {
            addr: self.to_string(),
            source,
        };
        let stream = dial(&self.host, self.port, options)
            .await
            .map_err(unreachable)?;
        stream.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Either::Left(stream),
            Some(tls) => {
                Either::Right(tls.connect(stream).await.map_err(|e| match explain(&e) {
                    Some(d) => d.into_error(self.to_string()),
                    None => {
                        anyhow::Error::new(e).context(format!("TLS handshake with {self} failed"))
                    }
                })?)
            }
        };
        let mut conn = Framed::new(Counted::new(stream), FrameCodec::default());
        conn.send(Bytes::copy_from_slice(channel.as_bytes()))
            .await
            .with_context(|| format!("subscribing to {channel}"))?;
        Ok(conn)
    }
}

/// What a connection error means for the user, when it means more than
/// its text says.
#[derive(Debug)]
pub enum Diagnosis {
    /// The flags do not match the broker (TLS on one side only, an untrusted
    /// certificate): a usage error.
    Mismatch(String),
    /// The broker turned us away.
    Refused(String),
    /// The broker refused our certificate: waiting will not change that.
    Certificate(String),
}

impl Diagnosis {
    /// The error a user gets: a mismatch is a usage error (exit 2), a
    /// refusal a [`Refused`](crate::exit::Refused) (exit 5).
    pub fn into_error(self, addr: String) -> anyhow::Error {
        match self {
            Diagnosis::Mismatch(why) => {
                usage(format!("cannot talk to the broker at {addr}: {why}"))
            }
            Diagnosis::Refused(why) => crate::exit::Refused {
                addr,
                why,
                lasting: false,
            }
            .into(),
            Diagnosis::Certificate(why) => crate::exit::Refused {
                addr,
                why,
                lasting: true,
            }
            .into(),
        }
    }
}

/// Reads a connection error the way a user needs it: which side speaks TLS,
/// whose certificate was refused, and what to change.
pub fn explain(err: &(dyn std::error::Error + 'static)) -> Option<Diagnosis> {
    use rustls::{AlertDescription as Alert, CertificateError, Error as Tls};
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(crate::proto::FrameError::TooLarge { announced, .. }) = e.downcast_ref() {
            if crate::proto::looks_like_tls(*announced) {
                return Some(Diagnosis::Mismatch(
                    "it speaks TLS: add --tls (and --tls-ca when its certificate is not from \
                     a public CA)"
                        .into(),
                ));
            }
        }
        if let Some(tls) = e.downcast_ref::<Tls>() {
            return match tls {
                Tls::AlertReceived(Alert::CertificateRequired) => Some(Diagnosis::Mismatch(
                    "it requires a client certificate: add --tls-cert and --tls-key".into(),
                )),
                Tls::AlertReceived(
                    alert @ (Alert::BadCertificate
                    | Alert::UnknownCA
                    | Alert::CertificateUnknown
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateExpired
                    | Alert::CertificateRevoked
                    | Alert::AccessDenied),
                ) => Some(Diagnosis::Certificate(format!(
                    "it refused our certificate ({alert:?}): --tls-cert must be signed by a CA \
                     in the broker's --tls-client-ca, and be valid now"
                ))),
                Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => {
                    Some(Diagnosis::Mismatch(
                        "it does not speak TLS: drop --tls and the other --tls-* flags".into(),
                    ))
                }
                Tls::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    Some(Diagnosis::Mismatch(
                        "its certificate is not signed by a CA we trust: pass its CA with \
                         --tls-ca"
                            .into(),
                    ))
                }
                Tls::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => Some(Diagnosis::Mismatch(
                    "its certificate is not for this host name: connect by a name it holds, \
                     or say which with --tls-server-name"
                        .into(),
                )),
                _ => None,
            };
        }
        let io = match e.downcast_ref::<crate::proto::FrameError>() {
            // Transparent: its source() would skip the io::Error itself.
            Some(crate::proto::FrameError::Io(io)) => Some(io),
            _ => e.downcast_ref::<std::io::Error>(),
        };
        if let Some(io) = io {
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return Some(Diagnosis::Refused(
                    "it closed the connection in the TLS handshake (it refuses more \
                     connections, or is stopping)"
                        .into(),
                ));
            }
        }
        next = e.source();
    }
    None
}

impl std::fmt::Display for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Plain TCP or TLS, one type for every client.
pub type Stream = Either<TcpStream, TlsStream>;

pub type Connection = Framed<Counted<Stream>, FrameCodec>;

/// A stream that counts the bytes its socket accepted: after a failed write,
/// tells which frames went out whole, so that only the others are sent again.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    written: u64,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Self { inner, written: 0 }
    }

    /// Bytes the socket has accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The halves of a [`Connection`], for a client that reads and writes apart.
/// The reader reads what the connection had already read first.
pub type Reader = FramedRead<
    tokio::io::Chain<std::io::Cursor<bytes::BytesMut>, Either<OwnedReadHalf, ReadHalf<TlsStream>>>,
    FrameCodec,
>;
pub type Writer = FramedWrite<Either<OwnedWriteHalf, WriteHalf<TlsStream>>, FrameCodec>;

/// Splits a connection; bytes already read stay with the reader.
pub fn split(conn: Connection) -> (Reader, Writer) {
    let parts = conn.into_parts();
    let (rd, wr) = match parts.io.inner {
        Either::Left(tcp) => {
            let (rd, wr) = tcp.into_split();
            (Either::Left(rd), Either::Left(wr))
        }
        Either::Right(tls) => {
            let (rd, wr) = tokio::io::split(tls);
            (Either::Right(rd), Either::Right(wr))
        }
    };
    // Not the new reader's buffer: a FramedRead reads its socket before it
    // decodes what a buffer given to it holds, so frames that came with the
    // last one read (a worker's first deliveries with its SUBSCRIBED) would
    // wait for bytes that may never come.
    let leftover = std::io::Cursor::new(parts.read_buf);
    let reader = FramedRead::new(tokio::io::AsyncReadExt::chain(leftover, rd), parts.codec);
    (reader, FramedWrite::new(wr, FrameCodec::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    /// Frames that arrived with the last one a connection read are the
    /// reader's first after a split, with no more bytes coming (a worker's
    /// deliveries up to its credit, sent with its SUBSCRIBED).
    #[tokio::test]
    async fn a_split_reader_gives_the_frames_already_read_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut wire = Vec::new();
            for f in [&b"first"[..], b"second", b"third"] {
                wire.extend_from_slice(&(f.len() as u32).to_be_bytes());
                wire.extend_from_slice(f);
            }
            s.write_all(&wire).await.unwrap();
            // Nothing more, and the socket stays open.
            s
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut conn = Framed::new(Counted::new(Either::Left(stream)), FrameCodec::default());
        let _held = server.await.unwrap();
        assert_eq!(&conn.next().await.unwrap().unwrap()[..], b"first");
        let (mut reader, _writer) = split(conn);
        for want in [&b"second"[..], b"third"] {
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader.next())
                .await
                .expect("a frame already read, not waiting for the socket")
                .unwrap()
                .unwrap();
            assert_eq!(&got[..], want);
        }
    }
}
