//! TCP on the ring.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::Bytes;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::NetError;
use crate::buf::Group;
use crate::ring::ops::{self, IoBuf, SharedFd};
use crate::runtime::core::discard_for;
use crate::runtime::Core;

/// A listening TCP socket. Created on any thread, accepted on one core.
pub struct TcpListener {
    socket: Socket,
    local: SocketAddr,
}

impl TcpListener {
    /// Binds and listens. There is no `SO_REUSEPORT`: a second server on the same port fails here
    /// instead of silently taking half of the connections.
    pub fn bind(addr: SocketAddr) -> Result<TcpListener, NetError> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| NetError::at(addr, e))?;
        // SO_REUSEADDR only lets us rebind over connections in TIME_WAIT; on Linux it does not let
        // two listeners share a port.
        socket.set_reuse_address(true).map_err(|e| NetError::at(addr, e))?;
        // `[::]` takes IPv4 too (mapped addresses), as iperf3's and most servers' default does;
        // a particular IPv6 address takes IPv6 only.
        if addr.is_ipv6() {
            socket.set_only_v6(!addr.ip().is_unspecified()).map_err(|e| NetError::at(addr, e))?;
        }
        socket.bind(&addr.into()).map_err(|e| NetError::at(addr, e))?;
        socket.listen(4096).map_err(|e| NetError::at(addr, e))?;
        let local = socket.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
        Ok(TcpListener { socket, local })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The descriptor, to move the listener to the core that accepts.
    pub fn into_fd(self) -> OwnedFd {
        self.socket.into()
    }
}

/// A connected TCP stream on the ring.
pub struct TcpStream {
    fd: SharedFd,
    /// The last receive left the socket empty (it did not fill its buffer), so the next one will
    /// most likely have to wait: ask the kernel to poll first instead of trying at once.
    drained: std::cell::Cell<bool>,
}

impl TcpStream {
    /// Wraps a connected descriptor (sets `TCP_NODELAY`).
    pub fn from_fd(fd: OwnedFd) -> TcpStream {
        let _ = SockRef::from(&fd).set_nodelay(true);
        TcpStream { fd: Rc::new(fd), drained: std::cell::Cell::new(false) }
    }

