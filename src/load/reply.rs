//! How the load generator recognises replies in what comes back, whatever the server: the echo of
//! what was sent (checked byte for byte), a fixed number of bytes, a delimiter, native frames, or
//! HTTP/1.1 responses. Sans-IO: bytes in, events out.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::frame::FrameDecoder;
use crate::session::{Event, Session, SessionConfig};

/// One whole, valid reply a parser found in the bytes it was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Its HTTP status code, where there is one.
    pub status: Option<u16>,
    /// The server closes the connection after it (HTTP `Connection: close`, or HTTP/1.0
    /// without keep-alive).
    pub close: bool,
}

impl Reply {
    /// A reply after which the connection stays open.
    pub fn ok(status: Option<u16>) -> Reply {
        Reply { status, close: false }
    }
}

/// Why the bytes that came back are not what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// An echo differed from what was sent.
    #[error("reply differs from the request")]
    Mismatch,
    /// The server sent something that is not a reply of the expected form.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The server closed the connection with a CLOSE frame: its code and reason.
    #[error("the server closed the connection: {0}")]
    Closed(String),
}

/// Recognises replies in a byte stream.
pub trait ReplyParser {
    /// Tells the parser that one more request went out (echo parsers learn what to expect).
    fn sent(&mut self, request: Bytes);
    /// Feeds received bytes; pushes one event per complete reply.
    fn feed(&mut self, data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError>;
}

/// The echo of each request, checked byte for byte.
#[derive(Default)]
pub struct EchoReplies {
    expected: VecDeque<Bytes>,
    offset: usize,
}

impl ReplyParser for EchoReplies {
    fn sent(&mut self, request: Bytes) {
        self.expected.push_back(request);
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError> {
        while !data.is_empty() {
            let Some(front) = self.expected.front() else { return Err(ReplyError::Mismatch) };
            let want = &front[self.offset..];
            let n = want.len().min(data.len());
            if want[..n] != data[..n] {
                return Err(ReplyError::Mismatch);
            }
            self.offset += n;
            data = &data[n..];
            if self.offset == front.len() {
                self.expected.pop_front();
                self.offset = 0;
                out.push(Reply::ok(None));
            }
        }
        Ok(())
    }
}

/// Every `n` bytes are one reply.
pub struct FixedReplies {
    n: usize,
    got: usize,
}

impl FixedReplies {
    /// Replies of `n` bytes.
    pub fn new(n: usize) -> FixedReplies {
        FixedReplies { n: n.max(1), got: 0 }
    }
}

impl ReplyParser for FixedReplies {
    fn sent(&mut self, _: Bytes) {}

    fn feed(&mut self, data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError> {
        self.got += data.len();
        while self.got >= self.n {
            self.got -= self.n;
            out.push(Reply::ok(None));
        }
        Ok(())
    }
}

/// A reply ends with a delimiter (which may arrive split across reads).
pub struct DelimitedReplies {
    delim: Vec<u8>,
    matched: usize,
}

impl DelimitedReplies {
    /// Replies ending with `delim`.
    pub fn new(delim: Vec<u8>) -> DelimitedReplies {
        DelimitedReplies { delim, matched: 0 }
    }
}

impl ReplyParser for DelimitedReplies {
    fn sent(&mut self, _: Bytes) {}

