//! Between cores: typed mailboxes ([`Mailboxes`]) that carry values of one type to a task on
//! another core, and what other threads may touch of a core ([`CoreShared`]): its stop flag, the
//! wakers used on other threads, and the wake-up that makes a sleeping ring look (`IORING_OP_MSG_RING`
//! from another ring, an eventfd write from a thread that has none).
//!
//! Both rest on one protocol, [`Doorbell`]: a sender pushes, then rings the doorbell, and only the
//! sender that finds it silent wakes the receiver; the receiver silences the doorbell, then
//! drains. One wake-up per batch, not per message, and none lost — modelled with loom
//! (`loom_tests` below).

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering};
use std::sync::atomic::{AtomicBool as StdAtomicBool, AtomicI32};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::core::try_with_ring;
use crate::ring::TOKEN_RESERVED;

/// The token a `MSG_RING` posts on a core's ring: "look at your mailbox".
pub(crate) const TOKEN_MAILBOX: u64 = TOKEN_RESERVED;
/// The token of this core's failed `MSG_RING` to core `i`: `TOKEN_WAKE_FAILED + i` (only failures
/// come back; that core must then be woken through its eventfd).
pub(crate) const TOKEN_WAKE_FAILED: u64 = TOKEN_RESERVED + 1;

/// The notified-flag protocol between many senders and one receiver.
///
/// - sender: push the value, then [`Doorbell::ring`]; wake the receiver only if it returns `true`.
/// - receiver: [`Doorbell::silence`], then drain everything; if nothing came, wait for a wake.
///
/// A value pushed after the receiver's drain finds the doorbell silent (the receiver silenced it
/// before draining) and wakes it; a value pushed before is seen by the drain. Sequentially
/// consistent operations on the flag order it against the queue's own synchronisation.
pub(crate) struct Doorbell {
    rung: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new() -> Doorbell {
        Doorbell { rung: AtomicBool::new(false) }
    }

    /// After a push: whether this sender must wake the receiver (nobody has since it last looked).
    pub(crate) fn ring(&self) -> bool {
        !self.rung.swap(true, Ordering::SeqCst)
    }

    /// Before a drain: whether anyone rang since the last drain (the caller drains either way
    /// when it must not miss anything; the answer lets a poller skip an empty drain).
    pub(crate) fn silence(&self) -> bool {
        self.rung.swap(false, Ordering::SeqCst)
    }
}

/// Values a core's mailbox holds before senders get their value back (`Full`).
pub const MAILBOX_CAPACITY: usize = 4096;

/// One core's typed mailbox: a bounded lock-free queue, its doorbell and the waker of the task
/// that drains it.
struct Slot<T> {
    queue: crossbeam_queue::ArrayQueue<T>,
    doorbell: Doorbell,
    /// The draining task's waker; locked once per batch (to wake), never per message.
    waker: Mutex<Option<Waker>>,
}

/// Typed mailboxes, one per core: any thread sends a `T` to core `i`, where one task drains them
/// in batches ([`Receiver::recv_batch`]). No allocation per message (the queue is allocated once)
/// and one wake-up per batch. Clone it freely: clones share the mailboxes.
pub struct Mailboxes<T> {
    slots: Arc<[Slot<T>]>,
}

impl<T> Clone for Mailboxes<T> {
    fn clone(&self) -> Self {
        Mailboxes { slots: self.slots.clone() }
    }
}

impl<T: Send> Mailboxes<T> {
    /// Mailboxes for `cores` cores, each holding up to `capacity` values.
    pub fn new(cores: usize, capacity: usize) -> Mailboxes<T> {
        let slots: Vec<Slot<T>> = (0..cores)
            .map(|_| Slot {
                queue: crossbeam_queue::ArrayQueue::new(capacity.max(1)),
                doorbell: Doorbell::new(),
                waker: Mutex::new(None),
            })
            .collect();
        Mailboxes { slots: slots.into() }
    }

    /// Number of mailboxes (cores).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sends `value` to core `core`'s mailbox. A full mailbox gives the value back.
    ///
    /// # Panics
    /// If `core` is out of range.
    pub fn send(&self, core: usize, value: T) -> Result<(), T> {
        let slot = &self.slots[core];
        slot.queue.push(value)?;
        if slot.doorbell.ring() {
            let waker = slot.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(w) = waker {
                w.wake();
            }
        }
        Ok(())
    }

    /// The receiving end of core `core`'s mailbox. One task per core should drain it: a second
    /// would take the first one's wake-ups.
    pub fn receiver(&self, core: usize) -> Receiver<T> {
        Receiver { boxes: self.clone(), core }
    }
}

/// The receiving end of one core's mailbox.
pub struct Receiver<T> {
    boxes: Mailboxes<T>,
    core: usize,
}

impl<T: Send> Receiver<T> {
    /// Waits until values arrived, then moves up to `max` of them to `out` (values beyond stay
    /// for the next call) and returns how many.
    pub fn recv_batch<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> RecvBatch<'a, T> {
        RecvBatch { rx: self, out, max: max.max(1) }
    }

    /// Moves what is there now (up to `max`) to `out`, without waiting.
    pub fn try_recv_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let slot = &self.boxes.slots[self.core];
        slot.doorbell.silence();
        let mut n = 0;
        while n < max {
            let Some(v) = slot.queue.pop() else { break };
            out.push(v);
            n += 1;
        }
        if n == max && !slot.queue.is_empty() {
            // Left some behind: make sure the next poll looks again without a new wake-up.
            slot.doorbell.ring();
        }
        n
    }
}

