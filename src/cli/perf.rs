//! `ringnode perf`: the throughput tool's flags (ours, and iperf3's spellings where they do not
//! clash) and its command.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::Failure;
use crate::throughput::proto::{Direction, Params, Protocol, DEFAULT_PORT};
use crate::throughput::{client::LatencyOptions, run_client, ClientConfig, ClientError, OutputFormat};
use crate::throughput::{PerfServer, ServerLimits, ServerOptions};

/// Which side to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PerfRole {
    /// Serve tests (`iperf3 -s`).
    Server,
    /// Run a test against a server (`iperf3 -c HOST`).
    Client,
}

/// `ringnode perf`: network throughput tests, iperf3-compatible.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "iperf3's spellings work too: -s, -c HOST, -p, -P, -l, -t, -n, -O, -i, -R, -u, -b, -w, -C, -B, \
-J, -Z, -f, -1, -4, -6, -A. Exit codes: 0 the test ran, 1 it was refused or failed (partial results are printed), \
2 a bad flag, 3 io_uring unavailable."
)]
pub struct PerfArgs {
    /// `server` or `client` (or iperf3's -s, -c HOST).
    #[arg(value_enum)]
    pub role: Option<PerfRole>,
    /// Run the server (iperf3's -s).
    #[arg(short = 's', long = "server", conflicts_with_all = ["client", "target"])]
    pub server_flag: bool,
    /// Run the client against HOST (iperf3's -c).
    #[arg(short = 'c', long = "client", value_name = "HOST")]
    pub client: Option<String>,
    /// The server to test against: HOST or HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub target: Option<String>,
    /// The server's port (server: where it listens; client: where it connects).
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Server: the address to listen on, ADDR or ADDR:PORT [default: 0.0.0.0, or :: (IPv6 only)
    /// with -6].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Server: serve one test, then exit.
    #[arg(short = '1', long)]
    pub one_off: bool,
    /// Server: tests at once; one more hears "busy".
    #[arg(long, default_value_t = 16)]
    pub max_tests: usize,
    /// Server: the longest test it runs (omitted seconds included).
    #[arg(long, default_value = "1h", value_parser = super::parse_duration)]
    pub max_duration: Duration,
    /// Server: the highest bitrate per stream a test may ask for, e.g. `1G` (a test asking for
    /// no limit is refused too).
    #[arg(long, value_parser = parse_rate)]
    pub max_bitrate: Option<u64>,
    /// UDP instead of TCP.
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Parallel streams (per direction).
    #[arg(short = 'P', long = "streams", visible_alias = "parallel", default_value_t = 1)]
    pub streams: u32,
    /// Bytes per write, and per datagram with UDP [default: 128KiB TCP, 1460 UDP].
    #[arg(short = 'l', long, value_parser = parse_bytes)]
    pub length: Option<u64>,
    /// Seconds to run (`10`, `10s`, `1m`).
    #[arg(short = 't', long, value_parser = parse_seconds, conflicts_with = "bytes")]
    pub time: Option<f64>,
    /// Bytes to send instead of a time (`1G`, `500M`).
    #[arg(short = 'n', long, value_parser = parse_bytes)]
    pub bytes: Option<u64>,
    /// Seconds at the start left out of the results.
    #[arg(short = 'O', long, value_parser = parse_seconds_or_zero, default_value = "0")]
    pub omit: f64,
    /// Seconds between interval reports (0: none).
    #[arg(short = 'i', long, value_parser = parse_interval, default_value = "1")]
    pub interval: f64,
    /// The server sends, the client receives.
    #[arg(short = 'R', long, conflicts_with = "bidir")]
    pub reverse: bool,
    /// Both directions at once.
    #[arg(long)]
    pub bidir: bool,
    /// Zero-copy sends (`SEND_ZC`); the report says how many the kernel copied anyway.
    #[arg(short = 'Z', long)]
    pub zerocopy: bool,
    /// Target bitrate per stream, bits/s (`100M`, `1G`; 0: as fast as possible) [default: 1M for UDP].
    #[arg(short = 'b', long, visible_alias = "bandwidth", value_parser = parse_rate)]
    pub bitrate: Option<u64>,
    /// Socket buffer size (both directions).
    #[arg(short = 'w', long, value_parser = parse_bytes)]
    pub window: Option<u64>,
    /// TCP congestion control algorithm.
    #[arg(short = 'C', long)]
    pub congestion: Option<String>,
    /// Local address to bind.
    #[arg(short = 'B', long)]
    pub bind: Option<IpAddr>,
    /// Local port of the client's data connections (the next streams take the next ports).
    #[arg(long)]
    pub cport: Option<u16>,
    /// iperf3's JSON document at the end.
    #[arg(short = 'J', long, conflicts_with = "json_stream")]
    pub json: bool,
    /// One JSON event per line as the test runs (iperf3 3.17's layout).
    #[arg(long)]
    pub json_stream: bool,
    /// Also measure latency under load: a ping-pong on a connection of its own (ringnode servers).
    #[arg(long)]
    pub latency: bool,
    /// Time between latency probes.
    #[arg(long, default_value = "10ms", value_parser = super::parse_duration)]
    pub latency_every: Duration,
    /// Write the latency histogram here (HdrHistogram interval log, for `ringnode report`).
    #[arg(long)]
    pub latency_log: Option<std::path::PathBuf>,
    /// UDP segmentation offload on the sender and receive offload on the receiver (ringnode at both ends).
    #[arg(long)]
    pub gso: bool,
    /// How long connecting may take.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub connect_timeout: Duration,
    /// Prefix each text line with the time.
    #[arg(long)]
    pub timestamps: bool,
    /// Print the server's report of the test too.
    #[arg(long)]
    pub get_server_output: bool,
    /// The bitrate column's unit: k, m, g, t (bits/sec) or K, M, G, T (bytes/sec) [default: to fit].
    #[arg(short = 'f', long, value_parser = parse_format)]
    pub format: Option<char>,
    /// IPv4 only.
    #[arg(short = '4', long = "version4", conflicts_with = "v6")]
    pub v4: bool,
    /// IPv6 only.
    #[arg(short = '6', long = "version6")]
    pub v6: bool,
    /// Run on this CPU (iperf3's -A N; `-A N,M` takes N here).
    #[arg(short = 'A', long = "affinity")]
    pub affinity: Option<String>,
    /// Server cores (threads, one ring each).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
}

/// Sizes as iperf3 takes them: `1460`, `128K`, `1M`, `1G` (binary: K = 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size such as 1460, 128K or 1G");
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v * mult as f64 > 1e18 {
        return Err(bad());
    }
    Ok((v * mult as f64) as u64)
}

