//! What every subcommand shares besides the protocol: logging, signals, output.

pub mod backoff;
pub mod fd_limit;
pub mod http;
pub mod logging;
pub mod output;
pub mod shutdown;
