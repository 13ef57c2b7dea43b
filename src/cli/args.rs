//! The commands and flags, with their defaults stated once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// ringnode: a thread-per-core io_uring node runtime and its tools.
#[derive(Debug, Parser)]
#[command(name = "ringnode", version, about, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// How events (warnings, errors) are written to standard error: one line each for a person,
    /// or one JSON object each. `RUST_LOG` filters them (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `ringnode: warning: …`, one line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// The tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Echo server: sends back every byte (TCP) or datagram (UDP) it receives.
    Echo {
        /// Address to listen on, e.g. `127.0.0.1:7000` or `[::1]:7000` (port 0: any free port).
        #[arg(long, value_parser = parse_addr)]
        listen: SocketAddr,
        /// Where the cores run.
        #[command(flatten)]
        cpus: CpuArgs,
        /// Echo UDP datagrams instead of TCP streams.
        #[arg(long, conflicts_with = "framed")]
        udp: bool,
        /// Echo native frames (docs/PROTOCOL.md) instead of bytes.
        #[arg(long)]
        framed: bool,
        /// Largest frame payload accepted (framed); larger frames close the connection.
        #[arg(long, default_value = "1MiB", value_parser = parse_size)]
        max_frame: usize,
        /// Payloads of this size or more are sent with zero-copy send (framed).
        #[arg(long, default_value = "64KiB", value_parser = parse_size)]
        zc_threshold: usize,
        /// Bytes a connection may have queued for sending (framed).
        #[arg(long, default_value = "4MiB", value_parser = parse_size)]
        send_limit: usize,
        /// Close a framed connection whose HELLO has not arrived this long after accept (0: never).
        #[arg(long, default_value = "10s", value_parser = parse_duration_or_zero)]
        handshake_timeout: Duration,
        /// Close a connection that received no whole frame (or bytes) and finished no send for this
        /// long (0: never).
        #[arg(long, default_value = "300s", value_parser = parse_duration_or_zero)]
        idle_timeout: Duration,
        /// Abort a connection whose send makes no progress for this long: a peer that does not read
        /// (0: never).
        #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero)]
        send_timeout: Duration,
        /// Serve an HTTP admin endpoint here: `GET /healthz`, `GET /stats` (counters summed over
        /// cores and per core, as JSON), e.g. `127.0.0.1:9000`.
        #[arg(long, value_parser = parse_addr)]
        admin: Option<SocketAddr>,
    },
    /// Load generator: echo, stream, framed, connect or http; closed loop, or open loop at a rate.
    Load(Box<LoadArgs>),
    /// Network throughput tests that speak iperf3's protocol: `perf server` (iperf3 -s) and
    /// `perf client --target HOST` (iperf3 -c HOST), against each other or against iperf3.
    Perf(Box<super::perf::PerfArgs>),
    /// Merges HdrHistogram interval logs from `load --hdr-log` (histograms added, never
    /// percentiles averaged), prints the percentiles and optionally draws them as an SVG; or, given
    /// `perf -J` documents, prints and draws throughput per interval.
    Report {
        /// Interval log files, or `perf -J` JSON documents.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Write the latency percentile plot here.
        #[arg(long)]
        svg: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What this kernel offers: io_uring setup flags, features and opcodes.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Starts an echo server on loopback and runs a load against it (server and client on separate
    /// CPUs when there are at least two).
    Demo {
        /// How long the load runs.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Payload size.
        #[arg(long, default_value = "64", value_parser = parse_size)]
        size: usize,
        /// Run on these CPUs (`0-3`, `1,3`): the server on the first half, the client on the rest.
        #[arg(long, value_parser = parse_cpu_list)]
        cpus: Option<CpuList>,
        /// Do not pin the threads to CPUs.
        #[arg(long)]
        no_pin: bool,
    },
}

/// Where a command's cores run: `--cores`, `--cpus`, `--no-pin`.
#[derive(Debug, Clone, clap::Args)]
pub struct CpuArgs {
    /// Cores (threads, one ring each) [default: one per CPU this process may use]. Threads are
    /// pinned when they take every allowed CPU; fewer cores run unpinned, so that several
    /// processes on one machine do not all stack on its first CPUs (choose CPUs with --cpus).
    #[arg(long, conflicts_with = "cpus")]
    pub cores: Option<usize>,
    /// One core on each of these CPUs, pinned: `2`, `0-3`, `1,3,5-7`.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Do not pin the cores' threads to CPUs (the scheduler places them).
    #[arg(long)]
    pub no_pin: bool,
}

/// A list of CPU numbers as `--cpus` takes it, in the order given, without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `2`, `0-3`, `1,3,5-7` (the `taskset -c` notation).
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let bad = || format!("'{s}' is not a CPU list such as 2, 0-3 or 1,3,5-7");
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => {
                (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?)
            }
            None => {
                let a = part.parse::<usize>().map_err(|_| bad())?;
                (a, a)
            }
        };
        if a > b || b >= 4096 {
            return Err(bad());
        }
        for c in a..=b {
            if out.contains(&c) {
                return Err(format!("'{s}': CPU {c} is listed twice"));
            }
            out.push(c);
        }
    }
    Ok(CpuList(out))
}

