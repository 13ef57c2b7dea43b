//! The echo server the tools run: TCP (bytes back as they come) or UDP (each datagram back to its
//! sender), on every core of a runtime, with counters reported when it stops.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;
use socket2::SockRef;

use bytes::Bytes;

use crate::frame::{close_frame, header, hello_payload, FrameDecoder, Kind};
use crate::net::{
    serve_tcp, AcceptError, Deadlines, Expiry, Limits, NetError, SendQueue, TcpListener, TcpStream, UdpSocket,
};
use crate::ring::ops::SharedFd;
use crate::runtime::{self, Either, Running, RuntimeConfig, RuntimeError, Sleep};

/// Receive buffer per core (UDP).
const ECHO_BUF: usize = 64 * 1024;
/// How long a stopping server waits for its connections to wind down.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What an echo server counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EchoStats {
    /// Connections accepted (TCP).
    pub connections: u64,
    /// Receive completions with data (TCP) or datagrams (UDP).
    pub messages_in: u64,
    /// Bytes received (framed: all bytes on the wire).
    pub bytes_in: u64,
    /// Sends completed (TCP: one per receive echoed) or datagrams sent (UDP).
    pub messages_out: u64,
    /// Bytes sent (framed: DATA frames echoed, headers included).
    pub bytes_out: u64,
    /// Connections that ended with an error (reset, broken pipe) rather than a clean close.
    pub errors: u64,
    /// Framed connections closed for bad input, by reason (indexed like [`crate::frame::FrameError::NAMES`]).
    pub frame_errors: [u64; 9],
    /// Receive buffer pool counters.
    pub pool: crate::buf::PoolStats,
    /// Framed: what the decoders did (payload bytes, and those copied because a frame spanned
    /// receive buffers).
    pub decode: crate::frame::DecodeStats,
    /// Send-side counters (vectored and zero-copy sends).
    pub send: crate::net::SendStats,
    /// Connections closed because they passed a limit: handshake, idle, send (in that order).
    pub expired: [u64; 3],
}

impl std::ops::AddAssign<&EchoStats> for EchoStats {
    fn add_assign(&mut self, o: &EchoStats) {
        self.add(o);
    }
}

impl EchoStats {
    /// Adds another core's counts.
    pub fn add(&mut self, o: &EchoStats) {
        self.connections += o.connections;
        self.messages_in += o.messages_in;
        self.bytes_in += o.bytes_in;
        self.messages_out += o.messages_out;
        self.bytes_out += o.bytes_out;
        self.errors += o.errors;
        self.pool.enobufs += o.pool.enobufs;
        self.pool.leases += o.pool.leases;
        self.pool.recycled += o.pool.recycled;
        self.pool.heap_fallbacks += o.pool.heap_fallbacks;
        self.decode.frames += o.decode.frames;
        self.decode.payload_bytes += o.decode.payload_bytes;
        self.decode.spanning_frames += o.decode.spanning_frames;
        self.decode.copied_bytes += o.decode.copied_bytes;
        self.send.writevs += o.send.writevs;
        self.send.zc_sends += o.send.zc_sends;
        self.send.zc_copied += o.send.zc_copied;
        self.send.zc_zero_copy += o.send.zc_zero_copy;
        self.send.zc_bytes += o.send.zc_bytes;
        self.send.zc_given_up += o.send.zc_given_up;
        self.send.coalesced_bytes += o.send.coalesced_bytes;
        self.send.unpinned_bytes += o.send.unpinned_bytes;
        self.decode.compacted_bytes += o.decode.compacted_bytes;
        for (a, b) in self.frame_errors.iter_mut().zip(o.frame_errors) {
            *a += b;
        }
        for (a, b) in self.expired.iter_mut().zip(o.expired) {
            *a += b;
        }
    }
}

#[derive(Default)]
struct CoreState {
    stats: Cell<EchoStats>,
    open: RefCell<Slab<SharedFd>>,
}

thread_local! {
    static STATE: Rc<CoreState> = Rc::new(CoreState::default());
    static PARTS: std::cell::Cell<Vec<Bytes>> = const { std::cell::Cell::new(Vec::new()) };
}

fn bump(f: impl FnOnce(&mut EchoStats)) {
    STATE.with(|s| {
        let mut st = s.stats.get();
        f(&mut st);
        s.stats.set(st);
    });
}

/// Settings of the framed path.
#[derive(Debug, Clone, Copy)]
pub struct FramedOpts {
    /// Largest payload accepted.
    pub max_payload: u32,
    /// Bytes a connection may have queued for sending.
    pub send_limit: usize,
    /// Payloads of this size or more go out with zero-copy send.
    pub zc_threshold: usize,
}

