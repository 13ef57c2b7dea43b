//! The decoder as the server drives it, against arbitrary bytes split at arbitrary points: chunks
//! pushed with the receive memory they pin (`push_pinned`, under a small hold limit, so chunks are
//! compacted), frames taken as payload slices (`next_frame_parts`) and re-encoded with `header`.
//! It must never panic, never hold more than its bounds, stop at the first error, and be
//! transparent: what it yields, re-encoded, is exactly the bytes it consumed. The session is fed
//! every frame too, and must never panic on any order of them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringnode::frame::{header, FrameDecoder, HEADER_LEN};
use ringnode::session::{Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first byte chooses the chunk size, the second how much memory each chunk pins and the
    // hold limit; the rest is the stream.
    let chunk = usize::from(data[0]).max(1);
    let pin_factor = usize::from(data[1] % 8) + 1;
    let hold_limit = 256 * (usize::from(data[1] >> 3) + 1);
    let stream = &data[2..];
    let limit = 4096u32;
    let mut dec = FrameDecoder::new(limit);
    // The session the server runs over the same frames: whatever they are, it answers without
    // panicking, and after an error or a CLOSE it accepts nothing more.
    let now = std::time::Instant::now();
    let mut session = Session::new(SessionConfig::default(), now);
    dec.set_hold_limit(hold_limit);
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut pushed = 0;
    for piece in stream.chunks(chunk) {
        dec.push_pinned(Bytes::copy_from_slice(piece), piece.len() * pin_factor);
        pushed += piece.len();
        loop {
            parts.clear();
            match dec.next_frame_parts(&mut parts) {
                None => break,
                Some(Ok((kind, flags, len))) => {
                    assert!(len <= limit);
                    assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), len as usize);
                    let _ = session.on_frame(now, kind, &parts);
                    while session.poll_transmit().is_some() {}
                    out.extend_from_slice(&header(kind, flags, len));
                    for p in &parts {
                        out.extend_from_slice(p);
                    }
                }
                Some(Err(_)) => {
                    assert_eq!(dec.buffered(), 0);
                    assert_eq!(dec.held(), 0);
                    return;
                }
            }
        }
        // Only an incomplete frame is left, and what it holds is bounded.
        assert!(dec.buffered() < HEADER_LEN + limit as usize);
        assert!(dec.held() <= hold_limit + 4 * (HEADER_LEN + limit as usize) + 64);
        assert_eq!(&out[..], &stream[..pushed - dec.buffered()], "re-encoded frames differ from the input");
    }
});
