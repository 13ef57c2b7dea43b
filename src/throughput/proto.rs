//! iperf3's control protocol as two sans-IO state machines: bytes in, bytes to send and events out.
//! Learned from iperf3's documentation and from watching `iperf3 -c`/`iperf3 -s` 3.12 talk; written
//! here from that description.
//!
//! On the wire: the client connects and sends a 37-byte cookie (36 printable characters and a NUL);
//! every later message on the control connection is either one signed byte, a *state*, or a JSON
//! object prefixed by its length (4 bytes, big-endian). Data connections send the same cookie
//! first, which is how the server knows which test they belong to.
//!
//! ```text
//!  client                                   server
//!  cookie ───────────────────────────────►
//!         ◄─────────────────────────────── PARAM_EXCHANGE (or ACCESS_DENIED: busy)
//!  params JSON ──────────────────────────►
//!         ◄─────────────────────────────── CREATE_STREAMS (or SERVER_ERROR + 2 × i32)
//!  data connections (cookie each) ───────►
//!         ◄─────────────────────────────── TEST_START, TEST_RUNNING
//!  ... data ...
//!  TEST_END ─────────────────────────────►
//!         ◄─────────────────────────────── EXCHANGE_RESULTS
//!  results JSON ─────────────────────────►
//!         ◄─────────────────────────────── results JSON, DISPLAY_RESULTS
//!  IPERF_DONE ───────────────────────────►
//! ```

use serde_json::{json, Map, Value};

/// The cookie's length on the wire (36 characters and a NUL).
pub const COOKIE_LEN: usize = 37;
/// iperf3's port.
pub const DEFAULT_PORT: u16 = 5201;
/// Largest parameter object a server reads (iperf3 reads at most 8 KiB).
pub const MAX_PARAMS_JSON: usize = 8 * 1024;
/// Largest results object read (a server's text output rides in it).
pub const MAX_RESULTS_JSON: usize = 4 << 20;

/// A test's cookie as it goes on the wire.
pub type Cookie = [u8; COOKIE_LEN];

/// The first byte of a ringnode latency probe connection's cookie (the rest is the test's): a
/// character iperf3 never puts in a cookie, so an iperf3 server sees a cookie it does not know.
pub const LATENCY_MARK: u8 = b'~';

/// The control states (one signed byte on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Streams are made: start the clocks.
    TestStart,
    /// Send data.
    TestRunning,
    /// The client says the test is over.
    TestEnd,
    /// The client is to send its parameters.
    ParamExchange,
    /// The client is to open its data connections.
    CreateStreams,
    /// The server is stopping.
    ServerTerminate,
    /// The client is stopping (Ctrl-C).
    ClientTerminate,
    /// Results are to be exchanged (client first).
    ExchangeResults,
    /// Results were exchanged: print them.
    DisplayResults,
    /// Unused on the wire by 3.x, known for completeness.
    IperfStart,
    /// The client is done.
    IperfDone,
    /// The server refuses the test (iperf3: "the server is busy running a test").
    AccessDenied,
    /// The server failed: two 32-bit numbers follow (iperf3's error code and errno).
    ServerError,
}

impl State {
    /// Its byte on the wire.
    pub fn byte(self) -> u8 {
        let v: i8 = match self {
            State::TestStart => 1,
            State::TestRunning => 2,
            State::TestEnd => 4,
            State::ParamExchange => 9,
            State::CreateStreams => 10,
            State::ServerTerminate => 11,
            State::ClientTerminate => 12,
            State::ExchangeResults => 13,
            State::DisplayResults => 14,
            State::IperfStart => 15,
            State::IperfDone => 16,
            State::AccessDenied => -1,
            State::ServerError => -2,
        };
        v as u8
    }

    /// The state a byte names, if any.
    pub fn from_byte(b: u8) -> Option<State> {
        Some(match b as i8 {
            1 => State::TestStart,
            2 => State::TestRunning,
            4 => State::TestEnd,
            9 => State::ParamExchange,
            10 => State::CreateStreams,
            11 => State::ServerTerminate,
            12 => State::ClientTerminate,
            13 => State::ExchangeResults,
            14 => State::DisplayResults,
            15 => State::IperfStart,
            16 => State::IperfDone,
            -1 => State::AccessDenied,
            -2 => State::ServerError,
            _ => return None,
        })
    }
}

/// iperf3's error codes this crate sends or names (`SERVER_ERROR`'s first number).
pub mod ie {
    /// Too many parallel streams.
    pub const NUM_STREAMS: i32 = 6;
    /// Block size too large.
    pub const BLOCK_SIZE: i32 = 7;
    /// The server could not read the parameters.
    pub const RECV_PARAMS: i32 = 103;
    /// The requested bitrate is above the server's limit.
    pub const TOTAL_RATE: i32 = 27;
    /// The requested duration is above the server's limit.
    pub const MAX_DURATION: i32 = 37;

