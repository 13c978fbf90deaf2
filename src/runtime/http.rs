//! Serving HTTP with the limits a face open to a network needs, for every
//! subcommand that serves a page or an API (`watch-db --http`, `metrics
//! collect --http`).

use std::sync::Arc;

use axum::Router;

/// Serves `router` on `listener` with the limits a public face needs: at most
/// `max` connections at once (the rest wait in the kernel's backlog), and a
/// request's headers within `headers_within` of its first byte (a client
/// that drips bytes cannot hold a connection for ever). axum::serve offers
/// neither, so hyper's HTTP/1 server is driven directly.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    max: usize,
    headers_within: std::time::Duration,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: let some go first.
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(headers_within)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
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
