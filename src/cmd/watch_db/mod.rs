//! `aioq watch-db`: a PostgreSQL change feed (triggers + LISTEN/NOTIFY) that
//! keeps an in-memory row cache coherent across app instances, serves it over
//! HTTP, and forwards changes into an aioq broker.

mod cache;
mod check;
mod events;
mod http;
mod listener;
mod pg;
mod schema;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use self::cache::Cache;
use self::http::App;
use self::listener::Feed;
use crate::client::{publisher, Target};

const AFTER_HELP: &str = "\
Examples:
  aioq watch-db --dsn postgres://postgres@localhost:5432/restaurant --table patron --install
  aioq watch-db --dsn ... --table patron --http 127.0.0.1:8000      # instance A
  aioq watch-db --dsn ... --table patron --http 127.0.0.1:8001      # instance B
  aioq watch-db --dsn ... --table patron --publish /topic/db/patron # into the broker
  aioq watch-db --dsn ... --table patron --json | jq .data.diff   # keys mode: rows it held

--install and --uninstall change the database and exit. Otherwise events are
printed on stdout (pretty JSON, or one line each with --json) until SIGINT/SIGTERM.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct WatchDbArgs {
    /// PostgreSQL connection string (a direct connection: LISTEN does not work
    /// through a pooler in transaction mode). Keep the password out of it:
    /// PGPASSWORD is read as libpq does.
    #[arg(long, env = "AIOQ_DSN", hide_env_values = true)]
    pub dsn: String,
    /// What events carry (with --install: what the trigger sends; otherwise:
    /// what this watcher trusts). In keys mode a notification only says
    /// which row changed, and the row is read with this watcher's privileges.
    #[arg(long, value_enum, default_value_t = schema::Payload::Keys)]
    pub payload: schema::Payload,
    /// Table to watch, optionally schema-qualified; repeat for more. Each needs a
    /// single-column primary key.
    #[arg(long = "table", required = true)]
    pub tables: Vec<String>,
    /// NOTIFY channel for every table (default: chan_<table> for each).
    // The doc comment is --help text, written for a terminal, not rustdoc.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    pub channel: Option<String>,
    /// Check that the database is ready to be watched (connection, TLS, a
    /// NOTIFY round trip, the notification queue, each table's trigger and
    /// privileges), print a line per check, exit 0 only when all pass.
    #[arg(long, conflicts_with_all = ["install", "uninstall"])]
    pub check: bool,
    /// Create (or update) the trigger function and triggers, then exit.
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove the triggers (and the function when unused), then exit.
    #[arg(long)]
    pub uninstall: bool,
    /// Serve the JSON API on this address (port 0 picks one; the log says which).
    #[arg(long, value_name = "ADDR", value_parser = crate::units::parse_listen_addr)]
    pub http: Option<String>,
    /// A host name browsers may reach the HTTP face by (repeatable), beside
    /// localhost and IP literals: any other Host header gets 403, so that a
    /// web page cannot rebind its own name to this address and read it.
    #[arg(long, value_name = "NAME", requires = "http")]
    pub http_allow_host: Vec<String>,
    /// HTTP connections served at once; more wait until one closes.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..), requires = "http")]
    pub http_max_connections: u64,
    /// Time a client has to send a request's headers once it has begun.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration, requires = "http")]
    pub http_header_timeout: std::time::Duration,
    /// A file holding a token every HTTP request must bear
    /// (`Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "FILE", requires = "http")]
    pub http_token_file: Option<std::path::PathBuf>,
    /// Forward every event into this broker channel.
    #[arg(long)]
    pub publish: Option<String>,
    /// TLS to the broker for --publish.
    #[command(flatten)]
    pub broker_tls: crate::tls::ClientTlsArgs,
    /// Broker host for --publish.
    #[arg(long, default_value = "localhost", env = "AIOQ_HOST")]
    pub broker_host: String,
    /// Broker port for --publish.
    #[arg(long, default_value_t = 25000, env = "AIOQ_PORT")]
    pub broker_port: u16,
    /// Notifications held between PostgreSQL and the cache; past it they are
    /// dropped, counted, and the cache starts over (a RESYNC event).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub event_queue: u64,
    /// Rows the cache holds (least recently used go first).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_size: u64,
    /// One JSON object per line on stdout instead of pretty JSON.
    #[arg(long)]
    pub json: bool,
}