    /// What a code means, in iperf3's words where it has them.
    pub fn text(code: i32) -> String {
        match code {
            NUM_STREAMS => "number of parallel streams too large".into(),
            BLOCK_SIZE => "block size too large".into(),
            TOTAL_RATE => "total required bandwidth is larger than server limit".into(),
            MAX_DURATION => "client's requested duration exceeds the server's maximum permitted limit".into(),
            RECV_PARAMS => "unable to receive parameters from client".into(),
            other => format!("iperf3 error code {other}"),
        }
    }
}

/// The control connection did not follow the protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    /// A byte that names no state.
    #[error("unknown control state {0}")]
    UnknownState(i8),
    /// A state that makes no sense here.
    #[error("unexpected control state {0:?}")]
    Unexpected(State),
    /// A JSON message longer than allowed.
    #[error("control message of {0} bytes is over the limit of {1}")]
    TooLong(usize, usize),
    /// A JSON message that does not parse or lacks what it must have.
    #[error("bad control message: {0}")]
    BadJson(String),
    /// The server refused the test because it runs as many as it may.
    #[error("the server is busy running tests; try again later")]
    Busy,
    /// The server sent `SERVER_ERROR`.
    #[error("the server refused the test: {}{}", ie::text(*.code), if *.errno != 0 { format!(" ({})", std::io::Error::from_raw_os_error(*.errno)) } else { String::new() })]
    Server {
        /// iperf3's error code.
        code: i32,
        /// The server's errno.
        errno: i32,
    },
    /// The server is stopping.
    #[error("the server terminated the test")]
    ServerTerminated,
    /// The client stopped the test.
    #[error("the client terminated the test")]
    ClientTerminated,
}

/// A fresh cookie: 36 characters from iperf3's alphabet, from the kernel's random source, and a NUL.
pub fn new_cookie() -> Cookie {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut raw = [0u8; COOKIE_LEN - 1];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw));
    if filled.is_err() {
        // No /dev/urandom (a bare container): a hash of the time and the process is unique enough
        // for a cookie, which is an identifier, not a secret.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut x = crate::runtime::fnv1a(&(seed ^ u128::from(std::process::id())).to_le_bytes());
        for b in raw.iter_mut() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (x >> 33) as u8;
        }
    }
    let mut c = [0u8; COOKIE_LEN];
    for (o, r) in c.iter_mut().zip(raw) {
        *o = ALPHABET[(r & 31) as usize];
    }
    c
}

/// The cookie as text (without its NUL).
pub fn cookie_text(c: &Cookie) -> String {
    String::from_utf8_lossy(&c[..COOKIE_LEN - 1]).into_owned()
}

/// Bytes from the control connection, cut into messages as the machine asks for them.
#[derive(Debug, Default)]
struct Inbox {
    buf: Vec<u8>,
    at: usize,
}

impl Inbox {
    fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn available(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.available() < n {
            return None;
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A length-prefixed JSON object, once all of it is here.
    fn json(&mut self, max: usize) -> Result<Option<Value>, ProtoError> {
        if self.available() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[self.at..self.at + 4].try_into().expect("4 bytes")) as usize;
        if len > max {
            return Err(ProtoError::TooLong(len, max));
        }
        if self.available() < 4 + len {
            return Ok(None);
        }
        self.at += 4;
        let body = self.take(len).expect("checked");
        // iperf3 sends a NUL-free string; tolerate a trailing NUL.
        let body = body.strip_suffix(&[0]).unwrap_or(body);
        serde_json::from_slice(body).map(Some).map_err(|e| ProtoError::BadJson(e.to_string()))
    }
}

/// A JSON object as iperf3 frames it: length (big-endian u32) and text.
pub fn json_message(v: &Value) -> Vec<u8> {
    let text = v.to_string();
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The transport protocol of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP streams.
    Tcp,
    /// UDP streams.
    Udp,
}

/// Which way data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Forward,
    /// Server to client (`-R`).
    Reverse,
    /// Both at once (`--bidir`): P streams each way.
    Bidir,
}

