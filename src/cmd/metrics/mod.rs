//! `aioq metrics`: application performance monitoring through the broker.

mod board;
mod collect;
pub mod report;
pub mod sample;
mod web;

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
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
