//! The transport seam proved before TLS exists: a test transport that transforms bytes both ways,
//! frames them in records that may split anywhere, and writes its handshake while it reads (as
//! TLS does), driven over the ring by a server that starts in plaintext and upgrades the
//! connection in place after its INFO line (as NATS does), with the client's first transport
//! bytes arriving in the same packet as its upgrade request.

#![allow(unsafe_code)] // kill(2) in the shared child-process helpers

mod common;

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ringnode::net::{Transport, TransportError, Upgradable};
use ringnode::server::{Connection, Server, Service};

/// Records: `0xAA key` (the handshake: each side's key), then `len_hi len_lo data…` with each byte
/// XORed with the sender's key. The server answers the client's key with its own from inside
/// `on_wire`: it must write while reading.
struct Xor {
    server: bool,
    my_key: u8,
    peer_key: Option<u8>,
    sent_key: bool,
    inbuf: BytesMut,
    wire: Vec<Bytes>,
}

impl Xor {
    fn new(server: bool, my_key: u8) -> Xor {
        let mut x = Xor { server, my_key, peer_key: None, sent_key: false, inbuf: BytesMut::new(), wire: Vec::new() };
        if !server {
            // The client speaks first.
            x.wire.push(Bytes::from(vec![0xAA, my_key]));
            x.sent_key = true;
        }
        x
    }
}

impl Transport for Xor {
    fn on_wire(&mut self, data: Bytes, plain: &mut Vec<Bytes>) -> Result<(), TransportError> {
        self.inbuf.extend_from_slice(&data);
        loop {
            if self.peer_key.is_none() {
                if self.inbuf.len() < 2 {
                    return Ok(());
                }
                if self.inbuf[0] != 0xAA {
                    return Err(TransportError::Bad("no key record first".into()));
                }
                self.peer_key = Some(self.inbuf[1]);
                let _ = self.inbuf.split_to(2);
                if self.server && !self.sent_key {
                    // Written while reading.
                    self.wire.push(Bytes::from(vec![0xAA, self.my_key]));
                    self.sent_key = true;
                }
                continue;
            }
            if self.inbuf.len() < 2 {
                return Ok(());
            }
            let len = usize::from(u16::from_be_bytes([self.inbuf[0], self.inbuf[1]]));
            if self.inbuf.len() < 2 + len {
                return Ok(());
            }
            let _ = self.inbuf.split_to(2);
            let mut rec = self.inbuf.split_to(len);
            let k = self.peer_key.expect("keyed");
            rec.iter_mut().for_each(|b| *b ^= k);
            plain.push(rec.freeze());
        }
    }

    fn send(&mut self, parts: &[Bytes]) -> Result<(), TransportError> {
        if !self.ready() {
            return Err(TransportError::NotReady);
        }
        for p in parts {
            for chunk in p.chunks(1000) {
                let mut rec = BytesMut::with_capacity(2 + chunk.len());
                rec.put_u16(chunk.len() as u16);
                rec.extend(chunk.iter().map(|b| b ^ self.my_key));
                self.wire.push(rec.freeze());
            }
        }
        Ok(())
    }

    fn poll_wire(&mut self, out: &mut Vec<Bytes>) {
        out.append(&mut self.wire);
    }

    fn ready(&self) -> bool {
        self.sent_key && self.peer_key.is_some()
    }
}

/// Plaintext `INFO plain\n`; on the line `STARTTLS` the connection switches to [`Xor`] in place;
/// after that, every byte the protocol receives goes back through the transport.
struct UpgradeEcho;

#[derive(Default, Clone, Copy)]
struct NoStats;

impl std::ops::AddAssign for NoStats {
    fn add_assign(&mut self, _: NoStats) {}
}

async fn send_wire(conn: &Connection, t: &mut Upgradable) -> bool {
    let mut out = Vec::new();
    t.poll_wire(&mut out);
    if out.is_empty() {
        return true;
    }
    conn.stream().writev_all(out).await.0.is_ok()
}

impl Service for UpgradeEcho {
    type Stats = NoStats;

