//! The local executor of one core: `!Send` tasks in a slab, a run queue, wakers that stay local
//! when used on their own core and go through the mailbox when used on another thread.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use slab::Slab;

use super::core::Core;
use super::mailbox::CoreShared;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct TaskSlot {
    future: Option<LocalFuture>,
    scheduled: bool,
    waker: Waker,
}

struct TaskWaker {
    task: usize,
    core: Arc<CoreShared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let local = Core::try_with(|c| {
            let here = Arc::ptr_eq(&c.shared, &self.core);
            if here {
                c.exec.schedule(self.task);
            }
            here
        });
        if local != Some(true) {
            self.core.remote_wake(self.task);
        }
    }
}

/// One core's executor, owned by its [`Core`].
pub struct Executor {
    tasks: RefCell<Slab<TaskSlot>>,
    run_queue: RefCell<VecDeque<usize>>,
    pub(crate) shared: Arc<CoreShared>,
    shutdown: Cell<bool>,
    shutdown_waiters: RefCell<Vec<Waker>>,
    /// The core's timers in user space, by (deadline, sequence): the kernel is only ever asked to
    /// wake the core at the nearest one (the enter's timeout), never given a timeout per timer.
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    timer_seq: Cell<u64>,
}

impl Executor {
    pub(crate) fn new(shared: Arc<CoreShared>) -> Executor {
        Executor {
            tasks: RefCell::new(Slab::with_capacity(1024)),
            run_queue: RefCell::new(VecDeque::with_capacity(1024)),
            shared,
            shutdown: Cell::new(false),
            shutdown_waiters: RefCell::new(Vec::new()),
            timers: RefCell::new(BTreeMap::new()),
            timer_seq: Cell::new(0),
        }
    }

    /// Wakes every timer due at `now`.
    pub(crate) fn fire_timers(&self, now: Instant) {
        let mut timers = self.timers.borrow_mut();
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let waker = entry.remove();
            // Timers of this core wake tasks of this core: `wake` only schedules them.
            drop(timers);
            waker.wake();
            timers = self.timers.borrow_mut();
        }
    }

    /// The nearest timer deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.borrow().first_key_value().map(|(k, _)| k.0)
    }

    /// Registers (or refreshes the waker of) a timer; returns its key.
    pub(crate) fn set_timer(&self, key: Option<(Instant, u64)>, deadline: Instant, waker: &Waker) -> (Instant, u64) {
        let mut timers = self.timers.borrow_mut();
        if let Some(k) = key {
            if let Some(w) = timers.get_mut(&k) {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                return k;
            }
        }
        let seq = self.timer_seq.get();
        self.timer_seq.set(seq + 1);
        let k = (deadline, seq);
        timers.insert(k, waker.clone());
        k
    }

    /// Forgets a timer (its future was dropped or finished).
    pub(crate) fn cancel_timer(&self, key: (Instant, u64)) {
        self.timers.borrow_mut().remove(&key);
    }

    pub(crate) fn spawn_boxed(&self, future: LocalFuture) -> usize {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = entry.key();
        let waker = Waker::from(Arc::new(TaskWaker { task: id, core: self.shared.clone() }));
        entry.insert(TaskSlot { future: Some(future), scheduled: true, waker });
        self.run_queue.borrow_mut().push_back(id);
        id
    }

    pub(crate) fn schedule(&self, id: usize) {
        let mut tasks = self.tasks.borrow_mut();
        if let Some(slot) = tasks.get_mut(id) {
            if !slot.scheduled {
                slot.scheduled = true;
                self.run_queue.borrow_mut().push_back(id);
            }
        }
    }

    /// Polls ready tasks, at most `budget` of them. Returns whether more are ready.
    pub(crate) fn run_ready(&self, budget: usize) -> bool {
        for _ in 0..budget {
            let Some(id) = self.run_queue.borrow_mut().pop_front() else {
                return false;
            };
            let (future, waker) = {
                let mut tasks = self.tasks.borrow_mut();
                let Some(slot) = tasks.get_mut(id) else {
                    continue;
                };
                slot.scheduled = false;
                (slot.future.take(), slot.waker.clone())
            };
            let Some(mut future) = future else { continue };
            let mut cx = Context::from_waker(&waker);
            let done = future.as_mut().poll(&mut cx).is_ready();
            let mut tasks = self.tasks.borrow_mut();
            if done {
                tasks.remove(id);
                drop(tasks);
                drop(future);
            } else if let Some(slot) = tasks.get_mut(id) {
                slot.future = Some(future);
            }
        }
        !self.run_queue.borrow().is_empty()
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.run_queue.borrow().is_empty()
    }

    pub(crate) fn begin_shutdown(&self) {
        if !self.shutdown.replace(true) {
            for w in self.shutdown_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.shutdown_waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.get()
    }

    /// Drops every task (cancelling its operations) outside any borrow, since dropping a future
    /// may touch the executor again.
    pub(crate) fn drop_all_tasks(&self) {
        let futures: Vec<LocalFuture> = self.tasks.borrow_mut().drain().filter_map(|s| s.future).collect();
        drop(futures);
        self.run_queue.borrow_mut().clear();
        self.timers.borrow_mut().clear();
    }
}

/// Waits for a spawned task's output. Dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

struct JoinState<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut st = self.state.borrow_mut();
        match st.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.state.borrow().value.is_some()
    }
}

/// Spawns a task on this core.
///
/// # Panics
/// Outside the runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState { value: None, waker: None }));
    let st = state.clone();
    Core::with(|c| {
        c.exec.spawn_boxed(Box::pin(async move {
            let v = future.await;
            let waker = {
                let mut s = st.borrow_mut();
                s.value = Some(v);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }))
    });
    JoinHandle { state }
}

/// Spawns a task whose output nobody waits for: no join state is allocated.
pub fn spawn_detached<F>(future: F)
where
    F: Future<Output = ()> + 'static,
{
    Core::with(|c| c.exec.spawn_boxed(Box::pin(future)));
}

/// Resolves when this core has been asked to stop (SIGINT/SIGTERM or [`super::Handle::shutdown`]).
pub async fn shutdown_requested() {
    std::future::poll_fn(|cx| Core::with(|c| c.exec.poll_shutdown(cx))).await
}

/// Index of the core this task runs on.
pub fn current_core() -> usize {
    Core::with(|c| c.index())
}

/// Whether this core has been asked to stop.
pub fn is_shutting_down() -> bool {
    Core::with(|c| c.exec.is_shutting_down())
}
