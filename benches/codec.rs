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

fn pool(c: &mut Criterion) {
    use ringnode::ring::{self, Completion, Ring};
    ring::install(Ring::new().expect("io_uring available"));
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lease_drop_recycle", |b| {
        let mut bid = 0u32;
        b.iter(|| {
            // A completion as the kernel posts it: buffer `bid` holds 64 bytes.
            let c = Completion { result: 64, flags: 1 | (bid << 16) };
            bid = (bid + 1) % 1024;
            ringnode::buf::with_pool(|p| {
                let bytes = p.take(&c).expect("a buffer");
                drop(std::hint::black_box(bytes));
                p.recycle();
            })
            .unwrap();
        })
    });
    g.finish();
    ringnode::buf::release_pool();
    ring::uninstall();
}

criterion_group!(benches, decode, encode, pool);
criterion_main!(benches);
