//! Timers in user space, per core, and the combinators the tools need: `select` (first of two),
//! `join` (both), `timeout`. A timer is an entry in the core's ordered map of deadlines; the
//! kernel is only asked to wake the core at the nearest one (the timeout of the loop's one
//! `io_uring_enter`), so arming and dropping a timer costs no system call — a per-request
//! `IORING_OP_TIMEOUT` and its `ASYNC_CANCEL` cost a fifth of the load generator's CPU before.
//! The combinators are plain structs that hold each future once (pinned in place through
//! `pin-project-lite`): an `async fn` combinator keeps both its arguments and their pinned copies,
//! which made a load connection's future four times larger than its parts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use super::core::Core;

/// Waits until a deadline; see [`sleep`] and [`sleep_until`]. Registers with the core's timers on
/// its first poll, and leaves them when it finishes or is dropped.
pub struct Sleep {
    deadline: Instant,
    key: Option<(Instant, u64)>,
    /// The waker registered with the key: a poll with the same waker touches no map.
    waker: Option<std::task::Waker>,
}

impl Sleep {
    /// Leaves the core's timers, if registered.
    fn unregister(&mut self) {
        if let Some(k) = self.key.take() {
            Core::try_with(|c| c.exec.cancel_timer(k));
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The turn's clock: a timer is due once the clock read after the last enter passed it.
        if now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        // Already registered with this waker: nothing to do (the common case of a timer polled
        // beside a future that is making progress).
        if self.key.is_some() && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let key = Core::with(|c| c.exec.set_timer(self.key, self.deadline, cx.waker()));
        self.key = Some(key);
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Waits for `d` (from now, read from the clock: a sleep never ends early).
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// Waits until `deadline` (ready at once if it has passed).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, key: None, waker: None }
}

/// The clock of this core's loop turn: read once per turn, after the ring was entered. Cheaper
/// than `Instant::now()` where a turn's precision is enough (deadlines of connections).
///
/// Outside a runtime it is the clock itself.
pub fn now() -> Instant {
    Core::try_with(|c| c.now()).unwrap_or_else(Instant::now)
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
