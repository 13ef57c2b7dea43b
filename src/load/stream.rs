//! Stream mode: one way, as fast as the socket takes it or at a rate; what comes back is read
//! and dropped.

use std::cell::Cell;
use std::time::Instant;

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
        let mut schedule = Schedule::per_slot(cfg, Some(id));
        loop {
            let Some(intended) = schedule.next(run.start.get(), run.deadline.get()).await else {
                break;
            };
            if !run.may_send_due(intended, Instant::now()) {
                break;
            }
            let req = source.next();
            let len = source.wire_len(req);
            let _ = tx.push(&[], &[source.wire(req)]);
            // Sent when the kernel took all of it: a failed flush counts only what went, as cut.
            let went = Cell::new(0);
            if tx.flush_observed(|n| went.set(went.get() + n)).await.is_err() {
                run.cut(went.get() as u64);
                count(run, Failure::Reset);
                break;
            }
            run.sent(intended, len);
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
