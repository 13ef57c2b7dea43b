//! `ringnode perf client`: iperf3's client side on one core's ring. It runs against a stock
//! `iperf3 -s` or a ringnode server; against a ringnode server it can also measure latency under
//! load on a connection of its own.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use socket2::{Domain, Protocol as SockProto, Socket, Type};

use super::proto::{self, ClientControl, ClientEvent, Cookie, Params, ProtoError, Protocol, Results};
use super::report::{self, Reporter, StreamInfo, TestInfo};
use super::server::{plan_for, UDP_HELLO, UDP_REPLY, UDP_REPLY_LEGACY};
use super::streams::{self, DataStream, Sock, Streams};
use super::{spawn_control_reader, ControlInput, CpuMark, Flag};
use crate::net::{TcpStream, UdpSocket};
use crate::runtime::{self, Either, RuntimeConfig};

/// How the client writes its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// iperf3's text.
    Text,
    /// iperf3's JSON document, at the end.
    Json,
    /// One JSON event per line as the test runs (iperf3 3.17's `--json-stream`).
    JsonStream,
}

/// The latency probe's settings.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Time between probes.
    pub every: Duration,
    /// Bytes per probe.
    pub size: usize,
    /// Write the latency histogram here as an HdrHistogram interval log.
    pub hdr_log: Option<PathBuf>,
}

/// A client's settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server.
    pub target: SocketAddr,
    /// The target as the user wrote it (for the report).
    pub host: String,
    /// The test's parameters.
    pub params: Params,
    /// Seconds between interval reports (0: none).
    pub interval: f64,
    /// The report's form.
    pub format: OutputFormat,
    /// Local address to bind (control and data connections).
    pub bind: Option<IpAddr>,
    /// Local port of the first data connection (the next use the following ports).
    pub cport: Option<u16>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Latency under load, on a connection of its own (ringnode servers only).
    pub latency: Option<LatencyOptions>,
    /// Prefix text lines with the time.
    pub timestamps: bool,
    /// iperf3's `-f`: the bitrate column's unit.
    pub format_unit: Option<char>,
    /// Where text lines and JSON events go, as they are made.
    pub out: Arc<dyn Fn(&str) + Send + Sync>,
    /// The runtime layout (one core).
    pub runtime: RuntimeConfig,
}

/// A test that ran.
#[derive(Debug, Clone)]
pub struct ClientOutcome {
    /// The iperf3 JSON document (`start`, `intervals`, `end`).
    pub json: Value,
}

/// Why a test did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control connection could not be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server refused the test or broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtoError),
    /// The test failed before it started.
    #[error("{0}")]
    Failed(String),
    /// The test failed after it started; what was measured was printed.
    #[error("{0} (partial results printed)")]
    Partial(String),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// Runs one test on its own runtime and returns its JSON document.
pub fn run_client(cfg: ClientConfig) -> Result<ClientOutcome, ClientError> {
    let rt = cfg.runtime.clone();
    let cfg = Arc::new(cfg);
    let mut results = runtime::run(rt, move |_core| {
        let cfg = cfg.clone();
        async move {
            // Ctrl-C in any phase (set-up, the exchange) ends the client at once; once the test
            // runs, its loop watches it too, to tell the server and print what was measured.
            let testing = Flag::new();
            match runtime::select(client(&cfg, &testing), async {
                runtime::shutdown_requested().await;
                if testing.is_set() {
                    // Let the running loop see it first (it prints partial results).
                    runtime::sleep(Duration::from_secs(3)).await;
                }
            })
            .await
            {
                Either::Left(r) => r,
                Either::Right(()) => Err(Failure::Failed("interrupted".into())),
            }
        }
    })?;
    match results.pop() {
        Some(Ok(json)) => Ok(ClientOutcome { json }),
        Some(Err(e)) => Err(e.into_error()),
        None => Err(ClientError::Failed("the client's core did not run".into())),
    }
}

/// A client error that crosses the runtime's thread boundary.
#[derive(Debug)]
enum Failure {
    Connect(SocketAddr, String),
    Protocol(ProtoError),
    Failed(String),
    /// The test failed after it started, and what was measured was printed.
    Partial(String),
}

impl Failure {
    fn into_error(self) -> ClientError {
        match self {
            Failure::Connect(addr, reason) => ClientError::Connect { addr, reason },
            Failure::Protocol(p) => ClientError::Protocol(p),
            Failure::Failed(m) => ClientError::Failed(m),
            Failure::Partial(m) => ClientError::Partial(m),
        }
    }

