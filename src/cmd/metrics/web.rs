//! The collector's web side: one page with two live charts (uPlot, embedded),
//! fed by server-sent events on `/feed`, and `/api/reporters`.
//!
//! Each browser has its own bounded queue: when a tab sleeps and its queue
//! fills, that browser misses samples (counted); the collector and the other
//! browsers do not wait for it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::mpsc;

use super::board::Board;

const PAGE: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("assets/uPlot.LICENSE");

/// Samples queued per browser before it starts missing them.
const BROWSER_QUEUE: usize = 256;

/// A sample for one browser: its event id and its JSON.
type Item = (u64, Arc<str>);

#[derive(Default)]
pub struct Hub {
    browsers: Mutex<Vec<mpsc::Sender<Item>>>,
    next_id: AtomicU64,
    pub dropped: AtomicU64,
}

impl Hub {
    /// Hands one sample (as JSON) to every browser without waiting for any.
    pub fn publish(&self, json: Arc<str>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.browsers
            .lock()
            .unwrap()
            .retain(|b| match b.try_send((id, json.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    fn join(&self) -> mpsc::Receiver<Item> {
        let (tx, rx) = mpsc::channel(BROWSER_QUEUE);
        self.browsers.lock().unwrap().push(tx);
        rx
    }

    /// Browsers connected now (one that left is gone at once, not at the
    /// next sample).
    pub fn browsers(&self) -> usize {
        let mut b = self.browsers.lock().unwrap();
        b.retain(|tx| !tx.is_closed());
        b.len()
    }
}

pub struct Web {
    pub hub: Hub,
    pub board: Arc<Mutex<Board>>,
    /// `/feed` streams open at once: half the connections, so that browsers
    /// holding feeds (or clients that never read one) cannot lock out the
    /// page and the API.
    pub feeds: Arc<tokio::sync::Semaphore>,
}

pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
        )
        .route(
            "/uPlot.min.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], UPLOT_JS) }),
        )
        .route(
            "/uPlot.min.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], UPLOT_CSS) }),
        )
        .route("/uPlot.LICENSE", get(|| async { UPLOT_LICENSE }))
        .route("/api/reporters", get(reporters))
        .route("/history.json", get(history_json))
        .route("/history.csv", get(history_csv))
        .route("/metrics", get(prometheus))
        .route("/feed", get(feed))
        .with_state(web)
}

async fn reporters(State(web): State<Arc<Web>>) -> impl IntoResponse {
    let mut doc = web.board.lock().unwrap().api();
    doc["browsers"] = web.hub.browsers().into();
    doc["browser_samples_dropped"] = web.hub.dropped.load(Relaxed).into();
    Json(doc)
}

/// The buffered history as a download: every sample, oldest first.
async fn history_json(State(web): State<Arc<Web>>) -> impl IntoResponse {
    let history: Vec<super::sample::Sample> =
        web.board.lock().unwrap().history.iter().cloned().collect();
    (
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"aioq-metrics.json\"",
        )],
        Json(history),
    )
}

async fn history_csv(State(web): State<Arc<Web>>) -> impl IntoResponse {
    let mut out = String::from(
        "timestamp,name,host,pid,cpu_percent,cpus,memory_mib,threads,open_files,seq,started,connects,mark\n",
    );
    let opt = |v: Option<String>| v.unwrap_or_default();
    for s in web.board.lock().unwrap().history.iter() {
        let row = [
            s.timestamp.clone(),
            csv_field(&s.name),
            csv_field(&s.host),
            s.pid.to_string(),
            s.cpu_percent.to_string(),
            opt(s.cpus.map(|v| v.to_string())),
            s.memory_mib.to_string(),
            opt(s.threads.map(|v| v.to_string())),
            opt(s.open_files.map(|v| v.to_string())),
            opt(s.seq.map(|v| v.to_string())),
            opt(s.started.map(|v| v.to_string())),
            opt(s.connects.map(|v| v.to_string())),
            csv_field(s.mark.as_deref().unwrap_or("")),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"aioq-metrics.csv\"",
            ),
        ],
        out,
    )
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (names
/// come from any client). A leading `=`, `+`, `-` or `@` is defused with a
/// quote mark, so a spreadsheet does not run it as a formula.
/// A text field of the CSV, as reporters named it: always quoted (a reader
/// whose separator is `;` must not split `x;=1+1` into a formula cell), and
/// defused with a leading `'` when it would start a formula (OWASP's list:
/// `= + - @`, TAB and CR).
fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        "'"
    } else {
        ""
    };
    format!("\"{defused}{}\"", text.replace('"', "\"\""))
}

/// Every reporter's last sample in the Prometheus text format: one series
/// per reporter (labels `reporter`, `host`, `pid`), with the standard
/// process metric names, and the collector's own refusals.
async fn prometheus(State(web): State<Arc<Web>>) -> axum::response::Response {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Reporters(web.board.clone())));
    crate::runtime::http::prometheus(&registry)
}

struct Reporters(Arc<Mutex<Board>>);

