//! TCP echo on monoio with its io_uring driver, following monoio's echo example: one task per
//! connection, owned-buffer read, write_all of the same buffer.
//! Usage: monoio-echo ADDR

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpListener;

#[monoio::main(driver = "io_uring", entries = 1024)]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7003".into());
    let listener = TcpListener::bind(&addr).unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        monoio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            loop {
                let (r, b) = stream.read(buf).await;
                buf = b;
                match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let (r, b) = stream.write_all(buf).await;
                buf = b;
                if r.is_err() {
                    return;
                }
                buf.clear();
            }
        });
    }
}
