//! The encoder: writes headers only. Payloads travel as the caller's `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Frame, Kind, HEADER_LEN, MAGIC, VERSION};

/// Writes frame headers into one reusable buffer; each header comes out as a `Bytes` slice of it,
/// so encoding allocates only when the buffer has to grow (and reclaims its space once the headers
/// handed out have been sent and dropped).
#[derive(Debug, Default)]
pub struct FrameEncoder {
    headers: BytesMut,
}

impl FrameEncoder {
    /// An encoder with room for `frames` headers before it grows.
    pub fn with_capacity(frames: usize) -> FrameEncoder {
        FrameEncoder { headers: BytesMut::with_capacity(frames * HEADER_LEN) }
    }

    /// The header of a frame of `kind` with `len` payload bytes.
    pub fn header(&mut self, kind: Kind, flags: u8, len: u32) -> Bytes {
        if self.headers.capacity() - self.headers.len() < HEADER_LEN {
            // Reclaims the space of headers already dropped, or grows.
            self.headers.reserve(64 * HEADER_LEN);
        }
        self.headers.put_slice(&header(kind, flags, len));
        self.headers.split().freeze()
    }

    /// Header and payload of `frame`, ready for a vectored send.
    pub fn encode(&mut self, frame: &Frame) -> [Bytes; 2] {
        [self.header(frame.kind, frame.flags, frame.payload.len() as u32), frame.payload.clone()]
    }
}

/// The 8 header bytes of a frame of `kind` with `len` payload bytes.
pub fn header(kind: Kind, flags: u8, len: u32) -> [u8; HEADER_LEN] {
    let l = len.to_be_bytes();
    [kind as u8, flags, 0, 0, l[0], l[1], l[2], l[3]]
}

/// The payload of this build's HELLO: magic, version, flags (none), no extensions.
pub fn hello_payload() -> Bytes {
    // Static: every connection sends one, and it never changes within a build.
    const HELLO: [u8; 8] = {
        let v = VERSION.to_be_bytes();
        [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], 0, 0]
    };
    Bytes::from_static(&HELLO)
}

/// A CLOSE frame with `code` and a UTF-8 `reason` (cut to 120 bytes on a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Frame {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut b = BytesMut::with_capacity(2 + end);
    b.put_u16(code);
    b.put_slice(&reason.as_bytes()[..end]);
    Frame { kind: Kind::Close, flags: 0, payload: b.freeze() }
}

/// Encodes frames into one contiguous buffer (tests, fuzzing and simple clients).
pub fn encode_to_vec(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&header(f.kind, f.flags, f.payload.len() as u32));
        out.extend_from_slice(&f.payload);
    }
    out
}
