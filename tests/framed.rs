//! The framed path end to end, with a client that frames bytes by hand (sharing no code with the
//! server's codec), and bad input aimed at a server that carries healthy traffic meanwhile.
#![allow(unsafe_code)] // kill(2) in the shared child-process helpers

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{parse_stop_line, Server};

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn hello() -> Vec<u8> {
    frame(1, b"RNOD\x00\x01\x00\x00")
}

/// Reads one frame: (kind, payload).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[0], p))
}

/// Reads frames until a CLOSE (the server's HELLO may come first) and returns its payload; `None`
/// if the stream ends or fails first.
fn read_close(s: &mut TcpStream) -> Option<Vec<u8>> {
    while let Ok((kind, p)) = read_frame(s) {
        if kind == 3 {
            return Some(p);
        }
    }
    None
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn handshake(s: &mut TcpStream) {
    s.write_all(&hello()).unwrap();
    let (kind, p) = read_frame(s).unwrap();
    assert_eq!(kind, 1, "server's first frame is HELLO");
    assert_eq!(&p[..6], b"RNOD\x00\x01");
}

#[test]
fn frames_split_anywhere_come_back_whole_and_in_order() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed"]);
    let mut s = connect(&server);
    handshake(&mut s);
    let payloads: Vec<Vec<u8>> =
        (0..200usize).map(|i| (0..(i * 997) % 70_000).map(|j| (i + j) as u8).collect()).collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(2, p)).collect();
    let mut writer = s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        // Odd-sized writes, so frames and headers are split at every kind of boundary.
        for chunk in wire.chunks(1237) {
            writer.write_all(chunk).unwrap();
        }
    });
    for p in &payloads {
        let (kind, got) = read_frame(&mut s).unwrap();
        assert_eq!(kind, 2);
        assert!(got == *p, "payload of {} bytes differs", p.len());
    }
    t.join().unwrap();
    // PING is answered with a PONG carrying the same bytes.
    s.write_all(&frame(4, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (5, b"are you there".to_vec()));
    drop(s);
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.contains("200 messages"), "{out}");
}

/// Each bad input, the CLOSE code the server must answer with, and the counter name.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut oversize = vec![2, 0, 0, 0];
    oversize.extend_from_slice(&(64u32 << 20).to_be_bytes());
    vec![
        ("unknown_kind", [hello(), frame(0x7f, b"x")].concat(), 1),
        ("bad_flags", [hello(), vec![2, 0x80, 0, 0, 0, 0, 0, 0]].concat(), 2),
        ("bad_reserved", [hello(), vec![2, 0, 0, 9, 0, 0, 0, 0]].concat(), 3),
        ("too_large", [hello(), oversize].concat(), 4),
        ("before_hello", frame(2, b"data first"), 5),
        ("duplicate_hello", [hello(), hello()].concat(), 6),
        // An empty HELLO as the last bytes of a receive (it once panicked the core).
        ("bad_hello", frame(1, b""), 7),
        ("unsupported_version", frame(1, b"RNOD\x00\x09\x00\x00"), 8),
        ("bad_length", [hello(), frame(3, b"x")].concat(), 9),
    ]
}

