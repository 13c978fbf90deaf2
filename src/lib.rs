//! aioq: a tiny message broker and async-systems toolbox.
//!
//! Layout:
//! - [`proto`]: the wire protocol (frames, requests), shared by everything.
//! - [`broker`]: the broker core (`aioq serve`), embeddable (`aioq bench`).
//! - [`client`]: connecting, subscribing, reconnect backoff.
//! - [`cmd`]: one module per subcommand; [`cli`] is the clap tree.
//! - [`runtime`]: logging and signals; [`units`] and [`exit`]: CLI conventions.

pub mod broker;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod exit;
pub mod proto;
pub mod runtime;
pub mod tls;
pub mod units;
