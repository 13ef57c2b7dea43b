//! Thread-per-core: one pinned thread per core, each with its ring and a local executor of `!Send`
//! tasks; its [`Core`] context; timers; typed mailboxes between cores; shutdown on SIGINT/SIGTERM.
//!
//! Knows nothing of what peers say. A core's loop turn is: poll ready tasks, take what other cores
//! sent, then one `io_uring_enter` (waiting only when no task is ready) and dispatch completions.

pub mod core;
mod executor;
mod mailbox;
mod placement;
mod time;

pub use self::core::Core;
pub use executor::{current_core, is_shutting_down, shutdown_requested, spawn, spawn_detached, JoinHandle};
pub use mailbox::{CoreShared, Mailboxes, Receiver, RecvBatch, MAILBOX_CAPACITY};
pub use placement::{fnv1a, Placement};
pub use time::{join, now, select, sleep, sleep_until, timeout, timeout_at, Either, Elapsed, Sleep};

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use mailbox::{TOKEN_MAILBOX, TOKEN_WAKE_FAILED};

use crate::ring::{ops, Ring, RingError, SetupMode, Wait};

/// Tasks polled per loop turn before the ring is entered again, so I/O is never starved.
const TASK_BUDGET: usize = 256;

/// A handle on every core of a running runtime: send them work, ask them to stop.
#[derive(Clone)]
pub struct Handle {
    cores: Arc<Vec<Arc<CoreShared>>>,
    signals: Arc<AtomicUsize>,
}

impl Handle {
    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// Asks every core to stop.
    pub fn shutdown(&self) {
        for c in self.cores.iter() {
            c.request_stop();
        }
    }

    /// How many SIGINT/SIGTERM the runtime received.
    pub fn signals_received(&self) -> usize {
        self.signals.load(Ordering::SeqCst)
    }
}

/// What a core's entry function learns about where it runs.
#[derive(Clone)]
pub struct CoreInfo {
    /// Index of this core in the runtime, `0..count`.
    pub index: usize,
    /// Number of cores in the runtime.
    pub count: usize,
    /// The CPU this core's thread is pinned to, if pinned.
    pub cpu: Option<usize>,
    /// The setup flags of this core's ring.
    pub mode: SetupMode,
    /// Handle on all cores.
    pub handle: Handle,
}

/// How a runtime is laid out.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// One core (thread + ring) per entry; `Some(cpu)` pins the thread to that CPU.
    pub cpus: Vec<Option<usize>>,
    /// Read SIGINT/SIGTERM on core 0 and turn them into a shutdown of every core.
    pub handle_signals: bool,
    /// Thread name prefix.
    pub name: String,
}

impl RuntimeConfig {
    /// `n` cores pinned to the first `n` CPUs of `cpus` (unpinned when `pin` is false).
    pub fn on_cpus(cpus: &[usize], pin: bool, name: &str) -> RuntimeConfig {
        RuntimeConfig {
            cpus: cpus.iter().map(|&c| pin.then_some(c)).collect(),
            handle_signals: false,
            name: name.into(),
        }
    }
}

/// Errors starting a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A core could not create its ring.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A thread, signalfd or eventfd could not be created.
    #[error("cannot start the runtime: {0}")]
    Io(#[from] std::io::Error),
    /// A core's thread panicked.
    #[error("core {0} panicked")]
    Panicked(usize),
    /// A core's ring failed (`io_uring_enter` returned an error that retrying cannot fix): that
    /// core stopped, and asked the others to stop.
    #[error("core {core}: io_uring_enter failed: {source}")]
    Enter {
        /// The core.
        core: usize,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// A runtime whose cores are running; [`Running::join`] waits for their results.
pub struct Running<R> {
    handle: Handle,
    threads: Vec<std::thread::JoinHandle<Option<Result<R, RuntimeError>>>>,
}

impl<R> Running<R> {
    /// The handle on its cores.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether every core's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for every core's entry future to finish and returns their outputs in core order.
    pub fn join(self) -> Result<Vec<R>, RuntimeError> {
        let mut out = Vec::with_capacity(self.threads.len());
        for (i, t) in self.threads.into_iter().enumerate() {
            out.push(t.join().ok().flatten().ok_or(RuntimeError::Panicked(i))??);
        }
        Ok(out)
    }
}

/// Starts one thread per core and runs `entry(core)` on each. Returns once every ring exists (or
/// with the first core's error, after stopping the others).
pub fn start<F, Fut, R>(config: RuntimeConfig, entry: F) -> Result<Running<R>, RuntimeError>
where
    F: Fn(CoreInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let shared: Vec<Arc<CoreShared>> =
        (0..config.cpus.len()).map(|i| CoreShared::new(i).map(Arc::new)).collect::<Result<_, _>>()?;
    let handle = Handle { cores: Arc::new(shared), signals: Arc::new(AtomicUsize::new(0)) };
    let signalfd = if config.handle_signals {
        crate::sys::block_stop_signals();
        Some(crate::sys::stop_signalfd()?)
    } else {
        None
    };
    let mut signalfd = signalfd.map(Rc::new);
    let entry = Arc::new(entry);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), RingError>>();
    let mut threads = Vec::new();
    for (index, &cpu) in config.cpus.iter().enumerate() {
        let handle_c = handle.clone();
        let entry = entry.clone();
        let ready = ready_tx.clone();
        // The signalfd goes to core 0 only. Rc is not Send, so hand over the raw OwnedFd.
        let sigfd = if index == 0 { signalfd.take().and_then(|r| Rc::try_unwrap(r).ok()) } else { None };
        let count = config.cpus.len();
        let t = std::thread::Builder::new().name(format!("{}-{index}", config.name)).spawn(move || {
            if let Some(cpu) = cpu {
                // Pinning can fail inside a restricted cpuset; the core then runs unpinned.
                let _ = crate::sys::pin_current_thread(cpu);
            }
            let ring = match Ring::new() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    // Nothing else to run; the caller reports the error.
                    return None;
                }
            };
            let mode = ring.mode();
            let shared = handle_c.cores[index].clone();
            shared.set_ring_fd(ring.fd());
            let core = Core::new(shared, count, cpu, ring);
            Core::install(core.clone());
            let _ = ready.send(Ok(()));
            drop(ready);
            let info = CoreInfo { index, count, cpu, mode, handle: handle_c.clone() };
            let out = run_core(&core, &handle_c, sigfd, entry(info));
            Some(out)
        })?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut first_err = None;
    for _ in 0..config.cpus.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => break,
        }
    }
    if let Some(e) = first_err {
        handle.shutdown();
        for t in threads {
            let _ = t.join();
        }
        return Err(e.into());
    }
    Ok(Running { handle, threads })
}

