//! Per-core buffer pools for the receive path: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`)
//! that multishot receives draw from, so an idle connection holds no receive buffer, and the hand-
//! back of a buffer when the last `Bytes` pointing into it drops — on whatever thread that happens.
//!
//! One size class per core (64 KiB × 512 buffers, mapped lazily: untouched pages cost no RSS),
//! each receive consuming one whole buffer, which goes back to the ring as soon as the last `Bytes`
//! sliced from it drops. Several size classes would need a multishot receive per class and socket;
//! one class whose buffers recycle at once is the documented alternative.
//!
//! Incremental consumption (`IOU_PBUF_RING_INC`) is deliberately not used: it was built and
//! measured here, and with several sockets sharing one group the completions do not arrive in the
//! order the kernel consumed the shared buffer (a multishot receive's final completion is posted
//! later than the intermediate ones of other requests), so the offset of each completion's data
//! cannot be derived in user space; the tests caught data mismatches and a buffer returned twice.
//! It is only safe with one group per socket, which costs a buffer per connection.
//!
//! Knows nothing of sockets or protocols. The ring it registers with comes from `ring/`.
#![allow(unsafe_code)]

mod fixed;
mod stack;

pub use fixed::FixedRegion;
pub use stack::ReturnStack;

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use io_uring::types::BufRingEntry;

use crate::ring::{self, Completion};

/// The buffer group id of the core's pool (each ring has its own namespace).
pub const POOL_BGID: u16 = 0;

/// How a pool is laid out.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Bytes per buffer.
    pub buf_size: usize,
    /// Number of buffers (a power of two, at most 32,768).
    pub count: u16,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { buf_size: 64 * 1024, count: 512 }
    }
}

/// Counters of one pool (or, summed, of all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Receive completions that found the ring empty (`ENOBUFS`); each re-armed.
    pub enobufs: u64,
    /// `Bytes` handed out (one allocation each: the shared owner).
    pub leases: u64,
    /// Buffers given back to the ring.
    pub recycled: u64,
    /// Receives done into a heap buffer because every pool buffer was leased out.
    pub heap_fallbacks: u64,
}

/// Memory and reference counts shared by the core and every `Bytes` leased from it.
struct PoolShared {
    base: *mut u8,
    map_len: usize,
    buf_size: usize,
    /// References per buffer: one for the kernel while it may still write into it, one per lease.
    refs: Box<[AtomicU32]>,
    returns: ReturnStack,
    /// Buffers returned from threads other than the owner's (for tests and reports).
    foreign_returns: AtomicU64,
    owner: std::thread::ThreadId,
}

// SAFETY: the mapping is plain memory; which thread may read or write which buffer is decided by
// the reference counts (atomics), and the mapping lives until the last Arc goes.
unsafe impl Send for PoolShared {}
// SAFETY: as above; shared access only reads buffers no one writes (leased ranges are immutable).
unsafe impl Sync for PoolShared {}

