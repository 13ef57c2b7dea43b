//! Request/response mode (echo, framed, http): closed loop with a pipeline, or open loop at a
//! rate; every reply checked and timed.
//!
//! One connection is one state machine, [`Exchange`] (sans-IO: the time and the bytes that came
//! back in; the bytes to send, the counts and the next deadline out), and one task drives it on
//! the ring: one send in flight at a time, carrying every request that fell due since the last
//! (a pipelined round, or an open loop's due ticks, go out as one send), a multishot receive,
//! and one timer. There is no second task to wake between a sender and a receiver.
//!
//! What is counted where:
//! - a request counts as sent when the kernel has taken all of its bytes (a failed send does not
//!   count what it did not send; a request cut by it is counted as cut);
//! - every request that fell due in the measured window is in the latency distribution: answered
//!   (its latency from when it was due), overdue (`--timeout`: recorded when it expired), still
//!   unanswered at the end of the drain, or never sent (the schedule fell behind, or
//!   `--max-inflight` held it) — the last three with the time they waited, as lower bounds;
//! - a server that closes the connection cleanly between requests (or says `Connection: close`)
//!   is reconnected and the requests it did not answer go again on the new connection; an abrupt
//!   close with requests outstanding stays an error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::conn::{count, failure_of, stopped_then_drained, Failure};
use super::reply::ReplyParser;
use super::request::{framed_hello, Req, RequestSource};
use super::schedule::Schedule;
use super::{CoreRun, LoadConfig, Mode, Reply, DRAIN_TIMEOUT, LATE_SEND_GRACE};
use crate::net::TcpStream;
use crate::runtime::{self, Either};

/// A request on the connection, from when it was queued until its reply.
struct Pending {
    /// When it fell due (open loop) or was queued (closed loop).
    intended: Instant,
    /// When it was queued to go out.
    queued: Instant,
    /// Where it ends in the connection's byte stream (for "sent means the kernel took it").
    end: u64,
    /// The request (its bytes are written again when it is queued on a new connection).
    req: Req,
    /// How many bytes it is on the wire.
    len: usize,
    /// Counted as sent.
    counted: bool,
    /// Its reply was overdue and it was counted as a timeout (its reply, if it comes, is consumed
    /// without being counted again).
    timed_out: bool,
}

/// How one connection's exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Nothing more to send and nothing outstanding (or the drain ran out).
    Done,
    /// The server closed the connection cleanly: reconnect if there is more to do.
    ServerClosed,
    /// The connection failed (counted).
    Failed,
}

/// Most histogram records for the requests a connection never sent (beyond it, in groups).
const UNSENT_RECORDS: u64 = 1 << 12;

/// The least a connection's send buffer grows by.
const OUT_CHUNK: usize = 1024;

/// One connection's requests and replies, sans-IO.
pub(super) struct Exchange {
    pipeline: usize,
    max_inflight: usize,
    timeout: Option<Duration>,
    framed: bool,
    /// When requests fall due (open loop).
    schedule: Schedule,
    /// A due tick was held back by `--max-inflight` (its send lag is not the generator's).
    held: bool,
    source: RequestSource,
    parser: Box<dyn ReplyParser>,
    pending: VecDeque<Pending>,
    /// How many of `pending`, from the front, are counted as sent (they are sent in order, so the
    /// counted ones are a prefix): a completion looks only past them.
    counted: usize,
    /// Bytes queued for the next send.
    out: BytesMut,
    /// Bytes of the connection's stream queued so far, and taken by the kernel so far.
    queued_bytes: u64,
    acked: u64,
    /// No more requests will be queued, and when that began (the end of the window for requests
    /// that fell due but did not go).
    stopped: Option<Instant>,
    /// The server said it closes after the reply just parsed.
    closing: bool,
    replies: Vec<Reply>,
}

