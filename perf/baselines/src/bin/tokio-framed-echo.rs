//! ringnode's framed echo (docs/PROTOCOL.md) on tokio + tokio-util, the way tokio-util's docs
//! frame a length-prefixed protocol: `FramedRead` with a `LengthDelimitedCodec` configured for the
//! 8-byte header (length at offset 4, u32, header kept in the frame, so the length is adjusted by 8), a `FramedWrite` sink that is
//! fed every decoded frame and flushed when no more input is buffered. The server sends its HELLO
//! first, ignores the client's HELLO and echoes DATA frames as they are (same header).
//! Usage: tokio-framed-echo ADDR

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::{BytesCodec, FramedRead, FramedWrite, LengthDelimitedCodec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7004".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let codec = LengthDelimitedCodec::builder()
                .length_field_offset(4)
                .length_field_type::<u32>()
                .length_adjustment(8) // the frame handed out includes the 8-byte header
                .num_skip(0)
                .max_frame_length(64 << 20)
                .new_codec();
            let mut reader = FramedRead::new(r, codec);
            let mut writer = FramedWrite::new(w, BytesCodec::new());
            let hello = Bytes::from_static(b"\x01\x00\x00\x00\x00\x00\x00\x08RNOD\x00\x01\x00\x00");
            if writer.send(hello).await.is_err() {
                return;
            }
            while let Some(frame) = reader.next().await {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("tokio-framed-echo: {e}");
                        return;
                    }
                };
                if frame[0] != 2 {
                    continue;
                }
                if writer.feed(frame.freeze()).await.is_err() {
                    return;
                }
                if reader.read_buffer().is_empty() && SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
                    return;
                }
            }
        });
    }
}
