//! Serving HTTP with the limits a face open to a network needs, for every
//! subcommand that serves a page or an API (`serve --http`, `watch-db
//! --http`, `metrics collect --http`): bounded connections, per address too,
//! deadlines on headers, requests and response writes, and a Host check
//! against DNS rebinding.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request, its body included, is handled within its headers' time and
/// this much more (a client that drips its body cannot hold a connection for
/// ever); past it, 408.
const REQUEST_SLACK: Duration = Duration::from_secs(5);

/// A response write the client does not take for this long ends the
/// connection: a client that asks and never reads cannot hold it.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// What a face open to a network is limited to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once (the rest wait in the kernel's backlog);
    /// one address (an IPv6 /64) holds at most a quarter of them (at least 8).
    pub max: usize,
    /// A request's headers within this long of its first byte.
    pub headers_within: Duration,
    /// Host names served beside `localhost` and IP literals: the names a
    /// browser may reach this face by. A page whose own name was rebound to
    /// this address (DNS rebinding) sends its own name, and gets 403.
    pub hosts: Vec<String>,
}

impl Limits {
    pub fn new(max: usize, headers_within: Duration, hosts: Vec<String>) -> Self {
        Self {
            max: max.max(1),
            headers_within,
            hosts,
        }
    }

    /// A quarter, but room for a browser's usual six connections and more.
    fn per_address(&self) -> usize {
        self.max.div_ceil(4).max(8).min(self.max)
    }

    /// A request's headers and body, and the handler's answer, within this.
    fn request_within(&self) -> Duration {
        self.headers_within + REQUEST_SLACK
    }
}

/// Serves `router` on `listener` within `limits`, with a Host check and
/// deadlines on every request and response write. axum::serve offers none of
/// these, so hyper's HTTP/1 server is driven directly.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, limits: Limits) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let hosts: Arc<[String]> = limits
        .hosts
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let within = limits.request_within();
    let router = router.layer(axum::middleware::from_fn(move |request, next| {
        guard(hosts.clone(), within, request, next)
    }));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: let some go first.
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(held) = Held::take(&per_address, peer.ip(), limits.per_address()) else {
            tracing::debug!(
                "HTTP connection from {peer} closed: its address holds {} connections",
                limits.per_address()
            );
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let headers_within = limits.headers_within;
        tokio::spawn(async move {
            let _slot = (permit, held);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(headers_within)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(WriteDeadline::new(stream)),
                    service,
                );
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
}

/// One connection counted against its address, until dropped.
struct Held {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl Held {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let key = super::address_key(ip);
        let mut m = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held {
            map: map.clone(),
            key,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// The Host check and the request deadline, before any route.
async fn guard(
    hosts: Arc<[String]>,
    within: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(host) = host {
        if !host_allowed(host, &hosts) {
            static REFUSED: crate::broker::log_every::LogEvery =
                crate::broker::log_every::LogEvery::new();
            if let Some(n) = REFUSED.due_now() {
                tracing::warn!(
                    "HTTP: refused {n} request(s) since the last line (403), the last with Host \
                     {:?}: add the name with --http-allow-host if it is yours",
                    host.chars().take(100).collect::<String>()
                );
            }
            return (
                StatusCode::FORBIDDEN,
                "this Host is not served (a page reaching this address under its own \
                 name?); add it with --http-allow-host\n",
            )
                .into_response();
        }
    }
    match tokio::time::timeout(within, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!("the request was not received and handled within {within:?}\n"),
        )
            .into_response(),
    }
}

/// `localhost`, an IP literal (a browser sends one only when it was pointed
/// at the address itself), or a name in `hosts`; any port.
pub fn host_allowed(host: &str, hosts: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, _)) => return addr.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok() || hosts.contains(&name)
}

/// A socket whose writes fail once one has waited [`WRITE_STALL`] for the
/// peer to take bytes.
struct WriteDeadline<T> {
    io: T,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(io: T) -> Self {
        Self { io, stalled: None }
    }

    fn waited(&mut self, cx: &mut Context<'_>, pending: bool) -> Poll<std::io::Result<()>> {
        if !pending {
            self.stalled = None;
            return Poll::Ready(Ok(()));
        }
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no bytes of the response for 10 s",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        match self.waited(cx, r.is_pending()) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => r,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        match self.waited(cx, r.is_pending()) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        match self.waited(cx, r.is_pending()) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A Prometheus registry as a `/metrics` response, in the text format.
pub fn prometheus(registry: &prometheus_client::registry::Registry) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_served_are_localhost_ip_literals_and_named_ones() {
        let named = vec!["broker.internal".to_string()];
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1:9",
            "10.1.2.3",
            "[::1]:80",
            "[fe80::1]",
            "broker.internal:443",
        ] {
            assert!(host_allowed(ok, &named), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example:80",
            "[::1",
            "",
            "broker.internal.evil",
        ] {
            assert!(!host_allowed(bad, &named), "{bad}");
        }
    }
}
