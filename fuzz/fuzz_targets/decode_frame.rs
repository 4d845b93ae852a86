//! Feeds arbitrary bytes to the frame decoder as one read from a peer.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peerfold_protocol::framing::FrameCodec;

fuzz_target!(|data: &[u8]| {
    let codec = FrameCodec::new(64 * 1024);
    let mut src = BytesMut::from(data);
    // Decode until the buffer is incomplete (`Ok(None)`) or refused (`Err`).
    while let Ok(Some(_)) = codec.decode(&mut src) {}
    // End of stream: only an empty buffer is a clean end.
    assert_eq!(codec.finish(&src).is_ok(), src.is_empty());
});
