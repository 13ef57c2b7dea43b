//! Request/response mode (echo, framed, http): closed loop with a pipeline, or open loop at a
//! rate; every reply checked and timed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Instant;

use super::conn::{count, failure_of, stopped_then_drained, Failure, Notify};
use super::request::{framed_hello, RequestSource};
use super::schedule::Schedule;
use super::{CoreRun, Mode, DRAIN_TIMEOUT};
use crate::net::{SendQueue, TcpStream};
use crate::runtime::{self, Either};

/// Request/response, closed or open loop. The sender and the receiver run side by side; the
/// requests in flight are a queue of (intended, actual) send times, matched to replies in order.
pub(super) async fn request_response(run: &CoreRun, id: usize, stream: &TcpStream) {
    let cfg = &run.cfg;
    let mut source = RequestSource::new(cfg, id);
    let parser = RefCell::new(RequestSource::parser(cfg));
    let inflight: RefCell<VecDeque<(Instant, Instant)>> = RefCell::new(VecDeque::new());
    let (to_sender, to_receiver) = (Notify::default(), Notify::default());
    let done = Cell::new(false);
    let done_at: Cell<Option<Instant>> = Cell::new(None);
    let gave_up = Cell::new(false);
    let broken = Cell::new(false);
    let mut tx = SendQueue::new(stream.shared_fd(), usize::MAX, usize::MAX);
    if cfg.mode == Mode::Framed {
        let _ = tx.push(&[], &[framed_hello()]);
    }
    let drain_deadline = run.deadline.get() + DRAIN_TIMEOUT;

    let sender = async {
        let mut schedule = Schedule::per_connection(cfg, id);
        'send: loop {
            if broken.get() {
                break;
            }
            match schedule.is_open() {
                false => {
                    // Closed loop: wait for every reply of the last round.
                    while !inflight.borrow().is_empty() && !broken.get() {
                        to_sender.wait().await;
                    }
                    if broken.get() {
                        break 'send;
                    }
                    let now = Instant::now();
                    for k in 0..cfg.pipeline {
                        if !run.may_send() {
                            if k == 0 {
                                break 'send;
                            }
                            break;
                        }
                        let req = source.next();
                        parser.borrow_mut().sent(&req.expect);
                        inflight.borrow_mut().push_back((now, now));
                        run.sent(now, req.wire.len());
                        let _ = tx.push(&[], &[req.wire]);
                    }
                }
                true => {
                    let Some(intended) = schedule.next(run.start.get(), run.deadline.get()).await else {
                        break;
                    };
                    let mut waited = false;
                    while inflight.borrow().len() >= cfg.max_inflight && !broken.get() {
                        waited = true;
                        to_sender.wait().await;
                    }
                    if broken.get() || !run.may_send() {
                        break;
                    }
                    let now = Instant::now();
                    if !waited {
                        run.lag(intended, now);
                    }
                    let req = source.next();
                    parser.borrow_mut().sent(&req.expect);
                    inflight.borrow_mut().push_back((intended, now));
                    run.sent(intended, req.wire.len());
                    let _ = tx.push(&[], &[req.wire]);
                }
            }
            to_receiver.notify();
            if tx.flush().await.is_err() {
                if !broken.replace(true) {
                    count(run, Failure::Reset);
                }
                break;
            }
        }
        done.set(true);
        done_at.set(Some(Instant::now()));
        to_receiver.notify();
    };

    let receiver = async {
        let mut rx = stream.recv_stream();
        let mut replies = Vec::new();
        loop {
            if broken.get() || (done.get() && inflight.borrow().is_empty()) {
                break;
            }
            // Once the sender is done, what is still in flight gets DRAIN_TIMEOUT to come back.
            let give_up = done_at.get().map_or(drain_deadline, |t| (t + DRAIN_TIMEOUT).min(drain_deadline));
            let next = runtime::timeout_at(give_up, runtime::select(rx.next(), to_receiver.wait()));
            let chunk = match next.await {
                Err(_) => {
                    gave_up.set(true);
                    break;
                }
                Ok(Either::Right(())) => continue,
                Ok(Either::Left(None)) => {
                    if !inflight.borrow().is_empty() || !done.get() {
                        count(run, Failure::Closed);
                    }
                    break;
                }
                Ok(Either::Left(Some(Err(_)))) => {
                    count(run, Failure::Reset);
                    break;
                }
                Ok(Either::Left(Some(Ok(c)))) => c,
            };
            run.received_bytes(chunk.len());
            if let Err(e) = parser.borrow_mut().feed(&chunk, &mut replies) {
                count(run, failure_of(run, &e));
                break;
            }
            for super::Reply::Ok(status) in replies.drain(..) {
                let Some((intended, actual)) = inflight.borrow_mut().pop_front() else {
                    // More replies than requests.
                    count(run, Failure::Mismatch);
                    broken.set(true);
                    break;
                };
                run.reply(intended, actual, status);
            }
            to_sender.notify();
        }
        broken.set(true);
        to_sender.notify();
    };

    // Bounded by the drain deadline, and after a signal by DRAIN_TIMEOUT, so the counts are final
    // here rather than cut off by the core: what did not come back is a timeout.
    let bounded = runtime::timeout_at(drain_deadline, runtime::join(sender, receiver));
    let cut_off = !matches!(runtime::select(bounded, stopped_then_drained()).await, Either::Left(Ok(_)));
    let left = inflight.borrow().len() as u64;
    if left > 0 && (cut_off || gave_up.get()) {
        run.error(|c| c.timeout += left);
    }
}