/// A test's parameters, as the client sends them. Keys this build does not know are kept (and
/// ignored), so a newer client's test still runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Seconds at the start whose results are left out.
    pub omit: f64,
    /// Seconds the test runs (0 with `num` or `blockcount`).
    pub time: f64,
    /// Bytes to send instead of a time (0: by time).
    pub bytes: u64,
    /// Blocks to send instead of a time (0: by time).
    pub blocks: u64,
    /// Streams (per direction).
    pub parallel: u32,
    /// Which way the data goes.
    pub direction: Direction,
    /// Socket buffer size asked for (0: the kernel's).
    pub window: u32,
    /// Bytes per write (and per UDP datagram).
    pub len: u32,
    /// Target bitrate in bits/s (0: as fast as possible).
    pub bandwidth: u64,
    /// Congestion control algorithm asked for.
    pub congestion: Option<String>,
    /// The client wants the server's output in the results.
    pub get_server_output: bool,
    /// UDP sequence numbers are 64 bits.
    pub udp_counters_64bit: bool,
    /// The sender uses zero-copy sends.
    pub zerocopy: bool,
    /// TCP_NODELAY on the data connections.
    pub nodelay: bool,
    /// TCP maximum segment size asked for (0: the kernel's).
    pub mss: u32,
    /// ringnode extension: UDP with segmentation offload (sender) and receive offload (receiver).
    pub gso: bool,
    /// The client's version string.
    pub client_version: String,
    /// Everything else the client sent.
    pub extra: Map<String, Value>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            protocol: Protocol::Tcp,
            omit: 0.0,
            time: 10.0,
            bytes: 0,
            blocks: 0,
            parallel: 1,
            direction: Direction::Forward,
            window: 0,
            len: 128 * 1024,
            bandwidth: 0,
            congestion: None,
            get_server_output: false,
            udp_counters_64bit: false,
            zerocopy: false,
            nodelay: false,
            mss: 0,
            gso: false,
            client_version: format!("ringnode {}", env!("CARGO_PKG_VERSION")),
            extra: Map::new(),
        }
    }
}

fn num(v: &Map<String, Value>, key: &str) -> Result<Option<f64>, ProtoError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::Bool(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
        Some(other) => Err(ProtoError::BadJson(format!("\"{key}\" is {other}, not a number"))),
    }
}

fn flag(v: &Map<String, Value>, key: &str) -> Result<bool, ProtoError> {
    Ok(num(v, key)?.is_some_and(|n| n != 0.0))
}

fn uint(v: &Map<String, Value>, key: &str) -> Result<Option<u64>, ProtoError> {
    match num(v, key)? {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n as u64)),
        Some(n) => Err(ProtoError::BadJson(format!("\"{key}\" is {n}, not a count"))),
        None => Ok(None),
    }
}

/// The stream ids iperf3 gives a test's streams in the order they are made: 1, then 3, 4, 5, …
/// (its numbering skips 2; both ends must number alike, since results are matched by id).
pub fn stream_id(index: usize) -> i32 {
    if index == 0 {
        1
    } else {
        index as i32 + 2
    }
}

impl Params {
    /// As the JSON object the client sends.
    pub fn to_json(&self) -> Value {
        let mut m = self.extra.clone();
        let proto = if self.protocol == Protocol::Udp { "udp" } else { "tcp" };
        m.insert(proto.into(), Value::Bool(true));
        m.insert("omit".into(), json!(self.omit));
        m.insert("time".into(), json!(self.time));
        m.insert("num".into(), json!(self.bytes));
        m.insert("blockcount".into(), json!(self.blocks));
        m.insert("parallel".into(), json!(self.parallel));
        match self.direction {
            Direction::Reverse => {
                m.insert("reverse".into(), Value::Bool(true));
            }
            Direction::Bidir => {
                m.insert("bidirectional".into(), Value::Bool(true));
            }
            Direction::Forward => {}
        }
        if self.window > 0 {
            m.insert("window".into(), json!(self.window));
        }
        m.insert("len".into(), json!(self.len));
        if self.bandwidth > 0 {
            m.insert("bandwidth".into(), json!(self.bandwidth));
        }
        m.insert("pacing_timer".into(), json!(1000));
        if let Some(c) = &self.congestion {
            m.insert("congestion".into(), json!(c));
        }
        if self.get_server_output {
            m.insert("get_server_output".into(), json!(1));
        }
        if self.udp_counters_64bit {
            m.insert("udp_counters_64bit".into(), json!(1));
        }
        if self.zerocopy {
            m.insert("zerocopy".into(), json!(1));
        }
        if self.nodelay {
            m.insert("nodelay".into(), Value::Bool(true));
        }
        if self.mss > 0 {
            m.insert("MSS".into(), json!(self.mss));
        }
        if self.gso {
            m.insert("ringnode_gso".into(), json!(1));
        }
        m.insert("client_version".into(), json!(self.client_version));
        Value::Object(m)
    }

