//! What a user meets when something is wrong: usage errors, a port in use, a host that refuses
//! io_uring. Each is one line on stderr and a distinct exit code, never a panic.

#![allow(unsafe_code)] // pre_exec (seccomp) and kill(2) in the child-process helpers

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{ringnode, run_bounded, Server};

fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

#[test]
fn unknown_flag_is_a_one_line_usage_error() {
    let out = run_bounded(ringnode(&["echo", "--listen", "127.0.0.1:0", "--bogus"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "--bogus");
}

#[test]
fn a_missing_required_flag_is_named_on_one_line() {
    let out = run_bounded(ringnode(&["load"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "--target");
}

#[test]
fn bad_address_names_the_flag_and_value() {
    let out = run_bounded(ringnode(&["echo", "--listen", "localhost-7000"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "localhost-7000");
    let out = run_bounded(ringnode(&["load", "--target", "300.1.1.1:80"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "--target");
}

#[test]
fn too_many_cores_is_a_usage_error() {
    let out = run_bounded(ringnode(&["echo", "--listen", "127.0.0.1:0", "--cores", "4096"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "--cores 4096");
}

#[test]
fn connections_beyond_the_open_file_limit_are_refused_up_front() {
    let out = run_bounded(
        ringnode(&["load", "--target", "127.0.0.1:9", "--connections", "10000000", "--duration", "1s"]),
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, 2, "RLIMIT_NOFILE");
}

#[test]
fn bad_duration_and_size_are_usage_errors() {
    let out =
        run_bounded(ringnode(&["load", "--target", "127.0.0.1:9", "--duration", "soon"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "soon");
    let out = run_bounded(ringnode(&["load", "--target", "127.0.0.1:9", "--size", "0"]), Duration::from_secs(30));
    assert_one_line_error(&out, 2, "--size");
}

/// A flag the mode or the loop would ignore is refused, naming it (a user who passes `--pipeline
/// 16` with `--rate` means something the run would not do).
#[test]
fn flags_the_mode_would_ignore_are_usage_errors() {
    let t = "127.0.0.1:9";
    for (args, needle) in [
        (&["--rate", "1000", "--pipeline", "16"][..], "--pipeline"),
        (&["--mode", "stream", "--pipeline", "4"][..], "--pipeline"),
        (&["--max-inflight", "8"][..], "--max-inflight"),
        (&["--mode", "stream", "--rate", "10", "--max-inflight", "8"][..], "--max-inflight"),
        (&["--mode", "http", "--payload", "x"][..], "--payload"),
        (&["--mode", "http", "--size", "128"][..], "--size"),
        (&["--payload", "x", "--size", "128"][..], "--size"),
        (&["--method", "POST"][..], "--method"),
        (&["--mode", "framed", "--header", "A: b"][..], "--header"),
        (&["--mode", "framed", "--reply-bytes", "4"][..], "--reply-bytes"),
        (&["--mode", "http", "--reply-delimiter", "x"][..], "--reply-delimiter"),
        (&["--mode", "connect", "--reply-bytes", "4"][..], "--reply-bytes"),
        (&["--mode", "connect", "--ramp", "10"][..], "--ramp"),
    ] {
        let mut all = vec!["load", "--target", t, "--duration", "1s"];
        all.extend_from_slice(args);
        let out = run_bounded(ringnode(&all), Duration::from_secs(30));
        assert_one_line_error(&out, 2, needle);
    }
}

#[test]
fn refused_connections_fail_the_run_with_a_clear_line() {
    // Bind and drop a listener to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}");
    let out = run_bounded(
        ringnode(&["load", "--target", &target, "--connections", "3", "--duration", "1s", "--cores", "1", "--json"]),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains("no connection could be established"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(json["errors"]["connect"], 3);
}

#[test]
fn second_server_on_the_same_port_is_an_error() {
    let first = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let addr = first.addr.to_string();
    let out = run_bounded(ringnode(&["echo", "--listen", &addr, "--cores", "1"]), Duration::from_secs(30));
    assert_one_line_error(&out, 1, "already in use");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
    // The same for UDP.
    let udp = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--udp"]);
    let uaddr = udp.addr.to_string();
    let out = run_bounded(ringnode(&["echo", "--listen", &uaddr, "--cores", "1", "--udp"]), Duration::from_secs(30));
    assert_one_line_error(&out, 1, "already in use");
}

fn run_without_io_uring(args: &[&str], errno: i32) -> std::process::Output {
    let mut cmd = ringnode(args);
    // SAFETY: the closure runs in the forked child before exec and only makes two prctl calls,
    // which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || ringnode::sys::deny_io_uring_setup(errno));
    }
    run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn io_uring_refused_by_seccomp_exits_3_with_cause_and_fix() {
    for args in [
        &["echo", "--listen", "127.0.0.1:0", "--cores", "1"][..],
        &["load", "--target", "127.0.0.1:9"][..],
        &["demo"][..],
    ] {
        let out = run_without_io_uring(args, libc::EPERM);
        assert_one_line_error(&out, 3, "seccomp");
        assert!(String::from_utf8_lossy(&out.stderr).contains("fix:"));
    }
}

#[test]
fn io_uring_missing_exits_3_with_cause_and_fix() {
    let out = run_without_io_uring(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"], libc::ENOSYS);
    assert_one_line_error(&out, 3, "ENOSYS");
    let info = run_without_io_uring(&["info"], libc::ENOSYS);
    assert_eq!(info.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&info.stdout).contains("unavailable"));
}

#[test]
fn info_reports_flags_and_opcodes() {
    let out = run_bounded(ringnode(&["info", "--json"]), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["available"], true);
    assert!(v["setup_flags"].as_str().unwrap().contains("TASKRUN") || v["setup_flags"] == "none");
    let ops = v["opcodes"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["name"] == "MSG_RING" && o["supported"] == true));
}

#[test]
fn a_ring_that_cannot_be_entered_stops_the_server_with_one_line_and_exit_1() {
    let mut cmd = ringnode(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    // SAFETY: as in `run_without_io_uring`: two prctl calls in the child before exec.
    unsafe {
        cmd.pre_exec(|| ringnode::sys::deny_io_uring_enter(libc::EPERM));
    }
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert_one_line_error(&out, 1, "io_uring_enter failed");
}

#[test]
fn demo_runs_with_no_flags_and_exits_0() {
    let out = run_bounded(ringnode(&["demo", "--duration", "1s"]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ringnode demo: echo server on 127.0.0.1:"), "{text}");
    assert!(text.contains("mismatch 0"), "{text}");
    assert!(text.contains("ringnode echo: stopped:"), "{text}");
}

#[test]
fn out_of_descriptors_the_server_logs_once_a_second_and_recovers() {
    use std::io::{Read, Write};
    let mut cmd = ringnode(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 200, rlim_max: 200 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_cmd(cmd);
    let started = std::time::Instant::now();
    // 400 clients: about 190 are accepted, the rest wait in the backlog while accept says EMFILE.
    let clients: Vec<std::net::TcpStream> =
        (0..400).map(|_| std::net::TcpStream::connect(server.addr).expect("the backlog takes them")).collect();
    std::thread::sleep(Duration::from_secs(3));
    drop(clients);
    // Descriptors free up: the server accepts again and echoes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut echoed = false;
    while !echoed && std::time::Instant::now() < deadline {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"still here").unwrap();
        let mut buf = [0u8; 10];
        echoed = s.read_exact(&mut buf).is_ok() && &buf == b"still here";
    }
    let seconds = started.elapsed().as_secs() + 1;
    let (code, _, err) = server.stop(Duration::from_secs(30));
    assert!(echoed, "the server did not recover: {err}");
    assert_eq!(code, 0, "{err}");
    let lines = err.lines().filter(|l| l.contains("accept")).count() as u64;
    assert!(lines >= 1, "running out of descriptors was not reported: {err}");
    assert!(lines <= seconds + 1, "{lines} lines in {seconds} s: {err}");
    assert!(err.contains("count="), "the line says how many accepts it covers: {err}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    // Port 1 on loopback refuses: `load` warns (connect failed) and fails with a line.
    let out = run_bounded(
        ringnode(&[
            "load",
            "--target",
            "127.0.0.1:1",
            "--connections",
            "1",
            "--duration",
            "1s",
            "--log-format",
            "json",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() >= 2, "{err}");
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
    assert!(err.contains("connection refused"), "{err}");
    // RUST_LOG filters: at `error`, the warning goes, the failure stays.
    let mut cmd = ringnode(&["load", "--target", "127.0.0.1:1", "--connections", "1", "--duration", "1s", "--quiet"]);
    cmd.env("RUST_LOG", "error");
    let out = run_bounded(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_server_whose_stdout_reader_went_away_still_stops_with_exit_0() {
    use std::io::{BufRead, BufReader};
    // As in `ringnode echo … | head -1`: the address is read, then the pipe is closed.
    let mut child = ringnode(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("listening on"), "{first}");
    // The reader (and with it the pipe's only read end) is gone now.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn junk_durations_and_a_frame_limit_below_a_hello_are_usage_errors() {
    for (flag, value) in [("--idle-timeout", "0banana"), ("--send-timeout", "0x"), ("--handshake-timeout", "0days")] {
        let out = run_bounded(ringnode(&["echo", "--listen", "127.0.0.1:0", flag, value]), Duration::from_secs(30));
        assert_one_line_error(&out, 2, value);
    }
    let out = run_bounded(
        ringnode(&["echo", "--listen", "127.0.0.1:0", "--framed", "--max-frame", "4"]),
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, 2, "--max-frame 4");
    // In JSON mode even a usage error is one JSON object.
    let out = run_bounded(
        ringnode(&["--log-format", "json", "echo", "--listen", "127.0.0.1:0", "--idle-timeout", "abc"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert!(v["fields"]["message"].as_str().unwrap().contains("abc"), "{err}");
}

/// The CPUs each `echo-N` thread of `pid` may run on, from /proc.
fn core_thread_cpus(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !name.starts_with("echo-") {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim();
        out.push(list.to_string());
    }
    out
}

#[test]
fn cpus_pins_each_core_and_fewer_cores_than_cpus_run_unpinned() {
    let allowed = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|s| s.trim().to_string()))
        .unwrap();
    let cpus: Vec<usize> = (0..4096).filter(|&c| cpu_in_list(&allowed, c)).collect();
    if cpus.len() < 2 {
        common::skip("needs two CPUs to tell pinned from unpinned");
        return;
    }
    let last = cpus[cpus.len() - 1].to_string();
    // --cpus LAST: the one core runs on that CPU only.
    let s = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cpus", &last]);
    assert_eq!(core_thread_cpus(s.pid()), vec![last.clone()]);
    assert!(s.stop(Duration::from_secs(20)).1.contains("stopped:"));
    // --cores 1 on a machine with more CPUs: unpinned, not stacked on the first CPU.
    let s = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    assert_eq!(core_thread_cpus(s.pid()), vec![allowed.clone()]);
    drop(s);
    // --no-pin with every CPU: unpinned too.
    let s = Server::start(&["echo", "--listen", "127.0.0.1:0", "--no-pin"]);
    let threads = core_thread_cpus(s.pid());
    assert_eq!(threads.len(), cpus.len());
    assert!(threads.iter().all(|t| *t == allowed), "{threads:?}");
    drop(s);
    // A CPU this process may not use is named, exit 2.
    let out = common::run_bounded(
        common::ringnode(&["echo", "--listen", "127.0.0.1:0", "--cpus", "4095"]),
        Duration::from_secs(20),
    );
    assert_one_line_error(&out, 2, "CPU 4095");
}

/// Whether `cpu` is in a `Cpus_allowed_list` such as `0-1,4`.
fn cpu_in_list(list: &str, cpu: usize) -> bool {
    list.split(',').any(|p| match p.split_once('-') {
        Some((a, b)) => (a.parse().unwrap_or(usize::MAX)..=b.parse().unwrap_or(0)).contains(&cpu),
        None => p.parse() == Ok(cpu),
    })
}

#[test]
fn bad_segments_start_times_and_thresholds_are_usage_errors() {
    let t = ["load", "--target", "127.0.0.1:9", "--duration", "1s"];
    let with = |extra: &[&str]| {
        let mut a = t.to_vec();
        a.extend_from_slice(extra);
        run_bounded(ringnode(&a), Duration::from_secs(30))
    };
    assert_one_line_error(&with(&["--segment", "0/4"]), 2, "0/4");
    assert_one_line_error(&with(&["--segment", "5/4"]), 2, "5/4");
    assert_one_line_error(&with(&["--segment", "3/3", "--connections", "2"]), 2, "--segment 3/3");
    assert_one_line_error(&with(&["--start-at", "tomorrow"]), 2, "tomorrow");
    assert_one_line_error(&with(&["--start-at", "@99999999999"]), 2, "more than a day ahead");
    assert_one_line_error(&with(&["--slo", "p99=1ms"]), 2, "p99=1ms");
    assert_one_line_error(&with(&["--find-max-rate"]), 2, "--slo");
    assert_one_line_error(&with(&["--find-max-rate", "--slo", "p99<1ms", "--segment", "1/2"]), 2, "--segment");
    assert_one_line_error(&with(&["--mode", "stream", "--slo", "p99<1ms"]), 2, "stream mode");
    assert_one_line_error(&with(&["--mode", "connect", "--slo", "errors<1%", "--find-max-rate"]), 2, "--find-max-rate");
    // No server: the search stops at its first step with exit 1, not a halving to exit 4.
    let out = with(&["--find-max-rate", "--slo", "p99<1s", "--cores", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("step 1"));
}
