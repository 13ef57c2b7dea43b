//! Operations as futures that own what they lend to the kernel.

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
        // SAFETY: forwarded: `data` keeps the pointed-to memory alive for as long as the slot.
        let key = with_ring(|r| unsafe { r.submit(entry, OpKind::Single, None) });
        Op { key: Some(key), data: Some(data), _local: std::marker::PhantomData }
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