    /// From the JSON object a client sent (iperf3's or ours). Unknown keys are kept in `extra`.
    pub fn from_json(v: &Value) -> Result<Params, ProtoError> {
        let Value::Object(m) = v else {
            return Err(ProtoError::BadJson("parameters are not an object".into()));
        };
        let d = Params::default();
        let protocol = if flag(m, "udp")? {
            Protocol::Udp
        } else if flag(m, "tcp")? || !m.contains_key("sctp") {
            Protocol::Tcp
        } else {
            return Err(ProtoError::BadJson("only TCP and UDP tests are served".into()));
        };
        let direction = match (flag(m, "reverse")?, flag(m, "bidirectional")?) {
            (_, true) => Direction::Bidir,
            (true, false) => Direction::Reverse,
            _ => Direction::Forward,
        };
        let known = [
            "tcp",
            "udp",
            "sctp",
            "omit",
            "time",
            "num",
            "blockcount",
            "parallel",
            "reverse",
            "bidirectional",
            "window",
            "len",
            "bandwidth",
            "congestion",
            "get_server_output",
            "udp_counters_64bit",
            "zerocopy",
            "nodelay",
            "MSS",
            "ringnode_gso",
            "client_version",
        ];
        let extra =
            m.iter().filter(|(k, _)| !known.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        let time = num(m, "time")?.unwrap_or(d.time);
        let omit = num(m, "omit")?.unwrap_or(0.0);
        if !(time.is_finite() && time >= 0.0 && omit.is_finite() && omit >= 0.0) {
            return Err(ProtoError::BadJson("negative or infinite time".into()));
        }
        let parallel = uint(m, "parallel")?.unwrap_or(1);
        Ok(Params {
            protocol,
            omit,
            time,
            bytes: uint(m, "num")?.unwrap_or(0),
            blocks: uint(m, "blockcount")?.unwrap_or(0),
            parallel: parallel.clamp(1, u32::MAX as u64) as u32,
            direction,
            window: uint(m, "window")?.unwrap_or(0).min(u32::MAX as u64) as u32,
            len: uint(m, "len")?.filter(|&l| l > 0).unwrap_or(match protocol {
                Protocol::Tcp => 128 * 1024,
                Protocol::Udp => 1460,
            }) as u32,
            bandwidth: uint(m, "bandwidth")?.unwrap_or(0),
            congestion: m.get("congestion").and_then(|c| c.as_str()).map(str::to_string),
            get_server_output: flag(m, "get_server_output")?,
            udp_counters_64bit: flag(m, "udp_counters_64bit")?,
            zerocopy: flag(m, "zerocopy")?,
            nodelay: flag(m, "nodelay")?,
            mss: uint(m, "MSS")?.unwrap_or(0).min(u32::MAX as u64) as u32,
            gso: flag(m, "ringnode_gso")?,
            client_version: m.get("client_version").and_then(|c| c.as_str()).unwrap_or("").to_string(),
            extra,
        })
    }

    /// Streams in all (both directions with `--bidir`).
    pub fn total_streams(&self) -> usize {
        self.parallel as usize * if self.direction == Direction::Bidir { 2 } else { 1 }
    }

    /// Whether the client sends on stream `index` (in the order the streams are made: with
    /// `--bidir` the first half are the client's sending streams).
    pub fn client_sends(&self, index: usize) -> bool {
        match self.direction {
            Direction::Forward => true,
            Direction::Reverse => false,
            Direction::Bidir => index < self.parallel as usize,
        }
    }
}

/// One stream's results, as exchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamResult {
    /// The stream's id (see [`stream_id`]).
    pub id: i32,
    /// Bytes sent (a sender) or received (a receiver), after the omitted seconds.
    pub bytes: u64,
    /// TCP retransmits (a sender that knows them), else -1.
    pub retransmits: i64,
    /// UDP jitter in seconds (a receiver).
    pub jitter: f64,
    /// UDP datagrams lost (a receiver).
    pub errors: i64,
    /// UDP datagrams lost in the omitted seconds.
    pub omitted_errors: i64,
    /// UDP datagrams sent (a sender) or the highest sequence number seen (a receiver).
    pub packets: i64,
    /// UDP datagrams in the omitted seconds.
    pub omitted_packets: i64,
    /// The omitted counts were given (iperf3 before 3.13 sends none, and counts the omitted
    /// datagrams in `packets`).
    pub omitted_given: bool,
    /// Seconds since the stream's start when counting started.
    pub start_time: f64,
    /// Seconds since the stream's start when counting ended.
    pub end_time: f64,
}

/// One side's results, as exchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// CPU use of the process over the test, percent: total, user, system.
    pub cpu: [f64; 3],
    /// 1 if the sender reports retransmits, 0 if not, -1 if this side only received.
    pub sender_has_retransmits: i32,
    /// The congestion control algorithm used.
    pub congestion_used: Option<String>,
    /// Per stream.
    pub streams: Vec<StreamResult>,
    /// The server's report as text (when the client asked for it).
    pub server_output_text: Option<String>,
    /// The server's report as JSON (when the client asked for it and the server writes JSON).
    pub server_output_json: Option<Value>,
}