impl Default for FramedOpts {
    fn default() -> Self {
        FramedOpts { max_payload: crate::frame::DEFAULT_MAX_PAYLOAD, send_limit: 4 << 20, zc_threshold: 64 * 1024 }
    }
}

impl FramedOpts {
    /// The receive memory one connection may hold: twice the largest frame, at least 256 KiB.
    pub fn receive_bound(&self) -> usize {
        (2 * self.max_payload as usize).max(256 * 1024)
    }
}

/// An echo server's settings.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Limits on every TCP connection (the handshake limit applies to the framed protocol).
    pub limits: Limits,
    /// Where to listen.
    pub listen: SocketAddr,
    /// UDP instead of TCP.
    pub udp: bool,
    /// Echo native frames instead of bytes (TCP only).
    pub framed: Option<FramedOpts>,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

/// A running echo server.
pub struct EchoServer {
    local: SocketAddr,
    running: Running<Result<EchoStats, AcceptError>>,
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The runtime could not start, or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The acceptor stopped on an error (the server then stops).
    #[error(transparent)]
    Accept(#[from] AcceptError),
}

impl EchoServer {
    /// Binds (on the calling thread, so a port in use is reported before any core starts) and
    /// starts the cores.
    pub fn start(config: EchoConfig) -> Result<EchoServer, ServeError> {
        let (fd, local) = if config.udp {
            UdpSocket::bind_fd(config.listen)?
        } else {
            let l = TcpListener::bind(config.listen)?;
            let local = l.local_addr();
            (l.into_fd(), local)
        };
        let udp = config.udp;
        let framed = config.framed;
        let limits = config.limits;
        // Core 0 accepts (TCP); for UDP every core receives on its own duplicate of the socket.
        let listener = Arc::new(Mutex::new(Some(fd)));
        let running = runtime::start(config.runtime, move |core| {
            let fd = if udp {
                listener.lock().ok().and_then(|l| l.as_ref().and_then(|f| f.try_clone().ok()))
            } else if core.index == 0 {
                listener.lock().ok().and_then(|mut l| l.take())
            } else {
                None
            };
            core_main(core, fd, udp, framed, limits)
        })?;
        Ok(EchoServer { local, running })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The runtime handle (to stop it).
    pub fn handle(&self) -> &runtime::Handle {
        self.running.handle()
    }

    /// Waits for the server to stop and returns the counts summed over cores, or why it failed.
    pub fn join(self) -> Result<EchoStats, ServeError> {
        let mut total = EchoStats::default();
        for s in self.running.join()? {
            total += &s?;
        }
        Ok(total)
    }
}

async fn core_main(
    core: runtime::CoreInfo,
    fd: Option<OwnedFd>,
    udp: bool,
    framed: Option<FramedOpts>,
    limits: Limits,
) -> Result<EchoStats, AcceptError> {
    let mut failure = None;
    match (fd, udp) {
        (Some(fd), true) => {
            let sock = UdpSocket::from_fd(fd);
            let _ = runtime::select(echo_udp(&sock), runtime::shutdown_requested()).await;
        }
        (Some(fd), false) => {
            let on_conn = Arc::new(move |stream: TcpStream| match framed {
                Some(opts) => runtime::spawn_detached(echo_framed(stream, opts, limits)),
                None => runtime::spawn_detached(echo_tcp(stream, Limits { handshake: None, ..limits })),
            });
            if let Err(e) = serve_tcp(fd, core.handle.clone(), on_conn).await {
                tracing::error!(error = %e, "the acceptor stopped; stopping the server");
                core.handle.shutdown();
                failure = Some(e);
            }
        }
        (None, _) => runtime::shutdown_requested().await,
    }
    // Stop: end every open connection's pending receive, then give them a moment to finish.
    STATE.with(|s| {
        for (_, fd) in s.open.borrow().iter() {
            let _ = SockRef::from(&**fd).shutdown(std::net::Shutdown::Both);
        }
    });
    let deadline = Instant::now() + STOP_GRACE;
    while STATE.with(|s| !s.open.borrow().is_empty()) && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
    let mut stats = STATE.with(|s| s.stats.get());
    if let Some(p) = crate::buf::pool_stats() {
        stats.pool = p;
    }
    stats.send = crate::net::send_stats();
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// One connection's deadlines and the one timer that watches them. The timer is re-armed only
/// when it fires (see [`Deadlines::check`]): activity costs a field write, not a timer operation.
struct Watch {
    deadlines: Deadlines,
    timer: Option<Sleep>,
}

impl Watch {
    fn new(limits: Limits) -> Watch {
        let now = runtime::now();
        let deadlines = Deadlines::new(limits, now);
        let timer = match deadlines.check(now) {
            Ok(Some(at)) => Some(runtime::sleep_until(at)),
            _ => None,
        };
        Watch { deadlines, timer }
    }

    /// Runs `fut` to completion unless a limit passes first (then `fut` is dropped).
    async fn guard<F: std::future::Future>(&mut self, fut: F) -> Result<F::Output, Expiry> {
        let Some(timer) = self.timer.as_mut() else {
            return Ok(fut.await);
        };
        let mut fut = std::pin::pin!(fut);
        loop {
            match runtime::select(fut.as_mut(), &mut *timer).await {
                Either::Left(v) => return Ok(v),
                Either::Right(()) => match self.deadlines.check(runtime::now()) {
                    Err(x) => {
                        bump(|s| s.expired[x as usize] += 1);
                        return Err(x);
                    }
                    Ok(Some(at)) => timer.reset(at),
                    Ok(None) => timer.reset(runtime::now() + Duration::from_secs(86_400)),
                },
            }
        }
    }

    fn activity(&mut self) {
        self.deadlines.activity(runtime::now());
    }

    /// Sends what `tx` holds, bounded by the send limit.
    async fn flush(&mut self, tx: &mut SendQueue) -> Result<std::io::Result<()>, Expiry> {
        if tx.queued() == 0 {
            return Ok(Ok(()));
        }
        self.deadlines.send_started(runtime::now());
        let r = self.guard(tx.flush()).await;
        self.deadlines.send_finished(runtime::now());
        r
    }
}

/// Counts a new connection and lists it among the core's open ones (so a stop can shut it).
fn register(stream: &TcpStream) -> usize {
    bump(|s| s.connections += 1);
    STATE.with(|s| s.open.borrow_mut().insert(stream.shared_fd()))
}

/// Counts how a connection ended, takes it off the open list and closes it.
async fn finish(stream: TcpStream, slot: usize, failed: bool) {
    if failed {
        bump(|s| s.errors += 1);
    }
    STATE.with(|s| s.open.borrow_mut().remove(slot));
    let _ = stream.close().await;
}

/// Echoes one connection until end of stream, an error or a limit. What arrives in a pool buffer
/// goes back out of the same buffer: no copy in user space.
async fn echo_tcp(stream: TcpStream, limits: Limits) {
    let slot = register(&stream);
    let mut rx = stream.recv_stream();
    let mut watch = Watch::new(limits);
    let mut failed = false;
    loop {
        let chunk = match watch.guard(rx.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                failed = true;
                break;
            }
        };
        watch.activity();
        let n = chunk.len() as u64;
        bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n;
        });
        watch.deadlines.send_started(runtime::now());
        let sent = watch.guard(stream.send_all(chunk)).await;
        watch.deadlines.send_finished(runtime::now());
        if !matches!(sent, Ok((Ok(()), _))) {
            failed = true;
            break;
        }
        bump(|s| {
            s.messages_out += 1;
            s.bytes_out += n;
        });
    }
    drop(rx);
    finish(stream, slot, failed).await;
}

