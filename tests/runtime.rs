//! The runtime's own guarantees, tested through the library.
#![allow(unsafe_code)] // one `unsafe impl IoBuf`, to watch when the kernel lets go of a buffer

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringnode::net::TcpStream;
use ringnode::ring::ops::{self, IoBuf};
use ringnode::runtime::{self, RuntimeConfig};

fn one_core() -> RuntimeConfig {
    RuntimeConfig { cpus: vec![None], handle_signals: false, name: "test".into() }
}

/// A send buffer that records when it is freed.
struct Tracked {
    bytes: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

// SAFETY: the bytes live in the Vec's heap allocation, which moving `Tracked` does not move, and
// nothing changes them while the value lives.
unsafe impl IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Fills `a`'s send buffer until a write would block, so the next send has to wait for the peer.
fn fill(a: &UnixStream) -> usize {
    a.set_nonblocking(true).unwrap();
    let chunk = [0u8; 4096];
    let mut n = 0;
    while let Ok(k) = (&*a).write(&chunk) {
        n += k;
    }
    a.set_nonblocking(false).unwrap();
    n
}

#[test]
fn a_dropped_send_keeps_its_buffer_until_the_kernel_lets_go() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let filled = fill(&a);
    let dropped = Arc::new(AtomicBool::new(false));
    let seen = dropped.clone();
    let reader = std::thread::spawn(move || {
        // Start reading only once the send has been orphaned (the flag is set from the core).
        while !seen.load(Ordering::SeqCst) && !READER_GO.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap();
        all
    });
    static READER_GO: AtomicBool = AtomicBool::new(false);
    let a = std::sync::Mutex::new(Some(a));
    let flag = dropped.clone();
    let out = runtime::run(one_core(), move |_| {
        let a = a.lock().unwrap().take().unwrap();
        let flag = flag.clone();
        async move {
            let fd: ops::SharedFd = Rc::new(a.into());
            let payload = Tracked { bytes: vec![0xAB; 64 * 1024], dropped: flag.clone() };
            let before = ringnode::ring::current_stats().unwrap().orphaned;
            // The socket is full: the send waits for the peer, who is not reading yet.
            let pending = ops::send(fd.clone(), payload, 0);
            let raced = runtime::timeout(Duration::from_millis(50), pending).await;
            assert!(raced.is_err(), "the send could not have completed: nobody reads");
            assert_eq!(ringnode::ring::current_stats().unwrap().orphaned, before + 1);
            // The kernel may still read the buffer: it must be alive.
            let still_alive = !flag.load(Ordering::SeqCst);
            // Let the peer read now; the kernel finishes or cancels the send, then lets go.
            READER_GO.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                runtime::sleep(Duration::from_millis(5)).await;
            }
            let freed_after = flag.load(Ordering::SeqCst);
            drop(fd);
            (still_alive, freed_after)
        }
    })
    .unwrap();
    let all = reader.join().unwrap();
    assert!(out[0].0, "the orphaned send's buffer was freed while the kernel could still read it");
    assert!(out[0].1, "the buffer was never given back after the kernel let go");
    // What arrived is the filler, then (if the send went out before the cancel) 0xAB bytes only:
    // never bytes of memory that had been freed and reused.
    assert!(all.len() >= filled);
    assert!(all[filled..].iter().all(|&x| x == 0xAB), "the kernel sent bytes that were not the payload");
}

#[test]
fn a_receive_dropped_while_data_arrives_loses_nothing_and_writes_nothing_freed() {
    let results = runtime::run(one_core(), |_| async {
        let (a, mut b) = UnixStream::pair().unwrap();
        let stream = TcpStream::from_fd(a.into());
        let mut got = Vec::new();
        for round in 0..50u8 {
            // A receive that is waiting, abandoned; the peer writes while it is orphaned (before
            // the cancel reached the kernel), then the allocator is churned with same-sized
            // buffers that would be written into if the orphaned buffer had been freed.
            let pending = stream.recv(Vec::with_capacity(4096));
            let raced = runtime::timeout(Duration::from_millis(2), pending).await;
            assert!(raced.is_err());
            b.write_all(&[round; 100]).unwrap();
            let churn: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 4096]).collect();
            runtime::sleep(Duration::from_millis(2)).await;
            for (i, v) in churn.iter().enumerate() {
                assert!(v.iter().all(|&x| x == i as u8), "freed memory was written into");
            }
            // Whatever the orphaned receive took went to its own (kept) buffer and is lost to
            // the reader, as a dropped receive's data is; the rest arrives here in order.
            let (r, buf) = runtime::timeout(Duration::from_millis(20), stream.recv(Vec::with_capacity(4096)))
                .await
                .unwrap_or((Ok(0), Vec::new()));
            if let Ok(n) = r {
                // Either the orphaned receive took this round's bytes (into its own kept buffer)
                // or they all arrive here, in one piece, unchanged.
                assert!(n == 0 || n == 100, "round {round}: {n} bytes");
                assert!(buf[..n].iter().all(|&x| x == round), "round {round}: bytes changed");
                got.push(n);
            }
        }
        drop(stream);
        (got.iter().filter(|&&n| n == 100).count(), ringnode::ring::current_in_flight().unwrap())
    })
    .unwrap();
    // The cancel usually wins the race (the receive never saw the data): most rounds' data arrives.
    assert!(results[0].0 > 0, "no round's data ever reached the next receive");
    // Only the runtime's own eventfd watcher remains in flight.
    assert!(results[0].1 <= 1, "operations left in flight: {}", results[0].1);
}

