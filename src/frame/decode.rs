//! The decoder: takes receive buffers as they come (a frame may be split anywhere), validates each
//! header before buffering its payload, and returns payloads as slices of the receive buffer when
//! a frame lies inside one (copying, and counting, only frames that span buffers).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::{Frame, FrameError, Kind, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAX_PAYLOAD_LIMIT};

/// What the decoder did, for the copy accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames decoded.
    pub frames: u64,
    /// Payload bytes decoded.
    pub payload_bytes: u64,
    /// Frames whose payload spanned receive buffers.
    pub spanning_frames: u64,
    /// Payload bytes copied because a frame spanned buffers and the caller asked for one
    /// contiguous payload ([`FrameDecoder::next_frame`]); [`FrameDecoder::next_frame_parts`]
    /// copies nothing.
    pub copied_bytes: u64,
    /// Bytes copied out of their receive buffers to bound the memory a connection holds (small
    /// chunks of a frame that trickles in, each of which would otherwise pin a whole buffer).
    pub compacted_bytes: u64,
}

impl std::ops::AddAssign for DecodeStats {
    fn add_assign(&mut self, o: DecodeStats) {
        self.frames += o.frames;
        self.payload_bytes += o.payload_bytes;
        self.spanning_frames += o.spanning_frames;
        self.copied_bytes += o.copied_bytes;
        self.compacted_bytes += o.compacted_bytes;
    }
}

/// A sans-IO frame decoder for one connection.
#[derive(Debug)]
pub struct FrameDecoder {
    chunks: VecDeque<Bytes>,
    /// What each chunk keeps alive (its receive buffer's size), in step with `chunks`.
    pins: VecDeque<usize>,
    /// Sum of `pins`: receive memory this decoder holds.
    held: usize,
    /// Most receive memory to hold before small chunks are copied (compacted) instead.
    hold_limit: usize,
    /// Compacted bytes, logically after `chunks`; sealed into `chunks` when a frame completes.
    tail: BytesMut,
    buffered: usize,
    max_payload: u32,
    failed: Option<FrameError>,
    stats: DecodeStats,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder that rejects payloads over `max_payload` bytes (clamped to
    /// [`MAX_PAYLOAD_LIMIT`]) and requires HELLO first.
    pub fn new(max_payload: u32) -> FrameDecoder {
        FrameDecoder {
            chunks: VecDeque::new(),
            pins: VecDeque::new(),
            held: 0,
            hold_limit: usize::MAX,
            tail: BytesMut::new(),
            buffered: 0,
            max_payload: max_payload.min(MAX_PAYLOAD_LIMIT),
            failed: None,
            stats: DecodeStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Bounds the receive memory this decoder holds (see [`FrameDecoder::push_pinned`]).
    pub fn set_hold_limit(&mut self, limit: usize) {
        self.hold_limit = limit;
    }

    /// Receive memory held: for each chunk, what it keeps alive.
    pub fn held(&self) -> usize {
        self.held + self.tail.capacity()
    }

    /// Adds received bytes (which keep only themselves alive).
    pub fn push(&mut self, bytes: Bytes) {
        let n = bytes.len();
        self.push_pinned(bytes, n);
    }

    /// Adds received bytes that keep `pinned` bytes alive (the receive buffer they are a slice
    /// of). Once the chunks held would pass half the hold limit, chunks using less than a quarter
    /// of their buffer are copied into one growing buffer instead (counted as compacted), and
    /// past the limit every chunk is; and whenever the decoder stops for more bytes, the newest
    /// chunk it keeps is copied out if it uses less than a quarter of its buffer. So a peer
    /// trickling a frame a byte at a time holds about the frame's size, not a buffer per byte,
    /// and a receive buffer is kept for an incomplete frame only while at least a quarter of it
    /// is that frame's data.
    pub fn push_pinned(&mut self, bytes: Bytes, pinned: usize) {
        if bytes.is_empty() || self.failed.is_some() {
            return;
        }
        let len = bytes.len();
        let pinned = pinned.max(len);
        self.buffered += len;
        let after = self.held + self.tail.len() + pinned;
        let wasteful = wasteful(len, pinned);
        // A small chunk joins the compacted bytes when they are the newest data (so a trickle grows
        // one buffer instead of making a chunk per receive), or once the bound nears.
        if after > self.hold_limit || (wasteful && (after > self.hold_limit / 2 || !self.tail.is_empty())) {
            self.tail.extend_from_slice(&bytes);
            self.stats.compacted_bytes += len as u64;
            return;
        }
        self.seal_tail();
        self.chunks.push_back(bytes);
        self.pins.push_back(pinned);
        self.held += pinned;
    }

    /// Moves the compacted bytes into the chunk list (keeping the order), as one chunk.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            // The whole buffer goes (not a split that would keep its spare room here), and is
            // counted at its capacity, which the frozen bytes keep alive.
            let cap = self.tail.capacity();
            let b = std::mem::take(&mut self.tail).freeze();
            self.pins.push_back(cap);
            self.held += cap;
            self.chunks.push_back(b);
        }
    }

    /// Called when the decoder waits for more bytes: if the newest chunk it keeps uses less than a
    /// quarter of the receive buffer it pins (the start of a frame at the end of a receive, a byte
    /// of a trickle), copy it out so the buffer goes back to the pool now, not when the frame
    /// completes. Every earlier chunk was settled the same way when it was the newest.
    fn settle(&mut self) {
        if !self.tail.is_empty() {
            return;
        }
        let (Some(last), Some(&pin)) = (self.chunks.back(), self.pins.back()) else {
            return;
        };
        if !wasteful(last.len(), pin) {
            return;
        }
        let last = self.chunks.pop_back().expect("checked");
        self.pins.pop_back();
        self.held -= pin;
        self.tail.extend_from_slice(&last);
        self.stats.compacted_bytes += last.len() as u64;
    }

    fn pop_chunk(&mut self) -> Option<Bytes> {
        let c = self.chunks.pop_front()?;
        self.held -= self.pins.pop_front().unwrap_or(0);
        Some(c)
    }

    fn peek_header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let mut n = 0;
        for c in self.chunks.iter().map(|c| &c[..]).chain(std::iter::once(&self.tail[..])) {
            let take = (HEADER_LEN - n).min(c.len());
            h[n..n + take].copy_from_slice(&c[..take]);
            n += take;
            if n == HEADER_LEN {
                break;
            }
        }
        h
    }

