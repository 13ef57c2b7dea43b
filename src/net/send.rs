//! The send path in two parts: [`OutQueue`], sans-IO — batching, coalescing, limits, the choice
//! of zero-copy; it yields what to send — and [`Sender`], which owns the socket and sends a batch
//! (vectored, or `SENDMSG_ZC`, resuming after short writes). [`SendQueue`] is the two together, as
//! a connection uses them.
//!
//! Units queued during a turn go out together in one vectored send. A unit is a small prefix (a
//! frame header), always copied, and payload slices: a small unit is copied into the queue's
//! coalescing buffer (one iovec for many small frames, cheaper than an iovec each, and counted as
//! copied), a large one goes out as the very slices it came in. A batch holding a unit at or above
//! the zero-copy threshold goes out with `SENDMSG_ZC` and is released only after the kernel's
//! notification. The queue is bounded in bytes: a full queue answers [`Full`] and the caller
//! decides (wait for a flush, or drop and count).

use std::cell::Cell;
use std::io;

use bytes::{Bytes, BytesMut};

use crate::ring::ops::{self, SharedFd, NOTIF_USAGE_ZC_COPIED};

/// The queue is at its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Send-side counters, per core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    /// Vectored sends issued.
    pub writevs: u64,
    /// Zero-copy sends issued.
    pub zc_sends: u64,
    /// Zero-copy sends whose notification says the kernel copied anyway (always so on loopback).
    pub zc_copied: u64,
    /// Zero-copy sends that really went without a copy.
    pub zc_zero_copy: u64,
    /// Payload bytes sent with zero-copy requested.
    pub zc_bytes: u64,
    /// Connections that stopped asking for zero-copy because the kernel kept copying anyway.
    pub zc_given_up: u64,
    /// Payload bytes of small units copied into a coalescing buffer.
    pub coalesced_bytes: u64,
    /// Payload bytes copied instead of referenced because the receive buffers a queue would
    /// otherwise keep alive passed its limit (see [`SendQueue::set_pin_limit`]).
    pub unpinned_bytes: u64,
}

impl std::ops::AddAssign for SendStats {
    fn add_assign(&mut self, o: SendStats) {
        self.writevs += o.writevs;
        self.zc_sends += o.zc_sends;
        self.zc_copied += o.zc_copied;
        self.zc_zero_copy += o.zc_zero_copy;
        self.zc_bytes += o.zc_bytes;
        self.zc_given_up += o.zc_given_up;
        self.coalesced_bytes += o.coalesced_bytes;
        self.unpinned_bytes += o.unpinned_bytes;
    }
}

/// This core's send counters (a core-local value, see `runtime::Core::local`).
#[derive(Debug, Default)]
struct Counters(Cell<SendStats>);

/// This core's send counters (zero outside a core).
pub fn send_stats() -> SendStats {
    crate::runtime::Core::try_with(|c| c.local::<Counters>().0.get()).unwrap_or_default()
}

/// What to send next: the buffers in order, their total, and whether to ask for zero-copy.
#[derive(Debug, Default)]
pub struct Batch {
    /// The buffers, in order.
    pub bufs: Vec<Bytes>,
    /// Their total length.
    pub len: usize,
    /// Send with `SENDMSG_ZC` (a unit at or above the threshold is in it).
    pub zero_copy: bool,
}

/// A bounded queue of units for one connection, sans-IO: units in, [`Batch`]es out.
#[derive(Debug)]
pub struct OutQueue {
    bufs: Vec<Bytes>,
    /// Prefixes and small units, copied; split off into `bufs` before each large unit and at flush.
    small: BytesMut,
    coalesce_max: usize,
    queued: usize,
    limit: usize,
    zc_threshold: usize,
    has_large: bool,
    /// Zero-copy sends in a row that the kernel reported as copied.
    copied_streak: u32,
    /// Receive-pool memory the referenced units keep alive, and the most they may.
    pinned: usize,
    pin_limit: usize,
    /// The pool buffer the last referenced part lies in (adjacent parts of one buffer count once).
    last_pinned: usize,
    /// What this queue counted since [`OutQueue::take_stats`].
    stats: QueueStats,
}

