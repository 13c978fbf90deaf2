//! One integration-test binary (one link step): the real `aioq` binary, driven over
//! real sockets.

mod acks;
mod bench;
mod bench_jobs;
mod cli;
mod cluster;
mod docs;
mod durable;
mod generated;
mod hardening;
mod hostile;
mod listen_send;
mod metrics;
mod ops;
mod protocol_v2;
mod python_compat;
mod serve;
mod serve_limits;
mod tls;
mod util;
mod watch_db;
mod work;
