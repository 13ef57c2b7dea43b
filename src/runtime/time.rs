//! Timers on the ring (`IORING_OP_TIMEOUT`, no timer thread) and the combinators the tools need:
//! `select` (first of two), `join` (both), `timeout`. They are plain structs that hold each future
//! once (pinned in place through `pin-project-lite`, which does the projection without unsafe
//! code of ours): an `async fn` combinator keeps both its arguments and their pinned copies, which
//! made a load connection's future four times larger than its parts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use crate::ring::ops;
use crate::ring::Op;

/// Waits for a duration (a timeout operation on this core's ring).
pub struct Sleep {
    op: Option<Op<Box<io_uring::types::Timespec>>>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.op.as_mut() {
            None => Poll::Ready(()),
            Some(op) => Pin::new(op).poll(cx).map(|_| ()),
        }
    }
}

/// Waits for `d`.
pub fn sleep(d: Duration) -> Sleep {
    Sleep { op: Some(ops::timeout(d)) }
}

/// Waits until `deadline` (ready at once if it has passed).
pub fn sleep_until(deadline: Instant) -> Sleep {
    let now = Instant::now();
    if deadline > now {
        sleep(deadline - now)
    } else {
        Sleep { op: None }
    }
}

/// Which of two futures finished first.
#[derive(Debug)]
pub enum Either<A, B> {
    /// The first.
    Left(A),
    /// The second.
    Right(B),
}

pin_project! {
    /// The first of two futures to finish; see [`select`].
    pub struct Select<A, B> {
        #[pin]
        a: A,
        #[pin]
        b: B,
    }
}

impl<A: Future, B: Future> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.a.poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = this.b.poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    }
}

/// Polls both and returns the first output; the other future is dropped with the `Select`
/// (cancelling its operations). The first has priority when both are ready.
pub fn select<A: Future, B: Future>(a: A, b: B) -> Select<A, B> {
    Select { a, b }
}

pin_project! {
    /// Both futures, run side by side on one task; see [`join`].
    pub struct Join<A: Future, B: Future> {
        #[pin]
        a: A,
        #[pin]
        b: B,
        ra: Option<A::Output>,
        rb: Option<B::Output>,
    }
}

impl<A: Future, B: Future> Future for Join<A, B> {
    type Output = (A::Output, B::Output);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.ra.is_none() {
            if let Poll::Ready(v) = this.a.poll(cx) {
                *this.ra = Some(v);
            }
        }
        if this.rb.is_none() {
            if let Poll::Ready(v) = this.b.poll(cx) {
                *this.rb = Some(v);
            }
        }
        if this.ra.is_some() && this.rb.is_some() {
            Poll::Ready((this.ra.take().expect("checked"), this.rb.take().expect("checked")))
        } else {
            Poll::Pending
        }
    }
}

/// Runs both to completion concurrently on this task.
pub fn join<A: Future, B: Future>(a: A, b: B) -> Join<A, B> {
    Join { a, b, ra: None, rb: None }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project! {
    /// A future with a deadline; see [`timeout`].
    pub struct Timeout<F> {
        #[pin]
        inner: Select<F, Sleep>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(|e| match e {
            Either::Left(v) => Ok(v),
            Either::Right(()) => Err(Elapsed),
        })
    }
}

/// Runs `f` for at most `d`.
pub fn timeout<F: Future>(d: Duration, f: F) -> Timeout<F> {
    Timeout { inner: select(f, sleep(d)) }
}

/// Runs `f` until `deadline` at most.
pub fn timeout_at<F: Future>(deadline: Instant, f: F) -> Timeout<F> {
    Timeout { inner: select(f, sleep_until(deadline)) }
}