    /// The next frame's header, validated, without consuming anything: `None` until its 8 bytes
    /// have arrived. Lets a session judge a frame (a DATA before HELLO, an oversized HELLO) before
    /// its payload is buffered.
    pub fn peek(&self) -> Option<Result<(Kind, u8, u32), FrameError>> {
        if let Some(e) = &self.failed {
            return Some(Err(e.clone()));
        }
        (self.buffered >= HEADER_LEN).then(|| self.validate(&self.peek_header()))
    }

    fn validate(&self, h: &[u8; HEADER_LEN]) -> Result<(Kind, u8, u32), FrameError> {
        let kind = Kind::from_u8(h[0]).ok_or(FrameError::UnknownKind(h[0]))?;
        if h[1] != 0 {
            return Err(FrameError::BadFlags(h[1]));
        }
        if h[2] != 0 || h[3] != 0 {
            return Err(FrameError::BadReserved);
        }
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        if len > self.max_payload {
            return Err(FrameError::TooLarge { len, max: self.max_payload });
        }
        if kind == Kind::Close && len < 2 {
            return Err(FrameError::BadLength { kind, len });
        }
        Ok((kind, h[1], len))
    }

    fn advance(&mut self, mut n: usize) {
        self.buffered -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("advance within buffered bytes");
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.pop_chunk();
        }
    }

    fn take_payload(&mut self, len: usize) -> Bytes {
        if len == 0 {
            // Nothing may be buffered at all (an empty HELLO as the last bytes received).
            return Bytes::new();
        }
        self.buffered -= len;
        let front = self.chunks.front_mut().expect("payload is buffered");
        if front.len() >= len {
            let p = front.split_to(len);
            if front.is_empty() {
                self.pop_chunk();
            }
            return p;
        }
        // The frame spans receive buffers: gather it into one.
        self.stats.spanning_frames += 1;
        self.stats.copied_bytes += len as u64;
        let mut out = BytesMut::with_capacity(len);
        let mut need = len;
        while need > 0 {
            let front = self.chunks.front_mut().expect("payload is buffered");
            let take = need.min(front.len());
            out.extend_from_slice(&front[..take]);
            front.advance(take);
            if front.is_empty() {
                self.pop_chunk();
            }
            need -= take;
        }
        out.freeze()
    }

    /// Validates the next header and, once its whole frame is buffered, consumes the header.
    fn next_header(&mut self) -> Option<Result<(Kind, u8, u32), FrameError>> {
        if let Some(e) = &self.failed {
            return Some(Err(e.clone()));
        }
        if self.buffered < HEADER_LEN {
            self.settle();
            return None;
        }
        let h = self.peek_header();
        let (kind, flags, len) = match self.validate(&h) {
            Ok(v) => v,
            Err(e) => return Some(Err(self.fail(e))),
        };
        if self.buffered < HEADER_LEN + len as usize {
            self.settle();
            return None;
        }
        self.seal_tail();
        self.advance(HEADER_LEN);
        Some(Ok((kind, flags, len)))
    }

    fn count(&mut self, len: u32) {
        self.stats.frames += 1;
        self.stats.payload_bytes += u64::from(len);
    }

    /// The next frame: `None` when more bytes are needed, `Some(Err)` when the stream is invalid
    /// (after which the decoder yields nothing more: the connection must close). A payload that
    /// spans receive buffers is copied into one (and counted).
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        let (kind, flags, len) = match self.next_header()? {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let payload = self.take_payload(len as usize);
        self.count(len);
        Some(Ok(Frame { kind, flags, payload }))
    }

    /// Like [`FrameDecoder::next_frame`], but the payload is appended to `parts` as slices of the
    /// receive buffers it lies in — several when it spans buffers — so that a relay or an echo can
    /// send it on with a vectored send and nothing is ever copied. Returns kind, flags and length.
    pub fn next_frame_parts(&mut self, parts: &mut Vec<Bytes>) -> Option<Result<(Kind, u8, u32), FrameError>> {
        let (kind, flags, len) = match self.next_header()? {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let mut need = len as usize;
        self.buffered -= need;
        if need > 0 && self.chunks.front().is_some_and(|f| f.len() < need) {
            self.stats.spanning_frames += 1;
        }
        while need > 0 {
            let front = self.chunks.front_mut().expect("payload is buffered");
            if front.len() > need {
                parts.push(front.split_to(need));
                break;
            }
            need -= front.len();
            parts.push(self.pop_chunk().expect("front exists"));
        }
        self.count(len);
        Some(Ok((kind, flags, len)))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = Some(e.clone());
        self.chunks.clear();
        self.pins.clear();
        self.held = 0;
        self.tail = BytesMut::new();
        self.buffered = 0;
        e
    }
}

