//! `ringnode perf server`: iperf3's server side on the server layer. Each connection starts with a
//! cookie; it goes to the core its cookie hashes to, where it is a test's control connection (a
//! cookie not seen before), one of a test's data connections, or a latency probe. Many tests run
//! at once, each on its own core's ring, within the limits the server sets; beyond them a client
//! is refused in the protocol's own words (iperf3's "busy", or `SERVER_ERROR` with iperf3's code).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol as SockProto, Socket, Type};

use super::proto::{self, ie, Cookie, Direction, Params, Protocol, ServerControl, ServerEvent, COOKIE_LEN};
use super::report::{Reporter, StreamInfo, TestInfo};
use super::streams::{self, DataStream, Plan, Sock};
use super::{spawn_control_reader, ControlInput, CpuMark, Flag, Signal};
use crate::net::{Limits, NetError, TcpStream, UdpSocket};
use crate::runtime::{self, Core, CoreInfo, Either, Placement, RuntimeConfig};
use crate::server::{Connection, ServeError, Server, ServerConfig, Service};

/// How long a client has for each step of the set-up (cookie, parameters, data connections).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past its stated duration a test may run before the server ends it.
const OVERRUN: Duration = Duration::from_secs(10);

/// What the server allows each client.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Tests running at once; one more is told the server is busy.
    pub max_tests: usize,
    /// Longest test (omitted seconds included).
    pub max_duration: Duration,
    /// Highest bitrate per stream a test may ask for, bits/s (`None`: no limit). With a limit, a
    /// test that asks for no bitrate (as fast as possible) is refused too.
    pub max_bitrate: Option<u64>,
    /// Most streams per test.
    pub max_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { max_tests: 16, max_duration: Duration::from_secs(3600), max_bitrate: None, max_streams: 128 }
    }
}

/// How a throughput server runs.
#[derive(Clone)]
pub struct ServerOptions {
    /// Where to listen (TCP; UDP tests use the same address and port).
    pub listen: SocketAddr,
    /// What each client may ask for.
    pub limits: ServerLimits,
    /// Serve one test, then stop.
    pub one_off: bool,
    /// Reports as iperf3's JSON document (else text).
    pub json: bool,
    /// Seconds between interval reports (0: none).
    pub interval: f64,
    /// Called with each finished test's report (text or a JSON document).
    pub on_report: Arc<dyn Fn(String) + Send + Sync>,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

/// What the server counted on one core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PerfStats {
    /// Tests that ran to their results.
    pub tests: u64,
    /// Tests refused (busy or past a limit).
    pub refused: u64,
    /// Tests that failed (a protocol error, a connection lost).
    pub failed: u64,
    /// Connections closed because their cookie matched nothing.
    pub strays: u64,
    /// Bytes received on data connections.
    pub bytes_in: u64,
    /// Bytes sent on data connections.
    pub bytes_out: u64,
}