    /// What went wrong, in a line.
    fn message(self) -> String {
        match self {
            Failure::Protocol(p) => p.to_string(),
            Failure::Failed(m) | Failure::Connect(_, m) | Failure::Partial(m) => m,
        }
    }
}

/// Prints what the client says, as its format wants.
struct Out<'a> {
    cfg: &'a ClientConfig,
}

impl Out<'_> {
    fn text(&self, lines: &str) {
        if self.cfg.format != OutputFormat::Text {
            return;
        }
        for l in lines.lines() {
            if self.cfg.timestamps {
                let secs =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                (self.cfg.out)(&format!("{} {l}", report_time(secs)));
            } else {
                (self.cfg.out)(l);
            }
        }
    }

    fn event(&self, name: &str, data: Value) {
        if self.cfg.format == OutputFormat::JsonStream {
            (self.cfg.out)(&report::event_line(name, data));
        }
    }
}

fn report_time(secs: u64) -> String {
    report::date(secs)
}

/// Reads the control connection until the next event (or `until`).
/// What the machine queued on the way (the parameters, answering PARAM_EXCHANGE) is sent at once.
async fn next_event(
    control: &TcpStream,
    ctl: &mut ClientControl,
    input: &ControlInput,
    until: Instant,
) -> Result<Option<ClientEvent>, Failure> {
    loop {
        let seen = input.signal.count();
        let fresh = std::mem::take(&mut *input.bytes.borrow_mut());
        ctl.on_input(&fresh);
        let event = ctl.poll_event().map_err(Failure::Protocol)?;
        transmit(control, ctl).await?;
        if let Some(e) = event {
            return Ok(Some(e));
        }
        if input.eof.get() {
            return Err(Failure::Failed("the server closed the control connection".into()));
        }
        match runtime::select(input.signal.changed(seen), runtime::sleep_until(until)).await {
            Either::Left(()) => continue,
            Either::Right(()) => return Ok(None),
        }
    }
}

async fn transmit(stream: &TcpStream, ctl: &mut ClientControl) -> Result<(), Failure> {
    let out = ctl.take_transmit();
    if out.is_empty() {
        return Ok(());
    }
    stream.send_all(out).await.0.map_err(|e| Failure::Failed(format!("control connection: {e}")))
}

fn tcp_socket(cfg: &ClientConfig, port: Option<u16>) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(cfg.target), Type::STREAM, Some(SockProto::TCP))?;
    let p = &cfg.params;
    if p.window > 0 {
        let _ = s.set_send_buffer_size(p.window as usize);
        let _ = s.set_recv_buffer_size(p.window as usize);
    }
    if let Some(cc) = &p.congestion {
        s.set_tcp_congestion(cc.as_bytes())?;
    }
    if p.mss > 0 {
        let _ = s.set_mss(p.mss);
    }
    if cfg.bind.is_some() || port.is_some() {
        let ip =
            cfg.bind.unwrap_or(if cfg.target.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) });
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::new(ip, port.unwrap_or(0)).into())?;
    }
    Ok(s)
}

async fn connect_tcp(cfg: &ClientConfig, port: Option<u16>) -> Result<TcpStream, Failure> {
    let addr = cfg.target;
    let s = tcp_socket(cfg, port).map_err(|e| Failure::Connect(addr, e.to_string()))?;
    match runtime::timeout(cfg.connect_timeout, TcpStream::connect_socket(s, addr)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(Failure::Connect(addr, e.to_string().trim_start_matches(&format!("{addr}: ")).to_string())),
        Err(_) => Err(Failure::Connect(addr, format!("no answer within {:?}", cfg.connect_timeout))),
    }
}

