//! The runtime's own guarantees, tested through the library.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use ringnode::ring::{ops, with_ring};
use ringnode::runtime::{self, RuntimeConfig};

fn one_core() -> RuntimeConfig {
    RuntimeConfig { cpus: vec![None], handle_signals: false, name: "test".into() }
}

#[test]
fn cancelled_recv_keeps_its_buffer_until_the_kernel_lets_go() {
    let results = runtime::run(one_core(), |_| async {
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd: ops::SharedFd = Rc::new(a.into());
        let before = with_ring(|r| r.stats().orphaned);
        // A receive that cannot complete, abandoned after 20 ms.
        let pending = ops::recv(fd.clone(), Vec::with_capacity(4096), false);
        let raced = runtime::timeout(Duration::from_millis(20), pending).await;
        assert!(raced.is_err(), "nothing was sent, so the receive must still be pending");
        // The operation is orphaned, not freed: its slot (with the buffer and the descriptor) is
        // still held for the kernel.
        assert_eq!(with_ring(|r| r.stats().orphaned), before + 1);
        assert!(Rc::strong_count(&fd) >= 2, "the orphaned op still holds the descriptor");
        // Churn the allocator with buffers of the same size, filled with a pattern.
        let churn: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 4096]).collect();
        // Wait for the cancellation's completion to come back.
        for _ in 0..200 {
            if Rc::strong_count(&fd) == 1 {
                break;
            }
            runtime::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(Rc::strong_count(&fd), 1, "the cancelled op gave back the descriptor");
        // Data sent now must go to a new receive, and nothing may have written into the churned
        // memory.
        b.write_all(b"after cancel").unwrap();
        let (c, (_, mut buf)) = ops::recv(fd.clone(), Vec::with_capacity(64), false).await;
        let n = c.into_result().unwrap() as usize;
        ops::received(&mut buf, n);
        assert_eq!(&buf[..], b"after cancel");
        for (i, v) in churn.iter().enumerate() {
            assert!(v.iter().all(|&x| x == i as u8), "freed memory was written into");
        }
        with_ring(|r| r.in_flight())
    })
    .unwrap();
    // Only the runtime's own eventfd watcher remains in flight.
    assert!(results[0] <= 1, "operations left in flight: {}", results[0]);
}

#[test]
fn timers_fire_in_order_and_not_early() {
    let out = runtime::run(one_core(), |_| async {
        let start = std::time::Instant::now();
        let (a, b) = runtime::join(
            async {
                runtime::sleep(Duration::from_millis(30)).await;
                start.elapsed()
            },
            async {
                runtime::sleep(Duration::from_millis(10)).await;
                start.elapsed()
            },
        )
        .await;
        (a, b)
    })
    .unwrap();
    let (a, b) = out[0];
    assert!(b >= Duration::from_millis(10) && a >= Duration::from_millis(30));
    assert!(b < a);
}

#[test]
fn mailbox_delivers_work_to_another_core_and_wakes_it() {
    let cfg = RuntimeConfig { cpus: vec![None, None], handle_signals: false, name: "mbox".into() };
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = counter.clone();
    let out = runtime::run(cfg, move |core| {
        let counter = c2.clone();
        async move {
            if core.index == 0 {
                for _ in 0..1000 {
                    let c = counter.clone();
                    let mut msg: runtime::Message = Box::new(move || {
                        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    });
                    // A full mailbox hands the message back: wait a moment and retry.
                    while let Err(m) = core.handle.send(1, msg) {
                        msg = m;
                        runtime::sleep(Duration::from_millis(1)).await;
                    }
                }
                while counter.load(std::sync::atomic::Ordering::SeqCst) < 1000 {
                    runtime::sleep(Duration::from_millis(1)).await;
                }
                core.handle.shutdown();
            } else {
                runtime::shutdown_requested().await;
            }
            core.index
        }
    })
    .unwrap();
    assert_eq!(out, vec![0, 1]);
    assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1000);
}
