//! The native protocol's session as a sans-IO state machine, apart from the codec: frames and time
//! in; frames to send, events and the next deadline out (the shape of quinn-proto's
//! `Connection`). The codec (`frame/`) says whether bytes are well-formed frames; the session says
//! whether those frames make sense in order: HELLO first and once, a version spoken here, PING
//! answered, CLOSE understood, the handshake and idle limits.
//!
//! The node's handshake extends this one (node id, listen address, capabilities in HELLO's
//! extensions); a driver (the echo service, the load client) feeds it and sends what it yields.
//!
//! ```text
//!   new ──► AwaitingHello ──(HELLO ok)──► Open ──(CLOSE in / close / limit)──► Closed
//!                 │                         │
//!                 └──(bad first frame, limit)─┴──(error)──► Closed, CLOSE with the code queued
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{close_frame, hello_payload, FrameError, Kind, MAGIC, VERSION};
use crate::net::Expiry;

/// Why the frames of a connection make no sense in order. Each has a wire code (sent in CLOSE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The first frame on a connection was not HELLO.
    #[error("{0:?} frame before HELLO")]
    BeforeHello(Kind),
    /// A second HELLO.
    #[error("HELLO after the handshake")]
    DuplicateHello,
    /// A HELLO payload that is not magic + version + flags.
    #[error("malformed HELLO")]
    BadHello,
    /// A HELLO with a version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
}

impl SessionError {
    /// The code carried in the CLOSE frame (see `docs/PROTOCOL.md`).
    pub fn code(&self) -> u16 {
        match self {
            SessionError::BeforeHello(_) => 5,
            SessionError::DuplicateHello => 6,
            SessionError::BadHello => 7,
            SessionError::UnsupportedVersion(_) => 8,
        }
    }
}

/// Largest HELLO payload accepted: magic, version, flags and the extensions of the node's handshake.
pub const MAX_HELLO: u32 = 4096;

/// Why a connection was closed for bad input, by close code `1..=9` (index `code - 1`): the
/// codec's errors and the session's, for per-reason counters.
pub const INPUT_ERROR_NAMES: [&str; 9] = [
    "unknown_kind",
    "bad_flags",
    "bad_reserved",
    "too_large",
    "before_hello",
    "duplicate_hello",
    "bad_hello",
    "unsupported_version",
    "bad_length",
];

/// The session's limits (`None`: off). A driver that enforces limits for many connections at once
/// (the server's watchdog) leaves these off and calls [`Session::expire`] instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// From the start until the peer's HELLO.
    pub handshake: Option<Duration>,
    /// With no frame received.
    pub idle: Option<Duration>,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the peer's HELLO.
    AwaitingHello,
    /// Handshake done.
    Open,
    /// Closed (by the peer, by us, or for an error); nothing more is accepted.
    Closed,
}

/// What a frame (or the time) meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer's HELLO arrived and is acceptable.
    Open {
        /// The version it announced.
        version: u16,
    },
    /// A DATA frame: the payload is the driver's to use.
    Data,
    /// A PING, answered with a PONG (queued).
    Ping,
    /// A PONG.
    Pong,
    /// The peer closed, saying why.
    PeerClosed {
        /// Its code.
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// A limit passed: a CLOSE saying which is queued.
    Expired(Expiry),
    /// A frame after the session closed: ignored.
    Ignored,
}

/// A frame to send: its kind and its payload as slices.
pub type Transmit = (Kind, Vec<Bytes>);

/// One connection's session.
#[derive(Debug)]
pub struct Session {
    state: State,
    config: SessionConfig,
    started: Instant,
    last_frame: Instant,
    transmit: VecDeque<Transmit>,
}

impl Session {
    /// A session starting at `now`; its own HELLO is the first frame to send.
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        let mut transmit = VecDeque::new();
        transmit.push_back((Kind::Hello, vec![hello_payload()]));
        Session { state: State::AwaitingHello, config, started: now, last_frame: now, transmit }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// A frame arrived at `now` (its payload as the slices the codec gave). `Err` for a frame
    /// that makes no sense here: a CLOSE with its code is then queued and the session is closed.
    pub fn on_frame(&mut self, now: Instant, kind: Kind, payload: &[Bytes]) -> Result<Event, SessionError> {
        self.last_frame = now;
        match (self.state, kind) {
            (State::Closed, _) => Ok(Event::Ignored),
            (State::AwaitingHello, Kind::Hello) => match check_hello(payload) {
                Ok(_) if payload.iter().map(|p| p.len()).sum::<usize>() > MAX_HELLO as usize => {
                    Err(self.fail(SessionError::BadHello))
                }
                Ok(version) => {
                    self.state = State::Open;
                    Ok(Event::Open { version })
                }
                Err(e) => Err(self.fail(e)),
            },
            (State::AwaitingHello, other) => Err(self.fail(SessionError::BeforeHello(other))),
            (State::Open, Kind::Hello) => Err(self.fail(SessionError::DuplicateHello)),
            (State::Open, Kind::Data) => Ok(Event::Data),
            (State::Open, Kind::Ping) => {
                // The answer carries the same bytes: slices of the same buffers, no copy.
                self.transmit.push_back((Kind::Pong, payload.to_vec()));
                Ok(Event::Ping)
            }
            (State::Open, Kind::Pong) => Ok(Event::Pong),
            (State::Open, Kind::Close) => {
                self.state = State::Closed;
                let p = gather(payload);
                // The codec guarantees at least the two bytes of the code.
                let code = u16::from_be_bytes([p[0], p[1]]);
                let reason = String::from_utf8_lossy(&p[2..]).into_owned();
                Ok(Event::PeerClosed { code, reason })
            }
        }
    }

