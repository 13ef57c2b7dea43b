//! The receive buffer pool: buffers come back when their last `Bytes` drops, also on another
//! thread, and a pool that runs dry costs a re-armed receive, never the connection.

use std::io::Write;
use std::time::Duration;

use ringnode::buf::{Group, PoolConfig};
use ringnode::net::TcpStream;
use ringnode::runtime::{self, Core, RuntimeConfig};

fn pair() -> (std::net::TcpStream, std::os::fd::OwnedFd) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    (writer, accepted.into())
}

/// `total` patterned bytes written into a fresh connection by a thread; returns the writer's
/// handle, the receiving descriptor (to move into a core) and the bytes expected.
type Writer = std::thread::JoinHandle<std::io::Result<std::net::TcpStream>>;
fn written(total: usize, mul: usize) -> (Writer, std::sync::Mutex<Option<std::os::fd::OwnedFd>>, Vec<u8>) {
    let (mut writer, fd) = pair();
    let data: Vec<u8> = (0..total).map(|i| (i * mul % 251) as u8).collect();
    let expect = data.clone();
    let t = std::thread::spawn(move || writer.write_all(&data).map(|_| writer));
    (t, std::sync::Mutex::new(Some(fd)), expect)
}

fn one_core() -> RuntimeConfig {
    RuntimeConfig { cpus: vec![None], handle_signals: false, name: "pool".into() }
}

/// Receives `total` patterned bytes on one core with the stream group laid out as `cfg`, keeping
/// the chunks and calling `hold` with those kept after each; then drops them, lets the core
/// republish them, and returns whether the bytes came through intact and the stream group's
/// counters.
fn receive_holding(
    total: usize,
    mul: usize,
    cfg: PoolConfig,
    hold: fn(&mut Vec<bytes::Bytes>),
) -> (bool, ringnode::buf::PoolStats) {
    let (t, fd, expect) = written(total, mul);
    let out = runtime::run(one_core(), move |_| {
        let fd = fd.lock().unwrap().take().unwrap();
        let expect = expect.clone();
        async move {
            configure(cfg);
            let stream = TcpStream::from_fd(fd);
            let mut rx = stream.recv_stream();
            let mut got = Vec::new();
            let mut held = Vec::new();
            while got.len() < expect.len() {
                let chunk = rx.next().await.expect("stream open").expect("no error");
                got.extend_from_slice(&chunk);
                held.push(chunk);
                hold(&mut held);
            }
            // Let the tasks holding the last leases drop them, and the core republish them.
            drop(held);
            runtime::sleep(Duration::from_millis(50)).await;
            (got == expect, stats())
        }
    })
    .unwrap();
    t.join().unwrap().unwrap();
    out[0]
}

#[test]
fn an_exhausted_pool_rearms_the_receive_and_loses_nothing() {
    // Four 4 KiB buffers: holding them all empties the ring.
    let (same, st) = receive_holding(256 * 1024, 7, PoolConfig { buf_size: 4096, count: 4, max_count: 4 }, |held| {
        if held.len() == 4 {
            // Give them back a little later, from a task: meanwhile the receive finds the ring
            // empty.
            let batch = std::mem::take(held);
            runtime::spawn(async move {
                runtime::sleep(Duration::from_millis(5)).await;
                drop(batch);
            });
        }
    });
    assert!(same, "data differs after running the pool dry");
    assert!(st.enobufs > 0, "the pool never ran dry");
    assert!(st.recycled > 0);
}

fn configure(cfg: PoolConfig) {
    Core::with(|c| c.configure_pool(Group::Stream, cfg));
}

fn stats() -> ringnode::buf::PoolStats {
    ringnode::runtime::core::pool_stats(Group::Stream).expect("the stream group is registered")
}

/// A receive that finds every buffer leased out — not merely waiting to be recycled — doubles the
/// pool (up to its ceiling) instead of falling back to heap buffers, and loses no data.
#[test]
fn a_pool_whose_buffers_are_all_held_grows_instead_of_falling_back_to_the_heap() {
    // Four 4 KiB buffers, growing to 64: holding every chunk forces growth.
    let cfg = PoolConfig { buf_size: 4096, count: 4, max_count: 64 };
    let (same, st) = receive_holding(256 * 1024, 11, cfg, |held| {
        if held.len() == 48 {
            held.clear();
        }
    });
    assert!(same, "data differs after the pool grew");
    assert!(st.grown >= 2, "the pool did not grow: {st:?}");
    assert!(st.buffers > 4 && st.buffers <= 64, "{st:?}");
    assert_eq!(st.heap_fallbacks, 0, "it fell back to the heap below its ceiling: {st:?}");
}

