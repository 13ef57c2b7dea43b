//! Per-core buffer pools for the receive path: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`)
//! that multishot receives draw from, so an idle connection holds no receive buffer, and the hand-
//! back of a buffer when the last `Bytes` pointing into it drops — on whatever thread that happens.
//!
//! A core has one group per use ([`Group`]): TCP streams (64 KiB buffers) and datagrams (multishot
//! `RECVMSG`: a header, the peer's address and one whole datagram per buffer). Each receive
//! consumes one whole buffer, which goes back to the ring as soon as the last `Bytes` sliced from it
//! drops. A group starts with a few buffers and doubles, up to its ceiling, when a receive finds it
//! empty while every buffer is really leased out (not merely waiting to be recycled): memory grows
//! with the traffic a core actually holds, and the whole ceiling is reserved as address space only
//! (untouched pages cost no RSS).
//!
//! Incremental consumption (`IOU_PBUF_RING_INC`) is deliberately not used: it was built and
//! measured here, and with several sockets sharing one group the completions do not arrive in the
//! order the kernel consumed the shared buffer (a multishot receive's final completion is posted
//! later than the intermediate ones of other requests), so the offset of each completion's data
//! cannot be derived in user space; the tests caught data mismatches and a buffer returned twice.
//! It is only safe with one group per socket, which costs a buffer per connection.
//!
//! Knows nothing of sockets, protocols or cores: the core that owns the groups (`runtime::Core`)
//! hands them the ring to register with.
#![allow(unsafe_code)]

mod fixed;
mod stack;

pub use fixed::FixedRegion;
pub use stack::ReturnStack;

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use io_uring::types::BufRingEntry;

use crate::ring::{Completion, Ring};

/// What a buffer group is for; each has its own buffer size and its own provided-buffer ring
/// (group id) on every core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// TCP streams that move bulk data: 64 KiB buffers, each receive as much as the kernel has
    /// for one socket.
    Stream = 0,
    /// Datagrams received with multishot `RECVMSG`: each buffer holds the kernel's header, the
    /// peer's address and one datagram (up to 64 KiB, or a GRO batch of that size).
    Datagram = 1,
    /// TCP streams until they show they move bulk data: 512-byte buffers, eight to a page. A
    /// connection starts here (a handshake, a request, a small message) and moves to
    /// [`Group::Stream`] the first time a receive fills one of these buffers. A burst of many
    /// new connections each sending a few bytes then costs a page per eight of them, not a page
    /// (and a 64 KiB buffer) each.
    Small = 2,
}

impl Group {
    /// Every group.
    pub const ALL: [Group; 3] = [Group::Stream, Group::Datagram, Group::Small];

    /// The group id its provided-buffer ring is registered under.
    pub fn bgid(self) -> u16 {
        self as u16
    }

    /// Its layout unless configured otherwise.
    pub fn default_config(self) -> PoolConfig {
        match self {
            Group::Stream => PoolConfig { buf_size: 64 * 1024, count: 512, max_count: 8192 },
            // 64 KiB of payload, the 16-byte io_uring_recvmsg_out header and a sockaddr_in6.
            Group::Datagram => PoolConfig { buf_size: 64 * 1024 + 64, count: 64, max_count: 1024 },
            Group::Small => PoolConfig { buf_size: 512, count: 1024, max_count: 32768 },
        }
    }
}

/// `ENOBUFS` in a row for one receive after which its pool grows (or, at its ceiling, the receive
/// uses a heap buffer); see [`BufPool::refill`].
pub const DRY_REPEATS: u32 = 8;

/// How a pool is laid out.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Bytes per buffer.
    pub buf_size: usize,
    /// Buffers provided at first (a power of two).
    pub count: u16,
    /// Most buffers the pool grows to when receives find it empty (a power of two, at least
    /// `count`, at most 32,768); equal to `count` for a pool that never grows.
    pub max_count: u16,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Group::Stream.default_config()
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
    /// Receives done into a heap buffer because every pool buffer was leased out and the pool was
    /// at its ceiling.
    pub heap_fallbacks: u64,
    /// Times the pool doubled its buffers because a receive found every one leased out.
    pub grown: u64,
    /// Buffers provided now (after growth).
    pub buffers: u64,
}

