//! What frames mean once the subscribe frame is past: pairs of (channel, payload),
//! or an empty frame saying goodbye.

use bytes::Bytes;

/// One thing a connected client asks of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Route `payload` to `channel`.
    Publish { channel: Bytes, payload: Bytes },
    /// The client is done: flush what it is owed and close.
    Goodbye,
}

/// Why a frame broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("channel name of {len} bytes, limit is {max}")]
    ChannelTooLong { len: usize, max: usize },
}

/// Checks a channel name frame (subscribe or publish). `Ok(None)` is the empty
/// frame, which means goodbye.
pub fn channel_name(frame: Bytes, max: usize) -> Result<Option<Bytes>, ProtocolError> {
    if frame.is_empty() {
        Ok(None)
    } else if frame.len() > max {
        Err(ProtocolError::ChannelTooLong {
            len: frame.len(),
            max,
        })
    } else {
        Ok(Some(frame))
    }
}

/// Pairs frames into requests: feed it every frame after the subscribe frame.
#[derive(Debug)]
pub struct RequestParser {
    max_channel: usize,
    channel: Option<Bytes>,
}

impl RequestParser {
    pub fn new(max_channel: usize) -> Self {
        Self {
            max_channel,
            channel: None,
        }
    }

    /// Returns a request once a frame completes one.
    pub fn push(&mut self, frame: Bytes) -> Result<Option<Request>, ProtocolError> {
        match self.channel.take() {
            Some(channel) => Ok(Some(Request::Publish {
                channel,
                payload: frame,
            })),
            None => match channel_name(frame, self.max_channel)? {
                None => Ok(Some(Request::Goodbye)),
                Some(name) => {
                    self.channel = Some(name);
                    Ok(None)
                }
            },
        }
    }

    /// True between a channel frame and its payload frame.
    pub fn mid_pair(&self) -> bool {
        self.channel.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn pairs_channel_and_payload() {
        let mut p = RequestParser::new(16);
        assert_eq!(p.push(b(b"/topic/a")).unwrap(), None);
        assert!(p.mid_pair());
        assert_eq!(
            p.push(b(b"hi")).unwrap(),
            Some(Request::Publish {
                channel: b(b"/topic/a"),
                payload: b(b"hi")
            })
        );
        assert!(!p.mid_pair());
    }

    #[test]
    fn empty_payload_is_still_a_publish_and_empty_channel_is_goodbye() {
        let mut p = RequestParser::new(16);
        p.push(b(b"/q")).unwrap();
        assert_eq!(
            p.push(b(b"")).unwrap(),
            Some(Request::Publish {
                channel: b(b"/q"),
                payload: b(b"")
            })
        );
        assert_eq!(p.push(b(b"")).unwrap(), Some(Request::Goodbye));
    }

    #[test]
    fn long_channel_name_is_a_protocol_error() {
        let mut p = RequestParser::new(4);
        assert_eq!(
            p.push(b(b"/topic")),
            Err(ProtocolError::ChannelTooLong { len: 6, max: 4 })
        );
    }
}
