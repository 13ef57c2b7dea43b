//! Registered (fixed) buffers for the send side: memory registered once with the ring, so the
//! kernel does not pin its pages for every write. `benches/ring.rs` measures whether that pays off
//! against plain sends (see `docs/ARCHITECTURE.md`).

use std::io;

use crate::ring::ops::FixedBuf;
use crate::runtime::core::{try_with_ring, with_ring};

/// One region registered as fixed buffer 0 of this thread's ring. Dropping it unregisters it; the
/// operations that use it hold an `Rc` to it, so that happens only after they completed.
pub struct FixedRegion {
    base: *mut u8,
    len: usize,
}

impl FixedRegion {
    /// Maps `len` bytes (filled with `fill`) and registers them. Registered memory counts against
    /// `RLIMIT_MEMLOCK` unless the process has `CAP_IPC_LOCK`.
    pub fn register(len: usize, fill: u8) -> io::Result<FixedRegion> {
        let base = super::mmap(len)?;
        // SAFETY: `base` is a fresh private mapping of `len` writable bytes.
        unsafe { std::ptr::write_bytes(base, fill, len) };
        let iov = libc::iovec { iov_base: base.cast(), iov_len: len };
        // SAFETY: the mapping stays valid until Drop, which unregisters it first.
        let r = with_ring(|r| unsafe { r.register_buffers(std::slice::from_ref(&iov)) });
        if let Err(e) = r {
            // SAFETY: our own mapping, never registered.
            unsafe { libc::munmap(base.cast(), len) };
            return Err(e);
        }
        Ok(FixedRegion { base, len })
    }
}

// SAFETY: the region is our own mapping, registered as fixed buffer 0 of this thread's ring in
// `register`, and unmapped only in `Drop`.
unsafe impl FixedBuf for FixedRegion {
    fn base(&self) -> *const u8 {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
    fn index(&self) -> u16 {
        0
    }
}

impl Drop for FixedRegion {
    fn drop(&mut self) {
        let _ = try_with_ring(|r| r.unregister_buffers());
        // SAFETY: our own mapping; unregistered above (or the ring is gone).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