impl std::ops::AddAssign for PerfStats {
    fn add_assign(&mut self, o: PerfStats) {
        self.tests += o.tests;
        self.refused += o.refused;
        self.failed += o.failed;
        self.strays += o.strays;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// A test's slot on its core, where its data connections arrive.
#[derive(Default)]
struct Slot {
    /// Data connections, with the order they were accepted in.
    incoming: RefCell<Vec<Connection>>,
    arrived: Signal,
    accepting: std::cell::Cell<bool>,
    /// Data connections the test asked for (more are strays).
    wanted: std::cell::Cell<usize>,
    /// A latency probe connected (one per test).
    probed: std::cell::Cell<bool>,
    /// The test is over (its latency probe's echo ends).
    over: Flag,
}

/// The throughput service's state on one core.
#[derive(Default)]
struct CoreState {
    tests: RefCell<HashMap<Cookie, Rc<Slot>>>,
    stats: std::cell::Cell<PerfStats>,
}

impl CoreState {
    fn bump(&self, f: impl FnOnce(&mut PerfStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

fn state() -> Rc<CoreState> {
    Core::with(|c| c.local::<CoreState>())
}

struct PerfService {
    opts: ServerOptions,
    /// Tests running, on every core.
    running: Mutex<HashSet<Cookie>>,
    /// One test at a time sets up UDP streams: their hellos carry no cookie, so the listening
    /// socket must belong to one test while it waits for them.
    udp_setup: AtomicBool,
    /// Tests finished (for `--one-off`).
    finished: AtomicU64,
    handle: Arc<Mutex<Option<runtime::Handle>>>,
}

impl Service for PerfService {
    type Stats = PerfStats;

    fn serve(self: Arc<Self>, conn: Connection) -> impl std::future::Future<Output = ()> + 'static {
        serve(self, conn)
    }

    fn on_core(self: &Arc<Self>, _core: &CoreInfo) {}

    fn core_stats(&self) -> PerfStats {
        state().stats.get()
    }

    fn stats_json(s: &PerfStats) -> serde_json::Value {
        serde_json::json!({"tests": s.tests, "refused": s.refused, "failed": s.failed, "strays": s.strays,
                           "bytes_in": s.bytes_in, "bytes_out": s.bytes_out})
    }
}

/// A running throughput server.
pub struct PerfServer {
    server: Server<PerfService>,
    listen: SocketAddr,
}

impl PerfServer {
    /// Binds and starts the cores.
    pub fn start(opts: ServerOptions) -> Result<PerfServer, ServeError> {
        let handle = Arc::new(Mutex::new(None));
        let service = PerfService {
            opts: opts.clone(),
            running: Mutex::new(HashSet::new()),
            udp_setup: AtomicBool::new(false),
            finished: AtomicU64::new(0),
            handle: handle.clone(),
        };
        let limits = Limits { handshake: None, idle: None, send: Some(Duration::from_secs(30)) };
        let server = Server::start(
            ServerConfig {
                listen: Some(opts.listen),
                limits,
                stop_grace: Duration::from_secs(2),
                admin: None,
                runtime: opts.runtime.clone(),
            },
            service,
        )?;
        *handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.handle().clone());
        Ok(PerfServer { server, listen: opts.listen })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap_or(self.listen)
    }

    /// The runtime handle (to stop it).
    pub fn handle(&self) -> &runtime::Handle {
        self.server.handle()
    }

    /// Waits for the server to stop; the counts summed over cores.
    pub fn join(self) -> Result<PerfStats, ServeError> {
        Ok(self.server.join()?.1)
    }
}

/// Reads exactly `n` bytes (the set-up's small reads: no byte past them is taken).
async fn read_exact(stream: &TcpStream, have: &mut Vec<u8>, n: usize) -> Result<(), ()> {
    while have.len() < n {
        let buf = Vec::with_capacity(n - have.len());
        let (r, buf) = match runtime::timeout(SETUP_TIMEOUT, stream.recv(buf)).await {
            Ok(x) => x,
            Err(_) => return Err(()),
        };
        match r {
            Ok(0) | Err(_) => return Err(()),
            Ok(_) => have.extend_from_slice(&buf),
        }
    }
    Ok(())
}

async fn serve(svc: Arc<PerfService>, mut conn: Connection) {
    let st = state();
    // The cookie: from what an earlier core read, else from the socket.
    let mut head: Vec<u8> = conn.buffered.iter().flat_map(|b| b.iter().copied()).collect();
    if read_exact(conn.stream(), &mut head, COOKIE_LEN).await.is_err() {
        st.bump(|s| s.strays += 1);
        conn.finish(false).await;
        return;
    }
    let cookie: Cookie = head[..COOKIE_LEN].try_into().expect("37 bytes");
    let latency = cookie[0] == proto::LATENCY_MARK;
    let key = &cookie[1..];
    let placement = Placement::new(Core::with(|c| c.count()));
    let owner = placement.of_key(key);
    if owner != runtime::current_core() {
        match conn.move_to(owner, vec![Bytes::from(head)]) {
            Ok(()) => return,
            Err(c) => conn = c,
        }
    }
    conn.buffered.clear();
    if latency {
        // A probe for a test running here (one per test): echo until the client ends it or the
        // test is over.
        let slot = st.tests.borrow().iter().find(|(k, _)| k[1..] == cookie[1..]).map(|(_, s)| s.clone());
        match slot {
            Some(slot) if !slot.probed.replace(true) => echo_latency(conn, &slot.over).await,
            _ => {
                st.bump(|s| s.strays += 1);
                conn.finish(false).await;
            }
        }
        return;
    }
    let slot = st.tests.borrow().get(&cookie).cloned();
    if let Some(slot) = slot {
        if slot.accepting.get() && slot.incoming.borrow().len() < slot.wanted.get() {
            slot.incoming.borrow_mut().push(conn);
            slot.arrived.notify();
        } else {
            st.bump(|s| s.strays += 1);
            conn.finish(false).await;
        }
        return;
    }
    // A new test's control connection.
    let admitted = {
        let mut running = svc.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.len() >= svc.opts.limits.max_tests {
            false
        } else {
            running.insert(cookie);
            true
        }
    };
    if !admitted {
        st.bump(|s| s.refused += 1);
        let _ = conn.stream().send_all(ServerControl::busy().to_vec()).await;
        conn.finish(false).await;
        return;
    }
    let slot = Rc::new(Slot::default());
    st.tests.borrow_mut().insert(cookie, slot.clone());
    let outcome = run_test(&svc, &conn, &slot, &cookie).await;
    slot.over.set();
    st.tests.borrow_mut().remove(&cookie);
    svc.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&cookie);
    for c in slot.incoming.borrow_mut().drain(..) {
        runtime::spawn_detached(c.finish(false));
    }
    match &outcome {
        Ok(Outcome::Done) => st.bump(|s| s.tests += 1),
        Ok(Outcome::Refused) => st.bump(|s| s.refused += 1),
        Err(e) => {
            st.bump(|s| s.failed += 1);
            tracing::warn!(peer = ?conn.stream().peer_addr().ok(), "test failed: {e}");
        }
    }
    conn.finish(outcome.is_err()).await;
    if svc.opts.one_off && !matches!(outcome, Ok(Outcome::Refused)) && svc.finished.fetch_add(1, Ordering::SeqCst) == 0
    {
        if let Some(h) = svc.handle.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            h.shutdown();
        }
    }
}

/// Echoes a latency probe's messages until the client ends the connection or the test is over.
async fn echo_latency(conn: Connection, over: &Flag) {
    let stream = conn.stream();
    if stream.send_all(vec![b'L']).await.0.is_err() {
        conn.finish(true).await;
        return;
    }
    let mut rx = stream.recv_stream();
    let mut failed = false;
    while let Either::Left(Some(r)) = runtime::select(rx.next(), over.wait()).await {
        let Ok(chunk) = r else {
            failed = true;
            break;
        };
        if stream.send_all(chunk).await.0.is_err() {
            failed = true;
            break;
        }
    }
    drop(rx);
    conn.finish(failed).await;
}

enum Outcome {
    Done,
    Refused,
}

/// The next control event, feeding the machine whatever arrived; `Err` on a protocol error or
/// end of stream; `Ok(None)` when `until` passes first.
async fn next_event(
    ctl: &mut ServerControl,
    input: &ControlInput,
    until: std::time::Instant,
) -> Result<Option<ServerEvent>, String> {
    loop {
        let seen = input.signal.count();
        let fresh = std::mem::take(&mut *input.bytes.borrow_mut());
        ctl.on_input(&fresh);
        if let Some(e) = ctl.poll_event().map_err(|e| e.to_string())? {
            return Ok(Some(e));
        }
        if input.eof.get() {
            return Err("the client closed the control connection".into());
        }
        match runtime::select(input.signal.changed(seen), runtime::sleep_until(until)).await {
            Either::Left(()) => continue,
            Either::Right(()) => return Ok(None),
        }
    }
}

async fn transmit(stream: &TcpStream, ctl: &mut ServerControl) -> Result<(), String> {
    let out = ctl.take_transmit();
    if out.is_empty() {
        return Ok(());
    }
    stream.send_all(out).await.0.map_err(|e| format!("control send: {e}"))
}

/// Checks a test's parameters against the server's limits: iperf3's error code if refused.
fn check(p: &Params, limits: &ServerLimits) -> Option<i32> {
    // Counted as iperf3 counts them: -P, whatever --bidir doubles it to.
    if p.parallel as usize > limits.max_streams as usize {
        return Some(ie::NUM_STREAMS);
    }
    let max_len = match p.protocol {
        Protocol::Tcp => 16 << 20,
        Protocol::Udp => 65_507,
    };
    if p.len as usize > max_len
        || (p.protocol == Protocol::Udp && (p.len as usize) < super::udp::header_len(p.udp_counters_64bit))
    {
        return Some(ie::BLOCK_SIZE);
    }
    let secs = p.time + p.omit;
    let by_time = p.bytes == 0 && p.blocks == 0;
    if (by_time && (secs == 0.0 || secs > limits.max_duration.as_secs_f64()))
        || secs > limits.max_duration.as_secs_f64()
    {
        return Some(ie::MAX_DURATION);
    }
    if let Some(max) = limits.max_bitrate {
        if p.bandwidth == 0 || p.bandwidth > max {
            return Some(ie::TOTAL_RATE);
        }
    }
    None
}

async fn run_test(
    svc: &Arc<PerfService>,
    conn: &Connection,
    slot: &Rc<Slot>,
    cookie: &Cookie,
) -> Result<Outcome, String> {
    let stream = conn.stream();
    let mut ctl = ServerControl::accept();
    transmit(stream, &mut ctl).await?;
    let (input, reader) = spawn_control_reader(stream);
    let result = run_test_inner(svc, conn, slot, cookie, &mut ctl, &input).await;
    input.stop.set();
    reader.await;
    result
}

async fn run_test_inner(
    svc: &Arc<PerfService>,
    conn: &Connection,
    slot: &Rc<Slot>,
    cookie: &Cookie,
    ctl: &mut ServerControl,
    input: &ControlInput,
) -> Result<Outcome, String> {
    let stream = conn.stream();
    let deadline = runtime::now() + SETUP_TIMEOUT;
    let params = match next_event(ctl, input, deadline).await? {
        Some(ServerEvent::Params(p)) => *p,
        Some(ServerEvent::ClientTerminated) => return Err("the client stopped the test".into()),
        Some(other) => return Err(format!("unexpected {other:?} before the parameters")),
        None => return Err("no parameters within 10 s".into()),
    };
    if let Some(code) = check(&params, &svc.opts.limits) {
        ctl.refuse(code, 0);
        transmit(stream, ctl).await?;
        tracing::info!(peer = ?stream.peer_addr().ok(), "refused a test: {}", ie::text(code));
        return Ok(Outcome::Refused);
    }
    let total = params.total_streams();
    slot.wanted.set(if params.protocol == Protocol::Tcp { total } else { 0 });
    slot.accepting.set(true);
    // UDP: the socket that hears the first hello is bound before the client is asked for it (it
    // sends its hello as soon as it reads CREATE_STREAMS).
    let udp = match params.protocol {
        Protocol::Udp => Some(UdpSetup::begin(svc, stream, &params).await?),
        Protocol::Tcp => None,
    };
    ctl.create_streams();
    transmit(stream, ctl).await?;
    let mut data = match udp {
        None => tcp_streams(slot, &params, total).await?,
        Some(setup) => setup.streams(&params, total).await?,
    };
    slot.accepting.set(false);
    // Stream ids in the order the client opened them.
    for (i, d) in data.iter_mut().enumerate() {
        d.id = proto::stream_id(i);
        d.sender = !params.client_sends(i);
    }
    let cpu = CpuMark::now();
    let info = TestInfo {
        client: false,
        params: params.clone(),
        cookie: proto::cookie_text(cookie),
        connecting_to: None,
        accepted_from: stream.peer_addr().ok(),
        streams: data
            .iter()
            .map(|d| StreamInfo { id: d.id, socket: d.fd, sender: d.sender, local: d.local, peer: d.peer })
            .collect(),
        sndbuf: 0,
        rcvbuf: 0,
        mss: 0,
        format: None,
    };
    let congestion = data.iter().find_map(|d| match &d.sock {
        Sock::Tcp(t) => socket2::SockRef::from(&*t.shared_fd()).tcp_congestion().ok(),
        _ => None,
    });
    let congestion = congestion.map(|c| String::from_utf8_lossy(&c).trim_end_matches('\0').to_string());
    let plan = plan_for(&params, false);
    let mut running = streams::start(data, plan);
    let mut reporter = Reporter::new(info, running.samples());
    let timestamp = std::time::SystemTime::now();
    let mut text = reporter.start_text();
    ctl.start();
    transmit(stream, ctl).await?;
    let started = running.started;
    let interval = (svc.opts.interval > 0.0).then(|| Duration::from_secs_f64(svc.opts.interval));
    let omit_end = (params.omit > 0.0).then(|| started + Duration::from_secs_f64(params.omit));
    let limit = started + Duration::from_secs_f64(params.time + params.omit) + OVERRUN;
    let limit =
        if params.bytes > 0 || params.blocks > 0 { started + svc.opts.limits.max_duration + OVERRUN } else { limit };
    let mut next_tick = interval.map(|i| started + i);
    let ended = loop {
        let wake = [next_tick, omit_end.filter(|_| reporter.omitting()), Some(limit)]
            .into_iter()
            .flatten()
            .min()
            .expect("limit");
        match next_event(ctl, input, wake).await {
            Ok(Some(ServerEvent::TestEnd)) => break Ok(()),
            Ok(Some(ServerEvent::ClientTerminated)) => break Err("the client stopped the test".to_string()),
            Ok(Some(other)) => break Err(format!("unexpected {other:?} during the test")),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let now = runtime::now();
        if now >= limit {
            ctl.terminate();
            let _ = transmit(stream, ctl).await;
            break Err("the test ran past its duration; ended by the server".into());
        }
        let t = now.duration_since(started).as_secs_f64();
        if next_tick.is_some_and(|n| now >= n) {
            let (lines, _) = reporter.interval(t, &running.samples());
            text += &lines;
            next_tick = next_tick.map(|n| n + interval.expect("ticking"));
        }
        if reporter.omitting() && omit_end.is_some_and(|o| now >= o) {
            reporter.end_omit(t, &running.samples());
            running.end_omit();
            // Intervals count from the end of the omitted seconds, as iperf3 restarts its timer.
            next_tick = interval.map(|i| now + i);
        }
    };
    if let Err(e) = ended {
        running.abort();
        running.close().await;
        return Err(e);
    }
    running.stop().await;
    for e in running.errors() {
        tracing::warn!(peer = ?stream.peer_addr().ok(), "a data stream failed: {e}");
    }
    let samples = running.samples();
    let t_end = running.ended_at().duration_since(started).as_secs_f64();
    if interval.is_some() && reporter.pending(t_end) {
        let (lines, _) = reporter.interval(t_end, &samples);
        text += &lines;
    }
    let count_from = omit_end.unwrap_or(started);
    let ends: Vec<f64> = running
        .list
        .iter()
        .map(|(_, c)| c.ended.get().unwrap_or(started).saturating_duration_since(count_from).as_secs_f64())
        .collect();
    let (bytes_in, bytes_out) =
        running.list.iter().fold(
            (0, 0),
            |(i, o), (s, c)| {
                if s.sender {
                    (i, o + c.bytes.get())
                } else {
                    (i + c.bytes.get(), o)
                }
            },
        );
    state().bump(|s| {
        s.bytes_in += bytes_in;
        s.bytes_out += bytes_out;
    });
    let zc = params
        .zerocopy
        .then(|| running.list.iter().fold((0, 0), |(z, c), (_, k)| (z + k.zc_zero_copy.get(), c + k.zc_copied.get())));
    let mut mine = reporter.local_results(&samples, &ends, cpu.percent_since(), congestion);
    ctl.exchange();
    transmit(stream, ctl).await?;
    let client = match next_event(ctl, input, runtime::now() + SETUP_TIMEOUT).await? {
        Some(ServerEvent::ClientResults(r)) => *r,
        other => {
            running.close().await;
            return Err(format!("expected the client's results, got {other:?}"));
        }
    };
    let finished = reporter.finish(&mine, Some(&client), &samples, zc);
    text += &finished.text;
    let doc = if svc.opts.json {
        let mut doc = serde_json::json!({
            "start": reporter.start_json(timestamp),
            "intervals": reporter.intervals_json(),
            "end": finished.end,
        });
        if let Some(t) = &client.server_output_text {
            doc["client_output_text"] = serde_json::json!(t);
        }
        Some(doc)
    } else {
        None
    };
    if params.get_server_output {
        match &doc {
            Some(d) => mine.server_output_json = Some(d.clone()),
            None => mine.server_output_text = Some(text.clone()),
        }
    }
    ctl.send_results(&mine);
    transmit(stream, ctl).await?;
    // IPERF_DONE, or the client just closing: either ends the test.
    let _ = next_event(ctl, input, runtime::now() + Duration::from_secs(5)).await;
    running.close().await;
    (svc.opts.on_report)(match doc {
        Some(d) => serde_json::to_string_pretty(&d).unwrap_or_default(),
        None => text,
    });
    Ok(Outcome::Done)
}

/// How one side's streams run, from the test's parameters.
pub fn plan_for(p: &Params, client: bool) -> Plan {
    let gso = p.gso && p.protocol == Protocol::Udp;
    Plan {
        len: p.len as usize,
        bitrate: p.bandwidth,
        // A byte count is the client's to keep: a server that sends (-R, --bidir) sends until
        // the client ends the test, as iperf3's does (each side starts counting after the
        // omitted seconds at its own moment, so a server that stopped at the count could leave
        // the client short of it).
        bytes: if client { p.bytes } else { 0 },
        blocks: if client { p.blocks } else { 0 },
        receive_target: if client && p.direction == Direction::Reverse {
            p.bytes.max(p.blocks * u64::from(p.len))
        } else {
            0
        },
        zerocopy: p.zerocopy && p.protocol == Protocol::Tcp,
        gso_segments: if gso { (65_000 / p.len.max(1) as usize).clamp(1, 64) } else { 1 },
        gro: gso,
        counters_64bit: p.udp_counters_64bit,
        omit: p.omit > 0.0,
    }
}

/// Waits for the test's TCP data connections; they are ordered as the server accepted them.
async fn tcp_streams(slot: &Rc<Slot>, p: &Params, total: usize) -> Result<Vec<DataStream>, String> {
    let deadline = runtime::now() + SETUP_TIMEOUT;
    loop {
        let seen = slot.arrived.count();
        if slot.incoming.borrow().len() >= total {
            break;
        }
        if runtime::timeout_at(deadline, slot.arrived.changed(seen)).await.is_err() {
            return Err(format!("{} of {total} data connections arrived within 10 s", slot.incoming.borrow().len()));
        }
    }
    let mut conns: Vec<Connection> = slot.incoming.borrow_mut().drain(..).collect();
    conns.sort_by_key(|c| c.seq());
    let mut out = Vec::with_capacity(total);
    for c in conns {
        let fd = c.stream().shared_fd();
        let sock = socket2::SockRef::from(&*fd);
        if p.window > 0 {
            let _ = sock.set_send_buffer_size(p.window as usize);
            let _ = sock.set_recv_buffer_size(p.window as usize);
        }
        if let Some(cc) = &p.congestion {
            let _ = sock.set_tcp_congestion(cc.as_bytes());
        }
        let _ = sock.set_nodelay(p.nodelay);
        let local = c.stream().local_addr().map_err(|e| e.to_string())?;
        let peer = c.stream().peer_addr().map_err(|e| e.to_string())?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&*fd);
        drop(fd);
        let stream = c.into_stream().map_err(|_| "a data connection is still in use".to_string())?;
        out.push(DataStream { id: 0, sender: false, sock: Sock::Tcp(Rc::new(stream)), local, peer, fd: raw });
    }
    Ok(out)
}

/// How long the server waits for each UDP stream's hello.
const HELLO_WAIT: Duration = Duration::from_secs(3);

/// iperf3's UDP "connect": the client's 4-byte hello on the server's port, and the reply.
pub const UDP_HELLO: u32 = 0x3637_3839;
/// The server's reply to [`UDP_HELLO`].
pub const UDP_REPLY: u32 = 0x3938_3736;
/// The reply older iperf3 servers send.
pub const UDP_REPLY_LEGACY: u32 = 987_654_321;

/// A UDP socket bound to the server's address and port beside the TCP listener (and beside the
/// connected sockets of running tests).
pub fn udp_socket_on(addr: SocketAddr) -> Result<Socket, NetError> {
    let s =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP)).map_err(|e| NetError::at(addr, e))?;
    s.set_reuse_address(true).map_err(|e| NetError::at(addr, e))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.bind(&addr.into()).map_err(|e| NetError::at(addr, e))?;
    Ok(s)
}