    /// Connects to `addr`, optionally from `source` (port chosen by the kernel).
    pub async fn connect(addr: SocketAddr, source: Option<std::net::IpAddr>) -> Result<TcpStream, NetError> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| NetError::at(addr, e))?;
        if let Some(ip) = source {
            // Let connect() pick the port, so one source address serves many destinations.
            let _ = socket.set_reuse_address(true);
            socket.bind(&SocketAddr::new(ip, 0).into()).map_err(|e| NetError::at(SocketAddr::new(ip, 0), e))?;
        }
        let _ = socket.set_nodelay(true);
        let fd: SharedFd = Rc::new(socket.into());
        let (c, (fd, _)) = ops::connect(fd, addr).await;
        c.into_result().map_err(|e| NetError::at(addr, e))?;
        Ok(TcpStream { fd, drained: std::cell::Cell::new(false) })
    }

    /// Connects a socket its caller made and configured (buffer sizes, congestion control: options
    /// that must be set before the handshake) to `addr`.
    pub async fn connect_socket(socket: Socket, addr: SocketAddr) -> Result<TcpStream, NetError> {
        let fd: SharedFd = Rc::new(socket.into());
        let (c, (fd, _)) = ops::connect(fd, addr).await;
        c.into_result().map_err(|e| NetError::at(addr, e))?;
        Ok(TcpStream { fd, drained: std::cell::Cell::new(false) })
    }

    /// Receives into the spare capacity of `buf`; returns the byte count (0 at end of stream) and
    /// the buffer with its length grown by that count.
    pub async fn recv(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let room = buf.capacity() - buf.len();
        let (c, (_, mut buf)) = ops::recv(self.fd.clone(), buf, self.drained.get()).await;
        match c.into_result() {
            Ok(n) => {
                self.drained.set((n as usize) < room);
                ops::received(&mut buf, n as usize);
                (Ok(n as usize), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Sends `buf[offset..]` once; returns how many bytes went.
    pub async fn send<B: IoBuf>(&self, buf: B, offset: usize) -> (io::Result<usize>, B) {
        let (c, (_, buf)) = ops::send(self.fd.clone(), buf, offset).await;
        (c.into_result().map(|n| n as usize), buf)
    }

    /// Sends all of `buf`, resuming after short writes.
    pub async fn send_all<B: IoBuf>(&self, mut buf: B) -> (io::Result<()>, B) {
        let mut off = 0;
        while off < buf.bytes_len() {
            let (r, b) = self.send(buf, off).await;
            buf = b;
            match r {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => off += n,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Sends all of `bufs` in order with vectored sends, resuming after short writes.
    pub async fn writev_all(&self, mut bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut off = 0;
        while off < total {
            let (c, data) = ops::writev(self.fd.clone(), bufs, off).await;
            bufs = data.bufs;
            match c.into_result() {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), bufs),
                Ok(n) => off += n as usize,
                Err(e) => return (Err(e), bufs),
            }
        }
        (Ok(()), bufs)
    }

    /// Shuts down the write side: the peer reads end of stream.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        let (c, _) = ops::shutdown(self.fd.clone(), libc::SHUT_WR).await;
        c.into_result().map(|_| ())
    }

    /// Closes the stream on the ring once no operation holds it any more.
    pub async fn close(self) -> io::Result<()> {
        match Rc::try_unwrap(self.fd) {
            Ok(fd) => ops::close(fd).await.0.into_result().map(|_| ()),
            // An orphaned operation still holds the descriptor; it closes when that completes.
            Err(_) => Ok(()),
        }
    }

    /// A multishot receive into this core's buffer pool: yields chunks as `Bytes` leased from the
    /// pool (no buffer is held while the connection is idle).
    pub fn recv_stream(&self) -> RecvStream {
        RecvStream {
            fd: self.fd.clone(),
            op: None,
            heap: None,
            probe: None,
            probed: false,
            group: Group::Small,
            armed: Group::Small,
            dry: Dry::default(),
        }
    }

    /// The descriptor back, to move the connection to another core; the stream back if an
    /// operation (or a clone of [`TcpStream::shared_fd`]) still holds it.
    pub fn into_fd(self) -> Result<OwnedFd, TcpStream> {
        let drained = self.drained;
        Rc::try_unwrap(self.fd).map_err(|fd| TcpStream { fd, drained })
    }

    /// The shared descriptor (to shut the socket down from elsewhere on this core).
    pub fn shared_fd(&self) -> SharedFd {
        self.fd.clone()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&*self.fd).peer_addr()?.as_socket().ok_or_else(|| io::ErrorKind::InvalidInput.into())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&*self.fd).local_addr()?.as_socket().ok_or_else(|| io::ErrorKind::InvalidInput.into())
    }
}

/// Size of the receive that replaces the pool's when it has run dry.
const HEAP_RECV: usize = 64 * 1024;

/// Receive completions a stream may leave unread before its multishot receive is stopped (and
/// re-armed once the reader gets to the end of what is queued): a connection whose reader is busy
/// elsewhere — waiting for a peer that does not read its replies — holds this many pool buffers in
/// the ring (1 MiB at 64 KiB), plus what the kernel posts in the enter that reaches the cap. Not
/// lower: a reader that answers each chunk with a send lets a few completions wait every turn
/// (a cap of four, counted across turns, measured 0.61× the messages per server CPU-second of the
/// commit before at 4 KiB × 16 pipelined), and a 1 MiB burst brings sixteen at once to a reader
/// that keeps up.
pub const RECV_QUEUE_CAP: u16 = 16;

/// A receive's standing with its buffer group, for [`crate::buf::BufPool::refill`]: the group's
/// epoch when the receive was armed, and how many `ENOBUFS` it met in a row since its last data.
/// Shared by the stream and datagram receives.
#[derive(Debug, Default)]
pub(super) struct Dry {
    armed_epoch: u64,
    repeats: u32,
}

impl Dry {
    /// A receive on `group` is about to be armed (registering the group on first use).
    pub(super) fn arm(&mut self, group: Group) -> io::Result<()> {
        self.armed_epoch = Core::with(|c| c.with_pool(group, |p| p.epoch()))?;
        Ok(())
    }

    /// The receive met `ENOBUFS`: whether re-arming is worth it (else a heap buffer).
    pub(super) fn refill(&mut self, group: Group) -> io::Result<bool> {
        let (armed, repeats) = (self.armed_epoch, self.repeats);
        self.repeats += 1;
        Core::with(|core| core.with_pool(group, |p| p.refill(armed, repeats)))
    }

    /// Data arrived.
    pub(super) fn data(&mut self) {
        self.repeats = 0;
    }
}

/// The next completion of the multishot receive in `slot`; `None` once the kernel ended it. The
/// slot is emptied when the operation ends (a completion without `F_MORE`, or none), so the next
/// call arms a new one.
pub(super) async fn next_of<T: 'static>(
    slot: &mut Option<crate::ring::OpStream<T>>,
) -> Option<crate::ring::Completion> {
    let c = slot.as_mut()?.next().await;
    if c.is_none_or(|c| !c.more()) {
        *slot = None;
    }
    c
}