impl Results {
    /// As the JSON object exchanged.
    pub fn to_json(&self) -> Value {
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "bytes": s.bytes, "retransmits": s.retransmits, "jitter": s.jitter,
                    "errors": s.errors, "omitted_errors": s.omitted_errors, "packets": s.packets,
                    "omitted_packets": s.omitted_packets, "start_time": s.start_time, "end_time": s.end_time,
                })
            })
            .collect();
        let mut m = Map::new();
        m.insert("cpu_util_total".into(), json!(self.cpu[0]));
        m.insert("cpu_util_user".into(), json!(self.cpu[1]));
        m.insert("cpu_util_system".into(), json!(self.cpu[2]));
        m.insert("sender_has_retransmits".into(), json!(self.sender_has_retransmits));
        if let Some(c) = &self.congestion_used {
            m.insert("congestion_used".into(), json!(c));
        }
        if let Some(t) = &self.server_output_text {
            m.insert("server_output_text".into(), json!(t));
        }
        if let Some(j) = &self.server_output_json {
            m.insert("server_output_json".into(), j.clone());
        }
        m.insert("streams".into(), Value::Array(streams));
        Value::Object(m)
    }

    /// From the JSON object the peer sent; the keys iperf3 requires must be there.
    pub fn from_json(v: &Value) -> Result<Results, ProtoError> {
        let Value::Object(m) = v else {
            return Err(ProtoError::BadJson("results are not an object".into()));
        };
        let need = |k: &str| num(m, k)?.ok_or_else(|| ProtoError::BadJson(format!("results lack \"{k}\"")));
        let cpu = [need("cpu_util_total")?, need("cpu_util_user")?, need("cpu_util_system")?];
        let sender_has_retransmits = need("sender_has_retransmits")? as i32;
        let Some(Value::Array(list)) = m.get("streams") else {
            return Err(ProtoError::BadJson("results lack \"streams\"".into()));
        };
        let mut streams = Vec::with_capacity(list.len());
        for s in list {
            let Value::Object(s) = s else {
                return Err(ProtoError::BadJson("a stream's results are not an object".into()));
            };
            let need = |k: &str| num(s, k)?.ok_or_else(|| ProtoError::BadJson(format!("stream results lack \"{k}\"")));
            streams.push(StreamResult {
                id: need("id")? as i32,
                bytes: need("bytes")?.max(0.0) as u64,
                retransmits: need("retransmits")? as i64,
                jitter: need("jitter")?,
                errors: need("errors")? as i64,
                omitted_errors: num(s, "omitted_errors")?.unwrap_or(0.0) as i64,
                packets: need("packets")? as i64,
                omitted_packets: num(s, "omitted_packets")?.unwrap_or(0.0) as i64,
                omitted_given: s.contains_key("omitted_packets"),
                start_time: num(s, "start_time")?.unwrap_or(0.0),
                end_time: num(s, "end_time")?.unwrap_or(0.0),
            });
        }
        Ok(Results {
            cpu,
            sender_has_retransmits,
            congestion_used: m.get("congestion_used").and_then(|c| c.as_str()).map(str::to_string),
            streams,
            server_output_text: m.get("server_output_text").and_then(|c| c.as_str()).map(str::to_string),
            server_output_json: m.get("server_output_json").cloned(),
        })
    }
}

/// What the server's control machine tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The client's parameters: check them, then [`ServerControl::create_streams`] or
    /// [`ServerControl::refuse`].
    Params(Box<Params>),
    /// The client ended the test: stop the streams, then [`ServerControl::exchange`].
    TestEnd,
    /// The client's results: answer with [`ServerControl::send_results`].
    ClientResults(Box<Results>),
    /// The client is done; close.
    Done,
    /// The client stopped the test early.
    ClientTerminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPhase {
    Params,
    Deciding,
    Creating,
    Running,
    Ending,
    ClientResults,
    Replying,
    Done,
    Closed,
}

/// The server's half of a test's control connection, after the cookie (see the module docs).
#[derive(Debug)]
pub struct ServerControl {
    inbox: Inbox,
    out: Vec<u8>,
    phase: ServerPhase,
}

impl ServerControl {
    /// A test the server takes: it asks for the parameters.
    pub fn accept() -> ServerControl {
        ServerControl { inbox: Inbox::default(), out: vec![State::ParamExchange.byte()], phase: ServerPhase::Params }
    }

    /// What a server sends a client it turns away because it runs as many tests as it may.
    pub fn busy() -> [u8; 1] {
        [State::AccessDenied.byte()]
    }

    /// Bytes received on the control connection.
    pub fn on_input(&mut self, bytes: &[u8]) {
        self.inbox.push(bytes);
    }