/// Echoes DATA frames (and answers PINGs) on one connection. All frames decoded from one receive
/// go back in one vectored send: each a header from the encoder and the payload as a slice of the
/// receive buffer. Bad input closes this connection only, with a CLOSE frame naming the reason.
async fn echo_framed(stream: TcpStream, opts: FramedOpts, limits: Limits) {
    let slot = register(&stream);
    let mut rx = stream.recv_stream();
    let mut dec = FrameDecoder::new(opts.max_payload);
    dec.set_hold_limit(opts.receive_bound());
    let mut tx = SendQueue::new(stream.shared_fd(), opts.send_limit, opts.zc_threshold);
    tx.set_pin_limit(opts.receive_bound());
    let mut watch = Watch::new(limits);
    let hello = hello_payload();
    let _ = tx.push(&header(Kind::Hello, 0, hello.len() as u32), &[hello]);
    let mut failed = !matches!(watch.flush(&mut tx).await, Ok(Ok(())));
    'conn: while !failed {
        let chunk = match watch.guard(rx.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(c))) => c,
            Ok(Some(Err(_))) => {
                failed = true;
                break;
            }
            Err(x) => {
                Box::pin(close_expired(&mut tx, &stream, x)).await;
                failed = true;
                break;
            }
        };
        watch.activity();
        let n = chunk.len() as u64;
        bump(|s| s.bytes_in += n);
        let pinned = crate::buf::pinned_size(&chunk);
        dec.push_pinned(chunk, pinned);
        // A scratch list shared by the core's connections: an idle connection holds none.
        let mut parts = PARTS.take();
        loop {
            parts.clear();
            let Some(r) = dec.next_frame_parts(&mut parts) else { break };
            let reply_kind = match r {
                Ok((kind, _, _)) => match kind {
                    Kind::Data => {
                        bump(|s| s.messages_in += 1);
                        Kind::Data
                    }
                    Kind::Ping => Kind::Pong,
                    Kind::Close => {
                        // Send what was queued before the peer's CLOSE, then end.
                        PARTS.set(parts);
                        let _ = watch.flush(&mut tx).await;
                        break 'conn;
                    }
                    Kind::Hello => {
                        watch.deadlines.handshaken();
                        continue;
                    }
                    Kind::Pong => continue,
                },
                Err(e) => {
                    bump(|s| s.frame_errors[usize::from(e.code()) - 1] += 1);
                    PARTS.set(std::mem::take(&mut parts));
                    // Boxed: the cold path's state stays out of every connection's future.
                    Box::pin(close_with_reason(&mut tx, &stream, e.code(), &e.to_string())).await;
                    break 'conn;
                }
            };
            // The reply: a new header, then the payload as the very slices it arrived in (copied
            // into the coalescing buffer only when it is small).
            let len: usize = parts.iter().map(|p| p.len()).sum();
            let h = header(reply_kind, 0, len as u32);
            if tx.push(&h, &parts).is_err() {
                // Full: this connection waits for its own send (bounded by the send limit); no
                // other connection is held up, and meanwhile its receive stops (RECV_QUEUE_CAP).
                if !matches!(watch.flush(&mut tx).await, Ok(Ok(()))) {
                    failed = true;
                    PARTS.set(std::mem::take(&mut parts));
                    break 'conn;
                }
                let _ = tx.push(&h, &parts);
            }
            if reply_kind == Kind::Data {
                bump(|s| {
                    s.messages_out += 1;
                    s.bytes_out += (len + crate::frame::HEADER_LEN) as u64;
                });
            }
        }
        parts.clear();
        PARTS.set(parts);
        if !matches!(watch.flush(&mut tx).await, Ok(Ok(()))) {
            failed = true;
        }
    }
    let d = dec.stats();
    bump(|s| {
        s.decode.frames += d.frames;
        s.decode.payload_bytes += d.payload_bytes;
        s.decode.spanning_frames += d.spanning_frames;
        s.decode.copied_bytes += d.copied_bytes;
        s.decode.compacted_bytes += d.compacted_bytes;
    });
    drop(rx);
    finish(stream, slot, failed).await;
}

