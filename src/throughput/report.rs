//! A test's report: intervals from the streams' samples, the summary from both sides' results, in
//! three forms: iperf3's text, iperf3's JSON document (`-J`: `start`, `intervals`, `end`), and
//! one JSON event per line (`--json-stream`, the layout iperf3 3.17 documents: `{"event": "start" |
//! "interval" | "end" | "error", "data": …}`).

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::proto::{Direction, Params, Protocol, Results, StreamResult};
use super::streams::Sample;
use crate::sys::TcpInfo;

/// One stream as the report names it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// iperf3's stream id.
    pub id: i32,
    /// Its descriptor number (iperf3 reports streams by it).
    pub socket: i32,
    /// This side sends on it.
    pub sender: bool,
    /// Local address.
    pub local: SocketAddr,
    /// Peer address.
    pub peer: SocketAddr,
}

/// What the report says about the test before it starts.
#[derive(Debug, Clone)]
pub struct TestInfo {
    /// The client's side (else the server's).
    pub client: bool,
    /// The test's parameters.
    pub params: Params,
    /// The cookie, as text.
    pub cookie: String,
    /// Host and port the client connects to.
    pub connecting_to: Option<(String, u16)>,
    /// Where the control connection came from (server side).
    pub accepted_from: Option<SocketAddr>,
    /// The streams, in id order.
    pub streams: Vec<StreamInfo>,
    /// The first stream's socket buffer sizes.
    pub sndbuf: u64,
    /// The first stream's receive buffer size.
    pub rcvbuf: u64,
    /// The first TCP stream's MSS.
    pub mss: u64,
    /// iperf3's `-f`: the bitrate column's unit (`k`/`m`/`g`/`t` bits, `K`/`M`/`G`/`T` bytes;
    /// `None` or anything else: chosen to fit).
    pub format: Option<char>,
}

/// Formats `n` of `unit` with iperf3's adaptive prefixes: 3 significant digits, base 1024 for
/// bytes and 1000 for bits.
pub fn adaptive(n: f64, bits: bool) -> String {
    let (base, names) = if bits {
        (1000.0, ["bits", "Kbits", "Mbits", "Gbits", "Tbits"])
    } else {
        (1024.0, ["Bytes", "KBytes", "MBytes", "GBytes", "TBytes"])
    };
    let mut v = n;
    let mut i = 0;
    while v >= base && i < names.len() - 1 {
        v /= base;
        i += 1;
    }
    format!("{} {}", three_digits(v), names[i])
}

/// A number with iperf3's three significant digits (at least four characters wide).
fn three_digits(v: f64) -> String {
    if v < 9.995 {
        format!("{v:4.2}")
    } else if v < 99.95 {
        format!("{v:4.1}")
    } else {
        format!("{v:4.0}")
    }
}

/// A bitrate as iperf3's `-f` asks: a fixed unit (`k`, `m`, `g`, `t`: bits with decimal prefixes;
/// `K`, `M`, `G`, `T`: bytes with binary prefixes), else chosen to fit. Without "/sec".
pub fn bitrate_text(bits_per_s: f64, format: Option<char>) -> String {
    let (div, name) = match format {
        Some('k') => (1e3, "Kbits"),
        Some('m') => (1e6, "Mbits"),
        Some('g') => (1e9, "Gbits"),
        Some('t') => (1e12, "Tbits"),
        Some('K') => (8.0 * 1024.0, "KBytes"),
        Some('M') => (8.0 * 1024.0 * 1024.0, "MBytes"),
        Some('G') => (8.0 * 1024.0 * 1024.0 * 1024.0, "GBytes"),
        Some('T') => (8.0 * 1024.0f64.powi(4), "TBytes"),
        _ => return adaptive(bits_per_s, true),
    };
    format!("{} {name}", three_digits(bits_per_s / div))
}

fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds
    } else {
        0.0
    }
}