#[test]
fn each_bad_frame_closes_only_its_connection_with_a_reason() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed", "--max-frame", "1MiB"]);
    // Healthy traffic on two connections for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let healthy: Vec<_> = (0..2)
        .map(|n| {
            let mut s = connect(&server);
            let stop = stop.clone();
            std::thread::spawn(move || {
                handshake(&mut s);
                let mut rounds = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let p: Vec<u8> = (0..3000).map(|i| (i as u64 * 31 + rounds + n) as u8).collect();
                    s.write_all(&frame(2, &p)).unwrap();
                    let (kind, got) = read_frame(&mut s).expect("healthy connection keeps working");
                    assert_eq!(kind, 2);
                    assert!(got == p, "healthy payload corrupted");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for (name, bytes, code) in bad_inputs() {
        let mut s = connect(&server);
        s.write_all(&bytes).unwrap();
        let p = read_close(&mut s).unwrap_or_else(|| panic!("{name}: no CLOSE frame"));
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), code, "{name}: close code");
        assert!(!p[2..].is_empty(), "{name}: close reason is empty");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // A frame cut off by the peer mid-payload: the connection just ends, nothing else does.
    let mut s = connect(&server);
    s.write_all(&[hello(), frame(2, &[1u8; 5000])[..2000].to_vec()].concat()).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for h in healthy {
        assert!(h.join().unwrap() > 0);
    }
    let (code, out, err) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    for (name, _, _) in bad_inputs() {
        assert!(out.contains(&format!("{name} 1")), "counter for {name} in: {out}");
    }
    // The connection cut off mid-frame is counted too.
    assert!(out.contains("ended the stream inside a frame: 1"), "{out}");
    assert_eq!(parse_stop_line(&out).0, 2 + bad_inputs().len() as u64 + 1);
}

#[test]
fn framed_load_counts_match_the_server() {
    let server =
        Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed", "--zc-threshold", "16KiB"]);
    let target = server.addr.to_string();
    let mut total = 0u64;
    for (size, pipeline) in [("64", "16"), ("40KiB", "2")] {
        let (v, out) = common::load_json(&[
            "--mode",
            "framed",
            "--target",
            &target,
            "--connections",
            "8",
            "--size",
            size,
            "--pipeline",
            pipeline,
            "--duration",
            "1s",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(v["errors"]["mismatch"], 0);
        assert_eq!(v["messages_sent"], v["messages_received"]);
        total += v["messages_received"].as_u64().unwrap();
    }
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.contains(" 0 errors"), "{out}");
    assert!(out.contains(&format!("16 connections, {total} messages / ")), "{total} in: {out}");
    // 40 KiB frames went out with SENDMSG_ZC; on loopback the kernel copies every one, and after
    // 8 copies in a row a connection stops asking.
    assert!(count_after(&out, "vectored, ") > 0, "no zero-copy sends: {out}");
    assert!(count_after(&out, "went without a copy; ") > 0, "no connection gave up zero-copy: {out}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The number after `label` in the server's report.
fn count_after(out: &str, label: &str) -> u64 {
    out.split(label)
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).find(|t| !t.is_empty()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{label}' in: {out}"))
}

#[test]
fn frames_trickled_a_byte_at_a_time_hold_their_size_not_a_buffer_per_byte() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed", "--max-frame", "1MiB"]);
    let rss_before = rss_kib(server.pid());
    // 64 connections each announce a 1 MiB frame and send its first 60 bytes one per send:
    // 3,840 receives of one byte. If each kept its 64 KiB pool buffer until its frame completed,
    // they would need 7.5 times the pool (512 buffers): it would run dry, and every receive after
    // that would go to a heap buffer.
    let payload: Vec<u8> = (0..1usize << 20).map(|i| (i % 253) as u8).collect();
    let mut slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = connect(&server);
            s.set_nodelay(true).unwrap();
            handshake(&mut s);
            s.write_all(&frame(2, &payload)[..8]).unwrap();
            s
        })
        .collect();
    let trickled = 60;
    for &byte in &payload[..trickled] {
        for s in slow.iter_mut() {
            s.write_all(&[byte]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Another connection still gets its echoes meanwhile.
    let mut healthy = connect(&server);
    handshake(&mut healthy);
    for round in 0..20u8 {
        let p = vec![round; 500];
        healthy.write_all(&frame(2, &p)).unwrap();
        assert_eq!(read_frame(&mut healthy).unwrap(), (2, p));
    }
    let grown_mib = rss_kib(server.pid()).saturating_sub(rss_before) / 1024;
    // And a trickled frame completes, byte-exact.
    slow[0].write_all(&payload[trickled..]).unwrap();
    let (kind, got) = read_frame(&mut slow[0]).unwrap();
    assert_eq!(kind, 2);
    assert!(got == payload, "the trickled frame came back different");
    drop((slow, healthy));
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(grown_mib < 64, "the server grew by {grown_mib} MiB: {out}");
    // Small chunks were copied out rather than each holding a pool buffer, and the pool never ran
    // dry: a few bytes per connection cannot take it.
    assert!(count_after(&out, "spanned receive buffers); ") >= 64 * 50, "too little was compacted: {out}");
    assert_eq!(count_after(&out, "recycled, "), 0, "the pool ran dry: {out}");
    assert_eq!(count_after(&out, "re-armed; "), 0, "receives went to heap buffers: {out}");
}

#[test]
fn limits_hold_on_every_core() {
    let server =
        Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "2", "--framed", "--handshake-timeout", "1s"]);
    // Connections are dealt to both cores; each core's watchdog closes its own.
    let mut silent: Vec<TcpStream> = (0..20).map(|_| connect(&server)).collect();
    for s in silent.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        assert_eq!(read_frame(s).unwrap().0, 1, "the server's HELLO comes first");
        let (kind, payload) = read_frame(s).unwrap();
        assert_eq!((kind, u16::from_be_bytes([payload[0], payload[1]])), (3, 10));
    }
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.contains("handshake_timeout 20,"), "{out}");
}

#[test]
fn a_zero_copy_send_to_a_peer_that_does_not_read_is_aborted_at_the_send_limit() {
    let server = Server::start(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--framed",
        "--max-frame",
        "8MiB",
        "--zc-threshold",
        "16KiB",
        "--send-timeout",
        "1s",
    ]);
    // Three peers send 4 MiB frames and never read. The echo of the first goes out with
    // SENDMSG_ZC, whose buffers the kernel keeps until the peer has the bytes: it fills the
    // socket long before the 8 copied sends after which a connection stops asking for zero-copy,
    // so the send that waits at the limit is a zero-copy one.
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let mut s = connect(&server);
            handshake(&mut s);
            s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            std::thread::spawn(move || {
                let f = frame(2, &vec![3u8; 4 << 20]);
                for _ in 0..16 {
                    if let Err(e) = s.write_all(&f) {
                        return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
                    }
                }
                false
            })
        })
        .collect();
    for w in writers {
        assert!(w.join().unwrap(), "the server never ended a connection whose peer does not read");
    }
    let (code, out, err) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("send_timeout 3"), "{out}");
    assert!(count_after(&out, "vectored, ") > 0, "no zero-copy send was made: {out}");
    assert_eq!(count_after(&out, "went without a copy; "), 0, "zero-copy was given up first: {out}");
    assert!(!err.contains("still holds"), "the kernel kept zero-copy buffers: {err}");
}

