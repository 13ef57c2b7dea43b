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
use crate::runtime::{self, Core, Running, RuntimeConfig, RuntimeError};

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
    pub pools: [crate::buf::PoolStats; 3],
    /// Framed: what the decoders did (payload bytes, and those copied because a frame spanned
    /// receive buffers).
    pub decode: crate::frame::DecodeStats,
    /// Send-side counters (vectored and zero-copy sends).
    pub send: crate::net::SendStats,
    /// Connections closed because they passed a limit: handshake, idle, send (in that order).
    pub expired: [u64; 3],
    /// Receives stopped because their reader fell behind (re-armed when it caught up).
    pub receives_capped: u64,
    /// Framed connections whose peer ended the stream in the middle of a frame.
    pub truncated: u64,
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
        for (a, b) in self.pools.iter_mut().zip(o.pools) {
            *a += b;
        }
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
        self.receives_capped += o.receives_capped;
        self.truncated += o.truncated;
        self.decode.compacted_bytes += o.decode.compacted_bytes;
        for (a, b) in self.frame_errors.iter_mut().zip(o.frame_errors) {
            *a += b;
        }
        for (a, b) in self.expired.iter_mut().zip(o.expired) {
            *a += b;
        }
    }
}

/// The echo service's state on one core (a core-local value, see `runtime::Core::local`).
#[derive(Default)]
struct CoreState {
    stats: Cell<EchoStats>,
    open: RefCell<Slab<Rc<Conn>>>,
    /// Scratch for the parts of one batch of echoed frames (reused, so a batch allocates nothing).
    parts: Cell<Vec<Bytes>>,
}

/// This core's echo state.
fn state() -> Rc<CoreState> {
    Core::with(|c| c.local::<CoreState>())
}

impl CoreState {
    fn bump(&self, f: impl FnOnce(&mut EchoStats)) {
        let mut st = self.stats.get();
        f(&mut st);
        self.stats.set(st);
    }
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
    // Every core that serves TCP connections watches their limits (connections are dealt to all
    // cores; the registry is per core).
    if !udp {
        if let Some(tick) = watchdog_tick(&limits) {
            runtime::spawn_detached(watchdog(tick));
        }
    }
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
                // Reported once, by the caller (the error is returned).
                tracing::debug!(error = %e, "the acceptor stopped; stopping the server");
                core.handle.shutdown();
                failure = Some(e);
            }
        }
        (None, _) => runtime::shutdown_requested().await,
    }
    // Stop: end every open connection's pending receive, then give them a moment to finish.
    let st = state();
    {
        for (_, c) in st.open.borrow().iter() {
            if c.deadlines.borrow().sending() {
                // A send in progress may wait on a peer that does not read (a zero-copy send
                // would keep its buffers until then): abort it rather than wait.
                crate::sys::abort_tcp(&c.fd);
                continue;
            }
            let _ = SockRef::from(&*c.fd).shutdown(std::net::Shutdown::Both);
        }
    }
    until_all_closed(STOP_GRACE).await;
    // Whatever is still open after the grace (a send that started since) is aborted, and gets a
    // moment to end, so the ring is not left holding its operations.
    st.open.borrow().iter().for_each(|(_, c)| crate::sys::abort_tcp(&c.fd));
    until_all_closed(Duration::from_millis(500)).await;
    let mut stats = st.stats.get();
    for g in crate::buf::Group::ALL {
        stats.pools[g as usize] = crate::runtime::core::pool_stats(g).unwrap_or_default();
    }
    stats.send = crate::net::send_stats();
    stats.receives_capped = crate::ring::current_stats().map_or(0, |r| r.capped);
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Waits (at most `limit`) until this core has no open connection.
async fn until_all_closed(limit: Duration) {
    let deadline = Instant::now() + limit;
    let st = state();
    while !st.open.borrow().is_empty() && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
}

/// One open connection as the core's registry sees it: its socket (to shut it from outside), its
/// deadlines, and which limit it passed, if any.
struct Conn {
    fd: SharedFd,
    deadlines: RefCell<Deadlines>,
    expired: Cell<Option<Expiry>>,
}

impl Conn {
    /// Something was received or sent: a field write, no timer operation.
    fn activity(&self) {
        self.deadlines.borrow_mut().activity(runtime::now());
    }

    /// Runs `send` as this connection's send in progress: the watchdog ends it if it makes no
    /// progress for the send limit.
    async fn sending<F: std::future::Future>(&self, send: F) -> F::Output {
        self.deadlines.borrow_mut().send_started(runtime::now());
        let r = send.await;
        self.deadlines.borrow_mut().send_finished(runtime::now());
        r
    }

