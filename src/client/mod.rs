//! The client side of the protocol, shared by `listen`, `send` and `bench`.

pub mod publisher;
pub mod reconnect;
pub mod subscriber;

use anyhow::Context;
use bytes::Bytes;
use futures::SinkExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::exit::Unreachable;
use crate::proto::FrameCodec;

/// Where the broker is.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Broker host name or address.
    #[arg(long, default_value = "localhost", env = "AIOQ_HOST")]
    pub host: String,
    /// Broker TCP port.
    #[arg(long, default_value_t = 25000, env = "AIOQ_PORT")]
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

pub type Connection = Framed<TcpStream, FrameCodec>;

/// Connects and subscribes to `channel`.
pub async fn connect(target: &Target, channel: &str) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| Unreachable {
            addr: target.to_string(),
            source,
        })?;
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(stream, FrameCodec::default());
    conn.send(Bytes::copy_from_slice(channel.as_bytes()))
        .await
        .with_context(|| format!("subscribing to {channel}"))?;
    Ok(conn)
}
