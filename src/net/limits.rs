//! The deadlines of one connection as a sans-IO state machine (times in; an expiry, or when to
//! look again, out): a handshake that must finish, an idle limit, and a limit on how long one send
//! may wait for a peer that does not read.
//!
//! Activity costs a field write, never a timer operation: a driver checks the state from time to
//! time (the echo server's watchdog, once per tick for every connection of its core), and it
//! answers "passed: which" or "not yet; look again at T".

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

    /// Whether any limit is set (without one, no timer is needed).
    pub fn any(&self) -> bool {
        self.limits.handshake.is_some() || self.limits.idle.is_some() || self.limits.send.is_some()
    }

    /// Something was received or sent.
    pub fn activity(&mut self, now: Instant) {
        self.last_activity = now;
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

    /// At `now`: `Err` with the limit passed, or `Ok` with when to look again (`None`: never).
    /// The instant returned is never later than a limit could pass, whatever happens meanwhile
    /// (a send that starts after it was computed included), so a driver may sleep until it.
    pub fn check(&self, now: Instant) -> Result<Option<Instant>, Expiry> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let (false, Some(h)) = (self.handshaken, self.limits.handshake) {
            let due = self.opened + h;
            if now >= due {
                return Err(Expiry::Handshake);
            }
            consider(due);
        }
        match (self.sending_since, self.limits.send) {
            (Some(since), Some(s)) => {
                let due = since + s;
                if now >= due {
                    return Err(Expiry::Send);
                }
                consider(due);
            }
            // A send may start at any moment, and must not wait past `now + s` unseen.
            (None, Some(s)) => consider(now + s),
            _ => {}
        }
        if let (None, Some(i)) = (self.sending_since, self.limits.idle) {
            let due = self.last_activity + i;
            if now >= due {
                return Err(Expiry::Idle);
            }
            consider(due);
        }
        Ok(next)
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
        assert!(d.check(t0 + Duration::from_secs(9)).is_ok());
        assert_eq!(d.check(t0 + Duration::from_secs(10)), Err(Expiry::Handshake));
    }

    #[test]
    fn activity_pushes_the_idle_limit_and_a_stuck_send_expires() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(limits(), t0);
        d.handshaken();
        d.activity(t0 + Duration::from_secs(50));
        assert!(d.check(t0 + Duration::from_secs(100)).is_ok());
        assert_eq!(d.check(t0 + Duration::from_secs(110)), Err(Expiry::Idle));
        d.send_started(t0 + Duration::from_secs(100));
        assert!(d.check(t0 + Duration::from_secs(104)).is_ok());
        assert_eq!(d.check(t0 + Duration::from_secs(105)), Err(Expiry::Send));
        d.send_finished(t0 + Duration::from_secs(104));
        assert!(d.check(t0 + Duration::from_secs(105)).is_ok());
    }

    #[test]
    fn the_next_look_is_never_after_a_send_could_expire() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(limits(), t0);
        d.handshaken();
        let next = d.check(t0).unwrap().unwrap();
        assert!(next <= t0 + Duration::from_secs(5), "a send starting now expires at +5 s");
    }
}