/// What an [`OutQueue`] counts (the part of [`SendStats`] that is its own).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// See [`SendStats::coalesced_bytes`].
    pub coalesced_bytes: u64,
    /// See [`SendStats::unpinned_bytes`].
    pub unpinned_bytes: u64,
    /// See [`SendStats::zc_given_up`].
    pub zc_given_up: u64,
}

/// Units up to this size are copied into the coalescing buffer by default.
pub const COALESCE_MAX: usize = 2048;

/// After this many zero-copy sends in a row that the kernel copied anyway (loopback, veth, a NIC
/// without scatter-gather), a connection stops asking: on such a route it only adds the
/// notification's cost.
const ZC_GIVE_UP_AFTER: u32 = 8;

/// Where a slice lies: the start and size of the receive buffer it keeps alive, if any.
pub type BufferOf<'a> = &'a dyn Fn(&[u8]) -> Option<(usize, usize)>;

impl OutQueue {
    /// A queue holding at most `limit` bytes; a unit of `zc_threshold` bytes or more makes its
    /// batch go out zero-copy (`usize::MAX` disables it).
    pub fn new(limit: usize, zc_threshold: usize) -> OutQueue {
        // Nothing is allocated until the first unit: an idle connection's queue costs no heap.
        OutQueue {
            bufs: Vec::new(),
            small: BytesMut::new(),
            coalesce_max: COALESCE_MAX.min(zc_threshold.saturating_sub(1)),
            queued: 0,
            limit,
            zc_threshold,
            has_large: false,
            copied_streak: 0,
            pinned: 0,
            pin_limit: usize::MAX,
            last_pinned: 0,
            stats: QueueStats::default(),
        }
    }

    /// What the queue counted (coalesced and unpinned bytes, zero-copy given up) since the last
    /// call.
    pub fn take_stats(&mut self) -> QueueStats {
        std::mem::take(&mut self.stats)
    }

    /// Bounds the receive-pool memory the queued units may keep alive: a unit that would pass it
    /// is copied instead of referenced (counted as `unpinned_bytes`), so that a peer that does
    /// not read cannot hold a receive buffer for every few bytes it sent.
    pub fn set_pin_limit(&mut self, limit: usize) {
        self.pin_limit = limit;
    }

    fn pin_cost(&mut self, part: &[u8], buffer_of: BufferOf<'_>) -> usize {
        match buffer_of(part) {
            Some((start, _)) if start == self.last_pinned => 0,
            Some((start, size)) => {
                self.last_pinned = start;
                size
            }
            None => 0,
        }
    }

    /// Bytes queued.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues one unit — `prefix` (copied) and `parts` (copied if the unit is small, else
    /// referenced) — or answers `Full` without queuing any of it. An empty queue takes any unit,
    /// however large, so nothing is refused forever. `buffer_of` says which receive buffer a part
    /// keeps alive (for the pin limit).
    pub fn push(&mut self, prefix: &[u8], parts: &[Bytes], buffer_of: BufferOf<'_>) -> Result<(), Full> {
        let payload: usize = parts.iter().map(|b| b.len()).sum();
        let len = prefix.len() + payload;
        if self.queued > 0 && self.queued + len > self.limit {
            return Err(Full);
        }
        self.queued += len;
        if len >= self.zc_threshold {
            self.has_large = true;
        }
        self.small.reserve(prefix.len());
        self.small.extend_from_slice(prefix);
        let mut copy = len <= self.coalesce_max;
        if !copy && self.pin_limit != usize::MAX {
            let last = self.last_pinned;
            let cost: usize = parts.iter().map(|p| self.pin_cost(p, buffer_of)).sum();
            if self.pinned + cost > self.pin_limit {
                self.last_pinned = last;
                copy = true;
                self.stats.unpinned_bytes += payload as u64;
            } else {
                self.pinned += cost;
            }
        }
        if copy {
            for p in parts {
                self.small.extend_from_slice(p);
            }
            if len <= self.coalesce_max {
                self.stats.coalesced_bytes += payload as u64;
            }
            return Ok(());
        }
        self.seal_small();
        self.bufs.extend(parts.iter().filter(|p| !p.is_empty()).cloned());
        Ok(())
    }

