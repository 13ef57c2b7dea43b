//! Each command: build its configuration, call the library, print, choose the exit code.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Cli, Command, CpuArgs, CpuList, Failure, LoadArgs, LoadMode};
use crate::echo::{EchoConfig, EchoServer, FramedOpts};
use crate::load::{self, LoadConfig};
use crate::net::Limits;
use crate::report;
use crate::ring::{Probe, RingError};
use crate::runtime::RuntimeConfig;

/// `println!` that does not panic when whoever read stdout has gone (a `| head -1` that took the
/// address line): the report is lost, the exit code is not.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!`, likewise.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// Descriptors a process needs besides its connections (rings, eventfds, stdio, listeners).
const FD_RESERVE: u64 = 64;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    super::init_logging(cli.log_format);
    crate::sys::raise_nofile_limit();
    match cli.command {
        Command::Echo {
            listen,
            cpus,
            udp,
            framed,
            max_frame,
            zc_threshold,
            send_limit,
            handshake_timeout,
            idle_timeout,
            send_timeout,
            admin,
        } => {
            if framed && max_frame < crate::frame::MIN_MAX_PAYLOAD as usize {
                return Err(Failure::usage(format!(
                    "--max-frame {max_frame}: at least {} bytes, or not even a HELLO fits",
                    crate::frame::MIN_MAX_PAYLOAD
                )));
            }
            let framed = framed.then(|| FramedOpts {
                max_payload: u32::try_from(max_frame).unwrap_or(u32::MAX).min(crate::frame::MAX_PAYLOAD_LIMIT),
                send_limit,
                zc_threshold,
            });
            let on = |d: Duration| (!d.is_zero()).then_some(d);
            let limits = Limits { handshake: on(handshake_timeout), idle: on(idle_timeout), send: on(send_timeout) };
            echo(listen, &cpus, udp, framed, limits, admin)
        }
        Command::Load(args) => load_cmd(*args, cli.log_format == super::LogFormat::Json),
        Command::Perf(args) => super::perf::perf_cmd(*args),
        Command::Report { files, svg, json } => report_cmd(&files, svg.as_deref(), json),
        Command::Info { json } => info(json),
        Command::Demo { duration, connections, size, cpus, no_pin } => demo(duration, connections, size, cpus, no_pin),
    }
}

/// Checks, on the calling thread, that io_uring works here and offers what the runtime needs.
pub fn require_io_uring() -> Result<Probe, Failure> {
    let release = crate::sys::kernel_release();
    if let Some(v) = crate::sys::kernel_version(&release) {
        if v < (6, 1) {
            return Err(RingError::Unavailable {
                cause: format!("kernel {release} is older than 6.1, the oldest ringnode supports"),
                fix: "use Linux 6.1 or newer".into(),
            }
            .into());
        }
    }
    let probe = Probe::run()?;
    probe.require()?;
    Ok(probe)
}

/// The CPUs of `--cpus LIST`, each checked against those this process may use.
fn checked_cpu_list(list: &CpuList) -> Result<Vec<usize>, Failure> {
    let allowed = crate::sys::allowed_cpus();
    if let Some(c) = list.0.iter().find(|c| !allowed.contains(c)) {
        return Err(Failure::usage(format!("--cpus: CPU {c} is not one this process may run on ({allowed:?})")));
    }
    Ok(list.0.clone())
}

/// The runtime layout of `--cores N` / `--cpus LIST` / `--no-pin`: one core per CPU of the list,
/// pinned; or N cores (default: one per allowed CPU), pinned only when they take every allowed CPU,
/// so that several processes given `--cores 1` do not all stack on the first CPU.
fn pick_cpus(a: &CpuArgs, name: &str, most: usize) -> Result<RuntimeConfig, Failure> {
    let allowed = crate::sys::allowed_cpus();
    let (mut cpus, listed) = match (&a.cpus, a.cores) {
        (Some(list), _) => (checked_cpu_list(list)?, true),
        (None, Some(0)) => return Err(Failure::usage("--cores 0: at least one core is needed")),
        (None, Some(n)) if n > allowed.len() => {
            return Err(Failure::usage(format!(
                "--cores {n}: this process may only run on {} CPU(s) ({:?})",
                allowed.len(),
                allowed
            )))
        }
        (None, Some(n)) => (allowed[..n].to_vec(), false),
        (None, None) => (allowed.clone(), false),
    };
    // Fewer cores than connections are never needed (load); whether to pin is decided on what
    // is left: listed CPUs, or every CPU the process may use.
    cpus.truncate(most.max(1));
    let pin = listed || cpus.len() == allowed.len();
    Ok(RuntimeConfig::on_cpus(&cpus, pin && !a.no_pin, name))
}

