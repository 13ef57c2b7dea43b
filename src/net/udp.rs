//! UDP on the ring.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use super::tcp::{next_of, Dry};
use super::NetError;
use crate::buf::Group;
use crate::ring::ops::{self, IoBuf, SharedFd};
use crate::runtime::core::discard_for;
use crate::runtime::Core;

/// A datagram socket on the ring.
pub struct UdpSocket {
    fd: SharedFd,
}

impl UdpSocket {
    /// Binds a socket (without `SO_REUSEPORT`, so a second server on the port is an error). Returns
    /// the descriptor, which every core may share: the kernel gives each datagram to one waiter.
    pub fn bind_fd(addr: SocketAddr) -> Result<(OwnedFd, SocketAddr), NetError> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| NetError::at(addr, e))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(|e| NetError::at(addr, e))?;
        }
        socket.bind(&addr.into()).map_err(|e| NetError::at(addr, e))?;
        let local = socket.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
        Ok((socket.into(), local))
    }

    /// Wraps a bound descriptor.
    pub fn from_fd(fd: OwnedFd) -> UdpSocket {
        UdpSocket { fd: Rc::new(fd) }
    }

    /// Receives one datagram into the spare capacity of `buf`.
    pub async fn recv_from(&self, buf: Vec<u8>) -> (io::Result<(usize, Option<SocketAddr>)>, Vec<u8>) {
        let (c, data) = ops::recvmsg(self.fd.clone(), buf).await;
        let mut buf = data.buf;
        match c.into_result() {
            Ok(n) => {
                ops::received(&mut buf, n as usize);
                (Ok((n as usize, data.msg.peer())), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Sends `buf` as one datagram to `addr`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: SocketAddr) -> (io::Result<usize>, B) {
        let (c, data) = ops::sendmsg(self.fd.clone(), buf, addr).await;
        (c.into_result().map(|n| n as usize), data.buf)
    }

    /// Sends `buf[offset..]` as one datagram (or, with `UDP_SEGMENT` set, as segments) to the
    /// connected peer.
    pub async fn send<B: IoBuf>(&self, buf: B, offset: usize) -> (io::Result<usize>, B) {
        let (c, (_, buf)) = ops::send(self.fd.clone(), buf, offset).await;
        (c.into_result().map(|n| n as usize), buf)
    }

    /// The descriptor, for socket options.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self.fd)
    }

    /// Datagrams as they arrive, with a multishot `RECVMSG` into this core's datagram buffer group
    /// (no buffer is held while nothing arrives; each datagram is a slice of its pool buffer).
    pub fn recv_stream(&self) -> DatagramStream {
        DatagramStream { fd: self.fd.clone(), op: None, heap: None, dry: Dry::default() }
    }
}

impl std::os::fd::AsFd for UdpSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&*self.fd)
    }
}

/// One datagram received.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Its sender.
    pub peer: Option<SocketAddr>,
    /// Its bytes: a slice of the pool buffer it arrived in.
    pub data: Bytes,
    /// It was larger than a buffer and was cut.
    pub truncated: bool,
}

/// Datagrams from a multishot receive (see [`UdpSocket::recv_stream`]).
pub struct DatagramStream {
    fd: SharedFd,
    op: Option<crate::ring::OpStream<(SharedFd, Box<ops::MsgTemplate>)>>,
    /// A receive into a heap buffer (the group was dry at its ceiling), kept here so that a
    /// caller dropping `next()` mid-wait loses no datagram: the next call picks it up.
    heap: Option<crate::ring::Op<ops::DatagramData>>,
    /// Its standing with the datagram group after `ENOBUFS`.
    dry: Dry,
}

impl DatagramStream {
    /// The next datagram. When the group runs dry the receive is re-armed once buffers are back
    /// (the datagrams wait in the socket), or, with every buffer leased out at the group's
    /// ceiling, one datagram is received into a heap buffer.
    pub async fn next(&mut self) -> io::Result<Datagram> {
        loop {
            if let Some(op) = self.heap.as_mut() {
                let (c, data) = op.await;
                self.heap = None;
                self.dry.data();
                let mut buf = data.buf;
                let n = c.into_result()? as usize;
                ops::received(&mut buf, n);
                // Copied to its length: the cold path, and the 64 KiB allocation goes at once.
                return Ok(Datagram { peer: data.msg.peer(), data: Bytes::copy_from_slice(&buf), truncated: false });
            }
            if self.op.is_none() {
                self.dry.arm(Group::Datagram)?;
                let op = ops::recvmsg_multi(self.fd.clone(), Group::Datagram.bgid(), discard_for(Group::Datagram));
                op.cap(super::RECV_QUEUE_CAP);
                self.op = Some(op);
            }
            let Some(c) = next_of(&mut self.op).await else { continue };
            match -c.result() {
                libc::ENOBUFS => {
                    if !self.dry.refill(Group::Datagram)? {
                        Core::with(|core| core.with_pool(Group::Datagram, |p| p.note_heap_fallback()))?;
                        self.heap = Some(ops::recvmsg(self.fd.clone(), Vec::with_capacity(64 * 1024)));
                    }
                    continue;
                }
                // Stopped for a reader that fell behind: re-arm.
                libc::ECANCELED => continue,
                e if e > 0 => return Err(io::Error::from_raw_os_error(e)),
                _ => {}
            }
            let Some(buf) = Core::with(|core| core.with_pool(Group::Datagram, |p| p.take(&c)))? else {
                continue;
            };
            let Some((peer, range, truncated)) = ops::parse_datagram(&buf) else {
                continue;
            };
            self.dry.data();
            return Ok(Datagram { peer, data: buf.slice(range), truncated });
        }
    }
}
