//! One `Core` per runtime thread: its ring, its buffer groups, its executor and timers, the clock
//! of its loop turn, and the state services keep per core (their registries and counters). This is
//! the one thread-local of the crate: everything that needs "this core" — an operation finding its
//! ring, a receive finding its buffer group, a service finding its registry — asks [`Core::with`].
//!
//! A core is installed when its thread starts and torn down when its entry future returns: tasks
//! first (dropping them cancels their operations), then the ring (which waits for the kernel to
//! give back what it holds, returning buffers to the groups as it does), then the groups.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::executor::Executor;
use super::mailbox::CoreShared;
use crate::buf::{BufPool, Group, Groups, PoolConfig, PoolStats};
use crate::ring::{Completion, Discard, Ring};

thread_local! {
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// One core of the runtime: what its thread owns.
pub struct Core {
    pub(crate) shared: Arc<CoreShared>,
    count: usize,
    cpu: Option<usize>,
    /// `None` once torn down.
    ring: RefCell<Option<Ring>>,
    pub(crate) exec: Executor,
    /// The clock as read once per loop turn, after the ring was entered.
    now: Cell<Instant>,
    buffers: RefCell<Groups>,
    /// Per-service state, one value per type, made on first use.
    locals: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
}

impl Core {
    pub(crate) fn new(shared: Arc<CoreShared>, count: usize, cpu: Option<usize>, ring: Ring) -> Rc<Core> {
        Rc::new(Core {
            exec: Executor::new(shared.clone()),
            shared,
            count,
            cpu,
            ring: RefCell::new(Some(ring)),
            now: Cell::new(Instant::now()),
            buffers: RefCell::new(Groups::default()),
            locals: RefCell::new(Vec::new()),
        })
    }

    /// Makes `core` this thread's core.
    pub(crate) fn install(core: Rc<Core>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(core));
    }

    /// Ends this thread's core: drops its tasks, then its ring (waiting for the kernel to give
    /// back what it holds), then its buffer groups, then the core itself.
    pub(crate) fn teardown() {
        let Some(core) = CURRENT.with(|c| c.borrow().clone()) else { return };
        core.exec.drop_all_tasks();
        // Out of the cell before it drops: its drain hands unread buffers back to the groups.
        let ring = core.ring.borrow_mut().take();
        drop(ring);
        drop(std::mem::take(&mut *core.buffers.borrow_mut()));
        core.locals.borrow_mut().clear();
        CURRENT.with(|c| c.borrow_mut().take());
    }

    /// Runs `f` with this thread's core.
    ///
    /// # Panics
    /// Outside a core of the runtime.
    pub fn with<R>(f: impl FnOnce(&Core) -> R) -> R {
        CURRENT.with(|c| f(c.borrow().as_ref().expect("no ringnode core on this thread: run this inside the runtime")))
    }

    /// Runs `f` with this thread's core, if it is one (and not being installed or torn down).
    pub fn try_with<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
        CURRENT.try_with(|c| c.try_borrow().ok().and_then(|c| c.as_ref().map(|c| f(c)))).ok().flatten()
    }

    /// Index of this core in its runtime, `0..count`.
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// Cores in the runtime.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The CPU this core's thread is pinned to, if pinned.
    pub fn cpu(&self) -> Option<usize> {
        self.cpu
    }

    /// The clock of this loop turn.
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Reads the clock (once per loop turn) and wakes every timer that is due.
    pub(crate) fn advance_clock(&self) {
        let now = Instant::now();
        self.now.set(now);
        self.exec.fire_timers(now);
    }

    /// This core's value of `T` (made with `T::default()` on first use): where a service keeps
    /// its registry and counters for the core.
    pub fn local<T: Default + 'static>(&self) -> Rc<T> {
        let id = TypeId::of::<T>();
        if let Some((_, v)) = self.locals.borrow().iter().find(|(t, _)| *t == id) {
            return v.clone().downcast::<T>().expect("keyed by type");
        }
        let v = Rc::new(T::default());
        self.locals.borrow_mut().push((id, v.clone()));
        v
    }

    /// Runs `f` with the pool of buffer group `group`, registering it on first use.
    pub fn with_pool<R>(&self, group: Group, f: impl FnOnce(&mut BufPool) -> R) -> io::Result<R> {
        let mut groups = self.buffers.borrow_mut();
        if groups.get(group).is_none() {
            let mut ring = self.ring.borrow_mut();
            let ring = ring.as_mut().ok_or_else(|| io::Error::other("the core is stopping"))?;
            groups.register(group, ring)?;
        }
        Ok(f(groups.get(group).expect("registered above")))
    }

    /// Sets the layout of buffer group `group` before its first use (tests use tiny pools).
    pub fn configure_pool(&self, group: Group, cfg: PoolConfig) {
        self.buffers.borrow_mut().configure(group, cfg);
    }

    /// Counters of `group`'s pool, if it is registered.
    pub fn pool_stats(&self, group: Group) -> Option<PoolStats> {
        self.buffers.borrow().stats(group)
    }

    /// The pool buffer `b` is a slice of (start address and size), if it lies in one of this
    /// core's groups: keeping `b` alive keeps that whole buffer from the kernel.
    pub fn pool_buffer_of(&self, b: &[u8]) -> Option<(usize, usize)> {
        self.buffers.try_borrow().ok()?.buffer_of(b)
    }

    /// Gives buffers whose last lease dropped back to the kernel. Once per loop turn.
    pub(crate) fn recycle_buffers(&self) {
        if let Ok(mut g) = self.buffers.try_borrow_mut() {
            g.recycle();
        }
    }
}

