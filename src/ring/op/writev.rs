//! `IORING_OP_WRITEV` of many buffers in one operation.

use super::*;

/// The resources of a vectored send.
pub struct WritevData {
    /// The descriptor.
    pub fd: SharedFd,
    /// The buffers, in order.
    pub bufs: Vec<Bytes>,
    // Read by the kernel through the entry, never by us: kept alive here until completion.
    _iov: Vec<libc::iovec>,
}

/// Sends `bufs` in order with one `writev`. The first `skip` bytes are left out (for resuming after
/// a short write).
pub fn writev(fd: SharedFd, bufs: Vec<Bytes>, skip: usize) -> Op<WritevData> {
    let iov = iovecs(&bufs, skip);
    let entry = opcode::Writev::new(fd_of(&fd), iov.as_ptr(), iov.len() as u32).build();
    // SAFETY: the iovec array and every buffer it points into are owned by the op; neither the
    // Vec's allocation nor the Bytes' memory moves.
    unsafe { Op::submit(entry, WritevData { fd, bufs, _iov: iov }) }
}
