use std::process::ExitCode;

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue};
use clap::{CommandFactory, Parser};

use aioq::cli::{Cli, Command};
use aioq::cmd::serve_config::ServeLine;
use aioq::{cmd, exit, runtime};

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| name_the_variable(e).exit());
    // The bench's embedded broker would log every connection it serves: keep
    // its output to warnings unless asked.
    let quieter = matches!(cli.command, Command::Bench(_)) as i8;
    let logging = runtime::logging::init(cli.verbosity() - quieter);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = serve_threads(&cli) {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say(format_args!("aioq: error: cannot start the runtime: {e}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(args, serve_line()).await,
            Command::Listen(args) => cmd::listen::run(args).await,
            Command::Send(args) => cmd::send::run(args).await,
            Command::Work(args) => cmd::work::run(args).await,
            Command::Requeue(args) => cmd::requeue::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::WatchDb(args) => cmd::watch_db::run(args).await,
            Command::Metrics(args) => cmd::metrics::run(args).await,
            Command::Completions(args) => cmd::gen::completions(args, Cli::command()),
            Command::Man(args) => cmd::gen::man(args, Cli::command()),
        }
    });
    // Do not wait for a blocked stdin reader (`send --stdin`) to finish.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    let dropped = logging.dropped_lines();
    // Flushes the log lines still buffered before anything else is said.
    drop(logging);
    if dropped > 0 {
        say(format_args!(
            "aioq: {dropped} log line(s) dropped: stderr did not keep up"
        ));
    }
    match result {
        Ok(code) => code,
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say(format_args!("aioq: error: {e:#}"));
            exit::code_for(&e)
        }
    }
}

/// `serve --threads`, from the flag, the environment or the `--config` file
/// (read here once more: the runtime is built before `serve` reads it; a
/// file with errors is left for `serve` to report).
fn serve_threads(cli: &Cli) -> Option<usize> {
    let Command::Serve(args) = &cli.command else {
        return None;
    };
    let threads = match &args.config {
        // Parsed without `load`'s warnings: `serve` says them, once.
        Some(path) => cmd::serve_config::read_quietly(path)
            .ok()
            .and_then(|text| cmd::serve_config::parse(path, &text, &serve_line()).ok())
            .map_or(args.threads, |l| l.args.threads),
        None => args.threads,
    };
    // Half the cores by default (one on this project's two-core machines):
    // see the README's "Threads" for what was measured and why. TOKIO_WORKER_THREADS,
    // when set, is left to tokio.
    threads.map(usize::from).or_else(|| {
        std::env::var_os("TOKIO_WORKER_THREADS")
            .is_none()
            .then(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
    })
}

/// `serve`'s command line, for a `--config` file's settings to go under:
/// its definition with the global flags in it, and what followed `serve`
/// (global flags take no value, so the first `serve` is the subcommand).
fn serve_line() -> ServeLine {
    let mut cli = Cli::command();
    cli.build();
    let command = cli
        .find_subcommand("serve")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("serve"));
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .skip_while(|a| a != "serve")
        .skip(1)
        .collect();
    ServeLine::new(command, args)
}

/// One line on stderr. A stderr that cannot be written (a closed pipe) loses
/// the line, not the exit code: `eprintln!` would panic and exit 101.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A bad value that came from an environment variable (`AIOQ_PORT=abc`)
/// is reported by clap under the flag's name alone: add a tip naming the
/// variable, which is what the user has to fix.
fn name_the_variable(mut e: clap::Error) -> clap::Error {
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    let long = arg.split_whitespace().next().unwrap_or_default();
    let mut commands = vec![Cli::command()];
    let mut variable = None;
    while let Some(c) = commands.pop() {
        for a in c.get_arguments() {
            let Some(env) = a.get_env() else { continue };
            let named = a.get_long().is_some_and(|l| long == format!("--{l}"));
            if named && std::env::var_os(env).is_some_and(|v| v == value.as_str()) {
                variable = Some(env.to_string_lossy().into_owned());
            }
        }
        commands.extend(c.get_subcommands().cloned());
    }
    if let Some(var) = variable {
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![format!(
                "the value came from the environment: {var}={value}"
            )
            .into()]),
        );
    }
    e
}