    fn feed(&mut self, data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError> {
        for &b in data {
            // Restart the match on a mismatch (a naive scan: delimiters are short).
            loop {
                if b == self.delim[self.matched] {
                    self.matched += 1;
                    break;
                }
                if self.matched == 0 {
                    break;
                }
                // Fall back to the longest prefix of the delimiter that is also a suffix of what
                // matched so far.
                let m = self.matched;
                self.matched = (1..m).rev().find(|&k| self.delim[m - k..m] == self.delim[..k]).unwrap_or(0);
            }
            if self.matched == self.delim.len() {
                self.matched = 0;
                out.push(Reply::ok(None));
            }
        }
        Ok(())
    }
}

/// Native frames: each DATA frame echoed back is one reply, checked against what was sent.
pub struct FramedReplies {
    decoder: FrameDecoder,
    /// The client's side of the session: the server's HELLO first, its CLOSE understood.
    session: Session,
    started: std::time::Instant,
    expected: VecDeque<Bytes>,
}

impl FramedReplies {
    /// Expects the server's HELLO first, then echoed DATA frames.
    pub fn new(max_payload: u32) -> FramedReplies {
        let started = std::time::Instant::now();
        FramedReplies {
            decoder: FrameDecoder::new(max_payload),
            session: Session::new(SessionConfig::default(), started),
            started,
            expected: VecDeque::new(),
        }
    }
}

impl ReplyParser for FramedReplies {
    /// `request` is the payload of the DATA frame sent.
    fn sent(&mut self, request: Bytes) {
        self.expected.push_back(request);
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError> {
        self.decoder.push(Bytes::copy_from_slice(data));
        while let Some(f) = self.decoder.next_frame() {
            let f = f.map_err(|e| ReplyError::Malformed(e.to_string()))?;
            // The client's own HELLO was sent with the requests; what the session would send
            // (HELLO, PONG) is the driver's to ignore here. It has no limits, so the time it is
            // given does not matter: the clock is not read per reply.
            match self.session.on_frame(self.started, f.kind, std::slice::from_ref(&f.payload)) {
                Ok(Event::Data) => {
                    let want = self.expected.pop_front().ok_or(ReplyError::Mismatch)?;
                    if want != f.payload {
                        return Err(ReplyError::Mismatch);
                    }
                    out.push(Reply::ok(None));
                }
                Ok(Event::PeerClosed { code, reason }) => {
                    return Err(ReplyError::Closed(format!("CLOSE code {code}: {reason}")));
                }
                Ok(_) => {}
                Err(e) => return Err(ReplyError::Malformed(e.to_string())),
            }
            // What the session would answer (a PONG) is not sent by the load client: drop it,
            // so a server that PINGs cannot grow the client's memory.
            while self.session.poll_transmit().is_some() {}
        }
        Ok(())
    }
}

/// HTTP/1.1 responses (status line and headers parsed with `httparse`, bodies by
/// `Content-Length` or chunked encoding).
#[derive(Default)]
pub struct HttpReplies {
    buf: Vec<u8>,
    body_left: Option<BodyLeft>,
    status: u16,
    /// The response being read ends the connection.
    close: bool,
    /// The requests are HEAD: responses carry no body whatever their headers say.
    head: bool,
}

enum BodyLeft {
    Length(usize),
    Chunked(ChunkState),
}

#[derive(Clone, Copy)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
}

/// Most headers a response may carry.
const MAX_HEADERS: usize = 64;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

impl HttpReplies {
    /// A parser for responses to requests of `method`.
    pub fn for_method(method: &str) -> HttpReplies {
        HttpReplies { head: method.eq_ignore_ascii_case("HEAD"), ..HttpReplies::default() }
    }

    /// The next CRLF-terminated line; an error when a line grows past `MAX_HEAD` without one.
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, ReplyError> {
        let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            if self.buf.len() > MAX_HEAD {
                return Err(ReplyError::Malformed("a chunked-body line over 64 KiB".into()));
            }
            return Ok(None);
        };
        let line = self.buf[..pos].to_vec();
        self.buf.drain(..pos + 2);
        Ok(Some(line))
    }
}

impl ReplyParser for HttpReplies {
    fn sent(&mut self, _: Bytes) {}