/// Parses `A`, or `A-B` where both are IPv4 addresses (inclusive range, at most 65,536).
pub fn parse_source_range(s: &str) -> Result<Vec<IpAddr>, String> {
    let bad = || format!("--source '{s}': expected an address or a range such as 127.0.0.1-127.0.0.4");
    match s.split_once('-') {
        None => Ok(vec![s.trim().parse::<IpAddr>().map_err(|_| bad())?]),
        Some((a, b)) => {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a >= 65_536 {
                return Err(bad());
            }
            Ok((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))).collect())
        }
    }
}

/// Refuses, before anything starts, a connection count the open-file limit cannot hold.
fn check_fd_budget(connections: usize, extra: u64) -> Result<(), Failure> {
    let (soft, hard) = crate::sys::nofile_limit();
    let need = connections as u64 + extra + FD_RESERVE;
    if need > soft {
        return Err(Failure::usage(format!(
            "--connections {connections}: needs about {need} open files but the open-file limit (RLIMIT_NOFILE) is {soft} \
             (hard limit {hard}); raise it with `ulimit -n` (beyond the hard limit needs root/CAP_SYS_RESOURCE) or use fewer connections"
        )));
    }
    Ok(())
}

fn echo(
    listen: SocketAddr,
    cpus: &CpuArgs,
    udp: bool,
    framed: Option<FramedOpts>,
    limits: Limits,
    admin: Option<SocketAddr>,
) -> Result<(), Failure> {
    let mut rt = pick_cpus(cpus, "echo", usize::MAX)?;
    let probe = require_io_uring()?;
    rt.handle_signals = true;
    let layout = layout_text(&rt);
    let server = EchoServer::start(EchoConfig { listen, udp, framed, limits, admin, runtime: rt })?;
    outln!(
        "ringnode echo: listening on {} ({}, {}, {})",
        server.local_addr(),
        if udp {
            "udp"
        } else if framed.is_some() {
            "tcp, framed"
        } else {
            "tcp"
        },
        layout,
        probe.mode.flags()
    );
    if let Some(a) = server.admin_addr() {
        outln!("ringnode echo: admin endpoint on http://{a}/ (/healthz, /stats)");
    }
    let _ = std::io::stdout().flush();
    let stats = server.join()?;
    outln!("{}", stats.text());
    Ok(())
}

/// "2 cores on CPUs [0, 1]" or "1 core, unpinned".
fn layout_text(rt: &RuntimeConfig) -> String {
    let n = rt.cpus.len();
    let cores = if n == 1 { "1 core".to_string() } else { format!("{n} cores") };
    let pinned: Vec<usize> = rt.cpus.iter().flatten().copied().collect();
    if pinned.is_empty() {
        format!("{cores}, unpinned")
    } else if pinned.len() == 1 {
        format!("{cores} on CPU {}", pinned[0])
    } else {
        format!("{cores} on CPUs {pinned:?}")
    }
}

/// Turns `\r`, `\n`, `\t` and `\\` in a flag value into the bytes they name.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some(o) => {
                out.push(b'\\');
                let mut b = [0u8; 4];
                out.extend_from_slice(o.encode_utf8(&mut b).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    out
}

/// `STRING` or `@FILE`.
fn payload_arg(flag: &str, v: &str) -> Result<bytes::Bytes, Failure> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map(bytes::Bytes::from)
            .map_err(|e| Failure::usage(format!("{flag} @{path}: cannot read the file: {e}"))),
        None => Ok(bytes::Bytes::from(unescape(v))),
    }
}

