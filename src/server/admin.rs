//! A small HTTP/1.1 admin endpoint on the ring (`httparse`): `GET /healthz`, `GET /stats` (the
//! server's and the service's counters summed over cores, and per core, asked of every core through
//! its mailbox at the time of the request), and the routes a service adds. One request per
//! connection, answered on core 0, at most eight at once; each exchange is bounded in size (8 KiB)
//! and time (1 s for the request head, 5 s in all).

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::ServerStats;
use crate::net::TcpStream;
use crate::ring::ops::{self, SharedFd};
use crate::runtime::{self, Mailboxes, Receiver};

/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one exchange may take.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(5);
/// How long `/stats` waits for every core to answer.
const STATS_LIMIT: Duration = Duration::from_secs(2);

/// A request as a route sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method (`GET`).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string after `?`, if any (empty otherwise).
    pub query: String,
}

/// A route's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// `200` with a JSON body.
    pub fn json(v: &serde_json::Value) -> Response {
        Response { status: 200, content_type: "application/json", body: format!("{v}\n").into_bytes() }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: format!("{body}\n").into_bytes() }
    }
}

/// A route a service adds: `GET path` answered by `handler` on core 0.
#[derive(Clone)]
pub struct Route {
    /// The exact path (`/peers`).
    pub path: &'static str,
    /// The answer.
    pub handler: Arc<dyn Fn(&Request) -> Response + Send + Sync>,
}

/// A question to one core: its counters, for `/stats`.
pub(crate) struct Query {
    pub(crate) id: u64,
    pub(crate) from: usize,
}

/// One core's answer.
pub(crate) struct Reply<T> {
    pub(crate) id: u64,
    pub(crate) core: usize,
    pub(crate) server: ServerStats,
    pub(crate) service: T,
    pub(crate) open: u64,
}

/// How `/stats` asks the cores and renders what they say.
pub(crate) struct StatsSource<T, F> {
    pub(crate) control: Mailboxes<Query>,
    pub(crate) replies: Receiver<Reply<T>>,
    pub(crate) cores: usize,
    pub(crate) me: usize,
    pub(crate) json: F,
}

impl<T, F> StatsSource<T, F>
where
    T: Default + Copy + Send + std::ops::AddAssign + 'static,
    F: Fn(&ServerStats, &T) -> serde_json::Value,
{
    /// Asks every core and waits (bounded) for their answers.
    async fn gather(&mut self, id: u64) -> serde_json::Value {
        for c in 0..self.cores {
            let _ = self.control.send(c, Query { id, from: self.me });
        }
        let mut per_core: Vec<Option<(ServerStats, T, u64)>> = vec![None; self.cores];
        let mut batch = Vec::new();
        let deadline = runtime::now() + STATS_LIMIT;
        while per_core.iter().any(|p| p.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || runtime::timeout(left, self.replies.recv_batch(&mut batch, 64)).await.is_err() {
                break;
            }
            for r in batch.drain(..) {
                if r.id == id && r.core < per_core.len() {
                    per_core[r.core] = Some((r.server, r.service, r.open));
                }
            }
        }
        let (mut server, mut service, mut open) = (ServerStats::default(), T::default(), 0);
        let mut cores = Vec::new();
        for (i, p) in per_core.iter().enumerate() {
            match p {
                Some((a, b, o)) => {
                    server += *a;
                    service += *b;
                    open += o;
                    let mut v = (self.json)(a, b);
                    v["core"] = i.into();
                    v["open_connections"] = (*o).into();
                    cores.push(v);
                }
                None => cores.push(serde_json::json!({ "core": i, "answered": false })),
            }
        }
        let mut v = (self.json)(&server, &service);
        v["open_connections"] = open.into();
        v["cores"] = cores.into();
        v
    }
}

/// Requests answered at once; a connection beyond them is closed unanswered.
const MAX_CONCURRENT: usize = 8;
/// How long reading a request head may take.
const HEAD_LIMIT: Duration = Duration::from_secs(1);

