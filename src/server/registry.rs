//! The live connections of one core: each with its socket (to shut it from outside), its deadlines
//! and the limit it passed, if any; the watchdog that enforces the limits for all of them with one
//! timer; and the graceful stop.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::os::fd::RawFd;

use slab::Slab;

use super::ServerStats;
use crate::net::{Deadlines, Expiry, Limits, SendQueue};
use crate::runtime::{self, Core};

/// One live connection as its core's registry sees it. The registry holds the descriptor's number,
/// not the descriptor: the connection owns its socket (and can hand it to another core), and takes
/// its entry off the registry before it closes or moves it.
pub struct Entry {
    fd: RawFd,
    deadlines: RefCell<Deadlines>,
    expired: Cell<Option<Expiry>>,
}

impl Entry {
    /// Something was received (a whole message) or sent: a field write, no timer operation.
    pub fn activity(&self) {
        self.activity_at(runtime::now());
    }

    /// [`Entry::activity`] at `now` (the turn's clock, read once by a caller that records many).
    pub fn activity_at(&self, now: std::time::Instant) {
        self.deadlines.borrow_mut().activity(now);
    }

    /// The handshake completed: the handshake limit no longer applies.
    pub fn handshaken(&self) {
        self.deadlines.borrow_mut().handshaken();
    }

    /// The limit this connection passed, if any (the watchdog shut it for that reason).
    pub fn expired(&self) -> Option<Expiry> {
        self.expired.get()
    }

    /// Runs `send` as this connection's send in progress: the watchdog aborts the connection if
    /// it makes no progress for the send limit.
    pub async fn sending<F: std::future::Future>(&self, send: F) -> F::Output {
        self.deadlines.borrow_mut().send_started(runtime::now());
        let r = send.await;
        self.deadlines.borrow_mut().send_finished(runtime::now());
        r
    }

    /// Sends what `tx` holds, as a send in progress (each partial send that completes starts the
    /// send limit again).
    pub async fn flush(&self, tx: &mut SendQueue) -> std::io::Result<()> {
        if tx.queued() == 0 {
            return Ok(());
        }
        self.sending(tx.flush_observed(|_| self.deadlines.borrow_mut().send_started(runtime::now()))).await
    }
}

/// A core's registry (a core-local value, see [`Core::local`]).
#[derive(Default)]
pub(crate) struct Registry {
    open: RefCell<Slab<Rc<Entry>>>,
    pub(crate) stats: Cell<ServerStats>,
}

impl Registry {
    pub(crate) fn here() -> Rc<Registry> {
        Core::with(|c| c.local::<Registry>())
    }

    pub(crate) fn bump(&self, f: impl FnOnce(&mut ServerStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Lists a connection opened now on descriptor `fd` (kept open by the caller until the
    /// returned slot drops).
    pub(crate) fn insert(self: &Rc<Self>, fd: RawFd, limits: Limits) -> (Slot, Rc<Entry>) {
        let e = Rc::new(Entry {
            fd,
            deadlines: RefCell::new(Deadlines::new(limits, runtime::now())),
            expired: Cell::new(None),
        });
        let key = self.open.borrow_mut().insert(e.clone());
        (Slot { registry: self.clone(), key }, e)
    }

    /// Connections open on this core.
    pub(crate) fn len(&self) -> usize {
        self.open.borrow().len()
    }
}

/// A connection's place in its core's registry: dropping it takes the entry off (before the
/// descriptor closes or moves, however the connection ends — even if its task is dropped).
pub(crate) struct Slot {
    registry: Rc<Registry>,
    key: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.open.borrow_mut().try_remove(self.key);
    }
}

/// How often the watchdog looks: an eighth of the shortest limit, between 10 ms and 1 s (so a
/// limit is enforced at most that late). `None` without limits.
pub(crate) fn watchdog_tick(limits: &Limits) -> Option<Duration> {
    let shortest = [limits.handshake, limits.idle, limits.send].into_iter().flatten().min()?;
    Some((shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)))
}

/// The core's one timer for every connection's limits: each tick it checks the registry, and
/// ends a connection that passed a limit — shutting its read side for the handshake and idle
/// limits (the pending receive ends, and the service says why before it closes), aborting it for a
/// send that makes no progress (the send fails). Connections pay nothing per message for their
/// deadlines: no timer is armed, moved or polled on their path.
pub(crate) async fn watchdog(tick: Duration) {
    let reg = Registry::here();
    loop {
        runtime::sleep(tick).await;
        let now = runtime::now();
        for (_, c) in reg.open.borrow().iter() {
            if c.expired.get().is_some() {
                continue;
            }
            if let Some(x) = c.deadlines.borrow().check(now) {
                c.expired.set(Some(x));
                if x == Expiry::Send {
                    // Abort: the peer does not read, so what is queued would never leave;
                    // dropping it (and the connection) also ends a zero-copy send, whose
                    // buffers the kernel would otherwise keep until the peer read them.
                    crate::sys::abort_tcp(&c.fd);
                } else {
                    crate::sys::shutdown_socket(c.fd, std::net::Shutdown::Read);
                }
                reg.bump(|st| st.expired[x as usize] += 1);
            }
        }
    }
}

/// The graceful stop of one core: every connection's receive ends (a connection in the middle of
/// a send is aborted instead: it may wait on a peer that does not read), the connections get
/// `grace` to finish, then whatever is left is aborted and gets a moment to end, so the ring is
/// not left holding their operations.
pub(crate) async fn stop_all(grace: Duration) {
    let reg = Registry::here();
    for (_, c) in reg.open.borrow().iter() {
        if c.deadlines.borrow().sending() {
            crate::sys::abort_tcp(&c.fd);
        } else {
            crate::sys::shutdown_socket(c.fd, std::net::Shutdown::Both);
        }
    }
    until_all_closed(&reg, grace).await;
    reg.open.borrow().iter().for_each(|(_, c)| crate::sys::abort_tcp(&c.fd));
    until_all_closed(&reg, Duration::from_millis(500)).await;
}

/// Waits (at most `limit`) until this core has no open connection.
async fn until_all_closed(reg: &Registry, limit: Duration) {
    let deadline = Instant::now() + limit;
    while reg.len() > 0 && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
}