/// Refuses a flag that the mode (or the loop) would ignore: a user who passes `--pipeline 16` to
/// an open loop, or `--payload` to http, means something the run would not do.
fn flags_fit_mode(a: &LoadArgs, mode: load::Mode) -> Result<(), Failure> {
    use load::Mode::{Connect, Echo, Framed, Http, Stream};
    let name = format!("{mode:?}").to_lowercase();
    let not_in = |flag: &str, why: &str| Err(Failure::usage(format!("{flag}: not used in {name} mode ({why})")));
    let open_loop = a.rate.is_some() || a.rate_per_conn.is_some() || a.find_max_rate;
    let http_flags = [
        ("--method", a.method.is_some()),
        ("--path", a.path.is_some()),
        ("--header", !a.headers.is_empty()),
        ("--body-file", a.body_file.is_some()),
    ];
    if mode != Http {
        if let Some((flag, _)) = http_flags.iter().find(|(_, given)| *given) {
            return not_in(flag, "an HTTP request's parts are for --mode http");
        }
    }
    let reply_flag = if a.reply_bytes.is_some() {
        Some("--reply-bytes")
    } else {
        a.reply_delimiter.as_ref().map(|_| "--reply-delimiter")
    };
    if let Some(flag) = reply_flag {
        match mode {
            Echo => {}
            Connect if a.payload.is_some() => {}
            Connect => return not_in(flag, "without --payload a connection exchanges nothing"),
            Framed => return not_in(flag, "a reply is one frame, its length in its header"),
            Http => return not_in(flag, "a reply is an HTTP response, its length in its headers"),
            Stream => return not_in(flag, "stream mode reads no replies"),
        }
    }
    if mode == Http {
        if a.payload.is_some() {
            return not_in("--payload", "the request is --method, --path, --header and --body-file");
        }
        if a.size.is_some() {
            return not_in("--size", "the request is --method, --path, --header and --body-file");
        }
    }
    if mode == Connect && a.ramp.is_some() {
        return not_in("--ramp", "connections open on the --rate schedule, or back to back");
    }
    if mode == Connect && a.size.is_some() {
        return not_in("--size", "a connection exchanges --payload, or nothing");
    }
    if a.pipeline.is_some_and(|p| p > 1) {
        if matches!(mode, Stream | Connect) {
            return not_in("--pipeline", "it is for request/response modes: echo, framed, http");
        }
        if open_loop {
            return Err(Failure::usage(
                "--pipeline: for a closed loop; an open loop (--rate, --rate-per-conn, --find-max-rate) sends each request when it falls due",
            ));
        }
    }
    if a.timeout.is_some() && matches!(mode, Stream | Connect) {
        return Err(Failure::usage("--timeout: for modes with replies (echo, framed, http)"));
    }
    if let Some(slo) = &a.slo {
        let latency =
            slo.0.iter().any(|l| !matches!(l.metric, load::slo::Metric::ErrorShare | load::slo::Metric::ErrorCount));
        if latency && mode == Stream {
            return Err(Failure::usage("--slo: stream mode measures no latency; only errors thresholds apply to it"));
        }
    }
    if a.find_max_rate && matches!(mode, Stream | Connect) {
        return Err(Failure::usage(
            "--find-max-rate: for modes with replies (echo, framed, http); stream and connect modes have no reply rate to judge",
        ));
    }
    if a.max_inflight.is_some() {
        if matches!(mode, Stream | Connect) {
            return not_in("--max-inflight", "it is for request/response modes: echo, framed, http");
        }
        if !open_loop {
            return Err(Failure::usage(
                "--max-inflight: for an open loop (--rate, --rate-per-conn, --find-max-rate); a closed loop has --pipeline requests in flight",
            ));
        }
    }
    Ok(())
}

