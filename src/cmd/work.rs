//! `aioq work -- CMD ARGS...`: a worker that runs a command for each job of
//! a `/queue` channel and acknowledges it by the command's exit status
//! (protocol 2 acknowledgements): 0 is done, anything else is tried again
//! (after the channel's backoff; after `max_deliveries` failures, the
//! dead-letter channel).

use std::collections::HashMap;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use crate::client::reconnect::{Link, Reconnector};
use crate::client::{Connection, Target};
use crate::exit;
use crate::proto::v2::{decode_broker, encode, feature, kind, Answer, BrokerFrame};

const AFTER_HELP: &str = "\
Examples:
  aioq work --channel /queue/jobs -- ./process-job.sh
  aioq work --channel /queue/images --concurrency 4 --timeout 2m -- convert - -resize 50% out.png
  aioq work --channel /queue/jobs --count 1 -- sh -c 'cat > job.json'

Each job's payload is the command's standard input; its environment has
AIOQ_CHANNEL, AIOQ_DELIVERY and AIOQ_ATTEMPT (1 for a first delivery). Exit
status 0 acknowledges the job; any other status, a signal, or --timeout sends it
back to be tried again, after the channel's backoff; after the broker's
--max-deliveries failures it goes to CHANNEL/dead, payload and all. While the
command runs, the job is kept (WORKING) however long it takes.

One line per job on stderr: delivery, attempt, outcome, duration. SIGINT or
SIGTERM stops taking jobs and waits for the running ones; a second one kills
them (they are tried again elsewhere). Exit codes: 0 after --count jobs (or when
the broker ends the stream with --no-reconnect), 2 when the command cannot be
started, 3 or 5 as for listen, 130 when stopped by a signal.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct WorkArgs {
    #[command(flatten)]
    pub target: Target,
    /// The /queue channel to take jobs from.
    #[arg(long, default_value = "/queue/jobs")]
    pub channel: String,
    /// Commands run at once; also the jobs held from the broker at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Kill a command that runs longer than this (the job is tried again).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub timeout: Option<Duration>,
    /// Exit 0 after this many jobs (done or not).
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit when the connection ends instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// How a job's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Exit(i32),
    Signal(i32),
    TimedOut,
    /// Killed by a second SIGINT, or because the connection was lost.
    Killed,
}

impl Outcome {
    fn done(self) -> bool {
        self == Outcome::Exit(0)
    }

    fn shown(self) -> String {
        match self {
            Outcome::Exit(c) => format!("exit {c}"),
            Outcome::Signal(s) => format!("killed by signal {s}"),
            Outcome::TimedOut => "timed out".into(),
            Outcome::Killed => "killed".into(),
        }
    }
}

/// Jobs counted across connections.
#[derive(Default)]
struct Totals {
    done: u64,
    failed: u64,
}

enum Ended {
    /// --count reached, or stopped by a signal: the exit code.
    Done(ExitCode),
    /// The connection ended; what was running was killed.
    Lost(String),
    EndOfStream,
}

pub async fn run(args: WorkArgs) -> anyhow::Result<ExitCode> {
    crate::ensure_usage!(
        crate::proto::is_queue(args.channel.as_bytes()),
        "--channel must be a /queue channel (got {:?}): jobs are shared among workers",
        args.channel
    );
    let connector = args.target.connector()?;
    let role = format!("working on {}", args.channel);
    let mut link = Reconnector::new(connector, &args.channel, role)
        .once(args.no_reconnect)
        .speak_v2(&[feature::ACKS], false);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut stopping = false;
    let code = loop {
        let mut conn = tokio::select! {
            r = link.connect_link() => match r? {
                Link::V2(conn, _) => conn,
                Link::V1(_) => anyhow::bail!("the broker speaks protocol 1 only: work needs 2"),
            },
            _ = int.recv() => break ExitCode::from(exit::INTERRUPTED),
            _ = term.recv() => break ExitCode::from(exit::INTERRUPTED),
        };
        let ended = session(
            &args,
            &mut conn,
            &mut totals,
            &mut stopping,
            &mut int,
            &mut term,
        )
        .await?;
        match ended {
            Ended::Done(code) => break code,
            Ended::EndOfStream if args.no_reconnect => break ExitCode::SUCCESS,
            Ended::Lost(why) if args.no_reconnect => {
                anyhow::bail!("connection to {} broke: {why}", link.connector())
            }
            Ended::EndOfStream => link.lost("the broker closed the stream (end of stream)"),
            Ended::Lost(why) => link.lost(&why),
        }
    };
    tracing::info!(
        "work: {} job(s) done, {} failed, in {:.1?}",
        totals.done,
        totals.failed,
        started.elapsed()
    );
    Ok(code)
}

