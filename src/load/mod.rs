//! The load generator. Connections are spread over the cores; each runs one of the modes, each in
//! its file: request/response (`echo`, `framed`, `http`: closed loop by default, open loop with a
//! rate), `stream` (one way, the server sinks) or `connect` (open, optionally one exchange, close).
//! One schedule (`schedule`) says when requests are due in every mode, one recorder (`recorder`)
//! puts every reply, send and connection into the counts and histograms; `summary` is what the
//! tool says about a run.
//! Latency is recorded in per-core HdrHistograms, merged once at the end; every second each core
//! hands its interval counts to the main thread, which prints a progress line and writes the
//! interval log.
//!
//! Open loop: each connection sends on a fixed schedule whether or not replies are outstanding (up
//! to `max_inflight`), and a reply's latency is measured from the time its request was *meant* to go
//! out. A server that stalls therefore shows in the percentiles, where a closed loop (which simply
//! stops sending while it waits) hides it: that is the coordinated-omission correction. The
//! uncorrected latency (from the actual send) is kept beside it.

mod conn;
mod connect;
mod recorder;
mod reply;
mod request;
mod request_response;
mod schedule;
pub mod slo;
mod stream;
pub mod summary;

pub use reply::{Reply, ReplyError, ReplyParser};
pub use request::http_request;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::runtime::{self, RuntimeConfig, RuntimeError};

/// Highest latency the histograms track (one minute, in nanoseconds).
pub use crate::report::MAX_LATENCY_NS;
/// How long the end of a run waits for replies still in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long after the window an open loop still sends what fell due inside it (see
/// `CoreRun::may_send_due`); the window's length for the rates then runs to the last such send.
pub(crate) const LATE_SEND_GRACE: Duration = Duration::from_millis(20);
/// How long one connection attempt may take before it counts as a failed (timed-out) connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Request/response over raw bytes (by default the echo of what was sent, checked).
    Echo,
    /// One-way: send as fast as allowed; whatever comes back is read and discarded.
    Stream,
    /// Native frames (HELLO, then DATA frames echoed back).
    Framed,
    /// Connect, optionally exchange one message, close; repeat.
    Connect,
    /// HTTP/1.1 keep-alive requests.
    Http,
}

/// How a reply is recognised in `echo` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyRule {
    /// The echo of the request, compared byte for byte.
    Echo,
    /// Every N bytes are one reply.
    Bytes(usize),
    /// A reply ends with this delimiter.
    Delimiter(Vec<u8>),
}

/// Open-loop rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages (or connections, in `connect` mode) per second over the whole run.
    Total(f64),
    /// Per connection.
    PerConnection(f64),
}

/// Which part of a test one process runs (`--segment i/n`): connection `id` of the whole test
/// belongs to segment `id % count`. Each connection keeps its place in the whole test (its share
/// of the rate, its offset in the schedule, its place on the ramp, its share of `--messages`), so
/// the segments together are exactly the test one process would have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// From 0.
    pub index: usize,
    /// How many segments in all.
    pub count: usize,
}

impl Segment {
    /// The whole test.
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// Whether connection `id` of the whole test is this segment's.
    pub fn owns(&self, id: usize) -> bool {
        id % self.count == self.index
    }
}

