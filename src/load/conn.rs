//! One load connection: connect, then the closed loop.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::LoadResult;
use crate::frame::{header, hello_payload, FrameDecoder, Kind};
use crate::net::{NetError, SendQueue, TcpStream};
use crate::runtime::{self, Either};

/// Largest receive buffer a connection keeps.
const MAX_RECV_BUF: usize = 256 * 1024;

/// What one connection does.
pub(super) struct Plan {
    pub id: usize,
    pub size: usize,
    pub pipeline: usize,
    /// Stop starting new rounds at this time.
    pub deadline: Instant,
    /// Give up on replies at this time.
    pub drain_deadline: Instant,
}

pub(super) async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    at: Option<Instant>,
) -> Result<TcpStream, NetError> {
    if let Some(at) = at {
        runtime::sleep_until(at).await;
    }
    TcpStream::connect(target, source).await
}

/// A payload that differs per connection and per position, so a reply that went to the wrong
/// connection or came back shifted fails the check.
fn payload(id: usize, size: usize, pipeline: usize) -> Rc<[u8]> {
    let mut x = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size * pipeline)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

enum Failure {
    Closed,
    Reset,
    Mismatch,
}

/// Receives `payload.len()` bytes and checks them against `payload`; records one latency sample
/// (from `t0`) each time a whole message has arrived.
async fn recv_verify(
    stream: &TcpStream,
    payload: &[u8],
    size: usize,
    t0: Instant,
    mut buf: Vec<u8>,
    result: &RefCell<LoadResult>,
) -> (Result<(), Failure>, Vec<u8>) {
    let mut got = 0;
    while got < payload.len() {
        buf.clear();
        let (r, b) = stream.recv(buf).await;
        buf = b;
        let n = match r {
            Ok(0) => return (Err(Failure::Closed), buf),
            Ok(n) => n.min(payload.len() - got),
            Err(_) => return (Err(Failure::Reset), buf),
        };
        if buf[..n] != payload[got..got + n] || buf.len() > payload.len() - got {
            return (Err(Failure::Mismatch), buf);
        }
        let before = got / size;
        got += n;
        let after = got / size;
        if after > before {
            let ns = t0.elapsed().as_nanos().min(u128::from(super::MAX_LATENCY_NS)) as u64;
            let mut r = result.borrow_mut();
            let _ = r.latency.record_n(ns.max(1), (after - before) as u64);
            r.received += (after - before) as u64;
            r.bytes_received += ((after - before) * size) as u64;
        }
    }
    (Ok(()), buf)
}

/// Sends a round, waits for its echo, repeats until the deadline.
pub(super) async fn closed_loop(stream: TcpStream, plan: Plan, result: Rc<RefCell<LoadResult>>) {
    let payload = payload(plan.id, plan.size.max(1), plan.pipeline.max(1));
    let size = plan.size.max(1);
    let mut buf = Vec::with_capacity(payload.len().min(MAX_RECV_BUF));
    loop {
        if Instant::now() >= plan.deadline || runtime::is_shutting_down() {
            break;
        }
        let t0 = Instant::now();
        {
            let mut r = result.borrow_mut();
            r.sent += plan.pipeline as u64;
            r.bytes_sent += payload.len() as u64;
        }
        let round =
            runtime::join(stream.send_all(payload.clone()), recv_verify(&stream, &payload, size, t0, buf, &result));
        let outcome =
            runtime::select(runtime::timeout_at(plan.drain_deadline, round), runtime::shutdown_requested()).await;
        let ((sent, _), (received, b)) = match outcome {
            Either::Left(Ok(v)) => v,
            Either::Left(Err(_)) => {
                result.borrow_mut().errors.timeout += 1;
                break;
            }
            Either::Right(()) => break,
        };
        buf = b;
        let failure = match (sent, received) {
            (_, Err(f)) => Some(f),
            (Err(e), Ok(())) if e.kind() != io::ErrorKind::WriteZero => Some(Failure::Reset),
            (Err(_), Ok(())) => Some(Failure::Closed),
            (Ok(()), Ok(())) => None,
        };
        if let Some(f) = failure {
            let mut r = result.borrow_mut();
            match f {
                Failure::Closed => r.errors.closed += 1,
                Failure::Reset => r.errors.reset += 1,
                Failure::Mismatch => r.errors.mismatch += 1,
            }
            break;
        }
    }
    let _ = stream.close().await;
}

