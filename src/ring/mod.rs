//! One io_uring instance per thread: setup (with the flag fall-back chain), submission in batches,
//! completion dispatch through a `slab` of in-flight operations, cancellation that keeps an
//! operation's resources alive until the kernel lets go of them, and the feature probe.
//!
//! This module knows nothing of tasks, cores, frames or peers. It hands completions to whoever polls the
//! operation; the runtime enters the ring and reaps its completions once per loop turn.
//!
//! # The life of an operation
//!
//! ```text
//!   submit ──► Waiting ──(CQE)──► Done ──(poll)──► freed
//!                 │                 └──(future dropped)──► freed
//!                 └──(future dropped)──► Orphaned ──(final CQE)──► freed, resources dropped
//! ```
//!
//! A multishot operation stays `Streaming` and collects completions until the CQE without
//! `IORING_CQE_F_MORE`. An orphaned operation keeps the buffers, socket addresses and file
//! descriptors it lent to the kernel (boxed as `dyn Any`) until its final completion arrives, so
//! memory the kernel may still write into is never freed or reused early, and a descriptor number is
//! never closed (and reused by another connection) while an operation on it is in flight.
#![allow(unsafe_code)]

mod error;
mod op;
/// The operations, by name (`ring::ops::recv_multi`, …): one file each under `ring/op/`.
pub mod ops {
    pub use super::op::*;
    pub(crate) use super::op::{adopt_fd, received};
}
mod probe;

pub use error::{classify_setup_error, classify_setup_error_with, RingError};
pub use op::{current_in_flight, current_stats, Op, OpStream};
pub use probe::{features_in_use, Probe, SetupMode};

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, squeue, IoUring};
use slab::Slab;

/// `user_data` of completions nobody waits for (the ring's own cancel requests).
pub const TOKEN_IGNORE: u64 = u64::MAX;
/// `user_data` at or above this (and below [`TOKEN_IGNORE`]) names no operation: such completions
/// (a `MSG_RING` another ring posted here, a failed `MSG_RING` this ring sent) go to whoever reaps,
/// which gives them their meaning. Operation keys never reach this range.
pub const TOKEN_RESERVED: u64 = u64::MAX - (1 << 20);

/// Submission queue size. The completion queue is `CQ_FACTOR` (8) times larger, because multishot
/// operations produce many completions per submission.
pub const SQ_ENTRIES: u32 = 1024;
const CQ_FACTOR: u32 = 8;

/// What the kernel returned for one operation. Only the ring makes these (from completion queue
/// entries, or an error for an operation that could not be submitted): a completion is evidence
/// of what the kernel did, so user code cannot forge one (a forged buffer id would lease a buffer
/// the kernel still owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    result: i32,
    flags: u32,
}

impl Completion {
    pub(crate) fn new(result: i32, flags: u32) -> Completion {
        Completion { result, flags }
    }

    /// The result: a count or a descriptor when `>= 0`, `-errno` otherwise.
    pub fn result(&self) -> i32 {
        self.result
    }

    /// The CQE flags (`IORING_CQE_F_MORE`, `IORING_CQE_F_BUFFER`, …).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The result as `io::Result`.
    pub fn into_result(self) -> io::Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else {
            Err(io::Error::from_raw_os_error(-self.result))
        }
    }

    /// Whether more completions follow for the same (multishot) operation.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

enum State {
    Waiting(Option<Waker>),
    Done(Completion),
    Streaming {
        queue: VecDeque<Completion>,
        waker: Option<Waker>,
        finished: bool,
        /// Completions the owner may leave unread before the ring asks the kernel to stop the
        /// operation (a reader that falls behind stops a multishot receive instead of letting it
        /// take buffer after buffer); 0 for no limit.
        cap: u16,
        /// A cancel was asked for because the reader fell behind.
        capped: bool,
    },
    Orphaned {
        _resources: Box<dyn Any>,
        multishot: bool,
    },
}

/// How many completions an operation posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// One completion.
    Single,
    /// Several completions until one without `F_MORE`.
    Multishot,
}

