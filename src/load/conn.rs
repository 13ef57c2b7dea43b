//! One load connection: connect (on the ramp), then the mode's loop (each mode in a file of its
//! own: `request_response`, `stream`, `connect`); how failures are counted.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::{CoreRun, Mode, ReplyError, DRAIN_TIMEOUT};
use crate::net::{NetError, TcpStream};
use crate::runtime::{self, Either};

/// A wake-up between the sender and the receiver of one connection (same task, so no locks).
#[derive(Default)]
pub(super) struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(super) fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(super) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The source address connection `id` (or attempt `id`) uses, if `--source` gave any: by its
/// place among this segment's connections, so that every segment uses all the addresses.
pub(super) fn source_of(run: &CoreRun, id: usize) -> Option<IpAddr> {
    let sources = &run.cfg.sources;
    (!sources.is_empty()).then(|| sources[(id / run.cfg.segment.count) % sources.len()])
}

/// One connection attempt from `source`, bounded by `CONNECT_TIMEOUT`; a failure is counted.
pub(super) async fn attempt(run: &CoreRun, source: Option<IpAddr>) -> Option<TcpStream> {
    match runtime::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(run.cfg.target, source)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            note_connect_error(run, &e);
            None
        }
        Err(_) => {
            run.error(|c| {
                c.connect += 1;
                c.timeout += 1;
            });
            None
        }
    }
}

/// Opens a connection (after waiting for its place on the ramp) and counts how it went.
pub(super) async fn open(run: &CoreRun, id: usize) -> Option<TcpStream> {
    let cfg = &run.cfg;
    let connect = async {
        if let Some(rate) = cfg.ramp {
            runtime::sleep_until(run.created + Duration::from_secs_f64(id as f64 / rate)).await;
        }
        let t0 = Instant::now();
        (t0, attempt(run, source_of(run, id)).await)
    };
    let (t0, stream) = match runtime::select(connect, runtime::shutdown_requested()).await {
        Either::Left(v) => v,
        Either::Right(()) => return None,
    };
    let stream = stream?;
    run.opened(t0, Instant::now());
    run.up.set(run.up.get() + 1);
    Some(stream)
}

pub(super) fn note_connect_error(run: &CoreRun, e: &NetError) {
    let refused = matches!(e, NetError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused);
    run.error(|c| {
        c.connect += 1;
        if refused {
            c.refused += 1;
        }
    });
    run.first_failure();
    if !run.said_connect_error.replace(true) {
        tracing::warn!("connect failed: {e}");
    }
}

pub(super) enum Failure {
    Closed,
    Reset,
    Mismatch,
    Malformed,
}

/// What a reply error counts as. A CLOSE from the server is the server ending the connection (with
/// its reason, said once per core), not a malformed reply.
pub(super) fn failure_of(run: &CoreRun, e: &ReplyError) -> Failure {
    match e {
        ReplyError::Mismatch => Failure::Mismatch,
        ReplyError::Malformed(_) => Failure::Malformed,
        ReplyError::Closed(why) => {
            if !run.said_server_close.replace(true) {
                tracing::warn!("{why}");
            }
            Failure::Closed
        }
    }
}

pub(super) fn count(run: &CoreRun, f: Failure) {
    run.error(|c| match f {
        Failure::Closed => c.closed += 1,
        Failure::Reset => c.reset += 1,
        Failure::Mismatch => c.mismatch += 1,
        Failure::Malformed => c.malformed += 1,
    });
}

/// The mode's loop on an open connection.
pub(super) async fn drive(run: Rc<CoreRun>, id: usize, stream: TcpStream) {
    let stream = match run.cfg.mode {
        Mode::Stream => {
            super::stream::stream_loop(&run, id, &stream).await;
            stream
        }
        _ => super::request_response::request_response(&run, id, stream).await,
    };
    run.up.set(run.up.get().saturating_sub(1));
    let _ = stream.close().await;
}

/// Resolves `DRAIN_TIMEOUT` after the core was asked to stop.
pub(super) async fn stopped_then_drained() {
    runtime::shutdown_requested().await;
    runtime::sleep(DRAIN_TIMEOUT).await;
}
