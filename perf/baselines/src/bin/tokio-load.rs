//! A closed-loop echo client on tokio (current-thread runtime, one task per connection), doing what
//! `ringnode load` does in echo mode: send a payload, read the echo back, compare it, repeat.
//! With PIPELINE > 1, it writes PIPELINE payloads with one write and reads the echoes back with
//! one `read_exact` (the shape of a hand-written pipelined client: it compares the whole batch and
//! times nothing per message).
//! Usage: tokio-load ADDR CONNECTIONS SIZE SECONDS [PIPELINE]
//! Prints one JSON line: messages, seconds.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args[1].clone();
    let conns: usize = args[2].parse().unwrap();
    let size: usize = args[3].parse().unwrap();
    let secs: f64 = args[4].parse().unwrap();
    let pipeline: usize = args.get(5).map_or(1, |p| p.parse().unwrap());
    let mut streams = Vec::new();
    for _ in 0..conns {
        let s = TcpStream::connect(&addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        streams.push(s);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let one: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            let payload: Vec<u8> = one.repeat(pipeline);
            let mut back = vec![0u8; size * pipeline];
            let mut n = 0u64;
            while Instant::now() < deadline {
                s.write_all(&payload).await.unwrap();
                s.read_exact(&mut back).await.unwrap();
                assert!(back == payload);
                n += pipeline as u64;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!("{{\"messages\": {total}, \"seconds\": {}}}", start.elapsed().as_secs_f64());
}
