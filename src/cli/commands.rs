//! Each command: build its configuration, call the library, print, choose the exit code.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Cli, Command, Failure, LoadMode};
use crate::echo::{EchoConfig, EchoServer, FramedOpts};
use crate::load::{self, LoadConfig};
use crate::report;
use crate::ring::{Probe, RingError};
use crate::runtime::RuntimeConfig;

/// Descriptors a process needs besides its connections (rings, eventfds, stdio, listeners).
const FD_RESERVE: u64 = 64;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    crate::sys::raise_nofile_limit();
    match cli.command {
        Command::Echo { listen, cores, udp, framed, max_frame, zc_threshold, send_limit } => {
            let framed = framed.then(|| FramedOpts {
                max_payload: u32::try_from(max_frame).unwrap_or(u32::MAX).min(crate::frame::MAX_PAYLOAD_LIMIT),
                send_limit,
                zc_threshold,
            });
            echo(listen, cores, udp, framed)
        }
        Command::Load { mode, target, connections, size, duration, pipeline, cores, source, ramp, json } => {
            let sources = match source {
                Some(s) => parse_source_range(&s).map_err(Failure::usage)?,
                None => Vec::new(),
            };
            let mode = match mode {
                LoadMode::Echo => load::Mode::Echo,
                LoadMode::Framed => load::Mode::Framed,
            };
            let cfg = LoadConfig {
                mode,
                target,
                sources,
                ramp,
                connections,
                size,
                pipeline: pipeline as usize,
                duration,
                // Laid out in load_cmd, once --cores is checked.
                runtime: RuntimeConfig::on_cpus(&[], false, "load"),
            };
            load_cmd(cfg, cores, json)
        }
        Command::Info { json } => info(json),
        Command::Demo { duration, connections, size } => demo(duration, connections, size),
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

/// The CPUs for `--cores N` (default: all this process may use).
fn pick_cpus(cores: Option<usize>) -> Result<Vec<usize>, Failure> {
    let allowed = crate::sys::allowed_cpus();
    match cores {
        None => Ok(allowed),
        Some(0) => Err(Failure::usage("--cores 0: at least one core is needed")),
        Some(n) if n > allowed.len() => Err(Failure::usage(format!(
            "--cores {n}: this process may only run on {} CPU(s) ({:?})",
            allowed.len(),
            allowed
        ))),
        Some(n) => Ok(allowed[..n].to_vec()),
    }
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

fn echo(listen: SocketAddr, cores: Option<usize>, udp: bool, framed: Option<FramedOpts>) -> Result<(), Failure> {
    let cpus = pick_cpus(cores)?;
    let probe = require_io_uring()?;
    let mut rt = RuntimeConfig::on_cpus(&cpus, true, "echo");
    rt.handle_signals = true;
    let server = EchoServer::start(EchoConfig { listen, udp, framed, runtime: rt })?;
    println!(
        "ringnode echo: listening on {} ({}, {} core(s), {})",
        server.local_addr(),
        if udp {
            "udp"
        } else if framed.is_some() {
            "tcp, framed"
        } else {
            "tcp"
        },
        cpus.len(),
        probe.mode.flags()
    );
    let _ = std::io::stdout().flush();
    let stats = server.join()?;
    println!("{}", report::echo_text(&stats));
    Ok(())
}

fn load_cmd(mut cfg: LoadConfig, cores: Option<usize>, json: bool) -> Result<(), Failure> {
    let (connections, target) = (cfg.connections, cfg.target);
    if connections == 0 {
        return Err(Failure::usage("--connections 0: at least one connection is needed"));
    }
    if target.ip().is_unspecified() || target.port() == 0 {
        return Err(Failure::usage(format!("--target {target}: needs a concrete address and a non-zero port")));
    }
    let mut cpus = pick_cpus(cores)?;
    cpus.truncate(connections);
    check_fd_budget(connections, 0)?;
    require_io_uring()?;
    cfg.runtime = RuntimeConfig::on_cpus(&cpus, true, "load");
    cfg.runtime.handle_signals = true;
    let result = load::run(cfg.clone())?;
    if json {
        println!("{}", report::load_json(&cfg, &result));
    } else {
        print!("{}", report::load_text(&cfg, &result));
    }
    if result.received == 0 {
        let why = if result.connected == 0 { "no connection could be established" } else { "no message came back" };
        return Err(Failure::runtime(format!("load against {target} failed: {why}")));
    }
    Ok(())
}

fn info(json: bool) -> Result<(), Failure> {
    let kernel = crate::sys::kernel_release();
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().and_then(|s| s.trim().parse().ok());
    let probe = require_io_uring().map_err(|f| f.message);
    if json {
        println!("{}", report::info_json(&kernel, disabled, &probe));
    } else {
        print!("{}", report::info_text(&kernel, disabled, &probe));
    }
    match probe {
        Ok(_) => Ok(()),
        Err(message) => Err(Failure { code: 3, message }),
    }
}

fn demo(duration: Duration, connections: usize, size: usize) -> Result<(), Failure> {
    let allowed = crate::sys::allowed_cpus();
    check_fd_budget(connections, connections as u64)?;
    require_io_uring()?;
    // Split the CPUs: server on the first half, client on the rest; never two pinned threads on
    // one CPU. With one CPU both share it, unpinned.
    let (server_rt, client_rt, layout) = if allowed.len() >= 2 {
        let half = allowed.len() / 2;
        (
            RuntimeConfig::on_cpus(&allowed[..half], true, "echo"),
            RuntimeConfig::on_cpus(&allowed[half..], true, "load"),
            format!("server on CPU {:?}, client on CPU {:?}", &allowed[..half], &allowed[half..]),
        )
    } else {
        (
            RuntimeConfig::on_cpus(&allowed, false, "echo"),
            RuntimeConfig::on_cpus(&allowed, false, "load"),
            "one CPU: server and client share it, unpinned".to_string(),
        )
    };
    let mut client_rt = client_rt;
    client_rt.handle_signals = true;
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let server = EchoServer::start(EchoConfig { listen, udp: false, framed: None, runtime: server_rt })?;
    let target = server.local_addr();
    println!(
        "ringnode demo: echo server on {target}, {connections} connections × {size} B for {:.1} s ({layout})",
        duration.as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    let cfg = LoadConfig {
        mode: load::Mode::Echo,
        ramp: None,
        target,
        sources: Vec::new(),
        connections,
        size,
        pipeline: 1,
        duration,
        runtime: client_rt,
    };
    let result = load::run(cfg.clone());
    server.handle().shutdown();
    let stats = server.join()?;
    let result = result?;
    print!("{}", report::load_text(&cfg, &result));
    println!("{}", report::echo_text(&stats));
    if result.received == 0 || result.errors.mismatch > 0 {
        return Err(Failure::runtime("demo failed: the echo server did not answer correctly"));
    }
    Ok(())
}
