//! The echo service, the smallest driver over `server/`: TCP bytes back as they come, native
//! frames back as they are decoded, or UDP datagrams back to their senders (each core receiving on
//! its own duplicate of the socket), with counters reported when it stops.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::frame::{header, FrameDecoder, Kind};
use crate::net::{Limits, SendQueue, TcpStream, UdpSocket};
use crate::runtime::{self, Core, CoreInfo, RuntimeConfig};
use crate::server::{Connection, Entry, Server, ServerConfig, ServerStats, Service};
use crate::session::{Event, Session, SessionConfig, State as SessionState};

pub use crate::server::ServeError;

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
    /// Framed connections closed for bad input, by reason (indexed like [`crate::session::INPUT_ERROR_NAMES`]).
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

impl std::ops::AddAssign for EchoStats {
    fn add_assign(&mut self, o: EchoStats) {
        self.connections += o.connections;
        self.messages_in += o.messages_in;
        self.bytes_in += o.bytes_in;
        self.messages_out += o.messages_out;
        self.bytes_out += o.bytes_out;
        self.errors += o.errors;
        for (a, b) in self.pools.iter_mut().zip(o.pools) {
            *a += b;
        }
        self.decode += o.decode;
        self.send += o.send;
        self.receives_capped += o.receives_capped;
        self.truncated += o.truncated;
        for (a, b) in self.frame_errors.iter_mut().zip(o.frame_errors) {
            *a += b;
        }
        for (a, b) in self.expired.iter_mut().zip(o.expired) {
            *a += b;
        }
    }
}

impl EchoStats {
    /// As JSON (the admin endpoint's `/stats`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut pools = serde_json::Map::new();
        for g in crate::buf::Group::ALL {
            let p = &self.pools[g as usize];
            pools.insert(
                format!("{g:?}").to_lowercase(),
                serde_json::json!({
                    "leases": p.leases, "recycled": p.recycled, "enobufs": p.enobufs,
                    "heap_fallbacks": p.heap_fallbacks, "grown": p.grown, "buffers": p.buffers,
                }),
            );
        }
        let names = crate::session::INPUT_ERROR_NAMES;
        let frame_errors: serde_json::Map<String, serde_json::Value> =
            names.iter().zip(self.frame_errors).map(|(n, c)| (n.to_string(), c.into())).collect();
        serde_json::json!({
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "frame_errors": frame_errors,
            "truncated": self.truncated,
            "receives_capped": self.receives_capped,
            "pools": pools,
            "decode": {
                "frames": self.decode.frames, "payload_bytes": self.decode.payload_bytes,
                "copied_bytes": self.decode.copied_bytes, "compacted_bytes": self.decode.compacted_bytes,
            },
            "send": {
                "writevs": self.send.writevs, "zc_sends": self.send.zc_sends, "zc_copied": self.send.zc_copied,
                "coalesced_bytes": self.send.coalesced_bytes, "unpinned_bytes": self.send.unpinned_bytes,
            },
        })
    }
}

impl EchoStats {
    /// The counters as lines a person reads (printed when the server stops).
    pub fn text(&self) -> String {
        let s = self;
        let mut out = format!(
            "ringnode echo: stopped: {} connections, {} messages / {} bytes in, {} messages / {} bytes out, {} errors",
            s.connections, s.messages_in, s.bytes_in, s.messages_out, s.bytes_out, s.errors
        );
        let mut all = crate::buf::PoolStats::default();
        s.pools.iter().for_each(|p| all += *p);
        out += &format!(
            "\nringnode echo: receive pools: {} buffers leased, {} recycled, {} times empty (ENOBUFS, re-armed; {} receives into heap buffers \
             at a pool's ceiling); {} receives stopped for a reader that fell behind",
            all.leases, all.recycled, all.enobufs, all.heap_fallbacks, s.receives_capped
        );
        for g in crate::buf::Group::ALL {
            let p = &s.pools[g as usize];
            if p.buffers > 0 {
                out += &format!(
                    "; {} ({} B buffers): {} leased, {} buffers (grown {} times)",
                    format!("{g:?}").to_lowercase(),
                    g.default_config().buf_size,
                    p.leases,
                    p.buffers,
                    p.grown
                );
            }
        }
        if s.decode.frames > 0 {
            let d = &s.decode;
            let pct = 100.0 * d.copied_bytes as f64 / d.payload_bytes.max(1) as f64;
            out += &format!(
                "\nringnode echo: frames: {} decoded, {} payload bytes, {} copied in user space ({pct:.3}%, {} frames spanned receive buffers); \
                 {} bytes compacted out of receive buffers to bound what a connection holds",
                d.frames, d.payload_bytes, d.copied_bytes, d.spanning_frames, d.compacted_bytes
            );
            let t = &s.send;
            out += &format!(
                "\nringnode echo: sends: {} vectored, {} zero-copy ({} bytes; kernel copied {} of them, {} went without a copy; \
                 {} connections stopped asking after repeated copies); {} bytes of small frames coalesced (copied); \
                 {} bytes copied rather than hold receive buffers for a slow reader",
                t.writevs, t.zc_sends, t.zc_bytes, t.zc_copied, t.zc_zero_copy, t.zc_given_up, t.coalesced_bytes, t.unpinned_bytes
            );
        }
        if s.truncated > 0 {
            out += &format!("\nringnode echo: connections whose peer ended the stream inside a frame: {}", s.truncated);
        }
        if s.expired.iter().any(|&n| n > 0) {
            out += &format!(
                "\nringnode echo: connections closed at a limit: handshake_timeout {}, idle_timeout {}, send_timeout {}",
                s.expired[0], s.expired[1], s.expired[2]
            );
        }
        if s.frame_errors.iter().any(|&n| n > 0) {
            let parts: Vec<String> = crate::session::INPUT_ERROR_NAMES
                .iter()
                .zip(s.frame_errors)
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            out += &format!("\nringnode echo: connections closed for bad frames: {}", parts.join(", "));
        }
        out
    }
}

