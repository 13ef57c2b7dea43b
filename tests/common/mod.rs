//! Helpers shared by the integration tests: run the real binary, find the address it listens on,
//! stop it with a signal, with generous time bounds (these machines are small and shared).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringnode")
}

pub fn ringnode(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs to completion with a time bound; panics (and kills the child) if it takes longer.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ringnode");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "ringnode did not finish within {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process, stopped (SIGKILL) on drop if the test did not stop it.
pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    stdout_rest: Option<mpsc::Receiver<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts `ringnode echo` with `args` and waits (up to 20 s) for its "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_cmd(ringnode(args))
    }

    /// Like [`Server::start`], with a command prepared by the caller (limits, filters). The
    /// "listening on" line may come on standard error (a server whose standard output is JSON).
    pub fn start_cmd(mut cmd: Command) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let first_out = addr_tx.clone();
        std::thread::spawn(move || {
            let mut first = true;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if first && line.contains("listening on ") {
                    first = false;
                    let _ = first_out.send(line);
                } else if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on ") {
                    let _ = addr_tx.send(line.clone());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let line = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let err = stderr.join().unwrap_or_default();
                panic!("server did not report its address; stderr: {err}");
            }
        };
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Server { child: Some(child), addr, stdout_rest: Some(rx), stderr: Some(stderr) }
    }

    /// The next line the server printed after its first (up to 20 s).
    pub fn second_line(&self) -> String {
        self.stdout_rest
            .as_ref()
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(20)).ok())
            .unwrap_or_else(|| panic!("the server printed no second line"))
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit; returns (exit code, rest of stdout,
    /// stderr).
    pub fn stop(mut self, limit: Duration) -> (i32, String, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(rx) = self.stdout_rest.take() {
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        let err = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        (status.code().unwrap_or(-1), out, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Parses "N connections, A messages / B bytes in, C messages / D bytes out" from the stop line.
pub fn parse_stop_line(out: &str) -> (u64, u64, u64) {
    let line = out.lines().find(|l| l.contains("stopped:")).unwrap_or_else(|| panic!("no stop line in: {out}"));
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect();
    // connections, msgs in, bytes in, msgs out, bytes out, errors
    (nums[0], nums[2], nums[4])
}

/// Runs `ringnode load --cores 1 --json --quiet ARGS` (bounded at 120 s) and parses its JSON.
pub fn load_json(args: &[&str]) -> (serde_json::Value, Output) {
    let mut all = vec!["load", "--cores", "1", "--json", "--quiet"];
    all.extend_from_slice(args);
    let out = run_bounded(ringnode(&all), Duration::from_secs(120));
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (v, out)
}

/// A precondition this test needs is missing: under CI that is a failure (`.ci/run` installs what
/// the tests need); where a person runs the tests it is said on the terminal — written past the
/// test harness's capture, so it is seen even when the test passes — and the test stops.
pub fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "precondition missing under CI: {why}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// A library server's settings for a test: loopback, any port, default limits, a 2 s stop grace,
/// no admin endpoint, `cores` unpinned cores.
pub fn loopback_server(cores: usize) -> ringnode::server::ServerConfig {
    ringnode::server::ServerConfig {
        listen: Some("127.0.0.1:0".parse().expect("an address")),
        limits: ringnode::net::Limits::default(),
        stop_grace: Duration::from_secs(2),
        admin: None,
        runtime: ringnode::runtime::RuntimeConfig {
            cpus: vec![None; cores],
            handle_signals: false,
            name: "srv".into(),
        },
    }
}
