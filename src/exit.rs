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
/// The broker turned the connection away at once (`--no-reconnect`): its
/// connection limits, a refused certificate, or it was stopping.
pub const REFUSED: u8 = 5;
/// The broker refused some of what was published, and said why (protocol 2).
pub const REFUSED_PUBLISH: u8 = 6;
/// Stopped by SIGINT or SIGTERM before the work was done.
pub const INTERRUPTED: u8 = 130;

/// Marks an error chain as "the broker is unreachable", so `main` exits with
/// [`UNREACHABLE`].
#[derive(Debug, thiserror::Error)]
// The cause is the source, printed by the error chain: not in the text too.
#[error("cannot reach the broker at {addr}")]
pub struct Unreachable {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Marks an error chain as "the broker turned us away", so `main` exits with
/// [`REFUSED`].
#[derive(Debug, thiserror::Error)]
#[error("the broker at {addr} turned the connection away: {why}")]
pub struct Refused {
    pub addr: String,
    pub why: String,
    /// Waiting will not change it (a refused certificate, a subscription
    /// the rules forbid): a client stops rather than retry.
    pub lasting: bool,
}

/// Marks an error as a bad flag or value found after clap's own parsing (a
/// value out of range, a certificate file that cannot be read), so `main`
/// exits with [`USAGE`]. The message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A usage error saying `why`.
pub fn usage(why: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(why.into()))
}

/// Turns any error into a usage error with the same text, for checks of flag
/// values that fail deep down (reading a `--tls-*` file).
pub fn as_usage(err: anyhow::Error) -> anyhow::Error {
    if err.chain().any(|e| e.downcast_ref::<Usage>().is_some()) {
        return err;
    }
    usage(format!("{err:#}"))
}

/// Fails with a usage error unless `$cond` holds.
#[macro_export]
macro_rules! ensure_usage {
    ($cond:expr, $($why:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err($crate::exit::usage(format!($($why)+)));
        }
    };
}

/// Whether an error is one that waiting cannot fix: a usage error (flags
/// that do not match the broker) or a lasting refusal. A reconnecting client
/// stops on it instead of retrying for ever.
pub fn is_lasting(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<Usage>().is_some()
            || e.downcast_ref::<Refused>().is_some_and(|r| r.lasting)
    })
}

/// Picks the exit code for an error chain.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| e.downcast_ref::<Usage>().is_some()) {
        ExitCode::from(USAGE)
    } else if err
        .chain()
        .any(|e| e.downcast_ref::<Unreachable>().is_some())
    {
        ExitCode::from(UNREACHABLE)
    } else if err.chain().any(|e| e.downcast_ref::<Refused>().is_some()) {
        ExitCode::from(REFUSED)
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
