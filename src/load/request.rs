//! What each connection sends: patterned payloads of a fixed size or a size range (different per
//! connection, so a reply that went astray fails the check), a custom payload, native frames, or an
//! HTTP/1.1 request; and the parser that recognises the replies to it.

use bytes::{BufMut, Bytes, BytesMut};

use super::reply::{DelimitedReplies, EchoReplies, FixedReplies, FramedReplies, HttpReplies, ReplyParser};
use super::{HttpRequest, LoadConfig, Mode, ReplyRule};
use crate::frame::{header, Kind};

/// One request, as where its payload lies: a range of the connection's pattern, or the fixed
/// payload (or HTTP request) whole. Eight bytes and no reference count: a request in flight is
/// kept as this, and its bytes are written straight into the next send; the reply parser gets a
/// slice of the pattern to check against (one reference count, no copy: memory stays a few
/// words per request however large the requests and however many are outstanding).
#[derive(Debug, Clone, Copy)]
pub(super) struct Req {
    start: u32,
    len: u32,
}

/// Builds one connection's requests.
pub(super) struct RequestSource {
    mode: Mode,
    /// The payload every request carries (`--payload`), or in HTTP mode the whole request.
    fixed: Option<Bytes>,
    pattern: Bytes,
    min: usize,
    max: usize,
    rng: u64,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

impl RequestSource {
    pub fn new(cfg: &LoadConfig, id: usize) -> RequestSource {
        let (min, max) = cfg.size;
        let mut rng = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let pattern: Bytes = (0..max.max(1)).map(|_| xorshift(&mut rng) as u8).collect::<Vec<u8>>().into();
        let fixed = match cfg.mode {
            Mode::Http => Some(http_request(&cfg.http, &cfg.target.to_string())),
            _ => cfg.payload.clone(),
        };
        RequestSource { mode: cfg.mode, fixed, pattern, min, max, rng }
    }

    /// The next request.
    pub fn next(&mut self) -> Req {
        if self.fixed.is_some() {
            // The fixed payload's length is its own (it may not fit a u32).
            return Req { start: 0, len: 0 };
        }
        let size = if self.max > self.min {
            self.min + (xorshift(&mut self.rng) as usize) % (self.max - self.min + 1)
        } else {
            self.max
        };
        // A different start in the pattern for each message, so shifted replies fail too (with one
        // size there is one start: the pattern is as long as the payload).
        let room = self.pattern.len() - size;
        let start = if room == 0 { 0 } else { (xorshift(&mut self.rng) as usize) % (room + 1) };
        Req { start: start as u32, len: size as u32 }
    }

    /// The payload of `r` (in HTTP mode, the whole request).
    fn payload(&self, r: Req) -> &[u8] {
        match &self.fixed {
            Some(f) => f,
            None => &self.pattern[r.start as usize..(r.start + r.len) as usize],
        }
    }

    /// The payload of `r` as a buffer of its own (a slice of the pattern or the fixed payload).
    fn payload_bytes(&self, r: Req) -> Bytes {
        match &self.fixed {
            Some(f) => f.clone(),
            None => self.pattern.slice(r.start as usize..(r.start + r.len) as usize),
        }
    }

    /// What the reply parser is told `r` was: its payload (nothing in HTTP mode).
    pub fn expect(&self, r: Req) -> Bytes {
        match self.mode {
            Mode::Http => Bytes::new(),
            _ => self.payload_bytes(r),
        }
    }

    /// How many bytes `r` is on the wire.
    pub fn wire_len(&self, r: Req) -> usize {
        let n = self.payload(r).len();
        match self.mode {
            Mode::Framed => crate::frame::HEADER_LEN + n,
            _ => n,
        }
    }

    /// Appends `r`'s bytes on the wire to `out` (the one copy of its payload on the way out).
    pub fn write_wire(&self, r: Req, out: &mut BytesMut) {
        let payload = self.payload(r);
        if self.mode == Mode::Framed {
            out.put_slice(&header(Kind::Data, 0, payload.len() as u32));
        }
        out.put_slice(payload);
    }

    /// `r`'s bytes on the wire in a buffer of their own (stream and connect modes: one request
    /// per send).
    pub fn wire(&self, r: Req) -> Bytes {
        match self.mode {
            Mode::Framed => {
                let mut b = BytesMut::with_capacity(self.wire_len(r));
                self.write_wire(r, &mut b);
                b.freeze()
            }
            _ => self.payload_bytes(r),
        }
    }

    /// The parser for the replies to these requests.
    pub fn parser(cfg: &LoadConfig) -> Box<dyn ReplyParser> {
        match (cfg.mode, &cfg.reply) {
            (Mode::Http, _) => Box::new(HttpReplies::for_method(&cfg.http.method)),
            (Mode::Framed, _) => Box::new(FramedReplies::new(
                u32::try_from(cfg.size.1).unwrap_or(u32::MAX).max(crate::frame::DEFAULT_MAX_PAYLOAD),
            )),
            (_, ReplyRule::Echo) => Box::new(EchoReplies::default()),
            (_, ReplyRule::Bytes(n)) => Box::new(FixedReplies::new(*n)),
            (_, ReplyRule::Delimiter(d)) => Box::new(DelimitedReplies::new(d.clone())),
        }
    }
}

/// A whole frame of `kind` around `payload`, in one buffer.
fn framed(kind: Kind, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(crate::frame::HEADER_LEN + payload.len());
    b.put_slice(&header(kind, 0, payload.len() as u32));
    b.put_slice(payload);
    b.freeze()
}

/// The HELLO a framed connection opens with.
pub(super) fn framed_hello() -> Bytes {
    framed(Kind::Hello, &crate::frame::hello_payload())
}

/// An HTTP/1.1 keep-alive request.
pub fn http_request(req: &HttpRequest, authority: &str) -> Bytes {
    let mut s = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    let has = |name: &str| req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        s += &format!("Host: {authority}\r\n");
    }
    for (k, v) in &req.headers {
        s += &format!("{k}: {v}\r\n");
    }
    if !req.body.is_empty() && !has("content-length") {
        s += &format!("Content-Length: {}\r\n", req.body.len());
    }
    s += "\r\n";
    let mut b = BytesMut::from(s.as_bytes());
    b.put_slice(&req.body);
    b.freeze()
}
