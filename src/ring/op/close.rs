//! `IORING_OP_CLOSE`.

use super::*;

/// Closes `fd` on the ring.
pub fn close(fd: OwnedFd) -> Op<()> {
    let entry = opcode::Close::new(types::Fd(fd.into_raw_fd())).build();
    // SAFETY: no pointers; the descriptor's ownership passed to the kernel.
    unsafe { Op::submit(entry, ()) }
}
