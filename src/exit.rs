//! Exit codes a script can rely on.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A runtime failure (broken connection with `--no-reconnect`, I/O error, ...).
pub const FAILURE: u8 = 1;
/// Bad flags or arguments (clap's own code).
pub const USAGE: u8 = 2;
/// The broker could not be reached (connection refused, unknown host).
pub const UNREACHABLE: u8 = 3;
/// Messages were lost on the client side (`send` overflowed its buffer).
pub const LOST: u8 = 4;
/// Stopped by SIGINT or SIGTERM before the work was done.
pub const INTERRUPTED: u8 = 130;

/// Marks an error chain as "the broker is unreachable", so `main` exits with
/// [`UNREACHABLE`].
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the broker at {addr}: {source}")]
pub struct Unreachable {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Picks the exit code for an error chain.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    if err
        .chain()
        .any(|e| e.downcast_ref::<Unreachable>().is_some())
    {
        ExitCode::from(UNREACHABLE)
    } else {
        ExitCode::from(FAILURE)
    }
}

/// True when the error is a closed stdout (`aioq listen | head`): not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
