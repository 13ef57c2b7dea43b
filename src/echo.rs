//! The echo server the tools run: TCP (bytes back as they come) or UDP (each datagram back to its
//! sender), on every core of a runtime, with counters reported when it stops.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;
use socket2::SockRef;

use crate::net::{serve_tcp, NetError, TcpListener, TcpStream, UdpSocket};
use crate::ring::ops::SharedFd;
use crate::runtime::{self, Running, RuntimeConfig, RuntimeError};

/// Receive buffer per connection (TCP) or per core (UDP).
const ECHO_BUF: usize = 64 * 1024;
/// How long a stopping server waits for its connections to wind down.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What an echo server counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EchoStats {
    /// Connections accepted (TCP).
    pub connections: u64,
    /// Receive completions with data (TCP) or datagrams (UDP).
    pub messages_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Sends completed (TCP: one per receive echoed) or datagrams sent (UDP).
    pub messages_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Connections that ended with an error (reset, broken pipe) rather than a clean close.
    pub errors: u64,
}

impl EchoStats {
    /// Adds another core's counts.
    pub fn add(&mut self, o: &EchoStats) {
        self.connections += o.connections;
        self.messages_in += o.messages_in;
        self.bytes_in += o.bytes_in;
        self.messages_out += o.messages_out;
        self.bytes_out += o.bytes_out;
        self.errors += o.errors;
    }
}

#[derive(Default)]
struct CoreState {
    stats: Cell<EchoStats>,
    open: RefCell<Slab<SharedFd>>,
}

thread_local! {
    static STATE: Rc<CoreState> = Rc::new(CoreState::default());
}

fn bump(f: impl FnOnce(&mut EchoStats)) {
    STATE.with(|s| {
        let mut st = s.stats.get();
        f(&mut st);
        s.stats.set(st);
    });
}

/// An echo server's settings.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// UDP instead of TCP.
    pub udp: bool,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

/// A running echo server.
pub struct EchoServer {
    local: SocketAddr,
    running: Running<EchoStats>,
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl EchoServer {
    /// Binds (on the calling thread, so a port in use is reported before any core starts) and
    /// starts the cores.
    pub fn start(config: EchoConfig) -> Result<EchoServer, ServeError> {
        let (fd, local) = if config.udp {
            UdpSocket::bind_fd(config.listen)?
        } else {
            let l = TcpListener::bind(config.listen)?;
            let local = l.local_addr();
            (l.into_fd(), local)
        };
        let udp = config.udp;
        // Core 0 accepts (TCP); for UDP every core receives on its own duplicate of the socket.
        let listener = Arc::new(Mutex::new(Some(fd)));
        let running = runtime::start(config.runtime, move |core| {
            let fd = if udp {
                listener
                    .lock()
                    .ok()
                    .and_then(|l| l.as_ref().and_then(|f| f.try_clone().ok()))
            } else if core.index == 0 {
                listener.lock().ok().and_then(|mut l| l.take())
            } else {
                None
            };
            core_main(core, fd, udp)
        })?;
        Ok(EchoServer { local, running })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The runtime handle (to stop it).
    pub fn handle(&self) -> &runtime::Handle {
        self.running.handle()
    }

    /// Waits for the server to stop and returns the counts summed over cores.
    pub fn join(self) -> Result<EchoStats, RuntimeError> {
        let mut total = EchoStats::default();
        for s in self.running.join()? {
            total.add(&s);
        }
        Ok(total)
    }
}

async fn core_main(core: runtime::CoreInfo, fd: Option<OwnedFd>, udp: bool) -> EchoStats {
    match (fd, udp) {
        (Some(fd), true) => {
            let sock = UdpSocket::from_fd(fd);
            let _ = runtime::select(echo_udp(&sock), runtime::shutdown_requested()).await;
        }
        (Some(fd), false) => {
            let on_conn = Arc::new(|stream: TcpStream| {
                runtime::spawn(echo_tcp(stream));
            });
            if let Err(e) = serve_tcp(fd, core.handle.clone(), on_conn).await {
                eprintln!("ringnode: accept failed: {e}");
                core.handle.shutdown();
            }
        }
        (None, _) => runtime::shutdown_requested().await,
    }
    // Stop: end every open connection's pending receive, then give them a moment to finish.
    STATE.with(|s| {
        for (_, fd) in s.open.borrow().iter() {
            let _ = SockRef::from(&**fd).shutdown(std::net::Shutdown::Both);
        }
    });
    let deadline = Instant::now() + STOP_GRACE;
    while STATE.with(|s| !s.open.borrow().is_empty()) && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
    STATE.with(|s| s.stats.get())
}

/// Echoes one connection until end of stream or error.
async fn echo_tcp(stream: TcpStream) {
    let slot = STATE.with(|s| s.open.borrow_mut().insert(stream.shared_fd()));
    bump(|s| s.connections += 1);
    let mut buf = Vec::with_capacity(ECHO_BUF);
    let mut failed = false;
    loop {
        buf.clear();
        let (r, b) = stream.recv(buf).await;
        buf = b;
        let n = match r {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => {
                failed = true;
                break;
            }
        };
        bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n as u64;
        });
        let (r, b) = stream.send_all(buf).await;
        buf = b;
        if r.is_err() {
            failed = true;
            break;
        }
        bump(|s| {
            s.messages_out += 1;
            s.bytes_out += n as u64;
        });
    }
    if failed {
        bump(|s| s.errors += 1);
    }
    STATE.with(|s| s.open.borrow_mut().remove(slot));
    let _ = stream.close().await;
}

/// Echoes datagrams back to their senders, forever.
async fn echo_udp(sock: &UdpSocket) {
    let mut buf = Vec::with_capacity(ECHO_BUF);
    loop {
        buf.clear();
        let (r, b) = sock.recv_from(buf).await;
        buf = b;
        let (n, peer) = match r {
            Ok((n, Some(peer))) => (n, peer),
            // A datagram without a usable sender, or an ICMP error surfacing on the socket.
            Ok((_, None)) => continue,
            Err(e)
                if e.raw_os_error() == Some(libc::ECONNREFUSED)
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                bump(|s| s.errors += 1);
                continue;
            }
            Err(e) => {
                eprintln!("ringnode: udp receive failed: {e}");
                return;
            }
        };
        bump(|s| {
            s.messages_in += 1;
            s.bytes_in += n as u64;
        });
        let (r, b) = sock.send_to(buf, peer).await;
        buf = b;
        match r {
            Ok(n) => bump(|s| {
                s.messages_out += 1;
                s.bytes_out += n as u64;
            }),
            Err(_) => bump(|s| s.errors += 1),
        }
    }
}