/// The echo service's state on one core (a core-local value, see `runtime::Core::local`).
#[derive(Default)]
struct CoreState {
    stats: Cell<EchoStats>,
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
    /// Where the admin endpoint listens (`/healthz`, `/stats`), if anywhere.
    pub admin: Option<SocketAddr>,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

/// The echo service (see the module docs).
struct EchoService {
    framed: Option<FramedOpts>,
    /// UDP: the bound socket, duplicated for every core.
    udp: Option<Mutex<OwnedFd>>,
}

impl Service for EchoService {
    type Stats = EchoStats;

    fn serve(self: Arc<Self>, conn: Connection) -> impl std::future::Future<Output = ()> + 'static {
        let framed = self.framed;
        async move {
            match framed {
                Some(opts) => echo_framed(conn, opts).await,
                None => echo_tcp(conn).await,
            }
        }
    }

    fn on_core(self: &Arc<Self>, _core: &CoreInfo) {
        let fd = self.udp.as_ref().and_then(|m| m.lock().ok().and_then(|f| f.try_clone().ok()));
        if let Some(fd) = fd {
            runtime::spawn_detached(async move {
                let sock = UdpSocket::from_fd(fd);
                let _ = runtime::select(echo_udp(&sock), runtime::shutdown_requested()).await;
            });
        }
    }

    fn core_stats(&self) -> EchoStats {
        let mut stats = state().stats.get();
        for g in crate::buf::Group::ALL {
            stats.pools[g as usize] = crate::runtime::core::pool_stats(g).unwrap_or_default();
        }
        stats.send = crate::net::send_stats();
        stats.receives_capped = crate::ring::current_stats().map_or(0, |r| r.capped);
        stats
    }

    fn stats_json(stats: &EchoStats) -> serde_json::Value {
        stats.to_json()
    }
}

/// A running echo server.
pub struct EchoServer {
    local: SocketAddr,
    server: Server<EchoService>,
}

impl EchoServer {
    /// Binds (on the calling thread, so a port in use is reported before any core starts) and
    /// starts the cores.
    pub fn start(config: EchoConfig) -> Result<EchoServer, ServeError> {
        let mut limits = config.limits;
        if config.framed.is_none() {
            // Bytes have no handshake.
            limits.handshake = None;
        }
        let (udp, local) = if config.udp {
            let (fd, local) = UdpSocket::bind_fd(config.listen)?;
            (Some(Mutex::new(fd)), Some(local))
        } else {
            (None, None)
        };
        let server = Server::start(
            ServerConfig {
                listen: (!config.udp).then_some(config.listen),
                limits,
                stop_grace: STOP_GRACE,
                admin: config.admin,
                runtime: config.runtime,
            },
            EchoService { framed: config.framed, udp },
        )?;
        let local = local.or(server.local_addr()).unwrap_or(config.listen);
        Ok(EchoServer { local, server })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The admin endpoint's address, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.server.admin_addr()
    }

    /// The runtime handle (to stop it).
    pub fn handle(&self) -> &runtime::Handle {
        self.server.handle()
    }