impl std::fmt::Display for Segment {
    /// As written on the command line: `1/4` is the first of four.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

/// The HTTP request of `http` mode.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
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
    /// Connections (in `connect` mode: how many connect at once).
    pub connections: usize,
    /// Payload size range in bytes, inclusive (`min == max` for a fixed size).
    pub size: (usize, usize),
    /// A fixed payload instead of generated ones.
    pub payload: Option<Bytes>,
    /// How replies are recognised (`echo` mode).
    pub reply: ReplyRule,
    /// Closed loop: requests sent back to back before waiting for their replies.
    pub pipeline: usize,
    /// Open loop when set.
    pub rate: Option<Rate>,
    /// Open loop: most requests outstanding per connection; the schedule waits beyond that (and
    /// the wait shows in the corrected latency).
    pub max_inflight: usize,
    /// Run this long before measuring; excluded from the results.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Stop after this many messages instead (the duration is then an upper bound).
    pub messages: Option<u64>,
    /// A reply later than this after its request went is a timeout (counted, and recorded with
    /// its wait so far).
    pub timeout: Option<Duration>,
    /// The request of `http` mode.
    pub http: HttpRequest,
    /// Stop at the first error.
    pub fail_fast: bool,
    /// Print a progress line every second (to standard error).
    pub progress: bool,
    /// Write an HdrHistogram interval log here.
    pub hdr_log: Option<PathBuf>,
    /// The part of the test this process runs.
    pub segment: Segment,
    /// Start traffic at this wall-clock time (after the connections are up), so that segments on
    /// several machines start together; the interval log's clock counts from it.
    pub start_at: Option<SystemTime>,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

impl LoadConfig {
    /// A closed-loop run of `mode` against `target` with the defaults: 64 connections, 64 B,
    /// 5 s, on one unpinned core.
    pub fn new(mode: Mode, target: SocketAddr) -> LoadConfig {
        LoadConfig {
            mode,
            target,
            sources: Vec::new(),
            ramp: None,
            connections: 64,
            size: (64, 64),
            payload: None,
            reply: ReplyRule::Echo,
            pipeline: 1,
            rate: None,
            max_inflight: 1024,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(5),
            messages: None,
            timeout: None,
            http: HttpRequest { method: "GET".into(), path: "/".into(), ..HttpRequest::default() },
            fail_fast: false,
            progress: false,
            hdr_log: None,
            segment: Segment::WHOLE,
            start_at: None,
            runtime: RuntimeConfig::on_cpus(&[0], false, "load"),
        }
    }

    /// The requested open-loop rate of the whole test (every segment), if any.
    pub fn total_rate(&self) -> Option<f64> {
        self.rate.map(|r| match r {
            Rate::Total(t) => t,
            Rate::PerConnection(p) => p * self.connections as f64,
        })
    }

    /// The connections of the whole test that this process runs.
    pub fn own_ids(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.connections).filter(|&id| self.segment.owns(id))
    }

    /// How many connections this process runs.
    pub fn own_connections(&self) -> usize {
        self.own_ids().count()
    }

    /// This process's share of the open-loop rate.
    pub fn own_rate(&self) -> Option<f64> {
        self.total_rate().map(|t| t * self.own_connections() as f64 / self.connections.max(1) as f64)
    }

    /// Connection `id`'s share of a `--messages` budget: the shares of all connections add up to
    /// exactly `m`.
    fn budget_of(&self, m: u64, id: usize) -> u64 {
        let upto = |n: usize| (u128::from(m) * n as u128 / self.connections.max(1) as u128) as u64;
        upto(id + 1) - upto(id)
    }
}

/// The zero of a run's interval clock, in wall-clock time: `--start-at` if it is still ahead;
/// if it has passed, the last whole second after it (so that a segment that starts late keeps
/// the others' second boundaries); otherwise now.
pub fn clock_origin(start_at: Option<SystemTime>, now: SystemTime) -> SystemTime {
    match start_at {
        None => now,
        Some(t) => match now.duration_since(t) {
            Err(_) => t,
            Ok(late) => t + Duration::from_secs(late.as_secs()),
        },
    }
}

/// The monotonic instant of wall-clock time `t`, read against `now` (which are taken together).
fn instant_of(t: SystemTime, now_wall: SystemTime, now: Instant) -> Instant {
    match t.duration_since(now_wall) {
        Ok(ahead) => now + ahead,
        Err(e) => now.checked_sub(e.duration()).unwrap_or(now),
    }
}

/// Error counts by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Connections that could not be established.
    pub connect: u64,
    /// Of those, refused by the server (nothing listening).
    pub refused: u64,
    /// Connections reset (or otherwise failed) by the peer mid-run.
    pub reset: u64,
    /// Peers that closed the connection while replies were outstanding (short reads).
    pub closed: u64,
    /// Replies that did not arrive before the drain deadline.
    pub timeout: u64,
    /// Replies whose bytes differed from what was sent.
    pub mismatch: u64,
    /// Replies that were not of the expected form (bad HTTP, bad frames).
    pub malformed: u64,
}

