//! `aioq serve`: the broker as a process.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use super::serve_args::{ServeArgs, ServePlan};
use super::serve_config::{self, Loaded, ServeLine};
use crate::broker::{Broker, ClusterConfig};

/// Runs the broker; `line` is the `serve` command line as given, which a
/// `--config` file's settings go under.
pub async fn run(args: ServeArgs, line: ServeLine) -> anyhow::Result<ExitCode> {
    let (args, loaded, policy) = match &args.config {
        Some(path) => {
            let loaded = serve_config::load(path, &line)?;
            let policy = loaded.policy()?;
            (loaded.args.clone(), Some(loaded), Some(policy))
        }
        None => (args, None, None),
    };
    let ServePlan {
        broker: config,
        tls,
        cluster,
        metrics,
    } = args.plan()?;
    if args.check_config {
        let l = loaded.as_ref().context("--check-config needs --config")?;
        let access = if l.has_access {
            format!(
                "{} [[access.identity]] entr{}, plain connections {}, {}",
                l.access.identity.len(),
                if l.access.identity.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                match &l.access.plain {
                    Some(crate::broker::access::Plain::Refuse) => "refused",
                    Some(crate::broker::access::Plain::Rules(_)) => "by their own rules",
                    None => "by the default rules",
                },
                l.access.default_said()
            )
        } else {
            "no [access]: every client may do everything".to_string()
        };
        println!(
            "{}: ok ({} [[channel]] entr{}, {access})",
            l.path.display(),
            l.rules.len(),
            if l.rules.len() == 1 { "y" } else { "ies" },
        );
        // What is in force: the file and the flags together (walkthrough 13).
        println!(
            "in force: host {} port {}, send-queue {}, send-queue-bytes {}, worker-queue {}, \
             backlog {}, backlog-bytes {}, topic-overflow {}, max-frame {}, max-channel {}, \
             max-channels {}, max-subscriptions {}, ack-wait {:?}, max-deliveries {}, \
             max-credit {}, max-connections {}, \
             max-connections-per-ip {}, max-memory {}, subscribe-timeout {:?}, \
             write-timeout {:?}, drain-timeout {:?}",
            args.host,
            args.port,
            config.send_queue,
            config.send_queue_bytes,
            config.worker_queue,
            config.backlog,
            config.backlog_bytes,
            config.topic_overflow.name(),
            config.max_frame,
            config.max_channel,
            config.max_channels,
            config.max_subscriptions,
            config.ack_wait,
            config.max_deliveries,
            config.max_credit,
            config.max_connections,
            config.max_connections_per_ip,
            config.max_memory,
            config.subscribe_timeout,
            config.write_timeout,
            config.drain_timeout,
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Room for every connection allowed, plus the listener, logs and spares.
    let want = config.max_connections as u64 + 64;
    let fds = crate::runtime::fd_limit::raise(want);
    if fds < want {
        tracing::warn!(
            "open-file limit is {fds}, below --max-connections {}: raise it (ulimit -n) \
             or expect accept errors",
            config.max_connections
        );
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    // Before anything says the broker is up: a SIGTERM or SIGINT from then on
    // stops it in order (its default action would end the process).
    let shutdown = crate::runtime::shutdown::signal();
    tracing::info!(
        "broker ready on {addr} (send queue {} msgs/{} bytes, worker queue {}, backlog {}, topic overflow {}, {} thread(s))",
        config.send_queue,
        config.send_queue_bytes,
        config.worker_queue,
        config.backlog,
        config.topic_overflow.name(),
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    if tls.is_some() {
        tracing::info!(
            "serving TLS{}",
            if args.tls.tls_client_ca.is_some() {
                ", client certificates required"
            } else {
                ""
            }
        );
    }
    // Before anything says the broker is up: from here a SIGHUP is handled
    // (its default action ends the process).
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let durable = policy
        .as_ref()
        .map_or(!config.durable.is_empty(), |p| p.any_durable());
    let broker = Broker::serving(config, tls);
    if let Some(policy) = policy {
        broker.reloader().apply(policy);
    }
    // Opened when a channel may be durable, or when an earlier run left
    // messages there: what is stored is never dropped for a flag left out.
    let disk = if durable || args.data_dir.join("FORMAT").exists() {
        let (disk, recovered) = open_store(&args).await?;
        broker.use_disk(disk.clone(), recovered);
        Some(disk)
    } else {
        None
    };
    let store_open = disk.is_some();
    tokio::spawn(reload_on_hangup(
        hangup,
        loaded,
        line,
        broker.reloader(),
        store_open,
    ));
    if let Some(addr) = &args.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--http {addr}: cannot listen there"))?;
        tracing::info!("monitoring on http://{}", l.local_addr()?);
        tokio::spawn(crate::runtime::http::serve(
            l,
            crate::cmd::serve_http::router(broker.monitor(), usize::from(args.http_channel_series)),
            crate::runtime::http::Limits::new(
                64,
                std::time::Duration::from_secs(10),
                args.http_allow_host.clone(),
            ),
        ));
    }
    if let Some(cluster) = cluster {
        broker
            .join_cluster(ClusterConfig {
                name: format!("aioq {addr}"),
                ..cluster
            })
            .await?;
    }
    // Printed once the broker is fully set up, cluster included: scripts and
    // tests may publish as soon as they read it.
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    // Type=notify: systemd starts what depends on the broker from here.
    crate::runtime::systemd::notify("READY=1");
    let shutdown = async {
        shutdown.await;
        crate::runtime::systemd::notify("STOPPING=1");
    };
    if let Some((channel, interval)) = metrics {
        tokio::spawn(crate::cmd::metrics::report::broker_self(
            broker.injector(),
            channel,
            interval,
            broker.stats(),
            broker.budget(),
        ));
    }
    broker.run(listener, shutdown).await;
    if let Some(disk) = disk {
        // What was gathered is written and synced before the process ends.
        tokio::task::spawn_blocking(move || disk.close()).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the durable store and reads back what it holds, saying so.
async fn open_store(
    args: &ServeArgs,
) -> anyhow::Result<(
    std::sync::Arc<crate::broker::Disk>,
    crate::broker::Recovered,
)> {
    let dir = args.data_dir.clone();
    let (mode, segment) = (args.fsync, args.segment_size as u64);
    let max_disk = args.max_disk.map(|m| m as u64);
    let (disk, recovered) = tokio::task::spawn_blocking(move || {
        crate::broker::Disk::open(&dir, mode, segment, max_disk)
    })
    .await??;
    let stats = &disk.stats;
    let messages: usize = recovered.channels.iter().map(|(_, m)| m.len()).sum();
    let dir = disk.dir();
    tracing::info!(
        "durable store {} (fsync {}): recovered {messages} message(s) in {} channel(s) from {} segment(s) in {:.1} ms",
        dir.display(),
        disk.mode().name(),
        recovered.channels.len(),
        recovered.segments.len(),
        stats.recovery_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
    );
    if recovered.torn > 0 {
        tracing::warn!(
            "durable store: {} record(s) cut short by a crash were truncated (never confirmed)",
            recovered.torn
        );
    }
    for (path, at) in &recovered.quarantined {
        tracing::error!(
            "durable store: {} is damaged at byte {at}: set aside (kept for inspection); the \
             {} message(s) before the damage were kept, what came after it is lost",
            path.display(),
            recovered.rescued
        );
    }
    Ok((disk, recovered))
}

/// How long a reload may take to read the file: a hung mount must not hold
/// the reload (nor anything else) for ever.
const RELOAD_READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the file for a reload off the runtime's threads, within
/// [`RELOAD_READ_WITHIN`]; whether it was empty too.
async fn reread(path: std::path::PathBuf) -> anyhow::Result<(String, bool)> {
    let read = tokio::task::spawn_blocking(move || serve_config::read_settled(&path));
    let text = tokio::time::timeout(RELOAD_READ_WITHIN, read)
        .await
        .map_err(|_| {
            anyhow::anyhow!("reading it took more than {RELOAD_READ_WITHIN:?} (a hung mount?)")
        })???;
    let empty = text.trim().is_empty();
    Ok((text, empty))
}

/// At every SIGHUP, reads the file again and applies what can change while
/// the broker runs; a file that does not load changes nothing. `hangup` is
/// made before the broker says it listens, so that no SIGHUP can kill it.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    started: Option<Loaded>,
    line: ServeLine,
    reloader: crate::broker::Reloader,
    store_open: bool,
) {
    let Some(started) = started else {
        while hangup.recv().await.is_some() {
            tracing::warn!("SIGHUP: the broker runs without --config, nothing to reload");
        }
        return;
    };
    let path = started.path.clone();
    let mut running_access = started.has_access;
    while hangup.recv().await.is_some() {
        let loaded = reread(path.clone()).await.and_then(|(text, empty)| {
            let l = serve_config::parse(&path, &text, &line)?;
            let policy = l.policy()?;
            Ok((l, policy, empty))
        });
        let loaded =
            loaded.and_then(
                |(l, policy, empty)| match l.refused_over(running_access, empty) {
                    Some(why) => Err(anyhow::anyhow!(why)),
                    None => Ok((l, policy)),
                },
            );
        match loaded {
            Err(e) => tracing::error!(
                "reload of {} refused, the running configuration stays: {e:#}",
                path.display()
            ),
            Ok((loaded, policy)) => {
                if policy.any_durable() && !store_open {
                    tracing::warn!(
                        "reload of {}: durable channels need the store, which opens at start: \
                         restart the broker for them to be durable",
                        path.display()
                    );
                }
                for (setting, value) in loaded.needs_restart(&started, &line) {
                    tracing::warn!(
                        "reload of {}: {setting} changed, which needs a restart; still {value}",
                        path.display()
                    );
                }
                let ended = reloader.apply(policy);
                tracing::info!(
                    "reloaded {}: {} [[channel]] entr{}, {} identit{}{}",
                    path.display(),
                    loaded.rules.len(),
                    if loaded.rules.len() == 1 { "y" } else { "ies" },
                    loaded.access.identity.len(),
                    if loaded.access.identity.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    if ended > 0 {
                        format!("; {ended} connection(s) no longer allowed were ended")
                    } else {
                        String::new()
                    }
                );
                running_access = loaded.has_access;
            }
        }
    }
}