    /// Waits for the server to stop and returns the counts summed over cores, or why it failed.
    pub fn join(self) -> Result<EchoStats, ServeError> {
        let (server, mut echo) = self.server.join()?;
        merge_server_stats(&mut echo, &server);
        Ok(echo)
    }
}

/// The server layer's counts, in the echo report's terms.
fn merge_server_stats(echo: &mut EchoStats, server: &ServerStats) {
    echo.connections = server.accepted;
    echo.errors += server.errors;
    echo.expired = server.expired;
}

/// Echoes one connection until end of stream, an error or a limit. What arrives in a pool buffer
/// goes back out of the same buffer: no copy in user space.
async fn echo_tcp(conn: Connection) {
    let st = state();
    let entry = conn.entry().clone();
    let stream = conn.stream();
    // What arrived on another core before the connection moved here goes back first.
    for chunk in conn.buffered.clone() {
        if entry.sending(stream.send_all(chunk)).await.0.is_err() {
            conn.finish(true).await;
            return;
        }
    }
    let mut rx = stream.recv_stream();
    let mut failed = false;
    while let Some(r) = rx.next().await {
        let Ok(chunk) = r else {
            failed = true;
            break;
        };
        entry.activity();
        let n = chunk.len() as u64;
        st.bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n;
        });
        if entry.sending(stream.send_all(chunk)).await.0.is_err() {
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
    conn.finish(failed && entry.expired().is_none()).await;
}

