//! The load generator: many connections spread over the cores, each a closed loop that sends a
//! payload (or `pipeline` payloads back to back), waits for all of it back, checks every byte, and
//! records each message's round trip in the core's histogram. Histograms are merged once, at the
//! end. Built so that open-loop pacing, other modes and reports can be added beside it.

mod conn;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::runtime::{self, RuntimeConfig, RuntimeError};

/// Highest latency the histograms track (one minute, in nanoseconds).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// How long the end of a run waits for replies still in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raw bytes, echoed back.
    Echo,
    /// Native frames (HELLO, then DATA frames echoed back).
    Framed,
}

/// A load run's settings.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// What each connection does.
    pub mode: Mode,
    /// The server.
    pub target: SocketAddr,
    /// Source addresses, used in turn by successive connections (empty: the kernel chooses).
    pub sources: Vec<IpAddr>,
    /// Connections opened per second over all cores (`None`: all at once).
    pub ramp: Option<f64>,
    /// Connections, spread round-robin over the cores.
    pub connections: usize,
    /// Payload size in bytes.
    pub size: usize,
    /// Payloads sent back to back before waiting for their echoes.
    pub pipeline: usize,
    /// How long to send.
    pub duration: Duration,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

/// Error counts by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Connections that could not be established.
    pub connect: u64,
    /// Connections reset (or otherwise failed) by the peer mid-run.
    pub reset: u64,
    /// Peers that closed the connection before echoing everything.
    pub closed: u64,
    /// Replies that did not arrive before the run's drain deadline.
    pub timeout: u64,
    /// Replies whose bytes differed from what was sent.
    pub mismatch: u64,
}

impl ErrorCounts {
    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.reset += o.reset;
        self.closed += o.closed;
        self.timeout += o.timeout;
        self.mismatch += o.mismatch;
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.closed + self.timeout + self.mismatch
    }
}

/// What one core (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Connections established.
    pub connected: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received back complete and correct.
    pub received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Round-trip latency per message, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Measured time (the longest of the cores).
    pub elapsed: Duration,
    /// CPU seconds used by each core's thread.
    pub core_cpu: Vec<f64>,
}

impl LoadResult {
    fn new() -> LoadResult {
        LoadResult {
            connected: 0,
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds"),
            errors: ErrorCounts::default(),
            elapsed: Duration::ZERO,
            core_cpu: Vec::new(),
        }
    }

    /// Adds another core's result: counts and histograms summed, the longer elapsed time kept.
    pub fn merge(&mut self, o: &LoadResult) {
        self.connected += o.connected;
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        // Same bounds on every core, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        self.errors.add(&o.errors);
        self.elapsed = self.elapsed.max(o.elapsed);
        self.core_cpu.extend_from_slice(&o.core_cpu);
    }

    /// Messages per second received.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs a load and returns the merged result.
pub fn run(config: LoadConfig) -> Result<LoadResult, RuntimeError> {
    let shared = std::sync::Arc::new(config.clone());
    let results = runtime::run(config.runtime, move |core| {
        let cfg = shared.clone();
        async move { core_main(core, cfg).await }
    })?;
    let mut total = LoadResult::new();
    for r in &results {
        total.merge(r);
    }
    Ok(total)
}

async fn core_main(core: runtime::CoreInfo, cfg: std::sync::Arc<LoadConfig>) -> LoadResult {
    let cpu0 = crate::sys::thread_cpu_seconds();
    let result = Rc::new(RefCell::new(LoadResult::new()));
    let ids: Vec<usize> = (core.index..cfg.connections).step_by(core.count).collect();
    // Connect everything first, so the measured window only holds traffic.
    let mut pending = Vec::with_capacity(ids.len());
    let ramp_start = Instant::now();
    for &id in &ids {
        let source = (!cfg.sources.is_empty()).then(|| cfg.sources[id % cfg.sources.len()]);
        // With a ramp, connection `id` (numbered over all cores) starts at id / rate seconds.
        let at = cfg.ramp.map(|rate| ramp_start + Duration::from_secs_f64(id as f64 / rate));
        pending.push(runtime::spawn(conn::connect(cfg.target, source, at)));
    }
    let mut streams = Vec::with_capacity(ids.len());
    for (p, &id) in pending.into_iter().zip(&ids) {
        match p.await {
            Ok(s) => streams.push((id, s)),
            Err(e) => {
                let mut r = result.borrow_mut();
                if r.errors.connect == 0 {
                    eprintln!("ringnode: connect failed: {e}");
                }
                r.errors.connect += 1;
            }
        }
    }
    result.borrow_mut().connected = streams.len() as u64;
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::with_capacity(streams.len());
    for (id, stream) in streams {
        let plan = conn::Plan {
            id,
            size: cfg.size,
            pipeline: cfg.pipeline,
            deadline,
            drain_deadline: deadline + DRAIN_TIMEOUT,
        };
        tasks.push(match cfg.mode {
            Mode::Echo => runtime::spawn(conn::closed_loop(stream, plan, result.clone())),
            Mode::Framed => runtime::spawn(conn::framed_loop(stream, plan, result.clone())),
        });
    }
    let stop = runtime::select(
        async {
            for t in tasks {
                t.await;
            }
        },
        runtime::shutdown_requested(),
    )
    .await;
    let mut r = result.borrow().clone();
    // The measured window is the sending window: the configured duration, or less when a signal
    // cut the run short (replies drained after the window belong to messages sent inside it).
    r.elapsed = match stop {
        runtime::Either::Left(()) => start.elapsed().min(cfg.duration),
        runtime::Either::Right(()) => start.elapsed(),
    };
    r.core_cpu = vec![crate::sys::thread_cpu_seconds() - cpu0];
    r
}