fn load_config(a: &LoadArgs) -> Result<LoadConfig, Failure> {
    let mode = match a.mode {
        LoadMode::Echo => load::Mode::Echo,
        LoadMode::Stream => load::Mode::Stream,
        LoadMode::Framed => load::Mode::Framed,
        LoadMode::Connect => load::Mode::Connect,
        LoadMode::Http => load::Mode::Http,
    };
    if a.connections == 0 {
        return Err(Failure::usage("--connections 0: at least one connection is needed"));
    }
    if a.target.ip().is_unspecified() || a.target.port() == 0 {
        return Err(Failure::usage(format!("--target {}: needs a concrete address and a non-zero port", a.target)));
    }
    flags_fit_mode(a, mode)?;
    let mut cfg = LoadConfig::new(mode, a.target);
    cfg.connections = a.connections;
    if let Some(size) = a.size {
        cfg.size = size;
    }
    cfg.sources = match &a.source {
        Some(s) => parse_source_range(s).map_err(Failure::usage)?,
        None => Vec::new(),
    };
    cfg.ramp = a.ramp;
    cfg.payload = a.payload.as_deref().map(|p| payload_arg("--payload", p)).transpose()?;
    if let Some(p) = &cfg.payload {
        if p.is_empty() {
            return Err(Failure::usage("--payload: the payload is empty"));
        }
        cfg.size = (p.len(), p.len());
    }
    cfg.reply = match (a.reply_bytes, &a.reply_delimiter) {
        (Some(0), _) => return Err(Failure::usage("--reply-bytes 0: a reply has at least one byte")),
        (Some(n), _) => load::ReplyRule::Bytes(n),
        (None, Some(d)) if d.is_empty() => return Err(Failure::usage("--reply-delimiter: the delimiter is empty")),
        (None, Some(d)) => load::ReplyRule::Delimiter(unescape(d)),
        (None, None) => load::ReplyRule::Echo,
    };
    if let Some(p) = a.pipeline {
        cfg.pipeline = p as usize;
    }
    cfg.rate = match (a.rate, a.rate_per_conn) {
        (Some(r), _) => Some(load::Rate::Total(r)),
        (None, Some(r)) => Some(load::Rate::PerConnection(r)),
        (None, None) => None,
    };
    if a.max_inflight == Some(0) {
        return Err(Failure::usage("--max-inflight 0: at least one request must be allowed in flight"));
    }
    if let Some(m) = a.max_inflight {
        cfg.max_inflight = m;
    }
    cfg.timeout = a.timeout;
    cfg.warmup = a.warmup;
    cfg.duration =
        a.duration.unwrap_or(if a.messages.is_some() { Duration::from_secs(3600) } else { Duration::from_secs(5) });
    cfg.messages = a.messages;
    if a.messages == Some(0) {
        return Err(Failure::usage("--messages 0: nothing to send"));
    }
    let mut headers = Vec::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| Failure::usage(format!("--header '{h}': expected 'Name: value'")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = match &a.body_file {
        Some(p) => std::fs::read(p)
            .map(bytes::Bytes::from)
            .map_err(|e| Failure::usage(format!("--body-file {}: cannot read the file: {e}", p.display())))?,
        None => bytes::Bytes::new(),
    };
    if let Some(m) = &a.method {
        cfg.http.method.clone_from(m);
    }
    if let Some(p) = &a.path {
        cfg.http.path.clone_from(p);
    }
    let (method, path) = (&cfg.http.method, &cfg.http.path);
    if method.is_empty() || method.contains(char::is_whitespace) || !path.starts_with('/') {
        return Err(Failure::usage(format!("--method '{method}' --path '{path}': not a valid request line")));
    }
    cfg.http.headers = headers;
    cfg.http.body = body;
    cfg.fail_fast = a.fail_fast;
    cfg.progress = !a.quiet;
    cfg.hdr_log = a.hdr_log.clone();
    if let Some((index, count)) = a.segment {
        if count > cfg.connections {
            return Err(Failure::usage(format!(
                "--segment {}/{count}: a test of {} connection(s) cannot be split in {count} (each segment needs one)",
                index + 1,
                cfg.connections
            )));
        }
        cfg.segment = load::Segment { index, count };
    }
    if let Some(t) = a.start_at {
        let now = std::time::SystemTime::now();
        if t.duration_since(now).is_ok_and(|ahead| ahead > Duration::from_secs(24 * 3600)) {
            return Err(Failure::usage("--start-at: more than a day ahead"));
        }
        if now.duration_since(t).is_ok_and(|late| late > Duration::from_secs(1)) {
            tracing::warn!(
                "--start-at was {:.1} s ago: starting now, behind any segment that started on time",
                now.duration_since(t).unwrap_or_default().as_secs_f64()
            );
        }
    }
    cfg.start_at = a.start_at;
    Ok(cfg)
}

fn load_cmd(a: LoadArgs, json_log: bool) -> Result<(), Failure> {
    let mut cfg = load_config(&a)?;
    cfg.runtime = pick_cpus(&a.cpus, "load", cfg.own_connections())?;
    check_fd_budget(cfg.own_connections(), 0)?;
    require_io_uring()?;
    cfg.runtime.handle_signals = true;
    if a.find_max_rate {
        return find_max_rate(cfg, a.slo.as_ref().map_or(&[], |s| &s.0), a.json);
    }
    let progress = cfg.progress;
    let origin = load::clock_origin(cfg.start_at, std::time::SystemTime::now());
    let run = |log: &mut dyn FnMut(&report::HdrHistogram<u64>, Duration, Duration)| {
        load::run_from(cfg.clone(), origin, &mut |at, length, iv| {
            if progress {
                let line = load::summary::progress_line(at, length, iv);
                if json_log {
                    // With --log-format json everything on stderr is JSON, the progress included.
                    tracing::info!(target: "ringnode::progress", "{line}");
                } else {
                    eprintln!("{line}");
                }
            }
            log(&iv.latency, at.saturating_sub(length), length);
        })
    };
    let comment = "ringnode load: latency in nanoseconds, corrected for coordinated omission";
    let (result, log_error) = report::with_interval_log(cfg.hdr_log.as_deref(), comment, origin, run).map_err(|e| {
        let p = cfg.hdr_log.as_deref().unwrap_or(std::path::Path::new("")).display();
        Failure::usage(format!("--hdr-log {p}: cannot create the file: {e}"))
    })?;
    let result = result?;
    let log_error = log_error.or_else(|| {
        let path = cfg.hdr_log.as_deref()?;
        report::append_run_record(path, &load::summary::run_record(&cfg, &result)).err().map(|e| e.to_string())
    });
    if let Some(e) = log_error {
        tracing::error!("--hdr-log: writing failed: {e}");
    }
    let verdicts = a.slo.as_ref().map(|s| load::slo::check(&s.0, &result));
    if a.json {
        let mut doc = load::summary::load_json(&cfg, &result);
        if let Some(v) = &verdicts {
            doc["slo"] = load::summary::slo_json(v);
        }
        outln!("{doc}");
    } else {
        out!("{}", load::summary::load_text(&cfg, &result));
        if let Some(v) = &verdicts {
            outln!("{}", load::summary::slo_line(v));
        }
    }
    if let Some(why) = load::summary::verdict(&cfg, &result) {
        return Err(Failure::runtime(format!("load against {} failed: {why}", cfg.target)));
    }
    if let Some(crossed) = verdicts.as_deref().and_then(load::summary::slo_crossed) {
        return Err(Failure::slo(format!("load against {}: --slo crossed: {crossed}", cfg.target)));
    }
    Ok(())
}

/// `load --find-max-rate`: open-loop runs at rates chosen by [`load::slo::RateSearch`], each
/// judged by the thresholds and by reaching 95% of its rate; every step is reported.
fn find_max_rate(cfg: LoadConfig, limits: &[load::slo::Limit], json: bool) -> Result<(), Failure> {
    let first = cfg.total_rate().unwrap_or(1000.0);
    let mut search = load::slo::RateSearch::new(first, 0.05, 12);
    let thresholds: Vec<&str> = limits.iter().map(|l| l.text.as_str()).collect();
    let header = format!(
        "ringnode load --find-max-rate: {} mode against {}, {} connections; thresholds {}; each step {:.1} s warm-up + {:.1} s measured, and must reach 95% of its rate",
        format!("{:?}", cfg.mode).to_lowercase(),
        cfg.target,
        cfg.connections,
        thresholds.join(", "),
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
    );
    if !json {
        outln!("{header}");
        outln!("  {:>4} {:>12} {:>12} {:>7}  thresholds", "step", "rate/s", "achieved/s", "verdict");
    }
    let mut steps = Vec::new();
    let mut interrupted = false;
    while let Some(rate) = search.next_rate() {
        let mut c = cfg.clone();
        c.rate = Some(load::Rate::Total(rate));
        c.progress = false;
        let r = load::run(c.clone(), &mut |_, _, _| {})?;
        let verdicts = load::slo::check(limits, &r);
        let reached = r.rate() >= rate * 0.95;
        let failed_run = load::summary::verdict(&c, &r);
        if r.connected == 0 && !r.interrupted {
            // Not a rate the server cannot take: no server. Halving would not find one.
            return Err(Failure::runtime(format!(
                "load against {} failed at step {}: {}",
                cfg.target,
                steps.len() + 1,
                failed_run.unwrap_or_else(|| "no connection could be established".into())
            )));
        }
        let met = reached && failed_run.is_none() && verdicts.iter().all(|v| v.met);
        if r.interrupted {
            interrupted = true;
        } else {
            search.record(rate, met);
        }
        let why = failed_run
            .clone()
            .or_else(|| (!reached).then(|| format!("reached {:.0}% of the rate", 100.0 * r.rate() / rate)));
        if !json {
            outln!(
                "  {:>4} {:>12.0} {:>12.0} {:>7}  {}{}",
                steps.len() + 1,
                rate,
                r.rate(),
                if r.interrupted {
                    "stopped"
                } else if met {
                    "meets"
                } else {
                    "fails"
                },
                load::summary::slo_line(&verdicts).trim_start().trim_start_matches("slo").trim_start(),
                why.as_deref().map_or(String::new(), |w| format!("; {w}"))
            );
        }
        steps.push(serde_json::json!({
            "rate_requested": rate,
            "rate_achieved": r.rate(),
            "elapsed_s": r.elapsed.as_secs_f64(),
            "meets": met,
            "interrupted": r.interrupted,
            "why": why,
            "slo": load::summary::slo_json(&verdicts),
            "latency": report::percentiles_json(&r.latency),
            "errors": load::slo::errors_of(&r).0,
        }));
        if interrupted {
            break;
        }
        // Let the server drain what a failed step left it before the next one.
        std::thread::sleep(Duration::from_millis(500));
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "search": header,
                "steps": steps,
                "max_rate": search.passed,
                "lowest_failing_rate": search.failed,
                "interrupted": interrupted,
            })
        );
    } else {
        match (search.passed, search.failed) {
            (Some(p), Some(f)) => outln!("  highest rate meeting the thresholds: {p:.0}/s ({f:.0}/s did not)"),
            (Some(p), None) => outln!("  highest rate meeting the thresholds: {p:.0}/s (every rate tried met them; the step limit ended the search)"),
            (None, _) => outln!("  no rate tried met the thresholds"),
        }
    }
    if interrupted {
        return Err(Failure::runtime(
            "--find-max-rate: a step was stopped early (a signal, or --fail-fast), the search with it",
        ));
    }
    if search.passed.is_none() {
        return Err(Failure::slo(format!("load against {}: no rate tried met --slo", cfg.target)));
    }
    Ok(())
}