    fn feed(&mut self, data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError> {
        self.buf.extend_from_slice(data);
        loop {
            match self.body_left.take() {
                None => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(&self.buf) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                            return Err(ReplyError::Malformed("response head over 64 KiB".into()))
                        }
                        Ok(httparse::Status::Partial) => return Ok(()),
                        Err(e) => return Err(ReplyError::Malformed(e.to_string())),
                    };
                    self.status = resp.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    // HTTP/1.0 closes unless it says keep-alive; 1.1 keeps open unless it says close.
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            if v.split(',').any(|t| t.trim() == "close") {
                                close = true;
                            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                                close = false;
                            }
                        }
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                            length = Some(v.ok_or_else(|| ReplyError::Malformed("bad Content-Length".into()))?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"))
                        {
                            chunked = true;
                        }
                    }
                    self.buf.drain(..n);
                    self.close = close;
                    if (100..200).contains(&self.status) && self.status != 101 {
                        // An interim response (100 Continue, 103 Early Hints): the real one follows.
                        continue;
                    }
                    let no_body = self.head || self.status == 204 || self.status == 304 || self.status == 101;
                    self.body_left = Some(if chunked {
                        BodyLeft::Chunked(ChunkState::Size)
                    } else {
                        BodyLeft::Length(if no_body { 0 } else { length.unwrap_or(0) })
                    });
                }
                Some(BodyLeft::Length(left)) => {
                    let n = left.min(self.buf.len());
                    self.buf.drain(..n);
                    if left - n > 0 {
                        self.body_left = Some(BodyLeft::Length(left - n));
                        return Ok(());
                    }
                    out.push(Reply { status: Some(self.status), close: self.close });
                }
                Some(BodyLeft::Chunked(state)) => {
                    let next = match state {
                        ChunkState::Size => match self.take_line()? {
                            None => None,
                            Some(line) => {
                                let hex =
                                    std::str::from_utf8(&line).ok().and_then(|l| l.split(';').next()).map(str::trim);
                                let size = hex
                                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                                    .ok_or_else(|| ReplyError::Malformed("bad chunk size".into()))?;
                                Some(if size == 0 { ChunkState::Trailer } else { ChunkState::Data(size) })
                            }
                        },
                        ChunkState::Data(left) => {
                            let n = left.min(self.buf.len());
                            self.buf.drain(..n);
                            if n == 0 {
                                None
                            } else {
                                Some(if left - n == 0 { ChunkState::DataEnd } else { ChunkState::Data(left - n) })
                            }
                        }
                        ChunkState::DataEnd => self.take_line()?.map(|_| ChunkState::Size),
                        ChunkState::Trailer => match self.take_line()? {
                            None => None,
                            Some(line) if line.is_empty() => {
                                out.push(Reply { status: Some(self.status), close: self.close });
                                continue;
                            }
                            Some(_) => Some(ChunkState::Trailer),
                        },
                    };
                    match next {
                        Some(s) => self.body_left = Some(BodyLeft::Chunked(s)),
                        None => {
                            self.body_left = Some(BodyLeft::Chunked(state));
                            return Ok(());
                        }
                    }
                }
            }
            if self.body_left.is_none() && self.buf.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(p: &mut dyn ReplyParser, pieces: &[&[u8]]) -> Result<Vec<Reply>, ReplyError> {
        let mut out = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn echo_replies_are_checked_across_reads() {
        let mut p = EchoReplies::default();
        p.sent(Bytes::from_static(b"hello"));
        p.sent(Bytes::from_static(b"world"));
        assert_eq!(feed_all(&mut p, &[b"hel", b"lowor", b"ld"]).unwrap().len(), 2);
        let mut p = EchoReplies::default();
        p.sent(Bytes::from_static(b"hello"));
        assert_eq!(feed_all(&mut p, &[b"help!"]), Err(ReplyError::Mismatch));
        // More than was sent is not the echo either.
        let mut p = EchoReplies::default();
        p.sent(Bytes::from_static(b"hi"));
        assert_eq!(feed_all(&mut p, &[b"hi!"]), Err(ReplyError::Mismatch));
    }

    #[test]
    fn delimiters_split_across_reads_are_found() {
        let mut p = DelimitedReplies::new(b"\r\n\r\n".to_vec());
        assert_eq!(feed_all(&mut p, &[b"a\r\n", b"\r\nb\r\r\n\r", b"\n"]).unwrap().len(), 2);
        let mut p = FixedReplies::new(4);
        assert_eq!(feed_all(&mut p, &[b"abc", b"defgh", b"i"]).unwrap().len(), 2);
    }

    #[test]
    fn http_responses_with_length_and_chunks_and_split_anywhere() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        for split in 1..wire.len() {
            let mut p = HttpReplies::default();
            let got = feed_all(&mut p, &[&wire[..split], &wire[split..]]).unwrap();
            assert_eq!(got, vec![Reply::ok(Some(200)), Reply::ok(Some(404)), Reply::ok(Some(204))], "split at {split}");
        }
        let mut p = HttpReplies::default();
        assert!(feed_all(&mut p, &[b"SSH-2.0-OpenSSH\r\n\r\n"]).is_err());
        // 100 Continue is not the reply; HEAD responses have no body.
        let mut p = HttpReplies::default();
        let got = feed_all(&mut p, &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
            .unwrap();
        assert_eq!(got, vec![Reply::ok(Some(200))]);
        // A server that says it closes (or speaks HTTP/1.0 without keep-alive) is seen to.
        let mut p = HttpReplies::default();
        let got = feed_all(
            &mut p,
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"],
        )
        .unwrap();
        assert_eq!(got.iter().map(|r| r.close).collect::<Vec<_>>(), [true, true, false]);
        let mut p = HttpReplies::for_method("HEAD");
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(feed_all(&mut p, &[two]).unwrap().len(), 2);
        // An endless chunk-size line is an error, not unbounded memory.
        let mut p = HttpReplies::default();
        let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'f', 70_000));
        assert!(feed_all(&mut p, &[&v]).is_err());
    }
}
