//! `ringnode perf` from outside: ringnode against ringnode in every mode (counts agree between the
//! two ends), against Debian's iperf3 both ways, two clients at once on one server, a busy server's
//! refusal, UDP loss, the JSON layouts, bad flags, latency under load, and a test across two
//! network namespaces joined by veth. Each test runs alone (they measure throughput).
#![allow(unsafe_code)] // kill(2) in the shared child-process helpers

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{ringnode, run_bounded, skip, Server};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ringnode perf server on loopback, one core, JSON reports.
fn perf_server(extra: &[&str]) -> Server {
    let mut args = vec!["perf", "server", "--listen", "127.0.0.1:0", "--cores", "1", "-J"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Runs `ringnode perf client` with `-J` against `addr`; its JSON document and exit code.
fn client_json(addr: SocketAddr, args: &[&str]) -> (Value, i32, String) {
    let port = addr.port().to_string();
    let host = addr.ip().to_string();
    let mut all = vec!["perf", "-c", &host, "-p", &port, "-J"];
    all.extend_from_slice(args);
    let out = run_bounded(ringnode(&all), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("no JSON from `{}` ({e}); stdout {} stderr {err}", all.join(" "), String::from_utf8_lossy(&out.stdout))
    });
    (v, out.status.code().unwrap_or(-1), err)
}

fn bytes(v: &Value, key: &str) -> u64 {
    v["end"][key]["bytes"].as_u64().unwrap_or_else(|| panic!("end.{key}.bytes missing in {v}"))
}

#[test]
fn ringnode_to_ringnode_counts_agree_in_every_mode() {
    let _s = serial();
    let server = perf_server(&[]);
    for args in [
        vec!["-t", "1"],
        vec!["-t", "1", "-R"],
        vec!["-t", "1", "-P", "2", "--bidir"],
        vec!["-t", "1", "-l", "1K", "-Z"],
        vec!["-n", "20M"],
        // The omitted second sends more than the budget: counting starts again after it.
        vec!["-n", "20M", "-O", "1", "-b", "200M"],
        vec!["-t", "2", "-b", "40M"],
        vec!["-t", "1", "-u", "-b", "50M"],
        vec!["-t", "1", "-u", "-b", "50M", "-R", "-P", "2"],
        vec!["-t", "1", "-u", "-b", "50M", "--gso", "-l", "1400"],
    ] {
        let (v, code, err) = client_json(server.addr, &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let sent = bytes(&v, "sum_sent");
        let received = bytes(&v, "sum_received");
        assert!(sent > 0, "{args:?}: nothing sent");
        if args.contains(&"-O") {
            // Each side starts counting at the end of its own omitted second (the server's comes
            // a little earlier): the two counts may differ by what went in between.
            assert!(sent.abs_diff(received) <= sent / 50, "{args:?}: sent {sent} received {received}");
        } else {
            // Our receivers drain every stream to its end: what was sent arrived, byte for byte.
            assert_eq!(sent, received, "{args:?}: sent and received differ");
        }
        if args.contains(&"--bidir") {
            assert_eq!(bytes(&v, "sum_sent_bidir_reverse"), bytes(&v, "sum_received_bidir_reverse"), "{args:?}");
        }
        if args.contains(&"-n") {
            assert_eq!(sent, 20 << 20, "{args:?} sends exactly 20 MiB after the omitted seconds");
        }
        if args.contains(&"-b") && !args.contains(&"-u") && !args.contains(&"-n") {
            // Paced where it is counted: 40 Mbit/s for 2 s is 10 MB.
            let want = 40e6 * 2.0 / 8.0;
            assert!((sent as f64 - want).abs() < want / 10.0, "{args:?}: sent {sent}, paced to {want}");
        }
        if args.contains(&"-u") {
            let s = &v["end"]["sum_sent"];
            let r = &v["end"]["sum_received"];
            assert_eq!(s["packets"], r["packets"], "{args:?}: datagram counts");
            assert_eq!(r["lost_packets"], 0, "{args:?}: loss on loopback at 50 Mbit/s");
            assert!(v["end"]["sum"]["jitter_ms"].is_number(), "{args:?}");
        }
        if args.contains(&"-Z") {
            let zc = &v["end"]["zerocopy"];
            let n = zc["sends_without_copy"].as_u64().unwrap() + zc["sends_copied"].as_u64().unwrap();
            assert!(n > 0, "zero-copy sends reported: {zc}");
        }
        let intervals = v["intervals"].as_array().expect("intervals");
        assert!(!intervals.is_empty(), "{args:?}: no intervals");
    }
    // The server's own reports (one JSON document per test) say what it received and sent.
    let (code, out, _) = server.stop(Duration::from_secs(20));
    assert_eq!(code, 0);
    // With -J its standard output is JSON documents and nothing else.
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("the server's -J output is not JSON alone ({e}): {out}"));
    assert_eq!(docs.len(), 10, "one report per test: {out}");
    assert!(docs.iter().all(|d| d["end"]["sum_received"].is_object()), "{out}");
}

#[test]
fn two_clients_at_once_and_a_refusal_past_the_limit() {
    let _s = serial();
    let server = perf_server(&["--max-tests", "2"]);
    let addr = server.addr;
    let run = move |t: &'static str| std::thread::spawn(move || client_json(addr, &["-t", t]));
    let a = run("2");
    let b = run("2");
    std::thread::sleep(Duration::from_millis(500));
    // A third while two run: refused in the protocol's words, exit 1, one line.
    let port = addr.port().to_string();
    let out = run_bounded(ringnode(&["perf", "-c", "127.0.0.1", "-p", &port, "-t", "1"]), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("busy") && err.lines().count() == 1, "{err}");
    for h in [a, b] {
        let (v, code, err) = h.join().unwrap();
        assert_eq!(code, 0, "{err}");
        assert_eq!(bytes(&v, "sum_sent"), bytes(&v, "sum_received"));
    }
    // Past the server's longest test: iperf3's error code, said in words.
    drop(server);
    let server = perf_server(&["--max-duration", "5s"]);
    let port = server.addr.port().to_string();
    let out = run_bounded(ringnode(&["perf", "-c", "127.0.0.1", "-p", &port, "-t", "60"]), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("maximum permitted"), "{err}");
}

#[test]
fn udp_loss_is_reported_when_the_bitrate_exceeds_what_the_receiver_takes() {
    let _s = serial();
    let server = perf_server(&[]);
    // The smallest receive buffer (room for one 8,000 B datagram at a time) and 5 Gbit/s offered:
    // every burst of two loses one, however fast the receiver.
    let (v, code, err) = client_json(server.addr, &["-u", "-b", "5G", "-l", "8000", "-w", "4K", "-t", "1"]);
    assert_eq!(code, 0, "{err}");
    let r = &v["end"]["sum_received"];
    let lost = r["lost_packets"].as_i64().unwrap();
    assert!(lost > 0, "no loss reported: {r}");
    assert!(r["lost_percent"].as_f64().unwrap() > 0.0);
}

#[test]
fn json_stream_is_one_event_per_line() {
    let _s = serial();
    let server = perf_server(&[]);
    let port = server.addr.port().to_string();
    let out = run_bounded(
        ringnode(&["perf", "-c", "127.0.0.1", "-p", &port, "-t", "2", "--json-stream"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"end"));
    assert!(names.iter().filter(|n| **n == "interval").count() >= 2, "{names:?}");
    assert!(events.iter().all(|e| e["data"].is_object()));
    assert!(events.last().unwrap()["data"]["sum_received"]["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn latency_under_load_against_a_ringnode_server() {
    let _s = serial();
    let server = perf_server(&[]);
    let log = std::env::temp_dir().join(format!("ringnode-perf-latency-{}.hlog", std::process::id()));
    let log_s = log.to_str().unwrap();
    let (v, code, err) = client_json(server.addr, &["-t", "2", "--latency", "--latency-log", log_s]);
    assert_eq!(code, 0, "{err}");
    let l = &v["end"]["latency"];
    assert!(l["samples"].as_u64().unwrap() >= 50, "{l}");
    assert!(l["p99_us"].as_f64().unwrap() >= l["p50_us"].as_f64().unwrap());
    assert!(l["max_us"].as_f64().unwrap() > 0.0);
    // The log reads back with `ringnode report`.
    let out = run_bounded(ringnode(&["report", "--json", log_s]), Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&log);
}

#[test]
fn bad_flags_and_unreachable_servers_say_one_line() {
    for (args, code, needle) in [
        (vec!["perf"], 2, "server"),
        (vec!["perf", "-c", "127.0.0.1", "-b", "fast"], 2, "bitrate"),
        (vec!["perf", "-c", "127.0.0.1", "-P", "0"], 2, "--streams"),
        (vec!["perf", "-c", "127.0.0.1", "--gso"], 2, "UDP"),
        (vec!["perf", "-s", "-c", "127.0.0.1"], 2, "cannot be used"),
        // Nothing listens on port 1: refused, exit 1.
        (vec!["perf", "-c", "127.0.0.1", "-p", "1", "-t", "1"], 1, "cannot connect"),
    ] {
        let out = run_bounded(ringnode(&args), Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Debian's iperf3, if installed.
fn iperf3() -> Option<&'static str> {
    ["/usr/bin/iperf3", "/usr/local/bin/iperf3"].into_iter().find(|p| std::path::Path::new(p).exists())
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Debian's iperf3 as a server on a free loopback port (killed on drop), or `None` after saying
/// why it is missing.
fn iperf3_server() -> Option<(&'static str, Kill, SocketAddr)> {
    let Some(iperf) = iperf3() else {
        skip("iperf3 is not installed (apt-get install iperf3)");
        return None;
    };
    let port = free_port();
    let srv = Kill(
        Command::new(iperf)
            .args(["-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    Some((iperf, srv, format!("127.0.0.1:{port}").parse().unwrap()))
}

#[test]
fn interop_with_iperf3_both_ways() {
    let _s = serial();
    let Some((iperf, _srv, addr)) = iperf3_server() else { return };
    // ringnode client, iperf3 server.
    let cases: [&[&str]; 7] = [
        &["-t", "1"],
        &["-t", "1", "-R"],
        &["-t", "1", "-P", "4"],
        &["-t", "1", "--bidir"],
        &["-t", "1", "-u", "-b", "50M"],
        &["-t", "2", "-b", "40M"],
        // iperf3 3.12 does not say how many datagrams it counted in the omitted second.
        &["-t", "1", "-u", "-b", "20M", "-O", "1", "-l", "1250"],
    ];
    for args in cases {
        let (v, code, err) = client_json(addr, args);
        if args.contains(&"-O") {
            // 20 Mbit/s of 1,250 B datagrams for the one counted second: 2,000.
            let packets = v["end"]["sum"]["packets"].as_u64().unwrap_or(0);
            assert!((1800..=2200).contains(&packets), "{args:?}: {packets} datagrams counted: {}", v["end"]);
        }
        if args.contains(&"-b") && !args.contains(&"-u") {
            let sent = bytes(&v, "sum_sent") as f64;
            assert!((sent - 10e6).abs() < 1e6, "{args:?}: sent {sent}, paced to 10 MB");
        }
        assert_eq!(code, 0, "ringnode -> iperf3 {args:?}: {err}");
        let (sent, received) = (bytes(&v, "sum_sent"), bytes(&v, "sum_received"));
        assert!(received > 0 && received <= sent, "{args:?}: sent {sent} received {received}");
        if args.contains(&"-R") {
            // iperf3 sends, ringnode drains every byte.
            assert_eq!(sent, received, "{args:?}");
        }
        if args.contains(&"-u") {
            // iperf3's receiver stops reading when the test ends: a last burst may go unread.
            assert!(sent - received <= sent / 100, "{args:?}: sent {sent} received {received}");
        }
    }
    // iperf3 client, ringnode server: iperf3's own report.
    let server = perf_server(&[]);
    let port = server.addr.port().to_string();
    let cases: [&[&str]; 8] = [
        &["-t", "1"],
        &["-t", "1", "-R"],
        &["-t", "1", "-P", "4"],
        &["-t", "1", "--bidir"],
        &["-t", "1", "-u", "-b", "50M"],
        &["-t", "1", "-u", "-b", "50M", "-R"],
        // Whole datagrams to the byte count (a short last one left iperf3 waiting).
        &["-u", "-R", "-n", "100000", "-l", "1400", "-b", "10M"],
        // iperf3 stops reading once it has sent its count: the server's sends end, not stall.
        &["--bidir", "-n", "200M"],
    ];
    for args in cases {
        let mut all = vec!["-c", "127.0.0.1", "-p", &port, "-J"];
        all.extend_from_slice(args);
        let out = run_bounded(
            {
                let mut c = Command::new(iperf);
                c.args(&all).stdin(Stdio::null());
                c
            },
            Duration::from_secs(60),
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("iperf3's JSON");
        assert!(v.get("error").is_none(), "iperf3 -> ringnode {args:?}: {}", v["error"]);
        let (sent, received) = (bytes(&v, "sum_sent"), bytes(&v, "sum_received"));
        assert!(received > 0, "{args:?}");
        if !args.contains(&"--bidir") && !args.contains(&"-R") {
            // ringnode's receiver drains every stream: it counts what iperf3 sent. (iperf3's own
            // receiver stops reading when the test ends, so with -R it counts less than was sent.)
            assert_eq!(sent, received, "iperf3 -> ringnode {args:?}");
        }
        if args.contains(&"-u") {
            assert_eq!(v["end"]["sum_received"]["lost_packets"], 0, "{args:?}");
        }
    }
}

#[test]
fn json_layout_has_iperf3s_keys() {
    let _s = serial();
    let Some((iperf, _srv, addr)) = iperf3_server() else { return };
    let port = addr.port();
    let keys = |v: &Value| -> Vec<String> { v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default() };
    for extra in [&[][..], &["-u", "-b", "10M"][..], &["--bidir"][..]] {
        let mut iargs = vec!["-c", "127.0.0.1", "-p", &port.to_string(), "-J", "-t", "1"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        iargs.extend(extra.iter().map(|s| s.to_string()));
        let out = run_bounded(
            {
                let mut c = Command::new(iperf);
                c.args(&iargs).stdin(Stdio::null());
                c
            },
            Duration::from_secs(30),
        );
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut args = vec!["-t", "1"];
        args.extend_from_slice(extra);
        let (ours, code, err) = client_json(addr, &args);
        assert_eq!(code, 0, "{err}");
        // Every key a jq user reads from iperf3's document is in ours, at the same place.
        type Place = (&'static str, fn(&Value) -> &Value);
        let places: [Place; 6] = [
            ("start", |v| &v["start"]),
            ("start.test_start", |v| &v["start"]["test_start"]),
            ("intervals[0].streams[0]", |v| &v["intervals"][0]["streams"][0]),
            ("intervals[0].sum", |v| &v["intervals"][0]["sum"]),
            ("end", |v| &v["end"]),
            ("end.sum_received", |v| &v["end"]["sum_received"]),
        ];
        for (name, at) in places {
            let mine = keys(at(&ours));
            for k in keys(at(&theirs)) {
                assert!(mine.contains(&k), "{extra:?}: {name}.{k} missing (ours: {mine:?})");
            }
        }
        let mine = keys(&ours["end"]["streams"][0]);
        for k in keys(&theirs["end"]["streams"][0]) {
            assert!(mine.contains(&k), "{extra:?}: end.streams[0].{k} missing");
        }
    }
}

/// Two network namespaces joined by a veth pair, removed on drop (also when the test fails).
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn create() -> Option<Netns> {
        let id = std::process::id();
        let n = Netns { a: format!("rnpa{id}"), b: format!("rnpb{id}") };
        let ok = |args: &[&str]| Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false);
        if !ok(&["netns", "add", &n.a]) {
            return None;
        }
        let va = format!("va{id}");
        let vb = format!("vb{id}");
        let steps: [Vec<&str>; 7] = [
            vec!["netns", "add", &n.b],
            vec!["link", "add", &va, "netns", &n.a, "type", "veth", "peer", "name", &vb, "netns", &n.b],
            vec!["-n", &n.a, "addr", "add", "10.77.0.1/24", "dev", &va],
            vec!["-n", &n.b, "addr", "add", "10.77.0.2/24", "dev", &vb],
            vec!["-n", &n.a, "link", "set", &va, "up"],
            vec!["-n", &n.b, "link", "set", &vb, "up"],
            vec!["-n", &n.a, "link", "set", "lo", "up"],
        ];
        for s in &steps {
            assert!(ok(s), "ip {s:?} failed");
        }
        Some(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn across_two_namespaces_joined_by_veth() {
    let _s = serial();
    let has_ip = Command::new("ip").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if !has_ip {
        skip("`ip` (iproute2) is not installed");
        return;
    }
    let Some(ns) = Netns::create() else {
        skip("cannot create network namespaces here (needs root)");
        return;
    };
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.a,
        common::bin(),
        "perf",
        "server",
        "--listen",
        "10.77.0.1:5201",
        "--cores",
        "1",
        "-J",
    ]);
    let server = Server::start_cmd(cmd);
    for args in [&["-t", "1"][..], &["-t", "1", "-R"][..], &["-t", "1", "-u", "-b", "100M"][..]] {
        let mut all = vec!["netns", "exec", &ns.b, common::bin(), "perf", "-c", "10.77.0.1", "-J"];
        all.extend_from_slice(args);
        let mut c = Command::new("ip");
        c.args(&all).stdin(Stdio::null());
        let out = run_bounded(c, Duration::from_secs(60));
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(bytes(&v, "sum_sent"), bytes(&v, "sum_received"), "{args:?}");
        assert_eq!(v["start"]["connected"][0]["remote_host"], "10.77.0.1");
    }
    drop(server);
}

#[test]
fn a_server_that_stops_mid_test_leaves_partial_results_and_one_line() {
    let _s = serial();
    let server = perf_server(&[]);
    let port = server.addr.port().to_string();
    let child = ringnode(&["perf", "-c", "127.0.0.1", "-p", &port, "-t", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    drop(server); // SIGKILL: the control connection and the data stream go at once.
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("partial results"), "{stderr}");
    // The intervals measured before the server went, and a summary of this side's counts.
    assert!(stdout.contains("0.00-1.00"), "{stdout}");
    assert!(stdout.contains("sender"), "{stdout}");
}

#[test]
fn a_two_core_server_places_tests_by_cookie_and_reports_draw() {
    let _s = serial();
    // Two cores, unpinned: tests land on the core their cookie hashes to, their connections move
    // there from whichever core accepted them.
    let server = Server::start(&["perf", "server", "--listen", "127.0.0.1:0", "--cores", "2", "-J"]);
    let dir = std::env::temp_dir().join(format!("ringnode-perf-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..4 {
        let (v, code, err) = client_json(server.addr, &["-t", "1", "-P", "3", "-f", "m"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(bytes(&v, "sum_sent"), bytes(&v, "sum_received"));
        std::fs::write(dir.join(format!("run{i}.json")), v.to_string()).unwrap();
    }
    // `ringnode report` reads perf documents: throughput per interval, and a plot.
    let svg = dir.join("t.svg");
    let files: Vec<String> = (0..2).map(|i| dir.join(format!("run{i}.json")).display().to_string()).collect();
    let mut args = vec!["report", "--svg", svg.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let out = run_bounded(ringnode(&args), Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run0.json") && text.contains("bits/sec"), "{text}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<?xml") && plot.matches("<polyline").count() == 2, "{plot}");
    let _ = std::fs::remove_dir_all(&dir);
    // -f m: the bitrate column in Mbits; --get-server-output: the server's report too.
    let port = server.addr.port().to_string();
    let out = run_bounded(
        ringnode(&["perf", "-c", "127.0.0.1", "-p", &port, "-t", "1", "-f", "m", "--get-server-output"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let (mine, theirs) = text.split_once("Server output").unwrap_or_else(|| panic!("no server output: {text}"));
    assert!(mine.lines().any(|l| l.contains(" sec ")), "{mine}");
    assert!(mine.lines().filter(|l| l.contains(" sec ")).all(|l| l.contains("Mbits/sec")), "{mine}");
    // This server writes JSON (-J): its report comes as JSON.
    assert!(theirs.contains("\"sum_received\""), "{theirs}");
}