impl PoolShared {
    fn release(&self, bid: u32) {
        if self.refs[bid as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
            if std::thread::current().id() != self.owner {
                self.foreign_returns.fetch_add(1, Ordering::Relaxed);
            }
            self.returns.push(bid);
        }
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` came from our mmap; the last reference is gone and the ring
        // (unregistered or closed before the pool's last Arc) no longer writes into it.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// The owner of a leased byte range: hands the buffer back when dropped.
struct Lease {
    shared: Arc<PoolShared>,
    bid: u32,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the range is inside the pool's mapping, which `shared` keeps alive, and nobody writes it
// while the lease exists: the kernel only writes a buffer after it is republished, which needs
// every lease on it gone (reference count).
unsafe impl Send for Lease {}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `impl Send for Lease`: valid, initialised by the kernel, immutable.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.release(self.bid);
    }
}

fn mmap(len: usize) -> io::Result<*mut u8> {
    // SAFETY: anonymous private mapping; no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// A core's provided-buffer ring and the buffers behind it.
pub struct BufPool {
    shared: Arc<PoolShared>,
    entries: *mut BufRingEntry,
    entries_len: usize,
    count: u16,
    tail: u16,
    stats: PoolStats,
}

impl BufPool {
    /// Registers a pool with an explicit layout with this thread's ring (the core's one pool:
    /// see [`with_pool`]).
    pub(crate) fn register_with(cfg: PoolConfig) -> io::Result<BufPool> {
        assert!(cfg.count.is_power_of_two() && cfg.count <= 32768, "buffer count must be a power of two <= 32768");
        let count = cfg.count as usize;
        let map_len = cfg.buf_size * count;
        let base = mmap(map_len)?;
        let shared = Arc::new(PoolShared {
            base,
            map_len,
            buf_size: cfg.buf_size,
            refs: (0..count).map(|_| AtomicU32::new(0)).collect(),
            returns: ReturnStack::new(count),
            foreign_returns: AtomicU64::new(0),
            owner: std::thread::current().id(),
        });
        let entries_len = (count * std::mem::size_of::<BufRingEntry>()).next_multiple_of(4096);
        let entries = mmap(entries_len)?.cast::<BufRingEntry>();
        // SAFETY: `entries` is a page-aligned mapping of `count` entries that stays mapped until
        // this pool is dropped, which unregisters it first.
        let reg = ring::with_ring(|r| unsafe { r.register_buf_ring(entries as u64, cfg.count, POOL_BGID, 0) });
        if let Err(e) = reg {
            // SAFETY: our own mapping, never registered.
            unsafe { libc::munmap(entries.cast(), entries_len) };
            return Err(e);
        }
        ring::with_ring(|r| {
            r.set_buffer_discard(discard);
            // The buffers stay mapped as long as the ring may write into them: if the ring is
            // leaked with operations in flight, so is this reference and the memory.
            r.keep_registered(Box::new(shared.clone()));
        });
        let mut pool = BufPool { shared, entries, entries_len, count: cfg.count, tail: 0, stats: PoolStats::default() };
        for bid in 0..count as u32 {
            pool.publish(bid);
        }
        pool.commit();
        Ok(pool)
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Buffers handed back from threads other than the owner (they went through the return stack).
    pub fn foreign_returns(&self) -> u64 {
        self.shared.foreign_returns.load(Ordering::Relaxed)
    }

    fn publish(&mut self, bid: u32) {
        self.shared.refs[bid as usize].store(1, Ordering::Relaxed);
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: idx < count, inside the entries mapping; the kernel reads entries only up to the
        // published tail, and this one is beyond it until `commit`.
        let e = unsafe { &mut *self.entries.add(idx) };
        // SAFETY (pointer arithmetic): bid < count, so the offset is inside the buffer mapping.
        e.set_addr(unsafe { self.shared.base.add(bid as usize * self.shared.buf_size) } as u64);
        e.set_len(self.shared.buf_size as u32);
        e.set_bid(bid as u16);
        self.tail = self.tail.wrapping_add(1);
    }

    fn commit(&mut self) {
        // SAFETY: the tail is the u16 the kernel reads at the start of the entries mapping; the
        // release store publishes the entries written before it.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Gives back to the ring every buffer whose last lease has dropped. Cheap when there is none.
    pub fn recycle(&mut self) -> usize {
        if self.shared.returns.is_empty() {
            return 0;
        }
        // No allocation here: this runs once per loop turn.
        let shared = self.shared.clone();
        let mut n = 0;
        shared.returns.take_all(|bid| {
            self.publish(bid);
            n += 1;
        });
        self.commit();
        self.stats.recycled += n as u64;
        n
    }

    /// Counts a receive that went to a heap buffer because the pool was empty.
    pub fn note_heap_fallback(&mut self) {
        self.stats.heap_fallbacks += 1;
    }

    /// Counts a receive that found the ring empty.
    pub fn note_enobufs(&mut self) {
        self.stats.enobufs += 1;
    }

    /// Takes the data of a completion that selected a buffer: the `Bytes` leases it (one
    /// allocation) and hands it back when its last clone drops. `None` when it carried no buffer.
    /// Crate-private, and only ever given completions the ring reaped from this pool's group.
    ///
    /// # Panics
    /// If the completion names a buffer outside the pool or a length beyond the buffer's size:
    /// the kernel never does either, so that would be a forged completion.
    pub(crate) fn take(&mut self, c: &Completion) -> Option<Bytes> {
        let bid = u32::from(io_uring::cqueue::buffer_select(c.flags())?);
        let len = c.result().max(0) as usize;
        assert!(
            (bid as usize) < self.shared.refs.len() && len <= self.shared.buf_size,
            "completion names buffer {bid} with {len} bytes, outside the pool"
        );
        // Each receive consumes a whole buffer: the kernel is done with it at this completion.
        let out = (len > 0).then(|| {
            self.shared.refs[bid as usize].fetch_add(1, Ordering::Relaxed);
            self.stats.leases += 1;
            // SAFETY (pointer arithmetic): len <= buf_size (the kernel never writes past the
            // buffer), so the range is inside the mapping.
            let ptr = unsafe { self.shared.base.add(bid as usize * self.shared.buf_size) };
            Bytes::from_owner(Lease { shared: self.shared.clone(), bid, ptr, len })
        });
        self.shared.release(bid);
        out
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        let _ = ring::try_with_ring(|r| r.unregister_buf_ring(POOL_BGID));
        // SAFETY: our own mapping, unregistered above (or the ring is already gone).
        unsafe { libc::munmap(self.entries.cast(), self.entries_len) };
    }
}

thread_local! {
    static POOL: RefCell<Option<BufPool>> = const { RefCell::new(None) };
    static CONFIG: std::cell::Cell<Option<PoolConfig>> = const { std::cell::Cell::new(None) };
}

/// Sets the layout this core's pool will have when it is first used (tests use tiny pools to
/// exhaust them on purpose). No effect once the pool exists.
pub fn configure(cfg: PoolConfig) {
    CONFIG.with(|c| c.set(Some(cfg)));
}

/// Runs `f` with this core's pool, registering it on first use.
pub fn with_pool<R>(f: impl FnOnce(&mut BufPool) -> R) -> io::Result<R> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            let cfg = CONFIG.with(|c| c.get()).unwrap_or_default();
            *p = Some(BufPool::register_with(cfg)?);
        }
        Ok(f(p.as_mut().expect("just registered")))
    })
}

/// Gives returned buffers back to this core's ring, if it has a pool. Called once per loop turn.
pub fn recycle() {
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if let Some(p) = p.as_mut() {
                p.recycle();
            }
        }
    });
}

/// Returns the buffer of a completion nobody will read (its operation was dropped).
pub(crate) fn discard(c: &Completion) {
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if let Some(p) = p.as_mut() {
                drop(p.take(c));
            }
        }
    });
}

/// Drops this core's pool (its memory stays mapped while the ring keeps a reference to it).
pub(crate) fn release_pool() {
    let _ = POOL.try_with(|p| p.borrow_mut().take());
}

/// The pool buffer `b` is a slice of — its start address and size — if it lies in this core's
/// pool: keeping `b` alive keeps that whole buffer from the kernel.
pub fn pool_buffer_of(b: &[u8]) -> Option<(usize, usize)> {
    POOL.try_with(|p| {
        let p = p.try_borrow().ok()?;
        let p = p.as_ref()?;
        let base = p.shared.base as usize;
        let at = b.as_ptr() as usize;
        if b.is_empty() || at < base || at >= base + p.shared.map_len {
            return None;
        }
        let size = p.shared.buf_size;
        Some((base + (at - base) / size * size, size))
    })
    .ok()
    .flatten()
}

/// What keeping `b` alive costs in receive memory: the size of the pool buffer it is a slice of,
/// or its own length when it is not in this core's pool.
pub fn pinned_size(b: &[u8]) -> usize {
    pool_buffer_of(b).map_or(b.len(), |(_, size)| size)
}

/// This core's pool counters, if it has a pool.
pub fn pool_stats() -> Option<PoolStats> {
    POOL.try_with(|p| p.borrow().as_ref().map(|p| p.stats())).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Ring;

    /// A completion naming a buffer outside the pool (or more bytes than a buffer has) can only be
    /// forged — the kernel never posts one — and is refused rather than leased.
    #[test]
    fn a_completion_outside_the_pool_is_refused() {
        let std::result::Result::Ok(ring) = Ring::new() else {
            panic!("io_uring is needed for this test");
        };
        ring::install(ring);
        let mut pool = BufPool::register_with(PoolConfig { buf_size: 4096, count: 4 }).unwrap();
        // A real-looking completion: buffer 1, 64 bytes.
        let ok = Completion::new(64, 1 | (1 << 16));
        assert_eq!(pool.take(&ok).map(|b| b.len()), Some(64));
        let beyond = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.take(&Completion::new(64, 1 | (9 << 16)));
        }));
        assert!(beyond.is_err(), "buffer 9 of a 4-buffer pool was leased");
        let too_long = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.take(&Completion::new(8192, 1 | (2 << 16)));
        }));
        assert!(too_long.is_err(), "8 KiB were leased from a 4 KiB buffer");
        drop(pool);
        drop(ring::uninstall());
    }
}
