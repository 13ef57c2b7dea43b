//! `IORING_OP_SENDMSG`: one datagram to an address.

use super::*;

/// Sends `buf` as one datagram to `addr`.
pub fn sendmsg<B: IoBuf>(fd: SharedFd, buf: B, addr: SocketAddr) -> Op<DatagramData<B>> {
    let mut msg = MsgStore::new();
    let sa = SockAddr::from(addr);
    // SAFETY: `sa.len()` bytes fit in sockaddr_storage, which is the largest socket address.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (&mut msg.addr as *mut libc::sockaddr_storage).cast::<u8>(),
            sa.len() as usize,
        )
    };
    msg.iov = libc::iovec { iov_base: buf.stable_ptr() as *mut _, iov_len: buf.bytes_len() };
    msg.hdr.msg_name = (&mut msg.addr as *mut libc::sockaddr_storage).cast();
    msg.hdr.msg_namelen = sa.len();
    msg.hdr.msg_iov = &mut msg.iov;
    msg.hdr.msg_iovlen = 1;
    let entry = opcode::SendMsg::new(fd_of(&fd), &msg.hdr).flags(libc::MSG_NOSIGNAL as u32).build();
    // SAFETY: as for `recvmsg`; the payload is `buf`'s stable memory (the `IoBuf` contract).
    unsafe { Op::submit(entry, DatagramData { fd, buf, msg }) }
}