    /// Moves what the coalescing buffer holds into the send list, keeping the order.
    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            self.bufs.push(self.small.split().freeze());
        }
    }

    /// Everything queued, as one batch (`None` when nothing is); the queue is empty after.
    pub fn take_batch(&mut self) -> Option<Batch> {
        self.seal_small();
        if self.bufs.is_empty() {
            return None;
        }
        let batch = Batch { bufs: std::mem::take(&mut self.bufs), len: self.queued, zero_copy: self.has_large };
        self.queued = 0;
        self.has_large = false;
        self.pinned = 0;
        self.last_pinned = 0;
        Some(batch)
    }

    /// Hands a sent batch's vector back, to reuse its allocation for the next one.
    pub fn recycle(&mut self, mut bufs: Vec<Bytes>) {
        if self.bufs.is_empty() {
            bufs.clear();
            self.bufs = bufs;
        }
    }

    /// What the kernel said of a zero-copy send: copied anyway (`Some(true)`), or not. After
    /// several copies in a row the queue stops asking for zero-copy.
    pub fn note_zero_copy(&mut self, copied: Option<bool>) {
        match copied {
            Some(true) => self.copied_streak += 1,
            Some(false) => self.copied_streak = 0,
            None => {}
        }
        if self.copied_streak >= ZC_GIVE_UP_AFTER && self.zc_threshold != usize::MAX {
            self.zc_threshold = usize::MAX;
            self.stats.zc_given_up += 1;
        }
    }
}

/// The sending half: owns (a share of) the socket and sends what an [`OutQueue`] yields.
#[derive(Debug, Clone)]
pub struct Sender {
    fd: SharedFd,
    /// This core's send counters (found once, at creation; `None` outside a core).
    counters: Option<std::rc::Rc<Counters>>,
}

impl Sender {
    /// A sender on `fd`, counting into this core's send counters.
    pub fn new(fd: SharedFd) -> Sender {
        Sender { fd, counters: crate::runtime::Core::try_with(|c| c.local::<Counters>()) }
    }