impl State {
    /// Whether the kernel may still post a completion for this operation.
    fn kernel_holds(&self) -> bool {
        match self {
            State::Waiting(_) | State::Orphaned { .. } => true,
            State::Streaming { finished, .. } => !finished,
            State::Done(_) => false,
        }
    }
}

struct Slot {
    generation: u32,
    state: State,
    /// What to do with a completion nobody will read (its owner went away): give back the
    /// provided buffer it carries, close the descriptor it made. Set by whoever submitted the
    /// operation, who knows what its completions carry.
    discard: Option<Discard>,
}

/// Gives back what an unread completion carries (a provided buffer, a new descriptor), for an
/// operation whose owner went away; given by whoever submits the operation.
pub type Discard = fn(&Completion);

/// Counters a ring keeps about itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct RingStats {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Submission queue entries pushed.
    pub submitted: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Operations whose owner went away while the kernel still held them.
    pub orphaned: u64,
    /// Multishot operations stopped because their reader fell behind (re-armed when it catches up).
    pub capped: u64,
}

/// How long an `io_uring_enter` may wait for a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait: submit and collect what is ready.
    No,
    /// Until at least one completion arrives.
    Forever,
    /// Until a completion arrives or this much time has passed (the nearest timer of the core).
    For(std::time::Duration),
}

/// How many times `push` retries a full submission queue whose kernel side stays busy.
const PUSH_RETRIES: u32 = 10_000;

/// One io_uring with its table of in-flight operations. Not `Send`: it lives and dies on the thread
/// that created it (`SINGLE_ISSUER`).
///
/// Dropping a ring cancels everything in flight and waits (up to two seconds) for the kernel to
/// give it back; what the kernel still holds after that — and the memory registered with the
/// ring — is leaked rather than freed, since the kernel may still write into it.
pub struct Ring {
    uring: IoUring,
    ops: Slab<Slot>,
    generation: u32,
    mode: SetupMode,
    stats: RingStats,
    /// Memory registered with this ring (buffer rings, fixed buffers): kept alive as long as the
    /// ring, and leaked with it if the kernel does not let go.
    registered: Vec<Box<dyn Any>>,
    /// The first error `io_uring_enter` returned that is not worth retrying: the ring is unusable.
    failure: Option<io::Error>,
    /// Reserved tokens reaped and not yet taken (see [`Ring::take_reserved`]).
    reserved: Vec<u64>,
}

impl Ring {
    /// Creates a ring on the calling thread with `SINGLE_ISSUER | DEFER_TASKRUN`, falling back to
    /// `COOP_TASKRUN` and then to no flags when the kernel refuses them.
    pub fn new() -> Result<Ring, RingError> {
        Self::with_entries(SQ_ENTRIES)
    }