    /// The next event, once enough input is here.
    pub fn poll_event(&mut self) -> Result<Option<ServerEvent>, ProtoError> {
        match self.phase {
            ServerPhase::Params => {
                let Some(v) = self.inbox.json(MAX_PARAMS_JSON)? else { return Ok(None) };
                self.phase = ServerPhase::Deciding;
                Ok(Some(ServerEvent::Params(Box::new(Params::from_json(&v)?))))
            }
            ServerPhase::ClientResults => {
                let Some(v) = self.inbox.json(MAX_RESULTS_JSON)? else { return Ok(None) };
                self.phase = ServerPhase::Replying;
                Ok(Some(ServerEvent::ClientResults(Box::new(Results::from_json(&v)?))))
            }
            ServerPhase::Closed | ServerPhase::Deciding | ServerPhase::Ending | ServerPhase::Replying => Ok(None),
            ServerPhase::Creating | ServerPhase::Running | ServerPhase::Done => {
                let Some(b) = self.inbox.byte() else { return Ok(None) };
                match State::from_byte(b) {
                    Some(State::TestEnd) if self.phase != ServerPhase::Done => {
                        self.phase = ServerPhase::Ending;
                        Ok(Some(ServerEvent::TestEnd))
                    }
                    Some(State::IperfDone) if self.phase == ServerPhase::Done => {
                        self.phase = ServerPhase::Closed;
                        Ok(Some(ServerEvent::Done))
                    }
                    Some(State::ClientTerminate) => {
                        self.phase = ServerPhase::Closed;
                        Ok(Some(ServerEvent::ClientTerminated))
                    }
                    Some(s) => Err(ProtoError::Unexpected(s)),
                    None => Err(ProtoError::UnknownState(b as i8)),
                }
            }
        }
    }

    /// Bytes to send (taken: the caller sends them in order).
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The parameters are acceptable: ask for the data connections.
    pub fn create_streams(&mut self) {
        debug_assert_eq!(self.phase, ServerPhase::Deciding);
        self.out.push(State::CreateStreams.byte());
        self.phase = ServerPhase::Creating;
    }

    /// Refuses the test with one of iperf3's error codes (and an errno, or 0).
    pub fn refuse(&mut self, code: i32, errno: i32) {
        self.out.push(State::ServerError.byte());
        self.out.extend_from_slice(&code.to_be_bytes());
        self.out.extend_from_slice(&errno.to_be_bytes());
        self.phase = ServerPhase::Closed;
    }

    /// Every data connection is here: start.
    pub fn start(&mut self) {
        self.out.push(State::TestStart.byte());
        self.out.push(State::TestRunning.byte());
        self.phase = ServerPhase::Running;
    }

    /// The streams are stopped: ask for the client's results.
    pub fn exchange(&mut self) {
        debug_assert_eq!(self.phase, ServerPhase::Ending);
        self.out.push(State::ExchangeResults.byte());
        self.phase = ServerPhase::ClientResults;
    }

    /// Sends this side's results and tells the client to display them.
    pub fn send_results(&mut self, r: &Results) {
        debug_assert_eq!(self.phase, ServerPhase::Replying);
        self.out.extend(json_message(&r.to_json()));
        self.out.push(State::DisplayResults.byte());
        self.phase = ServerPhase::Done;
    }

    /// Tells the client the server stops (a stopping server, or a test past a server limit).
    pub fn terminate(&mut self) {
        self.out.push(State::ServerTerminate.byte());
        self.phase = ServerPhase::Closed;
    }
}

/// What the client's control machine tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Open the data connections (each sends the cookie).
    CreateStreams,
    /// Start the clocks.
    TestStart,
    /// Start sending.
    TestRunning,
    /// The server asks for the results: stop, then [`ClientControl::send_results`].
    ExchangeResults,
    /// The server's results.
    ServerResults(Box<Results>),
    /// The exchange is over (IPERF_DONE is queued): print and close.
    DisplayResults,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    States,
    Exchanging,
    ServerResults,
    ServerError,
    Done,
}

/// The client's half of the control connection (see the module docs).
#[derive(Debug)]
pub struct ClientControl {
    inbox: Inbox,
    out: Vec<u8>,
    phase: ClientPhase,
    params: Value,
    ended: bool,
}

impl ClientControl {
    /// A client for a test with this cookie and these parameters: the cookie is queued.
    pub fn new(cookie: &Cookie, params: &Params) -> ClientControl {
        ClientControl {
            inbox: Inbox::default(),
            out: cookie.to_vec(),
            phase: ClientPhase::States,
            params: params.to_json(),
            ended: false,
        }
    }

    /// Bytes received on the control connection.
    pub fn on_input(&mut self, bytes: &[u8]) {
        self.inbox.push(bytes);
    }