/// Opens data stream `i`.
async fn open_stream(cfg: &ClientConfig, cookie: &Cookie, i: usize) -> Result<DataStream, Failure> {
    let p = &cfg.params;
    let port = cfg.cport.map(|c| c.wrapping_add(i as u16));
    let sender = p.client_sends(i);
    match p.protocol {
        Protocol::Tcp => {
            let t = connect_tcp(cfg, port).await?;
            let _ = socket2::SockRef::from(&*t.shared_fd()).set_nodelay(p.nodelay);
            let (r, _) = t.send_all(cookie.to_vec()).await;
            r.map_err(|e| Failure::Failed(format!("data connection: {e}")))?;
            let local = t.local_addr().map_err(|e| Failure::Failed(e.to_string()))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*t.shared_fd());
            Ok(DataStream { id: proto::stream_id(i), sender, sock: Sock::Tcp(Rc::new(t)), local, peer: cfg.target, fd })
        }
        Protocol::Udp => {
            let addr = cfg.target;
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))
                .map_err(|e| Failure::Connect(addr, e.to_string()))?;
            let _ = s.set_recv_buffer_size(4 << 20);
            let _ = s.set_send_buffer_size(4 << 20);
            if p.window > 0 {
                let _ = s.set_send_buffer_size(p.window as usize);
                let _ = s.set_recv_buffer_size(p.window as usize);
            }
            if cfg.bind.is_some() || port.is_some() {
                let ip = cfg.bind.unwrap_or(if addr.is_ipv4() {
                    IpAddr::from([0, 0, 0, 0])
                } else {
                    IpAddr::from([0u16; 8])
                });
                s.bind(&SocketAddr::new(ip, port.unwrap_or(0)).into())
                    .map_err(|e| Failure::Connect(addr, e.to_string()))?;
            }
            s.connect(&addr.into()).map_err(|e| Failure::Connect(addr, e.to_string()))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            if p.gso {
                let _ = crate::sys::set_int_option(fd, libc::SOL_UDP, libc::UDP_SEGMENT, p.len as i32);
                let _ = crate::sys::set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1);
            }
            let local = s.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
            let u = UdpSocket::from_fd(s.into());
            // The hello, and the reply (a datagram or two of data may come first in reverse mode).
            let (r, _) = u.send(UDP_HELLO.to_ne_bytes().to_vec(), 0).await;
            r.map_err(|e| Failure::Failed(format!("UDP stream hello: {e}")))?;
            let deadline = runtime::now() + cfg.connect_timeout;
            loop {
                let Ok((r, buf)) = runtime::timeout_at(deadline, u.recv_from(Vec::with_capacity(64 * 1024))).await
                else {
                    return Err(Failure::Failed("the server did not answer a UDP stream's hello".into()));
                };
                let n = r.map_err(|e| Failure::Failed(format!("UDP stream hello: {e}")))?.0;
                if n == 4 {
                    let v = u32::from_ne_bytes(buf[..4].try_into().expect("4"));
                    if v == UDP_REPLY || v == UDP_REPLY_LEGACY {
                        break;
                    }
                }
            }
            Ok(DataStream { id: proto::stream_id(i), sender, sock: Sock::Udp(Rc::new(u)), local, peer: addr, fd })
        }
    }
}

/// The whole test on this core.
async fn client(cfg: &ClientConfig, testing: &Flag) -> Result<Value, Failure> {
    let out = Out { cfg };
    let p = &cfg.params;
    let control = connect_tcp(cfg, None).await?;
    let cookie = proto::new_cookie();
    let mut ctl = ClientControl::new(&cookie, p);
    transmit(&control, &mut ctl).await?;
    let (input, reader) = spawn_control_reader(&control);
    let r = run(cfg, &out, &control, &cookie, &mut ctl, &input, testing).await;
    input.stop.set();
    reader.await;
    let _ = control.close().await;
    r
}

struct Live {
    streams: Streams,
    reporter: Reporter,
    cpu: CpuMark,
    start_json: Value,
}

