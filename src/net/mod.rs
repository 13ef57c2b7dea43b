//! TCP and UDP sockets on the ring: a listener, streams with owned-buffer receive/send/writev and
//! a multishot receive from the core's buffer groups, datagram sockets, the send queue and the
//! deadlines of a connection.
//!
//! Knows nothing of what the bytes mean.

mod limits;
pub(crate) mod send;
mod tcp;
mod transport;
mod udp;

pub use limits::{Deadlines, Expiry, Limits};
pub use send::{send_stats, Batch, BufferOf, Full, OutQueue, QueueStats, SendQueue, SendStats, Sender};
pub use tcp::{RecvStream, TcpListener, TcpStream, RECV_QUEUE_CAP};
pub use transport::{Plain, Transport, TransportError, Upgradable};
pub use udp::{Datagram, DatagramStream, UdpSocket};

use std::io;
use std::net::SocketAddr;

/// Errors that name the address they concern.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Another process (or another ringnode) already listens on the address.
    #[error("address {0} is already in use (is another server running on that port?)")]
    AddrInUse(SocketAddr),
    /// The address does not belong to this host.
    #[error("cannot bind {0}: no local interface has that address")]
    AddrNotAvailable(SocketAddr),
    /// Binding a port below 1024 without the privilege to.
    #[error("cannot bind {0}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    PermissionDenied(SocketAddr),
    /// The process ran out of descriptors.
    #[error("too many open files: the open-file limit (RLIMIT_NOFILE, `ulimit -n`) is {soft}; raise it, or use fewer connections")]
    TooManyFiles {
        /// The soft limit in force.
        soft: u64,
    },
    /// Anything else, with the address.
    #[error("{addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

impl NetError {
    /// Wraps an error from binding or connecting to `addr`.
    pub fn at(addr: SocketAddr, e: io::Error) -> NetError {
        match e.raw_os_error() {
            Some(libc::EADDRINUSE) => NetError::AddrInUse(addr),
            Some(libc::EADDRNOTAVAIL) => NetError::AddrNotAvailable(addr),
            Some(libc::EACCES) => NetError::PermissionDenied(addr),
            Some(libc::EMFILE) | Some(libc::ENFILE) => NetError::TooManyFiles { soft: crate::sys::nofile_limit().0 },
            _ => NetError::Io { addr, source: e },
        }
    }
}