/// A test taking its UDP streams: it holds the server's UDP set-up (their hellos carry no cookie,
/// so one test at a time listens for them) and the socket listening for the next hello.
struct UdpSetup<'a> {
    lock: &'a AtomicBool,
    bind: SocketAddr,
    client_ip: IpAddr,
    listener: Option<Socket>,
}

impl Drop for UdpSetup<'_> {
    fn drop(&mut self) {
        self.lock.store(false, Ordering::Release);
    }
}

fn udp_listener(bind: SocketAddr, p: &Params) -> Result<Socket, String> {
    let listener = udp_socket_on(bind).map_err(|e| e.to_string())?;
    let size = if p.window > 0 { p.window as usize } else { 4 << 20 };
    let _ = listener.set_recv_buffer_size(size);
    let _ = listener.set_send_buffer_size(size);
    Ok(listener)
}

impl<'a> UdpSetup<'a> {
    /// Waits for the set-up to be free (up to the set-up time) and binds the first listener.
    async fn begin(svc: &'a PerfService, control: &TcpStream, p: &Params) -> Result<UdpSetup<'a>, String> {
        let client_ip = control.peer_addr().map_err(|e| e.to_string())?.ip().to_canonical();
        let local = control.local_addr().map_err(|e| e.to_string())?;
        let deadline = runtime::now() + SETUP_TIMEOUT;
        while svc.udp_setup.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            if runtime::now() >= deadline {
                return Err("another test held the UDP set-up for 10 s".into());
            }
            runtime::sleep(Duration::from_millis(2)).await;
        }
        let mut setup = UdpSetup {
            lock: &svc.udp_setup,
            bind: SocketAddr::new(svc.opts.listen.ip(), svc.opts.listen.port()),
            client_ip,
            listener: None,
        };
        setup.bind.set_port(local.port());
        setup.listener = Some(udp_listener(setup.bind, p)?);
        Ok(setup)
    }