/// [`start`] and then [`Running::join`].
pub fn run<F, Fut, R>(config: RuntimeConfig, entry: F) -> Result<Vec<R>, RuntimeError>
where
    F: Fn(CoreInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    start(config, entry)?.join()
}

/// Watches the eventfd through which threads without a ring wake this core.
async fn watch_eventfd(fd: ops::SharedFd) {
    let mut buf = Vec::with_capacity(8);
    loop {
        buf.clear();
        let (c, (_, b)) = ops::read(fd.clone(), buf).await;
        buf = b;
        if c.result() < 0 && c.result() != -libc::EAGAIN && c.result() != -libc::EINTR {
            return;
        }
    }
}

/// Reads SIGINT/SIGTERM and asks every core to stop. A second signal ends the process at once.
async fn watch_signals(fd: ops::SharedFd, handle: Handle) {
    let mut buf = Vec::with_capacity(crate::sys::SIGINFO_SIZE);
    loop {
        buf.clear();
        let (c, (_, b)) = ops::read(fd.clone(), buf).await;
        buf = b;
        if c.result() == -libc::EAGAIN || c.result() == -libc::EINTR {
            continue;
        }
        if c.result() <= 0 {
            return;
        }
        if handle.signals.fetch_add(1, Ordering::SeqCst) >= 1 {
            tracing::warn!("second signal, exiting without draining");
            std::process::exit(130);
        }
        handle.shutdown();
    }
}

fn run_core<Fut: Future + 'static>(
    core: &Core,
    handle: &Handle,
    sigfd: Option<std::os::fd::OwnedFd>,
    main: Fut,
) -> Result<Fut::Output, RuntimeError> {
    let shared = &core.shared;
    let exec = &core.exec;
    // The eventfd is shared with other threads through CoreShared; duplicate it for the ring.
    if let Ok(efd) = shared.eventfd().try_clone() {
        spawn(watch_eventfd(Rc::new(efd)));
    }
    if let Some(fd) = sigfd {
        spawn(watch_signals(Rc::new(fd), handle.clone()));
    }
    let main = spawn(main);
    let mut wakes = Vec::new();
    let mut failed_wakes = Vec::new();
    let mut tokens = Vec::new();
    let mut failure = None;
    loop {
        exec.run_ready(TASK_BUDGET);
        if main.is_finished() {
            break;
        }
        if shared.take_arrivals(&mut wakes) {
            for id in wakes.drain(..) {
                exec.schedule(id);
            }
            if shared.stop_requested() {
                exec.begin_shutdown();
            }
        }
        core.recycle_buffers();
        // Wait only when nothing is ready, and then only until the nearest timer.
        let wait = if exec.has_ready() {
            Wait::No
        } else {
            match exec.next_deadline() {
                None => Wait::Forever,
                Some(t) => match t.checked_duration_since(std::time::Instant::now()) {
                    Some(d) if !d.is_zero() => Wait::For(d),
                    _ => Wait::No,
                },
            }
        };
        let entered = core::with_ring(|r| {
            let e = r.enter(wait);
            r.reap();
            r.take_reserved(&mut tokens);
            e
        });
        // TOKEN_MAILBOX needs nothing here: the doorbell is looked at every turn. A failed
        // MSG_RING to core i comes back as TOKEN_WAKE_FAILED + i, from whichever reap saw it.
        for t in tokens.drain(..) {
            if t > TOKEN_MAILBOX && t - TOKEN_WAKE_FAILED < (1 << 19) {
                failed_wakes.push((t - TOKEN_WAKE_FAILED) as usize);
            }
        }
        core.advance_clock();
        for core in failed_wakes.drain(..) {
            if let Some(c) = handle.cores.get(core) {
                c.wake_by_eventfd();
            }
        }
        if let Err(e) = entered {
            // The ring itself failed: nothing on this core can make progress. Stop it, and ask
            // the others to stop too. The error is returned to whoever started the runtime, who
            // reports it once (the tools: one line, exit 1); here it is only a debug event.
            tracing::debug!(core = shared.index, error = %e, "io_uring_enter failed; stopping");
            failure = Some(RuntimeError::Enter { core: shared.index, source: e });
            handle.shutdown();
            break;
        }
    }
    let out = if let Some(e) = failure {
        Err(e)
    } else {
        let mut main = main;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(&mut main).poll(&mut cx) {
            std::task::Poll::Ready(v) => Ok(v),
            std::task::Poll::Pending => unreachable!("main finished"),
        }
    };
    // Dropping the ring cancels what is still in flight and waits for the kernel to give it
    // back; what it does not give back is leaked with the ring, and the pools' memory with it
    // (the ring holds a reference to it). Only then do the pools go.
    Core::teardown();
    out
}
