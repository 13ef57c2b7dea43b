//! Properties of the frame codec: encode then decode is the identity for any frames and any split
//! of the bytes; no input, however split, panics or buffers past the limit.

use bytes::Bytes;
use proptest::prelude::*;
use ringnode::frame::{encode_to_vec, header, hello_payload, Frame, FrameDecoder, FrameEncoder, Kind, HEADER_LEN};

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Data), Just(Kind::Ping), Just(Kind::Pong)]
}

fn frames() -> impl Strategy<Value = Vec<Frame>> {
    prop::collection::vec(
        (kind(), prop::collection::vec(any::<u8>(), 0..3000)).prop_map(|(kind, p)| Frame {
            kind,
            flags: 0,
            payload: Bytes::from(p),
        }),
        0..40,
    )
}

fn split(wire: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort();
    points.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points.into_iter().chain(std::iter::once(wire.len())) {
        if p > prev {
            out.push(Bytes::copy_from_slice(&wire[prev..p]));
            prev = p;
        }
    }
    out
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity_for_any_split(frames in frames(), cuts in prop::collection::vec(any::<usize>(), 0..60)) {
        let hello = Frame { kind: Kind::Hello, flags: 0, payload: hello_payload() };
        let mut all = vec![hello];
        all.extend(frames.iter().cloned());
        // Encode with the header-only encoder, as a sender would.
        let mut enc = FrameEncoder::with_capacity(4);
        let mut wire = Vec::new();
        for f in &all {
            for part in enc.encode(f) {
                wire.extend_from_slice(&part);
            }
        }
        prop_assert_eq!(&wire, &encode_to_vec(&all));
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for chunk in split(&wire, &cuts) {
            dec.push(chunk);
            while let Some(f) = dec.next_frame() {
                got.push(f.expect("valid stream decodes"));
            }
        }
        prop_assert_eq!(got, all);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_buffer_past_the_limit(bytes in prop::collection::vec(any::<u8>(), 0..5000), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        let limit = 1024u32;
        let mut dec = FrameDecoder::new(limit);
        for chunk in split(&bytes, &cuts) {
            dec.push(chunk);
            let mut failed = false;
            while let Some(r) = dec.next_frame() {
                if r.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                prop_assert_eq!(dec.buffered(), 0);
                break;
            }
            // Drained: what is left is one incomplete frame, header included, under the limit.
            prop_assert!(dec.buffered() < HEADER_LEN + limit as usize);
        }
    }

    /// The server's own path: payload slices (`next_frame_parts`) re-encoded with `header`, the
    /// chunks pushed with the receive memory they pin under a small hold limit (so some are
    /// compacted). Whatever the split, the pins and the limit, the bytes that come out are the
    /// bytes that went in, and the memory held stays bounded.
    #[test]
    fn the_servers_path_re_encodes_exactly_what_it_received(
        frames in frames(),
        cuts in prop::collection::vec(any::<usize>(), 0..200),
        pin_factor in 1usize..64,
        hold_limit in 0usize..100_000,
    ) {
        let hello = Frame { kind: Kind::Hello, flags: 0, payload: hello_payload() };
        let mut all = vec![hello];
        all.extend(frames.iter().cloned());
        let wire = encode_to_vec(&all);
        let limit = 4096u32;
        let mut dec = FrameDecoder::new(limit);
        dec.set_hold_limit(hold_limit);
        let mut out = Vec::new();
        let mut parts = Vec::new();
        let mut n = 0;
        for chunk in split(&wire, &cuts) {
            let len = chunk.len();
            dec.push_pinned(chunk, len * pin_factor);
            loop {
                parts.clear();
                let Some(r) = dec.next_frame_parts(&mut parts) else { break };
                let (kind, flags, len) = r.expect("valid stream decodes");
                prop_assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), len as usize);
                out.extend_from_slice(&header(kind, flags, len));
                for p in &parts {
                    out.extend_from_slice(p);
                }
                n += 1;
            }
            prop_assert!(dec.held() <= hold_limit + 4 * (HEADER_LEN + limit as usize) + 64);
        }
        prop_assert_eq!(n, all.len());
        prop_assert_eq!(out, wire);
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert_eq!(dec.held(), 0);
    }
}

/// A frame trickled one byte at a time, each byte "pinning" a 64 KiB receive buffer, holds about
/// the frame's size once the bound nears: never a buffer per byte.
#[test]
fn a_trickled_frame_is_compacted_within_the_hold_limit() {
    let payload = vec![7u8; 300_000];
    let mut wire = encode_to_vec(&[Frame { kind: Kind::Hello, flags: 0, payload: hello_payload() }]);
    wire.extend(encode_to_vec(&[Frame::data(Bytes::from(payload.clone()))]));
    let mut dec = FrameDecoder::new(1 << 20);
    let bound = 2 << 20;
    dec.set_hold_limit(bound);
    let mut most = 0;
    let mut got = None;
    for &b in &wire {
        dec.push_pinned(Bytes::copy_from_slice(&[b]), 64 * 1024);
        most = most.max(dec.held());
        while let Some(f) = dec.next_frame() {
            let f = f.unwrap();
            if f.kind == Kind::Data {
                got = Some(f.payload);
            }
        }
    }
    assert_eq!(got.as_deref(), Some(&payload[..]));
    // Without compaction this would be 300,016 × 64 KiB; with it, at most the bound plus the
    // compacted frame (and its buffer's growth).
    assert!(most <= bound + 2 * payload.len() + 64 * 1024, "held {most} bytes");
    assert!(dec.stats().compacted_bytes > 290_000, "{:?}", dec.stats());
    assert_eq!(dec.held(), 0);
}