    /// Takes the streams: each hello's listener is connected to its sender (so that its datagrams
    /// come to it alone) and answers; a fresh socket listens for the next.
    async fn streams(mut self, p: &Params, total: usize) -> Result<Vec<DataStream>, String> {
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            // A client sends each hello as soon as it can (the first on CREATE_STREAMS, the next
            // on the reply): a short wait, so that a client that never does holds the server's
            // UDP set-up from other tests for seconds, not for the whole set-up time.
            let deadline = runtime::now() + HELLO_WAIT;
            let listener = match self.listener.take() {
                Some(l) => l,
                None => udp_listener(self.bind, p)?,
            };
            let sock = UdpSocket::from_fd(listener.into());
            let (peer, hello) = loop {
                let r = runtime::timeout_at(deadline, sock.recv_from(Vec::with_capacity(64))).await;
                let Ok((Ok((n, peer)), buf)) = r else {
                    return Err(format!("{} of {total} UDP streams said hello (each has {HELLO_WAIT:?})", out.len()));
                };
                match peer {
                    // Another client's datagram: not this test's.
                    Some(a) if a.ip().to_canonical() == self.client_ip => break (a, buf[..n].to_vec()),
                    _ => continue,
                }
            };
            if hello.len() != 4 {
                // A late datagram of an earlier test from the same host: not a hello.
                self.listener = Some(udp_listener(self.bind, p)?);
                drop(sock);
                continue;
            }
            let fd = sock.raw_fd();
            let sref = socket2::SockRef::from(&sock);
            sref.connect(&peer.into()).map_err(|e| format!("connect UDP stream: {e}"))?;
            if p.gso {
                let _ = crate::sys::set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1);
                let _ = crate::sys::set_int_option(fd, libc::SOL_UDP, libc::UDP_SEGMENT, p.len as i32);
            }
            // The next listener before the reply: the client sends its next hello on the reply.
            if out.len() + 1 < total {
                self.listener = Some(udp_listener(self.bind, p)?);
            }
            let (r, _) = sock.send(UDP_REPLY.to_ne_bytes().to_vec(), 0).await;
            r.map_err(|e| format!("UDP reply: {e}"))?;
            let local = sref.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(self.bind);
            out.push(DataStream { id: 0, sender: false, sock: Sock::Udp(Rc::new(sock)), local, peer, fd });
        }
        Ok(out)
    }
}

/// The report prefix the CLI prints before a server's per-test report.
pub fn report_banner() -> &'static str {
    "-----------------------------------------------------------"
}
