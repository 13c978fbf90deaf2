//! Arbitrary bytes, cut into arbitrary reads, through the frame decoder: it
//! never panics, never yields a frame over the limit, and reads the same
//! frames however the bytes are cut.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

use aioq::proto::FrameCodec;

const MAX: usize = 1024;

/// Decodes `data` fed in pieces of the given sizes; stops at the first error.
fn decode(data: &[u8], cuts: &[u8]) -> (Vec<bytes::Bytes>, bool) {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = data;
    let mut cut = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cut.next().unwrap_or(&255) as usize).max(1).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= MAX, "frame of {} bytes passed a {MAX} limit", f.len());
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|input: (&[u8], &[u8])| {
    let (data, cuts) = input;
    let whole = decode(data, &[255]);
    let pieces = decode(data, if cuts.is_empty() { &[1] } else { cuts });
    assert_eq!(whole, pieces, "the same bytes read differently when cut differently");
    // What was decoded encodes back to the bytes it came from.
    let mut codec = FrameCodec::new(MAX);
    let mut out = BytesMut::new();
    for f in &whole.0 {
        codec.encode(f.clone(), &mut out).unwrap();
    }
    assert_eq!(&out[..], &data[..out.len()]);
});