impl Exchange {
    pub(super) fn new(cfg: &LoadConfig, id: usize) -> Exchange {
        let mut ex = Exchange {
            pipeline: cfg.pipeline.max(1),
            max_inflight: cfg.max_inflight.max(1),
            timeout: cfg.timeout,
            framed: cfg.mode == Mode::Framed,
            schedule: Schedule::per_connection(cfg, id),
            held: false,
            source: RequestSource::new(cfg, id),
            parser: RequestSource::parser(cfg),
            pending: VecDeque::new(),
            counted: 0,
            out: BytesMut::new(),
            queued_bytes: 0,
            acked: 0,
            stopped: None,
            closing: false,
            replies: Vec::new(),
        };
        ex.connection_opened(cfg);
        ex
    }

    /// A (new) connection: a fresh parser, the framed HELLO, and every request the last
    /// connection did not answer queued again (in order, with the times they fell due).
    pub(super) fn connection_opened(&mut self, cfg: &LoadConfig) {
        self.parser = RequestSource::parser(cfg);
        self.out.clear();
        self.closing = false;
        self.queued_bytes = 0;
        self.acked = 0;
        if self.framed {
            let hello = framed_hello();
            self.queued_bytes += hello.len() as u64;
            self.out.extend_from_slice(&hello);
        }
        let again: Vec<Pending> = self.pending.drain(..).filter(|p| !p.timed_out).collect();
        // Those counted before stay counted (and are still a prefix: they were sent in order).
        self.counted = again.iter().take_while(|p| p.counted).count();
        for mut p in again {
            self.parser.sent(self.source.expect(p.req));
            self.source.write_wire(p.req, &mut self.out);
            self.queued_bytes += p.len as u64;
            p.end = self.queued_bytes;
            self.pending.push_back(p);
        }
    }

    fn queue(&mut self, intended: Instant, now: Instant) {
        let req = self.source.next();
        self.parser.sent(self.source.expect(req));
        let len = self.source.wire_len(req);
        if self.out.capacity() - self.out.len() < len {
            // Room for several sends at a time (a send takes what is queued, and the rest of the
            // buffer stays for the next).
            self.out.reserve(len.max(OUT_CHUNK));
        }
        self.source.write_wire(req, &mut self.out);
        self.queued_bytes += len as u64;
        self.pending.push_back(Pending {
            intended,
            queued: now,
            end: self.queued_bytes,
            req,
            len,
            counted: false,
            timed_out: false,
        });
    }

    fn stop(&mut self, at: Instant) {
        if self.stopped.is_none() {
            self.stopped = Some(at);
        }
    }

    /// Queues what is due at `now`, and counts the replies that are overdue.
    pub(super) fn poll(&mut self, run: &CoreRun, now: Instant) {
        if let Some(t) = self.timeout {
            for p in self.pending.iter_mut().filter(|p| !p.timed_out) {
                if now < p.queued + t {
                    // Queued in order: the rest expire later.
                    break;
                }
                p.timed_out = true;
                run.overdue(now, p.intended);
            }
        }
        if self.stopped.is_some() || self.closing {
            return;
        }
        match self.schedule.peek(run.start.get()) {
            None => {
                // Closed loop: the next round once every reply of the last is in (or overdue).
                if self.pending.iter().any(|p| !p.timed_out) {
                    return;
                }
                for _ in 0..self.pipeline {
                    if !run.may_send_at(now) {
                        self.stop(now.min(run.deadline.get()));
                        break;
                    }
                    self.queue(now, now);
                }
            }
            Some(_) => {
                while let Some(due) = self.schedule.peek(run.start.get()) {
                    if due >= run.deadline.get() {
                        // The schedule is over (checked before `now`: the next wake is the deadline).
                        if now >= run.deadline.get() {
                            self.stop(run.deadline.get());
                        }
                        break;
                    }
                    if due > now {
                        break;
                    }
                    let window = run.measure_start.get();
                    if now >= window && due + LATE_SEND_GRACE < window {
                        // The window opened with the warm-up's ticks still waiting (the generator
                        // or --max-inflight fell behind): those more than the grace old are
                        // dropped, counted, so that the window measures its own requests, not
                        // the warm-up's backlog.
                        let backlog = self.schedule.due_before(run.start.get(), window - LATE_SEND_GRACE);
                        self.schedule.skip(backlog);
                        run.warmup_dropped(backlog);
                        continue;
                    }
                    if self.pending.len() >= self.max_inflight {
                        if run.over(now) {
                            // Held at the limit when the window ended: nothing more will go, so
                            // the drain may end as soon as the replies are in.
                            self.stop(now.min(run.deadline.get()));
                        } else if !std::mem::replace(&mut self.held, true) {
                            run.held();
                        }
                        break;
                    }
                    if !run.may_send_due(due, now) {
                        // The window ended (or the budget, or a signal): what fell due before now
                        // and did not go is counted at the end.
                        self.stop(now.min(run.deadline.get()));
                        break;
                    }
                    if !std::mem::take(&mut self.held) {
                        run.lag(due, now);
                    }
                    self.schedule.advance();
                    self.queue(due, now);
                }
            }
        }
    }