    /// The next event, once enough input is here; a refusal or a server failure is an error.
    pub fn poll_event(&mut self) -> Result<Option<ClientEvent>, ProtoError> {
        loop {
            match self.phase {
                ClientPhase::Done | ClientPhase::Exchanging => return Ok(None),
                ClientPhase::ServerError => {
                    let Some(b) = self.inbox.take(8) else { return Ok(None) };
                    let code = i32::from_be_bytes(b[..4].try_into().expect("4"));
                    let errno = i32::from_be_bytes(b[4..].try_into().expect("4"));
                    self.phase = ClientPhase::Done;
                    return Err(ProtoError::Server { code, errno });
                }
                ClientPhase::ServerResults => {
                    let Some(v) = self.inbox.json(MAX_RESULTS_JSON)? else { return Ok(None) };
                    self.phase = ClientPhase::States;
                    return Ok(Some(ClientEvent::ServerResults(Box::new(Results::from_json(&v)?))));
                }
                ClientPhase::States => {
                    let Some(b) = self.inbox.byte() else { return Ok(None) };
                    let Some(state) = State::from_byte(b) else { return Err(ProtoError::UnknownState(b as i8)) };
                    match state {
                        State::ParamExchange => {
                            self.out.extend(json_message(&self.params));
                            continue;
                        }
                        State::CreateStreams => return Ok(Some(ClientEvent::CreateStreams)),
                        State::TestStart => return Ok(Some(ClientEvent::TestStart)),
                        State::TestRunning => return Ok(Some(ClientEvent::TestRunning)),
                        State::ExchangeResults => {
                            self.phase = ClientPhase::Exchanging;
                            return Ok(Some(ClientEvent::ExchangeResults));
                        }
                        State::DisplayResults => {
                            self.out.push(State::IperfDone.byte());
                            self.phase = ClientPhase::Done;
                            return Ok(Some(ClientEvent::DisplayResults));
                        }
                        State::AccessDenied => {
                            self.phase = ClientPhase::Done;
                            return Err(ProtoError::Busy);
                        }
                        State::ServerError => {
                            self.phase = ClientPhase::ServerError;
                            continue;
                        }
                        State::ServerTerminate => {
                            self.phase = ClientPhase::Done;
                            return Err(ProtoError::ServerTerminated);
                        }
                        other => return Err(ProtoError::Unexpected(other)),
                    }
                }
            }
        }
    }

    /// Bytes to send (taken: the caller sends them in order).
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The test's time (or bytes) is up: tell the server. Once.
    pub fn end_test(&mut self) {
        if !self.ended {
            self.ended = true;
            self.out.push(State::TestEnd.byte());
        }
    }

    /// Whether [`ClientControl::end_test`] was called.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Stops the test early (Ctrl-C).
    pub fn terminate(&mut self) {
        self.out.push(State::ClientTerminate.byte());
        self.phase = ClientPhase::Done;
    }