fn report_cmd(files: &[std::path::PathBuf], svg: Option<&std::path::Path>, json: bool) -> Result<(), Failure> {
    // `ringnode perf -J` documents: throughput per interval.
    let docs: Vec<Option<serde_json::Value>> = files.iter().map(|f| super::perf::read_perf_doc(f)).collect();
    if docs.iter().any(Option::is_some) {
        if docs.iter().any(Option::is_none) {
            return Err(Failure::usage("report: either interval logs (load --hdr-log) or perf -J documents, not both"));
        }
        let docs: Vec<serde_json::Value> = docs.into_iter().flatten().collect();
        return super::perf::throughput_report(files, &docs, svg, json);
    }
    let mut logs = Vec::new();
    for f in files {
        logs.push(report::read_interval_log(f).map_err(|e| Failure::runtime(e.to_string()))?);
    }
    let mut total = logs[0].total.clone();
    for l in &logs[1..] {
        total.add(&l.total).map_err(|e| Failure::runtime(format!("cannot merge: {e:?}")))?;
    }
    let merged = report::merge_intervals(&logs).map_err(Failure::runtime)?;
    let (runs, without_record) = RunRecords::of(&logs).map_err(Failure::runtime)?;
    if !without_record.is_empty() && logs.len() > 1 {
        tracing::warn!(
            "no run record in {} (written by an older ringnode, or the run did not finish): the counts, the rate and \
             the missing segments are not reported, only the latency",
            without_record.join(", ")
        );
    }
    let summary = report::LogSummary::of(&total);
    let pct_json = |h: &report::HdrHistogram<u64>| -> serde_json::Map<String, serde_json::Value> {
        report::PERCENTILES
            .iter()
            .map(|&(q, name)| (format!("{name}_us"), serde_json::json!(report::us(h.value_at_percentile(q)))))
            .collect()
    };
    if json {
        let pct: serde_json::Map<_, _> = summary
            .percentiles
            .iter()
            .map(|(q, v)| (format!("p{q}_us"), serde_json::json!(*v as f64 / 1000.0)))
            .collect();
        let each: Vec<serde_json::Value> = merged
            .iter()
            .map(|m| {
                let mut o = pct_json(&m.latency);
                o.insert("at_s".into(), serde_json::json!(m.at.as_secs_f64()));
                o.insert("length_s".into(), serde_json::json!(m.length.as_secs_f64()));
                o.insert("files".into(), serde_json::json!(m.logs));
                o.insert("samples".into(), serde_json::json!(m.latency.len()));
                o.insert("max_us".into(), serde_json::json!(report::us(m.latency.max())));
                serde_json::Value::Object(o)
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "intervals": logs.iter().map(|l| l.intervals).sum::<usize>(),
                "samples": summary.samples,
                "percentiles": pct,
                "max_us": summary.max as f64 / 1000.0,
                "merged_intervals": each,
                "segments": runs.as_ref().map(|r| &r.segments),
                "segments_missing": runs.as_ref().map(|r| &r.missing),
                "messages_sent": runs.as_ref().map(|r| r.sent),
                "messages_received": runs.as_ref().map(|r| r.received),
                "messages_measured": runs.as_ref().map(|r| r.measured),
                "unsent": runs.as_ref().map(|r| r.unsent),
                "errors": runs.as_ref().map(|r| r.errors),
                "window_s": runs.as_ref().map(|r| r.window.as_secs_f64()),
                "rate": runs.as_ref().map(|r| r.rate()),
                "rate_sum_of_files": runs.as_ref().map(|r| r.rate_sum),
            })
        );
    } else {
        outln!(
            "ringnode report: {} file(s), {} intervals, {} samples{}",
            logs.len(),
            logs.iter().map(|l| l.intervals).sum::<usize>(),
            summary.samples,
            runs.as_ref().filter(|r| r.segments.len() > 1).map_or(String::new(), |r| format!(
                ", segments {}{}",
                r.segments.join(" "),
                if r.missing.is_empty() { String::new() } else { format!(" (missing {})", r.missing.join(" ")) }
            ))
        );
        if logs.len() > 1 {
            outln!(
                "  {:>7} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10}",
                "at s",
                "length",
                "files",
                "samples",
                "p50 µs",
                "p99 µs",
                "max µs"
            );
            for m in &merged {
                outln!(
                    "  {:>7.1} {:>7.2} {:>6} {:>10} {:>10.1} {:>10.1} {:>10.1}",
                    m.at.as_secs_f64(),
                    m.length.as_secs_f64(),
                    m.logs,
                    m.latency.len(),
                    report::us(m.latency.value_at_quantile(0.5)),
                    report::us(m.latency.value_at_quantile(0.99)),
                    report::us(m.latency.max())
                );
            }
        }
        if let Some(r) = &runs {
            outln!(
                "  messages     {} sent, {} received, {} in the measured windows, {} fell due and never went; errors {}",
                r.sent,
                r.received,
                r.measured,
                r.unsent,
                r.errors
            );
            outln!(
                "  rate         {:.0}/s over {:.2} s (first window opened to last closed; the files' own rates add up to {:.0}/s)",
                r.rate(),
                r.window.as_secs_f64(),
                r.rate_sum
            );
        }
        let parts: Vec<String> = summary
            .percentiles
            .iter()
            .zip(report::PERCENTILES)
            .map(|((_, v), (_, name))| format!("{name} {:.1}", *v as f64 / 1000.0))
            .collect();
        outln!("  latency µs   {}  max {:.1}", parts.join("  "), summary.max as f64 / 1000.0);
    }
    if let Some(out) = svg {
        let mut series: Vec<(String, &hdrhistogram::Histogram<u64>)> =
            logs.iter().map(|l| (l.name.clone(), &l.total)).collect();
        if logs.len() > 1 {
            series.push(("all runs".to_string(), &total));
        }
        let doc = report::percentile_svg("latency by percentile", &series);
        std::fs::write(out, doc)
            .map_err(|e| Failure::runtime(format!("--svg {}: cannot write: {e}", out.display())))?;
        if !json {
            outln!("  plot         {}", out.display());
        }
    }
    Ok(())
}

