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

criterion_group!(benches, bench_nop);
criterion_main!(benches);