/// Receives frames until `count` DATA frames equal to `payload` have arrived, recording each one's
/// latency from `t0`.
async fn recv_frames(
    rx: &mut crate::net::RecvStream,
    dec: &mut FrameDecoder,
    payload: &[u8],
    count: usize,
    t0: Instant,
    result: &RefCell<LoadResult>,
) -> Result<(), Failure> {
    let mut got = 0;
    loop {
        while let Some(f) = dec.next_frame() {
            let f = f.map_err(|_| Failure::Mismatch)?;
            match f.kind {
                Kind::Data if f.payload[..] == *payload => {
                    let ns = t0.elapsed().as_nanos().min(u128::from(super::MAX_LATENCY_NS)) as u64;
                    let mut r = result.borrow_mut();
                    let _ = r.latency.record(ns.max(1));
                    r.received += 1;
                    r.bytes_received += payload.len() as u64;
                    got += 1;
                    if got == count {
                        return Ok(());
                    }
                }
                Kind::Data => return Err(Failure::Mismatch),
                Kind::Close => return Err(Failure::Closed),
                _ => {}
            }
        }
        match rx.next().await {
            None => return Err(Failure::Closed),
            Some(Err(_)) => return Err(Failure::Reset),
            Some(Ok(chunk)) => dec.push(chunk),
        }
    }
}

/// The framed closed loop: HELLO, then rounds of `pipeline` DATA frames (the same payload `Bytes`
/// each time: no copy) and their echoes.
pub(super) async fn framed_loop(stream: TcpStream, plan: Plan, result: Rc<RefCell<LoadResult>>) {
    let size = plan.size.max(1);
    let payload = Bytes::from(payload(plan.id, size, 1).to_vec());
    let mut rx = stream.recv_stream();
    let mut dec = FrameDecoder::new(u32::try_from(size).unwrap_or(u32::MAX).max(crate::frame::DEFAULT_MAX_PAYLOAD));
    let mut tx = SendQueue::new(stream.shared_fd(), usize::MAX, usize::MAX);
    let hello = hello_payload();
    let _ = tx.push(&header(Kind::Hello, 0, hello.len() as u32), &[hello]);
    let mut failure = tx.flush().await.err().map(|_| Failure::Reset);
    let data_header = header(Kind::Data, 0, size as u32);
    let one = [payload.clone()];
    while failure.is_none() {
        if Instant::now() >= plan.deadline || runtime::is_shutting_down() {
            break;
        }
        let t0 = Instant::now();
        for _ in 0..plan.pipeline {
            let _ = tx.push(&data_header, &one);
        }
        {
            let mut r = result.borrow_mut();
            r.sent += plan.pipeline as u64;
            r.bytes_sent += (plan.pipeline * size) as u64;
        }
        let round = runtime::join(tx.flush(), recv_frames(&mut rx, &mut dec, &payload, plan.pipeline, t0, &result));
        match runtime::select(runtime::timeout_at(plan.drain_deadline, round), runtime::shutdown_requested()).await {
            Either::Left(Ok((sent, received))) => {
                failure = match (sent, received) {
                    (_, Err(f)) => Some(f),
                    (Err(_), Ok(())) => Some(Failure::Reset),
                    (Ok(()), Ok(())) => None,
                }
            }
            Either::Left(Err(_)) => {
                result.borrow_mut().errors.timeout += 1;
                break;
            }
            Either::Right(()) => break,
        }
    }
    if let Some(f) = failure {
        let mut r = result.borrow_mut();
        match f {
            Failure::Closed => r.errors.closed += 1,
            Failure::Reset => r.errors.reset += 1,
            Failure::Mismatch => r.errors.mismatch += 1,
        }
    }
    drop(rx);
    let _ = stream.close().await;
}
