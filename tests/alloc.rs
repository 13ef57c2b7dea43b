//! Allocation counts on the framed path, with a counting global allocator: decoding frames that lie
//! in one receive buffer allocates nothing per frame, encoding headers allocates only when the
//! header buffer grows, and receiving allocates at most one owner per completion.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ringnode::frame::{encode_to_vec, hello_payload, Frame, FrameDecoder, FrameEncoder, Kind};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

// One test function, so no other test thread allocates while it counts.
#[test]
fn framed_path_allocations() {
    decoding_and_encoding_allocate_nothing_per_frame();
    receiving_allocates_at_most_one_owner_per_completion();
}

fn decoding_and_encoding_allocate_nothing_per_frame() {
    // Decoding 1,000 frames out of one receive buffer.
    let mut frames = vec![Frame { kind: Kind::Hello, flags: 0, payload: hello_payload() }];
    frames.extend((0..1000).map(|i| Frame::data(Bytes::from(vec![i as u8; 64]))));
    let wire = Bytes::from(encode_to_vec(&frames));
    let mut dec = FrameDecoder::default();
    dec.push(Bytes::from_static(b"")); // nothing: the decoder's queue is created lazily below
    dec.push(wire.slice(..1)); // warm the chunk queue
    let _ = dec.next_frame();
    dec.push(wire.slice(1..));
    let before = allocs();
    let mut n = 0;
    while let Some(f) = dec.next_frame() {
        f.unwrap();
        n += 1;
    }
    let decode_allocs = allocs() - before;
    assert_eq!(n, 1001);
    // The HELLO straddles the two pushed chunks and is copied (one allocation); every DATA frame
    // is a slice of the buffer.
    assert!(decode_allocs <= 1, "decoding allocated {decode_allocs} times for {n} frames");

    // Encoding 1,000 headers: the header buffer grows a handful of times, never per frame.
    let mut enc = FrameEncoder::with_capacity(64);
    let payload = Bytes::from_static(&[7u8; 64]);
    let before = allocs();
    let mut held = Vec::with_capacity(2000);
    for _ in 0..1000 {
        let [h, p] = enc.encode(&Frame::data(payload.clone()));
        held.push(h);
        held.push(p);
        if held.len() >= 128 {
            // Sent: the batch's headers are dropped and their space is reused.
            held.clear();
        }
    }
    let encode_allocs = allocs() - before;
    assert!(encode_allocs <= 20, "encoding 1000 headers allocated {encode_allocs} times");
}

// The receive side: at most one allocation (the `Bytes` owner) per receive completion.
fn receiving_allocates_at_most_one_owner_per_completion() {
    use std::io::Write;
    use std::time::Duration;

    use ringnode::net::TcpStream;
    use ringnode::runtime::{self, RuntimeConfig};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut writer = std::net::TcpStream::connect(addr).unwrap();
    writer.set_nodelay(true).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    // The writer sends 200 messages of 1,000 bytes, paced so that most arrive on their own.
    let writer_thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..200u32 {
            writer.write_all(&[i as u8; 1000]).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
        writer
    });
    let cfg = RuntimeConfig { cpus: vec![None], handle_signals: false, name: "alloc".into() };
    let fd = std::sync::Mutex::new(Some(std::os::fd::OwnedFd::from(accepted)));
    let out = runtime::run(cfg, move |_| {
        let fd = fd.lock().unwrap().take().unwrap();
        async move {
            let stream = TcpStream::from_fd(fd);
            let mut rx = stream.recv_stream();
            // Warm up: the pool, the operation slot and the completion queue exist after this.
            let first = rx.next().await.unwrap().unwrap();
            drop(first);
            let before = allocs();
            let mut chunks = 0u64;
            let mut bytes = 1000usize;
            while bytes < 200 * 1000 {
                let c = rx.next().await.unwrap().unwrap();
                bytes += c.len();
                chunks += 1;
            }
            (allocs() - before, chunks)
        }
    });
    let _writer = writer_thread.join().unwrap();
    let (allocated, chunks) = out.unwrap()[0];
    assert!(allocated <= chunks + 8, "{allocated} allocations for {chunks} receive completions");
}
