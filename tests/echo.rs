//! The echo server end to end, over real sockets on loopback.

#![allow(unsafe_code)] // pre_exec (seccomp) and kill(2) in the child-process helpers

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{parse_stop_line, Server};
use rand::{Rng, SeedableRng};

/// Writes `payload` on one thread while reading the echo on this one, so that payloads larger than
/// the socket buffers cannot deadlock.
fn echo_roundtrip(stream: &TcpStream, payload: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let p = payload.to_vec();
    let t = std::thread::spawn(move || writer.write_all(&p).unwrap());
    let mut got = vec![0u8; payload.len()];
    (&*stream).read_exact(&mut got).unwrap();
    t.join().unwrap();
    got
}

#[test]
fn thousand_connections_with_random_payloads_echo_byte_exact() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let addr = server.addr;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    // All 1,000 connections are open at once; eight threads drive them in turn.
    let conns: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s
        })
        .collect();
    let mut total = 0u64;
    let mut jobs: Vec<Vec<(TcpStream, Vec<u8>)>> = (0..8).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        let len = rng.gen_range(1..=256 * 1024);
        let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        total += len as u64;
        jobs[i % 8].push((c, payload));
    }
    let started = Instant::now();
    let workers: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            std::thread::spawn(move || {
                for (c, payload) in &job {
                    assert!(echo_roundtrip(c, payload) == *payload, "echo differs");
                }
                job.len()
            })
        })
        .collect();
    let done: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(done, 1000);
    assert!(started.elapsed() < Duration::from_secs(120));
    let (code, out, err) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (conns, bytes_in, bytes_out) = parse_stop_line(&out);
    assert_eq!(conns, 1000);
    assert_eq!(bytes_in, total);
    assert_eq!(bytes_out, total);
}

#[test]
fn udp_datagrams_come_back_to_their_sender() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--udp"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 65536];
    // Up to the largest UDP datagram over IPv4.
    for size in [1usize, 64, 1400, 9000, 60000, 65507] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        sock.send_to(&payload, server.addr).unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.addr);
        assert_eq!(&buf[..n], &payload[..]);
    }
    // Bursts: a hundred datagrams sent before any is read, ten times; every one comes back once.
    let mut seen = std::collections::HashSet::new();
    for round in 0..10u32 {
        for i in 0..100u32 {
            sock.send_to(&(round * 100 + i).to_be_bytes(), server.addr).unwrap();
        }
        for _ in 0..100 {
            let (n, _) = sock.recv_from(&mut buf).expect("every datagram of the burst comes back");
            assert_eq!(n, 4);
            assert!(seen.insert(u32::from_be_bytes(buf[..4].try_into().unwrap())), "a datagram came back twice");
        }
    }
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.contains("1006 messages / 139972 bytes in"), "{out}");
    // Received by the multishot RECVMSG into the datagram group, not into heap buffers.
    assert!(out.contains("datagram (65600 B buffers): 1006 leased"), "{out}");
}

#[test]
fn ipv6_tcp_and_udp_echo() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        common::skip("ipv6_tcp_and_udp_echo: no IPv6 loopback on this host");
        return;
    }
    let server = Server::start(&["echo", "--listen", "[::1]:0", "--cores", "1"]);
    assert!(server.addr.is_ipv6());
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(echo_roundtrip(&s, b"hello over IPv6"), b"hello over IPv6");
    drop(s);
    let udp = Server::start(&["echo", "--listen", "[::1]:0", "--cores", "1", "--udp"]);
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.send_to(b"v6 datagram", udp.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"v6 datagram");
}

#[test]
fn sigterm_with_connections_open_drains_and_reports() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let conns: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    for c in &conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(echo_roundtrip(c, b"ping"), b"ping");
    }
    let (code, out, err) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (n, bytes_in, bytes_out) = parse_stop_line(&out);
    assert_eq!((n, bytes_in, bytes_out), (50, 200, 200));
    // The server closed our connections on its way out.
    let mut buf = [0u8; 8];
    for mut c in conns {
        assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    }
}

#[test]
fn a_peer_that_resets_mid_message_costs_only_its_connection() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let healthy = TcpStream::connect(server.addr).unwrap();
    healthy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for round in 0..20u8 {
        let bad = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        bad.connect(&server.addr.into()).unwrap();
        bad.send(&vec![round; 100_000][..50_000]).unwrap();
        // Linger 0: close sends RST instead of FIN, in the middle of the echo.
        bad.set_linger(Some(Duration::ZERO)).unwrap();
        drop(bad);
        let msg = vec![round; 1000];
        assert_eq!(echo_roundtrip(&healthy, &msg), msg);
    }
    healthy.shutdown(Shutdown::Both).unwrap();
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert_eq!(parse_stop_line(&out).0, 21);
}

#[test]
fn load_counts_match_the_server_counts() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let target = server.addr.to_string();
    let (v, out) = common::load_json(&[
        "--target",
        &target,
        "--connections",
        "16",
        "--size",
        "4KiB",
        "--pipeline",
        "4",
        "--duration",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["connections_up"], 16);
    assert_eq!(v["errors"]["mismatch"], 0);
    let received = v["messages_received"].as_u64().unwrap();
    assert!(received > 0);
    assert_eq!(v["messages_sent"].as_u64().unwrap(), received);
    assert!(v["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    let (code, sout, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    let (_, bytes_in, bytes_out) = parse_stop_line(&sout);
    assert_eq!(bytes_in, received * 4096);
    assert_eq!(bytes_out, bytes_in);
}

/// A connection whose peer sends a burst before the server first reads it takes one small buffer
/// to learn that it moves bulk data, not a small buffer per 512 bytes of the burst: the first
/// receive is single-shot, and the multishot receive after it draws from the stream group.
#[test]
fn a_burst_before_the_first_read_moves_the_connection_to_large_buffers_at_once() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut conns: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    for c in &mut conns {
        c.write_all(&payload).unwrap();
    }
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut back = vec![0u8; payload.len()];
        c.read_exact(&mut back).unwrap();
        assert!(back == payload);
    }
    drop(conns);
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    let small = out
        .split("small (512 B buffers): ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no small group line: {out}"));
    assert!(small <= 100, "{small} small buffers for 50 connections: {out}");
    assert!(out.contains("0 receives stopped for a reader that fell behind"), "{out}");
}