/// Per-stream running state for TCP_INFO figures.
#[derive(Debug, Clone, Copy, Default)]
struct TcpTrack {
    retrans_base: u32,
    max_cwnd: u64,
    max_snd_wnd: u32,
    rtt_min: u32,
    rtt_max: u32,
    rtt_sum: u64,
    rtt_n: u64,
}

impl TcpTrack {
    fn note(&mut self, t: &TcpInfo) {
        self.max_cwnd = self.max_cwnd.max(t.snd_cwnd_bytes);
        self.max_snd_wnd = self.max_snd_wnd.max(t.snd_wnd);
        if t.rtt_us > 0 {
            self.rtt_min = if self.rtt_n == 0 { t.rtt_us } else { self.rtt_min.min(t.rtt_us) };
            self.rtt_max = self.rtt_max.max(t.rtt_us);
            self.rtt_sum += u64::from(t.rtt_us);
            self.rtt_n += 1;
        }
    }
}

/// Builds a test's report as it runs.
pub struct Reporter {
    info: TestInfo,
    /// Samples at the start of the current interval.
    prev: Vec<Sample>,
    /// Samples when counting started (after the omitted seconds).
    base: Vec<Sample>,
    tcp: Vec<TcpTrack>,
    /// Seconds (since counting started) at the start of the current interval.
    prev_t: f64,
    /// Seconds of the test (since the streams started) when counting started.
    counting_from: f64,
    omitting: bool,
    intervals: Vec<Value>,
}

/// One finished report: what to print and what to write.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// The summary, as text.
    pub text: String,
    /// The `end` object of the JSON document.
    pub end: Value,
}

impl Reporter {
    /// A report for this test; the streams' samples at their start.
    pub fn new(info: TestInfo, start: Vec<Sample>) -> Reporter {
        let omitting = info.params.omit > 0.0;
        let mut tcp = vec![TcpTrack::default(); start.len()];
        for (t, s) in tcp.iter_mut().zip(&start) {
            t.retrans_base = s.tcp.map_or(0, |i| i.total_retrans);
        }
        Reporter {
            info,
            prev: start.clone(),
            base: start,
            tcp,
            prev_t: 0.0,
            counting_from: 0.0,
            omitting,
            intervals: Vec::new(),
        }
    }

    fn udp(&self) -> bool {
        self.info.params.protocol == Protocol::Udp
    }

    /// The `start` object of iperf3's JSON.
    pub fn start_json(&self, timestamp: std::time::SystemTime) -> Value {
        let p = &self.info.params;
        let secs = timestamp.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let connected: Vec<Value> = self
            .info
            .streams
            .iter()
            .map(|s| {
                json!({"socket": s.socket, "local_host": s.local.ip().to_string(), "local_port": s.local.port(),
                       "remote_host": s.peer.ip().to_string(), "remote_port": s.peer.port()})
            })
            .collect();
        let mut m = Map::new();
        m.insert("connected".into(), Value::Array(connected));
        m.insert("version".into(), json!(format!("ringnode {}", env!("CARGO_PKG_VERSION"))));
        m.insert("system_info".into(), json!(system_info()));
        m.insert("timestamp".into(), json!({"time": date(secs), "timesecs": secs}));
        if let Some((host, port)) = &self.info.connecting_to {
            m.insert("connecting_to".into(), json!({"host": host, "port": port}));
        }
        if let Some(a) = self.info.accepted_from {
            m.insert("accepted_connection".into(), json!({"host": a.ip().to_string(), "port": a.port()}));
        }
        m.insert("cookie".into(), json!(self.info.cookie));
        if !self.udp() {
            m.insert("tcp_mss_default".into(), json!(self.info.mss));
        }
        m.insert("target_bitrate".into(), json!(p.bandwidth));
        m.insert("sock_bufsize".into(), json!(p.window));
        m.insert("sndbuf_actual".into(), json!(self.info.sndbuf));
        m.insert("rcvbuf_actual".into(), json!(self.info.rcvbuf));
        m.insert(
            "test_start".into(),
            json!({
                "protocol": if self.udp() { "UDP" } else { "TCP" }, "num_streams": p.parallel, "blksize": p.len,
                "omit": p.omit, "duration": p.time, "bytes": p.bytes, "blocks": p.blocks,
                "reverse": i32::from(p.direction == Direction::Reverse), "tos": 0, "target_bitrate": p.bandwidth,
                "bidir": i32::from(p.direction == Direction::Bidir), "fqrate": 0,
            }),
        );
        Value::Object(m)
    }