    async fn serve(self: Arc<Self>, conn: Connection) {
        let mut t = Upgradable::default();
        let mut line = Vec::new();
        let mut upgraded = false;
        t.send(&[Bytes::from_static(b"INFO plain\n")]).unwrap();
        let mut ok = send_wire(&conn, &mut t).await;
        let mut rx = conn.stream().recv_stream();
        while ok {
            let Some(Ok(chunk)) = rx.next().await else { break };
            let mut plain = Vec::new();
            if t.on_wire(chunk, &mut plain).is_err() {
                break;
            }
            for p in plain {
                if upgraded {
                    // Echo the protocol's bytes back through the transport.
                    if t.send(&[p]).is_err() {
                        ok = false;
                    }
                    continue;
                }
                line.extend_from_slice(&p);
                if let Some(nl) = line.iter().position(|&b| b == b'\n') {
                    assert_eq!(&line[..nl], b"STARTTLS");
                    // Whatever followed the line is already the new transport's.
                    let leftover = vec![Bytes::copy_from_slice(&line[nl + 1..])];
                    let mut plain2 = Vec::new();
                    if t.upgrade(Box::new(Xor::new(true, 0x5C)), leftover, &mut plain2).is_err() {
                        ok = false;
                    }
                    upgraded = true;
                    for q in plain2 {
                        let _ = t.send(&[q]);
                    }
                }
            }
            // Whatever the transport has to say — its handshake, in answer to a read — goes now.
            ok = ok && send_wire(&conn, &mut t).await;
        }
        drop(rx);
        conn.finish(!ok).await;
    }

    fn core_stats(&self) -> NoStats {
        NoStats
    }

    fn stats_json(_: &NoStats) -> serde_json::Value {
        serde_json::Value::Null
    }
}

#[test]
fn a_plaintext_connection_upgrades_in_place_to_a_transport_that_writes_while_reading() {
    let server = Server::start(common::loopback_server(1), UpgradeEcho).expect("io_uring available");
    let mut c = StdStream::connect(server.local_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut info = [0u8; 11];
    c.read_exact(&mut info).unwrap();
    assert_eq!(&info, b"INFO plain\n");
    // The upgrade request and the client's first transport bytes (its key) in one write.
    let mut client = Xor::new(false, 0x3A);
    let mut first = b"STARTTLS\n".to_vec();
    let mut wire = Vec::new();
    client.poll_wire(&mut wire);
    wire.iter().for_each(|w| first.extend_from_slice(w));
    c.write_all(&first).unwrap();
    // The server's key, written while it read ours.
    let mut key = [0u8; 2];
    c.read_exact(&mut key).unwrap();
    let mut plain = Vec::new();
    client.on_wire(Bytes::copy_from_slice(&key), &mut plain).unwrap();
    assert!(client.ready() && plain.is_empty());
    // 100 KiB through the transport, written in records of up to 1000 bytes and sent to the
    // socket in odd pieces, so records split anywhere on the server's side.
    let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
    client.send(&[Bytes::from(msg.clone())]).unwrap();
    let mut wire = Vec::new();
    client.poll_wire(&mut wire);
    let all: Vec<u8> = wire.iter().flat_map(|w| w.iter().copied()).collect();
    assert!(!all.windows(16).any(|w| msg.windows(16).take(64).any(|m| m == w)), "not transformed");
    let writer = {
        let mut c2 = c.try_clone().unwrap();
        std::thread::spawn(move || {
            for piece in all.chunks(777) {
                c2.write_all(piece).unwrap();
            }
        })
    };
    let mut back = Vec::new();
    let mut buf = [0u8; 4096];
    while back.len() < msg.len() {
        let n = c.read(&mut buf).expect("echo through the transport");
        assert!(n > 0, "closed after {} bytes", back.len());
        let mut plain = Vec::new();
        client.on_wire(Bytes::copy_from_slice(&buf[..n]), &mut plain).unwrap();
        plain.iter().for_each(|p| back.extend_from_slice(p));
    }
    writer.join().unwrap();
    assert!(back == msg, "the echo through the transport differs");
    drop(c);
    server.handle().shutdown();
    let (stats, _) = server.join().unwrap();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.errors, 0);
}