    /// Like [`Ring::new`] with a chosen submission queue size.
    pub fn with_entries(entries: u32) -> Result<Ring, RingError> {
        let mut last = None;
        for mode in [SetupMode::DeferTaskrun, SetupMode::CoopTaskrun, SetupMode::Plain] {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(entries * CQ_FACTOR).setup_clamp();
            match mode {
                SetupMode::DeferTaskrun => {
                    builder.setup_single_issuer().setup_defer_taskrun();
                }
                SetupMode::CoopTaskrun => {
                    builder.setup_coop_taskrun();
                }
                SetupMode::Plain => {}
            }
            match builder.build(entries) {
                Ok(uring) => {
                    return Ok(Ring {
                        uring,
                        ops: Slab::with_capacity(256),
                        generation: 0,
                        mode,
                        stats: RingStats::default(),
                        registered: Vec::new(),
                        failure: None,
                        reserved: Vec::new(),
                    })
                }
                // EINVAL: this kernel does not know these flags; try the next, simpler set.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(classify_setup_error(&e)),
            }
        }
        Err(classify_setup_error(&last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))))
    }

    /// The setup flags in force.
    pub fn mode(&self) -> SetupMode {
        self.mode
    }

    /// The kernel's feature bits for this ring.
    pub fn params(&self) -> &io_uring::Parameters {
        self.uring.params()
    }

    /// Counters since creation.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Operations submitted and not yet finished (including orphaned ones).
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Reads the kernel's opcode table.
    pub fn probe(&self) -> io::Result<io_uring::Probe> {
        let mut probe = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut probe)?;
        Ok(probe)
    }

    /// Queues one entry, submitting first if the submission queue is full. Fails only when the
    /// ring itself has failed (see [`Ring::failure`]).
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the entry's final completion is reaped.
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..PUSH_RETRIES {
            self.failed()?;
            // SAFETY: the caller guarantees the entry's pointers outlive the operation.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                self.stats.submitted += 1;
                return Ok(());
            }
            // Full: hand what we have to the kernel, then retry. If it still has no room (the
            // completion queue is backed up: EBUSY), make room by reaping. Mailbox tokens can be
            // dropped here: the core checks its mailbox flag every turn.
            self.enter(Wait::No)?;
            if self.uring.submission().is_full() {
                self.reap_into();
            }
        }
        Err(self.fail(io::Error::new(io::ErrorKind::WouldBlock, "the submission queue stayed full")))
    }

    /// `Err` with (a copy of) the error that made this ring unusable, if one did.
    fn failed(&self) -> io::Result<()> {
        match &self.failure {
            Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }

    /// Marks the ring unusable because of `e`, and hands `e` back.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failure = Some(io::Error::new(e.kind(), e.to_string()));
        e
    }

    /// Submits `entry` as a new operation and returns its key. If the ring has failed, the
    /// operation completes at once with the error instead (its owner sees it on the first poll).
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the operation's final completion: the caller
    /// keeps the pointed-to memory in the [`Op`] that owns the key (which hands it to
    /// [`Ring::orphan`] if it is dropped early).
    pub(crate) unsafe fn submit(&mut self, entry: squeue::Entry, kind: OpKind, discard: Option<Discard>) -> usize {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let state = if kind == OpKind::Single {
            State::Waiting(None)
        } else {
            State::Streaming { queue: VecDeque::new(), waker: None, finished: false, cap: 0, capped: false }
        };
        let key = self.ops.insert(Slot { generation, state, discard });
        debug_assert!((key as u64) < (TOKEN_RESERVED & 0xffff_ffff), "operation keys stay below the reserved tokens");
        let entry = entry.user_data(user_data(key, generation));
        // SAFETY: forwarded from the caller.
        if let Err(e) = unsafe { self.push(&entry) } {
            // Never queued: the kernel holds nothing, so the owner may have its resources back.
            let c = Completion::new(-e.raw_os_error().unwrap_or(libc::EIO), 0);
            self.ops[key].state = match kind {
                OpKind::Single => State::Done(c),
                _ => {
                    State::Streaming { queue: VecDeque::from([c]), waker: None, finished: true, cap: 0, capped: false }
                }
            };
        }
        key
    }

    /// Limits how many completions of the multishot operation `key` may wait unread: when the
    /// reader falls that far behind, the ring cancels the operation (the completions already
    /// queued stay readable, the last one says `ECANCELED`) so that it stops taking buffers.
    pub(crate) fn cap_stream(&mut self, key: usize, cap: u16) {
        if let State::Streaming { cap: c, .. } = &mut self.ops[key].state {
            *c = cap;
        }
    }

    /// Asks the kernel to end the multishot operation `key` early; its completions keep coming, in
    /// order, until the final one (`ECANCELED` if the cancel caught it). Once per operation.
    pub(crate) fn cancel_stream(&mut self, key: usize) {
        let generation = self.ops[key].generation;
        if let State::Streaming { finished: false, capped, .. } = &mut self.ops[key].state {
            if !*capped {
                *capped = true;
                let cancel = opcode::AsyncCancel::new(user_data(key, generation)).build().user_data(TOKEN_IGNORE);
                // SAFETY: a cancel request holds no pointers.
                let _ = unsafe { self.push(&cancel) };
            }
        }
    }

    /// Asks the kernel to end the single-shot operation `key` now if it is still waiting; it then
    /// completes (with `ECANCELED` if the cancel caught it, or with what it had done).
    pub(crate) fn cancel_single(&mut self, key: usize) {
        let generation = self.ops[key].generation;
        if let State::Waiting(_) = self.ops[key].state {
            let cancel = opcode::AsyncCancel::new(user_data(key, generation)).build().user_data(TOKEN_IGNORE);
            // SAFETY: a cancel request holds no pointers.
            let _ = unsafe { self.push(&cancel) };
        }
    }

    /// The error that made this ring unusable, if any: an `io_uring_enter` failure other than
    /// the transient `EINTR`, `EAGAIN` and `EBUSY`.
    pub fn failure(&self) -> Option<&io::Error> {
        self.failure.as_ref()
    }

    /// Keeps `memory` (registered with this ring) alive as long as the ring, and leaks it with
    /// the ring if the kernel never gives back what it holds.
    pub(crate) fn keep_registered(&mut self, memory: Box<dyn Any>) {
        self.registered.push(memory);
    }

    /// Polls a single-shot operation: `Ready` once, after which the key is freed.
    pub(crate) fn poll_op(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let slot = &mut self.ops[key];
        match &mut slot.state {
            State::Done(c) => {
                let c = *c;
                self.ops.remove(key);
                Poll::Ready(c)
            }
            State::Waiting(w) => {
                match w {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => unreachable!("poll_op on a multishot or orphaned operation"),
        }
    }

    /// Polls a multishot operation: `Some` per completion, `None` after the final one (the key is
    /// then freed).
    pub(crate) fn poll_stream(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let slot = &mut self.ops[key];
        match &mut slot.state {
            State::Streaming { queue, waker, finished, .. } => {
                if let Some(c) = queue.pop_front() {
                    return Poll::Ready(Some(c));
                }
                if *finished {
                    self.ops.remove(key);
                    return Poll::Ready(None);
                }
                match waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => unreachable!("poll_stream on a single-shot or orphaned operation"),
        }
    }

    /// Registers a provided-buffer ring of `entries` at `addr` as group `bgid`.
    ///
    /// # Safety
    /// `addr` must be a page-aligned mapping of `entries` buffer-ring entries that stays valid until
    /// [`Ring::unregister_buf_ring`] or the ring's end, and every buffer published in it must stay
    /// valid as long.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        addr: u64,
        entries: u16,
        bgid: u16,
        flags: u16,
    ) -> io::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.uring.submitter().register_buf_ring_with_flags(addr, entries, bgid, flags) }
    }

    /// Registers `bufs` as the ring's fixed buffers (indices in order).
    ///
    /// # Safety
    /// Every iovec must describe memory that stays valid until the buffers are unregistered (or
    /// the ring ends).
    pub(crate) unsafe fn register_buffers(&mut self, bufs: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.uring.submitter().register_buffers(bufs) }
    }

    /// Unregisters the ring's fixed buffers.
    pub(crate) fn unregister_buffers(&mut self) -> io::Result<()> {
        self.uring.submitter().unregister_buffers()
    }

    /// The owner of `key` went away. If the kernel is done with it, free it now; otherwise keep
    /// `resources` alive until its final completion and ask the kernel to cancel it.
    pub(crate) fn orphan(&mut self, key: usize, resources: Box<dyn Any>) {
        let slot = &mut self.ops[key];
        let discard = slot.discard.unwrap_or(|_| {});
        // Completions queued for the owner carry buffers or descriptors nobody will read now.
        if let State::Streaming { queue, .. } = &mut slot.state {
            queue.drain(..).for_each(|c| discard(&c));
        }
        let multishot = match &slot.state {
            State::Done(c) => {
                let c = *c;
                self.ops.remove(key);
                discard(&c);
                return;
            }
            State::Streaming { finished: true, .. } => {
                self.ops.remove(key);
                return;
            }
            State::Streaming { .. } => true,
            State::Waiting(_) => false,
            State::Orphaned { .. } => return,
        };
        let target = user_data(key, slot.generation);
        slot.state = State::Orphaned { _resources: resources, multishot };
        self.stats.orphaned += 1;
        let cancel = opcode::AsyncCancel::new(target).build().user_data(TOKEN_IGNORE);
        // SAFETY: a cancel request holds no pointers. If it cannot be queued (the ring failed),
        // the slot stays orphaned and the ring's drop leaks it.
        let _ = unsafe { self.push(&cancel) };
    }

    /// Submits queued entries and waits as `wait` says. Always asks for completions
    /// (`GETEVENTS`), which `DEFER_TASKRUN` needs to run the deferred work that produces them. One
    /// call per loop turn. `EINTR`, `EAGAIN` and `EBUSY` are transient (the caller reaps and comes
    /// back); any other error is returned, remembered, and makes the ring unusable.
    pub(crate) fn enter(&mut self, wait: Wait) -> io::Result<()> {
        self.failed()?;
        let to_submit = self.uring.submission().len() as u32;
        self.stats.enters += 1;
        let mut flags = io_uring::EnterFlags::GETEVENTS;
        // Kernels with NO_IOWAIT (6.15+): a core waiting for network completions is idle, not
        // waiting on a disk, and should not show as iowait in top/vmstat.
        if wait != Wait::No && self.uring.params().is_feature_no_iowait() {
            flags |= io_uring::EnterFlags::NO_IOWAIT;
        }
        let r = match wait {
            // SAFETY: no argument pointer is passed; the entries in the queue were pushed with
            // the guarantees `push` demands.
            Wait::No => unsafe { self.uring.submitter().enter::<libc::sigset_t>(to_submit, 0, flags.bits(), None) },
            // SAFETY: as above.
            Wait::Forever => unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(to_submit, 1, flags.bits(), None)
            },
            Wait::For(d) => {
                // The nearest deadline as the enter's own timeout (EXT_ARG): no timeout operation.
                let ts = io_uring::types::Timespec::from(d);
                let args = io_uring::types::SubmitArgs::new().timespec(&ts);
                let flags = flags | io_uring::EnterFlags::EXT_ARG;
                // SAFETY: `SubmitArgs` is `repr(transparent)` over the kernel's getevents argument,
                // whose size `enter` passes; it and the timespec live until the call returns.
                unsafe { self.uring.submitter().enter(to_submit, 1, flags.bits(), Some(&args)) }
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Interrupted; the wait timed out; the completion queue is full (the caller
                // reaps and comes back); the kernel could not allocate for a moment.
                Some(libc::EINTR) | Some(libc::ETIME) | Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(()),
                _ => Err(self.fail(e)),
            },
        }
    }

    /// Moves every ready completion to its operation and wakes the waiter. Completions carrying a
    /// reserved token (see [`TOKEN_RESERVED`]) are kept for [`Ring::take_reserved`] — whichever
    /// path reaps them (this one, a full submission queue, a drain), so none is lost. Returns how
    /// many were reaped.
    pub(crate) fn reap(&mut self) -> usize {
        self.reap_into()
    }

    /// The reserved tokens reaped since the last call (a failed `MSG_RING`'s token must reach
    /// the runtime, or the core it was for is never woken).
    pub(crate) fn take_reserved(&mut self, into: &mut Vec<u64>) {
        into.append(&mut self.reserved);
    }

    fn reap_into(&mut self) -> usize {
        let mut n = 0;
        loop {
            let Some(cqe) = self.uring.completion().next() else {
                break;
            };
            n += 1;
            let ud = cqe.user_data();
            let c = Completion { result: cqe.result(), flags: cqe.flags() };
            if ud >= TOKEN_RESERVED {
                if ud != TOKEN_IGNORE {
                    self.reserved.push(ud);
                }
                continue;
            }
            let (key, generation) = split_user_data(ud);
            let Some(slot) = self.ops.get_mut(key) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            match &mut slot.state {
                State::Waiting(w) => {
                    let w = w.take();
                    slot.state = State::Done(c);
                    if let Some(w) = w {
                        w.wake();
                    }
                }
                State::Streaming { queue, waker, finished, cap, capped } => {
                    if !c.more() {
                        *finished = true;
                    }
                    queue.push_back(c);
                    if let Some(w) = waker.take() {
                        w.wake();
                    }
                    if *cap > 0 && !*finished && !*capped && queue.len() >= usize::from(*cap) {
                        // The reader fell behind: stop the operation rather than let it take
                        // more buffers. What is queued stays readable; the owner re-arms later.
                        *capped = true;
                        self.stats.capped += 1;
                        let cancel = opcode::AsyncCancel::new(ud).build().user_data(TOKEN_IGNORE);
                        // SAFETY: a cancel request holds no pointers.
                        let _ = unsafe { self.push(&cancel) };
                    }
                }
                State::Orphaned { multishot, .. } => {
                    let discard = slot.discard;
                    if !*multishot || !c.more() {
                        self.ops.remove(key);
                    }
                    if let Some(f) = discard {
                        f(&c);
                    }
                }
                State::Done(_) => {}
            }
        }
        self.stats.completions += n as u64;
        n
    }

    /// The ring's descriptor, the target of another ring's `MSG_RING`.
    pub fn fd(&self) -> RawFd {
        self.uring.as_raw_fd()
    }

    /// Sends a `MSG_RING` that posts a completion carrying `token` on the ring `target_ring_fd`.
    /// The sender gets no completion on success; on failure, one carrying `failure_token` (both
    /// tokens in the reserved range, see [`TOKEN_RESERVED`]). `Err` when it could not be queued.
    pub(crate) fn msg_ring(&mut self, target_ring_fd: RawFd, token: u64, failure_token: u64) -> io::Result<()> {
        debug_assert!(token >= TOKEN_RESERVED && failure_token >= TOKEN_RESERVED);
        let entry = opcode::MsgRingData::new(io_uring::types::Fd(target_ring_fd), 0, token, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(failure_token);
        // SAFETY: a MSG_RING data message holds no pointers into our memory.
        unsafe { self.push(&entry) }
    }

    /// Cancels everything in flight and waits (up to `limit`) for the kernel to finish with it, so
    /// no buffer is freed while the kernel may still use it. Returns operations left over.
    pub(crate) fn drain(&mut self, limit: std::time::Duration) -> usize {
        let keys: Vec<(usize, u32)> = self.ops.iter().map(|(k, s)| (k, s.generation)).collect();
        for (key, generation) in keys {
            let cancel = opcode::AsyncCancel::new(user_data(key, generation)).build().user_data(TOKEN_IGNORE);
            // SAFETY: a cancel request holds no pointers.
            if unsafe { self.push(&cancel) }.is_err() {
                break;
            }
        }
        let deadline = std::time::Instant::now() + limit;
        while self.holds_kernel_ops() && std::time::Instant::now() < deadline {
            if self.enter(Wait::For(std::time::Duration::from_millis(10))).is_err() {
                break;
            }
            self.reap_into();
        }
        self.ops.iter().filter(|(_, s)| s.state.kernel_holds()).count()
    }

    fn holds_kernel_ops(&self) -> bool {
        self.ops.iter().any(|(_, s)| s.state.kernel_holds())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.ops.is_empty() || !self.holds_kernel_ops() {
            return;
        }
        let left = self.drain(DRAIN_LIMIT);
        if left > 0 {
            // The kernel may still read or write the memory these operations lent it (a
            // zero-copy send to a peer that stopped reading, a ring that cannot enter any more):
            // leak it, and the registered buffers, rather than free it under the kernel.
            if self.failure.is_none() {
                tracing::warn!(left, "io_uring dropped with operations the kernel still holds; leaking their memory");
            }
            std::mem::forget(std::mem::take(&mut self.ops));
            std::mem::forget(std::mem::take(&mut self.registered));
        }
    }
}

/// How long a dropped ring waits for the kernel to give back what it holds.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

fn user_data(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

fn split_user_data(ud: u64) -> (usize, u32) {
    ((ud & 0xffff_ffff) as usize, (ud >> 32) as u32)
}