    /// Sends everything `queue` holds, as one batch, resuming after short writes and calling
    /// `progress` with the byte count of every send that completes; tells the queue what the
    /// kernel said of zero-copy, gives it back the batch's vector, and counts.
    ///
    /// Not cancel-safe: dropping the future mid-send loses the batch (the kernel still finishes or
    /// cancels the operation safely; the byte stream is broken either way, so the connection
    /// should be closed).
    // Written out rather than `async fn`: measured with -Zprint-type-sizes, the `async fn` form
    // adds 48 bytes to every connection's future (its arguments kept twice).
    #[allow(clippy::manual_async_fn)]
    pub fn flush<'a>(
        &'a self,
        queue: &'a mut OutQueue,
        mut progress: impl FnMut(usize) + 'a,
    ) -> impl std::future::Future<Output = io::Result<()>> + 'a {
        async move {
            let Some(Batch { mut bufs, len, zero_copy }) = queue.take_batch() else { return Ok(()) };
            let counters = self.counters.as_deref();
            let mut copied = None;
            let mut off = 0;
            let mut result = Ok(());
            while off < len {
                let (r, b) = if zero_copy {
                    // Boxed: zero-copy sends are for large payloads, where one allocation is nothing,
                    // and keeping their state out of line keeps every connection's future small.
                    let (r, b, c) = Box::pin(send_zc(self.fd.clone(), bufs, off, counters)).await;
                    copied = c.or(copied);
                    (r, b)
                } else {
                    send_v(self.fd.clone(), bufs, off, counters).await
                };
                bufs = b;
                match r {
                    Ok(0) => {
                        result = Err(io::ErrorKind::WriteZero.into());
                        break;
                    }
                    Ok(n) => {
                        off += n;
                        progress(n);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if zero_copy {
                queue.note_zero_copy(copied);
            }
            queue.recycle(bufs);
            let q = queue.take_stats();
            if q != QueueStats::default() {
                count(counters, |s| {
                    s.coalesced_bytes += q.coalesced_bytes;
                    s.unpinned_bytes += q.unpinned_bytes;
                    s.zc_given_up += q.zc_given_up;
                });
            }
            result
        }
    }
}

/// A connection's send path: its [`OutQueue`] and its [`Sender`], counting into the core's send
/// counters once per flush.
pub struct SendQueue {
    queue: OutQueue,
    sender: Sender,
}

impl SendQueue {
    /// A queue on `fd` holding at most `limit` bytes (see [`OutQueue::new`]).
    pub fn new(fd: SharedFd, limit: usize, zc_threshold: usize) -> SendQueue {
        SendQueue { queue: OutQueue::new(limit, zc_threshold), sender: Sender::new(fd) }
    }

    /// See [`OutQueue::set_pin_limit`].
    pub fn set_pin_limit(&mut self, limit: usize) {
        self.queue.set_pin_limit(limit);
    }

    /// Bytes queued.
    pub fn queued(&self) -> usize {
        self.queue.queued()
    }

    /// Queues one unit (see [`OutQueue::push`]); the receive buffers parts keep alive are this
    /// core's pools'.
    pub fn push(&mut self, prefix: &[u8], parts: &[Bytes]) -> Result<(), Full> {
        self.queue.push(prefix, parts, &|p| crate::runtime::Core::try_with(|c| c.pool_buffer_of(p)).flatten())
    }

    /// Sends everything queued, resuming after short writes (not cancel-safe: see
    /// [`Sender::flush`]).
    pub async fn flush(&mut self) -> io::Result<()> {
        self.flush_observed(|_| {}).await
    }

    /// [`SendQueue::flush`], calling `progress` with the byte count of every send that completes
    /// (a send limit then means "no progress for that long", not "the whole batch within it").
    pub fn flush_observed<'a>(
        &'a mut self,
        progress: impl FnMut(usize) + 'a,
    ) -> impl std::future::Future<Output = io::Result<()>> + 'a {
        // The sender's future itself, not one awaited inside another: every connection's future
        // holds this state.
        self.sender.flush(&mut self.queue, progress)
    }
}

/// Adds to this core's send counters, if there are any.
fn count(counters: Option<&Counters>, f: impl FnOnce(&mut SendStats)) {
    if let Some(c) = counters {
        let mut s = c.0.get();
        f(&mut s);
        c.0.set(s);
    }
}

async fn send_v(
    fd: SharedFd,
    mut bufs: Vec<Bytes>,
    off: usize,
    counters: Option<&Counters>,
) -> (io::Result<usize>, Vec<Bytes>) {
    count(counters, |s| s.writevs += 1);
    if bufs.len() == 1 {
        // One buffer: a plain SEND takes the socket's send path directly, without the
        // iov_iter set-up of a WRITEV.
        let b = bufs.pop().expect("one buffer");
        let (c, (_, b)) = ops::send(fd, b, off).await;
        bufs.push(b);
        return (c.into_result().map(|n| n as usize), bufs);
    }
    let (c, data) = ops::writev(fd, bufs, off).await;
    (c.into_result().map(|n| n as usize), data.bufs)
}

/// Returns what was sent, the buffers, and whether the kernel reported copying them.
/// One zero-copy send of `bufs[off..]` counted nowhere: the bytes sent, the buffers back, and
/// whether the kernel copied after all (when it said).
pub(crate) async fn send_zc_once(
    fd: SharedFd,
    bufs: Vec<Bytes>,
    off: usize,
) -> (io::Result<usize>, Vec<Bytes>, Option<bool>) {
    send_zc(fd, bufs, off, None).await
}

