//! `IORING_OP_ACCEPT`, multishot: one completion per accepted connection.

use super::*;

/// Multishot accept: one completion per accepted connection (its descriptor as the result).
/// `discard` is given the completions nobody reads (the stream was dropped): the listener's owner
/// closes their descriptors.
pub fn accept_multi(fd: SharedFd, discard: Discard) -> OpStream<SharedFd> {
    let entry = opcode::AcceptMulti::new(fd_of(&fd)).flags(libc::SOCK_CLOEXEC).build();
    // SAFETY: no pointers; the op keeps the listener's descriptor open.
    unsafe { OpStream::submit(entry, fd, Some(discard)) }
}

/// Takes ownership of a descriptor the kernel returned in a completion (accept). Crate-private:
/// turning any integer into an `OwnedFd` would let safe code close descriptors it does not own.
///
/// # Panics
/// If `raw` is negative (an error, not a descriptor).
pub(crate) fn adopt_fd(raw: i32) -> OwnedFd {
    assert!(raw >= 0, "adopt_fd on an error result");
    // SAFETY: a non-negative accept result is a new descriptor that nothing else owns.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
}
