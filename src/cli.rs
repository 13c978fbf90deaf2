//! The command line: one clap tree for every subcommand.

use clap::{ArgAction, Parser, Subcommand};

use crate::cmd;

const AFTER_HELP: &str = "\
Examples:
  aioq serve                                   # broker on 127.0.0.1:25000
  aioq listen --channel /queue/jobs            # a worker
  aioq listen --channel /topic/news            # a subscriber
  aioq send --channel /queue/jobs --interval 0.5
  tail -f app.log | aioq send --channel /topic/logs --stdin";

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
    Serve(cmd::serve::ServeArgs),
    /// Subscribe to a channel and print what arrives.
    Listen(cmd::listen::ListenArgs),
    /// Publish messages to a channel.
    Send(cmd::send::SendArgs),
    /// Measure isolation, throughput, latency and fan-out of a broker.
    Bench(cmd::bench::BenchArgs),
}

impl Cli {
    pub fn verbosity(&self) -> i8 {
        (self.verbose.min(10) as i8) - (self.quiet.min(10) as i8)
    }
}
