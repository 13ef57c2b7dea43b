//! Properties of the frame codec: encode then decode is the identity for any frames and any split
//! of the bytes; no input, however split, panics or buffers past the limit.

use bytes::Bytes;
use proptest::prelude::*;
use ringnode::frame::{encode_to_vec, hello_payload, Frame, FrameDecoder, FrameEncoder, Kind, HEADER_LEN};

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
            // What is buffered never exceeds one header plus one frame under the limit, plus the
            // chunk that just arrived.
            prop_assert!(dec.buffered() <= HEADER_LEN + limit as usize + bytes.len());
            while let Some(r) = dec.next_frame() {
                if r.is_err() {
                    prop_assert_eq!(dec.buffered(), 0);
                    break;
                }
            }
        }
    }
}
