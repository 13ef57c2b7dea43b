//! `IORING_OP_RECV` into a buffer of the caller's.

use super::*;

/// `IORING_RECVSEND_POLL_FIRST`: wait for readiness before trying the receive.
const RECVSEND_POLL_FIRST: u16 = 1;

/// Receives into the spare capacity of `buf` (after its length). On completion the caller adds
/// the result to the length (`TcpStream::recv` does).
///
/// `poll_first` skips the kernel's first, non-blocking attempt: right for a receive that most
/// likely finds the socket empty (the previous one drained it), where that attempt is wasted work.
pub fn recv(fd: SharedFd, mut buf: Vec<u8>, poll_first: bool) -> Op<(SharedFd, Vec<u8>)> {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len().min(u32::MAX as usize) as u32);
    let ioprio = if poll_first { RECVSEND_POLL_FIRST } else { 0 };
    let entry = opcode::Recv::new(fd_of(&fd), ptr, len).ioprio(ioprio).build();
    // SAFETY: the pointer is into the Vec's heap allocation, owned by the op; moving the Vec does
    // not move its allocation.
    unsafe { Op::submit(entry, (fd, buf)) }
}

/// Marks `n` more bytes of `buf` as initialised after a receive into its spare capacity.
/// Crate-private: only the count of a completion of a receive into that very buffer may be
/// passed, and safe code outside could pass any number.
///
/// # Panics
/// If `n` exceeds the spare capacity (the kernel never reports more than it was given).
pub(crate) fn received(buf: &mut Vec<u8>, n: usize) {
    assert!(buf.len() + n <= buf.capacity());
    // SAFETY: the kernel initialised `n` bytes right after the old length (checked in bounds).
    unsafe { buf.set_len(buf.len() + n) };
}
