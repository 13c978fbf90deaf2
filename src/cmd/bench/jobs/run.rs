//! `aioq bench --scenario work|durable|jobs`: the job scenarios from the
//! command line to the report.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::restart::{restart_run, KillAt, RestartRun};
use super::started::Started;
use super::{CrashWorkerRun, DurableRun, JobPlan, Promise, WorkRun};
use crate::cmd::bench::{lat, print_report, read_baseline, table, BenchArgs, Progress, Scenario};
use crate::runtime::output::Stream;

/// The job scenarios' report; `--json` prints it as it is.
#[derive(Debug, Serialize)]
struct JobsReport {
    schema_version: u32,
    aioq_version: &'static str,
    target: String,
    broker: &'static str,
    /// Runs not made, each with why: never a figure in their place.
    skipped: Vec<String>,
    work: Option<WorkRun>,
    durable: Vec<DurableRun>,
    crash_worker: Option<CrashWorkerRun>,
    crash_broker: Option<RestartRun>,
    recovery: Vec<RestartRun>,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.job_worker {
        let target = args
            .target
            .as_deref()
            .context("--job-worker needs --target")?;
        let plan = plan(args, super::parse_target(target, &args.tls)?, None);
        let q = super::queue::QueueName {
            name: name.clone(),
            durable: false,
        };
        super::worker_process(&plan, &q, args.job_time).await?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::ensure_usage!(
        args.subscribe_target.is_none(),
        "--subscribe-target is for the pub/sub scenarios"
    );
    // A broker the bench starts itself, which crash-broker and recovery
    // may kill: its own aioq without --target, or --broker-cmd.
    let mut started = match (&args.target, &args.broker_cmd) {
        (_, Some(cmd)) => Some(Started::command(cmd)?),
        (None, None) => Some(Started::own(&args.fsync)?),
        (Some(_), None) => None,
    };
    let target_text = match (&args.target, &started) {
        (Some(t), Some(b)) => b.fill(t),
        (Some(t), None) => t.clone(),
        (None, Some(b)) => format!("127.0.0.1:{}", b.port),
        (None, None) => unreachable!("a broker is started without --target"),
    };
    let queues = super::parse_target(&target_text, &args.tls)?;
    crate::ensure_usage!(
        args.target_metrics.is_none() || matches!(queues, super::Queues::Aioq(_)),
        "--target-metrics: the counters are aioq's; --target is {}",
        queues.kind()
    );
    crate::ensure_usage!(
        args.stall_timeout > args.ack_wait,
        "--stall-timeout must be longer than --ack-wait: a job held by a dead worker \
         comes back after the ack wait"
    );
    if let Some(b) = started.as_mut() {
        b.start().await?;
    }
    let metrics = match (&started, &args.target_metrics) {
        (_, Some(m)) => Some(m.clone()),
        (Some(b), None) if matches!(queues, super::Queues::Aioq(_)) => b.metrics(),
        _ => None,
    };
    let plan = plan(args, queues, metrics);
    let baseline = read_baseline(args)?;
    let progress = Progress::new(Stream::Stderr.live(args.json || args.csv));
    let mut report = JobsReport {
        schema_version: 1,
        aioq_version: env!("CARGO_PKG_VERSION"),
        target: match &started {
            Some(b) => b.shown.clone(),
            None => shown_target(&target_text),
        },
        broker: plan.queues.kind(),
        skipped: Vec::new(),
        work: None,
        durable: Vec::new(),
        crash_worker: None,
        crash_broker: None,
        recovery: Vec::new(),
    };
    let wants = |s: Scenario| args.scenario == Scenario::Jobs || args.scenario == s;
    let interrupted = {
        let stop = crate::runtime::shutdown::signal();
        let report = &mut report;
        let runs = async {
            if wants(Scenario::Work) {
                match super::promise(&plan, false).await? {
                    Ok(p) => report.work = Some(super::work(&plan, p, &progress).await?),
                    Err(why) => report.skipped.push(format!("work: {why}")),
                }
            }
            if wants(Scenario::CrashWorker) {
                match super::promise(&plan, false).await? {
                    Ok(p) => {
                        let worker = |q: &super::QueueName| {
                            let mut c = tokio::process::Command::new(
                                std::env::current_exe().expect("this program's path"),
                            );
                            c.args(["-q", "bench", "--job-worker", &q.name, "--target"])
                                .arg(&target_text)
                                .args(["--prefetch", &args.prefetch.to_string()])
                                .arg("--job-time")
                                .arg(format!("{}us", args.job_time.as_micros()))
                                .arg("--ack-wait")
                                .arg(format!("{}ms", args.ack_wait.as_millis()));
                            c
                        };
                        report.crash_worker =
                            Some(super::crash_worker(&plan, p, worker, &progress).await?);
                    }
                    Err(why) => report.skipped.push(format!("crash-worker: {why}")),
                }
            }
            if wants(Scenario::Durable) {
                match super::promise(&plan, true).await? {
                    Ok(p) => {
                        for &n in &plan.publishers {
                            report
                                .durable
                                .push(super::durable(&plan, p.clone(), n, &progress).await?);
                        }
                    }
                    Err(why) => report.skipped.push(format!("durable: {why}")),
                }
            }
            let restarts = [
                (Scenario::CrashBroker, "crash-broker"),
                (Scenario::Recovery, "recovery"),
            ];
            for (scenario, name) in restarts {
                if !wants(scenario) {
                    continue;
                }
                let Some(broker) = started.as_mut() else {
                    report.skipped.push(format!(
                        "{name}: the bench kills only a broker it started (no --target, or \
                         --broker-cmd)"
                    ));
                    continue;
                };
                // Run whatever the promise: a broker that promised nothing
                // is shown losing, as it says it may.
                let promise = super::promise(&plan, true).await?;
                if scenario == Scenario::CrashBroker {
                    report.crash_broker = Some(
                        restart_run(
                            &plan,
                            broker,
                            promise,
                            plan.jobs,
                            KillAt::HalfConfirmed,
                            &progress,
                        )
                        .await?,
                    );
                } else {
                    for &n in &args.recovery_jobs {
                        report.recovery.push(
                            restart_run(
                                &plan,
                                broker,
                                promise.clone(),
                                n,
                                KillAt::AllConfirmed,
                                &progress,
                            )
                            .await?,
                        );
                    }
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = runs => {
                r?;
                false
            }
            _ = stop => true,
        }
    };
    progress.finish();
    if let Some(mut b) = started {
        b.kill().await;
    }
    if interrupted {
        eprintln!("aioq bench: interrupted; what follows is the runs that finished");
    }
    let mut doc = serde_json::to_value(&report)?;
    if interrupted {
        doc["interrupted"] = true.into();
    }
    if let Some(code) = print_report(args, baseline.as_ref(), doc, interrupted, || {
        print_tables(&report)
    })? {
        return Ok(code);
    }
    let lost: u64 = report.work.iter().map(|w| w.lost).sum::<u64>()
        + report.crash_worker.iter().map(|c| c.lost).sum::<u64>()
        + report.durable.iter().map(|d| d.lost).sum::<u64>();
    if lost > 0 {
        eprintln!("aioq bench: {lost} job(s) lost where nothing was slow or killed");
        return Ok(ExitCode::from(crate::exit::FAILURE));
    }
    let broken: u64 = report
        .crash_broker
        .iter()
        .chain(&report.recovery)
        .filter(|r| r.durable)
        .map(|r| r.confirmed_lost + r.never_published)
        .sum();
    if broken > 0 {
        eprintln!(
            "aioq bench: {broken} job(s) confirmed by a broker that promised durability and \
             lost across its restart (or delivered and never sent)"
        );
        return Ok(ExitCode::from(crate::exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

fn plan(args: &BenchArgs, queues: super::Queues, metrics: Option<super::MetricsUrl>) -> JobPlan {
    JobPlan {
        queues,
        workers: args.workers as usize,
        jobs: args.jobs,
        size: args.size,
        prefetch: args.prefetch,
        window: args.confirm_window as usize,
        publishers: args.publishers.iter().map(|&p| p as usize).collect(),
        stall_timeout: args.stall_timeout,
        job_time: args.job_time,
        ack_wait: args.ack_wait,
        metrics,
        nats_sync: args.nats_sync.clone(),
    }
}

/// The target as reports show it: no password.
fn shown_target(t: &str) -> String {
    match t.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => t.to_owned(),
        },
        None => t.to_owned(),
    }
}

fn print_tables(r: &JobsReport) {
    println!("aioq bench against {} ({})\n", r.target, r.broker);
    for s in &r.skipped {
        println!("skipped: {s}\n");
    }
    let promises = |p: &Promise| {
        format!(
            "{}{}",
            p.settings,
            if p.synced_before_confirm {
                ""
            } else {
                " — not synced to disk before the confirm"
            }
        )
    };
    if let Some(w) = &r.work {
        let mut t = table(&[
            "work",
            "workers",
            "size",
            "jobs/s",
            "shares min/max",
            "publish→ack µs p50/p90/p99/p99.9/max",
            "lost",
            "dup",
        ]);
        let min = w
            .worker_shares
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let max = w.worker_shares.iter().copied().fold(0.0, f64::max);
        t.add_row(vec![
            format!("{} jobs", w.jobs),
            format!("{} (prefetch {})", w.workers, w.prefetch),
            w.size.to_string(),
            format!("{:.0}", w.jobs_per_s),
            format!("{min:.3}/{max:.3}"),
            lat(&w.latency),
            w.lost.to_string(),
            w.duplicates.to_string(),
        ]);
        println!("{t}\npromise: {}\n", w.promise.settings);
    }
    if let Some(c) = &r.crash_worker {
        let mut t = table(&[
            "crash-worker",
            "workers",
            "killed worker: done / in hand",
            "lost",
            "dup",
            "its jobs done elsewhere after",
        ]);
        t.add_row(vec![
            format!("{} jobs", c.jobs),
            c.workers.to_string(),
            format!("{} / {}", c.acked_by_killed, c.held_by_killed),
            c.lost.to_string(),
            c.duplicates.to_string(),
            match (c.handed_on_ms, c.held_by_killed) {
                (Some(ms), _) => format!("{ms:.1} ms"),
                (None, 0) => "-".into(),
                (None, _) => "never".into(),
            },
        ]);
        println!(
            "{t}\npromise: {} (ack wait {} ms where the client sets it)\n",
            c.promise.settings, c.ack_wait_ms
        );
    }
    let restarts: Vec<(&str, &RestartRun)> = r
        .crash_broker
        .iter()
        .map(|c| ("crash-broker", c))
        .chain(r.recovery.iter().map(|c| ("recovery", c)))
        .collect();
    if !restarts.is_empty() {
        let mut t = table(&[
            "SIGKILL, restart",
            "publishers",
            "sent / confirmed",
            "confirmed lost",
            "unconfirmed kept",
            "dup",
            "listening",
            "first job",
            "drained",
        ]);
        let ms = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.0} ms"));
        for (name, c) in &restarts {
            t.add_row(vec![
                format!("{name}, {} jobs", c.jobs),
                c.publishers.to_string(),
                format!("{} / {}", c.published, c.confirmed),
                c.confirmed_lost.to_string(),
                c.unconfirmed_kept.to_string(),
                c.duplicates.to_string(),
                ms(Some(c.listening_ms)),
                ms(c.first_job_ms),
                ms(c.drained_ms),
            ]);
        }
        println!(
            "{t}\ntimes from the restart; promise: {}\n",
            promises(&restarts[0].1.promise)
        );
    }
    if !r.durable.is_empty() {
        let mut t = table(&[
            "durable",
            "publishers",
            "size",
            "confirms/s",
            "confirm µs p50/p90/p99/p99.9/max",
            "records/fsync",
            "lost",
            "dup",
        ]);
        for d in &r.durable {
            t.add_row(vec![
                format!("{} jobs", d.jobs),
                d.publishers.to_string(),
                d.size.to_string(),
                format!("{:.0}", d.confirms_per_s),
                lat(&d.confirm_latency),
                d.records_per_fsync
                    .map_or("-".into(), |r| format!("{r:.1}")),
                d.lost.to_string(),
                d.duplicates.to_string(),
            ]);
        }
        println!("{t}\npromise: {}\n", promises(&r.durable[0].promise));
    }
}