/// What the runs that wrote the logs said of themselves (`load --hdr-log` records its segment,
/// window and counts at the end), added up; `None` if any log lacks the record.
struct RunRecords {
    segments: Vec<String>,
    missing: Vec<String>,
    sent: u64,
    received: u64,
    measured: u64,
    unsent: u64,
    errors: u64,
    /// From the first measured window's start to the last one's end, on the wall clock.
    window: Duration,
    /// Each run's measured messages over its own window, added.
    rate_sum: f64,
}

impl RunRecords {
    /// The records added up: `Ok(None)` if some log has none (the files named, for a warning);
    /// an error if two logs are the same segment or the logs are not segments of one test.
    fn of(logs: &[report::IntervalLog]) -> Result<(Option<RunRecords>, Vec<String>), String> {
        let without: Vec<String> = logs.iter().filter(|l| l.record.is_none()).map(|l| l.name.clone()).collect();
        if !without.is_empty() {
            return Ok((None, without));
        }
        let mut r = RunRecords {
            segments: Vec::new(),
            missing: Vec::new(),
            sent: 0,
            received: 0,
            measured: 0,
            unsent: 0,
            errors: 0,
            window: Duration::ZERO,
            rate_sum: 0.0,
        };
        let (mut first, mut last) = (None::<std::time::SystemTime>, None::<std::time::SystemTime>);
        let mut test: Option<(String, u64, String)> = None;
        for l in logs {
            let rec = l.record.as_ref().expect("checked above");
            let bad = |what: &str| format!("{}: the run's record has {what}", l.name);
            let num = |k: &str| rec.get(k).and_then(serde_json::Value::as_f64).ok_or_else(|| bad(&format!("no {k}")));
            let int = |k: &str| rec.get(k).and_then(serde_json::Value::as_u64).ok_or_else(|| bad(&format!("no {k}")));
            let secs = |k: &str| Duration::try_from_secs_f64(num(k)?).map_err(|_| bad(&format!("{k} out of range")));
            let zero = l.base.unwrap_or(std::time::UNIX_EPOCH);
            let (ws, w) = (secs("window_start_s")?, secs("window_s")?);
            let open = zero.checked_add(ws).ok_or_else(|| bad("window_start_s out of range"))?;
            let close = open.checked_add(w).ok_or_else(|| bad("window_s out of range"))?;
            first = Some(first.map_or(open, |f| f.min(open)));
            last = Some(last.map_or(close, |f| f.max(close)));
            r.sent += int("messages_sent")?;
            r.received += int("messages_received")?;
            r.measured += int("messages_measured")?;
            r.errors += int("errors")?;
            r.unsent += int("unsent")?;
            r.rate_sum += int("messages_measured")? as f64 / w.as_secs_f64().max(1e-9);
            let seg = rec.get("segment").and_then(serde_json::Value::as_str).unwrap_or("1/1").to_string();
            let count = seg.split_once('/').map_or("1", |(_, n)| n).to_string();
            let whole = rec.get("connections_whole_test").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let target = rec.get("target").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
            let this = (count, whole, target);
            match &test {
                None => test = Some(this),
                Some(t) if *t != this => {
                    return Err(format!(
                        "{}: not a segment of the same test as the files before it (segments of {}, {} connections, \
                         target {} there; {}, {}, {} here)",
                        l.name, t.0, t.1, t.2, this.0, this.1, this.2
                    ))
                }
                Some(_) => {}
            }
            if r.segments.contains(&seg) && seg != "1/1" {
                return Err(format!(
                    "{}: segment {seg} is in two files (a file given twice, or an earlier run's)",
                    l.name
                ));
            }
            r.segments.push(seg);
        }
        r.segments.sort_by_key(|s| s.split_once('/').and_then(|(i, _)| i.parse::<usize>().ok()));
        if let Some((n, _, _)) = &test {
            if let Ok(n) = n.parse::<usize>() {
                if n > 1 {
                    r.missing = (1..=n).map(|i| format!("{i}/{n}")).filter(|s| !r.segments.contains(s)).collect();
                }
            }
        }
        r.window = match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        Ok((Some(r), Vec::new()))
    }

