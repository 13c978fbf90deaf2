//! Why a connection ended, as the first side to notice tells it: counted per
//! reason in the broker's stats, and said in its "disconnected" log line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent the goodbye frame.
    Goodbye,
    /// The client closed its side of the connection between frames.
    ClientClosed,
    /// The client closed after a channel frame, before its payload.
    ClosedMidPair,
    /// The client closed in the middle of a frame.
    ClosedMidFrame,
    /// A frame stayed half-sent for longer than `--frame-timeout`.
    HalfFrame(Duration),
    /// A frame in progress arrived slower than the minimum rate.
    FrameTooSlow { bytes: u64, within: Duration },
    /// The broker shut down before it could read and route everything the
    /// client sent: closed without end-of-stream, which would confirm it.
    InputCut,
    /// The client broke the protocol.
    Protocol(String),
    /// Reading the socket failed.
    ReadError(String),
    /// Writing the socket failed.
    WriteError(String),
    /// The socket accepted nothing for `--write-timeout`.
    WriteTimeout(Duration),
    /// Disconnected as a slow consumer (`--topic-overflow disconnect`).
    SlowConsumer,
    /// Shutdown's drain timeout passed before everything was written.
    DrainTimeout,
    /// The broker shut down and the connection was drained.
    BrokerShutdown,
    /// Closed for no reason either side recorded.
    Closed,
    /// A reload's access rules no longer allow its subscription.
    Denied,
}

impl EndReason {
    /// Every reason's counter name, in [`index`](Self::index) order.
    pub const NAMES: [&'static str; 16] = [
        "goodbye",
        "client_closed",
        "closed_mid_pair",
        "closed_mid_frame",
        "half_frame",
        "protocol_error",
        "read_error",
        "write_error",
        "write_timeout",
        "slow_consumer",
        "drain_timeout",
        "broker_shutdown",
        "closed",
        "frame_too_slow",
        "input_cut",
        "denied",
    ];

    pub fn index(&self) -> usize {
        match self {
            EndReason::Goodbye => 0,
            EndReason::ClientClosed => 1,
            EndReason::ClosedMidPair => 2,
            EndReason::ClosedMidFrame => 3,
            EndReason::HalfFrame(_) => 4,
            EndReason::Protocol(_) => 5,
            EndReason::ReadError(_) => 6,
            EndReason::WriteError(_) => 7,
            EndReason::WriteTimeout(_) => 8,
            EndReason::SlowConsumer => 9,
            EndReason::DrainTimeout => 10,
            EndReason::BrokerShutdown => 11,
            EndReason::Closed => 12,
            EndReason::FrameTooSlow { .. } => 13,
            EndReason::InputCut => 14,
            EndReason::Denied => 15,
        }
    }

    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Goodbye => write!(f, "said goodbye"),
            EndReason::ClientClosed => write!(f, "closed by the client"),
            EndReason::ClosedMidPair => {
                write!(f, "closed between a channel frame and its payload")
            }
            EndReason::ClosedMidFrame => write!(f, "closed in the middle of a frame"),
            EndReason::HalfFrame(t) => {
                write!(f, "a frame was left half-sent for more than {t:?}")
            }
            EndReason::Protocol(e) => write!(f, "protocol error: {e}"),
            EndReason::ReadError(e) => write!(f, "read error: {e}"),
            EndReason::WriteError(e) => write!(f, "write error: {e}"),
            EndReason::WriteTimeout(t) => write!(
                f,
                "the socket accepted nothing for {t:?} (peer gone or stalled)"
            ),
            EndReason::SlowConsumer => write!(f, "disconnected as a slow consumer"),
            EndReason::DrainTimeout => write!(f, "drain timeout passed"),
            EndReason::BrokerShutdown => write!(f, "broker shutting down"),
            EndReason::Closed => write!(f, "closed"),
            EndReason::Denied => write!(f, "no longer allowed by the access rules"),
            EndReason::InputCut => write!(
                f,
                "broker shutting down before all input was read (no end-of-stream)"
            ),
            EndReason::FrameTooSlow { bytes, within } => write!(
                f,
                "a frame arrived too slowly ({bytes} bytes in {within:?})"
            ),
        }
    }
}

/// One counter per [`EndReason`].
#[derive(Debug, Default)]
pub struct Ends([AtomicU64; EndReason::NAMES.len()]);

impl Ends {
    pub fn add(&self, reason: &EndReason) {
        self.0[reason.index()].fetch_add(1, Relaxed);
    }

    /// The reasons seen so far, with their counts.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        EndReason::NAMES
            .iter()
            .zip(&self.0)
            .map(|(n, c)| (*n, c.load(Relaxed)))
            .filter(|&(_, c)| c > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let all = [
            EndReason::Goodbye,
            EndReason::ClientClosed,
            EndReason::ClosedMidPair,
            EndReason::ClosedMidFrame,
            EndReason::HalfFrame(Duration::from_secs(1)),
            EndReason::Protocol(String::new()),
            EndReason::ReadError(String::new()),
            EndReason::WriteError(String::new()),
            EndReason::WriteTimeout(Duration::from_secs(1)),
            EndReason::SlowConsumer,
            EndReason::DrainTimeout,
            EndReason::BrokerShutdown,
            EndReason::Closed,
            EndReason::FrameTooSlow {
                bytes: 1,
                within: Duration::from_secs(1),
            },
            EndReason::InputCut,
        ];
        let ends = Ends::default();
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i);
            ends.add(r);
        }
        assert_eq!(ends.snapshot().len(), all.len());
        assert!(ends.snapshot().iter().all(|&(_, n)| n == 1));
    }

    #[test]
    fn log_text_is_kept() {
        assert_eq!(
            EndReason::HalfFrame(Duration::from_millis(500)).to_string(),
            "a frame was left half-sent for more than 500ms"
        );
        assert_eq!(EndReason::Goodbye.to_string(), "said goodbye");
    }
}