/// Whether `len` bytes that keep `pinned` bytes alive use less than a quarter of them: worth
/// copying out rather than holding the buffer.
fn wasteful(len: usize, pinned: usize) -> bool {
    len.saturating_mul(4) < pinned
}

#[cfg(test)]
mod tests {
    use super::super::{close_frame, encode_to_vec, hello_payload};
    use super::*;

    fn hello() -> Frame {
        Frame { kind: Kind::Hello, flags: 0, payload: hello_payload() }
    }

    #[test]
    fn frames_inside_one_buffer_are_slices_of_it() {
        let wire = Bytes::from(encode_to_vec(&[hello(), Frame::data(Bytes::from_static(b"abc"))]));
        let mut d = FrameDecoder::default();
        d.push(wire.clone());
        assert_eq!(d.next_frame().unwrap().unwrap().kind, Kind::Hello);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(&f.payload[..], b"abc");
        // Same memory as the receive buffer: no copy.
        assert!(wire.as_ptr_range().contains(&f.payload.as_ptr()));
        assert_eq!(d.stats().copied_bytes, 0);
        assert!(d.next_frame().is_none());
    }

    #[test]
    fn a_frame_split_across_buffers_is_copied_and_counted() {
        let wire = encode_to_vec(&[hello(), Frame::data(Bytes::from(vec![7u8; 100]))]);
        let mut d = FrameDecoder::default();
        d.push(Bytes::copy_from_slice(&wire[..30]));
        d.push(Bytes::copy_from_slice(&wire[30..]));
        d.next_frame().unwrap().unwrap();
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.payload.len(), 100);
        assert_eq!(d.stats().spanning_frames, 1);
        assert_eq!(d.stats().copied_bytes, 100);
    }

    #[test]
    fn a_spanning_frame_comes_out_in_parts_without_a_copy() {
        let wire =
            encode_to_vec(&[hello(), Frame::data(Bytes::from(vec![7u8; 100])), Frame::data(Bytes::from_static(b"x"))]);
        let mut d = FrameDecoder::default();
        d.push(Bytes::copy_from_slice(&wire[..30]));
        d.push(Bytes::copy_from_slice(&wire[30..]));
        let mut parts = Vec::new();
        assert_eq!(d.next_frame_parts(&mut parts), Some(Ok((Kind::Hello, 0, 8))));
        parts.clear();
        assert_eq!(d.next_frame_parts(&mut parts), Some(Ok((Kind::Data, 0, 100))));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 100);
        assert!(parts.iter().all(|p| p.iter().all(|&b| b == 7)));
        parts.clear();
        assert_eq!(d.next_frame_parts(&mut parts), Some(Ok((Kind::Data, 0, 1))));
        assert_eq!(parts, vec![Bytes::from_static(b"x")]);
        assert_eq!(d.stats().spanning_frames, 1);
        assert_eq!(d.stats().copied_bytes, 0);
    }

    /// Found by the fuzz target on the server's path: a HELLO announcing no payload, as the last
    /// bytes received, made `next_frame_parts` look for a payload chunk that did not exist (a
    /// panic: any client could stop a core with 8 bytes).
    #[test]
    fn an_empty_frame_alone_is_a_frame_not_a_panic() {
        let mut d = FrameDecoder::default();
        d.push(Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0]));
        let mut parts = Vec::new();
        assert_eq!(d.next_frame_parts(&mut parts), Some(Ok((Kind::Hello, 0, 0))));
        assert!(parts.is_empty());
        let mut d = FrameDecoder::default();
        d.push(Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(d.next_frame().map(|f| f.map(|f| f.payload.len())), Some(Ok(0)));
    }

    #[test]
    fn oversize_is_rejected_from_the_header_alone() {
        let mut d = FrameDecoder::new(1024);
        d.push(Bytes::from(encode_to_vec(&[hello()])));
        d.next_frame().unwrap().unwrap();
        // Only the header of a 1 GiB frame has arrived.
        d.push(Bytes::from_static(&[2, 0, 0, 0, 0x40, 0, 0, 0]));
        assert_eq!(d.next_frame(), Some(Err(FrameError::TooLarge { len: 1 << 30, max: 1024 })));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn every_bad_header_has_its_error() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![9, 0, 0, 0, 0, 0, 0, 0], FrameError::UnknownKind(9)),
            (vec![2, 1, 0, 0, 0, 0, 0, 0], FrameError::BadFlags(1)),
            (vec![2, 0, 0, 1, 0, 0, 0, 0], FrameError::BadReserved),
            (vec![3, 0, 0, 0, 0, 0, 0, 1, 0], FrameError::BadLength { kind: Kind::Close, len: 1 }),
        ];
        for (bytes, want) in cases {
            let mut d = FrameDecoder::default();
            d.push(Bytes::from(encode_to_vec(&[hello()])));
            d.next_frame().unwrap().unwrap();
            d.push(Bytes::from(bytes));
            assert_eq!(d.next_frame(), Some(Err(want)));
        }
        // Order is the session's business: the codec yields a DATA frame first, and a second
        // HELLO, as well-formed frames.
        let mut d = FrameDecoder::default();
        d.push(Bytes::from(encode_to_vec(&[Frame::data(Bytes::new()), hello(), hello()])));
        for kind in [Kind::Data, Kind::Hello, Kind::Hello] {
            assert_eq!(d.next_frame().map(|f| f.map(|f| f.kind)), Some(Ok(kind)));
        }
        let close = close_frame(4, "too large");
        assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 4);
    }
}