/// Serves the admin endpoint on `listener` until shutdown: each connection a task of its own, at
/// most [`MAX_CONCURRENT`] at once (a connection beyond them is closed at once, so idle or slow
/// clients cannot hold the endpoint or the process's descriptors); `/stats` asks the cores one
/// request at a time.
pub(crate) async fn serve<T, F>(listener: OwnedFd, routes: Vec<Route>, source: impl FnOnce() -> StatsSource<T, F>)
where
    T: Default + Copy + Send + std::ops::AddAssign + 'static,
    F: Fn(&ServerStats, &T) -> serde_json::Value + 'static,
{
    let fd: SharedFd = Rc::new(listener);
    let stats = Rc::new(std::cell::RefCell::new(Some(source())));
    let routes = Rc::new(routes);
    let active = Rc::new(std::cell::Cell::new(0usize));
    let mut id = 0u64;
    loop {
        let mut accepts = ops::accept_multi(fd.clone(), super::acceptor::close_unread);
        while let Some(c) = accepts.next().await {
            if c.result() < 0 {
                // Out of descriptors and the like: the admin endpoint waits, the server goes on.
                runtime::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let conn = ops::adopt_fd(c.result());
            if active.get() >= MAX_CONCURRENT {
                drop(conn);
                continue;
            }
            active.set(active.get() + 1);
            id += 1;
            let (stats, routes, active) = (stats.clone(), routes.clone(), active.clone());
            runtime::spawn_detached(async move {
                let stream = TcpStream::from_fd(conn);
                let _ = runtime::timeout(EXCHANGE_LIMIT, exchange(&stream, &routes, &stats, id)).await;
                let _ = stream.close().await;
                active.set(active.get() - 1);
            });
        }
    }
}

/// One request and its answer.
async fn exchange<T, F>(
    stream: &TcpStream,
    routes: &[Route],
    stats: &std::cell::RefCell<Option<StatsSource<T, F>>>,
    id: u64,
) where
    T: Default + Copy + Send + std::ops::AddAssign + 'static,
    F: Fn(&ServerStats, &T) -> serde_json::Value,
{
    let head = async {
        let mut buf = Vec::with_capacity(MAX_REQUEST);
        loop {
            let (r, b) = stream.recv(buf).await;
            buf = b;
            match r {
                Ok(0) | Err(_) => return Err(None),
                Ok(_) => {}
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    let target = parsed.path.unwrap_or("/");
                    let (path, query) = target.split_once('?').unwrap_or((target, ""));
                    return Ok(Request {
                        method: parsed.method.unwrap_or("").to_string(),
                        path: path.to_string(),
                        query: query.to_string(),
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => continue,
                Ok(httparse::Status::Partial) => return Err(Some(Response::text(431, "request head too large"))),
                Err(e) => return Err(Some(Response::text(400, &format!("bad request: {e}")))),
            }
        }
    };
    let req = match runtime::timeout(HEAD_LIMIT, head).await {
        Ok(Ok(req)) => req,
        Ok(Err(Some(resp))) => {
            respond(stream, &resp).await;
            return;
        }
        Ok(Err(None)) => return,
        Err(_) => {
            respond(stream, &Response::text(408, "request head not received in time")).await;
            return;
        }
    };
    let resp = if req.method != "GET" {
        Response::text(405, "only GET is served here")
    } else if req.path == "/healthz" {
        Response::text(200, "ok")
    } else if req.path == "/stats" {
        // One gathering at a time (the cores answer into one mailbox): wait for the source. It
        // goes back when this is done or dropped (the exchange's time limit).
        let mut lent = loop {
            if let Some(s) = stats.borrow_mut().take() {
                break Lent { slot: stats, value: Some(s) };
            }
            runtime::sleep(Duration::from_millis(1)).await;
        };
        let v = lent.value.as_mut().expect("lent").gather(id).await;
        drop(lent);
        Response::json(&v)
    } else if let Some(r) = routes.iter().find(|r| r.path == req.path) {
        (r.handler)(&req)
    } else {
        let mut paths = vec!["/healthz", "/stats"];
        paths.extend(routes.iter().map(|r| r.path));
        Response::text(404, &format!("no such path; try {}", paths.join(", ")))
    };
    respond(stream, &resp).await;
}

/// A value taken out of its slot, put back when dropped.
struct Lent<'a, T> {
    slot: &'a std::cell::RefCell<Option<T>>,
    value: Option<T>,
}

impl<T> Drop for Lent<'_, T> {
    fn drop(&mut self) {
        *self.slot.borrow_mut() = self.value.take();
    }
}

async fn respond(stream: &TcpStream, r: &Response) {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&r.body);
    let _ = stream.send_all(out).await;
}
