//! The aioq wire protocol (`PROTOCOL.md`): length-prefixed frames and what a
//! sequence of them means under version 1; [`v2`] reads and writes the typed
//! frames of version 2's draft.
//!
//! Every subcommand speaks through this module, so the broker and the clients can
//! never disagree about framing.

pub mod codec;
pub mod message;
pub mod v2;

pub use codec::{FrameCodec, FrameError};
pub use message::Request;

/// Protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes of the big-endian length in front of every frame.
pub const LEN_PREFIX: usize = 4;

/// Largest frame the broker accepts by default (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Longest channel name by default (1 KiB).
pub const DEFAULT_MAX_CHANNEL: usize = 1024;

/// Channels whose name starts with this prefix share messages among workers.
pub const QUEUE_PREFIX: &[u8] = b"/queue";

/// The channel a publish-only client subscribes to: the broker subscribes it
/// to nothing, and a publish there reaches nobody (counted as unrouted).
pub const NULL_CHANNEL: &str = "/null";

/// True when a frame length is really the start of a TLS record (a
/// handshake or an alert, version 3.x): the peer speaks TLS where plain
/// frames were expected.
pub fn looks_like_tls(announced: u64) -> bool {
    let [_, _, _, _, kind, major, _, _] = announced.to_be_bytes();
    matches!(kind, 0x15 | 0x16) && major == 0x03
}

/// Whether `name` is the subscribe-to-nothing channel.
pub fn is_null(name: &[u8]) -> bool {
    name == NULL_CHANNEL.as_bytes()
}

/// A channel name (client text) as it may appear in a log line or on a
/// terminal: invalid UTF-8 replaced, control characters escaped, so no name can
/// end a log line early or steer a terminal.
pub fn shown(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if !text.chars().any(char::is_control) {
        return text.into_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether `name` is a point-to-point (round robin) channel.
pub fn is_queue(name: &[u8]) -> bool {
    name.starts_with(QUEUE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_names_cannot_break_a_line_or_steer_a_terminal() {
        assert_eq!(shown(b"/topic/plain"), "/topic/plain");
        assert_eq!(
            shown(b"/topic/x\nfake\r\x1b[2J"),
            "/topic/x\\nfake\\r\\u{1b}[2J"
        );
        assert_eq!(shown(b"/topic/\xff"), "/topic/\u{fffd}");
    }
}
