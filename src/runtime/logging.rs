//! Logs go to stderr through `tracing`, so stdout stays for data.

use tracing_subscriber::EnvFilter;

/// `verbosity` is the number of `-v` minus the number of `-q`. `RUST_LOG`, when
/// set, wins.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("aioq={level},warn")));
    let ansi = super::output::Stream::Stderr.styled();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
