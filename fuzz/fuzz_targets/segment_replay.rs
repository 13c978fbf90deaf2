//! Arbitrary bytes as a segment of the durable store, read back as a
//! starting broker reads it: never a panic, and no allocation past what
//! the bytes could hold (a length field claiming a gigabyte is damage, not
//! a reason to allocate one).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let held = aioq::broker::replay_segment(data);
    // Every unsettled message takes at least its record's frame and fields.
    assert!(held <= data.len() / 20, "{held} messages from {} bytes", data.len());
});
