//! What every TCP server of the crate needs, once: one acceptor, placement of connections on the
//! cores (round-robin, or a move to the core that owns them once their key is known), a registry
//! of live connections per core with the connection limits enforced by one watchdog per core, a
//! graceful stop with a deadline, counters merged across cores, and a small HTTP admin endpoint on
//! the ring that services add routes to.
//!
//! A service implements [`Service`]: it is handed each [`Connection`] on the core that owns it
//! and serves it as a task there. The echo server is the smallest such service; the node, the
//! relay and the throughput server are others.

mod acceptor;
pub mod admin;
mod registry;

pub use acceptor::{accept_loop, AcceptError};
pub use registry::Entry;

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::net::{Limits, NetError, TcpListener, TcpStream};
use crate::runtime::{self, CoreInfo, Mailboxes, Placement, Running, RuntimeConfig, RuntimeError};
use registry::{Registry, Slot};

/// What the server layer counts on each core (summed over cores with `+=`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted (on the accepting core).
    pub accepted: u64,
    /// Connections that started being served on a core (after placement; a moved connection
    /// counts on each core it was served on).
    pub served: u64,
    /// Connections moved to another core after they were placed.
    pub moved: u64,
    /// Connections placed on the accepting core because the target core's mailbox was full.
    pub placed_here_when_full: u64,
    /// Connections that ended with an error rather than a clean close.
    pub errors: u64,
    /// Connections closed because they passed a limit: handshake, idle, send (in that order).
    pub expired: [u64; 3],
}

impl std::ops::AddAssign for ServerStats {
    fn add_assign(&mut self, o: ServerStats) {
        self.accepted += o.accepted;
        self.served += o.served;
        self.moved += o.moved;
        self.placed_here_when_full += o.placed_here_when_full;
        self.errors += o.errors;
        for (a, b) in self.expired.iter_mut().zip(o.expired) {
            *a += b;
        }
    }
}

impl ServerStats {
    /// As JSON, for the admin endpoint and `--json` reports.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": self.accepted,
            "served": self.served,
            "moved": self.moved,
            "placed_here_when_full": self.placed_here_when_full,
            "errors": self.errors,
            "expired": {
                "handshake_timeout": self.expired[0],
                "idle_timeout": self.expired[1],
                "send_timeout": self.expired[2],
            },
        })
    }
}

/// A service served by [`Server`]: shared by every core (`Send + Sync`), serving each connection
/// as a task on the core that owns it.
pub trait Service: Send + Sync + 'static {
    /// What the service counts on one core; summed over cores (`+=`) at stop and for `/stats`.
    type Stats: Default + Copy + Send + std::ops::AddAssign + 'static;

    /// Serves `conn` until it ends; call [`Connection::finish`] (or move it) at the end.
    fn serve(self: Arc<Self>, conn: Connection) -> impl Future<Output = ()> + 'static;

    /// Runs once on each core before it serves connections (per-core tasks: a UDP socket, say).
    fn on_core(self: &Arc<Self>, _core: &CoreInfo) {}

    /// This core's counters.
    fn core_stats(&self) -> Self::Stats;

    /// Counters as JSON (for `/stats`).
    fn stats_json(stats: &Self::Stats) -> serde_json::Value;

    /// Routes the service adds to the admin endpoint.
    fn routes(&self) -> Vec<admin::Route> {
        Vec::new()
    }
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (`None`: no TCP listener, for services that only use `on_core`).
    pub listen: Option<SocketAddr>,
    /// Limits on every connection.
    pub limits: Limits,
    /// How long a stopping server lets its connections wind down before aborting them.
    pub stop_grace: Duration,
    /// Where the admin endpoint listens, if anywhere.
    pub admin: Option<SocketAddr>,
    /// The runtime layout.
    pub runtime: RuntimeConfig,
}

/// A connection being moved to another core: its descriptor and what was already read from it.
struct Handoff {
    fd: OwnedFd,
    buffered: Vec<Bytes>,
    seq: u64,
}

/// What a core needs to place and serve connections.
struct Shared<S: Service> {
    service: Arc<S>,
    limits: Limits,
    handoffs: Mailboxes<Handoff>,
    control: Mailboxes<admin::Query>,
    replies: Mailboxes<admin::Reply<S::Stats>>,
}