/// Runs `f` with this thread's ring.
///
/// # Panics
/// When the thread is not a core of the runtime: operations only exist inside it.
pub(crate) fn with_ring<R>(f: impl FnOnce(&mut Ring) -> R) -> R {
    Core::with(|c| {
        let mut ring = c.ring.borrow_mut();
        f(ring.as_mut().expect("no io_uring on this thread: run this inside the ringnode runtime"))
    })
}

/// Runs `f` with this thread's ring if it has one that is not in use; `None` otherwise.
pub(crate) fn try_with_ring<R>(f: impl FnOnce(&mut Ring) -> R) -> Option<R> {
    Core::try_with(|c| c.ring.try_borrow_mut().ok().and_then(|mut r| r.as_mut().map(f))).flatten()
}

/// The discard function (see [`crate::ring::Discard`]) of a buffer group: gives the buffer of a
/// completion nobody reads back to this core's pool of that group.
pub(crate) fn discard_for(group: Group) -> Discard {
    fn stream(c: &Completion) {
        discard_into(Group::Stream, c);
    }
    fn datagram(c: &Completion) {
        discard_into(Group::Datagram, c);
    }
    fn small(c: &Completion) {
        discard_into(Group::Small, c);
    }
    match group {
        Group::Stream => stream,
        Group::Datagram => datagram,
        Group::Small => small,
    }
}

fn discard_into(group: Group, c: &Completion) {
    let returned = Core::try_with(|core| core.buffers.try_borrow_mut().map(|mut g| g.discard(group, c)).is_ok());
    if returned != Some(true) {
        // The groups are in use further up this stack (or gone): the buffer stays leased to the
        // kernel's side until the pool goes. Never seen in practice; said if it happens.
        tracing::debug!(?group, "a discarded receive buffer could not be returned to its pool");
    }
}

/// Convenience for tools and tests: this core's pool counters of `group`.
pub fn pool_stats(group: Group) -> Option<PoolStats> {
    Core::try_with(|c| c.pool_stats(group)).flatten()
}

/// What keeping `b` alive costs in receive memory: the size of the pool buffer it is a slice of,
/// or its own length when it is not in one of this core's pools.
pub fn pinned_size(b: &[u8]) -> usize {
    Core::try_with(|c| c.pool_buffer_of(b)).flatten().map_or(b.len(), |(_, size)| size)
}
