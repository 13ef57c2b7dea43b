//! The per-connection send queue: units queued during a turn go out together in one vectored
//! send. A unit is a small prefix (a frame header), always copied, and payload slices: a small
//! unit is copied into the queue's coalescing buffer (one iovec for many small frames, cheaper
//! than an iovec each, and counted as copied), a large one goes out as the very slices it came in.
//! A batch holding a unit at or above the zero-copy threshold goes out with `SENDMSG_ZC` and is
//! released only after the kernel's notification. The queue is bounded in bytes: a full queue
//! answers [`Full`] and the caller decides (wait for a flush, or drop and count).

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
#[derive(Default)]
struct Counters(Cell<SendStats>);

fn bump(f: impl FnOnce(&mut SendStats)) {
    crate::runtime::Core::try_with(|c| {
        let counters = c.local::<Counters>();
        let mut v = counters.0.get();
        f(&mut v);
        counters.0.set(v);
    });
}

/// This core's send counters (zero outside a core).
pub fn send_stats() -> SendStats {
    crate::runtime::Core::try_with(|c| c.local::<Counters>().0.get()).unwrap_or_default()
}

/// A bounded queue of buffers for one socket.
pub struct SendQueue {
    fd: SharedFd,
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
}

/// Units up to this size are copied into the coalescing buffer by default.
pub const COALESCE_MAX: usize = 2048;

/// After this many zero-copy sends in a row that the kernel copied anyway (loopback, veth, a NIC
/// without scatter-gather), a connection stops asking: on such a route it only adds the
/// notification's cost.
const ZC_GIVE_UP_AFTER: u32 = 8;

impl SendQueue {
    /// A queue holding at most `limit` bytes; a unit of `zc_threshold` bytes or more makes its
    /// batch go out zero-copy (`usize::MAX` disables it).
    pub fn new(fd: SharedFd, limit: usize, zc_threshold: usize) -> SendQueue {
        // Nothing is allocated until the first unit: an idle connection's queue costs no heap.
        SendQueue {
            fd,
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
        }
    }

    /// Bounds the receive-pool memory the queued units may keep alive: a unit that would pass it
    /// is copied instead of referenced (counted as `unpinned_bytes`), so that a peer that does
    /// not read cannot hold a receive buffer for every few bytes it sent.
    pub fn set_pin_limit(&mut self, limit: usize) {
        self.pin_limit = limit;
    }

    fn pin_cost(&mut self, part: &[u8]) -> usize {
        match crate::runtime::Core::try_with(|c| c.pool_buffer_of(part)).flatten() {
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
    /// however large, so nothing is refused forever.
    pub fn push(&mut self, prefix: &[u8], parts: &[Bytes]) -> Result<(), Full> {
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
            let cost: usize = parts.iter().map(|p| self.pin_cost(p)).sum();
            if self.pinned + cost > self.pin_limit {
                self.last_pinned = last;
                copy = true;
                bump(|s| s.unpinned_bytes += payload as u64);
            } else {
                self.pinned += cost;
            }
        }
        if copy {
            for p in parts {
                self.small.extend_from_slice(p);
            }
            if len <= self.coalesce_max {
                bump(|s| s.coalesced_bytes += payload as u64);
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

    /// Sends everything queued, resuming after short writes.
    ///
    /// Not cancel-safe: dropping the future mid-send loses what was queued (the kernel still
    /// finishes or cancels the operation safely; the byte stream is broken either way, so the
    /// connection should be closed).
    pub async fn flush(&mut self) -> io::Result<()> {
        self.flush_observed(|_| {}).await
    }

    /// [`SendQueue::flush`], calling `progress` with the byte count of every send that completes
    /// (a send limit then means "no progress for that long", not "the whole batch within it").
    pub async fn flush_observed(&mut self, mut progress: impl FnMut(usize)) -> io::Result<()> {
        self.seal_small();
        if self.bufs.is_empty() {
            return Ok(());
        }
        let bufs = std::mem::take(&mut self.bufs);
        let total = self.queued;
        let zc = self.has_large;
        self.queued = 0;
        self.has_large = false;
        self.pinned = 0;
        self.last_pinned = 0;
        let mut bufs = bufs;
        let mut off = 0;
        while off < total {
            let (r, b) = if zc {
                // Boxed: zero-copy sends are for large payloads, where one allocation is nothing,
                // and keeping their state out of line keeps every connection's future small.
                let (r, b, copied) = Box::pin(send_zc(self.fd.clone(), bufs, off)).await;
                self.note_zc(copied);
                (r, b)
            } else {
                send_v(self.fd.clone(), bufs, off).await
            };
            bufs = b;
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    off += n;
                    progress(n);
                }
                Err(e) => return Err(e),
            }
        }
        // Reuse the vector's allocation for the next batch.
        bufs.clear();
        self.bufs = bufs;
        Ok(())
    }
}

impl SendQueue {
    fn note_zc(&mut self, copied: Option<bool>) {
        match copied {
            Some(true) => self.copied_streak += 1,
            Some(false) => self.copied_streak = 0,
            None => {}
        }
        if self.copied_streak >= ZC_GIVE_UP_AFTER && self.zc_threshold != usize::MAX {
            self.zc_threshold = usize::MAX;
            bump(|s| s.zc_given_up += 1);
        }
    }
}

async fn send_v(fd: SharedFd, mut bufs: Vec<Bytes>, off: usize) -> (io::Result<usize>, Vec<Bytes>) {
    bump(|s| s.writevs += 1);
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
async fn send_zc(fd: SharedFd, bufs: Vec<Bytes>, off: usize) -> (io::Result<usize>, Vec<Bytes>, Option<bool>) {
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
                bump(|s| if copied { s.zc_copied += 1 } else { s.zc_zero_copy += 1 });
            }
        } else {
            let r = c.into_result().map(|n| n as usize);
            if let Ok(n) = r {
                bump(|s| {
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
