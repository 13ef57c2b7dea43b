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
        let local = Executor::try_current().filter(|e| Arc::ptr_eq(&e.shared, &self.core));
        match local {
            Some(exec) => exec.schedule(self.task),
            None => self.core.remote_wake(self.task),
        }
    }
}

/// One core's executor. Lives in a thread-local while the core runs.
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

thread_local! {
    /// The clock as read once per loop turn, after the ring was entered (a plain cell, so that
    /// reading it costs a thread-local load, not a clock read nor a reference count).
    static TURN_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The clock of this thread's current loop turn; outside a runtime, the clock itself.
pub(crate) fn turn_now() -> Instant {
    TURN_NOW.with(|c| c.get()).unwrap_or_else(Instant::now)
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

impl Executor {
    pub(crate) fn new(shared: Arc<CoreShared>) -> Rc<Executor> {
        Rc::new(Executor {
            tasks: RefCell::new(Slab::with_capacity(1024)),
            run_queue: RefCell::new(VecDeque::with_capacity(1024)),
            shared,
            shutdown: Cell::new(false),
            shutdown_waiters: RefCell::new(Vec::new()),
            timers: RefCell::new(BTreeMap::new()),
            timer_seq: Cell::new(0),
        })
    }

    /// Reads the clock (once per loop turn) and wakes every timer that is due.
    pub(crate) fn advance_clock(&self) {
        let now = Instant::now();
        TURN_NOW.with(|c| c.set(Some(now)));
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

    pub(crate) fn enter(self: &Rc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        TURN_NOW.with(|c| c.set(Some(Instant::now())));
    }

    pub(crate) fn leave() {
        TURN_NOW.with(|c| c.set(None));
        let exec = CURRENT.with(|c| c.borrow_mut().take());
        if let Some(exec) = exec {
            exec.drop_all_tasks();
        }
    }

    /// This thread's executor, if it runs one.
    pub(crate) fn try_current() -> Option<Rc<Executor>> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
    }

    pub(crate) fn current() -> Rc<Executor> {
        Self::try_current().expect("no ringnode runtime on this thread")
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
    fn drop_all_tasks(&self) {
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
    Executor::current().spawn_boxed(Box::pin(async move {
        let v = future.await;
        let waker = {
            let mut s = st.borrow_mut();
            s.value = Some(v);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }));
    JoinHandle { state }
}

/// Spawns a task whose output nobody waits for: no join state is allocated.
pub fn spawn_detached<F>(future: F)
where
    F: Future<Output = ()> + 'static,
{
    Executor::current().spawn_boxed(Box::pin(future));
}

/// Resolves when this core has been asked to stop (SIGINT/SIGTERM or [`super::Handle::shutdown`]).
pub async fn shutdown_requested() {
    std::future::poll_fn(|cx| Executor::current().poll_shutdown(cx)).await
}

/// Index of the core this task runs on.
pub fn current_core() -> usize {
    Executor::current().shared.index
}

/// Whether this core has been asked to stop.
pub fn is_shutting_down() -> bool {
    Executor::current().is_shutting_down()
}
