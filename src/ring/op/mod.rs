//! Operations as futures that own what they lend to the kernel ([`Op`], [`OpStream`]), and the
//! operations themselves, one file each: each a safe constructor that builds the entry and moves
//! what the kernel will read or write into the returned future, so that memory stays put and alive
//! until the completion (see the module docs of `ring` for what happens on drop).

mod accept;
mod close;
mod connect;
mod nop;
mod read;
mod recv;
mod recv_multi;
mod recvmsg;
mod recvmsg_multi;
mod send;
mod send_zc;
mod sendmsg;
mod shutdown;
mod timeout;
mod write_fixed;
mod writev;

pub use accept::accept_multi;
pub(crate) use accept::adopt_fd;
pub use close::close;
pub use connect::connect;
pub use nop::nop;
pub use read::read;
pub(crate) use recv::received;
pub use recv::recv;
pub use recv_multi::{recv_multi, recv_select};
pub use recvmsg::{recvmsg, DatagramData, MsgStore};
pub use recvmsg_multi::{parse_datagram, recvmsg_multi, MsgTemplate};
pub use send::{send, send_more};
pub use send_zc::{sendmsg_zc, ZcSendData, NOTIF_USAGE_ZC_COPIED};
pub use sendmsg::sendmsg;
pub use shutdown::shutdown;
pub use timeout::timeout;
pub use write_fixed::{write_fixed, FixedBuf};
pub use writev::{writev, WritevData};

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use io_uring::{opcode, types};
use socket2::SockAddr;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::squeue;

use super::{Completion, Discard, OpKind};
// An operation finds its ring the one way code finds its core: through the core's context.
use crate::runtime::core::{try_with_ring, with_ring};

/// The counters of this thread's ring, if it has one (a core of the runtime).
pub fn current_stats() -> Option<super::RingStats> {
    try_with_ring(|r| r.stats())
}

/// Operations in flight on this thread's ring (including orphaned ones), if it has one.
pub fn current_in_flight() -> Option<usize> {
    try_with_ring(|r| r.in_flight())
}

/// Hands an unfinished operation's resources to the ring. Without a ring to hold them (a thread
/// being torn down, say after a panic), they are leaked: the kernel may still write into them, and
/// a leak is the only safe end for memory in that state.
fn orphan_or_leak(key: usize, data: Box<dyn Any>) {
    let mut data = Some(data);
    try_with_ring(|r| r.orphan(key, data.take().expect("given once")));
    if let Some(d) = data {
        std::mem::forget(d);
    }
}