async fn send_zc(
    fd: SharedFd,
    bufs: Vec<Bytes>,
    off: usize,
    counters: Option<&Counters>,
) -> (io::Result<usize>, Vec<Bytes>, Option<bool>) {
    let mut op = ops::sendmsg_zc(fd, bufs, off);
    let mut sent = None;
    let mut was_copied = None;
    // The first completion is the send's result; a notification follows when it had F_MORE.
    while let Some(c) = op.next().await {
        if io_uring::cqueue::notif(c.flags()) {
            let copied = c.result() as u32 & NOTIF_USAGE_ZC_COPIED != 0;
            was_copied = Some(copied);
            // Counted with the send it belongs to: a send that failed (an aborted connection) is
            // in neither count.
            if matches!(sent, Some(Ok(_))) {
                count(counters, |s| if copied { s.zc_copied += 1 } else { s.zc_zero_copy += 1 });
            }
        } else {
            let r = c.into_result().map(|n| n as usize);
            if let Ok(n) = r {
                count(counters, |s| {
                    s.zc_sends += 1;
                    s.zc_bytes += n as u64;
                });
            }
            sent = Some(r);
        }
    }
    let bufs = op.into_data().map(|d| d.bufs).unwrap_or_default();
    (sent.unwrap_or_else(|| Err(io::ErrorKind::Other.into())), bufs, was_copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere(_: &[u8]) -> Option<(usize, usize)> {
        None
    }

    #[test]
    fn small_units_coalesce_large_ones_are_referenced_and_the_limit_holds() {
        let mut q = OutQueue::new(10_000, 4096);
        let big = Bytes::from(vec![7u8; 3000]);
        q.push(b"h1", &[Bytes::from_static(b"small")], &nowhere).unwrap();
        q.push(b"h2", std::slice::from_ref(&big), &nowhere).unwrap();
        q.push(b"h3", &[Bytes::from_static(b"tail")], &nowhere).unwrap();
        assert_eq!(q.queued(), 2 + 5 + 2 + 3000 + 2 + 4);
        // Past the limit: refused whole, nothing queued of it.
        assert_eq!(q.push(b"", &[Bytes::from(vec![0u8; 8000])], &nowhere), Err(Full));
        let b = q.take_batch().unwrap();
        assert!(!b.zero_copy);
        assert_eq!(b.len, 3015);
        // Header and small unit copied together, the large payload referenced (same memory),
        // then the last header and small unit.
        assert_eq!(&b.bufs[0][..], b"h1smallh2");
        assert_eq!(b.bufs[1].as_ptr(), big.as_ptr());
        assert_eq!(&b.bufs[2][..], b"h3tail");
        assert!(q.take_batch().is_none());
        q.recycle(b.bufs);
        // An empty queue takes a unit larger than its limit (nothing refused forever), and a
        // unit at the threshold makes the batch zero-copy.
        q.push(b"", &[Bytes::from(vec![1u8; 20_000])], &nowhere).unwrap();
        assert!(q.take_batch().unwrap().zero_copy);
    }

    #[test]
    fn past_the_pin_limit_units_are_copied_and_repeated_copies_stop_zero_copy() {
        let mut q = OutQueue::new(1 << 20, 4096);
        q.set_pin_limit(64 * 1024);
        let buf = Bytes::from(vec![3u8; 3000]);
        // Every part claims to keep its own 64 KiB buffer alive.
        let base = buf.as_ptr() as usize;
        let each = |p: &[u8]| Some((p.as_ptr() as usize - base + 1, 64 * 1024));
        q.push(b"", &[buf.slice(0..2500)], &each).unwrap();
        q.push(b"", &[buf.slice(2500..)], &each).unwrap();
        let b = q.take_batch().unwrap();
        assert_eq!(b.bufs.len(), 2);
        assert_eq!(b.bufs[0].as_ptr(), buf.as_ptr(), "the first unit is referenced");
        assert_ne!(b.bufs[1].as_ptr(), buf[2500..].as_ptr(), "the second would pass the pin limit: copied");
        let mut q = OutQueue::new(1 << 20, 4096);
        for _ in 0..ZC_GIVE_UP_AFTER {
            q.note_zero_copy(Some(true));
        }
        q.push(b"", &[Bytes::from(vec![1u8; 8192])], &nowhere).unwrap();
        assert!(!q.take_batch().unwrap().zero_copy, "zero-copy still asked after the kernel kept copying");
    }
}