impl ErrorCounts {
    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.refused += o.refused;
        self.reset += o.reset;
        self.closed += o.closed;
        self.timeout += o.timeout;
        self.mismatch += o.mismatch;
        self.malformed += o.malformed;
    }

    /// All errors (refusals are already among the connect errors).
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.closed + self.timeout + self.mismatch + self.malformed
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// What one core (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Connections established (in `connect` mode: connections opened in all).
    pub connected: u64,
    /// Messages sent, warm-up included (what the server saw).
    pub sent: u64,
    /// Replies received complete and correct, warm-up included.
    pub received: u64,
    /// Bytes sent, warm-up included.
    pub bytes_sent: u64,
    /// Bytes received, warm-up included.
    pub bytes_received: u64,
    /// Replies inside the measured window.
    pub measured: u64,
    /// Bytes sent inside the measured window (the rate of `stream` mode).
    pub measured_bytes_sent: u64,
    /// Messages sent inside the measured window.
    pub measured_sent: u64,
    /// Bytes received inside the measured window (by arrival time).
    pub measured_bytes_received: u64,
    /// Latency per reply from the intended send time (equals the actual send time in a closed
    /// loop), in nanoseconds, measured window only.
    pub latency: Histogram<u64>,
    /// Latency from the actual send time.
    pub uncorrected: Histogram<u64>,
    /// Connect latency (`connect` mode, and the set-up of every other mode).
    pub connect_latency: Histogram<u64>,
    /// How late the generator sent relative to its schedule (open loop), in nanoseconds.
    pub schedule_lag: Histogram<u64>,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Requests that fell due in the measured window and never went (open loop).
    pub unsent: u64,
    /// Requests that fell due in the warm-up and had not gone when the window opened: dropped
    /// then (open loop), so that the warm-up's backlog does not take the window.
    pub warmup_dropped: u64,
    /// Due requests that waited for `--max-inflight`.
    pub held: u64,
    /// Requests cut by a failed send.
    pub cut: u64,
    /// The smallest wait recorded for a request without a counted answer (timed out,
    /// unanswered, unsent): percentiles from it up are lower bounds.
    pub censored_min: Option<u64>,
    /// How many such requests are in the latency distribution.
    pub censored: u64,
    /// Sends submitted (request/response modes, warm-up included).
    pub sends: u64,
    /// Receive completions that brought bytes (request/response modes, warm-up included).
    pub receives: u64,
    /// Connections the server closed cleanly that were opened again, and the time that took.
    pub reconnects: u64,
    /// Time spent reconnecting.
    pub reconnect_time: Duration,
    /// HTTP status codes.
    pub status: BTreeMap<u16, u64>,
    /// When the first connect failure happened, after the start (`connect` mode).
    pub first_failure: Option<Duration>,
    /// Connections opened before the first failure.
    pub opened_before_failure: u64,
    /// Measured time (the longest of the cores).
    pub elapsed: Duration,
    /// How long opening the connections took before traffic started (the longest of the cores).
    pub connect_phase: Duration,
    /// How long after `--start-at` traffic started (the connections took longer, or the process
    /// was started late); `None` without `--start-at`.
    pub start_late: Option<Duration>,
    /// When the measured window opened, after the interval clock's zero ([`clock_origin`]).
    pub window_start: Duration,
    /// When the measured window opened (the earliest of the cores).
    measure_start: Option<Instant>,
    /// A signal (Ctrl-C) or `--fail-fast` ended the run before its time.
    pub interrupted: bool,
    /// CPU seconds used by each core's thread over the whole run.
    pub core_cpu: Vec<f64>,
    /// Wall time of the whole run per core (for CPU use).
    pub core_wall: Vec<f64>,
}

impl LoadResult {
    fn new() -> LoadResult {
        LoadResult {
            connected: 0,
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            measured: 0,
            measured_bytes_sent: 0,
            measured_sent: 0,
            measured_bytes_received: 0,
            latency: histogram(),
            uncorrected: histogram(),
            connect_latency: histogram(),
            schedule_lag: histogram(),
            errors: ErrorCounts::default(),
            unsent: 0,
            warmup_dropped: 0,
            held: 0,
            cut: 0,
            censored_min: None,
            censored: 0,
            sends: 0,
            receives: 0,
            reconnects: 0,
            reconnect_time: Duration::ZERO,
            status: BTreeMap::new(),
            first_failure: None,
            opened_before_failure: 0,
            elapsed: Duration::ZERO,
            connect_phase: Duration::ZERO,
            start_late: None,
            window_start: Duration::ZERO,
            measure_start: None,
            interrupted: false,
            core_cpu: Vec::new(),
            core_wall: Vec::new(),
        }
    }