    /// The bytes to send next (every request queued since the last send, as one buffer).
    pub(super) fn take_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The kernel took `n` more bytes: the requests they complete count as sent.
    pub(super) fn on_sent(&mut self, run: &CoreRun, n: usize) {
        self.acked += n as u64;
        for p in self.pending.iter_mut().skip(self.counted) {
            if p.end > self.acked {
                break;
            }
            p.counted = true;
            self.counted += 1;
            run.sent(p.intended, p.len);
        }
    }

    /// A send failed: the requests it did not complete were not sent (one it cut is counted as
    /// cut); none of them will be answered.
    pub(super) fn on_send_failed(&mut self, run: &CoreRun) {
        let acked = self.acked;
        let mut cut = None;
        self.pending.retain(|p| {
            if p.counted {
                return true;
            }
            let start = p.end - p.len as u64;
            if start < acked && acked < p.end {
                cut = Some(acked - start);
            }
            false
        });
        if let Some(bytes) = cut {
            run.cut(bytes);
        }
        self.counted = self.pending.len();
        self.out.clear();
    }

    /// Bytes came back: each whole reply is matched to the oldest request and recorded.
    pub(super) fn on_recv(&mut self, run: &CoreRun, data: &[u8], now: Instant) -> Result<(), Failure> {
        if let Err(e) = self.parser.feed(data, &mut self.replies) {
            self.replies.clear();
            return Err(failure_of(run, &e));
        }
        for reply in self.replies.drain(..) {
            let Some(p) = self.pending.pop_front() else {
                // More replies than requests.
                return Err(Failure::Mismatch);
            };
            if p.counted {
                self.counted -= 1;
            } else {
                // The reply overtook the send's completion: the kernel had taken it.
                run.sent(p.intended, p.len);
            }
            if !p.timed_out {
                run.reply(now, p.intended, p.queued, reply.status);
            }
            if reply.close {
                // The server closes after this reply: nothing more goes on this connection.
                self.closing = true;
            }
        }
        Ok(())
    }

    /// Whether requests are outstanding that the server has not answered and that did not
    /// expire.
    pub(super) fn awaiting(&self) -> bool {
        self.pending.iter().any(|p| !p.timed_out)
    }

    /// Whether the server said it closes (the connection ends once its reply is in).
    pub(super) fn closing(&self) -> bool {
        self.closing
    }

