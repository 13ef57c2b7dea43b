//! The ring's per-operation overhead: a NOP submitted and reaped one per `io_uring_enter`, and 64
//! per enter. Regressions in the submission/dispatch path show here first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnode::ring::{self, ops, with_ring, Ring};

fn complete_all(ops: &mut [ring::Op<()>]) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    while !pending.is_empty() {
        with_ring(|r| {
            r.enter(true).expect("enter");
            r.reap(&mut |_, _| {});
        });
        pending.retain(|&i| matches!(Pin::new(&mut ops[i]).poll(&mut cx), Poll::Pending));
    }
}

fn bench_nop(c: &mut Criterion) {
    ring::install(Ring::new().expect("io_uring available"));
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("nop_round_trip_1_per_enter", |b| {
        b.iter(|| {
            let mut op = [ops::nop()];
            complete_all(&mut op);
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("nop_round_trip_64_per_enter", |b| {
        b.iter(|| {
            let mut batch: Vec<_> = (0..64).map(|_| ops::nop()).collect();
            complete_all(&mut batch);
        })
    });
    g.finish();
    ring::uninstall();
}

/// 64 KiB writes to a loopback TCP socket (drained by a thread): from a registered buffer
/// (`WRITE_FIXED`) against a plain `SEND` of the same bytes.
fn bench_send_fixed(c: &mut Criterion) {
    use std::io::Read;
    use std::rc::Rc;

    ring::install(Ring::new().expect("io_uring available"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut reader, _) = listener.accept().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let fd: ops::SharedFd = Rc::new(writer.into());
    const LEN: usize = 64 * 1024;
    let fixed = Rc::new(ringnode::buf::FixedRegion::register(LEN, 7).expect("registered buffers"));
    let plain = bytes::Bytes::from(vec![7u8; LEN]);
    let mut g = c.benchmark_group("send_64k");
    g.throughput(Throughput::Bytes(LEN as u64));
    let mut cx = Context::from_waker(Waker::noop());
    // Drives one operation to completion; returns the bytes written (short writes happen when the
    // socket buffer is full, and the caller resumes).
    let mut finish = |mut op: Pin<&mut dyn Future<Output = ring::Completion>>| loop {
        with_ring(|r| {
            r.enter(true).expect("enter");
            r.reap(&mut |_, _| {});
        });
        if let Poll::Ready(c) = op.as_mut().poll(&mut cx) {
            assert!(c.result > 0, "write failed: {}", c.result);
            return c.result as usize;
        }
    };
    g.bench_function("plain_send", |b| {
        b.iter(|| {
            let mut off = 0;
            while off < LEN {
                let op = ops::send(fd.clone(), plain.clone(), off);
                let mut f = std::pin::pin!(async move { op.await.0 });
                off += finish(f.as_mut());
            }
        })
    });
    g.bench_function("write_fixed", |b| {
        b.iter(|| {
            let mut off = 0;
            while off < LEN {
                let op = ops::write_fixed(fd.clone(), fixed.clone(), off, LEN - off);
                let mut f = std::pin::pin!(async move { op.await.0 });
                off += finish(f.as_mut());
            }
        })
    });
    g.finish();
    drop(fixed);
    ring::uninstall();
}

criterion_group!(benches, bench_nop, bench_send_fixed);
criterion_main!(benches);