#[test]
fn a_buffer_dropped_on_another_thread_returns_to_its_core() {
    let (mut writer, fd) = pair();
    let fd = std::sync::Mutex::new(Some(fd));
    let t = std::thread::spawn(move || {
        writer.write_all(b"hello from afar").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        writer
    });
    let out = runtime::run(one_core(), move |_| {
        let fd = fd.lock().unwrap().take().unwrap();
        async move {
            let stream = TcpStream::from_fd(fd);
            let mut rx = stream.recv_stream();
            let chunk = rx.next().await.unwrap().unwrap();
            assert_eq!(&chunk[..], b"hello from afar");
            // The Bytes crosses to another thread and dies there.
            std::thread::spawn(move || drop(chunk)).join().unwrap();
            let foreign = Core::with(|c| c.with_pool(Group::Small, |p| p.foreign_returns())).unwrap();
            let recycled = Core::with(|c| c.with_pool(Group::Small, |p| p.recycle())).unwrap();
            (foreign, recycled)
        }
    })
    .unwrap();
    let _ = t.join();
    assert_eq!(out[0], (1, 1));
}

#[test]
fn a_reader_that_falls_behind_stops_its_receive_and_loses_nothing() {
    let (t, fd, expect) = written(16 << 20, 13);
    let out = runtime::run(one_core(), move |_| {
        let fd = fd.lock().unwrap().take().unwrap();
        let expect = expect.clone();
        async move {
            let stream = TcpStream::from_fd(fd);
            let mut rx = stream.recv_stream();
            let mut got = Vec::new();
            // A connection starts on the small group and moves to the stream group when a
            // receive fills a small buffer: read until a chunk comes from the stream group.
            loop {
                let chunk = rx.next().await.expect("open").expect("no error");
                got.extend_from_slice(&chunk);
                if chunk.len() > 512 {
                    break;
                }
            }
            // Busy elsewhere for a while: the multishot receive must stop after a few unread
            // completions rather than take buffer after buffer.
            runtime::sleep(Duration::from_millis(300)).await;
            let leased_while_away = stats().leases;
            while got.len() < expect.len() {
                let chunk = rx.next().await.expect("stream open").expect("no error");
                got.extend_from_slice(&chunk);
            }
            let capped = ringnode::ring::current_stats().unwrap().capped;
            (got == expect, capped, leased_while_away)
        }
    })
    .unwrap();
    t.join().unwrap().unwrap();
    let (same, capped, leased) = out[0];
    assert!(same, "data differs after the receive was stopped and re-armed");
    assert!(capped > 0, "the receive was never stopped for a reader that fell behind");
    // Without the cap the receive would take all 16 MiB (256 buffers of 64 KiB); with it, the
    // cap (16) and what the enter that reached it brought.
    assert!(leased < 100, "{leased} buffers were leased while the reader was away");
}

/// Ending a receive whose first (single-shot) receive is still waiting — the peer has sent nothing
/// — returns at once with nothing, and what the peer sends afterwards stays in the socket.
#[test]
fn finishing_a_receive_that_waits_returns_at_once_and_takes_nothing() {
    let (mut writer, fd) = pair();
    let fd = std::sync::Mutex::new(Some(fd));
    let out = runtime::run(one_core(), move |_| {
        let fd = fd.lock().unwrap().take().unwrap();
        async move {
            let stream = TcpStream::from_fd(fd);
            let mut rx = stream.recv_stream();
            // Polled once (the first receive is armed), then given up on.
            let waited = runtime::timeout(Duration::from_millis(20), rx.next()).await;
            assert!(waited.is_err(), "nothing was sent");
            let t = std::time::Instant::now();
            let taken = rx.finish().await.expect("no error");
            drop(stream);
            (taken.len(), t.elapsed() < Duration::from_secs(5))
        }
    })
    .unwrap();
    let (taken, quick) = out[0];
    assert_eq!(taken, 0);
    assert!(quick, "finish waited for the peer");
    let _ = writer.write_all(b"late");
}