    /// The lines iperf3 prints before the intervals.
    pub fn start_text(&self) -> String {
        let mut out = String::new();
        if let Some((host, port)) = &self.info.connecting_to {
            out += &format!("Connecting to host {host}, port {port}\n");
        }
        if let Some(a) = self.info.accepted_from {
            out += &format!("Accepted connection from {}, port {}\n", a.ip(), a.port());
        }
        if self.info.client && self.info.params.direction == Direction::Reverse {
            out += "Reverse mode, remote host is sending\n";
        }
        for s in &self.info.streams {
            out += &format!(
                "[{:>3}] local {} port {} connected to {} port {}\n",
                s.socket,
                s.local.ip(),
                s.local.port(),
                s.peer.ip(),
                s.peer.port()
            );
        }
        out
    }

    fn header(&self, sender: bool) -> &'static str {
        match (self.udp(), sender) {
            (false, true) => "[ ID] Interval           Transfer     Bitrate         Retr  Cwnd        RTT",
            (false, false) => "[ ID] Interval           Transfer     Bitrate",
            (true, true) => "[ ID] Interval           Transfer     Bitrate         Total Datagrams",
            (true, false) => "[ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams",
        }
    }

    /// The interval ending `t` seconds after the streams started, from these samples: its text
    /// lines and its JSON object (also kept for the document).
    pub fn interval(&mut self, t: f64, now: &[Sample]) -> (String, Value) {
        let start = self.prev_t;
        let end = (t - self.counting_from).max(start);
        let secs = (end - start).max(1e-9);
        let omitted = self.omitting;
        let mut text = String::new();
        if self.intervals.is_empty() {
            let sender = self.info.streams.first().is_some_and(|s| s.sender);
            text += self.header(sender);
            text += "\n";
        }
        let mut streams_json = Vec::new();
        let mut sums: [(u64, u64, u64, i64, f64, usize, bool); 2] = Default::default();
        for (i, s) in self.info.streams.iter().enumerate() {
            let (a, b) = (&self.prev[i], &now[i]);
            let bytes = b.bytes - a.bytes;
            let mut o = Map::new();
            o.insert("socket".into(), json!(s.socket));
            o.insert("start".into(), json!(start));
            o.insert("end".into(), json!(end));
            o.insert("seconds".into(), json!(secs));
            o.insert("bytes".into(), json!(bytes));
            o.insert("bits_per_second".into(), json!(rate(bytes, secs)));
            let mut line = format!(
                "[{:>3}] {:>6.2}-{:<6.2} sec  {}  {}/sec",
                s.socket,
                start,
                end,
                adaptive(bytes as f64, false),
                bitrate_text(rate(bytes, secs), self.info.format)
            );
            let group =
                usize::from(self.info.params.direction == Direction::Bidir && s.sender != self.info.streams[0].sender);
            let sum = &mut sums[group];
            sum.0 += bytes;
            sum.5 += 1;
            sum.6 = s.sender;
            if self.udp() {
                if s.sender {
                    let packets = b.packets - a.packets;
                    o.insert("packets".into(), json!(packets));
                    line += &format!("  {packets}");
                    sum.1 += packets;
                } else {
                    let packets = b.udp.highest.saturating_sub(a.udp.highest);
                    let lost = b.udp.lost - a.udp.lost;
                    let pct = if packets > 0 { 100.0 * lost as f64 / packets as f64 } else { 0.0 };
                    o.insert("jitter_ms".into(), json!(b.udp.jitter * 1000.0));
                    o.insert("lost_packets".into(), json!(lost));
                    o.insert("packets".into(), json!(packets));
                    o.insert("lost_percent".into(), json!(pct));
                    line += &format!("  {:.3} ms  {lost}/{packets} ({pct:.2}%)", b.udp.jitter * 1000.0);
                    sum.1 += packets;
                    sum.3 += lost;
                    sum.4 += b.udp.jitter;
                }
            } else if s.sender {
                let info = b.tcp.unwrap_or_default();
                let retr = info.total_retrans.saturating_sub(a.tcp.map_or(info.total_retrans, |x| x.total_retrans));
                self.tcp[i].note(&info);
                o.insert("retransmits".into(), json!(retr));
                o.insert("snd_cwnd".into(), json!(info.snd_cwnd_bytes));
                o.insert("snd_wnd".into(), json!(info.snd_wnd));
                o.insert("rtt".into(), json!(info.rtt_us));
                o.insert("rttvar".into(), json!(info.rttvar_us));
                o.insert("pmtu".into(), json!(info.pmtu));
                line +=
                    &format!("  {retr:>4}   {}   {:>5} us", adaptive(info.snd_cwnd_bytes as f64, false), info.rtt_us);
                sum.2 += u64::from(retr);
            }
            o.insert("omitted".into(), json!(omitted));
            o.insert("sender".into(), json!(s.sender));
            if omitted {
                line += "  (omitted)";
            }
            text += &line;
            text += "\n";
            streams_json.push(Value::Object(o));
        }
        let mut iv = Map::new();
        iv.insert("streams".into(), Value::Array(streams_json));
        for (g, sum) in sums.iter().enumerate() {
            if sum.5 == 0 {
                continue;
            }
            let sender = sum.6;
            let mut o = Map::new();
            o.insert("start".into(), json!(start));
            o.insert("end".into(), json!(end));
            o.insert("seconds".into(), json!(secs));
            o.insert("bytes".into(), json!(sum.0));
            o.insert("bits_per_second".into(), json!(rate(sum.0, secs)));
            if self.udp() {
                o.insert("packets".into(), json!(sum.1));
                if !sender {
                    let pct = if sum.1 > 0 { 100.0 * sum.3 as f64 / sum.1 as f64 } else { 0.0 };
                    o.insert("jitter_ms".into(), json!(sum.4 / sum.5 as f64 * 1000.0));
                    o.insert("lost_packets".into(), json!(sum.3));
                    o.insert("lost_percent".into(), json!(pct));
                }
            } else if sender {
                o.insert("retransmits".into(), json!(sum.2));
            }
            o.insert("omitted".into(), json!(omitted));
            o.insert("sender".into(), json!(sender));
            iv.insert(if g == 0 { "sum" } else { "sum_bidir_reverse" }.into(), Value::Object(o));
            if sum.5 > 1 {
                text += &format!(
                    "[SUM] {:>6.2}-{:<6.2} sec  {}  {}/sec{}\n",
                    start,
                    end,
                    adaptive(sum.0 as f64, false),
                    bitrate_text(rate(sum.0, secs), self.info.format),
                    if omitted { "  (omitted)" } else { "" }
                );
            }
        }
        if self.info.streams.len() > 1 {
            text += "- - - - - - - - - - - - - - - - - - - - - - - - -\n";
        }
        let v = Value::Object(iv);
        self.intervals.push(v.clone());
        self.prev = now.to_vec();
        self.prev_t = end;
        (text, v)
    }

    /// The omitted seconds are over (at `t` seconds since the streams started): counting starts
    /// from these samples, and interval times from zero.
    pub fn end_omit(&mut self, t: f64, now: &[Sample]) {
        self.omitting = false;
        self.counting_from = t;
        self.prev_t = 0.0;
        self.base = now.to_vec();
        self.prev = now.to_vec();
        for (tr, s) in self.tcp.iter_mut().zip(now) {
            *tr = TcpTrack { retrans_base: s.tcp.map_or(0, |i| i.total_retrans), ..TcpTrack::default() };
        }
    }

    /// Whether an interval ending `t` seconds after the streams started would be worth a line
    /// (at least 50 ms long, after the omitted seconds).
    pub fn pending(&self, t: f64) -> bool {
        !self.omitting && (self.intervals.is_empty() || t - self.counting_from - self.prev_t > 0.05)
    }

    /// Whether the omitted seconds are still running.
    pub fn omitting(&self) -> bool {
        self.omitting
    }

    /// The intervals so far, as JSON.
    pub fn intervals_json(&self) -> &[Value] {
        &self.intervals
    }

    /// This side's results for the exchange: each stream's counts since counting started, ended
    /// at the times given (seconds since counting started).
    pub fn local_results(&self, now: &[Sample], ends: &[f64], cpu: [f64; 3], congestion: Option<String>) -> Results {
        let any_sender = self.info.streams.iter().any(|s| s.sender);
        let streams = self
            .info
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (b, n) = (&self.base[i], &now[i]);
                let retr = n.tcp.map_or(0, |t| t.total_retrans.saturating_sub(self.tcp[i].retrans_base));
                StreamResult {
                    id: s.id,
                    bytes: n.bytes - b.bytes,
                    retransmits: if s.sender && !self.udp() { i64::from(retr) } else { -1 },
                    jitter: if s.sender { 0.0 } else { n.udp.jitter },
                    errors: if s.sender { 0 } else { n.udp.lost },
                    omitted_errors: if s.sender { 0 } else { b.udp.lost },
                    packets: if s.sender { n.packets as i64 } else { n.udp.highest as i64 },
                    omitted_packets: if s.sender { b.packets as i64 } else { b.udp.highest as i64 },
                    omitted_given: true,
                    start_time: 0.0,
                    end_time: ends[i],
                }
            })
            .collect();
        Results {
            cpu,
            sender_has_retransmits: if !any_sender { -1 } else { i32::from(!self.udp()) },
            congestion_used: congestion,
            streams,
            server_output_text: None,
            server_output_json: None,
        }
    }

    /// The summary, from this side's final results and the peer's (absent when the exchange
    /// failed: then only this side's figures are shown, and said to be so).
    pub fn finish(&self, mine: &Results, peer: Option<&Results>, now: &[Sample], zc: Option<(u64, u64)>) -> Finished {
        let udp = self.udp();
        let bidir = self.info.params.direction == Direction::Bidir;
        let mut text = String::from("- - - - - - - - - - - - - - - - - - - - - - - - -\n");
        let any_local_sender = self.info.streams.first().is_some_and(|s| s.sender);
        text += self.header(true).trim_end_matches("  Cwnd        RTT").trim_end_matches("Total Datagrams");
        if udp {
            text += "Jitter    Lost/Total Datagrams";
        }
        text += "\n";
        let mut streams_json = Vec::new();
        // Per group (0: like the first stream, 1: the other direction in bidir): sender bytes,
        // receiver bytes, sender seconds, receiver seconds, retransmits, packets (sender), lost,
        // packets (receiver), jitter sum, streams, "sender" flag.
        #[derive(Default, Clone, Copy)]
        struct Sum {
            sent: u64,
            received: u64,
            stime: f64,
            rtime: f64,
            retr: i64,
            spackets: i64,
            lost: i64,
            rpackets: i64,
            jitter: f64,
            n: usize,
            sender: bool,
        }
        let mut sums = [Sum::default(); 2];
        for (i, s) in self.info.streams.iter().enumerate() {
            let me = mine.streams.get(i).cloned().unwrap_or_default();
            let mut them = peer.and_then(|p| p.streams.iter().find(|x| x.id == s.id).cloned());
            if let Some(t) = them.as_mut().filter(|t| !t.omitted_given) {
                // An older iperf3 counted the omitted datagrams in its totals without saying how
                // many: this side's count of them stands in (the datagrams in flight at the end
                // of the omitted seconds may differ by a few).
                let b = self.base.get(i).copied().unwrap_or_default();
                t.omitted_packets = if s.sender { b.packets as i64 } else { b.udp.highest as i64 };
            }
            let (snd, rcv) = if s.sender { (Some(me.clone()), them) } else { (them, Some(me.clone())) };
            let snd = snd.unwrap_or_default();
            let rcv_known = rcv.is_some();
            let rcv = rcv.unwrap_or_default();
            let stime = snd.end_time - snd.start_time;
            let rtime = rcv.end_time - rcv.start_time;
            let group = usize::from(bidir && s.sender != any_local_sender);
            let sum = &mut sums[group];
            sum.sent += snd.bytes;
            sum.received += rcv.bytes;
            sum.stime = sum.stime.max(stime);
            sum.rtime = sum.rtime.max(rtime);
            sum.retr += snd.retransmits.max(0);
            sum.spackets = sum.spackets.saturating_add(snd.packets.saturating_sub(snd.omitted_packets));
            let rcv_lost = rcv.errors.saturating_sub(rcv.omitted_errors);
            sum.lost = sum.lost.saturating_add(rcv_lost);
            sum.rpackets = sum.rpackets.saturating_add(rcv.packets.saturating_sub(rcv.omitted_packets));
            sum.jitter += rcv.jitter;
            sum.n += 1;
            sum.sender = s.sender;
            let line = |bytes: u64, secs: f64| {
                format!(
                    "[{:>3}] {:>6.2}-{:<6.2} sec  {}  {}/sec",
                    s.socket,
                    0.0,
                    secs,
                    adaptive(bytes as f64, false),
                    bitrate_text(rate(bytes, secs), self.info.format)
                )
            };
            if udp {
                let rp = rcv.packets.saturating_sub(rcv.omitted_packets);
                let pct = if rp > 0 { 100.0 * rcv_lost as f64 / rp as f64 } else { 0.0 };
                let sp = snd.packets.saturating_sub(snd.omitted_packets);
                if s.sender || peer.is_some() {
                    text += &format!("{}  {:.3} ms  0/{sp} (0%)  sender\n", line(snd.bytes, stime), 0.0);
                }
                if rcv_known {
                    text += &format!(
                        "{}  {:.3} ms  {}/{rp} ({pct:.2}%)  receiver\n",
                        line(rcv.bytes, rtime),
                        rcv.jitter * 1000.0,
                        rcv_lost
                    );
                }
                let ooo = if s.sender {
                    0
                } else {
                    now.get(i)
                        .map_or(0, |x| x.udp.out_of_order)
                        .saturating_sub(self.base.get(i).map_or(0, |x| x.udp.out_of_order))
                };
                if ooo > 0 {
                    text += &format!("[{:>3}] {ooo} datagrams received out-of-order\n", s.socket);
                }
                streams_json.push(json!({"udp": {
                    "socket": s.socket, "start": 0, "end": stime, "seconds": stime, "bytes": snd.bytes,
                    "bits_per_second": rate(snd.bytes, stime), "jitter_ms": rcv.jitter * 1000.0,
                    "lost_packets": rcv_lost, "packets": sp, "lost_percent": pct, "out_of_order": ooo, "sender": s.sender,
                }}));
            } else {
                let retr = if snd.retransmits >= 0 { format!("{:>5}", snd.retransmits) } else { "     ".into() };
                if s.sender || peer.is_some() {
                    text += &format!("{}  {retr}             sender\n", line(snd.bytes, stime));
                }
                if rcv_known {
                    text += &format!("{}                  receiver\n", line(rcv.bytes, rtime));
                }
                let tr = &self.tcp[i];
                let mut sender_obj = json!({
                    "socket": s.socket, "start": 0, "end": stime, "seconds": stime, "bytes": snd.bytes,
                    "bits_per_second": rate(snd.bytes, stime), "retransmits": snd.retransmits.max(0), "sender": s.sender,
                });
                if s.sender {
                    let mean = tr.rtt_sum.checked_div(tr.rtt_n).unwrap_or(0);
                    sender_obj["max_snd_cwnd"] = json!(tr.max_cwnd);
                    sender_obj["max_snd_wnd"] = json!(tr.max_snd_wnd);
                    sender_obj["max_rtt"] = json!(tr.rtt_max);
                    sender_obj["min_rtt"] = json!(tr.rtt_min);
                    sender_obj["mean_rtt"] = json!(mean);
                }
                streams_json.push(json!({
                    "sender": sender_obj,
                    "receiver": {"socket": s.socket, "start": 0, "end": rtime, "seconds": rtime, "bytes": rcv.bytes,
                                 "bits_per_second": rate(rcv.bytes, rtime), "sender": s.sender},
                }));
            }
        }
        let mut end = Map::new();
        end.insert("streams".into(), Value::Array(streams_json));
        for (g, sum) in sums.iter().enumerate() {
            if sum.n == 0 {
                continue;
            }
            let suffix = if g == 1 { "_bidir_reverse" } else { "" };
            let pct = if sum.rpackets > 0 { 100.0 * sum.lost as f64 / sum.rpackets as f64 } else { 0.0 };
            let jitter_ms = sum.jitter / sum.n as f64 * 1000.0;
            let mut sent = json!({"start": 0, "end": sum.stime, "seconds": sum.stime, "bytes": sum.sent,
                                  "bits_per_second": rate(sum.sent, sum.stime), "sender": if udp { json!(true) } else { json!(sum.sender) }});
            let mut recv = json!({"start": 0, "end": sum.rtime, "seconds": sum.rtime, "bytes": sum.received,
                                  "bits_per_second": rate(sum.received, sum.rtime), "sender": if udp { json!(false) } else { json!(sum.sender) }});
            if udp {
                for (o, (j, l, p, pc)) in
                    [(&mut sent, (0.0, 0, sum.spackets, 0.0)), (&mut recv, (jitter_ms, sum.lost, sum.rpackets, pct))]
                {
                    o["jitter_ms"] = json!(j);
                    o["lost_packets"] = json!(l);
                    o["packets"] = json!(p);
                    o["lost_percent"] = json!(pc);
                }
                end.insert(
                    format!("sum{suffix}"),
                    json!({"start": 0, "end": sum.rtime, "seconds": sum.rtime, "bytes": sum.sent,
                           "bits_per_second": rate(sum.sent, sum.stime), "jitter_ms": jitter_ms, "lost_packets": sum.lost,
                           "packets": sum.rpackets, "lost_percent": pct, "sender": sum.sender}),
                );
            } else {
                sent["retransmits"] = json!(sum.retr);
            }
            end.insert(format!("sum_sent{suffix}"), sent);
            end.insert(format!("sum_received{suffix}"), recv);
            if sum.n > 1 {
                let line = |bytes: u64, secs: f64| {
                    format!(
                        "[SUM] {:>6.2}-{:<6.2} sec  {}  {}/sec",
                        0.0,
                        secs,
                        adaptive(bytes as f64, false),
                        bitrate_text(rate(bytes, secs), self.info.format)
                    )
                };
                // Without the peer's results only this side's line is known.
                let (sender_known, receiver_known) = (sum.sender || peer.is_some(), !sum.sender || peer.is_some());
                if udp {
                    if sender_known {
                        text +=
                            &format!("{}  {:.3} ms  0/{} (0%)  sender\n", line(sum.sent, sum.stime), 0.0, sum.spackets);
                    }
                    if receiver_known {
                        text += &format!(
                            "{}  {jitter_ms:.3} ms  {}/{} ({pct:.2}%)  receiver\n",
                            line(sum.received, sum.rtime),
                            sum.lost,
                            sum.rpackets
                        );
                    }
                } else {
                    if sender_known {
                        text += &format!("{}  {:>5}             sender\n", line(sum.sent, sum.stime), sum.retr);
                    }
                    if receiver_known {
                        text += &format!("{}                  receiver\n", line(sum.received, sum.rtime));
                    }
                }
            }
        }
        let remote = peer.map_or([0.0; 3], |p| p.cpu);
        end.insert(
            "cpu_utilization_percent".into(),
            json!({"host_total": mine.cpu[0], "host_user": mine.cpu[1], "host_system": mine.cpu[2],
                   "remote_total": remote[0], "remote_user": remote[1], "remote_system": remote[2]}),
        );
        if !udp {
            let local = mine.congestion_used.clone();
            let remote = peer.and_then(|p| p.congestion_used.clone());
            let (s, r) = if any_local_sender { (local, remote) } else { (remote, local) };
            if let Some(s) = s {
                end.insert("sender_tcp_congestion".into(), json!(s));
            }
            if let Some(r) = r {
                end.insert("receiver_tcp_congestion".into(), json!(r));
            }
        }
        let (me, them) = if any_local_sender { ("sender", "receiver") } else { ("receiver", "sender") };
        let me = if bidir { "local" } else { me };
        let them = if bidir { "remote" } else { them };
        text += &format!(
            "CPU Utilization: local/{me} {:.1}% ({:.1}%u/{:.1}%s), remote/{them} {}\n",
            mine.cpu[0],
            mine.cpu[1],
            mine.cpu[2],
            match peer {
                Some(p) => format!("{:.1}% ({:.1}%u/{:.1}%s)", p.cpu[0], p.cpu[1], p.cpu[2]),
                None => "unknown (no results from the peer)".into(),
            }
        );
        if let Some((zero, copied)) = zc {
            text += &format!("Zero-copy sends: {zero} without a copy, {copied} copied by the kernel anyway\n");
            end.insert("zerocopy".into(), json!({"sends_without_copy": zero, "sends_copied": copied}));
        }
        if peer.is_none() {
            text += "The peer's results did not arrive: the receiver's figures are missing.\n";
        }
        Finished { text, end: Value::Object(end) }
    }
}

