//! UDP on the ring.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use socket2::{Domain, Protocol, Socket, Type};

use super::NetError;
use crate::ring::ops::{self, SharedFd};

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
    pub async fn send_to(&self, buf: Vec<u8>, addr: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        let (c, data) = ops::sendmsg(self.fd.clone(), buf, addr).await;
        (c.into_result().map(|n| n as usize), data.buf)
    }
}
