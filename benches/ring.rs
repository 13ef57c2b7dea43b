//! The ring's per-operation overhead: a NOP submitted and reaped one per `io_uring_enter`, and 64
//! per enter; and 64 KiB sends from a registered buffer against plain sends. Everything runs on a
//! runtime core (the only place operations exist); the time is measured inside it.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnode::ring::ops;
use ringnode::runtime::{self, RuntimeConfig};

fn one_core() -> RuntimeConfig {
    RuntimeConfig { cpus: vec![None], handle_signals: false, name: "bench".into() }
}

/// Runs `body(iters)` on a fresh one-core runtime and returns the time it measured.
fn on_core<F, Fut>(iters: u64, body: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Duration> + 'static,
{
    let body = std::sync::Arc::new(body);
    runtime::run(one_core(), move |_| body(iters)).expect("io_uring available")[0]
}

fn bench_nop(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("nop_round_trip_1_per_enter", |b| {
        b.iter_custom(|iters| {
            on_core(iters, |iters| async move {
                let t = Instant::now();
                for _ in 0..iters {
                    ops::nop().await;
                }
                t.elapsed()
            })
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("nop_round_trip_64_per_enter", |b| {
        b.iter_custom(|iters| {
            on_core(iters, |iters| async move {
                let t = Instant::now();
                for _ in 0..iters {
                    // All 64 are queued before the first await: one enter submits and reaps them.
                    let batch: Vec<_> = (0..64).map(|_| ops::nop()).collect();
                    for op in batch {
                        op.await;
                    }
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// 64 KiB writes to a loopback TCP socket (drained by a thread): from a registered buffer
/// (`WRITE_FIXED`) against a plain `SEND` of the same bytes.
fn bench_send_fixed(c: &mut Criterion) {
    const LEN: usize = 64 * 1024;
    let mut g = c.benchmark_group("send_64k");
    g.throughput(Throughput::Bytes(LEN as u64));
    for fixed in [false, true] {
        g.bench_function(if fixed { "write_fixed" } else { "plain_send" }, |b| {
            b.iter_custom(|iters| {
                on_core(iters, move |iters| async move {
                    use std::io::Read;
                    use std::rc::Rc;
                    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                    let (mut reader, _) = listener.accept().unwrap();
                    let drain = std::thread::spawn(move || {
                        let mut buf = vec![0u8; 1 << 20];
                        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                    });
                    let fd: ops::SharedFd = Rc::new(writer.into());
                    let region = Rc::new(ringnode::buf::FixedRegion::register(LEN, 7).expect("registered buffers"));
                    let plain = bytes::Bytes::from(vec![7u8; LEN]);
                    let t = Instant::now();
                    for _ in 0..iters {
                        let mut off = 0;
                        while off < LEN {
                            let c = if fixed {
                                ops::write_fixed(fd.clone(), region.clone(), off, LEN - off).await.0
                            } else {
                                ops::send(fd.clone(), plain.clone(), off).await.0
                            };
                            assert!(c.result() > 0, "write failed: {}", c.result());
                            off += c.result() as usize;
                        }
                    }
                    let elapsed = t.elapsed();
                    drop(fd);
                    drain.join().unwrap();
                    elapsed
                })
            })
        });
    }
    g.finish();
}

/// A value handed to another core and one handed back, through the typed mailboxes: the round trip
/// of a hand-off (what moving a connection to its owner core costs, besides ending and re-arming
/// its receive). Two unpinned cores.
fn bench_mailbox(c: &mut Criterion) {
    let mut g = c.benchmark_group("mailbox");
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip_between_two_cores", |b| {
        b.iter_custom(|iters| {
            let boxes: runtime::Mailboxes<u64> = runtime::Mailboxes::new(2, 64);
            let cfg = RuntimeConfig { cpus: vec![None, None], handle_signals: false, name: "bench".into() };
            let out = runtime::run(cfg, move |core| {
                let boxes = boxes.clone();
                async move {
                    let me = core.index;
                    let mut rx = boxes.receiver(me);
                    let mut batch = Vec::new();
                    let t = Instant::now();
                    if me == 0 {
                        for i in 0..iters {
                            let _ = boxes.send(1, i);
                            batch.clear();
                            rx.recv_batch(&mut batch, 1).await;
                        }
                        let _ = boxes.send(1, u64::MAX);
                    } else {
                        loop {
                            batch.clear();
                            rx.recv_batch(&mut batch, 1).await;
                            if batch[0] == u64::MAX {
                                break;
                            }
                            let _ = boxes.send(0, batch[0]);
                        }
                    }
                    t.elapsed()
                }
            })
            .expect("io_uring available");
            out[0]
        })
    });
    g.finish();
}

criterion_group!(benches, bench_nop, bench_send_fixed, bench_mailbox);
criterion_main!(benches);
