//! `IORING_OP_SEND` of one buffer.

use super::*;

/// Sends `buf[offset..]`.
pub fn send<B: IoBuf>(fd: SharedFd, buf: B, offset: usize) -> Op<(SharedFd, B)> {
    let offset = offset.min(buf.bytes_len());
    let len = (buf.bytes_len() - offset).min(u32::MAX as usize) as u32;
    // SAFETY (pointer arithmetic): offset <= len of the allocation.
    let ptr = unsafe { buf.stable_ptr().add(offset) };
    let entry = opcode::Send::new(fd_of(&fd), ptr, len).flags(libc::MSG_NOSIGNAL).build();
    // SAFETY: the pointer is into `buf`'s stable memory, owned by the op.
    unsafe { Op::submit(entry, (fd, buf)) }
}

/// Sends `buf[offset..]` with `MSG_MORE` too: the kernel may hold the bytes until a full segment
/// has gathered (the sender says more follow at once).
pub fn send_more<B: IoBuf>(fd: SharedFd, buf: B, offset: usize) -> Op<(SharedFd, B)> {
    let offset = offset.min(buf.bytes_len());
    let len = (buf.bytes_len() - offset).min(u32::MAX as usize) as u32;
    // SAFETY (pointer arithmetic): offset <= len of the allocation.
    let ptr = unsafe { buf.stable_ptr().add(offset) };
    let entry = opcode::Send::new(fd_of(&fd), ptr, len).flags(libc::MSG_NOSIGNAL | libc::MSG_MORE).build();
    // SAFETY: the pointer is into `buf`'s stable memory, owned by the op.
    unsafe { Op::submit(entry, (fd, buf)) }
}