/// Chunks received on a stream, leased from the core's buffer pool (see [`TcpStream::recv_stream`]).
pub struct RecvStream {
    fd: SharedFd,
    op: Option<crate::ring::OpStream<SharedFd>>,
    /// A receive into a heap buffer (the pool ran dry), kept here so that a caller dropping
    /// `next()` mid-wait (a `select`) loses no data: the next call picks it up.
    heap: Option<crate::ring::Op<(SharedFd, Vec<u8>)>>,
    /// The first receive, single-shot into the small group (kept here for the same reason): it
    /// says which group the connection belongs in before a multishot receive is armed — a
    /// multishot armed on the small group for a connection whose peer has already sent 64 KiB
    /// would take a hundred small buffers before its cancel landed.
    probe: Option<crate::ring::Op<SharedFd>>,
    probed: bool,
    /// The buffer group the next receive draws from: small until a receive fills a small buffer,
    /// then the stream group for good (see [`Group::Small`]).
    group: Group,
    /// The group of the receive in flight.
    armed: Group,
    /// Its standing with its buffer group after `ENOBUFS`.
    dry: Dry,
}

impl RecvStream {
    /// Ends the receive and returns, in order, what it had already taken from the socket: what is
    /// left unread stays in the socket for whoever reads it next (another core, after a move).
    /// `Err` if the stream failed; an end of stream among what was taken ends the list.
    pub async fn finish(mut self) -> io::Result<Vec<Bytes>> {
        let mut out = Vec::new();
        if let Some(op) = self.probe.take() {
            // Ended now if it is still waiting: what arrives later stays in the socket.
            op.cancel();
            let (c, _) = op.await;
            if c.result() < 0 && c.result() != -libc::ECANCELED && c.result() != -libc::ENOBUFS {
                return Err(io::Error::from_raw_os_error(-c.result()));
            }
            // Any buffer the completion selected goes back, data or not.
            if let Some(b) = Core::with(|core| core.with_pool(Group::Small, |p| p.take(&c)))? {
                out.push(b);
            }
        }
        if let Some(op) = self.heap.take() {
            op.cancel();
            let (c, (_, mut buf)) = op.await;
            match c.result() {
                n if n > 0 => {
                    ops::received(&mut buf, n as usize);
                    out.push(Bytes::from(buf));
                }
                0 => {}
                e if e == -libc::ECANCELED => {}
                e => return Err(io::Error::from_raw_os_error(-e)),
            }
        }
        let Some(mut op) = self.op.take() else { return Ok(out) };
        op.cancel();
        let group = self.armed;
        while let Some(c) = op.next().await {
            if c.result() == -libc::ECANCELED || c.result() == -libc::ENOBUFS {
                continue;
            }
            if c.result() < 0 {
                return Err(io::Error::from_raw_os_error(-c.result()));
            }
            match Core::with(|core| core.with_pool(group, |p| p.take(&c)))? {
                Some(b) => out.push(b),
                None => break,
            }
        }
        Ok(out)
    }

