//! The client side of the protocol, shared by `listen`, `send` and `bench`.

pub mod publisher;
pub mod reconnect;
pub mod subscriber;

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use bytes::Bytes;
use futures::SinkExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::either::Either;

use crate::exit::Unreachable;
use crate::proto::FrameCodec;
use crate::tls::TlsClient;

/// Where the broker is.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Broker host name or address.
    #[arg(long, default_value = "localhost", env = "AIOQ_HOST")]
    pub host: String,
    /// Broker TCP port.
    #[arg(long, default_value_t = 25000, env = "AIOQ_PORT")]
    pub port: u16,
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
    /// The TLS client, built from the flags once (it reads certificate files)
    /// and shared by every reconnection.
    #[arg(skip)]
    tls_client: Arc<OnceLock<Option<TlsClient>>>,
}

impl Target {
    pub fn new(host: impl Into<String>, port: u16, tls: crate::tls::ClientTlsArgs) -> Self {
        Self {
            host: host.into(),
            port,
            tls,
            tls_client: Default::default(),
        }
    }

    /// A plain-TCP target.
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Self::new(host, port, Default::default())
    }

    /// Fails early, with a clear message, on TLS flags that cannot work
    /// (unreadable certificates, a key that does not match).
    pub fn check(&self) -> anyhow::Result<()> {
        self.tls_client().map(drop)
    }

    fn tls_client(&self) -> anyhow::Result<Option<TlsClient>> {
        if let Some(c) = self.tls_client.get() {
            return Ok(c.clone());
        }
        let c = self.tls.client(&self.host)?;
        Ok(self.tls_client.get_or_init(|| c).clone())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Plain TCP or TLS, one type for every client.
pub type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

pub type Connection = Framed<Stream, FrameCodec>;

/// Connects and subscribes to `channel`.
pub async fn connect(target: &Target, channel: &str) -> anyhow::Result<Connection> {
    let tls = target.tls_client()?;
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| Unreachable {
            addr: target.to_string(),
            source,
        })?;
    stream.set_nodelay(true)?;
    let stream = match tls {
        None => Either::Left(stream),
        Some(tls) => Either::Right(
            tls.connect(stream)
                .await
                .with_context(|| format!("TLS handshake with {target} failed"))?,
        ),
    };
    let mut conn = Framed::new(stream, FrameCodec::default());
    conn.send(Bytes::copy_from_slice(channel.as_bytes()))
        .await
        .with_context(|| format!("subscribing to {channel}"))?;
    Ok(conn)
}