#[test]
fn silent_idle_and_unread_connections_are_closed_at_their_limits() {
    let server = Server::start(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--framed",
        "--handshake-timeout",
        "1s",
        "--idle-timeout",
        "2s",
        "--send-timeout",
        "1s",
        "--send-limit",
        "64KiB",
    ]);
    let started = std::time::Instant::now();
    // 50 connections that never send HELLO: each gets the server's HELLO, then CLOSE with code
    // 10 (handshake_timeout), then end of stream.
    let mut silent: Vec<TcpStream> = (0..50).map(|_| connect(&server)).collect();
    // One that completes the handshake and then says nothing: CLOSE with code 11 (idle_timeout).
    let mut idle = connect(&server);
    handshake(&mut idle);
    // One that sends and never reads: its replies fill the socket and the send queue, the send
    // waits, and the send limit closes it.
    let mut unread = connect(&server);
    handshake(&mut unread);
    unread.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = std::thread::spawn(move || {
        let f = frame(2, &[9u8; 16 * 1024]);
        let mut sent = 0u64;
        // Bounded: at most 64 MiB, or until the server closes the connection.
        while sent < 64 << 20 {
            if let Err(e) = unread.write_all(&f) {
                // A write that timed out is not the server closing the connection.
                let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
                return (sent, !timed_out);
            }
            sent += f.len() as u64;
        }
        (sent, false)
    });
    for s in silent.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        assert_eq!(read_frame(s).unwrap().0, 1, "the server's HELLO comes first");
        let (kind, payload) = read_frame(s).unwrap();
        assert_eq!((kind, u16::from_be_bytes([payload[0], payload[1]])), (3, 10));
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "closed before the handshake limit");
    let (kind, payload) = read_frame(&mut idle).unwrap();
    assert_eq!((kind, u16::from_be_bytes([payload[0], payload[1]])), (3, 11));
    assert!(started.elapsed() >= Duration::from_secs(2), "closed before the idle limit");
    let (sent, closed) = writer.join().unwrap();
    assert!(closed, "the server never closed a connection that does not read ({sent} bytes sent)");
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(
        out.contains("connections closed at a limit: handshake_timeout 50, idle_timeout 1, send_timeout 1"),
        "{out}"
    );
}