/// A connection placed on this core, registered (its limits apply) and counted.
pub struct Connection {
    /// First, so that it drops first: the registry forgets the descriptor before it closes.
    slot: Slot,
    /// The socket: private, so that it is closed or moved only through [`Connection::finish`] and
    /// [`Connection::move_to`], which take the registry's entry off first.
    stream: TcpStream,
    /// What was already received on another core before the connection moved here, in order:
    /// read it before the stream.
    pub buffered: Vec<Bytes>,
    entry: Rc<Entry>,
    handoffs: Mailboxes<Handoff>,
    seq: u64,
}

impl Connection {
    /// The connection's place in the order the server accepted connections (from 0; kept when it
    /// moves): connections a client opened one after another compare in that order, whichever
    /// cores they were served on.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Its registry entry: activity, handshake done, sends in progress, the limit it passed.
    pub fn entry(&self) -> &Rc<Entry> {
        &self.entry
    }

    /// Counts how the connection ended, takes it off the registry and closes it.
    pub async fn finish(self, failed: bool) {
        if failed {
            Registry::here().bump(|s| s.errors += 1);
        }
        drop(self.slot);
        let _ = self.stream.close().await;
    }

    /// Takes the socket off the registry (its limits no longer apply) and hands it to the caller,
    /// who closes it; the connection back if an operation still holds the socket.
    pub fn into_stream(self) -> Result<TcpStream, Connection> {
        let Connection { stream, entry, slot, handoffs, buffered, seq } = self;
        match stream.into_fd() {
            Ok(fd) => {
                drop(slot);
                Ok(TcpStream::from_fd(fd))
            }
            Err(stream) => Err(Connection { stream, buffered, entry, slot, handoffs, seq }),
        }
    }

    /// Moves the connection to core `core`, where the service serves it again with `buffered`
    /// (what was read here and not consumed, in order) as its [`Connection::buffered`]. The
    /// caller must have stopped receiving (see [`crate::net::RecvStream::finish`]) and sent what
    /// it queued: the socket changes hands as it is. Moving to this very core is allowed.
    ///
    /// Costs one mailbox message and one wake-up of the target core (see the README). A full
    /// mailbox gives the connection back.
    pub fn move_to(self, core: usize, buffered: Vec<Bytes>) -> Result<(), Connection> {
        let Connection { stream, entry, slot, handoffs, buffered: old, seq } = self;
        let fd = match stream.into_fd() {
            Ok(fd) => fd,
            Err(stream) => return Err(Connection { stream, buffered: old, entry, slot, handoffs, seq }),
        };
        match handoffs.send(core, Handoff { fd, buffered, seq }) {
            Ok(()) => {
                // Off this core's registry (the target lists it when it takes it).
                drop(slot);
                Registry::here().bump(|s| s.moved += 1);
                Ok(())
            }
            Err(h) => {
                Err(Connection { stream: TcpStream::from_fd(h.fd), buffered: h.buffered, entry, slot, handoffs, seq })
            }
        }
    }
}

/// The cores of a running server.
pub struct Server<S: Service> {
    local: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    running: Running<Result<(ServerStats, S::Stats), AcceptError>>,
}

/// Errors starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The runtime could not start, or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The acceptor stopped on an error (the server then stops).
    #[error(transparent)]
    Accept(#[from] AcceptError),
}

impl<S: Service> Server<S> {
    /// Binds (on the calling thread, so a port in use is reported before any core starts) and
    /// starts the cores. Core 0 accepts and deals connections to every core.
    pub fn start(config: ServerConfig, service: S) -> Result<Server<S>, ServeError> {
        let (listener, local) = match config.listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)?;
                let local = l.local_addr();
                (Some(l.into_fd()), Some(local))
            }
            None => (None, None),
        };
        let (admin_listener, admin) = match config.admin {
            Some(addr) => {
                let l = TcpListener::bind(addr)?;
                let local = l.local_addr();
                (Some(l.into_fd()), Some(local))
            }
            None => (None, None),
        };
        let cores = config.runtime.cpus.len();
        let shared = Arc::new(Shared {
            service: Arc::new(service),
            limits: config.limits,
            handoffs: Mailboxes::new(cores, runtime::MAILBOX_CAPACITY),
            control: Mailboxes::new(cores, 16),
            replies: Mailboxes::new(cores, 1024),
        });
        let fds = Arc::new(Mutex::new((listener, admin_listener)));
        let grace = config.stop_grace;
        let running = runtime::start(config.runtime, move |core| {
            let (listener, admin) = if core.index == 0 {
                let mut l = fds.lock().unwrap_or_else(|e| e.into_inner());
                (l.0.take(), l.1.take())
            } else {
                (None, None)
            };
            core_main(core, shared.clone(), listener, admin, grace)
        })?;
        Ok(Server { local, admin, running })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The runtime handle (to stop it).
    pub fn handle(&self) -> &runtime::Handle {
        self.running.handle()
    }

    /// Waits for the server to stop and returns the counts summed over cores, or why it failed.
    pub fn join(self) -> Result<(ServerStats, S::Stats), ServeError> {
        let mut server = ServerStats::default();
        let mut service = S::Stats::default();
        for r in self.running.join()? {
            let (a, b) = r?;
            server += a;
            service += b;
        }
        Ok((server, service))
    }
}

