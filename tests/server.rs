//! The server layer on two cores (unpinned, never spinning, one test at a time): connections dealt
//! to both cores through the typed mailboxes, a connection moved to the core that owns its key with
//! what was already read from it, and the admin endpoint answering for every core.

#![allow(unsafe_code)] // kill(2) in the shared child-process helpers

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringnode::runtime::{self, CoreInfo, Placement};
use ringnode::server::{Connection, Server, Service};

use common::Server as Proc;

/// Two-core tests run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `GET path` on the admin endpoint: (status, body).
fn get(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to admin");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("admin answer");
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn connections_are_dealt_to_both_cores_and_the_admin_endpoint_answers_for_each() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server =
        Proc::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "2", "--no-pin", "--admin", "127.0.0.1:0"]);
    // The admin address is on the second line.
    let mut conns: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let msg = format!("hello {i:03}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    let admin = server.second_line().split("http://").nth(1).and_then(|r| r.split('/').next()).map(str::to_string);
    let admin: std::net::SocketAddr = admin.expect("admin line").parse().unwrap();
    let (status, body) = get(admin, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["accepted"], 40, "{v}");
    assert_eq!(v["open_connections"], 40, "{v}");
    let cores = v["cores"].as_array().unwrap();
    assert_eq!(cores.len(), 2);
    // Dealt in turn: twenty each, each core serving and counting its own.
    for c in cores {
        assert_eq!(c["served"], 20, "{v}");
        assert_eq!(c["open_connections"], 20, "{v}");
        assert_eq!(c["service"]["messages_in"], 20, "{v}");
    }
    assert_eq!(get(admin, "GET /healthz HTTP/1.1\r\n\r\n"), (200, "ok\n".into()));
    // Twenty idle clients cannot hold the endpoint: each gets at most 1 s for its request head.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(admin).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(admin, "GET /healthz HTTP/1.1\r\n\r\n"), (200, "ok\n".into()));
    drop(idle);
    assert_eq!(get(admin, "POST /stats HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
    assert_eq!(get(admin, "GET /nope HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(get(admin, "\x01\x02 nonsense\r\n\r\n").0, 400);
    drop(conns);
    let (code, out, err) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert_eq!(common::parse_stop_line(&out).0, 40);
}

/// A service that reads a key line (`key\n`), moves the connection to the core that owns the key,
/// and there answers `core N: <rest>` for what followed the key — including what was read on the
/// first core before the move.
struct ByKey;

#[derive(Default, Clone, Copy)]
struct KeyStats {
    moved_in: u64,
}

impl std::ops::AddAssign for KeyStats {
    fn add_assign(&mut self, o: KeyStats) {
        self.moved_in += o.moved_in;
    }
}

thread_local! {
    static MOVED_IN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Service for ByKey {
    type Stats = KeyStats;

    async fn serve(self: Arc<Self>, conn: Connection) {
        let me = runtime::current_core();
        let cores = runtime::Core::with(|c| c.count());
        if !conn.buffered.is_empty() {
            // Moved here: the key line and what followed it were read on the other core.
            MOVED_IN.with(|m| m.set(m.get() + 1));
            let all: Vec<u8> = conn.buffered.iter().flat_map(|b| b.iter().copied()).collect();
            let text = String::from_utf8_lossy(&all).to_string();
            let (_key, rest) = text.split_once('\n').unwrap_or(("", ""));
            let reply = format!("core {me}: {rest}\n");
            let _ = conn.stream().send_all(reply.into_bytes()).await;
            conn.finish(false).await;
            return;
        }
        let mut rx = conn.stream().recv_stream();
        let mut got: Vec<Bytes> = Vec::new();
        while !got.iter().any(|b| b.contains(&b'\n')) {
            match rx.next().await {
                Some(Ok(b)) => got.push(b),
                _ => {
                    drop(rx);
                    conn.finish(true).await;
                    return;
                }
            }
        }
        // Stop receiving, keeping what was taken, and hand everything to the owner core.
        let mut rest = rx.finish().await.unwrap_or_default();
        let mut buffered = got;
        buffered.append(&mut rest);
        let all: Vec<u8> = buffered.iter().flat_map(|b| b.iter().copied()).collect();
        let key = String::from_utf8_lossy(&all).split('\n').next().unwrap_or("").to_string();
        let owner = Placement::new(cores).of_key(key.as_bytes());
        if let Err(conn) = conn.move_to(owner, buffered) {
            conn.finish(true).await;
        }
    }

    fn on_core(self: &Arc<Self>, _core: &CoreInfo) {}

    fn core_stats(&self) -> KeyStats {
        KeyStats { moved_in: MOVED_IN.with(|m| m.get()) }
    }

    fn stats_json(s: &KeyStats) -> serde_json::Value {
        serde_json::json!({ "moved_in": s.moved_in })
    }
}

#[test]
fn a_connection_moves_to_the_core_that_owns_its_key_with_what_was_already_read() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(common::loopback_server(2), ByKey).expect("io_uring available");
    let addr = server.local_addr().unwrap();
    let placement = Placement::new(2);
    let keys: Vec<String> = (0..16).map(|i| format!("node-{i}")).collect();
    for key in &keys {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // Key and payload in one write: the payload is read on the accepting core, before the
        // move, and must arrive with the connection.
        s.write_all(format!("{key}\npayload for {key}").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).expect("an answer from the owner core");
        let owner = placement.of_key(key.as_bytes());
        assert_eq!(line, format!("core {owner}: payload for {key}\n"));
    }
    server.handle().shutdown();
    let (stats, keyed) = server.join().unwrap();
    assert_eq!(stats.accepted, 16);
    assert_eq!(stats.moved, 16, "every connection moves once (to its owner, even if that is where it was)");
    assert_eq!(keyed.moved_in, 16);
    assert_eq!(stats.errors, 0);
}
