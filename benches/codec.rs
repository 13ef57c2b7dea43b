//! The framed path's user-space costs: decoding (frames/s and bytes/s for 64 B and 16 KiB
//! payloads), encoding headers for a vectored send, and leasing a pool buffer as `Bytes` and
//! handing it back.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringnode::frame::{encode_to_vec, hello_payload, Frame, FrameDecoder, FrameEncoder, Kind};

fn stream_of(size: usize, frames: usize) -> Bytes {
    let mut all = vec![Frame { kind: Kind::Hello, flags: 0, payload: hello_payload() }];
    all.extend((0..frames).map(|i| Frame::data(Bytes::from(vec![i as u8; size]))));
    Bytes::from(encode_to_vec(&all))
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (size, frames) in [(64usize, 4096usize), (16 * 1024, 256)] {
        let wire = stream_of(size, frames);
        // Receive-buffer-sized pieces, as the pool hands them out.
        let pieces: Vec<Bytes> =
            (0..wire.len()).step_by(16 * 1024).map(|o| wire.slice(o..(o + 16 * 1024).min(wire.len()))).collect();
        g.throughput(Throughput::Elements(frames as u64));
        g.bench_with_input(BenchmarkId::new("frames", size), &pieces, |b, pieces| {
            let mut parts = Vec::with_capacity(8);
            b.iter(|| {
                let mut d = FrameDecoder::new(1 << 20);
                let mut n = 0;
                for p in pieces {
                    d.push(p.clone());
                    loop {
                        parts.clear();
                        match d.next_frame_parts(&mut parts) {
                            Some(r) => {
                                r.unwrap();
                                n += 1;
                            }
                            None => break,
                        }
                    }
                }
                assert_eq!(n, frames + 1);
            })
        });
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::new("bytes", size), &pieces, |b, pieces| {
            let mut parts = Vec::with_capacity(8);
            b.iter(|| {
                let mut d = FrameDecoder::new(1 << 20);
                for p in pieces {
                    d.push(p.clone());
                    loop {
                        parts.clear();
                        if d.next_frame_parts(&mut parts).is_none() {
                            break;
                        }
                    }
                }
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(64));
    let payload = Bytes::from_static(&[1u8; 64]);
    g.bench_function("vectored_batch_of_64", |b| {
        let mut enc = FrameEncoder::with_capacity(64);
        let mut batch: Vec<Bytes> = Vec::with_capacity(128);
        b.iter(|| {
            batch.clear();
            for _ in 0..64 {
                batch.extend(enc.encode(&Frame::data(payload.clone())));
            }
            std::hint::black_box(&batch);
        })
    });
    g.finish();
}

/// A 64-byte message through the receive pool as the server sees it: written to a loopback
/// socket, received by the multishot receive into a small-group buffer, leased as `Bytes`, dropped, and
/// the buffer republished. Runs on a runtime core (the pool is the core's); time measured inside.
fn pool(c: &mut Criterion) {
    use ringnode::runtime::{self, RuntimeConfig};
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("recv_64b_lease_drop_recycle", |b| {
        b.iter_custom(|iters| {
            let cfg = RuntimeConfig { cpus: vec![None], handle_signals: false, name: "bench".into() };
            runtime::run(cfg, move |_| async move {
                use std::io::Write;
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (accepted, _) = listener.accept().unwrap();
                let stream = ringnode::net::TcpStream::from_fd(accepted.into());
                let mut rx = stream.recv_stream();
                let msg = [5u8; 64];
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    writer.write_all(&msg).unwrap();
                    let mut got = 0;
                    while got < msg.len() {
                        let chunk = rx.next().await.expect("open").expect("no error");
                        got += chunk.len();
                        drop(std::hint::black_box(chunk));
                    }
                }
                let elapsed = t.elapsed();
                // 64-byte messages stay in the small group (a receive never fills 512 bytes).
                let stats =
                    ringnode::runtime::core::pool_stats(ringnode::buf::Group::Small).expect("the core has a pool");
                assert!(stats.recycled + 1 >= stats.leases, "buffers were not recycled: {stats:?}");
                elapsed
            })
            .expect("io_uring available")[0]
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode, pool);
criterion_main!(benches);