/// The future of [`Receiver::recv_batch`].
pub struct RecvBatch<'a, T> {
    rx: &'a mut Receiver<T>,
    out: &'a mut Vec<T>,
    max: usize,
}

impl<T: Send> Future for RecvBatch<'_, T> {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let this = self.get_mut();
        let slot = &this.rx.boxes.slots[this.rx.core];
        {
            // Registered before the doorbell is silenced: a sender that rings after this sees
            // the new waker.
            let mut w = slot.waker.lock().unwrap_or_else(|e| e.into_inner());
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        let n = this.rx.try_recv_batch(this.out, this.max);
        if n > 0 {
            Poll::Ready(n)
        } else {
            Poll::Pending
        }
    }
}

/// What other threads may touch of a core: its stop flag, wake-ups of its tasks from other
/// threads, and the way to wake its ring.
pub struct CoreShared {
    /// Index of the core in its runtime.
    pub index: usize,
    /// Task ids woken by wakers used on other threads (rare: once per batch of a mailbox).
    remote_wakes: Mutex<VecDeque<usize>>,
    doorbell: Doorbell,
    stop: StdAtomicBool,
    ring_fd: AtomicI32,
    eventfd: OwnedFd,
}

impl CoreShared {
    pub(crate) fn new(index: usize) -> std::io::Result<CoreShared> {
        Ok(CoreShared {
            index,
            remote_wakes: Mutex::new(VecDeque::new()),
            doorbell: Doorbell::new(),
            stop: StdAtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
            eventfd: crate::sys::eventfd()?,
        })
    }

    pub(crate) fn set_ring_fd(&self, fd: i32) {
        self.ring_fd.store(fd, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn eventfd(&self) -> &OwnedFd {
        &self.eventfd
    }

    /// Asks the core to stop: its executor resolves [`super::shutdown_requested`].
    pub fn request_stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn remote_wake(&self, task: usize) {
        self.remote_wakes.lock().unwrap_or_else(|e| e.into_inner()).push_back(task);
        self.notify();
    }

    /// Makes sure the core looks soon: if nobody told it since it last looked, post a completion
    /// on its ring (from this thread's ring when it has one, else through the eventfd).
    fn notify(&self) {
        if !self.doorbell.ring() {
            return;
        }
        let target = self.ring_fd.load(std::sync::atomic::Ordering::Acquire);
        let sent = target >= 0
            && try_with_ring(|r| r.msg_ring(target, TOKEN_MAILBOX, TOKEN_WAKE_FAILED + self.index as u64))
                .is_some_and(|r| r.is_ok());
        if !sent {
            self.wake_by_eventfd();
        }
    }

    /// Wakes the core through its eventfd: from threads without a ring, and when a `MSG_RING`
    /// to it failed (the doorbell is already rung, so no other sender would wake it).
    pub(crate) fn wake_by_eventfd(&self) {
        crate::sys::eventfd_signal(self.eventfd.as_raw_fd());
    }

    /// Called by the owning core once per loop turn: the tasks woken from other threads since the
    /// last turn. `false` when nobody rang.
    pub(crate) fn take_arrivals(&self, wakes: &mut Vec<usize>) -> bool {
        if !self.doorbell.silence() {
            return false;
        }
        wakes.extend(self.remote_wakes.lock().unwrap_or_else(|e| e.into_inner()).drain(..));
        true
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Doorbell;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Notify};

    /// The doorbell as the mailboxes use it — the queue reduced to a count of values in it, a
    /// notify standing for the receiver's waker — with two senders and one receiver that drains
    /// and waits: every value arrives and the receiver is never left asleep with a value queued
    /// (loom reports that as a deadlock), and it is woken at most once per sender.
    #[test]
    fn no_value_is_left_behind_and_wakes_are_per_batch() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let queued = Arc::new(AtomicUsize::new(0));
            let bell = Arc::new(Doorbell::new());
            let notify = Arc::new(Notify::new());
            let wakes = Arc::new(AtomicUsize::new(0));
            let senders: Vec<_> = (0..2)
                .map(|_| {
                    let (q, b, n, w) = (queued.clone(), bell.clone(), notify.clone(), wakes.clone());
                    loom::thread::spawn(move || {
                        q.fetch_add(1, Ordering::SeqCst);
                        if b.ring() {
                            w.fetch_add(1, Ordering::SeqCst);
                            n.notify();
                        }
                    })
                })
                .collect();
            let mut got = 0;
            while got < 2 {
                bell.silence();
                got += queued.swap(0, Ordering::SeqCst);
                if got < 2 {
                    notify.wait();
                }
            }
            for s in senders {
                s.join().unwrap();
            }
            assert_eq!(got, 2);
            assert!(wakes.load(Ordering::SeqCst) <= 2);
        });
    }
}