    fn rate(&self) -> f64 {
        self.measured as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

fn info(json: bool) -> Result<(), Failure> {
    let kernel = crate::sys::kernel_release();
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().and_then(|s| s.trim().parse().ok());
    let probe = require_io_uring().map_err(|f| f.message);
    if json {
        outln!("{}", crate::info::info_json(&kernel, disabled, &probe));
    } else {
        out!("{}", crate::info::info_text(&kernel, disabled, &probe));
    }
    match probe {
        Ok(_) => Ok(()),
        Err(message) => Err(Failure { code: 3, message }),
    }
}

fn demo(
    duration: Duration,
    connections: usize,
    size: usize,
    cpus: Option<CpuList>,
    no_pin: bool,
) -> Result<(), Failure> {
    let allowed = match &cpus {
        Some(list) => checked_cpu_list(list)?,
        None => crate::sys::allowed_cpus(),
    };
    check_fd_budget(connections, connections as u64)?;
    require_io_uring()?;
    // Split the CPUs: server on the first half, client on the rest; never two pinned threads on
    // one CPU. With one CPU both share it, unpinned.
    let (server_rt, client_rt) = if allowed.len() >= 2 {
        let half = allowed.len() / 2;
        (
            RuntimeConfig::on_cpus(&allowed[..half], !no_pin, "echo"),
            RuntimeConfig::on_cpus(&allowed[half..], !no_pin, "load"),
        )
    } else {
        (RuntimeConfig::on_cpus(&allowed, false, "echo"), RuntimeConfig::on_cpus(&allowed, false, "load"))
    };
    let layout = format!("server: {}; client: {}", layout_text(&server_rt), layout_text(&client_rt));
    let mut client_rt = client_rt;
    client_rt.handle_signals = true;
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let server = EchoServer::start(EchoConfig {
        listen,
        udp: false,
        framed: None,
        limits: Limits::default(),
        admin: None,
        runtime: server_rt,
    })?;
    let target = server.local_addr();
    outln!(
        "ringnode demo: echo server on {target}, {connections} connections × {size} B for {:.1} s ({layout})",
        duration.as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    let mut cfg = LoadConfig::new(load::Mode::Echo, target);
    cfg.connections = connections;
    cfg.size = (size, size);
    cfg.duration = duration;
    cfg.runtime = client_rt;
    let result = load::run(cfg.clone(), &mut |_, _, _| {});
    server.handle().shutdown();
    let stats = server.join()?;
    let result = result?;
    out!("{}", load::summary::load_text(&cfg, &result));
    outln!("{}", stats.text());
    if result.received == 0 || result.errors.mismatch > 0 {
        return Err(Failure::runtime("demo failed: the echo server did not answer correctly"));
    }
    Ok(())
}
