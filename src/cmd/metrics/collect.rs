//! `aioq metrics collect`: gathers every reporter's samples; shows them in the
//! terminal (or as JSON lines when stdout is not one) and, with `--http`, in a
//! browser page with live charts.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::board::{Board, Limits};
use super::sample::Sample;
use super::web::{self, Hub, Web};
use crate::client::{subscriber, Target};
use crate::runtime::output::Stream;
use crate::units::parse_duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    aioq metrics collect                          # live table in the terminal\n  \
    aioq metrics collect --http 127.0.0.1:8088    # and charts at http://127.0.0.1:8088/\n  \
    aioq metrics collect | jq .cpu_percent        # one JSON line per sample when piped")]
pub struct CollectArgs {
    #[command(flatten)]
    pub target: Target,
    /// Channel the reporters publish on.
    #[arg(long, default_value = "/topic/metrics")]
    pub channel: String,
    /// Serve the live page, `/feed` (server-sent events) and `/api/reporters` here.
    #[arg(long, value_name = "ADDR", value_parser = crate::units::parse_listen_addr)]
    pub http: Option<String>,
    /// A host name browsers may reach the HTTP face by (repeatable), beside
    /// localhost and IP literals: any other Host header gets 403, so that a
    /// web page cannot rebind its own name to this address and read it.
    #[arg(long, value_name = "NAME", requires = "http")]
    pub http_allow_host: Vec<String>,
    /// A reporter not heard from for this long is marked stale.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub stale_after: Duration,
    /// A reporter not heard from for this long is forgotten.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub forget_after: Duration,
    /// Reporters followed at once; samples from more are refused and counted.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_reporters: u64,
    /// Browsers (and other HTTP clients) served at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_max_connections: u64,
    /// Channel on which the collector tells reporters whether anyone watches
    /// (the table on a terminal, the JSON lines in a pipe or a file, or a
    /// browser on the page; not stdout sent to /dev/null): they sample at
    /// their --interval while someone does, at their --idle-interval while
    /// nobody does.
    #[arg(long, default_value = "/topic/metrics/control")]
    pub control_channel: String,
}

/// How often the collector repeats whether anyone watches, for reporters
/// that start later (and so that a reporter knows a collector is there).
pub const CONTROL_EVERY: Duration = Duration::from_secs(5);

pub async fn run(args: CollectArgs) -> anyhow::Result<ExitCode> {
    let connector = args.target.connector()?;
    let board = Arc::new(Mutex::new(Board::new(Limits {
        stale_after: args.stale_after,
        forget_after: args.forget_after,
        max_reporters: args.max_reporters as usize,
    })));
    let web = Arc::new(Web {
        hub: Hub::default(),
        board: board.clone(),
        feeds: Arc::new(tokio::sync::Semaphore::new(
            (args.http_max_connections as usize / 2).max(1),
        )),
    });
    if let Some(addr) = &args.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!("serving the metrics page on http://{}/", l.local_addr()?);
        let router = web::router(web.clone());
        tokio::spawn(crate::runtime::http::serve(
            l,
            router,
            crate::runtime::http::Limits::new(
                args.http_max_connections as usize,
                Duration::from_secs(10),
                args.http_allow_host.clone(),
            ),
        ));
    }
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(subscriber::run(connector.clone(), args.channel.clone(), tx));
    let (control, control_rx) = mpsc::channel::<bytes::Bytes>(16);
    {
        let channel = args.control_channel.clone();
        tokio::spawn(async move {
            let _ = crate::client::publisher::run(
                connector,
                &channel,
                control_rx,
                crate::client::publisher::Options::v1(),
            )
            .await;
        });
    }
    // Unique enough among the collectors of one broker: reporters keep each
    // one's word apart.
    let me = format!(
        "{}-{}-{}",
        super::sample::host_name(),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
    );
    let mut said: Option<(bool, std::time::Instant)> = None;
    let terminal = Stream::Stdout.is_terminal();
    let stdout_read = stdout_is_read();
    let color = Stream::Stdout.styled();
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let interrupted = crate::runtime::shutdown::signal();
    tokio::pin!(interrupted);
    let mut refused_log = std::time::Instant::now() - Duration::from_secs(1);
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break };
                let mut sample: Sample = match serde_json::from_slice(&m) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("ignoring a message that is not a metrics sample: {e}");
                        continue;
                    }
                };
                // Points are placed at this collector's time: a reporter's
                // clock (or a forged timestamp far in the future) cannot move
                // everyone's charts.
                sample.timestamp = super::sample::now_rfc3339();
                let admitted = board.lock().unwrap().admit(sample);
                let sample = match admitted {
                    Ok(s) => s,
                    Err(why) => {
                        if refused_log.elapsed() >= Duration::from_secs(1) {
                            tracing::warn!("refusing samples ({why}; counts in /api/reporters)");
                            refused_log = std::time::Instant::now();
                        }
                        continue;
                    }
                };
                let json: Arc<str> = serde_json::to_string(&sample)?.into();
                if !terminal {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{json}")?;
                    out.flush()?;
                }
                web.hub.publish(json);
            }
            _ = redraw.tick() => {
                board.lock().unwrap().forget_unseen();
                let watched = stdout_read || web.hub.browsers() > 0;
                let due = said.is_none_or(|(w, at)| w != watched || at.elapsed() >= CONTROL_EVERY);
                if due {
                    if said.is_some_and(|(w, _)| w != watched) {
                        tracing::info!(
                            "{}: telling reporters on {}",
                            if watched { "someone watches" } else { "nobody watches" },
                            args.control_channel
                        );
                    }
                    let word = serde_json::json!({ "collector": me, "watched": watched });
                    let _ = control.try_send(bytes::Bytes::from(word.to_string()));
                    said = Some((watched, std::time::Instant::now()));
                }
                if !terminal {
                    continue;
                }
                let table = board.lock().unwrap().table(color);
                let mut out = std::io::stdout().lock();
                // Clear the screen and draw from the top.
                writeln!(out, "\x1b[2J\x1b[H{table}")?;
                out.flush()?;
            }
            _ = &mut interrupted => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether anything reads stdout: a terminal, a pipe or a file do; a
/// character device that is not a terminal (/dev/null) does not.
fn stdout_is_read() -> bool {
    use std::os::unix::fs::FileTypeExt;
    if Stream::Stdout.is_terminal() {
        return true;
    }
    match std::fs::metadata("/proc/self/fd/1") {
        Ok(m) => !m.file_type().is_char_device(),
        // Unknown: count it as read, the way reporters behave without word.
        Err(_) => true,
    }
}
