//! `IORING_OP_READ` (eventfd, signalfd).

use super::*;

/// Reads into the spare capacity of `buf` (eventfd, signalfd).
pub fn read(fd: SharedFd, mut buf: Vec<u8>) -> Op<(SharedFd, Vec<u8>)> {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len().min(u32::MAX as usize) as u32);
    let entry = opcode::Read::new(fd_of(&fd), ptr, len).offset(u64::MAX).build();
    // SAFETY: as for `recv`.
    unsafe { Op::submit(entry, (fd, buf)) }
}
