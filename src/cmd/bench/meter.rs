//! The physics of a run, read from the broker itself: its socket writes and
//! deliveries, and its CPU time. From the embedded broker's counters, or from
//! an aioq broker's `/metrics` (`serve --http`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;

use super::report::Physics;
use crate::broker::stats::BrokerStats;

/// Where a run's physics are read.
#[derive(Clone)]
pub enum Meter {
    /// The embedded broker: its counters, and the CPU time of its runtime threads.
    Embedded(Arc<BrokerStats>),
    /// An aioq broker's Prometheus page: `http://HOST:PORT/metrics`.
    Metrics(MetricsUrl),
}

/// The broker's counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Gauge {
    writes: u64,
    write_bytes: u64,
    delivered: u64,
    cpu_ns: u64,
}

impl Meter {
    /// None when the broker could not be read (a run is still worth its
    /// throughput figures).
    pub async fn read(&self) -> Option<Gauge> {
        match self {
            Meter::Embedded(stats) => Some(Gauge {
                writes: stats.socket_writes.messages.load(Relaxed),
                write_bytes: stats.socket_writes.bytes.load(Relaxed),
                delivered: stats.delivered.messages.load(Relaxed),
                cpu_ns: broker_cpu_ns(),
            }),
            Meter::Metrics(url) => match scrape(url).await {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!("{}: {e:#}", url.shown);
                    None
                }
            },
        }
    }
}

impl Gauge {
    /// The physics of the run from `self` to `after`.
    pub fn since(self, after: Gauge) -> Option<Physics> {
        let writes = after.writes.checked_sub(self.writes)?;
        let delivered = after.delivered.checked_sub(self.delivered)?;
        (writes > 0 && delivered > 0).then(|| Physics {
            messages_per_write: delivered as f64 / writes as f64,
            bytes_per_write: after.write_bytes.saturating_sub(self.write_bytes) as f64
                / writes as f64,
            cpu_ns_per_delivery: after.cpu_ns.saturating_sub(self.cpu_ns) as f64 / delivered as f64,
        })
    }
}

/// CPU time of the embedded broker's runtime threads (`aioq-broker-rt`), in
/// nanoseconds, from the kernel's scheduler statistics.
fn broker_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "aioq-broker-rt")
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A checked `http://HOST:PORT/PATH`.
#[derive(Debug, Clone)]
pub struct MetricsUrl {
    authority: String,
    path: String,
    shown: String,
}

impl std::str::FromStr for MetricsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: expected http://HOST:PORT/metrics"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let port = authority.rsplit_once(':').map(|(_, p)| p);
        if port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("{s:?}: expected http://HOST:PORT/metrics"));
        }
        Ok(Self {
            authority: authority.to_string(),
            path: path.to_string(),
            shown: s.to_string(),
        })
    }
}

/// Reads the four figures off the broker's Prometheus page.
async fn scrape(url: &MetricsUrl) -> anyhow::Result<Gauge> {
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), get(url))
        .await
        .context("no answer within 5 s")??;
    let value = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("no {name} on the page: not an aioq broker's /metrics?"))
    };
    Ok(Gauge {
        writes: value("aioq_socket_writes_total")? as u64,
        write_bytes: value("aioq_socket_write_bytes_total")? as u64,
        delivered: value("aioq_messages_delivered_total")? as u64,
        cpu_ns: (value("process_cpu_seconds_total")? * 1e9) as u64,
    })
}

/// A counter off the broker's Prometheus page (None when it has none).
pub async fn counter(url: &MetricsUrl, name: &str) -> Option<f64> {
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), get(url))
        .await
        .ok()?
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Another page of the same monitoring face (`/api/server`), as JSON.
pub async fn api(url: &MetricsUrl, path: &str) -> anyhow::Result<serde_json::Value> {
    let other = MetricsUrl {
        authority: url.authority.clone(),
        path: path.to_string(),
        shown: url.shown.clone(),
    };
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), get(&other))
        .await
        .context("no answer within 5 s")??;
    Ok(serde_json::from_str(&text)?)
}

async fn get(url: &MetricsUrl) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(&url.authority).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(&url.path)
        .header(hyper::header::HOST, &url.authority)
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    conn.abort();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_url_needs_http_a_host_and_a_port() {
        let u: MetricsUrl = "http://127.0.0.1:9100/metrics".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:9100", "/metrics")
        );
        let u: MetricsUrl = "http://localhost:9100".parse().unwrap();
        assert_eq!(u.path, "/metrics");
        assert!("https://h:1/metrics".parse::<MetricsUrl>().is_err());
        assert!("http://h/metrics".parse::<MetricsUrl>().is_err());
    }
}