/// `uname -a`-like text for the report.
fn system_info() -> String {
    let release = crate::sys::kernel_release();
    format!("Linux {release} {}", std::env::consts::ARCH)
}

/// An RFC 7231 date, as iperf3 writes `timestamp.time`.
pub fn date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One `--json-stream` line.
pub fn event_line(event: &str, data: Value) -> String {
    json!({"event": event, "data": data}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_iperf3_prints_them() {
        assert_eq!(adaptive(3.10 * 1024.0 * 1024.0 * 1024.0, false), "3.10 GBytes");
        assert_eq!(adaptive(26.6e9, true), "26.6 Gbits");
        assert_eq!(adaptive(895.0 * 1024.0, false), " 895 KBytes");
        assert_eq!(adaptive(0.0, true), "0.00 bits");
        assert_eq!(bitrate_text(26.6e9, Some('m')), "26600 Mbits");
        assert_eq!(bitrate_text(8.0 * 1024.0 * 1024.0 * 5.0, Some('M')), "5.00 MBytes");
        assert_eq!(bitrate_text(26.6e9, None), "26.6 Gbits");
    }

    #[test]
    fn dates_as_http_writes_them() {
        // The timestamp iperf3 3.12 printed in a run on this machine.
        assert_eq!(date(1_796_406_972), "Fri, 04 Dec 2026 17:56:12 GMT");
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