/// Echoes DATA frames (and answers PINGs) on one connection: the codec cuts the bytes into frames,
/// the session says what they mean, and the replies go out together. All frames decoded from one
/// receive go back in one vectored send: each a header from the encoder and the payload as a slice
/// of the receive buffer. Bad input closes this connection only, with a CLOSE frame naming the
/// reason.
async fn echo_framed(conn: Connection, opts: FramedOpts) {
    let st = state();
    let entry = conn.entry().clone();
    let stream = conn.stream();
    let mut rx = stream.recv_stream();
    let mut dec = FrameDecoder::new(opts.max_payload);
    dec.set_hold_limit(opts.receive_bound());
    // Limits are the server's watchdog's: the session only says what they mean on the wire.
    let mut session = Box::new(Session::new(SessionConfig::default(), runtime::now()));
    // What arrived on another core before the connection moved here is decoded first.
    let mut pending = 0;
    let mut tx = SendQueue::new(stream.shared_fd(), opts.send_limit, opts.zc_threshold);
    tx.set_pin_limit(opts.receive_bound());
    let mut failed =
        Box::pin(transmit(&mut session, &entry, &mut tx)).await.is_err() || entry.flush(&mut tx).await.is_err();
    'conn: while !failed {
        let next = match conn.buffered.get(pending) {
            Some(c) => {
                pending += 1;
                Some(Ok(c.clone()))
            }
            None => rx.next().await,
        };
        let chunk = match next {
            Some(Ok(c)) => c,
            end => {
                // The watchdog shut the read side of a connection past its handshake or idle
                // limit: say why, then close.
                if let Some(x) = entry.expired() {
                    session.expire(x);
                    // Boxed: the cold path's state stays out of every connection's future.
                    let close = Box::pin(close_out(&mut session, &entry, &mut tx, stream));
                    let _ = runtime::timeout(Duration::from_secs(1), close).await;
                } else {
                    failed = end.is_some();
                    if dec.buffered() > 0 {
                        // The peer ended its stream (closed or reset it) inside a frame:
                        // counted, not silent.
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
        let now = runtime::now();
        // A scratch list shared by the core's connections: an idle connection holds none.
        let mut parts = st.parts.take();
        loop {
            parts.clear();
            if session.state() == SessionState::AwaitingHello {
                // Before the handshake a frame is judged by its header: a peer that has not said
                // HELLO cannot make this connection hold a large frame.
                if let Some(Ok((kind, _, len))) = dec.peek() {
                    if let Err(e) = session.check_header(kind, len) {
                        st.bump(|s| s.frame_errors[usize::from(e.code()) - 1] += 1);
                        Box::pin(close_out(&mut session, &entry, &mut tx, stream)).await;
                        break 'conn;
                    }
                }
            }
            let Some(r) = dec.next_frame_parts(&mut parts) else { break };
            let event = match r {
                Ok((kind, _, _)) => {
                    // Only a whole frame is activity: a peer dripping one byte now and then into
                    // a frame it never finishes passes the idle limit.
                    entry.activity_at(now);
                    session.on_frame(now, kind, &parts).map_err(|e| e.code())
                }
                Err(e) => {
                    session.on_codec_error(&e);
                    Err(e.code())
                }
            };
            match event {
                Ok(Event::Data) => {
                    st.bump(|s| s.messages_in += 1);
                    // The reply: a new header, then the payload as the very slices it arrived in
                    // (copied into the coalescing buffer only when it is small).
                    let len: usize = parts.iter().map(|p| p.len()).sum();
                    let h = header(Kind::Data, 0, len as u32);
                    if tx.push(&h, &parts).is_err() {
                        // Full: this connection waits for its own send (bounded by the send
                        // limit); no other connection is held up, and meanwhile its receive
                        // stops (RECV_QUEUE_CAP). Inline rather than through `queue`: this is
                        // the hot path, and every connection's future holds its state.
                        if entry.flush(&mut tx).await.is_err() {
                            failed = true;
                            break;
                        }
                        let _ = tx.push(&h, &parts);
                    }
                    st.bump(|s| {
                        s.messages_out += 1;
                        s.bytes_out += (len + crate::frame::HEADER_LEN) as u64;
                    });
                }
                Ok(Event::Open { .. }) => entry.handshaken(),
                Ok(Event::Ping) => {
                    // Boxed: the cold path's state stays out of every connection's future.
                    if Box::pin(transmit(&mut session, &entry, &mut tx)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                Ok(Event::PeerClosed { .. }) => {
                    // Send what was queued before the peer's CLOSE, then end. The scratch list
                    // goes back empty: a slice left in it would hold its receive buffer.
                    parts.clear();
                    st.parts.set(parts);
                    let _ = entry.flush(&mut tx).await;
                    break 'conn;
                }
                Ok(Event::Pong | Event::Expired(_) | Event::Ignored) => {}
                Err(code) => {
                    st.bump(|s| s.frame_errors[usize::from(code) - 1] += 1);
                    parts.clear();
                    st.parts.set(std::mem::take(&mut parts));
                    // Boxed: the cold path's state stays out of every connection's future.
                    Box::pin(close_out(&mut session, &entry, &mut tx, stream)).await;
                    break 'conn;
                }
            }
        }
        parts.clear();
        st.parts.set(parts);
        if failed || entry.flush(&mut tx).await.is_err() {
            failed = true;
        }
    }
    let d = dec.stats();
    st.bump(|s| s.decode += d);
    drop(rx);
    conn.finish(failed && entry.expired().is_none()).await;
}

/// Queues one frame (a header, then the payload slices); a full queue first waits for this
/// connection's own send (bounded by the send limit: no other connection is held up, and
/// meanwhile its receive stops, see `RECV_QUEUE_CAP`).
async fn queue(entry: &Entry, tx: &mut SendQueue, kind: Kind, parts: &[Bytes]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let h = header(kind, 0, len as u32);
    if tx.push(&h, parts).is_err() {
        entry.flush(tx).await?;
        let _ = tx.push(&h, parts);
    }
    Ok(())
}

/// Queues every frame the session has to send.
async fn transmit(session: &mut Session, entry: &Entry, tx: &mut SendQueue) -> std::io::Result<()> {
    while let Some((kind, parts)) = session.poll_transmit() {
        queue(entry, tx, kind, &parts).await?;
    }
    Ok(())
}

/// Sends what the session queued last (the CLOSE saying why), where the socket still allows it,
/// and shuts the write side.
async fn close_out(session: &mut Session, entry: &Entry, tx: &mut SendQueue, stream: &TcpStream) {
    // Through the connection's flush, so the send limit bounds these sends too.
    let _ = transmit(session, entry, tx).await;
    let _ = entry.flush(tx).await;
    let _ = stream.shutdown_write().await;
}

/// Echoes datagrams back to their senders, forever: each arrives in a buffer of the core's
/// datagram group (multishot `RECVMSG`) and goes back out of it.
async fn echo_udp(sock: &UdpSocket) {
    let st = state();
    let mut rx = sock.recv_stream();
    loop {
        let d = match rx.next().await {
            Ok(d) => d,
            // An ICMP error surfacing on the socket, or an interrupted receive.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) || e.kind() == std::io::ErrorKind::Interrupted => {
                st.bump(|s| s.errors += 1);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "udp receive failed; this core stops echoing");
                return;
            }
        };
        // A datagram without a usable sender.
        let Some(peer) = d.peer else { continue };
        let n = d.data.len() as u64;
        st.bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n;
        });
        match sock.send_to(d.data, peer).await.0 {
            Ok(n) => st.bump(|s| {
                s.messages_out += 1;
                s.bytes_out += n as u64;
            }),
            Err(_) => st.bump(|s| s.errors += 1),
        }
    }
}
