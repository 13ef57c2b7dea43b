//! `IORING_OP_CONNECT`.

use super::*;

/// Connects `fd` to `addr`.
pub fn connect(fd: SharedFd, addr: SocketAddr) -> Op<(SharedFd, Box<SockAddr>)> {
    let addr = Box::new(SockAddr::from(addr));
    let entry = opcode::Connect::new(fd_of(&fd), addr.as_ptr().cast(), addr.len()).build();
    // SAFETY: the address lives in a Box owned by the op.
    unsafe { Op::submit(entry, (fd, addr)) }
}