    /// This side's results, answering EXCHANGE_RESULTS; the server's come next.
    pub fn send_results(&mut self, r: &Results) {
        self.out.extend(json_message(&r.to_json()));
        self.phase = ClientPhase::ServerResults;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(server: &mut ServerControl, client: &mut ClientControl) {
        let c = client.take_transmit();
        server.on_input(&c);
        let s = server.take_transmit();
        client.on_input(&s);
    }

    #[test]
    fn a_whole_test_in_both_machines() {
        let cookie = new_cookie();
        assert!(cookie[..36].iter().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(b)));
        assert_eq!(cookie[36], 0);
        let params = Params { parallel: 2, direction: Direction::Bidir, time: 3.0, ..Params::default() };
        let mut client = ClientControl::new(&cookie, &params);
        assert_eq!(client.take_transmit(), cookie.to_vec());
        let mut server = ServerControl::accept();
        drive(&mut server, &mut client);
        assert_eq!(client.poll_event(), Ok(None), "PARAM_EXCHANGE answers itself");
        drive(&mut server, &mut client);
        let Some(ServerEvent::Params(p)) = server.poll_event().unwrap() else { panic!("params") };
        assert_eq!(p.parallel, 2);
        assert_eq!(p.direction, Direction::Bidir);
        assert_eq!(p.total_streams(), 4);
        assert!(p.client_sends(1) && !p.client_sends(2));
        server.create_streams();
        drive(&mut server, &mut client);
        assert_eq!(client.poll_event(), Ok(Some(ClientEvent::CreateStreams)));
        server.start();
        drive(&mut server, &mut client);
        assert_eq!(client.poll_event(), Ok(Some(ClientEvent::TestStart)));
        assert_eq!(client.poll_event(), Ok(Some(ClientEvent::TestRunning)));
        client.end_test();
        client.end_test();
        drive(&mut server, &mut client);
        assert_eq!(server.poll_event(), Ok(Some(ServerEvent::TestEnd)));
        assert_eq!(server.poll_event(), Ok(None), "TEST_END is sent once");
        server.exchange();
        drive(&mut server, &mut client);
        assert_eq!(client.poll_event(), Ok(Some(ClientEvent::ExchangeResults)));
        let mine = Results {
            cpu: [10.0, 1.0, 9.0],
            sender_has_retransmits: 1,
            streams: vec![StreamResult {
                id: 1,
                bytes: 5_000_000_000,
                retransmits: 3,
                omitted_given: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        client.send_results(&mine);
        drive(&mut server, &mut client);
        assert_eq!(server.poll_event(), Ok(Some(ServerEvent::ClientResults(Box::new(mine.clone())))));
        let theirs = Results { server_output_text: Some("hello\n".into()), ..mine.clone() };
        server.send_results(&theirs);
        drive(&mut server, &mut client);
        assert_eq!(client.poll_event(), Ok(Some(ClientEvent::ServerResults(Box::new(theirs)))));
        assert_eq!(client.poll_event(), Ok(Some(ClientEvent::DisplayResults)));
        drive(&mut server, &mut client);
        assert_eq!(server.poll_event(), Ok(Some(ServerEvent::Done)));
    }

    #[test]
    fn input_split_anywhere_gives_the_same_events() {
        let params = Params::default();
        let cookie = new_cookie();
        let mut client = ClientControl::new(&cookie, &params);
        client.take_transmit();
        client.on_input(&[State::ParamExchange.byte()]);
        assert_eq!(client.poll_event(), Ok(None));
        let wire = client.take_transmit();
        for cut in 0..wire.len() {
            let mut server = ServerControl::accept();
            server.on_input(&wire[..cut]);
            assert_eq!(server.poll_event(), Ok(None), "cut at {cut}");
            server.on_input(&wire[cut..]);
            assert!(matches!(server.poll_event(), Ok(Some(ServerEvent::Params(_)))), "cut at {cut}");
        }
    }

    #[test]
    fn refusals_reach_the_client_as_errors() {
        let cookie = new_cookie();
        let mut client = ClientControl::new(&cookie, &Params::default());
        client.on_input(&ServerControl::busy());
        assert_eq!(client.poll_event(), Err(ProtoError::Busy));

        let mut client = ClientControl::new(&cookie, &Params::default());
        client.take_transmit();
        let mut server = ServerControl::accept();
        drive(&mut server, &mut client);
        assert_eq!(client.poll_event(), Ok(None));
        drive(&mut server, &mut client);
        assert!(matches!(server.poll_event(), Ok(Some(ServerEvent::Params(_)))));
        server.refuse(ie::MAX_DURATION, 0);
        drive(&mut server, &mut client);
        let e = client.poll_event().unwrap_err();
        assert_eq!(e, ProtoError::Server { code: ie::MAX_DURATION, errno: 0 });
        assert!(e.to_string().contains("maximum permitted"), "{e}");
    }

    #[test]
    fn iperf3_parameters_parse_and_unknown_keys_are_kept() {
        // As iperf3 3.12 sends them for `-u -b 10M -R -t 2 --get-server-output`, plus a key from
        // the future.
        let v: Value = serde_json::from_str(
            r#"{"udp":true,"omit":0,"time":2,"num":0,"blockcount":0,"parallel":1,"reverse":true,"len":1460,
                "bandwidth":10000000,"pacing_timer":1000,"get_server_output":1,"client_version":"3.12",
                "some_future_option":{"x":1}}"#,
        )
        .unwrap();
        let p = Params::from_json(&v).unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.direction, Direction::Reverse);
        assert_eq!((p.time, p.len, p.bandwidth), (2.0, 1460, 10_000_000));
        assert!(p.get_server_output);
        assert!(p.extra.contains_key("some_future_option") && p.extra.contains_key("pacing_timer"));
        // And back: what we send parses to the same.
        assert_eq!(Params::from_json(&p.to_json()).unwrap(), p);
        assert!(Params::from_json(&serde_json::json!({"time": "ten"})).is_err());
        assert!(Params::from_json(&serde_json::json!({"time": -1})).is_err());
    }

    #[test]
    fn results_missing_what_iperf3_requires_are_rejected() {
        let v = serde_json::json!({"cpu_util_total": 1, "cpu_util_user": 1, "cpu_util_system": 0, "streams": []});
        assert!(Results::from_json(&v).is_err(), "sender_has_retransmits is required");
        let v = serde_json::json!({"cpu_util_total": 1, "cpu_util_user": 1, "cpu_util_system": 0,
            "sender_has_retransmits": -1, "streams": [{"id": 1, "bytes": 10}]});
        assert!(Results::from_json(&v).is_err(), "a stream's jitter and packets are required");
        // iperf3 3.12 sends no omitted counts: that is said, not taken as zero omitted.
        let v = serde_json::json!({"cpu_util_total": 1, "cpu_util_user": 1, "cpu_util_system": 0,
            "sender_has_retransmits": -1, "streams": [{"id": 1, "bytes": 10, "retransmits": -1,
            "jitter": 0, "errors": 0, "packets": 5}]});
        let r = Results::from_json(&v).expect("3.12's results");
        assert!(!r.streams[0].omitted_given);
    }

    #[test]
    fn oversized_and_unknown_control_input_is_an_error() {
        let mut server = ServerControl::accept();
        server.on_input(&(1u32 << 20).to_be_bytes());
        assert_eq!(server.poll_event(), Err(ProtoError::TooLong(1 << 20, MAX_PARAMS_JSON)));
        let mut client = ClientControl::new(&new_cookie(), &Params::default());
        client.on_input(&[99]);
        assert_eq!(client.poll_event(), Err(ProtoError::UnknownState(99)));
    }

    #[test]
    fn stream_ids_skip_two_as_iperf3_does() {
        assert_eq!((0..4).map(stream_id).collect::<Vec<_>>(), vec![1, 3, 4, 5]);
    }
}