#[test]
fn operations_in_flight_when_a_core_stops_are_drained_and_their_buffers_freed() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (a, _b) = UnixStream::pair().unwrap();
    fill(&a);
    let a = std::sync::Mutex::new(Some(a));
    runtime::run(one_core(), move |_| {
        let a = a.lock().unwrap().take().unwrap();
        let flag = flag.clone();
        async move {
            let fd: ops::SharedFd = Rc::new(a.into());
            // A send that cannot finish, left running in a task when the core stops.
            runtime::spawn_detached(async move {
                let _ = ops::send(fd, Tracked { bytes: vec![1; 4096], dropped: flag }, 0).await;
            });
            runtime::sleep(Duration::from_millis(20)).await;
        }
    })
    .unwrap();
    // The core dropped the task (orphaning the send), the ring cancelled it and waited for the
    // kernel, and only then freed the buffer: it was freed, not leaked.
    assert!(dropped.load(Ordering::SeqCst), "the drained operation's buffer was never freed");
}

#[test]
fn timers_fire_in_order_and_never_early() {
    let out = runtime::run(one_core(), |_| async {
        let start = Instant::now();
        let order = std::cell::RefCell::new(Vec::new());
        let ((), ()) = runtime::join(
            async {
                runtime::sleep(Duration::from_millis(600)).await;
                order.borrow_mut().push(("long", start.elapsed()));
            },
            async {
                runtime::sleep(Duration::from_millis(100)).await;
                order.borrow_mut().push(("short", start.elapsed()));
            },
        )
        .await;
        let v = order.borrow().clone();
        v
    })
    .unwrap();
    let v = &out[0];
    assert_eq!(v[0].0, "short", "{v:?}");
    assert!(v[0].1 >= Duration::from_millis(100), "{v:?}");
    assert!(v[1].1 >= Duration::from_millis(600), "{v:?}");
}

/// Pending once (waking itself), then ready.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
fn many_timers_cost_no_ring_operations() {
    let out = runtime::run(one_core(), |_| async {
        let before = ringnode::ring::current_stats().unwrap().submitted;
        // 10,000 timeouts that never fire, armed and dropped as a request loop would: the inner
        // future is pending on the first poll, so each timer is polled, registered, then dropped.
        let mut armed = 0;
        for _ in 0..10_000 {
            let _ = runtime::timeout(Duration::from_secs(60), YieldOnce(false)).await;
            armed += 1;
        }
        assert_eq!(armed, 10_000);
        runtime::sleep(Duration::from_millis(10)).await;
        ringnode::ring::current_stats().unwrap().submitted - before
    })
    .unwrap();
    assert_eq!(out[0], 0, "timers submitted ring operations");
}

#[test]
fn typed_mailboxes_deliver_in_batches_to_another_core_and_wake_it() {
    let cfg = RuntimeConfig { cpus: vec![None, None], handle_signals: false, name: "mbox".into() };
    let boxes: runtime::Mailboxes<u64> = runtime::Mailboxes::new(2, 64);
    let out = runtime::run(cfg, move |core| {
        let boxes = boxes.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            if core.index == 0 {
                // 10,000 values through a mailbox of 64: a full mailbox hands the value back,
                // and the sender waits a moment.
                for v in 0..10_000u64 {
                    let mut v = v;
                    while let Err(back) = boxes.send(1, v) {
                        v = back;
                        assert!(Instant::now() < deadline, "the receiver stopped draining");
                        runtime::sleep(Duration::from_millis(1)).await;
                    }
                }
                (0, 0, 0)
            } else {
                let mut rx = boxes.receiver(1);
                let (mut batch, mut sum, mut batches, mut next) = (Vec::new(), 0u64, 0u64, 0u64);
                while next < 10_000 {
                    // Bounded: a lost wake-up fails the test instead of hanging it.
                    let r = runtime::timeout(Duration::from_secs(30), rx.recv_batch(&mut batch, 32)).await;
                    assert!(r.is_ok(), "no wake-up for values that were sent");
                    batches += 1;
                    for v in batch.drain(..) {
                        assert_eq!(v, next, "values out of order");
                        next += 1;
                        sum += v;
                    }
                }
                core.handle.shutdown();
                (1, sum, batches)
            }
        }
    })
    .unwrap();
    assert_eq!(out[1].0, 1);
    assert_eq!(out[1].1, (0..10_000u64).sum::<u64>(), "values were lost");
    // Batches of up to 32: at least 10,000 / 32 of them, and fewer than one per value would be
    // if every value had cost its own wake-up.
    assert!(out[1].2 >= 10_000 / 32, "{} batches", out[1].2);
}