    /// Sends what `tx` holds, as a send in progress (each partial send that completes starts the
    /// send limit again).
    async fn flush(&self, tx: &mut SendQueue) -> std::io::Result<()> {
        if tx.queued() == 0 {
            return Ok(());
        }
        self.sending(tx.flush_observed(|_| self.deadlines.borrow_mut().send_started(runtime::now()))).await
    }
}

/// How often the watchdog looks: an eighth of the shortest limit, between 10 ms and 1 s (so a
/// limit is enforced at most that late). `None` without limits.
fn watchdog_tick(limits: &Limits) -> Option<Duration> {
    let shortest = [limits.handshake, limits.idle, limits.send].into_iter().flatten().min()?;
    Some((shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)))
}

/// The core's one timer for every connection's limits: each tick it checks the registry, and
/// ends a connection that passed a limit — shutting its read side for the handshake and idle
/// limits (the pending receive ends, and the connection says why in a CLOSE frame before it
/// closes), aborting it for a send that makes no progress (the send fails). Connections pay nothing
/// per message for their deadlines: no timer is armed, moved or polled on their path.
async fn watchdog(tick: Duration) {
    loop {
        runtime::sleep(tick).await;
        let now = runtime::now();
        {
            for (_, c) in state().open.borrow().iter() {
                if c.expired.get().is_some() {
                    continue;
                }
                if let Some(x) = c.deadlines.borrow().check(now) {
                    c.expired.set(Some(x));
                    if x == Expiry::Send {
                        // Abort: the peer does not read, so what is queued would never leave;
                        // dropping it (and the connection) also ends a zero-copy send, whose
                        // buffers the kernel would otherwise keep until the peer read them.
                        crate::sys::abort_tcp(&c.fd);
                    } else {
                        let _ = SockRef::from(&*c.fd).shutdown(std::net::Shutdown::Read);
                    }
                    state().bump(|st| st.expired[x as usize] += 1);
                }
            }
        }
    }
}

/// Counts a new connection and lists it among the core's open ones (so a stop can shut it).
fn register(stream: &TcpStream, limits: Limits) -> (usize, Rc<Conn>) {
    state().bump(|s| s.connections += 1);
    let conn = Rc::new(Conn {
        fd: stream.shared_fd(),
        deadlines: RefCell::new(Deadlines::new(limits, runtime::now())),
        expired: Cell::new(None),
    });
    (state().open.borrow_mut().insert(conn.clone()), conn)
}

/// Counts how a connection ended, takes it off the open list and closes it.
async fn finish(stream: TcpStream, slot: usize, failed: bool) {
    if failed {
        state().bump(|s| s.errors += 1);
    }
    state().open.borrow_mut().remove(slot);
    let _ = stream.close().await;
}

/// Echoes one connection until end of stream, an error or a limit. What arrives in a pool buffer
/// goes back out of the same buffer: no copy in user space.
async fn echo_tcp(stream: TcpStream, limits: Limits) {
    let st = state();
    let (slot, conn) = register(&stream, limits);
    let mut rx = stream.recv_stream();
    let mut failed = false;
    while let Some(r) = rx.next().await {
        let Ok(chunk) = r else {
            failed = true;
            break;
        };
        conn.activity();
        let n = chunk.len() as u64;
        st.bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n;
        });
        if conn.sending(stream.send_all(chunk)).await.0.is_err() {
            failed = true;
            break;
        }
        st.bump(|s| {
            s.messages_out += 1;
            s.bytes_out += n;
        });
    }
    drop(rx);
    // A connection the watchdog ended (its read side shut) ends here, as a limit, not an error.
    finish(stream, slot, failed && conn.expired.get().is_none()).await;
}

