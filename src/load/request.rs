//! What each connection sends: patterned payloads of a fixed size or a size range (different per
//! connection, so a reply that went astray fails the check), a custom payload, native frames, or an
//! HTTP/1.1 request; and the parser that recognises the replies to it.

use bytes::{BufMut, Bytes, BytesMut};

use super::reply::{DelimitedReplies, EchoReplies, FixedReplies, FramedReplies, HttpReplies, ReplyParser};
use super::{HttpRequest, LoadConfig, Mode, ReplyRule};
use crate::frame::{header, Kind};

/// A request ready to send: the bytes on the wire, and what its reply parser is told it was.
pub(super) struct Request {
    pub wire: Bytes,
    pub expect: Bytes,
}

/// Builds one connection's requests.
pub(super) struct RequestSource {
    mode: Mode,
    fixed: Option<Request>,
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
            Mode::Http => {
                let wire = http_request(&cfg.http, &cfg.target.to_string());
                Some(Request { wire, expect: Bytes::new() })
            }
            _ => cfg.payload.clone().map(|p| match cfg.mode {
                Mode::Framed => Request { wire: framed(Kind::Data, &p), expect: p },
                _ => Request { wire: p.clone(), expect: p },
            }),
        };
        RequestSource { mode: cfg.mode, fixed, pattern, min, max, rng }
    }

    /// The next request.
    pub fn next(&mut self) -> Request {
        if let Some(r) = &self.fixed {
            return Request { wire: r.wire.clone(), expect: r.expect.clone() };
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
        let payload = self.pattern.slice(start..start + size);
        match self.mode {
            Mode::Framed => Request { wire: framed(Kind::Data, &payload), expect: payload },
            _ => Request { wire: payload.clone(), expect: payload },
        }
    }

    /// What the reply parser is told of a request whose bytes on the wire are `wire` (the
    /// request again, when it is queued on a new connection).
    pub fn expect_of(&self, wire: &Bytes) -> Bytes {
        match self.mode {
            Mode::Http => Bytes::new(),
            Mode::Framed => wire.slice(crate::frame::HEADER_LEN.min(wire.len())..),
            _ => wire.clone(),
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
fn framed(kind: Kind, payload: &Bytes) -> Bytes {
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