/// A DSN fit for messages: without its password.
fn redact(dsn: &str) -> String {
    let dsn = pg::without_tls(dsn);
    match dsn.parse::<tokio_postgres::Config>() {
        Ok(c) => format!(
            "{}@{}/{}",
            c.get_user().unwrap_or("?"),
            c.get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default(),
            c.get_dbname().unwrap_or("")
        ),
        Err(_) => "the given DSN".into(),
    }
}

pub async fn run(args: WatchDbArgs) -> anyhow::Result<ExitCode> {
    let pg = pg::from_dsn(&args.dsn)?;
    let broker = match &args.publish {
        Some(channel) => {
            let target = Target::new(
                args.broker_host.clone(),
                args.broker_port,
                args.broker_tls.clone(),
            );
            Some((target.connector()?, channel.clone()))
        }
        None => None,
    };
    let (mut db, connection) = pg.config.connect(pg.tls.clone()).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL ({}, sslmode={})",
            redact(&args.dsn),
            pg.mode
        )
    })?;
    let conn_task = tokio::spawn(connection);
    let mut tables = Vec::new();
    for name in &args.tables {
        tables.push(schema::describe(&db, name, args.channel.as_deref()).await?);
    }
    if args.check {
        let ok = check::run(&pg, &redact(&args.dsn), &tables, args.payload).await?;
        return Ok(ExitCode::from(if ok {
            crate::exit::OK
        } else {
            crate::exit::FAILURE
        }));
    }
    if args.install {
        schema::install(&mut db, &tables, args.payload).await?;
        for t in &tables {
            println!(
                "installed trigger {} on {}.{} notifying {} ({} payload)",
                t.trigger_name(),
                t.schema,
                t.relname,
                t.channel,
                args.payload.as_str()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.uninstall {
        schema::uninstall(&mut db, &tables).await?;
        for t in &tables {
            println!(
                "removed trigger {} from {}.{}",
                t.trigger_name(),
                t.schema,
                t.relname
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    for t in &tables {
        let installed: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)",
                &[&t.name, &t.trigger_name()],
            )
            .await?
            .get(0);
        if !installed {
            tracing::warn!(
                "no aioq trigger on {}: no events will come until you run with --install",
                t.name
            );
        }
    }
    drop(db);
    conn_task.abort();

    let token = match &args.http_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--http-token-file {}", path.display()))
                .map_err(crate::exit::as_usage)?;
            let token = text.trim().to_string();
            crate::ensure_usage!(
                !token.is_empty(),
                "--http-token-file {} is empty",
                path.display()
            );
            use std::os::unix::fs::PermissionsExt;
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!(
                    "--http-token-file {}: others than its owner may read it: chmod 600",
                    path.display()
                );
            }
            Some(token)
        }
        None => None,
    };
    let http_listener = match &args.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let manager = deadpool_postgres::Manager::from_config(
        pg.config.clone(),
        pg.tls.clone(),
        deadpool_postgres::ManagerConfig::default(),
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("creating the connection pool")?;
    let app = Arc::new(App {
        tables: tables.iter().map(|t| (t.name.clone(), t.clone())).collect(),
        cache: Cache::new(args.cache_size as usize),
        pool,
        guard: http::Guard { token },
    });
    if let Some(addr) = http_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        if !addr.ip().is_loopback() && app.guard.token.is_none() {
            tracing::warn!(
                "--http {addr} is not a loopback address and has no --http-token-file: \
                 anyone who can reach it may read and write the watched tables"
            );
        }
    }

    let mut channels: Vec<String> = tables.iter().map(|t| t.channel.clone()).collect();
    channels.sort();
    channels.dedup();
    let (feed_tx, mut feed_rx) = mpsc::channel(1024);
    let mut listener = tokio::spawn(listener::run(
        pg.config.clone(),
        pg.tls.clone(),
        channels.clone(),
        args.event_queue as usize,
        feed_tx,
    ));

    let forward = broker.map(|(target, channel)| {
        let (tx, rx) = mpsc::channel::<Bytes>(10_000);
        tokio::spawn(async move {
            if let Err(e) = publisher::run(target, &channel, rx, publisher::Options::v1()).await {
                tracing::error!("forwarding to the broker stopped: {e:#}");
            }
        });
        tx
    });

    if let Some(l) = http_listener {
        tracing::info!("serving HTTP on http://{}", l.local_addr()?);
        let router = http::router(app.clone());
        tokio::spawn(crate::runtime::http::serve(
            l,
            router,
            crate::runtime::http::Limits::new(
                args.http_max_connections as usize,
                args.http_header_timeout,
                args.http_allow_host.clone(),
            ),
        ));
    }

    let interrupted = crate::runtime::shutdown::signal();
    tokio::pin!(interrupted);
    let mut seq = 0u64;
    let mut overflow_log = OverflowLog::default();
    let said_at_exit = |log: &OverflowLog| {
        if log.unsaid > 0 {
            tracing::warn!(
                "{} notification(s) dropped since the last line: the event queue was full",
                log.unsaid
            );
        }
    };
    // What ended the last batch of notifications, handled next.
    let mut held: Option<Feed> = None;
    loop {
        let feed = if let Some(h) = held.take() {
            Some(h)
        } else {
            tokio::select! {
            f = feed_rx.recv() => f,
            r = &mut listener => {
                said_at_exit(&overflow_log);
                r??;
                return Ok(ExitCode::SUCCESS);
            }
            _ = &mut interrupted => {
                said_at_exit(&overflow_log);
                return Ok(ExitCode::SUCCESS);
            }
            }
        };
        let Some(feed) = feed else { continue };
        let events = match feed {
            Feed::Connected { first: true } => {
                tracing::info!(
                    "listening on {} for {}",
                    channels.join(", "),
                    args.tables.join(", ")
                );
                continue;
            }
            Feed::Connected { first: false } => {
                let n = app.cache.invalidate_all();
                tracing::warn!(
                    "reconnected to PostgreSQL: changes made while disconnected are unknown, cache invalidated ({n} cached row(s) dropped)"
                );
                vec![
                    json!({ "type": "RESYNC", "reason": "reconnected to PostgreSQL", "invalidated": n }),
                ]
            }
            Feed::Overflow { missed } => {
                let n = app.cache.invalidate_all();
                app.cache.stats.overflows.fetch_add(missed, Relaxed);
                overflow_log.unsaid += missed;
                // A line a second at most: a flood must not become a log flood.
                if overflow_log
                    .said
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    tracing::warn!(
                        "{} notification(s) dropped since the last line: the event queue \
                         (--event-queue {}) was full; cache invalidated",
                        overflow_log.unsaid,
                        args.event_queue
                    );
                    overflow_log = OverflowLog {
                        said: Some(std::time::Instant::now()),
                        unsaid: 0,
                    };
                }
                vec![json!({
                    "type": "RESYNC",
                    "reason": "event queue overflow",
                    "missed": missed,
                    "invalidated": n,
                })]
            }
            Feed::Notification { channel, payload } => {
                let mut batch = vec![(channel, payload)];
                while batch.len() < events::BATCH {
                    match feed_rx.try_recv() {
                        Ok(Feed::Notification { channel, payload }) => {
                            batch.push((channel, payload))
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let payloads: Vec<String> = batch.iter().map(|(_, p)| p.clone()).collect();
                let outcomes = events::apply(&app, &payloads, args.payload).await;
                let mut out = Vec::with_capacity(outcomes.len());
                for ((channel, payload), outcome) in batch.iter().zip(outcomes) {
                    match outcome {
                        events::Outcome::Event(e) => out.push(e),
                        events::Outcome::Ignored => {}
                        events::Outcome::NotAnEvent => {
                            // Any role's text: escaped, so it cannot forge log lines.
                            let head: String = payload.chars().take(200).collect();
                            tracing::warn!(
                                "ignoring a notification on {} that is not an aioq event: {}",
                                crate::proto::shown(channel.as_bytes()),
                                crate::proto::shown(head.as_bytes())
                            );
                        }
                    }
                }
                out
            }
        };
        for mut event in events {
            // A number per event of this watcher: a consumer that sees a gap,
            // or a RESYNC, knows it missed something.
            seq += 1;
            event["seq"] = json!(seq);
            emit(&event, args.json)?;
            if let Some(tx) = &forward {
                let line = Bytes::from(event.to_string());
                if tx.try_send(line).is_err() {
                    tracing::warn!("broker forwarding buffer full: an event was not forwarded");
                }
            }
        }
    }
}

/// Overflow warnings not said yet, and when the last was.
#[derive(Default)]
struct OverflowLog {
    said: Option<std::time::Instant>,
    unsaid: u64,
}

fn emit(event: &Value, one_line: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if one_line {
        writeln!(out, "{event}")?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(event)?)?;
    }
    out.flush()?;
    Ok(())
}