/// `ringnode load`: a load generator with several modes, closed or open loop.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// echo: request/response checked byte for byte (or --reply-bytes/--reply-delimiter for other
    /// servers); stream: one way; framed: native frames; connect: connections per second; http:
    /// HTTP/1.1 keep-alive requests.
    #[arg(long, value_enum, default_value_t = LoadMode::Echo)]
    pub mode: LoadMode,
    /// The server, e.g. `127.0.0.1:7000` or `[::1]:80`.
    #[arg(long, value_parser = parse_addr)]
    pub target: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Payload size, or a range of sizes: 64, 4KiB, 64-1024 [default: 64] (echo, framed, stream).
    #[arg(long, value_parser = parse_size_range, conflicts_with = "payload")]
    pub size: Option<(usize, usize)>,
    /// A fixed payload instead of generated ones: a string, or @FILE (echo, framed, stream,
    /// connect: one exchange per connection).
    #[arg(long)]
    pub payload: Option<String>,
    /// A reply is this many bytes, for servers that do not echo (echo mode, connect with --payload).
    #[arg(long, conflicts_with = "reply_delimiter")]
    pub reply_bytes: Option<usize>,
    /// A reply ends with this string, escapes \r \n \t understood (echo mode, connect with
    /// --payload).
    #[arg(long)]
    pub reply_delimiter: Option<String>,
    /// How long to measure: 500ms, 5s, 2m [default: 5s; with --messages, an upper bound of 1h].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many messages in all.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Run this long first, excluded from the results.
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    pub warmup: Duration,
    /// Closed loop: requests sent back to back per connection before waiting for their replies
    /// [default: 1] (echo, framed, http).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pipeline: Option<u32>,
    /// Open loop: total requests (connect mode: connections) per second, on a fixed schedule.
    #[arg(long, value_parser = parse_rate, conflicts_with = "rate_per_conn")]
    pub rate: Option<f64>,
    /// Open loop: requests per second per connection.
    #[arg(long, value_parser = parse_rate)]
    pub rate_per_conn: Option<f64>,
    /// Open loop: most requests outstanding per connection [default: 1024] (echo, framed, http
    /// with --rate or --rate-per-conn).
    #[arg(long)]
    pub max_inflight: Option<usize>,
    /// A reply later than this after its request went is a timeout: counted, and recorded in the
    /// latency with its wait so far (e.g. 500ms, 2s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// HTTP method [default: GET] (http mode).
    #[arg(long)]
    pub method: Option<String>,
    /// HTTP path [default: /] (http mode).
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP header, "Name: value", repeatable (http mode).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// HTTP request body from a file (http mode).
    #[arg(long)]
    pub body_file: Option<std::path::PathBuf>,
    /// Where the cores run.
    #[command(flatten)]
    pub cpus: CpuArgs,
    /// Source address range for outgoing connections, e.g. 127.0.0.1-127.0.0.4 (about 28,000
    /// ephemeral ports per source address).
    #[arg(long)]
    pub source: Option<String>,
    /// Open connections at this many per second (default: all at once).
    #[arg(long, value_parser = parse_rate)]
    pub ramp: Option<f64>,
    /// Stop at the first error.
    #[arg(long)]
    pub fail_fast: bool,
    /// Write the latency of every second as an HdrHistogram interval log.
    #[arg(long)]
    pub hdr_log: Option<std::path::PathBuf>,
    /// Thresholds, such as 'p99<10ms,errors<0.1%' (percentiles pN, max, mean with a unit; errors
    /// as a share or a count): the run exits with code 4 when one is crossed. A percentile that
    /// includes unanswered requests is a lower bound and never meets a threshold.
    #[arg(long, value_parser = parse_slo)]
    pub slo: Option<crate::load::slo::Slo>,
    /// Search open-loop rates for the highest that meets --slo: from --rate (default 1000/s),
    /// doubling while steps meet it, then bisecting to within 5% (at most 12 steps, each a whole
    /// run of --warmup + --duration); every step is reported. Exit code 4 if no rate met it.
    #[arg(long, requires = "slo", conflicts_with_all = ["rate_per_conn", "messages", "hdr_log", "segment", "start_at"])]
    pub find_max_rate: bool,
    /// Run segment I of N of the test (1/4 … 4/4), one per machine: connections, rate and
    /// --messages are split so that the N segments together are the test one machine would run;
    /// merge their --hdr-log files with `ringnode report`.
    #[arg(long, value_parser = parse_segment)]
    pub segment: Option<(usize, usize)>,
    /// Start traffic at this wall-clock time, after the connections are up: RFC 3339 UTC
    /// (2026-12-05T10:00:00Z) or Unix seconds (@1764928800), so that segments start together.
    #[arg(long, value_parser = parse_wall_time)]
    pub start_at: Option<std::time::SystemTime>,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `--mode` of `load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// Request/response over raw bytes.
    Echo,
    /// One-way stream.
    Stream,
    /// Native frames.
    Framed,
    /// Connections per second.
    Connect,
    /// HTTP/1.1 keep-alive.
    Http,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..=1e9).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a rate between 0.001 and 1e9 per second")),
    }
}

fn parse_slo(s: &str) -> Result<crate::load::slo::Slo, String> {
    crate::load::slo::parse(s).map(crate::load::slo::Slo)
}

/// `I/N`, 1 ≤ I ≤ N ≤ 100,000, as the pair (I - 1, N).
fn parse_segment(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not a segment such as 1/4 (the first of four)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || n > 100_000 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i - 1, n))
}

/// RFC 3339 in UTC (`2026-12-05T10:00:00Z`, fractions of a second allowed) or `@SECONDS` since
/// the Unix epoch.
fn parse_wall_time(s: &str) -> Result<std::time::SystemTime, String> {
    let bad = || format!("'{s}' is not a time such as 2026-12-05T10:00:00Z or @1764928800");
    let t = s.trim();
    if let Some(secs) = t.strip_prefix('@') {
        let v: f64 = secs.parse().map_err(|_| bad())?;
        if !v.is_finite() || !(0.0..=1e11).contains(&v) {
            return Err(bad());
        }
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(v));
    }
    humantime::parse_rfc3339(t).map_err(|_| bad())
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("'{s}' is not an address with a port, such as 127.0.0.1:7000 or [::1]:7000"))
}

/// Parses a duration, where zero is allowed (`0`, `0s`, `0ms`).
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let known_unit = matches!(unit, "" | "s" | "ms" | "us" | "µs" | "m" | "min" | "h");
    if known_unit && !num.is_empty() && num.parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// Parses `64`, `4KiB`, or a range `64-1024` (inclusive).
pub fn parse_size_range(s: &str) -> Result<(usize, usize), String> {
    match s.split_once('-') {
        None => parse_size(s).map(|n| (n, n)),
        Some((a, b)) => {
            let (a, b) = (parse_size(a)?, parse_size(b)?);
            if a > b {
                return Err(format!("'{s}': the range must go from smaller to larger"));
            }
            Ok((a, b))
        }
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration such as 500ms, 5s or 2m");
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 30.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `64`, `4KiB`, `4k`, `1MiB`, `1m` (binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("'{s}' is not a size such as 64, 4KiB or 1MiB");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: usize = num.parse().map_err(|_| bad())?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(bad()),
    };
    let n = v.checked_mul(mult).ok_or_else(bad)?;
    if n == 0 || n > 64 << 20 {
        return Err(format!("'{s}': the size must be between 1 byte and 64 MiB"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flag_definitions_are_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }

    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12q").is_err());
        assert_eq!(parse_size_range("64-1KiB"), Ok((64, 1024)));
        assert_eq!(parse_size_range("4KiB"), Ok((4096, 4096)));
        assert!(parse_size_range("100-10").is_err());
        assert_eq!(parse_cpu_list("1,3,5-7"), Ok(CpuList(vec![1, 3, 5, 6, 7])));
        assert_eq!(parse_cpu_list("2"), Ok(CpuList(vec![2])));
        for junk in ["", "a", "3-1", "1,1", "0-1,1", "1-", "99999"] {
            assert!(parse_cpu_list(junk).is_err(), "{junk}");
        }
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration_or_zero("s").is_err());
        assert_eq!(parse_duration_or_zero("0ms"), Ok(Duration::ZERO));
        // Junk that starts with a zero is junk, not "off".
        for junk in ["0banana", "0x", "0days", "-0", "0 s s"] {
            assert!(parse_duration_or_zero(junk).is_err(), "{junk}");
        }
    }
}