/// Echoes DATA frames (and answers PINGs) on one connection. All frames decoded from one receive
/// go back in one vectored send: each a header from the encoder and the payload as a slice of the
/// receive buffer. Bad input closes this connection only, with a CLOSE frame naming the reason.
async fn echo_framed(stream: TcpStream, opts: FramedOpts, limits: Limits) {
    let st = state();
    let (slot, conn) = register(&stream, limits);
    let mut rx = stream.recv_stream();
    let mut dec = FrameDecoder::new(opts.max_payload);
    dec.set_hold_limit(opts.receive_bound());
    let mut tx = SendQueue::new(stream.shared_fd(), opts.send_limit, opts.zc_threshold);
    tx.set_pin_limit(opts.receive_bound());
    let hello = hello_payload();
    let _ = tx.push(&header(Kind::Hello, 0, hello.len() as u32), &[hello]);
    let mut failed = conn.flush(&mut tx).await.is_err();
    'conn: while !failed {
        let chunk = match rx.next().await {
            Some(Ok(c)) => c,
            end => {
                // The watchdog shut the read side of a connection past its handshake or idle
                // limit: say why, then close.
                if let Some(x) = conn.expired.get() {
                    Box::pin(close_expired(&conn, &mut tx, &stream, x)).await;
                } else {
                    failed = end.is_some();
                    if end.is_none() && dec.buffered() > 0 {
                        // The peer ended its stream inside a frame: counted, not silent.
                        st.bump(|s| s.truncated += 1);
                    }
                }
                break;
            }
        };
        let n = chunk.len() as u64;
        st.bump(|s| s.bytes_in += n);
        let pinned = crate::runtime::core::pinned_size(&chunk);
        dec.push_pinned(chunk, pinned);
        // A scratch list shared by the core's connections: an idle connection holds none.
        let mut parts = st.parts.take();
        loop {
            parts.clear();
            let Some(r) = dec.next_frame_parts(&mut parts) else { break };
            if r.is_ok() {
                // Only a whole frame is activity: a peer dripping one byte now and then into a
                // frame it never finishes passes the idle limit.
                conn.activity();
            }
            let reply_kind = match r {
                Ok((kind, _, _)) => match kind {
                    Kind::Data => {
                        st.bump(|s| s.messages_in += 1);
                        Kind::Data
                    }
                    Kind::Ping => Kind::Pong,
                    Kind::Close => {
                        // Send what was queued before the peer's CLOSE, then end.
                        st.parts.set(parts);
                        let _ = conn.flush(&mut tx).await;
                        break 'conn;
                    }
                    Kind::Hello => {
                        conn.deadlines.borrow_mut().handshaken();
                        continue;
                    }
                    Kind::Pong => continue,
                },
                Err(e) => {
                    st.bump(|s| s.frame_errors[usize::from(e.code()) - 1] += 1);
                    st.parts.set(std::mem::take(&mut parts));
                    // Boxed: the cold path's state stays out of every connection's future.
                    Box::pin(close_with_reason(&conn, &mut tx, &stream, e.code(), &e.to_string())).await;
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
                if conn.flush(&mut tx).await.is_err() {
                    failed = true;
                    st.parts.set(std::mem::take(&mut parts));
                    break 'conn;
                }
                let _ = tx.push(&h, &parts);
            }
            if reply_kind == Kind::Data {
                st.bump(|s| {
                    s.messages_out += 1;
                    s.bytes_out += (len + crate::frame::HEADER_LEN) as u64;
                });
            }
        }
        parts.clear();
        st.parts.set(parts);
        if conn.flush(&mut tx).await.is_err() {
            failed = true;
        }
    }
    let d = dec.stats();
    st.bump(|s| {
        s.decode.frames += d.frames;
        s.decode.payload_bytes += d.payload_bytes;
        s.decode.spanning_frames += d.spanning_frames;
        s.decode.copied_bytes += d.copied_bytes;
        s.decode.compacted_bytes += d.compacted_bytes;
    });
    drop(rx);
    finish(stream, slot, failed && conn.expired.get().is_none()).await;
}

/// Tells a peer that passed the handshake or idle limit why its connection closes (a send that
/// timed out has no room for that), within a second.
async fn close_expired(conn: &Conn, tx: &mut SendQueue, stream: &TcpStream, x: Expiry) {
    let code = match x {
        Expiry::Handshake => crate::frame::CLOSE_HANDSHAKE_TIMEOUT,
        Expiry::Idle => crate::frame::CLOSE_IDLE_TIMEOUT,
        Expiry::Send => return,
    };
    let reason = format!("{} passed", x.name().replace('_', " "));
    let _ = runtime::timeout(Duration::from_secs(1), close_with_reason(conn, tx, stream, code, &reason)).await;
}

/// Tells the peer why its connection is closing (a CLOSE frame with the error's code), where the
/// socket still allows it, and shuts the write side.
async fn close_with_reason(conn: &Conn, tx: &mut SendQueue, stream: &TcpStream, code: u16, reason: &str) {
    let close = close_frame(code, reason);
    let close_header = header(Kind::Close, 0, close.payload.len() as u32);
    // Through the connection's flush, so the send limit bounds these sends too.
    if tx.push(&close_header, std::slice::from_ref(&close.payload)).is_err() {
        let _ = conn.flush(tx).await;
        let _ = tx.push(&close_header, &[close.payload]);
    }
    let _ = conn.flush(tx).await;
    let _ = stream.shutdown_write().await;
}

/// Echoes datagrams back to their senders, forever.
async fn echo_udp(sock: &UdpSocket) {
    let st = state();
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
                st.bump(|s| s.errors += 1);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "udp receive failed; this core stops echoing");
                return;
            }
        };
        st.bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n as u64;
        });
        let (r, b) = sock.send_to(buf, peer).await;
        buf = b;
        match r {
            Ok(n) => st.bump(|s| {
                s.messages_out += 1;
                s.bytes_out += n as u64;
            }),
            Err(_) => st.bump(|s| s.errors += 1),
        }
    }
}
