//! The frame decoder against arbitrary bytes split at arbitrary points: it must never panic, never
//! buffer past its limit, and stop at the first error.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringnode::frame::{FrameDecoder, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte chooses the chunk size, the rest is the stream.
    let chunk = usize::from(data[0]).max(1);
    let limit = 4096u32;
    let mut dec = FrameDecoder::new(limit);
    for piece in data[1..].chunks(chunk) {
        dec.push(Bytes::copy_from_slice(piece));
        assert!(dec.buffered() <= HEADER_LEN + limit as usize + piece.len());
        while let Some(r) = dec.next_frame() {
            match r {
                Ok(f) => assert!(f.payload.len() <= limit as usize),
                Err(_) => {
                    assert_eq!(dec.buffered(), 0);
                    return;
                }
            }
        }
    }
});
