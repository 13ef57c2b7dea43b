//! `ringnode perf`: network throughput tests that speak iperf3's protocol, so that a ringnode
//! client tests against a stock `iperf3 -s` and a stock `iperf3 -c` tests against a ringnode
//! server; and past iperf3: a server that runs many tests at once (each isolated by its control
//! connection, tests spread over the cores), latency under load, and UDP sent many datagrams per
//! ring enter or with segmentation offload.
//!
//! - [`proto`]: the control protocol, sans-IO (cookie, states, parameters and results as JSON).
//! - [`udp`]: the UDP datagram header, loss/order/jitter and pacing, sans-IO.
//! - [`streams`]: a test's data streams on one core.
//! - [`report`]: intervals and summaries, as iperf3's text, iperf3's JSON and JSON lines.
//! - [`server`] and [`client`]: the two drivers on the ring.

pub mod client;
pub mod proto;
pub mod report;
pub mod server;
pub mod streams;
pub mod udp;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

pub use client::{run_client, ClientConfig, ClientError, ClientOutcome, OutputFormat};
pub use server::{PerfServer, ServerLimits, ServerOptions};

/// A one-way flag tasks on one core wait for: a [`Signal`] notified once.
#[derive(Clone, Default)]
pub struct Flag(Signal);

impl Flag {
    /// An unset flag.
    pub fn new() -> Flag {
        Flag::default()
    }

    /// Sets it and wakes every waiter.
    pub fn set(&self) {
        if !self.is_set() {
            self.0.notify();
        }
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.0.count() > 0
    }

    /// Resolves once it is set.
    pub async fn wait(&self) {
        self.0.changed(0).await
    }
}

/// CPU use of the core a test runs on between two points, as iperf3 reports it (percent of one
/// CPU's time over the wall time: total, user, system). The core's thread, not the process: a
/// server runs other tests on its other cores (tests placed on the same core are included).
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    wall: std::time::Instant,
    user: f64,
    system: f64,
}

impl CpuMark {
    /// Now.
    pub fn now() -> CpuMark {
        let (user, system) = crate::sys::thread_cpu_split();
        CpuMark { wall: std::time::Instant::now(), user, system }
    }

    /// Percent of CPU since `self`: total, user, system.
    pub fn percent_since(&self) -> [f64; 3] {
        let now = CpuMark::now();
        let wall = now.wall.duration_since(self.wall).as_secs_f64().max(1e-9);
        let u = 100.0 * (now.user - self.user) / wall;
        let s = 100.0 * (now.system - self.system) / wall;
        [u + s, u, s]
    }
}

/// A repeating notification on one core: waiters wake at each [`Signal::notify`].
#[derive(Clone, Default)]
pub struct Signal(Rc<SignalInner>);

#[derive(Default)]
struct SignalInner {
    count: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every waiter.
    pub fn notify(&self) {
        self.0.count.set(self.0.count.get() + 1);
        for w in self.0.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Notifications so far.
    pub fn count(&self) -> u64 {
        self.0.count.get()
    }

    /// Resolves once the count passes `seen`.
    pub async fn changed(&self, seen: u64) {
        std::future::poll_fn(|cx| {
            if self.0.count.get() != seen {
                Poll::Ready(())
            } else {
                let mut w = self.0.waiters.borrow_mut();
                if !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// Control bytes read by a task of their own, so that the test loop can wait on them and on its
/// clock at once without losing a receive.
pub(crate) struct ControlInput {
    pub(crate) bytes: RefCell<Vec<u8>>,
    pub(crate) eof: std::cell::Cell<bool>,
    pub(crate) signal: Signal,
    /// Set to stop the reader (it lets go of the socket).
    pub(crate) stop: Flag,
}

pub(crate) fn spawn_control_reader(
    stream: &crate::net::TcpStream,
) -> (Rc<ControlInput>, crate::runtime::JoinHandle<()>) {
    let input = Rc::new(ControlInput {
        bytes: RefCell::new(Vec::new()),
        eof: std::cell::Cell::new(false),
        signal: Signal::default(),
        stop: Flag::new(),
    });
    let mut rx = stream.recv_stream();
    let inp = input.clone();
    let h = crate::runtime::spawn(async move {
        loop {
            let next = match crate::runtime::select(rx.next(), inp.stop.wait()).await {
                crate::runtime::Either::Left(n) => n,
                crate::runtime::Either::Right(()) => break,
            };
            match next {
                // A peer that sends more than any message the protocol has is cut off.
                Some(Ok(chunk)) if inp.bytes.borrow().len() + chunk.len() <= proto::MAX_RESULTS_JSON + 64 * 1024 => {
                    inp.bytes.borrow_mut().extend_from_slice(&chunk)
                }
                _ => {
                    inp.eof.set(true);
                    inp.signal.notify();
                    break;
                }
            }
            inp.signal.notify();
        }
    });
    (input, h)
}
