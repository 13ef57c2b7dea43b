//! The acceptor: one multishot accept on one core, transient failures (out of descriptors)
//! logged at most once a second, every other failure the end of the server.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use crate::ring::ops::{self, SharedFd};
use crate::runtime;

/// Why the acceptor stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
#[error("accepting connections failed: {0}")]
pub struct AcceptError(#[from] pub io::Error);

/// Logs "out of descriptors" at most once a second, with how many accepts it covers.
struct FdShortage {
    last: Option<std::time::Instant>,
    count: u64,
}

impl FdShortage {
    /// Whether a line may be written at `now`: none in the last second.
    fn may_log(&self, now: std::time::Instant) -> bool {
        self.last.is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1))
    }

    /// An accept succeeded: if failures went unreported since the last line, say so — within the
    /// same once-a-second limit as the lines about the failures.
    fn recovered(&mut self) {
        let now = runtime::now();
        if self.count > 0 && self.last.is_some() && self.may_log(now) {
            tracing::warn!(
                count = self.count,
                "accepting again; accepts that failed for lack of descriptors since the last line"
            );
            self.count = 0;
            self.last = Some(now);
        }
    }

    fn note(&mut self, e: &io::Error) {
        self.count += 1;
        let now = runtime::now();
        if self.may_log(now) {
            tracing::warn!(
                count = self.count,
                nofile_limit = crate::sys::nofile_limit().0,
                "accept: {e}; connections wait in the backlog until descriptors free up"
            );
            self.last = Some(now);
            self.count = 0;
        }
    }
}

/// Accepts on `listener` (on the calling core, with multishot accept) until shutdown, giving each
/// new connection's descriptor to `on_accept` (which places it on a core).
///
/// Transient errors (a connection reset before it was taken, descriptors running out for a
/// while) are counted, logged at most once a second, and accepting goes on; any other error ends
/// the acceptor with that error, and the server should stop (exit 1).
pub async fn accept_loop(listener: OwnedFd, mut on_accept: impl FnMut(OwnedFd)) -> Result<(), AcceptError> {
    let fd: SharedFd = Rc::new(listener);
    let mut shortage = FdShortage { last: None, count: 0 };
    'rearm: loop {
        let mut accepts = ops::accept_multi(fd.clone(), close_unread);
        loop {
            let c = match runtime::select(accepts.next(), runtime::shutdown_requested()).await {
                runtime::Either::Left(Some(c)) => c,
                runtime::Either::Left(None) => continue 'rearm,
                runtime::Either::Right(()) => return Ok(()),
            };
            if c.result() < 0 {
                let e = io::Error::from_raw_os_error(-c.result());
                match -c.result() {
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                        // Out of descriptors or memory for a moment: the connection stays in the
                        // backlog. Wait a little (do not spin on the error) and go on.
                        shortage.note(&e);
                        runtime::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    // Reset before we took it, or interrupted: nothing to report.
                    libc::ECONNABORTED | libc::EINTR | libc::EPROTO => {}
                    // Cancelled by someone other than our shutdown (which returns above): re-arm.
                    libc::ECANCELED if !runtime::is_shutting_down() => {}
                    libc::ECANCELED => return Ok(()),
                    _ => return Err(AcceptError(e)),
                }
                if !c.more() {
                    continue 'rearm;
                }
                continue;
            }
            if shortage.last.is_some() {
                shortage.recovered();
            }
            on_accept(ops::adopt_fd(c.result()));
            if !c.more() {
                continue 'rearm;
            }
        }
    }
}

/// Closes the descriptor of an accept completion nobody will read (the acceptor stopped): the
/// listener's owner does it, not the ring.
pub(crate) fn close_unread(c: &crate::ring::Completion) {
    if c.result() >= 0 {
        drop(ops::adopt_fd(c.result()));
    }
}
