//! `IORING_OP_RECV`, multishot, from a provided-buffer group.

use super::*;

/// Multishot receive into buffers of group `bgid`: one completion per chunk of data (its buffer id
/// in the flags), until end of stream, an error, or the group running dry (`ENOBUFS`). `discard`
/// gives a completion's buffer back to the group when nobody reads it.
pub fn recv_multi(fd: SharedFd, bgid: u16, discard: Discard) -> OpStream<SharedFd> {
    let entry = opcode::RecvMulti::new(fd_of(&fd), bgid).build();
    // SAFETY: no pointers; buffers come from the registered group, which outlives the ring's use.
    unsafe { OpStream::submit(entry, fd, Some(discard)) }
}