/// One connection's jobs: subscribe, run each job's command, answer for it.
async fn session(
    args: &WorkArgs,
    conn: &mut Connection,
    totals: &mut Totals,
    stopping: &mut bool,
    int: &mut tokio::signal::unix::Signal,
    term: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Ended> {
    // Never more jobs held than --count still asks for: the credit is
    // what may run at once, or what is left to do when that is less.
    let credit_for = |finished: u64| match args.count {
        Some(n) => u64::from(args.concurrency).min(n.saturating_sub(finished)) as u32,
        None => args.concurrency,
    };
    let mut credit = credit_for(totals.done + totals.failed);
    conn.send(encode::sub_acked(1, credit.max(1), args.channel.as_bytes()))
        .await?;
    let mut running: JoinSet<(u64, u32, Outcome, Duration)> = JoinSet::new();
    // Delivery id -> the task's handle, to kill it.
    let mut kills: HashMap<u64, tokio::sync::oneshot::Sender<()>> = HashMap::new();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(3600));
    let mut finished = totals.done + totals.failed;
    // Deliveries received after this worker stopped taking jobs.
    let mut unrun = 0u64;
    if *stopping {
        return Ok(Ended::Done(ExitCode::from(exit::INTERRUPTED)));
    }
    loop {
        if (*stopping || args.count.is_some_and(|n| finished >= n))
            && running.is_empty()
            && unrun > 0
        {
            tracing::info!(
                "{unrun} job(s) received and not run: the broker gives them to other workers"
            );
            unrun = 0;
        }
        if *stopping && running.is_empty() {
            let _ = conn.send(Bytes::new()).await;
            return Ok(Ended::Done(ExitCode::from(exit::INTERRUPTED)));
        }
        if args.count.is_some_and(|n| finished >= n) && running.is_empty() {
            let _ = conn.send(Bytes::new()).await;
            return Ok(Ended::Done(ExitCode::SUCCESS));
        }
        tokio::select! {
            frame = conn.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => return Ok(lost(&mut running, kills, e.to_string()).await),
                    None => return Ok(lost(&mut running, kills, "closed without end-of-stream".into()).await),
                };
                match decode_broker(frame) {
                    Ok(BrokerFrame::Subscribed { ack_wait_ms, .. }) => {
                        // WORKING well within the ack wait.
                        let wait = Duration::from_millis(u64::from(ack_wait_ms.unwrap_or(30_000)));
                        heartbeat = tokio::time::interval((wait / 3).max(Duration::from_millis(50)));
                        heartbeat.reset();
                        tracing::info!(
                            "taking jobs from {} ({} at a time, ack wait {:?})",
                            args.channel,
                            args.concurrency,
                            wait
                        );
                    }
                    Ok(BrokerFrame::Msg { delivery, attempt, payload, .. }) => {
                        let over = args.count.is_some_and(|n| finished + running.len() as u64 >= n);
                        if *stopping || over {
                            // Sent before the broker heard the credit fall: not
                            // run, and not answered (a NAK would count as a
                            // failure of the job). The broker takes it back when
                            // this worker leaves.
                            unrun += 1;
                            continue;
                        }
                        let child = spawn(args, delivery, attempt)
                            .map_err(|e| exit::usage(format!("cannot run {:?}: {e}", args.command[0])));
                        let child = match child {
                            Ok(c) => c,
                            Err(e) => {
                                conn.send(encode::answer(Answer::Nak(0), false, &[delivery])).await?;
                                let _ = conn.send(Bytes::new()).await;
                                return Err(e);
                            }
                        };
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        kills.insert(delivery, tx);
                        running.spawn(job(child, payload, args.timeout, rx, delivery, attempt));
                    }
                    Ok(BrokerFrame::NotHeld { count, first }) => {
                        tracing::warn!("the broker holds no delivery {first} ({count} answer(s) not applied): it was taken back");
                    }
                    Ok(BrokerFrame::Ended { reason, text, .. }) => {
                        return Err(exit::Refused {
                            addr: args.target.host.clone(),
                            why: format!("{}: {} ({text})", args.channel, crate::client::v2::reason_name(reason)),
                            lasting: true,
                        }.into());
                    }
                    Ok(BrokerFrame::Ping(token)) => conn.send(encode::token(kind::PONG, token)).await?,
                    Ok(BrokerFrame::EndOfStream) => {
                        kill_all(&mut running, kills).await;
                        return Ok(Ended::EndOfStream);
                    }
                    Ok(BrokerFrame::Error { text, .. }) => {
                        return Ok(lost(&mut running, kills, format!("the broker said: {text}")).await);
                    }
                    Ok(_) => {}
                    Err(e) => return Ok(lost(&mut running, kills, format!("a frame this client cannot read: {e}")).await),
                }
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok((delivery, attempt, outcome, took)) = done else { continue };
                kills.remove(&delivery);
                finished += 1;
                let answer = if outcome.done() {
                    totals.done += 1;
                    Answer::Ack
                } else {
                    totals.failed += 1;
                    Answer::Nak(0)
                };
                tracing::info!(
                    "job {delivery} (attempt {attempt}): {} in {took:.1?}, {}",
                    outcome.shown(),
                    if outcome.done() { "acknowledged" } else { "sent back (NAK)" }
                );
                conn.send(encode::answer(answer, false, &[delivery])).await?;
                let now = credit_for(finished);
                if now != credit && !*stopping {
                    credit = now;
                    conn.send(encode::credit(1, credit)).await?;
                }
            }
            _ = heartbeat.tick(), if !kills.is_empty() => {
                let ids: Vec<u64> = kills.keys().copied().collect();
                conn.send(encode::answer(Answer::Working, false, &ids)).await?;
            }
            _ = signal_recv(int, term) => {
                if *stopping {
                    // Asked twice: now. What ran is tried again elsewhere.
                    let ids: Vec<u64> = kills.keys().copied().collect();
                    kill_all(&mut running, kills).await;
                    if !ids.is_empty() {
                        let _ = conn.send(encode::answer(Answer::Nak(0), false, &ids)).await;
                    }
                    let _ = conn.send(Bytes::new()).await;
                    tracing::warn!("stopped: {} running job(s) killed, to be tried again", ids.len());
                    return Ok(Ended::Done(ExitCode::from(exit::INTERRUPTED)));
                }
                *stopping = true;
                // No more jobs: the broker passes this worker over.
                conn.send(encode::credit(1, 0)).await?;
                tracing::info!(
                    "stopping: waiting for {} running job(s) (again to kill them)",
                    running.len()
                );
            }
        }
    }
}