/// Registers `fd` on this core and serves it as a task.
fn serve_here<S: Service>(shared: &Arc<Shared<S>>, fd: OwnedFd, buffered: Vec<Bytes>, seq: u64) {
    let reg = Registry::here();
    reg.bump(|s| s.served += 1);
    let (slot, entry) = reg.insert(std::os::fd::AsRawFd::as_raw_fd(&fd), shared.limits);
    let stream = TcpStream::from_fd(fd);
    let conn = Connection { stream, buffered, entry, slot, handoffs: shared.handoffs.clone(), seq };
    runtime::spawn_detached(shared.service.clone().serve(conn));
}

async fn core_main<S: Service>(
    core: CoreInfo,
    shared: Arc<Shared<S>>,
    listener: Option<OwnedFd>,
    admin: Option<OwnedFd>,
    grace: Duration,
) -> Result<(ServerStats, S::Stats), AcceptError> {
    if let Some(tick) = registry::watchdog_tick(&shared.limits) {
        runtime::spawn_detached(registry::watchdog(tick));
    }
    // Connections placed or moved here.
    let s = shared.clone();
    let mut rx = shared.handoffs.receiver(core.index);
    runtime::spawn_detached(async move {
        let mut batch = Vec::new();
        loop {
            rx.recv_batch(&mut batch, 64).await;
            for h in batch.drain(..) {
                serve_here(&s, h.fd, h.buffered, h.seq);
            }
        }
    });
    // The admin endpoint's questions to this core.
    let s = shared.clone();
    let index = core.index;
    let mut control = shared.control.receiver(core.index);
    runtime::spawn_detached(async move {
        let mut batch = Vec::new();
        loop {
            control.recv_batch(&mut batch, 16).await;
            for q in batch.drain(..) {
                let reply = admin::Reply {
                    id: q.id,
                    core: index,
                    server: Registry::here().stats.get(),
                    service: s.service.core_stats(),
                    open: Registry::here().len() as u64,
                };
                let _ = s.replies.send(q.from, reply);
            }
        }
    });
    if let Some(fd) = admin {
        let s = shared.clone();
        let routes = shared.service.routes();
        let cores = core.count;
        let me = core.index;
        runtime::spawn_detached(admin::serve(fd, routes, move || admin::StatsSource {
            control: s.control.clone(),
            replies: s.replies.receiver(me),
            cores,
            me,
            json: |server: &ServerStats, service: &S::Stats| {
                let mut v = server.to_json();
                v["service"] = S::stats_json(service);
                v
            },
        }));
    }
    shared.service.on_core(&core);
    let mut failure = None;
    match listener {
        Some(fd) => {
            let placement = Placement::new(core.count);
            let me = core.index;
            let s = shared.clone();
            let mut next_seq = 0u64;
            let accepted = accept_loop(fd, |conn| {
                Registry::here().bump(|st| st.accepted += 1);
                let target = placement.next();
                let seq = next_seq;
                next_seq += 1;
                if target == me {
                    serve_here(&s, conn, Vec::new(), seq);
                } else if let Err(h) = s.handoffs.send(target, Handoff { fd: conn, buffered: Vec::new(), seq }) {
                    // That core's mailbox is full: serve the connection here rather than drop it.
                    Registry::here().bump(|st| st.placed_here_when_full += 1);
                    serve_here(&s, h.fd, h.buffered, h.seq);
                }
            })
            .await;
            if let Err(e) = accepted {
                // Reported once, by whoever started the server (the error is returned).
                tracing::debug!(error = %e, "the acceptor stopped; stopping the server");
                core.handle.shutdown();
                failure = Some(e);
            }
        }
        None => runtime::shutdown_requested().await,
    }
    registry::stop_all(grace).await;
    let stats = (Registry::here().stats.get(), shared.service.core_stats());
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
