//! TCP echo on tokio-uring, following its README's echo example: `tokio_uring::start`, one task per
//! connection, owned-buffer read, then write_all of the same buffer.
//! Usage: tokio-uring-echo ADDR

fn main() -> std::io::Result<()> {
    let addr: std::net::SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7002".into()).parse().unwrap();
    tokio_uring::start(async move {
        let listener = tokio_uring::net::TcpListener::bind(addr)?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio_uring::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let (r, b) = stream.read(buf).await;
                    let n = match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let (r, slice) = stream.write_all(tokio_uring::buf::BoundedBuf::slice(b, ..n)).await;
                    buf = slice.into_inner();
                    if r.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
