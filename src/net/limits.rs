//! The deadlines of one connection as a sans-IO state machine (times in, the limit passed if any
//! out): a handshake that must finish, an idle limit, and a limit on how long one send may wait
//! for a peer that does not read.
//!
//! Activity costs a field write, never a timer operation: a driver checks the state from time to
//! time (the echo server's watchdog, once per tick for every connection of its core).

use std::time::{Duration, Instant};

/// The limits a server puts on every connection; `None` switches one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept until the handshake (the peer's HELLO) is complete.
    pub handshake: Option<Duration>,
    /// With nothing received (a whole message) or sent.
    pub idle: Option<Duration>,
    /// A send making no progress: waiting for room in the window of a peer that stopped reading.
    pub send: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(300)),
            send: Some(Duration::from_secs(30)),
        }
    }
}

/// Which limit a connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The handshake did not complete in time.
    Handshake,
    /// Nothing happened for too long.
    Idle,
    /// A send waited too long for the peer to read.
    Send,
}

impl Expiry {
    /// A short stable name, for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Expiry::Handshake => "handshake_timeout",
            Expiry::Idle => "idle_timeout",
            Expiry::Send => "send_timeout",
        }
    }
}

/// One connection's deadlines.
#[derive(Debug, Clone)]
pub struct Deadlines {
    limits: Limits,
    opened: Instant,
    last_activity: Instant,
    handshaken: bool,
    sending_since: Option<Instant>,
}

impl Deadlines {
    /// A connection opened at `now`. Without a handshake limit it counts as handshaken.
    pub fn new(limits: Limits, now: Instant) -> Deadlines {
        Deadlines {
            limits,
            opened: now,
            last_activity: now,
            handshaken: limits.handshake.is_none(),
            sending_since: None,
        }
    }

    /// Something was received or sent.
    pub fn activity(&mut self, now: Instant) {
        // Never backwards: a caller may pass a clock read before a send that finished since.
        self.last_activity = self.last_activity.max(now);
    }

    /// The handshake completed.
    pub fn handshaken(&mut self) {
        self.handshaken = true;
    }

    /// A send started waiting for the socket.
    pub fn send_started(&mut self, now: Instant) {
        self.sending_since = Some(now);
    }

    /// Whether a send is waiting.
    pub fn sending(&self) -> bool {
        self.sending_since.is_some()
    }

    /// The send finished.
    pub fn send_finished(&mut self, now: Instant) {
        self.sending_since = None;
        self.last_activity = now;
    }

    /// The limit this connection has passed at `now`, if any.
    pub fn check(&self, now: Instant) -> Option<Expiry> {
        let passed = |since: Instant, limit: Option<Duration>| limit.is_some_and(|l| now >= since + l);
        if !self.handshaken && passed(self.opened, self.limits.handshake) {
            return Some(Expiry::Handshake);
        }
        match self.sending_since {
            Some(since) => passed(since, self.limits.send).then_some(Expiry::Send),
            None => passed(self.last_activity, self.limits.idle).then_some(Expiry::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            handshake: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            send: Some(Duration::from_secs(5)),
        }
    }

    #[test]
    fn a_connection_that_never_handshakes_expires_at_the_handshake_limit() {
        let t0 = Instant::now();
        let d = Deadlines::new(limits(), t0);
        assert_eq!(d.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(d.check(t0 + Duration::from_secs(10)), Some(Expiry::Handshake));
    }

    #[test]
    fn activity_pushes_the_idle_limit_and_a_stuck_send_expires() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(limits(), t0);
        d.handshaken();
        d.activity(t0 + Duration::from_secs(50));
        assert_eq!(d.check(t0 + Duration::from_secs(100)), None);
        assert_eq!(d.check(t0 + Duration::from_secs(110)), Some(Expiry::Idle));
        d.send_started(t0 + Duration::from_secs(100));
        assert_eq!(d.check(t0 + Duration::from_secs(104)), None);
        assert_eq!(d.check(t0 + Duration::from_secs(105)), Some(Expiry::Send));
        d.send_finished(t0 + Duration::from_secs(104));
        assert_eq!(d.check(t0 + Duration::from_secs(105)), None);
    }

    #[test]
    fn a_send_that_starts_later_expires_at_its_own_limit() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(limits(), t0);
        d.handshaken();
        assert_eq!(d.check(t0), None);
        d.send_started(t0 + Duration::from_secs(30));
        assert_eq!(d.check(t0 + Duration::from_secs(34)), None);
        assert_eq!(
            d.check(t0 + Duration::from_secs(35)),
            Some(Expiry::Send),
            "a send starting at +30 s expires at +35 s"
        );
    }
}
