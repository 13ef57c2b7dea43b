//! The cross-core mailbox: a bounded lock-free queue per core, and the wake-up that makes a
//! sleeping ring look at it (`IORING_OP_MSG_RING` from another ring, an eventfd write from a thread
//! that has none). Wakes are coalesced: one `MSG_RING` per batch of messages, not per message.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use crossbeam_queue::ArrayQueue;

use super::core::try_with_ring;
use crate::ring::TOKEN_RESERVED;

/// The token a `MSG_RING` posts on a core's ring: "look at your mailbox".
pub(crate) const TOKEN_MAILBOX: u64 = TOKEN_RESERVED;
/// The token of this core's failed `MSG_RING` to core `i`: `TOKEN_WAKE_FAILED + i` (only failures
/// come back; that core must then be woken through its eventfd).
pub(crate) const TOKEN_WAKE_FAILED: u64 = TOKEN_RESERVED + 1;

/// Work sent to another core: runs there, on its thread.
pub type Message = Box<dyn FnOnce() + Send>;

/// Messages a core's mailbox holds before senders see `Full`.
pub const MAILBOX_CAPACITY: usize = 4096;

/// What other threads may touch of a core: its mailbox and its wake-up.
pub struct CoreShared {
    /// Index of the core in its runtime.
    pub index: usize,
    inbox: ArrayQueue<Message>,
    /// Task ids woken by wakers used on other threads (rare: not on the per-message path).
    remote_wakes: Mutex<Vec<usize>>,
    notified: AtomicBool,
    stop: AtomicBool,
    ring_fd: AtomicI32,
    eventfd: OwnedFd,
}

impl CoreShared {
    pub(crate) fn new(index: usize) -> std::io::Result<CoreShared> {
        Ok(CoreShared {
            index,
            inbox: ArrayQueue::new(MAILBOX_CAPACITY),
            remote_wakes: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
            eventfd: crate::sys::eventfd()?,
        })
    }

    pub(crate) fn set_ring_fd(&self, fd: i32) {
        self.ring_fd.store(fd, Ordering::Release);
    }

    pub(crate) fn eventfd(&self) -> &OwnedFd {
        &self.eventfd
    }

    /// Queues `msg` for this core. A full mailbox gives the message back.
    pub fn send(&self, msg: Message) -> Result<(), Message> {
        self.inbox.push(msg)?;
        self.notify();
        Ok(())
    }

    /// Asks the core to stop: its executor resolves [`super::shutdown_requested`].
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn remote_wake(&self, task: usize) {
        self.remote_wakes.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        self.notify();
    }

    /// Makes sure the core looks at its mailbox soon: if it was not already told, post a completion
    /// on its ring (from this thread's ring when it has one, else through the eventfd).
    fn notify(&self) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        let target = self.ring_fd.load(Ordering::Acquire);
        let sent = target >= 0
            && try_with_ring(|r| r.msg_ring(target, TOKEN_MAILBOX, TOKEN_WAKE_FAILED + self.index as u64))
                .is_some_and(|r| r.is_ok());
        if !sent {
            self.wake_by_eventfd();
        }
    }

    /// Wakes the core through its eventfd: from threads without a ring, and when a `MSG_RING`
    /// to it failed (the `notified` flag is already set, so no other sender would wake it).
    pub(crate) fn wake_by_eventfd(&self) {
        crate::sys::eventfd_signal(self.eventfd.as_raw_fd());
    }

    /// Called by the owning core once per loop turn: takes what arrived since the last turn.
    pub(crate) fn take_arrivals(&self, wakes: &mut Vec<usize>, msgs: &mut Vec<Message>) -> bool {
        if !self.notified.load(Ordering::SeqCst) {
            return false;
        }
        // Clear before draining: a sender that pushes after the drain sees `false` and notifies.
        self.notified.store(false, Ordering::SeqCst);
        wakes.append(&mut self.remote_wakes.lock().unwrap_or_else(|e| e.into_inner()));
        while let Some(m) = self.inbox.pop() {
            msgs.push(m);
        }
        true
    }
}
