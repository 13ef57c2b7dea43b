//! One load connection: connect (on the ramp), then the mode's loop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::request::{framed_hello, RequestSource};
use super::{CoreRun, Mode, ReplyError, DRAIN_TIMEOUT};
use crate::net::{NetError, SendQueue, TcpStream};
use crate::runtime::{self, Either};

/// A wake-up between the sender and the receiver of one connection (same task, so no locks).
#[derive(Default)]
struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
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

/// The `i`-th tick of a schedule with period `interval` (no overflow however long the run).
fn nth(interval: Duration, i: u64) -> Duration {
    Duration::from_secs_f64(interval.as_secs_f64() * i as f64)
}

/// Opens a connection (after waiting for its place on the ramp) and counts how it went.
pub(super) async fn open(run: &CoreRun, id: usize) -> Option<TcpStream> {
    let cfg = &run.cfg;
    let source = (!cfg.sources.is_empty()).then(|| cfg.sources[id % cfg.sources.len()]);
    let attempt = async {
        if let Some(rate) = cfg.ramp {
            runtime::sleep_until(run.created + Duration::from_secs_f64(id as f64 / rate)).await;
        }
        let t0 = Instant::now();
        (t0, runtime::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(cfg.target, source)).await)
    };
    let (t0, outcome) = match runtime::select(attempt, runtime::shutdown_requested()).await {
        Either::Left(v) => v,
        Either::Right(()) => return None,
    };
    let outcome = match outcome {
        Ok(r) => r,
        Err(_) => {
            run.error(|c| {
                c.connect += 1;
                c.timeout += 1;
            });
            return None;
        }
    };
    match outcome {
        Ok(s) => {
            let mut r = run.result.borrow_mut();
            r.connected += 1;
            let _ = r.connect_latency.record(super::ns(t0.elapsed()));
            drop(r);
            run.up.set(run.up.get() + 1);
            Some(s)
        }
        Err(e) => {
            note_connect_error(run, &e);
            None
        }
    }
}

fn note_connect_error(run: &CoreRun, e: &NetError) {
    let refused = matches!(e, NetError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused);
    run.error(|c| {
        c.connect += 1;
        if refused {
            c.refused += 1;
        }
    });
    let mut r = run.result.borrow_mut();
    if r.first_failure.is_none() {
        r.first_failure = Some(run.start.get().elapsed());
        r.opened_before_failure = r.connected;
    }
    drop(r);
    if !run.said_connect_error.replace(true) {
        tracing::warn!("connect failed: {e}");
    }
}

enum Failure {
    Closed,
    Reset,
    Mismatch,
    Malformed,
}

