//! The aioq wire protocol (`PROTOCOL.md`, version 1): length-prefixed frames and
//! what a sequence of them means.
//!
//! Every subcommand speaks through this module, so the broker and the clients can
//! never disagree about framing.

pub mod codec;
pub mod message;

pub use codec::{FrameCodec, FrameError};
pub use message::Request;

/// Protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes of the big-endian length in front of every frame.
pub const LEN_PREFIX: usize = 4;

/// Largest frame the broker accepts by default (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Longest channel name by default (1 KiB).
pub const DEFAULT_MAX_CHANNEL: usize = 1024;

/// Channels whose name starts with this prefix share messages among workers.
pub const QUEUE_PREFIX: &[u8] = b"/queue";

/// The channel a publish-only client subscribes to by convention.
pub const NULL_CHANNEL: &str = "/null";

/// Whether `name` is a point-to-point (round robin) channel.
pub fn is_queue(name: &[u8]) -> bool {
    name.starts_with(QUEUE_PREFIX)
}