/// Rates as iperf3 takes them: `100M`, `1.5G`, `0` (decimal: K = 1000), with an optional
/// `/burst` (ignored).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a bitrate such as 0, 100M or 1.5G");
    let t = s.trim().split('/').next().unwrap_or("");
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        Some('t' | 'T') => (&t[..t.len() - 1], 1e12),
        _ => (t, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 || v * mult > 1e15 {
        return Err(bad());
    }
    Ok((v * mult) as u64)
}

fn parse_format(s: &str) -> Result<char, String> {
    match s {
        "k" | "m" | "g" | "t" | "K" | "M" | "G" | "T" => Ok(s.chars().next().expect("one")),
        _ => Err(format!("'{s}': one of k, m, g, t (bits) or K, M, G, T (bytes)")),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86400.0 => Ok(v),
        Ok(_) => Err(format!("'{s}': between 0 and 86400 seconds")),
        Err(_) => super::parse_duration(s).map(|d| d.as_secs_f64()),
    }
}

/// 0 (no intervals) or 0.1 to 60 seconds, as iperf3 allows.
fn parse_interval(s: &str) -> Result<f64, String> {
    match parse_seconds_or_zero(s)? {
        v if v == 0.0 || (0.1..=60.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}': 0 (none) or between 0.1 and 60 seconds")),
    }
}

fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    parse_seconds(s)
}

/// HOST or HOST:PORT, resolved (IPv4 or IPv6 first as asked).
fn resolve(host: &str, port: u16, v4: bool, v6: bool) -> Result<SocketAddr, Failure> {
    let candidates: Vec<SocketAddr> = if let Ok(a) = host.parse::<SocketAddr>() {
        vec![a]
    } else if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let (h, p) = match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => (h, p.parse().expect("checked")),
            _ => (host, port),
        };
        (h, p).to_socket_addrs().map_err(|e| Failure::usage(format!("'{host}': cannot resolve: {e}")))?.collect()
    };
    candidates
        .into_iter()
        .find(|a| (!v4 || a.is_ipv4()) && (!v6 || a.is_ipv6()))
        .ok_or_else(|| Failure::usage(format!("'{host}': no {} address", if v6 { "IPv6" } else { "IPv4" })))
}

fn runtime_for(a: &PerfArgs, name: &str, cores: usize) -> Result<crate::runtime::RuntimeConfig, Failure> {
    let allowed = crate::sys::allowed_cpus();
    if let Some(aff) = &a.affinity {
        let first = aff.split(',').next().unwrap_or("");
        let cpu: usize = first.parse().map_err(|_| Failure::usage(format!("-A '{aff}': expected a CPU number")))?;
        if !allowed.contains(&cpu) {
            return Err(Failure::usage(format!("-A {cpu}: not a CPU this process may run on ({allowed:?})")));
        }
        return Ok(crate::runtime::RuntimeConfig::on_cpus(&[cpu], true, name));
    }
    if cores == 0 || cores > allowed.len() {
        return Err(Failure::usage(format!("--cores {cores}: between 1 and {}", allowed.len())));
    }
    let pin = cores == allowed.len() && cores > 1;
    Ok(crate::runtime::RuntimeConfig::on_cpus(&allowed[..cores], pin, name))
}