/// A single-shot operation on this thread's ring. Resolves to its completion and the resources it
/// lent to the kernel (a buffer, a socket address, a descriptor). Dropping it before it resolves
/// cancels the operation and keeps `T` alive until the kernel is done with it.
pub struct Op<T: 'static> {
    key: Option<usize>,
    data: Option<T>,
    /// Not `Send`: the key only means something on the ring (thread) that issued it.
    _local: std::marker::PhantomData<*const ()>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry`.
    ///
    /// # Safety
    /// Every pointer in `entry` must point into heap memory owned by `data` (which may move, but
    /// whose heap allocations must not), or into memory that outlives the operation.
    pub(crate) unsafe fn submit(entry: squeue::Entry, data: T) -> Op<T> {
        // SAFETY: forwarded.
        unsafe { Op::submit_with(entry, data, None) }
    }

    /// [`Op::submit`], with what to do with the completion if nobody reads it (a provided
    /// buffer it selected goes back to its group).
    ///
    /// # Safety
    /// As for [`Op::submit`].
    pub(crate) unsafe fn submit_with(entry: squeue::Entry, data: T, discard: Option<Discard>) -> Op<T> {
        // SAFETY: forwarded: `data` keeps the pointed-to memory alive for as long as the slot.
        let key = with_ring(|r| unsafe { r.submit(entry, OpKind::Single, discard) });
        Op { key: Some(key), data: Some(data), _local: std::marker::PhantomData }
    }
}

impl<T: 'static> Op<T> {
    /// Asks the kernel to end the operation now if it has not completed; awaiting it then gives
    /// its completion (`ECANCELED`, or what it had done before the cancel caught it).
    pub(crate) fn cancel(&self) {
        if let Some(key) = self.key {
            with_ring(|r| r.cancel_single(key));
        }
    }
}

impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.key.expect("Op polled after completion");
        match with_ring(|r| r.poll_op(key, cx)) {
            Poll::Ready(c) => {
                self.key = None;
                Poll::Ready((c, self.data.take().expect("Op data present until completion")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            orphan_or_leak(key, Box::new(self.data.take()));
        }
    }
}

/// A multishot operation: a stream of completions until the one without `IORING_CQE_F_MORE`.
pub struct OpStream<T: 'static> {
    key: Option<usize>,
    data: Option<T>,
    /// Not `Send`, as for [`Op`].
    _local: std::marker::PhantomData<*const ()>,
}

impl<T: 'static> OpStream<T> {
    /// Submits a multishot `entry`.
    ///
    /// # Safety
    /// As for [`Op::submit`].
    ///
    /// `discard` gives back what a completion nobody reads carries (a provided buffer, an accepted
    /// descriptor).
    pub(crate) unsafe fn submit(entry: squeue::Entry, data: T, discard: Option<Discard>) -> OpStream<T> {
        // SAFETY: forwarded, as in `Op::submit`.
        let key = with_ring(|r| unsafe { r.submit(entry, OpKind::Multishot, discard) });
        OpStream { key: Some(key), data: Some(data), _local: std::marker::PhantomData }
    }

    /// Stops the operation once `cap` completions wait unread (see `Ring::cap_stream`).
    pub(crate) fn cap(&self, cap: u16) {
        if let Some(key) = self.key {
            with_ring(|r| r.cap_stream(key, cap));
        }
    }

    /// Asks the kernel to end the operation early: the completions already on their way still
    /// arrive, in order, then the final one.
    pub(crate) fn cancel(&self) {
        if let Some(key) = self.key {
            with_ring(|r| r.cancel_stream(key));
        }
    }

    /// The next completion, or `None` once the kernel has ended the operation.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let Some(key) = self.key else {
            return Poll::Ready(None);
        };
        match with_ring(|r| r.poll_stream(key, cx)) {
            Poll::Ready(None) => {
                self.key = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    /// Waits for the next completion.
    pub async fn next(&mut self) -> Option<Completion> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The resources back, once the kernel has ended the operation (`next` returned `None`);
    /// `None` before that (dropping then cancels, keeping them until the kernel lets go).
    pub fn into_data(mut self) -> Option<T> {
        if self.key.is_some() {
            return None;
        }
        self.data.take()
    }
}

impl<T: 'static> Drop for OpStream<T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            orphan_or_leak(key, Box::new(self.data.take()));
        }
    }
}

/// A descriptor shared by a socket and its in-flight operations: it is closed only when the last
/// of them is gone, so its number cannot be reused under an operation the kernel still holds.
pub type SharedFd = Rc<OwnedFd>;

/// Memory the kernel reads from in a send.
///
/// # Safety
/// The kernel reads `bytes_len()` bytes at `stable_ptr()` after the value has been moved into the
/// operation, and until the operation's final completion. An implementation must therefore
/// guarantee that:
/// - `stable_ptr()` points to `bytes_len()` initialised bytes in memory that the value owns or
///   borrows for `'static` — a heap allocation or static memory, never the value itself (a pointer
///   into an inline array would dangle once the value moves into the operation);
/// - moving the value does not move or free that memory, and neither does anything else while
///   the value is alive (no interior mutability that reallocates it);
/// - both methods return the same answer every time they are called on the same value.
///
/// Implementing it for a type that keeps its bytes inline is exactly the mistake this contract
/// exists to prevent, which is why the trait is `unsafe`:
///
/// ```compile_fail
/// struct Inline([u8; 16]);
/// // error[E0200]: the trait `IoBuf` requires an `unsafe impl` declaration
/// impl ringnode::ring::ops::IoBuf for Inline {
///     fn stable_ptr(&self) -> *const u8 { self.0.as_ptr() }
///     fn bytes_len(&self) -> usize { 16 }
/// }
/// ```
pub unsafe trait IoBuf: 'static {
    /// Start of the bytes.
    fn stable_ptr(&self) -> *const u8;
    /// Number of bytes.
    fn bytes_len(&self) -> usize;
}

// SAFETY: a Vec's bytes live in its heap allocation, which moving the Vec does not move.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: a Bytes points into shared (heap or static) memory that it keeps alive and that no
// one mutates while it exists.
unsafe impl IoBuf for Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: the slice lives in the Rc's heap allocation, kept alive by this reference.
unsafe impl IoBuf for Rc<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves or goes away.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

fn fd_of(fd: &SharedFd) -> types::Fd {
    types::Fd(fd.as_raw_fd())
}

/// The iovecs of `bufs` without their first `skip` bytes, at most `UIO_MAXIOV` of them.
fn iovecs(bufs: &[Bytes], mut skip: usize) -> Vec<libc::iovec> {
    let mut iov = Vec::with_capacity(bufs.len().min(libc::UIO_MAXIOV as usize));
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        iov.push(libc::iovec { iov_base: b[skip..].as_ptr() as *mut _, iov_len: b.len() - skip });
        skip = 0;
        if iov.len() == libc::UIO_MAXIOV as usize {
            break;
        }
    }
    iov
}