impl std::ops::AddAssign for PoolStats {
    fn add_assign(&mut self, o: PoolStats) {
        self.enobufs += o.enobufs;
        self.leases += o.leases;
        self.recycled += o.recycled;
        self.heap_fallbacks += o.heap_fallbacks;
        self.grown += o.grown;
        self.buffers += o.buffers;
    }
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
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// A core's provided-buffer ring of one group and the buffers behind it.
pub struct BufPool {
    shared: Arc<PoolShared>,
    entries: *mut BufRingEntry,
    entries_len: usize,
    bgid: u16,
    /// Buffers provided so far (ids `0..count`).
    count: u16,
    /// Ring entries (and buffer ids reserved): the ceiling.
    max_count: u16,
    tail: u16,
    stats: PoolStats,
    /// See [`BufPool::epoch`].
    epoch: u64,
}

impl BufPool {
    /// Registers a pool with `ring` as group `bgid`.
    pub(crate) fn register_with(ring: &mut Ring, bgid: u16, cfg: PoolConfig) -> io::Result<BufPool> {
        assert!(
            cfg.count.is_power_of_two()
                && cfg.max_count.is_power_of_two()
                && cfg.count <= cfg.max_count
                && cfg.max_count <= 32768,
            "buffer counts must be powers of two, count <= max_count <= 32768"
        );
        let count = cfg.max_count as usize;
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
        let reg = unsafe { ring.register_buf_ring(entries as u64, cfg.max_count, bgid, 0) };
        if let Err(e) = reg {
            // SAFETY: our own mapping, never registered.
            unsafe { libc::munmap(entries.cast(), entries_len) };
            return Err(e);
        }
        // The buffers stay mapped as long as the ring may write into them: if the ring is leaked
        // with operations in flight, so is this reference and the memory.
        ring.keep_registered(Box::new(shared.clone()));
        let mut pool = BufPool {
            shared,
            entries,
            entries_len,
            bgid,
            count: 0,
            max_count: cfg.max_count,
            tail: 0,
            stats: PoolStats::default(),
            epoch: 0,
        };
        pool.provide(cfg.count);
        Ok(pool)
    }

    /// Publishes buffers `count..upto` (never-used ids) to the kernel.
    fn provide(&mut self, upto: u16) {
        for bid in self.count..upto {
            self.publish(u32::from(bid));
        }
        self.count = upto;
        self.stats.buffers = u64::from(upto);
        self.epoch += 1;
        self.commit();
    }

    /// Doubles the buffers provided, up to the ceiling. Returns whether it grew.
    pub fn grow(&mut self) -> bool {
        if self.count >= self.max_count {
            return false;
        }
        self.provide(self.count.saturating_mul(2).min(self.max_count));
        self.stats.grown += 1;
        true
    }

    /// Counts the times buffers were made available to the kernel (recycled or added): a
    /// receive armed at one epoch that fails with `ENOBUFS` in a later one failed before those
    /// buffers came, and only needs re-arming.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// After a receive armed at `armed` (an [`BufPool::epoch`]) found the pool empty (`ENOBUFS`)
    /// for the `repeats`-th time in a row (0: the first since its last data): makes buffers
    /// available again and says whether re-arming is worth it; `false` means the caller must make
    /// progress without the pool (a heap buffer).
    ///
    /// - If buffers were published since the receive was armed, or are waiting to be recycled,
    ///   re-arming is enough: a burst of ready connections empties the pool for a moment, their
    ///   completions are read long after the kernel posted them, and buffers come back as the
    ///   tasks run. Growing for each of those failures would double the pool to its ceiling.
    /// - Otherwise (nothing published since, nothing to recycle: every buffer really is leased
    ///   out) the pool doubles, up to its ceiling, and at the ceiling the caller uses a heap buffer.
    /// - A receive that fails [`DRY_REPEATS`] times in a row is losing to the others while the
    ///   buffers really are all taken: the pool doubles, up to its ceiling; at the ceiling it gets
    ///   a heap buffer rather than re-arming turn after turn.
    pub fn refill(&mut self, armed: u64, repeats: u32) -> bool {
        self.stats.enobufs += 1;
        if repeats < DRY_REPEATS && (self.epoch > armed || self.recycle() > 0) {
            return true;
        }
        self.grow()
    }