    /// When the exchange next needs the clock: the next tick (open loop, unless held), the next
    /// request to expire.
    pub(super) fn next_wake(&self, run: &CoreRun) -> Option<Instant> {
        let tick = if self.stopped.is_none() && !self.closing && self.pending.len() < self.max_inflight {
            self.schedule.peek(run.start.get()).map(|d| d.min(run.deadline.get()))
        } else {
            None
        };
        let expiry = self.timeout.and_then(|t| self.pending.iter().find(|p| !p.timed_out).map(|p| p.queued + t));
        match (tick, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The run is over at `end` (the drain ran out, or everything came back): every request
    /// still unanswered, and every tick that fell due before sending stopped but did not go, is
    /// recorded with the time it waited until `end`.
    pub(super) fn finish(&mut self, run: &CoreRun, end: Instant) {
        for p in self.pending.drain(..) {
            if !p.timed_out {
                run.unanswered(end, p.intended);
            }
        }
        // The ticks that fell due before the run stopped and never went: those of the warm-up
        // are not counted; the rest one by one, or in groups of consecutive ticks when there
        // are more than UNSENT_RECORDS (a rate far past what the server took leaves billions).
        let (start, until) = (run.start.get(), self.stopped.unwrap_or(end).min(run.deadline.get()));
        self.schedule.skip(self.schedule.due_before(start, run.measure_start.get().min(until)));
        let mut left = self.schedule.due_before(start, until);
        let group = left.div_ceil(UNSENT_RECORDS).max(1);
        while let Some(first) = self.schedule.peek(start).filter(|_| left > 0) {
            let n = group.min(left);
            self.schedule.skip(n / 2);
            let middle = self.schedule.peek(start).unwrap_or(first);
            self.schedule.skip(n - n / 2 - 1);
            let last = self.schedule.peek(start).unwrap_or(middle);
            self.schedule.advance();
            run.unsent_n(end, middle, last, n);
            left -= n;
        }
    }
}

/// Request/response on one connection, reconnecting when the server closes it cleanly. Returns
/// the connection last used, to be closed.
pub(super) async fn request_response(run: &CoreRun, id: usize, mut stream: TcpStream) -> TcpStream {
    let cfg = &run.cfg;
    let mut ex = Exchange::new(cfg, id);
    let drain_deadline = run.deadline.get() + DRAIN_TIMEOUT;
    let work = async {
        loop {
            match session(run, &mut ex, &stream, drain_deadline).await {
                Ended::Done | Ended::Failed => break,
                // A clean close after the window: what it did not answer counts as unanswered.
                Ended::ServerClosed if ex.stopped.is_some() => break,
                Ended::ServerClosed => {
                    let t0 = runtime::now();
                    // A new connection in place of the one closed (no ramp: it is due now).
                    let Some(s) = super::conn::attempt(run, super::conn::source_of(run, id)).await else { break };
                    run.reconnected(runtime::now().saturating_duration_since(t0));
                    let old = std::mem::replace(&mut stream, s);
                    let _ = old.close().await;
                    ex.connection_opened(cfg);
                }
            }
        }
    };
    // After a signal, DRAIN_TIMEOUT for what is in flight; the counts are final here either way.
    let _ = runtime::select(work, stopped_then_drained()).await;
    let end = runtime::now().min(drain_deadline);
    ex.stop(end);
    ex.finish(run, end);
    stream
}

/// The send in flight: its op, the buffer's length, and how much of it went before this op.
type InFlight = (crate::ring::Op<(crate::ring::ops::SharedFd, Bytes)>, usize, usize);

/// One connection's life: queue, send, receive, until done, closed or failed.
async fn session(run: &CoreRun, ex: &mut Exchange, stream: &TcpStream, drain_deadline: Instant) -> Ended {
    let fd = stream.shared_fd();
    let mut rx = stream.recv_stream();
    let mut send: Option<InFlight> = None;
    let mut timer: Option<(Instant, runtime::Sleep)> = None;
    let mut write_shut = false;
    loop {
        let now = runtime::now();
        ex.poll(run, now);
        if send.is_none() && !write_shut {
            if let Some(buf) = ex.take_transmit() {
                let len = buf.len();
                run.counted_send();
                send = Some((crate::ring::ops::send(fd.clone(), buf, 0), len, 0));
            }
        }
        // Once sending stopped, what is outstanding has DRAIN_TIMEOUT to come back.
        let drain = ex.stopped.map_or(drain_deadline, |s| (s + DRAIN_TIMEOUT).min(drain_deadline));
        if now >= drain {
            return Ended::Done;
        }
        if !write_shut && ex.stopped.is_some() && !ex.awaiting() && send.is_none() {
            // Everything went and every reply is in (or overdue): end the stream, and read until
            // the server ends its side, so that every byte it sends back is counted.
            write_shut = true;
            let _ = stream.shutdown_write().await;
        }
        let wake = ex.next_wake(run).map_or(drain, |w| w.min(drain));
        if timer.as_ref().is_none_or(|(at, _)| *at != wake) {
            timer = Some((wake, runtime::sleep_until(wake)));
        }
        let sleep = &mut timer.as_mut().expect("set").1;
        let sent = async {
            match send.as_mut() {
                Some((op, _, _)) => op.await,
                None => std::future::pending().await,
            }
        };
        let ev = runtime::select(runtime::select(sent, rx.next()), sleep).await;
        match ev {
            Either::Left(Either::Left((done, (fd, buf)))) => {
                let (_, len, before) = send.take().expect("in flight");
                match done.into_result() {
                    Ok(n) if n > 0 => {
                        ex.on_sent(run, n as usize);
                        let went = before + n as usize;
                        if went < len {
                            run.counted_send();
                            send = Some((crate::ring::ops::send(fd, buf, went), len, went));
                        }
                    }
                    _ => {
                        ex.on_send_failed(run);
                        ex.stop(runtime::now());
                        count(run, Failure::Reset);
                        return Ended::Failed;
                    }
                }
            }
            Either::Left(Either::Right(Some(Ok(chunk)))) => {
                run.received_bytes(chunk.len());
                run.counted_receive();
                if let Err(f) = ex.on_recv(run, &chunk, runtime::now()) {
                    count(run, f);
                    ex.stop(runtime::now());
                    return Ended::Failed;
                }
                if ex.closing() && !ex.awaiting() && send.is_none() {
                    return Ended::ServerClosed;
                }
            }
            Either::Left(Either::Right(None)) => {
                // The server ended the stream: after ours, the end; between requests (or after
                // saying it would), a clean close; with requests outstanding, an error.
                if write_shut {
                    return Ended::Done;
                }
                if !ex.awaiting() || ex.closing() {
                    return Ended::ServerClosed;
                }
                count(run, Failure::Closed);
                ex.stop(runtime::now());
                return Ended::Failed;
            }
            Either::Left(Either::Right(Some(Err(_)))) => {
                if !write_shut {
                    count(run, Failure::Reset);
                    ex.stop(runtime::now());
                }
                return Ended::Failed;
            }
            Either::Right(()) => timer = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_buffer_and_requests_queued_again_are_the_same_bytes() {
        for mode in [Mode::Echo, Mode::Framed] {
            let mut cfg = LoadConfig::new(mode, "127.0.0.1:1".parse().unwrap());
            cfg.size = (10, 50);
            let mut ex = Exchange::new(&cfg, 3);
            let now = Instant::now();
            for _ in 0..4 {
                ex.queue(now, now);
            }
            let first = ex.take_transmit().unwrap();
            assert_eq!(first.len() as u64, ex.queued_bytes, "{mode:?}");
            assert!(ex.take_transmit().is_none());
            // The connection is lost with all four unanswered: the next one sends the same bytes
            // (after its own HELLO, framed), and expects the same replies.
            ex.connection_opened(&cfg);
            let again = ex.take_transmit().unwrap();
            assert_eq!(again, first, "{mode:?}");
            if mode == Mode::Echo {
                let mut replies = Vec::new();
                ex.parser.feed(&again, &mut replies).unwrap();
                assert_eq!(replies.len(), 4);
            }
        }
    }
}