/// What a reply error counts as. A CLOSE from the server is the server ending the connection (with
/// its reason, said once per core), not a malformed reply.
fn failure_of(run: &CoreRun, e: &ReplyError) -> Failure {
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

fn count(run: &CoreRun, f: Failure) {
    run.error(|c| match f {
        Failure::Closed => c.closed += 1,
        Failure::Reset => c.reset += 1,
        Failure::Mismatch => c.mismatch += 1,
        Failure::Malformed => c.malformed += 1,
    });
}

/// The mode's loop on an open connection.
pub(super) async fn drive(run: Rc<CoreRun>, id: usize, stream: TcpStream) {
    match run.cfg.mode {
        Mode::Stream => stream_loop(&run, id, &stream).await,
        _ => request_response(&run, id, &stream).await,
    }
    run.up.set(run.up.get().saturating_sub(1));
    let _ = stream.close().await;
}

/// Request/response, closed or open loop. The sender and the receiver run side by side; the
/// requests in flight are a queue of (intended, actual) send times, matched to replies in order.
async fn request_response(run: &CoreRun, id: usize, stream: &TcpStream) {
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
        let open_loop = cfg.total_rate().map(|total| {
            let per_conn = total / cfg.connections as f64;
            let interval = Duration::from_secs_f64(1.0 / per_conn);
            // Stagger the connections over one interval, so the total rate is smooth.
            let offset = Duration::from_secs_f64((id as f64 / total) % interval.as_secs_f64());
            (interval, offset)
        });
        let mut i: u64 = 0;
        'send: loop {
            if broken.get() {
                break;
            }
            match open_loop {
                None => {
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
                Some((interval, offset)) => {
                    let intended = run.start.get() + offset + nth(interval, i);
                    i += 1;
                    if intended >= run.deadline.get() {
                        break;
                    }
                    runtime::sleep_until(intended).await;
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
                        let _ = run
                            .result
                            .borrow_mut()
                            .schedule_lag
                            .record(super::ns(now.saturating_duration_since(intended)));
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

/// Resolves `DRAIN_TIMEOUT` after the core was asked to stop.
async fn stopped_then_drained() {
    runtime::shutdown_requested().await;
    runtime::sleep(DRAIN_TIMEOUT).await;
}

/// One way: send (as fast as the socket takes it, or at the rate), read and drop what comes back.
async fn stream_loop(run: &CoreRun, id: usize, stream: &TcpStream) {
    let cfg = &run.cfg;
    let mut source = RequestSource::new(cfg, id);
    let done = Cell::new(false);
    let wake = Notify::default();
    let sender = async {
        let mut tx = SendQueue::new(stream.shared_fd(), usize::MAX, usize::MAX);
        let interval = cfg.total_rate().map(|t| Duration::from_secs_f64(cfg.connections as f64 / t));
        let mut i: u64 = 0;
        loop {
            let intended = match interval {
                Some(iv) => {
                    let at = run.start.get() + nth(iv, i);
                    i += 1;
                    runtime::sleep_until(at).await;
                    at
                }
                None => Instant::now(),
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

/// `connect` mode: open, optionally one exchange, close; again until the end. With a rate, each
/// slot opens connections on its own fixed schedule.
pub(super) async fn connect_loop(run: Rc<CoreRun>, id: usize) {
    let cfg = &run.cfg;
    let exchange = cfg.payload.is_some();
    let interval = cfg.total_rate().map(|t| Duration::from_secs_f64(cfg.connections as f64 / t));
    let offset = cfg.total_rate().map_or(Duration::ZERO, |t| Duration::from_secs_f64(id as f64 / t));
    let mut i: u64 = 0;
    loop {
        let intended = match interval {
            Some(iv) => {
                let at = run.start.get() + offset + nth(iv, i);
                i += 1;
                if at >= run.deadline.get() {
                    break;
                }
                runtime::sleep_until(at).await;
                at
            }
            None => Instant::now(),
        };
        if !run.may_send() {
            break;
        }
        let source = (!cfg.sources.is_empty()).then(|| cfg.sources[(id + i as usize) % cfg.sources.len()]);
        let t0 = Instant::now();
        let stream = match runtime::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(cfg.target, source)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                note_connect_error(&run, &e);
                continue;
            }
            Err(_) => {
                run.error(|c| {
                    c.connect += 1;
                    c.timeout += 1;
                });
                continue;
            }
        };
        let connected_at = Instant::now();
        {
            let mut r = run.result.borrow_mut();
            r.connected += 1;
            if intended >= run.measure_start.get() {
                let _ = r.connect_latency.record(super::ns(connected_at - intended));
                let _ = r.uncorrected.record(super::ns(connected_at - t0));
                r.measured += 1;
                let _ = r.latency.record(super::ns(connected_at - intended));
                let mut iv = run.interval.borrow_mut();
                iv.replies += 1;
                let _ = iv.latency.record(super::ns(connected_at - intended));
            }
        }
        if exchange {
            exchange_one(&run, id, &stream).await;
        }
        let _ = stream.close().await;
    }
}

/// Sends one request and waits for its reply (connect mode with a payload).
async fn exchange_one(run: &CoreRun, id: usize, stream: &TcpStream) {
    let mut source = RequestSource::new(&run.cfg, id);
    let mut parser = RequestSource::parser(&run.cfg);
    let req = source.next();
    parser.sent(&req.expect);
    let mut tx = SendQueue::new(stream.shared_fd(), usize::MAX, usize::MAX);
    let _ = tx.push(&[], std::slice::from_ref(&req.wire));
    run.result.borrow_mut().sent += 1;
    run.result.borrow_mut().bytes_sent += req.wire.len() as u64;
    let wait = async {
        tx.flush().await.map_err(|_| Failure::Reset)?;
        let mut rx = stream.recv_stream();
        let mut replies = Vec::new();
        loop {
            match rx.next().await {
                None => return Err(Failure::Closed),
                Some(Err(_)) => return Err(Failure::Reset),
                Some(Ok(c)) => {
                    run.result.borrow_mut().bytes_received += c.len() as u64;
                    parser.feed(&c, &mut replies).map_err(|e| failure_of(run, &e))?;
                    if let Some(super::Reply::Ok(status)) = replies.pop() {
                        let mut r = run.result.borrow_mut();
                        r.received += 1;
                        if let Some(code) = status {
                            *r.status.entry(code).or_default() += 1;
                        }
                        return Ok(());
                    }
                }
            }
        }
    };
    match runtime::timeout(DRAIN_TIMEOUT, wait).await {
        Ok(Ok(())) => {}
        Ok(Err(f)) => count(run, f),
        Err(_) => run.error(|c| c.timeout += 1),
    }
}
