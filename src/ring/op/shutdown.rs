//! `IORING_OP_SHUTDOWN`.

use super::*;

/// Shuts down one or both directions (`libc::SHUT_WR`, …).
pub fn shutdown(fd: SharedFd, how: i32) -> Op<SharedFd> {
    let entry = opcode::Shutdown::new(fd_of(&fd), how).build();
    // SAFETY: no pointers.
    unsafe { Op::submit(entry, fd) }
}