    /// Judges a frame from its header alone, before its payload is buffered: before the handshake
    /// only a HELLO of at most [`MAX_HELLO`] bytes may come (so a peer that has not said HELLO
    /// cannot make the receiver hold a large frame); after it, no second HELLO. An `Err` closes
    /// the session, as from [`Session::on_frame`].
    pub fn check_header(&mut self, kind: Kind, len: u32) -> Result<(), SessionError> {
        match (self.state, kind) {
            (State::AwaitingHello, Kind::Hello) if len > MAX_HELLO => Err(self.fail(SessionError::BadHello)),
            (State::AwaitingHello, Kind::Hello) => Ok(()),
            (State::AwaitingHello, other) => Err(self.fail(SessionError::BeforeHello(other))),
            (State::Open, Kind::Hello) => Err(self.fail(SessionError::DuplicateHello)),
            _ => Ok(()),
        }
    }

    /// The codec found bad input: close with its code.
    pub fn on_codec_error(&mut self, e: &FrameError) {
        self.close(e.code(), &e.to_string());
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmit.pop_front();
        if t.is_none() && self.transmit.capacity() > 0 {
            // Frames to send are rare (HELLO, PONG, CLOSE): an idle session keeps no queue.
            self.transmit = VecDeque::new();
        }
        t
    }

    /// When [`Session::handle_timeout`] should next be called: the handshake limit while waiting
    /// for HELLO, the idle limit after.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingHello => self.config.handshake.map(|d| self.started + d),
            State::Open => self.config.idle.map(|d| self.last_frame + d),
            State::Closed => None,
        }
    }

    /// The time is `now`: if a limit passed, a CLOSE saying which is queued and the session closes.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Event> {
        let due = self.next_deadline().is_some_and(|t| now >= t);
        if !due {
            return None;
        }
        let x = if self.state == State::AwaitingHello { Expiry::Handshake } else { Expiry::Idle };
        self.expire(x);
        Some(Event::Expired(x))
    }

    /// A limit enforced elsewhere passed (the server's watchdog): queue the CLOSE that says which
    /// (a send that timed out gets none: the peer is not reading) and close.
    pub fn expire(&mut self, x: Expiry) {
        let code = match x {
            Expiry::Handshake => crate::frame::CLOSE_HANDSHAKE_TIMEOUT,
            Expiry::Idle => crate::frame::CLOSE_IDLE_TIMEOUT,
            Expiry::Send => {
                self.state = State::Closed;
                return;
            }
        };
        self.close(code, &format!("{} passed", x.name().replace('_', " ")));
    }

    /// Closes, queueing a CLOSE with `code` and `reason` (once).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let f = close_frame(code, reason);
        self.transmit.push_back((Kind::Close, vec![f.payload]));
    }

    fn fail(&mut self, e: SessionError) -> SessionError {
        self.close(e.code(), &e.to_string());
        e
    }
}

/// A payload as one slice (copied only when it spans buffers; HELLO and CLOSE are small).
fn gather(parts: &[Bytes]) -> Bytes {
    match parts {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut b = BytesMut::with_capacity(many.iter().map(|p| p.len()).sum());
            many.iter().for_each(|p| b.put_slice(p));
            b.freeze()
        }
    }
}