    /// The next chunk; `None` at end of stream. When the pool runs dry the receive is re-armed
    /// (and the event counted) without losing the connection.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if !self.probed {
                if self.probe.is_none() {
                    if let Err(e) = self.dry.arm(Group::Small) {
                        return Some(Err(e));
                    }
                    self.probe =
                        Some(ops::recv_select(self.fd.clone(), Group::Small.bgid(), discard_for(Group::Small)));
                }
                let (c, _) = self.probe.as_mut().expect("armed above").await;
                self.probe = None;
                if c.result() == -libc::ENOBUFS {
                    if !self.dry.refill(Group::Small).unwrap_or(false) {
                        // The small group is dry at its ceiling: go on with a multishot receive
                        // on the stream group, whose own fall-back is a heap receive.
                        self.probed = true;
                        self.group = Group::Stream;
                    }
                    continue;
                }
                self.probed = true;
                if c.result() < 0 {
                    return Some(Err(io::Error::from_raw_os_error(-c.result())));
                }
                let taken = Core::with(|core| {
                    core.with_pool(Group::Small, |p| {
                        let d = p.take(&c);
                        (d, p.buf_size())
                    })
                });
                match taken {
                    Ok((Some(b), size)) => {
                        self.dry.data();
                        if b.len() == size {
                            // It filled a small buffer: bulk data, the stream group from now on.
                            self.group = Group::Stream;
                        }
                        return Some(Ok(b));
                    }
                    Ok((None, _)) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            if let Some(op) = self.heap.as_mut() {
                let (c, (_, mut buf)) = op.await;
                self.heap = None;
                self.dry.data();
                return match c.into_result() {
                    Ok(0) => None,
                    Ok(n) => {
                        ops::received(&mut buf, n as usize);
                        // A `Bytes` of the Vec would keep its whole 64 KiB allocation for what
                        // may be one byte: copy what arrived (this is the cold path, taken only
                        // while the pool is dry), so memory held stays what was received.
                        if buf.len() == buf.capacity() {
                            Some(Ok(Bytes::from(buf)))
                        } else {
                            Some(Ok(Bytes::copy_from_slice(&buf)))
                        }
                    }
                    Err(e) => Some(Err(e)),
                };
            }
            if self.op.is_none() {
                // The pool must exist before a receive selects from it.
                if let Err(e) = self.dry.arm(self.group) {
                    return Some(Err(e));
                }
                let op = ops::recv_multi(self.fd.clone(), self.group.bgid(), discard_for(self.group));
                op.cap(RECV_QUEUE_CAP);
                self.armed = self.group;
                self.op = Some(op);
            }
            let Some(c) = next_of(&mut self.op).await else { continue };
            let group = self.armed;
            if c.result() == -libc::ENOBUFS {
                if !self.dry.refill(group).unwrap_or(false) {
                    // At the ceiling, every buffer leased out — perhaps to frames that cannot
                    // complete until more data arrives, which would need a buffer. Make progress
                    // without the pool: one plain receive into a buffer of our own, then re-arm.
                    Core::with(|core| core.with_pool(group, |p| p.note_heap_fallback())).ok();
                    // A stream group's size; and from a dry small group, the connection moves to
                    // the stream group, as a small buffer that fills would have moved it.
                    self.group = Group::Stream;
                    self.heap = Some(ops::recv(self.fd.clone(), Vec::with_capacity(HEAP_RECV), false));
                }
                continue;
            }
            if c.result() == -libc::ECANCELED {
                // Stopped because this reader fell behind (see RECV_QUEUE_CAP), or to move to
                // the stream group: re-arm.
                continue;
            }
            if c.result() < 0 {
                return Some(Err(io::Error::from_raw_os_error(-c.result())));
            }
            let data = match Core::with(|core| {
                core.with_pool(group, |p| {
                    let d = p.take(&c);
                    (d, p.buf_size())
                })
            }) {
                Ok((d, size)) => {
                    self.dry.data();
                    if group == Group::Small && c.result() as usize == size && self.group == Group::Small {
                        // A small buffer filled up: this connection moves bulk data. End this
                        // receive (what it already took still arrives, in order) and arm the
                        // next one on the stream group.
                        self.group = Group::Stream;
                        if let Some(op) = &self.op {
                            op.cancel();
                        }
                    }
                    d
                }
                Err(e) => return Some(Err(e)),
            };
            match data {
                Some(b) => return Some(Ok(b)),
                None if c.result() == 0 => return None,
                None => continue,
            }
        }
    }
}