    /// The group id this pool is registered under.
    pub fn bgid(&self) -> u16 {
        self.bgid
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
        let idx = (self.tail & (self.max_count - 1)) as usize;
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
        self.epoch += 1;
        self.stats.recycled += n as u64;
        n
    }

    /// Counts a receive that went to a heap buffer because the pool was empty.
    pub fn note_heap_fallback(&mut self) {
        self.stats.heap_fallbacks += 1;
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
            bid < u32::from(self.count) && len <= self.shared.buf_size,
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
        // The ring unregisters the group when it is dropped (the core drops its ring first), and
        // keeps the buffers mapped while the kernel may still write into them.
        // SAFETY: our own mapping; the kernel reads it only through the registration, which the
        // ring's end (before this) removed.
        unsafe { libc::munmap(self.entries.cast(), self.entries_len) };
    }
}

/// The buffer groups of one core: a pool per [`Group`], registered on first use.
#[derive(Default)]
pub struct Groups {
    pools: [Option<BufPool>; 3],
    configs: [Option<PoolConfig>; 3],
}

impl Groups {
    /// Sets the layout `group` will have when it is first used (tests use tiny pools to exhaust
    /// them on purpose). No effect once the pool exists.
    pub fn configure(&mut self, group: Group, cfg: PoolConfig) {
        self.configs[group as usize] = Some(cfg);
    }

    /// The pool of `group`, if it is registered.
    pub fn get(&mut self, group: Group) -> Option<&mut BufPool> {
        self.pools[group as usize].as_mut()
    }

    /// Registers the pool of `group` with `ring` (once; later calls do nothing).
    pub(crate) fn register(&mut self, group: Group, ring: &mut Ring) -> io::Result<()> {
        if self.pools[group as usize].is_none() {
            let cfg = self.configs[group as usize].unwrap_or_else(|| group.default_config());
            self.pools[group as usize] = Some(BufPool::register_with(ring, group.bgid(), cfg)?);
        }
        Ok(())
    }

    /// Gives returned buffers back to the kernel, every group. Called once per loop turn.
    pub fn recycle(&mut self) {
        for p in self.pools.iter_mut().flatten() {
            p.recycle();
        }
    }

    /// Returns the buffer of a completion of `group` nobody will read.
    pub(crate) fn discard(&mut self, group: Group, c: &Completion) {
        if let Some(p) = self.get(group) {
            drop(p.take(c));
        }
    }

    /// The pool buffer `b` is a slice of — its start address and size — if it lies in one of
    /// these pools: keeping `b` alive keeps that whole buffer from the kernel.
    pub fn buffer_of(&self, b: &[u8]) -> Option<(usize, usize)> {
        let at = b.as_ptr() as usize;
        self.pools.iter().flatten().find_map(|p| {
            let base = p.shared.base as usize;
            if b.is_empty() || at < base || at >= base + p.shared.map_len {
                return None;
            }
            let size = p.shared.buf_size;
            Some((base + (at - base) / size * size, size))
        })
    }

    /// The counters of `group`'s pool, if it is registered.
    pub fn stats(&self, group: Group) -> Option<PoolStats> {
        self.pools[group as usize].as_ref().map(|p| p.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completion naming a buffer outside the pool (or more bytes than a buffer has) can only be
    /// forged — the kernel never posts one — and is refused rather than leased.
    #[test]
    fn a_completion_outside_the_pool_is_refused() {
        let std::result::Result::Ok(ring) = Ring::new() else {
            panic!("io_uring is needed for this test");
        };
        let mut ring = ring;
        let mut pool =
            BufPool::register_with(&mut ring, 0, PoolConfig { buf_size: 4096, count: 4, max_count: 4 }).unwrap();
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
        drop(ring);
        drop(pool);
    }
}
