//! `IORING_OP_RECV` from a provided-buffer group: multishot, and single-shot.

use super::*;

/// Multishot receive into buffers of group `bgid`: one completion per chunk of data (its buffer id
/// in the flags), until end of stream, an error, or the group running dry (`ENOBUFS`). `discard`
/// gives a completion's buffer back to the group when nobody reads it.
pub fn recv_multi(fd: SharedFd, bgid: u16, discard: Discard) -> OpStream<SharedFd> {
    let entry = opcode::RecvMulti::new(fd_of(&fd), bgid).build();
    // SAFETY: no pointers; buffers come from the registered group, which outlives the ring's use.
    unsafe { OpStream::submit(entry, fd, Some(discard)) }
}

/// One receive into a buffer of group `bgid` (single-shot): what the kernel has for the socket, up
/// to one buffer. `discard` gives the buffer back if nobody reads the completion.
pub fn recv_select(fd: SharedFd, bgid: u16, discard: Discard) -> Op<SharedFd> {
    let entry = opcode::Recv::new(fd_of(&fd), std::ptr::null_mut(), 0)
        .buf_group(bgid)
        .build()
        .flags(io_uring::squeue::Flags::BUFFER_SELECT);
    // SAFETY: no pointers of ours (the kernel picks a buffer of the registered group).
    unsafe { Op::submit_with(entry, fd, Some(discard)) }
}