/// One figure of a reporter's last sample.
type Reading = fn(&super::board::Reporter) -> f64;

impl std::fmt::Debug for Reporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporters")
    }
}

impl prometheus_client::collector::Collector for Reporters {
    fn encode(&self, mut e: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let board = self.0.lock().unwrap();
        let labels = |r: &super::board::Reporter| {
            vec![
                ("reporter", r.last.name.clone()),
                ("host", r.last.host.clone()),
                ("pid", r.last.pid.to_string()),
            ]
        };
        let gauges: [(&str, &str, Reading); 4] = [
            (
                "process_cpu_percent",
                "CPU use at the last sample, percent of one core.",
                |r| r.last.cpu_percent,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory at the last sample.",
                |r| r.last.memory_mib * 1024.0 * 1024.0,
            ),
            (
                "aioq_reporter_memory_growth_mib_per_minute",
                "Memory growth over the last samples.",
                Board::growth_per_min,
            ),
            (
                "aioq_reporter_leak_suspected",
                "1 when memory grew at every recent sample faster than the leak threshold.",
                |r| f64::from(u8::from(Board::leaking(r))),
            ),
        ];
        for (name, help, value) in gauges {
            let kind = ConstGauge::new(0.0f64);
            let mut family = e.encode_descriptor(name, help, None, kind.metric_type())?;
            for r in board.reporters.values() {
                ConstGauge::new(value(r)).encode(family.encode_family(&labels(r))?)?;
            }
        }
        let stale = ConstGauge::new(0i64);
        let mut family = e.encode_descriptor(
            "aioq_reporter_stale",
            "1 when the reporter has not been heard from for --stale-after.",
            None,
            stale.metric_type(),
        )?;
        for r in board.reporters.values() {
            ConstGauge::new(i64::from(board.is_stale(r)))
                .encode(family.encode_family(&labels(r))?)?;
        }
        let samples = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "aioq_reporter_samples",
            "Samples received from the reporter.",
            None,
            samples.metric_type(),
        )?;
        for r in board.reporters.values() {
            ConstCounter::new(r.samples).encode(family.encode_family(&labels(r))?)?;
        }
        let mut family = e.encode_descriptor(
            "aioq_collector_samples_refused",
            "Samples refused, by reason.",
            None,
            samples.metric_type(),
        )?;
        for reason in ["name_too_long", "too_many_reporters"] {
            let n = board.refused.get(reason).copied().unwrap_or(0);
            ConstCounter::new(n).encode(family.encode_family(&vec![("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// Samples of history a browser is sent per lock of the board.
const HISTORY_PAGE: usize = 256;

/// Recent history first (so a new page starts with full charts), then live
/// samples. The history is read a page at a time as the browser takes it,
/// never copied whole per browser; live samples that arrive meanwhile are
/// queued and may repeat the last of it. The browser's EventSource
/// reconnects by itself (`retry`), and the page ignores samples it already
/// has.
async fn feed(State(web): State<Arc<Web>>) -> axum::response::Response {
    let Ok(slot) = web.feeds.clone().try_acquire_owned() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            "too many feeds open; try again later\n",
        )
            .into_response();
    };
    let rx = web.hub.join();
    let from = web.board.lock().unwrap().history_base;
    let hello = Event::default()
        .retry(Duration::from_secs(2))
        .comment("aioq metrics feed");
    let board = web.board.clone();
    let pages = futures::stream::unfold(Some(from), move |from| {
        let board = board.clone();
        async move {
            let (next, page) = board.lock().unwrap().history_page(from?, HISTORY_PAGE);
            let more = (page.len() == HISTORY_PAGE).then_some(next);
            (!page.is_empty()).then(|| {
                let events = page
                    .into_iter()
                    .map(|json| Ok::<_, Infallible>(Event::default().event("sample").data(json)));
                (futures::stream::iter(events), more)
            })
        }
    });
    let backlog = futures::StreamExt::flatten(pages);
    let live = futures::stream::unfold(rx, |mut rx| async move {
        let (id, json) = rx.recv().await?;
        Some((
            Ok(Event::default()
                .event("sample")
                .id(id.to_string())
                .data(&*json)),
            rx,
        ))
    });
    let stream = futures::StreamExt::chain(
        futures::StreamExt::chain(futures::stream::iter([Ok(hello)]), backlog),
        live,
    );
    // The slot goes with the stream: given back when the client is gone.
    let stream = futures::StreamExt::map(stream, move |e| {
        let _ = &slot;
        e
    });
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response()
}

#[cfg(test)]
mod csv_tests {
    use super::csv_field;

    #[test]
    fn no_field_can_start_a_formula_with_any_separator() {
        assert_eq!(csv_field("host-1"), "\"host-1\"");
        assert_eq!(csv_field("=1+1"), "\"'=1+1\"");
        assert_eq!(csv_field("\t=1+1"), "\"'\t=1+1\"");
        assert_eq!(csv_field("\r=2+2"), "\"'\r=2+2\"");
        assert_eq!(csv_field("x;=1+1"), "\"x;=1+1\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