fn check_hello(payload: &[Bytes]) -> Result<u16, SessionError> {
    let p = gather(payload);
    if p.len() < 8 || &p[..4] != MAGIC {
        return Err(SessionError::BadHello);
    }
    let version = u16::from_be_bytes([p[4], p[5]]);
    if version != VERSION {
        return Err(SessionError::UnsupportedVersion(version));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn hello() -> Vec<Bytes> {
        vec![hello_payload()]
    }

    #[test]
    fn hello_first_then_data_ping_and_close() {
        let now = t0();
        let mut s = Session::new(SessionConfig::default(), now);
        assert_eq!(s.poll_transmit().map(|t| t.0), Some(Kind::Hello));
        assert_eq!(s.on_frame(now, Kind::Hello, &hello()), Ok(Event::Open { version: VERSION }));
        assert_eq!(s.on_frame(now, Kind::Data, &[Bytes::from_static(b"x")]), Ok(Event::Data));
        let ping = [Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        assert_eq!(s.on_frame(now, Kind::Ping, &ping), Ok(Event::Ping));
        assert_eq!(s.poll_transmit(), Some((Kind::Pong, ping.to_vec())));
        let close = close_frame(0, "bye").payload;
        assert_eq!(s.on_frame(now, Kind::Close, &[close]), Ok(Event::PeerClosed { code: 0, reason: "bye".into() }));
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.on_frame(now, Kind::Data, &[]), Ok(Event::Ignored));
    }

    #[test]
    fn out_of_order_and_bad_hellos_close_with_their_codes() {
        let now = t0();
        let bad_version = {
            let mut p = hello_payload().to_vec();
            p[4..6].copy_from_slice(&9u16.to_be_bytes());
            vec![Bytes::from(p)]
        };
        // A HELLO split across two slices is still one HELLO.
        let split = {
            let h = hello_payload();
            vec![h.slice(..3), h.slice(3..)]
        };
        let cases: Vec<(Vec<Transmit>, SessionError)> = vec![
            (vec![(Kind::Data, vec![])], SessionError::BeforeHello(Kind::Data)),
            (vec![(Kind::Hello, hello()), (Kind::Hello, hello())], SessionError::DuplicateHello),
            (vec![(Kind::Hello, vec![Bytes::new()])], SessionError::BadHello),
            (vec![(Kind::Hello, bad_version)], SessionError::UnsupportedVersion(9)),
        ];
        for (frames, want) in cases {
            let mut s = Session::new(SessionConfig::default(), now);
            s.poll_transmit();
            let mut last = Ok(Event::Ignored);
            for (k, p) in &frames {
                last = s.on_frame(now, *k, p);
            }
            assert_eq!(last, Err(want.clone()));
            let (kind, payload) = s.poll_transmit().expect("a CLOSE is queued");
            assert_eq!(kind, Kind::Close);
            assert_eq!(u16::from_be_bytes([payload[0][0], payload[0][1]]), want.code());
            assert_eq!(s.state(), State::Closed);
        }
        let mut s = Session::new(SessionConfig::default(), now);
        assert!(matches!(s.on_frame(now, Kind::Hello, &split), Ok(Event::Open { .. })));
    }

    #[test]
    fn headers_are_judged_before_their_payload() {
        let now = t0();
        let mut s = Session::new(SessionConfig::default(), now);
        assert_eq!(s.check_header(Kind::Data, 1 << 20), Err(SessionError::BeforeHello(Kind::Data)));
        assert_eq!(s.state(), State::Closed);
        let mut s = Session::new(SessionConfig::default(), now);
        assert_eq!(s.check_header(Kind::Hello, MAX_HELLO + 1), Err(SessionError::BadHello));
        let mut s = Session::new(SessionConfig::default(), now);
        assert_eq!(s.check_header(Kind::Hello, 8), Ok(()));
        s.on_frame(now, Kind::Hello, &hello()).unwrap();
        assert_eq!(s.check_header(Kind::Data, 1 << 20), Ok(()));
        assert_eq!(s.check_header(Kind::Hello, 8), Err(SessionError::DuplicateHello));
    }

    #[test]
    fn the_handshake_and_idle_limits_come_out_as_deadlines_and_closes() {
        let now = t0();
        let cfg = SessionConfig { handshake: Some(Duration::from_secs(10)), idle: Some(Duration::from_secs(60)) };
        let mut s = Session::new(cfg, now);
        s.poll_transmit();
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(10)));
        assert_eq!(s.handle_timeout(now + Duration::from_secs(9)), None);
        assert_eq!(s.handle_timeout(now + Duration::from_secs(10)), Some(Event::Expired(Expiry::Handshake)));
        let (kind, p) = s.poll_transmit().unwrap();
        assert_eq!(
            (kind, u16::from_be_bytes([p[0][0], p[0][1]])),
            (Kind::Close, crate::frame::CLOSE_HANDSHAKE_TIMEOUT)
        );

        let mut s = Session::new(cfg, now);
        s.on_frame(now + Duration::from_secs(1), Kind::Hello, &hello()).unwrap();
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(61)));
        s.on_frame(now + Duration::from_secs(30), Kind::Data, &[]).unwrap();
        assert_eq!(s.handle_timeout(now + Duration::from_secs(61)), None, "a frame pushed the idle limit");
        assert_eq!(s.handle_timeout(now + Duration::from_secs(90)), Some(Event::Expired(Expiry::Idle)));
        assert_eq!(s.next_deadline(), None);
    }
}