async fn signal_recv(
    int: &mut tokio::signal::unix::Signal,
    term: &mut tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// The connection is gone, and with it every job it held (the broker gives
/// them to other workers): what runs is killed.
async fn lost(
    running: &mut JoinSet<(u64, u32, Outcome, Duration)>,
    kills: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
    why: String,
) -> Ended {
    let n = kills.len();
    kill_all(running, kills).await;
    if n > 0 {
        tracing::warn!(
            "connection lost: {n} running job(s) killed (the broker hands them to other workers)"
        );
    }
    Ended::Lost(why)
}

async fn kill_all(
    running: &mut JoinSet<(u64, u32, Outcome, Duration)>,
    kills: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
) {
    for (_, k) in kills {
        let _ = k.send(());
    }
    while running.join_next().await.is_some() {}
}

fn spawn(args: &WorkArgs, delivery: u64, attempt: u32) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("AIOQ_CHANNEL", &args.channel)
        .env("AIOQ_DELIVERY", delivery.to_string())
        .env("AIOQ_ATTEMPT", attempt.to_string())
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// Runs one job's command to its end (or its timeout, or a kill).
async fn job(
    mut child: tokio::process::Child,
    payload: Bytes,
    timeout: Option<Duration>,
    kill: tokio::sync::oneshot::Receiver<()>,
    delivery: u64,
    attempt: u32,
) -> (u64, u32, Outcome, Duration) {
    let started = Instant::now();
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is no failure.
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => Outcome::Exit(c),
                (None, Some(sig)) => Outcome::Signal(sig),
                (None, None) => Outcome::Exit(-1),
            },
            Err(_) => Outcome::Exit(-1),
        },
        _ = limit => {
            let _ = child.kill().await;
            Outcome::TimedOut
        }
        _ = kill => {
            let _ = child.kill().await;
            Outcome::Killed
        }
    };
    (delivery, attempt, outcome, started.elapsed())
}
