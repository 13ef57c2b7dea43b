//! The native wire format as a pure codec (specified in `docs/PROTOCOL.md`): bytes in, frame
//! headers and payload slices (or a typed wire error) out; frames in, headers out. No I/O, no
//! session state (what frames mean in order — HELLO first, PING answered — is `session`'s), and
//! no allocation per frame beyond what a frame that spans two receive buffers needs.
//!
//! ```text
//!  0        1        2        3        4                                 8
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! |  kind  | flags  |    reserved (0) |      payload length (u32, BE)     |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! ```
//!
//! Knows nothing of sockets or rings.

mod decode;
mod encode;

pub use decode::{DecodeStats, FrameDecoder};
pub use encode::{close_frame, encode_to_vec, header, hello_payload, FrameEncoder};

use bytes::Bytes;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// The first bytes of a HELLO payload.
pub const MAGIC: &[u8; 4] = b"RNOD";
/// Default largest payload a decoder accepts.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;
/// Smallest payload limit that still lets a HELLO (8 bytes) through.
pub const MIN_MAX_PAYLOAD: u32 = 8;
/// Largest payload any decoder may be configured to accept.
pub const MAX_PAYLOAD_LIMIT: u32 = 64 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Opens every connection: magic, version, flags, extensions.
    Hello = 1,
    /// Application data.
    Data = 2,
    /// The sender is closing: error code and reason.
    Close = 3,
    /// Liveness probe.
    Ping = 4,
    /// Answer to a ping.
    Pong = 5,
}

impl Kind {
    /// The kind for a wire byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Data,
            3 => Kind::Close,
            4 => Kind::Ping,
            5 => Kind::Pong,
            _ => return None,
        })
    }
}

/// One frame: its payload is a slice of a receive buffer (or of the sender's buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The kind.
    pub kind: Kind,
    /// Flags (none defined in version 1; must be zero).
    pub flags: u8,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A DATA frame.
    pub fn data(payload: Bytes) -> Frame {
        Frame { kind: Kind::Data, flags: 0, payload }
    }
}

/// Why a byte stream is not well-formed frames. Each has a wire code (sent in the CLOSE frame);
/// frames that are well-formed but out of order (no HELLO first, say) are the session's errors
/// (`session::SessionError`), and the two share one numbering of close codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The kind byte is not one this version knows.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// Flag bits that version 1 does not define.
    #[error("undefined flags {0:#04x} on a frame")]
    BadFlags(u8),
    /// The reserved header bytes are not zero.
    #[error("reserved header bytes are not zero")]
    BadReserved,
    /// The announced payload is larger than the limit; rejected before any payload is buffered.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A payload whose length does not fit its kind (a CLOSE shorter than its code).
    #[error("bad length {len} for a {kind:?} frame")]
    BadLength {
        /// The kind.
        kind: Kind,
        /// The length.
        len: u32,
    },
}

impl FrameError {
    /// The code carried in the CLOSE frame (see `docs/PROTOCOL.md`).
    pub fn code(&self) -> u16 {
        match self {
            FrameError::UnknownKind(_) => 1,
            FrameError::BadFlags(_) => 2,
            FrameError::BadReserved => 3,
            FrameError::TooLarge { .. } => 4,
            FrameError::BadLength { .. } => 9,
        }
    }
}

/// Close code for a normal close.
pub const CLOSE_NORMAL: u16 = 0;
/// Close code: the peer did not complete the handshake (HELLO) within the server's limit.
pub const CLOSE_HANDSHAKE_TIMEOUT: u16 = 10;
/// Close code: nothing was received or sent within the server's idle limit.
pub const CLOSE_IDLE_TIMEOUT: u16 = 11;
