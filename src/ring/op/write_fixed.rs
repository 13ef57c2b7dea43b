//! `IORING_OP_WRITE_FIXED` from registered memory.

use super::*;

/// Memory registered with the ring as a fixed buffer.
///
/// # Safety
/// `base()..base() + len()` must be memory registered with this thread's ring as fixed buffer
/// `index()`, valid (and not moved) for as long as the value lives; the three methods return the
/// same answer every time. The kernel reads that range after the value moved into the operation.
///
/// ```compile_fail
/// struct Fake;
/// // error[E0200]: the trait `FixedBuf` requires an `unsafe impl` declaration
/// impl ringnode::ring::ops::FixedBuf for Fake {
///     fn base(&self) -> *const u8 { std::ptr::null() }
///     fn len(&self) -> usize { 1 << 20 }
///     fn index(&self) -> u16 { 0 }
/// }
/// ```
pub unsafe trait FixedBuf: 'static {
    /// Start of the registered memory.
    fn base(&self) -> *const u8;
    /// Its length.
    fn len(&self) -> usize;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its index among the ring's fixed buffers.
    fn index(&self) -> u16;
}

/// Writes `buf[offset..offset + len]` (a registered buffer: the kernel skips pinning its pages for
/// every operation) to `fd`.
///
/// # Panics
/// If the range is outside the buffer.
pub fn write_fixed<B: FixedBuf>(fd: SharedFd, buf: Rc<B>, offset: usize, len: usize) -> Op<(SharedFd, Rc<B>)> {
    assert!(offset.checked_add(len).is_some_and(|end| end <= buf.len()), "range outside the fixed buffer");
    // SAFETY (pointer arithmetic): the range is inside the buffer (checked above).
    let ptr = unsafe { buf.base().add(offset) };
    let entry = opcode::WriteFixed::new(fd_of(&fd), ptr, len as u32, buf.index()).offset(u64::MAX).build();
    // SAFETY: the registered memory is owned by `buf`, which the op keeps alive.
    unsafe { Op::submit(entry, (fd, buf)) }
}
