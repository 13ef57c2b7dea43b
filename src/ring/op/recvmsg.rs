//! `IORING_OP_RECVMSG`: one datagram and its sender.

use super::*;

/// The message header of a datagram operation with the storage it points into.
pub struct MsgStore {
    pub(super) hdr: libc::msghdr,
    pub(super) iov: libc::iovec,
    pub(super) addr: libc::sockaddr_storage,
}

impl MsgStore {
    pub(super) fn new() -> Box<MsgStore> {
        // SAFETY: all three are plain C structs for which zero is a valid value.
        Box::new(unsafe { std::mem::zeroed() })
    }

    /// The peer address the kernel wrote (after a `recvmsg`).
    pub fn peer(&self) -> Option<SocketAddr> {
        // SAFETY: the storage is initialised (zeroed, then written by the kernel) and the length
        // is what the kernel reported, bounded by the storage size.
        let addr = unsafe { SockAddr::new(self.addr, self.hdr.msg_namelen) };
        addr.as_socket()
    }
}

/// The resources of a datagram operation.
pub struct DatagramData<B = Vec<u8>> {
    /// The descriptor.
    pub fd: SharedFd,
    /// The payload buffer.
    pub buf: B,
    /// The header (and, after a receive, the sender's address).
    pub msg: Box<MsgStore>,
}

/// Receives one datagram into the spare capacity of `buf`, with its sender's address.
pub fn recvmsg(fd: SharedFd, mut buf: Vec<u8>) -> Op<DatagramData> {
    let mut msg = MsgStore::new();
    let spare = buf.spare_capacity_mut();
    msg.iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
    msg.hdr.msg_name = (&mut msg.addr as *mut libc::sockaddr_storage).cast();
    msg.hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    msg.hdr.msg_iov = &mut msg.iov;
    msg.hdr.msg_iovlen = 1;
    let entry = opcode::RecvMsg::new(fd_of(&fd), &mut msg.hdr).build();
    // SAFETY: the header points into its own Box and into the Vec's allocation, both owned by the
    // op and neither moved by moving the op.
    unsafe { Op::submit(entry, DatagramData { fd, buf, msg }) }
}