/// Tells a peer that passed the handshake or idle limit why its connection closes (a send that
/// timed out has no room for that), within a second.
async fn close_expired(tx: &mut SendQueue, stream: &TcpStream, x: Expiry) {
    let code = match x {
        Expiry::Handshake => crate::frame::CLOSE_HANDSHAKE_TIMEOUT,
        Expiry::Idle => crate::frame::CLOSE_IDLE_TIMEOUT,
        Expiry::Send => return,
    };
    let reason = format!("{} passed", x.name().replace('_', " "));
    let _ = runtime::timeout(Duration::from_secs(1), close_with_reason(tx, stream, code, &reason)).await;
}

/// Tells the peer why its connection is closing (a CLOSE frame with the error's code), where the
/// socket still allows it, and shuts the write side.
async fn close_with_reason(tx: &mut SendQueue, stream: &TcpStream, code: u16, reason: &str) {
    let close = close_frame(code, reason);
    let close_header = header(Kind::Close, 0, close.payload.len() as u32);
    if tx.push(&close_header, std::slice::from_ref(&close.payload)).is_err() {
        let _ = tx.flush().await;
        let _ = tx.push(&close_header, &[close.payload]);
    }
    let _ = tx.flush().await;
    let _ = stream.shutdown_write().await;
}

/// Echoes datagrams back to their senders, forever.
async fn echo_udp(sock: &UdpSocket) {
    let mut buf = Vec::with_capacity(ECHO_BUF);
    loop {
        buf.clear();
        let (r, b) = sock.recv_from(buf).await;
        buf = b;
        let (n, peer) = match r {
            Ok((n, Some(peer))) => (n, peer),
            // A datagram without a usable sender, or an ICMP error surfacing on the socket.
            Ok((_, None)) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) || e.kind() == std::io::ErrorKind::Interrupted => {
                bump(|s| s.errors += 1);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "udp receive failed; this core stops echoing");
                return;
            }
        };
        bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n as u64;
        });
        let (r, b) = sock.send_to(buf, peer).await;
        buf = b;
        match r {
            Ok(n) => bump(|s| {
                s.messages_out += 1;
                s.bytes_out += n as u64;
            }),
            Err(_) => bump(|s| s.errors += 1),
        }
    }
}
