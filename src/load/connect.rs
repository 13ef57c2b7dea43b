//! Connect mode: connections per second — open, optionally one exchange, close — each slot on its
//! own schedule.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::conn::{attempt, count, failure_of, source_of, Failure};
use super::request::RequestSource;
use super::schedule::Schedule;
use super::{CoreRun, DRAIN_TIMEOUT};
use crate::net::{SendQueue, TcpStream};
use crate::runtime::{self};

/// `connect` mode: open, optionally one exchange, close; again until the end. With a rate, each
/// slot opens connections on its own fixed schedule.
pub(super) async fn connect_loop(run: Rc<CoreRun>, id: usize) {
    let cfg = &run.cfg;
    let exchange = cfg.payload.is_some();
    let mut schedule = Schedule::per_slot(cfg, Some(id));
    let mut i: usize = 0;
    loop {
        let Some(intended) = schedule.next(run.start.get(), run.deadline.get()).await else {
            break;
        };
        i += 1;
        if !run.may_send_due(intended, Instant::now()) {
            break;
        }
        let t0 = Instant::now();
        let Some(stream) = attempt(&run, source_of(&run, id + (i - 1) * cfg.segment.count)).await else {
            // A connect that fails at once (no descriptor left, a source address that cannot be
            // bound) went through no wait: back off a millisecond, so that a closed loop does not
            // hold its core (its other connections, the intervals, a signal).
            runtime::sleep(Duration::from_millis(1)).await;
            continue;
        };
        run.connected(intended, t0, Instant::now());
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
    parser.sent(source.expect(req));
    let mut tx = SendQueue::new(stream.shared_fd(), usize::MAX, usize::MAX);
    let _ = tx.push(&[], &[source.wire(req)]);
    run.exchange_sent(source.wire_len(req));
    let wait = async {
        tx.flush().await.map_err(|_| Failure::Reset)?;
        let mut rx = stream.recv_stream();
        let mut replies = Vec::new();
        loop {
            match rx.next().await {
                None => return Err(Failure::Closed),
                Some(Err(_)) => return Err(Failure::Reset),
                Some(Ok(c)) => {
                    run.exchange_received_bytes(c.len());
                    parser.feed(&c, &mut replies).map_err(|e| failure_of(run, &e))?;
                    if let Some(reply) = replies.pop() {
                        run.exchange_reply(reply.status);
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
