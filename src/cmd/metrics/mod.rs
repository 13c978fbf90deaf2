//! `aioq metrics`: application performance monitoring through the broker.

mod board;
mod collect;
pub mod report;
pub mod sample;
mod web;

use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  aioq metrics report --name api --pid 4242     # another process's CPU and memory
  aioq metrics report --name red                # itself, with a demo workload
  aioq metrics collect                          # a live table in the terminal
  aioq metrics collect --http 127.0.0.1:8088    # and charts at http://127.0.0.1:8088/

Reports travel through the broker (--channel, /topic/metrics unless said): start
`aioq serve` first, or `aioq serve --metrics` to chart the broker too.";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct MetricsArgs {
    #[command(subcommand)]
    pub command: MetricsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MetricsCommand {
    /// Sample a process's CPU and memory and publish them.
    Report(report::ReportArgs),
    /// Gather samples: a live terminal table, JSON lines, or a web page.
    Collect(collect::CollectArgs),
}

pub async fn run(args: MetricsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MetricsCommand::Report(a) => report::run(a).await,
        MetricsCommand::Collect(a) => collect::run(a).await,
    }
}
