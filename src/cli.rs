//! The command line: one clap tree for every subcommand.

use clap::{ArgAction, Parser, Subcommand};

use crate::cmd;

const AFTER_HELP: &str = "\
Examples:
  aioq serve                                   # broker on 127.0.0.1:25000
  aioq listen --channel /queue/jobs            # a worker
  aioq listen --channel /topic/news            # a subscriber
  aioq send --channel /queue/jobs --interval 0.5
  tail -f app.log | aioq send --channel /topic/logs --stdin
  aioq bench --scenario isolation

Environment:
  AIOQ_HOST, AIOQ_PORT   the broker clients connect to (listen, send, work, requeue,
                         metrics; watch-db --broker-host, --broker-port)
  AIOQ_TLS, AIOQ_TLS_CA, AIOQ_TLS_CERT, AIOQ_TLS_KEY
                         the clients' --tls, --tls-ca, --tls-cert, --tls-key
  AIOQ_LISTEN_HOST, AIOQ_LISTEN_PORT
                         where `aioq serve` listens
  AIOQ_CONFIG, AIOQ_DATA_DIR
                         serve's --config and --data-dir
  AIOQ_DSN               watch-db's --dsn
  NO_COLOR               no colour in logs and tables
  RUST_LOG               log filter, overrides -v/-q (e.g. RUST_LOG=aioq=debug)

Exit status:
  0    success
  1    runtime failure (broken connection with --no-reconnect, I/O error,
       bench below --min-isolation)
  2    usage error (bad flag or value)
  3    the broker cannot be reached (connection refused, unknown host)
  4    send: messages dropped because its buffer overflowed while disconnected
  5    --no-reconnect: the broker turned the connection away at once
  130  SIGINT or SIGTERM cut short a job with an end (listen --count, send
       --count or --message); where a signal is how a command ends (serve,
       watch-db, metrics, an endless listen or send) it stops cleanly, exit 0";

#[derive(Debug, Parser)]
#[command(
    name = "aioq",
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol 1)"),
    about = "A tiny message broker and async-systems toolbox",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v debug, -vv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output on stderr (-q warnings only, -qq errors only).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the message broker.
    Serve(cmd::serve_args::ServeArgs),
    /// Subscribe to a channel and print what arrives.
    Listen(cmd::listen::ListenArgs),
    /// Publish messages to a channel.
    Send(cmd::send::SendArgs),
    /// Run a command for each job of a /queue channel, acknowledging it by its exit status.
    Work(cmd::work::WorkArgs),
    /// Move messages (dead letters) from one /queue channel back to another.
    Requeue(cmd::requeue::RequeueArgs),
    /// Measure isolation, throughput, latency and fan-out of a broker.
    Bench(cmd::bench::BenchArgs),
    /// PostgreSQL change feed with a coherent cache, an HTTP API and forwarding.
    WatchDb(cmd::watch_db::WatchDbArgs),
    /// Application metrics through the broker: report, collect, chart.
    Metrics(cmd::metrics::MetricsArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(cmd::gen::CompletionsArgs),
    /// Write man pages for aioq and each subcommand.
    Man(cmd::gen::ManArgs),
}

impl Cli {
    pub fn verbosity(&self) -> i8 {
        (self.verbose.min(10) as i8) - (self.quiet.min(10) as i8)
    }
}