/// Runs `ringnode perf`.
pub fn perf_cmd(a: PerfArgs) -> Result<(), Failure> {
    let server = a.server_flag || a.role == Some(PerfRole::Server);
    let client = a.client.is_some() || a.role == Some(PerfRole::Client) || a.target.is_some();
    match (server, client) {
        (true, true) => Err(Failure::usage("perf: a server or a client, not both")),
        (false, false) => Err(Failure::usage("perf: say `server` (-s) or `client --target HOST` (-c HOST)")),
        (true, false) => perf_server(&a),
        (false, true) => perf_client(&a),
    }
}

fn perf_server(a: &PerfArgs) -> Result<(), Failure> {
    let listen = match &a.listen {
        Some(l) => resolve(l, a.port, a.v4, a.v6)?,
        None => match a.bind {
            Some(ip) => SocketAddr::new(ip, a.port),
            None => SocketAddr::new(if a.v6 { IpAddr::from([0u16; 8]) } else { IpAddr::from([0, 0, 0, 0]) }, a.port),
        },
    };
    let mut rt = runtime_for(a, "perf", a.cores)?;
    let probe = super::commands::require_io_uring()?;
    rt.handle_signals = true;
    let json = a.json;
    let server = PerfServer::start(ServerOptions {
        listen,
        limits: ServerLimits {
            max_tests: a.max_tests.max(1),
            max_duration: a.max_duration,
            max_bitrate: a.max_bitrate,
            ..ServerLimits::default()
        },
        one_off: a.one_off,
        json,
        interval: a.interval,
        on_report: Arc::new(move |report: String| {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            // With -J, standard output holds the reports' JSON documents and nothing else.
            if !json {
                let _ = writeln!(out, "{}", crate::throughput::server::report_banner());
            }
            let _ = writeln!(out, "{report}");
            let _ = out.flush();
        }),
        runtime: rt,
    })?;
    {
        use std::io::Write as _;
        let line = format!(
            "Server listening on {} (ringnode perf: iperf3 protocol, up to {} tests at once, {})",
            server.local_addr(),
            a.max_tests.max(1),
            probe.mode.flags()
        );
        if json {
            let _ = writeln!(std::io::stderr(), "{line}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
    let stats = server.join()?;
    tracing::debug!(?stats, "perf server stopped");
    Ok(())
}

fn perf_client(a: &PerfArgs) -> Result<(), Failure> {
    let host = a
        .client
        .clone()
        .or_else(|| a.target.clone())
        .ok_or_else(|| Failure::usage("perf client: --target HOST is required"))?;
    let target = resolve(&host, a.port, a.v4, a.v6)?;
    // The report names the host as written, without a port given with it.
    let host = match host.parse::<SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h.to_string(),
            _ => host,
        },
    };
    let protocol = if a.udp { Protocol::Udp } else { Protocol::Tcp };
    let len = a.length.unwrap_or(if a.udp { 1460 } else { 128 * 1024 });
    let max_len = if a.udp { 65_507 } else { 16 << 20 };
    if len > max_len || (a.udp && len < 16) {
        return Err(Failure::usage(format!(
            "--length {len}: between {} and {max_len} bytes",
            if a.udp { 16 } else { 1 }
        )));
    }
    if a.streams == 0 || a.streams > 128 {
        return Err(Failure::usage(format!("--streams {}: between 1 and 128", a.streams)));
    }
    if a.gso && !a.udp {
        return Err(Failure::usage("--gso: UDP only (add --udp)"));
    }
    if a.zerocopy && a.udp {
        return Err(Failure::usage("--zerocopy: TCP only (UDP sends many datagrams per enter, or --gso)"));
    }
    if let Some(cc) = &a.congestion {
        let available =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
        if !available.is_empty() && !available.split_whitespace().any(|c| c == cc) {
            return Err(Failure::usage(format!(
                "--congestion {cc}: not available here (available: {})",
                available.trim()
            )));
        }
    }
    let params = Params {
        protocol,
        omit: a.omit,
        time: if a.bytes.is_some() { 0.0 } else { a.time.unwrap_or(10.0) },
        bytes: a.bytes.unwrap_or(0),
        blocks: 0,
        parallel: a.streams,
        direction: if a.bidir {
            Direction::Bidir
        } else if a.reverse {
            Direction::Reverse
        } else {
            Direction::Forward
        },
        window: a.window.map_or(0, |w| w.min(u32::MAX as u64) as u32),
        len: len as u32,
        bandwidth: a.bitrate.unwrap_or(if a.udp { 1_000_000 } else { 0 }),
        congestion: a.congestion.clone(),
        get_server_output: a.get_server_output,
        udp_counters_64bit: false,
        zerocopy: a.zerocopy,
        nodelay: false,
        mss: 0,
        gso: a.gso,
        ..Params::default()
    };
    let format = if a.json {
        OutputFormat::Json
    } else if a.json_stream {
        OutputFormat::JsonStream
    } else {
        OutputFormat::Text
    };
    let rt = runtime_for(a, "perf-client", 1)?;
    super::commands::require_io_uring()?;
    let mut rt = rt;
    rt.handle_signals = true;
    let cfg = ClientConfig {
        target,
        host: host.clone(),
        params,
        interval: a.interval,
        format,
        bind: a.bind,
        cport: a.cport,
        connect_timeout: a.connect_timeout,
        latency: a.latency.then(|| LatencyOptions { every: a.latency_every, size: 64, hdr_log: a.latency_log.clone() }),
        timestamps: a.timestamps,
        format_unit: a.format,
        out: Arc::new(|line: &str| {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }),
        runtime: rt,
    };
    match run_client(cfg) {
        Ok(o) => {
            if format == OutputFormat::Json {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&o.json).unwrap_or_default());
            } else if format == OutputFormat::Text {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout(), "\nringnode perf done.");
            }
            Ok(())
        }
        Err(ClientError::Runtime(r)) => Err(r.into()),
        Err(e) => {
            // A test that never started still answers in the format asked for, as iperf3 does
            // (one that started printed its partial results and the error).
            if !matches!(e, ClientError::Partial(_)) {
                use std::io::Write as _;
                let msg = e.to_string();
                if format == OutputFormat::Json {
                    let doc = serde_json::json!({"start": {}, "intervals": [], "end": {}, "error": msg});
                    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                } else if format == OutputFormat::JsonStream {
                    let _ = writeln!(
                        std::io::stdout(),
                        "{}",
                        crate::throughput::report::event_line("error", serde_json::json!(msg))
                    );
                }
            }
            Err(Failure::runtime(format!("perf: {e}")))
        }
    }
}

