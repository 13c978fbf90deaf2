//! One module per subcommand; each turns its flags into a typed config and runs.

pub mod bench;
pub mod gen;
pub mod listen;
pub mod metrics;
pub mod requeue;
pub mod send;
pub mod serve;
pub mod serve_args;
pub mod serve_config;
pub mod serve_http;
pub mod watch_db;
pub mod work;