async fn run(
    cfg: &ClientConfig,
    out: &Out<'_>,
    control: &TcpStream,
    cookie: &Cookie,
    ctl: &mut ClientControl,
    input: &ControlInput,
    testing: &Flag,
) -> Result<Value, Failure> {
    let p = &cfg.params;
    let setup = runtime::now() + Duration::from_secs(10) + cfg.connect_timeout;
    let mut opened: Vec<DataStream> = Vec::new();
    let live: Option<Live>;
    // Set-up: parameters, streams, start.
    loop {
        transmit(control, ctl).await?;
        let Some(ev) = next_event(control, ctl, input, setup).await? else {
            return Err(Failure::Failed("the server did not start the test within the set-up time".into()));
        };
        match ev {
            ClientEvent::CreateStreams => {
                for i in 0..p.total_streams() {
                    opened.push(open_stream(cfg, cookie, i).await?);
                }
            }
            ClientEvent::TestStart => {}
            ClientEvent::TestRunning => {
                let list = std::mem::take(&mut opened);
                let mss = list.iter().find_map(|d| match &d.sock {
                    Sock::Tcp(t) => socket2::SockRef::from(&*t.shared_fd()).mss().ok(),
                    _ => None,
                });
                let (sndbuf, rcvbuf) = list.first().map_or((0, 0), |d| {
                    let fd = match &d.sock {
                        Sock::Tcp(t) => t.shared_fd(),
                        Sock::Udp(_) => return (0, 0),
                    };
                    let s = socket2::SockRef::from(&*fd);
                    (s.send_buffer_size().unwrap_or(0) as u64, s.recv_buffer_size().unwrap_or(0) as u64)
                });
                let info = TestInfo {
                    client: true,
                    params: p.clone(),
                    cookie: proto::cookie_text(cookie),
                    connecting_to: Some((cfg.host.clone(), cfg.target.port())),
                    accepted_from: None,
                    streams: list
                        .iter()
                        .map(|d| StreamInfo { id: d.id, socket: d.fd, sender: d.sender, local: d.local, peer: d.peer })
                        .collect(),
                    sndbuf,
                    rcvbuf,
                    mss: u64::from(mss.unwrap_or(0)),
                    format: cfg.format_unit,
                };
                let cpu = CpuMark::now();
                let streams = streams::start(list, plan_for(p, true));
                let reporter = Reporter::new(info, streams.samples());
                let timestamp = std::time::SystemTime::now();
                let start_json = reporter.start_json(timestamp);
                out.text(&reporter.start_text());
                out.event("start", start_json.clone());
                live = Some(Live { streams, reporter, cpu, start_json });
                break;
            }
            other => return Err(Failure::Failed(format!("unexpected {other:?} during set-up"))),
        }
    }
    let mut live = live.expect("set");
    testing.set();
    let started = live.streams.started;
    let latency = cfg.latency.as_ref().map(|l| {
        let stop = Flag::new();
        let h = runtime::spawn(latency_probe(cfg.clone(), *cookie, l.clone(), stop.clone()));
        (stop, h)
    });
    // The test.
    let interval = (cfg.interval > 0.0).then(|| Duration::from_secs_f64(cfg.interval));
    let omit_end = (p.omit > 0.0).then(|| started + Duration::from_secs_f64(p.omit));
    let by_time = p.bytes == 0 && p.blocks == 0;
    let end_at = by_time.then(|| started + Duration::from_secs_f64(p.omit + p.time));
    let mut next_tick = interval.map(|i| started + i);
    let done = live.streams.done();
    // Receiving UDP by bytes: lost datagrams can keep the target out of reach; a second of silence
    // after data ends the test.
    let watch_quiet = !by_time && p.protocol == Protocol::Udp && p.direction == proto::Direction::Reverse;
    // Silence means loss only when it is longer than the gaps the bitrate leaves between
    // datagrams: four of them, and at least a second.
    let quiet_after = if p.bandwidth > 0 {
        Duration::from_secs_f64((4.0 * f64::from(p.len) * 8.0 / p.bandwidth as f64).max(1.0))
    } else {
        Duration::from_secs(1)
    };
    let mut quiet_end = false;
    let mut failure = None;
    let mut stopped_by_user = false;
    loop {
        let quiet_check = watch_quiet.then(|| runtime::now() + Duration::from_millis(250));
        let wake = [next_tick, omit_end.filter(|_| live.reporter.omitting()), end_at, quiet_check]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| runtime::now() + Duration::from_secs(3600));
        let ev = runtime::select(
            runtime::select(next_event(control, ctl, input, wake), done.wait()),
            runtime::shutdown_requested(),
        )
        .await;
        match ev {
            Either::Left(Either::Left(Ok(None))) => {}
            Either::Left(Either::Left(Ok(Some(other)))) => {
                failure = Some(format!("the server sent {other:?} during the test"));
                break;
            }
            Either::Left(Either::Left(Err(e))) => {
                failure = Some(e.message());
                break;
            }
            Either::Left(Either::Right(())) => break,
            Either::Right(()) => {
                stopped_by_user = true;
                break;
            }
        }
        let now = runtime::now();
        let t = now.duration_since(started).as_secs_f64();
        if next_tick.is_some_and(|n| now >= n) {
            let (lines, v) = live.reporter.interval(t, &live.streams.samples());
            out.text(&lines);
            out.event("interval", v);
            next_tick = next_tick.map(|n| n + interval.expect("ticking"));
        }
        if live.reporter.omitting() && omit_end.is_some_and(|o| now >= o) {
            live.reporter.end_omit(t, &live.streams.samples());
            live.streams.end_omit();
            // Intervals count from the end of the omitted seconds, as iperf3 restarts its timer.
            next_tick = interval.map(|i| now + i);
        }
        if end_at.is_some_and(|e| now >= e) {
            break;
        }
        if watch_quiet && live.streams.receivers_quiet_for(quiet_after) {
            quiet_end = true;
            break;
        }
    }
    if let Some((stop, _)) = &latency {
        stop.set();
    }
    if stopped_by_user {
        ctl.terminate();
        let _ = transmit(control, ctl).await;
        live.streams.abort();
        failure = Some("interrupted".into());
    }
    if failure.is_none() {
        ctl.end_test();
        if let Err(e) = transmit(control, ctl).await {
            failure = Some(e.message());
        }
    }
    if failure.is_none() {
        live.streams.stop().await;
    } else {
        live.streams.abort();
    }
    let errors = live.streams.errors();
    if failure.is_none() && !errors.is_empty() {
        failure = Some(errors.join("; "));
    }
    let samples = live.streams.samples();
    let t_end = live.streams.ended_at().duration_since(started).as_secs_f64();
    let count_from = omit_end.unwrap_or(started);
    if interval.is_some() && live.reporter.pending(t_end) {
        let (lines, v) = live.reporter.interval(t_end, &samples);
        out.text(&lines);
        out.event("interval", v);
    }
    let ends: Vec<f64> = live
        .streams
        .list
        .iter()
        .map(|(_, c)| c.ended.get().unwrap_or_else(runtime::now).saturating_duration_since(count_from).as_secs_f64())
        .collect();
    let congestion = live.streams.list.iter().find_map(|(d, _)| match &d.sock {
        Sock::Tcp(t) => socket2::SockRef::from(&*t.shared_fd()).tcp_congestion().ok(),
        _ => None,
    });
    let congestion = congestion.map(|c| String::from_utf8_lossy(&c).trim_end_matches('\0').to_string());
    let mine = live.reporter.local_results(&samples, &ends, live.cpu.percent_since(), congestion);
    let zc = p.zerocopy.then(|| {
        live.streams.list.iter().fold((0, 0), |(z, c), (_, k)| (z + k.zc_zero_copy.get(), c + k.zc_copied.get()))
    });
    // The exchange.
    let mut peer: Option<Results> = None;
    if failure.is_none() {
        let deadline = runtime::now() + Duration::from_secs(15);
        loop {
            match next_event(control, ctl, input, deadline).await {
                Ok(Some(ClientEvent::ExchangeResults)) => {
                    ctl.send_results(&mine);
                    if let Err(e) = transmit(control, ctl).await {
                        failure = Some(e.message());
                        break;
                    }
                }
                Ok(Some(ClientEvent::ServerResults(r))) => peer = Some(*r),
                Ok(Some(ClientEvent::DisplayResults)) => {
                    let _ = transmit(control, ctl).await;
                    break;
                }
                Ok(Some(other)) => {
                    failure = Some(format!("the server sent {other:?} at the end of the test"));
                    break;
                }
                Ok(None) => {
                    failure = Some("the server sent no results within 15 s".into());
                    break;
                }
                Err(e) => {
                    failure = Some(e.message());
                    break;
                }
            }
        }
    }
    let finished = live.reporter.finish(&mine, peer.as_ref(), &samples, zc);
    let mut end = finished.end;
    let mut text = finished.text;
    if quiet_end {
        let got: u64 =
            mine.streams.iter().zip(&live.streams.list).filter(|(_, (d, _))| !d.sender).map(|(s, _)| s.bytes).sum();
        let want = p.bytes.max(p.blocks * u64::from(p.len));
        text += &format!(
            "Note: {got} of the {want} bytes asked for arrived; nothing came for {quiet_after:?}, so the rest was taken as lost\n"
        );
    }
    if let Some((_, h)) = latency {
        let lat = h.await;
        match lat {
            Ok(l) => {
                text += &l.text;
                end["latency"] = l.json;
            }
            Err(why) => {
                text += &format!("Latency under load: not measured ({why})\n");
                end["latency"] = json!({"error": why});
            }
        }
    }
    if let Some(r) = &peer {
        if let Some(t) = &r.server_output_text {
            text += "\nServer output:\n";
            text += t;
        }
        if let Some(j) = &r.server_output_json {
            text += "\nServer output (JSON):\n";
            text += &serde_json::to_string_pretty(j).unwrap_or_default();
            text += "\n";
        }
    }
    out.text(&text);
    if let Some(f) = &failure {
        out.event("error", json!(f));
    }
    if let Some(r) = &peer {
        if let Some(t) = &r.server_output_text {
            out.event("server_output_text", json!(t));
        }
        if let Some(j) = &r.server_output_json {
            out.event("server_output_json", j.clone());
        }
    }
    out.event("end", end.clone());
    let mut doc = json!({"start": live.start_json, "intervals": live.reporter.intervals_json(), "end": end});
    if let Some(j) = peer.as_ref().and_then(|r| r.server_output_json.clone()) {
        doc["server_output_json"] = j;
    }
    if let Some(t) = peer.as_ref().and_then(|r| r.server_output_text.clone()) {
        doc["server_output_text"] = json!(t);
    }
    live.streams.close().await;
    match failure {
        None => Ok(doc),
        Some(f) => {
            doc["error"] = json!(f);
            if cfg.format == OutputFormat::Json {
                (cfg.out)(&serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            Err(Failure::Partial(f))
        }
    }
}

/// What the latency probe measured.
struct Latency {
    text: String,
    json: Value,
}

/// A ping-pong on its own connection while the test runs: `size`-byte messages every `every`,
/// each timed from its send to its echo's last byte.
async fn latency_probe(cfg: ClientConfig, cookie: Cookie, opts: LatencyOptions, stop: Flag) -> Result<Latency, String> {
    let t = connect_tcp(&cfg, None).await.map_err(Failure::message)?;
    let mut hello = cookie;
    hello[0] = proto::LATENCY_MARK;
    t.send_all(hello.to_vec()).await.0.map_err(|e| e.to_string())?;
    let ack = runtime::timeout(Duration::from_secs(3), t.recv(Vec::with_capacity(1))).await;
    match ack {
        Ok((Ok(1), b)) if b[0] == b'L' => {}
        _ => return Err("the server does not answer latency probes (it is not a ringnode server)".into()),
    }
    let size = opts.size.max(8);
    let mut h =
        crate::report::HdrHistogram::<u64>::new_with_bounds(1, crate::report::MAX_LATENCY_NS, 3).expect("bounds");
    let mut rx = t.recv_stream();
    let mut next = runtime::now();
    let t0 = runtime::now();
    while !stop.is_set() {
        if let Either::Right(()) = runtime::select(runtime::sleep_until(next), stop.wait()).await {
            break;
        }
        next += opts.every;
        let sent = Instant::now();
        if t.send_all(vec![0x5a; size]).await.0.is_err() {
            break;
        }
        let mut got = 0;
        while got < size {
            let waited = runtime::select(runtime::timeout(Duration::from_secs(2), rx.next()), stop.wait()).await;
            match waited {
                Either::Left(Ok(Some(Ok(c)))) => got += c.len(),
                Either::Left(Err(_)) => return Err("a latency probe's echo took more than 2 s".into()),
                Either::Right(()) => break,
                _ => return Err("the latency connection ended".into()),
            }
        }
        if got < size {
            break;
        }
        let _ = h.record((sent.elapsed().as_nanos() as u64).clamp(1, crate::report::MAX_LATENCY_NS));
    }
    drop(rx);
    let _ = t.close().await;
    let length = runtime::now().duration_since(t0);
    if let Some(path) = &opts.hdr_log {
        let (_, err) = crate::report::with_interval_log(
            Some(path),
            "ringnode perf --latency",
            std::time::SystemTime::now() - length,
            |w| w(&h, Duration::ZERO, length),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(e) = err {
            return Err(format!("{}: {e}", path.display()));
        }
    }
    let us = |q: f64| crate::report::us(h.value_at_percentile(q));
    let text = format!(
        "Latency under load ({} probes of {size} B every {:?}): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us\n",
        h.len(),
        opts.every,
        us(50.0),
        us(99.0),
        us(99.9),
        crate::report::us(h.max())
    );
    Ok(Latency { text, json: crate::report::percentiles_json(&h) })
}