/// A `perf -J` document (ringnode's or iperf3's), if `path` holds one.
pub fn read_perf_doc(path: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read(path).ok()?;
    if text.iter().find(|b| !b.is_ascii_whitespace()).is_none_or(|b| *b != b'{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("intervals").is_some_and(|i| i.is_array()).then_some(v)
}

/// `ringnode report` over `perf -J` documents: bits per second per interval (each direction's
/// sum), printed, and drawn with `--svg`.
pub fn throughput_report(
    files: &[std::path::PathBuf],
    docs: &[serde_json::Value],
    svg: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (f, d) in files.iter().zip(docs) {
        let name = f.file_name().map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into_owned());
        for (key, label) in [("sum", ""), ("sum_bidir_reverse", " (reverse)")] {
            // Time runs on across the omitted seconds (their intervals restart at zero).
            let mut points = Vec::new();
            let mut t = 0.0;
            for iv in d["intervals"].as_array().into_iter().flatten() {
                let s = &iv[key];
                let (Some(secs), Some(bps)) = (s["seconds"].as_f64(), s["bits_per_second"].as_f64()) else { continue };
                t += secs;
                points.push((t, bps));
            }
            if !points.is_empty() {
                series.push((format!("{name}{label}"), points));
            }
        }
    }
    if series.is_empty() {
        return Err(Failure::runtime("report: the documents have no intervals"));
    }
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<serde_json::Value> = series
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "intervals": p.iter().map(|(t, b)| serde_json::json!({"end": t, "bits_per_second": b})).collect::<Vec<_>>()}))
            .collect();
        let _ = writeln!(out, "{}", serde_json::json!({"throughput": v}));
    } else {
        for (n, p) in &series {
            let _ = writeln!(out, "{n}:");
            for (t, b) in p {
                let _ = writeln!(out, "  {t:8.2} s  {}/sec", crate::throughput::report::adaptive(*b, true));
            }
        }
    }
    if let Some(path) = svg {
        let doc = crate::report::line_svg("throughput per interval", "seconds", "bits per second", &series);
        std::fs::write(path, doc)
            .map_err(|e| Failure::runtime(format!("--svg {}: cannot write: {e}", path.display())))?;
        if !json {
            let _ = writeln!(out, "plot: {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_as_iperf3_reads_them() {
        assert_eq!(parse_bytes("128K"), Ok(131_072));
        assert_eq!(parse_bytes("1460"), Ok(1460));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("0").is_err() && parse_bytes("12q").is_err());
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5G/100"), Ok(1_500_000_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_seconds("10"), Ok(10.0));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert!(parse_seconds("-1").is_err());
    }
}
