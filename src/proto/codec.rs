//! Frame codec: a 4-byte big-endian length, then that many bytes.
//!
//! Built on tokio-util's `LengthDelimitedCodec`. The only thing added is a look at
//! the length prefix before the inner codec sees it, so that an oversized frame is
//! refused with the announced length in the error (for the broker's log) and before
//! a single byte of its body is buffered.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Why a stream of frames could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame longer than the limit.
    #[error("frame of {announced} bytes announced, limit is {max}")]
    TooLarge { announced: u64, max: usize },
    /// The socket failed or closed in the middle of a frame.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the peer closed its side in the middle of a frame.
    pub fn is_truncated(&self) -> bool {
        matches!(self, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
    }
}

/// Length-prefixed frames with an enforced maximum length.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// The inner codec has consumed a header and waits for its body, so the
    /// buffer no longer starts with a length prefix.
    in_body: bool,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max_frame)
            .new_codec();
        Self {
            inner,
            max: max_frame,
            in_body: false,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// True when a frame's header has been read and its body is still due.
    pub fn mid_frame(&self) -> bool {
        self.in_body
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(super::DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if !self.in_body && src.len() >= 4 {
            let announced = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as u64;
            if announced > self.max as u64 {
                return Err(FrameError::TooLarge {
                    announced,
                    max: self.max,
                });
            }
        }
        let had_header = self.in_body || src.len() >= 4;
        let frame = self.inner.decode(src)?;
        self.in_body = frame.is_none() && had_header;
        Ok(frame.map(BytesMut::freeze))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed with {} bytes of a frame unread",
                    src.len()
                ),
            ))),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> std::io::Result<()> {
        self.inner.encode(item, dst)
    }
}

/// Appends one frame made of two parts, `head` then `payload` (a protocol
/// v2 `MSG`), to `dst`.
pub fn put_parts(dst: &mut BytesMut, head: &[u8], payload: &[u8]) {
    dst.reserve(4 + head.len() + payload.len());
    dst.extend_from_slice(&((head.len() + payload.len()) as u32).to_be_bytes());
    dst.extend_from_slice(head);
    dst.extend_from_slice(payload);
}

/// Appends one frame to `dst` without going through a codec: used where frames
/// are batched by hand.
pub fn put_frame(dst: &mut BytesMut, payload: &[u8]) {
    dst.reserve(4 + payload.len());
    dst.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    dst.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_frame_split_across_reads() {
        let mut codec = FrameCodec::new(1024);
        let wire = frame(b"hello world");
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let out = codec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert!(out.is_none(), "frame complete too early at byte {i}");
            } else {
                assert_eq!(out.unwrap(), Bytes::from_static(b"hello world"));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_coalesced_frames_in_order() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        for p in [&b"/topic/a"[..], b"one", b"", b"two"] {
            buf.extend_from_slice(&frame(p));
        }
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, vec![&b"/topic/a"[..], b"one", b"", b"two"]);
    }

    #[test]
    fn refuses_oversized_frame_from_header_alone() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::from(&17u32.to_be_bytes()[..]);
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { announced, max }) => {
                assert_eq!((announced, max), (17, 16));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // A frame exactly at the limit is fine.
        let mut buf = BytesMut::from(&frame(&[7u8; 16])[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 16);
    }

    #[test]
    fn huge_announcement_does_not_reserve_memory() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn eof_in_the_middle_of_a_frame_is_an_error() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&frame(b"abcdef")[..7]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(err.is_truncated(), "{err}");
        let mut empty = BytesMut::new();
        assert!(codec.decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn encoder_and_put_frame_agree() {
        let mut codec = FrameCodec::new(1024);
        let mut a = BytesMut::new();
        codec.encode(Bytes::from_static(b"xyz"), &mut a).unwrap();
        let mut b = BytesMut::new();
        put_frame(&mut b, b"xyz");
        assert_eq!(a, b);
        assert_eq!(&a[..], &frame(b"xyz")[..]);
    }
}