#[test]
fn load_reports_the_servers_close_reason_as_a_close_not_a_malformed_reply() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed", "--max-frame", "1KiB"]);
    let target = server.addr.to_string();
    // Frames of 2 KiB against a 1 KiB limit: the server answers each connection with CLOSE
    // too_large (code 4).
    let (v, out) = common::load_json(&[
        "--mode",
        "framed",
        "--target",
        &target,
        "--connections",
        "2",
        "--size",
        "2KiB",
        "--duration",
        "1s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(v["errors"]["closed"].as_u64(), Some(2), "{v}");
    assert_eq!(v["errors"]["malformed"].as_u64(), Some(0), "{v}");
    assert!(err.contains("CLOSE code 4"), "the reason is said: {err}");
    drop(server);
}

/// Many new connections each sending a HELLO at once, none reading: their first receives draw
/// 512-byte buffers of the small group, a burst the pool absorbs by re-arming (buffers come back
/// as each HELLO is handled) — no receive falls back to a 64 KiB heap buffer and the pool does not
/// grow to hold what is only waiting to be read.
#[test]
fn a_burst_of_new_connections_sending_hellos_needs_no_heap_buffers() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed"]);
    let mut conns = Vec::new();
    for _ in 0..3000 {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(&hello()).unwrap();
        conns.push(s);
    }
    // Every HELLO handled: the server's reply is there to read on the last connection.
    let last = conns.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut h = [0u8; 16];
    last.read_exact(&mut h).expect("the server's HELLO");
    std::thread::sleep(Duration::from_millis(500));
    drop(conns);
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert_eq!(parse_stop_line(&out).0, 3000, "{out}");
    assert_eq!(count_after(&out, "re-armed; "), 0, "receives went to heap buffers: {out}");
    assert!(out.contains("small (512 B buffers): 3000 leased"), "{out}");
    assert!(!out.contains("stream (65536 B buffers)"), "a HELLO moved a connection to the stream group: {out}");
}

/// A peer that has not said HELLO cannot make the server hold a large frame: a DATA header
/// announcing 1 MiB as the first bytes is answered with CLOSE `before_hello` from the header alone,
/// before any payload is sent, and so is a HELLO announcing more than 4 KiB.
#[test]
fn the_first_frame_is_judged_from_its_header() {
    let server = Server::start(&["echo", "--listen", "127.0.0.1:0", "--cores", "1", "--framed"]);
    for (header, code) in [([2u8, 0, 0, 0, 0, 0x10, 0, 0], 5u16), ([1u8, 0, 0, 0, 0, 0, 0x10, 1], 7u16)] {
        let mut s = connect(&server);
        s.write_all(&header).unwrap();
        let p = read_close(&mut s).expect("a CLOSE before any payload was sent");
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), code);
    }
    let (code, out, _) = server.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.contains("before_hello 1") && out.contains("bad_hello 1"), "{out}");
}
