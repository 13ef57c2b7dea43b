//! Stream mode: one way, as fast as the socket takes it or at a rate; what comes back is read
//! and dropped.

use std::cell::Cell;

use super::conn::{count, stopped_then_drained, Failure, Notify};
use super::request::RequestSource;
use super::schedule::Schedule;
use super::{CoreRun, DRAIN_TIMEOUT};
use crate::net::{SendQueue, TcpStream};
use crate::runtime::{self, Either};

/// One way: send (as fast as the socket takes it, or at the rate), read and drop what comes back.
pub(super) async fn stream_loop(run: &CoreRun, id: usize, stream: &TcpStream) {
    let cfg = &run.cfg;
    let mut source = RequestSource::new(cfg, id);
    let done = Cell::new(false);
    let wake = Notify::default();
    let sender = async {
        let mut tx = SendQueue::new(stream.shared_fd(), usize::MAX, usize::MAX);
        let mut schedule = Schedule::per_slot(cfg, None);
        loop {
            let Some(intended) = schedule.next(run.start.get(), run.deadline.get()).await else {
                break;
            };
            if !run.may_send() {
                break;
            }
            let req = source.next();
            let len = req.wire.len();
            let _ = tx.push(&[], &[req.wire]);
            run.sent(intended, len);
            if tx.flush().await.is_err() {
                count(run, Failure::Reset);
                break;
            }
        }
        done.set(true);
        wake.notify();
    };
    let receiver = async {
        let mut rx = stream.recv_stream();
        while !done.get() {
            match runtime::select(rx.next(), wake.wait()).await {
                Either::Left(Some(Ok(c))) => run.received_bytes(c.len()),
                Either::Left(_) => break,
                Either::Right(()) => {}
            }
        }
    };
    let bounded = runtime::timeout_at(run.deadline.get() + DRAIN_TIMEOUT, runtime::join(sender, receiver));
    let _ = runtime::select(bounded, stopped_then_drained()).await;
}