    /// Adds another core's result: counts and histograms summed (never percentiles averaged),
    /// the longer elapsed time kept.
    pub fn merge(&mut self, o: &LoadResult) {
        self.connected += o.connected;
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.measured += o.measured;
        self.measured_bytes_sent += o.measured_bytes_sent;
        self.measured_sent += o.measured_sent;
        self.measured_bytes_received += o.measured_bytes_received;
        // Same bounds on every core, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.uncorrected.add(&o.uncorrected);
        let _ = self.connect_latency.add(&o.connect_latency);
        let _ = self.schedule_lag.add(&o.schedule_lag);
        self.errors.add(&o.errors);
        self.unsent += o.unsent;
        self.warmup_dropped += o.warmup_dropped;
        self.held += o.held;
        self.cut += o.cut;
        self.censored_min = match (self.censored_min, o.censored_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.censored += o.censored;
        self.sends += o.sends;
        self.receives += o.receives;
        self.reconnects += o.reconnects;
        self.reconnect_time += o.reconnect_time;
        for (k, v) in &o.status {
            *self.status.entry(*k).or_default() += v;
        }
        self.first_failure = match (self.first_failure, o.first_failure) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.opened_before_failure += o.opened_before_failure;
        self.elapsed = self.elapsed.max(o.elapsed);
        self.connect_phase = self.connect_phase.max(o.connect_phase);
        self.start_late = self.start_late.max(o.start_late);
        self.interrupted |= o.interrupted;
        self.measure_start = match (self.measure_start, o.measure_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.core_cpu.extend_from_slice(&o.core_cpu);
        self.core_wall.extend_from_slice(&o.core_wall);
    }

    /// Replies per second in the measured window.
    pub fn rate(&self) -> f64 {
        self.measured as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Messages sent per second in the measured window.
    pub fn send_rate(&self) -> f64 {
        self.measured_sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One second of one core, handed to the main thread for the progress line and the log.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Replies.
    pub replies: u64,
    /// Bytes received and sent.
    pub bytes: u64,
    /// Errors.
    pub errors: u64,
    /// Connections up at the end of the interval (all cores).
    pub connections: u64,
    /// Latency of the interval's replies (corrected), measured window only.
    pub latency: Histogram<u64>,
}

impl Interval {
    fn new() -> Interval {
        Interval { replies: 0, bytes: 0, errors: 0, connections: 0, latency: histogram() }
    }

    fn absorb(&mut self, o: &Interval) {
        self.replies += o.replies;
        self.bytes += o.bytes;
        self.errors += o.errors;
        let _ = self.latency.add(&o.latency);
    }
}

/// Where the cores leave their intervals for the main thread.
#[derive(Default)]
pub(crate) struct IntervalBoard {
    slots: Mutex<Vec<Interval>>,
    /// Connections up over all cores.
    up: AtomicU64,
}

/// Called by the main thread once per interval while the run goes on, and once more for the last
/// partial one: (time since the start at the end of the interval, its length, its counts).
pub type OnInterval<'a> = &'a mut dyn FnMut(Duration, Duration, &Interval);

/// Runs a load and returns the merged result. `on_interval` is called about once a second with the
/// merged interval of all cores.
pub fn run(config: LoadConfig, on_interval: OnInterval<'_>) -> Result<LoadResult, RuntimeError> {
    let origin = clock_origin(config.start_at, SystemTime::now());
    run_from(config, origin, on_interval)
}

/// [`run`] with the interval clock's zero at `origin` (from [`clock_origin`]): the times given
/// to `on_interval` count from it, in whole seconds.
pub fn run_from(
    config: LoadConfig,
    origin: SystemTime,
    on_interval: OnInterval<'_>,
) -> Result<LoadResult, RuntimeError> {
    let (now_wall, now) = (SystemTime::now(), Instant::now());
    let t0 = instant_of(origin, now_wall, now);
    let traffic_at = config.start_at.map(|t| instant_of(t, now_wall, now));
    let shared = Arc::new(config.clone());
    let board = Arc::new(IntervalBoard::default());
    let b = board.clone();
    let running = runtime::start(config.runtime, move |core| {
        let cfg = shared.clone();
        let board = b.clone();
        async move { core_main(core, cfg, board, traffic_at).await }
    })?;
    let second = Duration::from_secs(1);
    let mut next = t0 + second;
    while !running.is_finished() {
        std::thread::sleep(Duration::from_millis(20).min(next.saturating_duration_since(Instant::now())));
        if Instant::now() >= next {
            let mut iv = take_interval(&board);
            iv.connections = board.up.load(Ordering::Relaxed);
            on_interval(next - t0, second, &iv);
            next += second;
        }
    }
    // What the cores counted after the last whole second.
    let last = take_interval(&board);
    if last.replies > 0 || last.bytes > 0 || last.errors > 0 {
        let end = t0.elapsed();
        on_interval(end, end.saturating_sub(next - t0 - second), &last);
    }
    let results = running.join()?;
    let mut total = LoadResult::new();
    for r in &results {
        total.merge(r);
    }
    total.window_start = total.measure_start.map_or(Duration::ZERO, |m| m.saturating_duration_since(t0));
    Ok(total)
}

fn take_interval(board: &IntervalBoard) -> Interval {
    let mut merged = Interval::new();
    let mut slots = board.slots.lock().unwrap_or_else(|e| e.into_inner());
    for s in slots.drain(..) {
        merged.absorb(&s);
    }
    merged
}

/// One core's running state, shared by its connection tasks.
pub(crate) struct CoreRun {
    pub cfg: Arc<LoadConfig>,
    pub result: RefCell<LoadResult>,
    pub interval: RefCell<Interval>,
    /// When the core started (the ramp counts from here).
    pub created: Instant,
    /// When traffic starts (after the connections are up), the measured window opens (after the
    /// warm-up) and closes.
    pub start: std::cell::Cell<Instant>,
    pub measure_start: std::cell::Cell<Instant>,
    pub deadline: std::cell::Cell<Instant>,
    /// The first connect error was printed.
    pub said_connect_error: std::cell::Cell<bool>,
    /// Whether this core has logged a server's CLOSE reason yet.
    pub said_server_close: std::cell::Cell<bool>,
    /// Messages this core may still send (`--messages`).
    pub budget: std::cell::Cell<Option<u64>>,
    pub up: std::cell::Cell<u64>,
    /// What `up` was when the board was last told.
    pub published_up: std::cell::Cell<u64>,
    /// Set by `--fail-fast` at the first error.
    pub failed: std::cell::Cell<bool>,
    /// The last send after the deadline (within `LATE_SEND_GRACE`) of a request due before it.
    pub sent_late_until: std::cell::Cell<Instant>,
}

impl CoreRun {
    /// Whether sending is over at `now`: the window ended, the run failed, or a signal came (the
    /// budget is not consulted).
    pub fn over(&self, now: Instant) -> bool {
        self.failed.get() || runtime::is_shutting_down() || now >= self.deadline.get()
    }

    /// Takes one message from the budget at `now` (the loop turn's clock); false when the run
    /// should stop sending.
    pub fn may_send_at(&self, now: Instant) -> bool {
        if self.over(now) {
            return false;
        }
        match self.budget.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.budget.set(Some(n - 1));
                true
            }
        }
    }

    /// Open loop: whether a request that fell due at `due` may still go at `now`. One due inside
    /// the window may go up to [`LATE_SEND_GRACE`] after it ended: a loop turn that woke just
    /// past the deadline sends what fell due just before it (late, its wait measured from `due`),
    /// as it would have a moment earlier, instead of reporting a healthy run's last ticks as never
    /// sent. An overloaded generator's backlog beyond the grace stays unsent.
    pub fn may_send_due(&self, due: Instant, now: Instant) -> bool {
        let deadline = self.deadline.get();
        if due >= deadline || now >= deadline + LATE_SEND_GRACE {
            return false;
        }
        if !self.may_send_at(now.min(deadline - Duration::from_nanos(1))) {
            return false;
        }
        if now >= deadline && now > self.sent_late_until.get() {
            // The rates divide by a window that runs to here: a generator behind its schedule
            // does not gain the grace's sends for free.
            self.sent_late_until.set(now);
        }
        true
    }

    /// Counts an error; with `--fail-fast` the run stops.
    pub fn error(&self, f: impl FnOnce(&mut ErrorCounts)) {
        f(&mut self.result.borrow_mut().errors);
        self.interval.borrow_mut().errors += 1;
        if self.cfg.fail_fast {
            self.failed.set(true);
        }
    }
}

fn ns(d: Duration) -> u64 {
    (d.as_nanos().min(u128::from(MAX_LATENCY_NS)) as u64).max(1)
}

/// Hands the core's counts to the main thread several times a second, so each printed second
/// holds (nearly) exactly one second of traffic.
async fn publish_intervals(run: Rc<CoreRun>, board: Arc<IntervalBoard>) {
    loop {
        runtime::sleep(Duration::from_millis(100)).await;
        publish(&run, &board);
    }
}

fn publish(run: &CoreRun, board: &IntervalBoard) {
    let iv = std::mem::replace(&mut *run.interval.borrow_mut(), Interval::new());
    // The run's latency histogram is the sum of its intervals' (the recorder writes only those).
    let _ = run.result.borrow_mut().latency.add(&iv.latency);
    let (up, before) = (run.up.get(), run.published_up.replace(run.up.get()));
    if up >= before {
        board.up.fetch_add(up - before, Ordering::Relaxed);
    } else {
        board.up.fetch_sub(before - up, Ordering::Relaxed);
    }
    board.slots.lock().unwrap_or_else(|e| e.into_inner()).push(iv);
}

/// The connections of this segment that core `core` of `cores` runs.
fn core_ids(cfg: &LoadConfig, cores: usize, core: usize) -> Vec<usize> {
    cfg.own_ids().skip(core).step_by(cores).collect()
}

async fn core_main(
    core: runtime::CoreInfo,
    cfg: Arc<LoadConfig>,
    board: Arc<IntervalBoard>,
    traffic_at: Option<Instant>,
) -> LoadResult {
    let cpu0 = crate::sys::thread_cpu_seconds();
    let created = Instant::now();
    let ids = core_ids(&cfg, core.count, core.index);
    let budget = cfg.messages.map(|m| ids.iter().map(|&id| cfg.budget_of(m, id)).sum());
    let run = Rc::new(CoreRun {
        cfg: cfg.clone(),
        result: RefCell::new(LoadResult::new()),
        interval: RefCell::new(Interval::new()),
        created,
        start: std::cell::Cell::new(created),
        measure_start: std::cell::Cell::new(created),
        deadline: std::cell::Cell::new(created),
        said_connect_error: std::cell::Cell::new(false),
        said_server_close: std::cell::Cell::new(false),
        budget: std::cell::Cell::new(budget),
        up: std::cell::Cell::new(0),
        published_up: std::cell::Cell::new(0),
        failed: std::cell::Cell::new(false),
        sent_late_until: std::cell::Cell::new(created),
    });
    let publisher = runtime::spawn(publish_intervals(run.clone(), board.clone()));
    // Every mode but `connect` opens its connections first, so the window holds only traffic.
    let mut streams = Vec::new();
    if cfg.mode != Mode::Connect {
        let opening: Vec<_> = ids
            .iter()
            .map(|&id| {
                let run = run.clone();
                runtime::spawn(async move { conn::open(&run, id).await.map(|s| (id, s)) })
            })
            .collect();
        for o in opening {
            if let Some(s) = o.await {
                streams.push(s);
            }
        }
    }
    // With --start-at, traffic starts then (the segments on other machines start with it).
    if let Some(at) = traffic_at {
        let _ = runtime::select(runtime::sleep_until(at), runtime::shutdown_requested()).await;
    }
    // The loop turn's clock, which every request's time is read from: a request of this turn is
    // not before the start (a fresh `Instant::now()` here left each connection's first request
    // out of the measured window). With --start-at, the schedule counts from that instant itself
    // (not from when this core woke), so that the segments' ticks keep their offsets; a core that
    // is late starts at the next whole period after it.
    let now = runtime::now();
    let start = match (traffic_at, cfg.total_rate()) {
        (Some(at), Some(total)) if now > at => {
            let period = cfg.connections as f64 / total;
            let periods = ((now - at).as_secs_f64() / period).ceil();
            at + Duration::from_secs_f64(periods * period)
        }
        (Some(at), Some(_)) => at,
        _ => now,
    };
    // With only --messages, the duration is an upper bound of one hour.
    let window =
        if cfg.messages.is_some() && cfg.duration.is_zero() { Duration::from_secs(3600) } else { cfg.duration };
    run.start.set(start);
    run.measure_start.set(start + cfg.warmup);
    run.deadline.set(start + cfg.warmup + window);
    let tasks: Vec<_> = if cfg.mode == Mode::Connect {
        ids.iter().map(|&id| runtime::spawn(connect::connect_loop(run.clone(), id))).collect()
    } else {
        streams.into_iter().map(|(id, s)| runtime::spawn(conn::drive(run.clone(), id, s))).collect()
    };
    let all = async {
        for t in tasks {
            t.await;
        }
    };
    let _ = runtime::select(all, async {
        runtime::shutdown_requested().await;
        // After a signal the connections stop sending and drain what is in flight within
        // DRAIN_TIMEOUT, counting what did not come back; this is only the backstop.
        runtime::sleep(DRAIN_TIMEOUT + Duration::from_secs(2)).await;
    })
    .await;
    drop(publisher);
    // The last counts, for the final partial interval.
    publish(&run, &board);
    let mut r = run.result.borrow().clone();
    let end = Instant::now().min(run.deadline.get().max(run.sent_late_until.get()));
    r.elapsed = end.saturating_duration_since(run.measure_start.get());
    r.connect_phase = run.start.get() - created;
    r.start_late = traffic_at.map(|at| start.max(now).saturating_duration_since(at));
    r.measure_start = Some(run.measure_start.get());
    r.interrupted = runtime::is_shutting_down() || run.failed.get();
    r.core_cpu = vec![crate::sys::thread_cpu_seconds() - cpu0];
    r.core_wall = vec![created.elapsed().as_secs_f64()];
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(connections: usize, segment: Segment) -> LoadConfig {
        let mut cfg = LoadConfig::new(Mode::Echo, "127.0.0.1:1".parse().unwrap());
        cfg.connections = connections;
        cfg.segment = segment;
        cfg
    }

    #[test]
    fn message_budgets_add_up_exactly_over_cores_and_segments() {
        for (m, n, cores, segments) in
            [(1000u64, 64usize, 2usize, 1usize), (7, 3, 2, 2), (10, 1, 1, 1), (1_000_003, 1000, 3, 4), (5, 3, 1, 4)]
        {
            let mut total = 0;
            let mut ids = Vec::new();
            for index in 0..segments {
                let cfg = config(n, Segment { index, count: segments });
                for core in 0..cores {
                    let mine = core_ids(&cfg, cores, core);
                    total += mine.iter().map(|&id| cfg.budget_of(m, id)).sum::<u64>();
                    ids.extend(mine);
                }
            }
            assert_eq!(total, m, "m={m} n={n} cores={cores} segments={segments}");
            ids.sort_unstable();
            assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every connection runs exactly once");
        }
    }

    #[test]
    fn segments_share_the_rate_and_keep_each_connections_schedule() {
        let mut whole = config(10, Segment::WHOLE);
        whole.rate = Some(Rate::Total(1000.0));
        let parts: Vec<LoadConfig> =
            (0..4).map(|index| LoadConfig { segment: Segment { index, count: 4 }, ..whole.clone() }).collect();
        let sum: f64 = parts.iter().map(|p| p.own_rate().unwrap()).sum();
        assert!((sum - 1000.0).abs() < 1e-6, "{sum}");
        assert_eq!(parts.iter().map(LoadConfig::own_connections).collect::<Vec<_>>(), [3, 3, 2, 2]);
        // Connection 5 (segment 2/4) is due at the same instants as in the whole test.
        let t0 = Instant::now();
        let (a, b) = (schedule::Schedule::per_connection(&whole, 5), schedule::Schedule::per_connection(&parts[1], 5));
        assert_eq!(a.peek(t0), b.peek(t0));
    }

    #[test]
    fn a_late_start_keeps_the_second_boundaries() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(clock_origin(Some(t), t - Duration::from_secs(5)), t);
        assert_eq!(clock_origin(Some(t), t + Duration::from_millis(2_700)), t + Duration::from_secs(2));
        assert_eq!(clock_origin(None, t), t);
    }
}
