//! A test's data streams on one core: senders that keep several sends in flight (so that many go
//! into the kernel per ring enter), receivers on the buffer groups' multishot receives, counters a
//! reporter samples, and a stop that lets in-flight data land before anything is counted as final.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::udp::{self, Pacer, UdpReceiver};
use super::Flag;
use crate::net::{TcpStream, UdpSocket};
use crate::runtime::{self, Either};
use crate::sys::TcpInfo;

/// How long a stopped receiver waits for more before it takes the stream as finished, when the
/// peer does not end the stream (iperf3 leaves its data connections open until the results).
pub const QUIET: Duration = Duration::from_millis(250);
/// The longest a stop waits for in-flight sends and for receivers to drain.
pub const DRAIN_MAX: Duration = Duration::from_secs(3);

/// A data connection.
pub enum Sock {
    /// A TCP stream.
    Tcp(Rc<TcpStream>),
    /// A connected UDP socket.
    Udp(Rc<UdpSocket>),
}

/// One data stream of a test.
pub struct DataStream {
    /// iperf3's stream id.
    pub id: i32,
    /// This side sends on it.
    pub sender: bool,
    /// The socket.
    pub sock: Sock,
    /// Its local address.
    pub local: SocketAddr,
    /// Its peer's address.
    pub peer: SocketAddr,
    /// The descriptor number (iperf3's reports name streams by it).
    pub fd: i32,
}

/// What a stream counted so far.
#[derive(Default)]
pub struct Counters {
    /// Bytes sent (sender) or received (receiver).
    pub bytes: Cell<u64>,
    /// Datagrams sent (UDP sender).
    pub packets: Cell<u64>,
    /// The UDP receiver's counts.
    pub udp: Cell<UdpReceiver>,
    /// Zero-copy sends whose data the kernel copied after all.
    pub zc_copied: Cell<u64>,
    /// Zero-copy sends that went without a copy.
    pub zc_zero_copy: Cell<u64>,
    /// When the stream stopped counting.
    pub ended: Cell<Option<Instant>>,
    /// When data last arrived (receivers).
    pub last_data: Cell<Option<Instant>>,
    /// Why the stream failed, if it did.
    pub error: RefCell<Option<String>>,
}

/// A snapshot of one stream, for interval reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Bytes so far.
    pub bytes: u64,
    /// Datagrams sent so far (UDP sender).
    pub packets: u64,
    /// UDP receiver counts so far.
    pub udp: UdpReceiver,
    /// `TCP_INFO` (TCP senders).
    pub tcp: Option<TcpInfo>,
}

/// How the streams run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bytes per write (per datagram for UDP).
    pub len: usize,
    /// Bits/s per stream (0: as fast as possible).
    pub bitrate: u64,
    /// Bytes all sending streams together send (0: no limit).
    pub bytes: u64,
    /// Blocks all sending streams together send (0: no limit).
    pub blocks: u64,
    /// Bytes all receiving streams together receive before the test may end (0: no limit).
    pub receive_target: u64,
    /// Zero-copy sends (TCP).
    pub zerocopy: bool,
    /// UDP segmentation offload: this many datagrams per send (1: off).
    pub gso_segments: usize,
    /// UDP receive offload is on: received buffers hold several datagrams of `len` bytes.
    pub gro: bool,
    /// UDP sequence numbers are 64 bits.
    pub counters_64bit: bool,
    /// The test starts with omitted seconds: a byte budget counts from their end.
    pub omit: bool,
}

/// What the streams of a test share: the send budget, the receive target, the stop flags.
struct Shared {
    plan: Plan,
    /// Bytes (or blocks, as bytes) the senders may still send; `None`: no limit.
    budget: Cell<Option<u64>>,
    /// The whole budget, and the bytes of it sent so far.
    total: Option<u64>,
    sent: Cell<u64>,
    received: Cell<u64>,
    /// In the omitted seconds: sends take nothing from the budget (counted here instead).
    omitting: Cell<bool>,
    omit_taken: Cell<u64>,
    /// Receivers still running (the peer has not ended their streams).
    receivers_live: Cell<usize>,
    /// Set when the senders spent the budget, the receivers reached their target, every
    /// receiver's stream ended, or a stream failed.
    done: Flag,
    /// Stop sending; receivers drain.
    stop: Flag,
    /// Stop everything now.
    hard: Flag,
    /// Cancel the sends in flight (a stalled send; also set by the hard stop). Receivers go on.
    halt_sends: Flag,
    /// When the stop came.
    stop_at: Cell<Option<Instant>>,
}

impl Shared {
    /// Stops everything now: in-flight sends and receives are cancelled.
    fn halt(&self) {
        self.halt_sends.set();
        self.hard.set();
    }

    /// Takes up to `want` bytes of the budget (0 when it is spent).
    fn take(&self, want: usize) -> usize {
        if self.omitting.get() {
            self.omit_taken.set(self.omit_taken.get() + want as u64);
            return want;
        }
        match self.budget.get() {
            None => want,
            Some(left) => {
                let n = (left as usize).min(want);
                self.budget.set(Some(left - n as u64));
                n
            }
        }
    }

    /// `n` bytes of the budget went: the test is done once all of it has.
    fn sent(&self, n: usize) {
        let sent = self.sent.get() + n as u64;
        self.sent.set(sent);
        if !self.omitting.get() && self.total.is_some_and(|t| sent >= t) {
            self.done.set();
        }
    }

    /// The omitted seconds are over: the budget starts again, as iperf3 resets its counts then.
    /// Bytes taken and still in flight count against the new budget when they complete.
    fn restart_budget(&self) {
        if !self.omitting.replace(false) {
            return;
        }
        if let Some(total) = self.total {
            let in_flight = self.omit_taken.get().saturating_sub(self.sent.get());
            self.budget.set(Some(total.saturating_sub(in_flight)));
        }
        self.sent.set(0);
        self.received.set(0);
    }

    fn give_back(&self, n: usize) {
        if self.omitting.get() {
            self.omit_taken.set(self.omit_taken.get().saturating_sub(n as u64));
        } else if let Some(left) = self.budget.get() {
            self.budget.set(Some(left + n as u64));
        }
    }

    fn received(&self, n: usize) {
        let total = self.received.get() + n as u64;
        self.received.set(total);
        if !self.omitting.get() && self.plan.receive_target > 0 && total >= self.plan.receive_target {
            self.done.set();
        }
    }
}

/// The streams of a running test.
pub struct Streams {
    /// The streams and their counters, in id order.
    pub list: Vec<(DataStream, Rc<Counters>)>,
    shared: Rc<Shared>,
    senders: Vec<runtime::JoinHandle<()>>,
    receivers: Vec<runtime::JoinHandle<()>>,
    /// When the streams started.
    pub started: Instant,
}

/// How many sends a TCP stream keeps in flight: enough that small writes go many per enter.
fn tcp_depth(len: usize) -> usize {
    (256 * 1024 / len.max(1)).clamp(2, 32)
}

/// Starts every stream's task on this core.
pub fn start(list: Vec<DataStream>, plan: Plan) -> Streams {
    let budget = if plan.bytes > 0 {
        Some(plan.bytes)
    } else if plan.blocks > 0 {
        Some(plan.blocks * plan.len as u64)
    } else {
        None
    };
    let started = runtime::now();
    let omit = plan.omit;
    let shared = Rc::new(Shared {
        plan,
        budget: Cell::new(budget),
        total: budget,
        sent: Cell::new(0),
        received: Cell::new(0),
        omitting: Cell::new(omit),
        omit_taken: Cell::new(0),
        receivers_live: Cell::new(list.iter().filter(|s| !s.sender).count()),
        done: Flag::new(),
        stop: Flag::new(),
        hard: Flag::new(),
        halt_sends: Flag::new(),
        stop_at: Cell::new(None),
    });
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let list: Vec<(DataStream, Rc<Counters>)> = list.into_iter().map(|s| (s, Rc::new(Counters::default()))).collect();
    for (s, c) in &list {
        match (&s.sock, s.sender) {
            (Sock::Tcp(t), true) => {
                // At a bitrate, paced here as iperf3 paces (blocks due by the clock, checked per
                // millisecond's worth), so that what is counted as sent is what the rate allows:
                // the kernel's own pacing (SO_MAX_PACING_RATE) would hold bytes the socket had
                // already taken, and the test would count them early and run long.
                let pacer = Rc::new(RefCell::new(Pacer::new(started, shared.plan.bitrate, shared.plan.len)));
                for _ in 0..tcp_depth(shared.plan.len) {
                    senders.push(runtime::spawn(tcp_sender(t.clone(), c.clone(), shared.clone(), pacer.clone())));
                }
            }
            (Sock::Tcp(t), false) => receivers.push(runtime::spawn(tcp_receiver(t.clone(), c.clone(), shared.clone()))),
            (Sock::Udp(u), true) => {
                let pacer = Rc::new(RefCell::new(Pacer::new(started, shared.plan.bitrate, shared.plan.len)));
                let seq = Rc::new(Cell::new(0u64));
                let depth = if shared.plan.gso_segments > 1 { 4 } else { 16 };
                for _ in 0..depth {
                    senders.push(runtime::spawn(udp_sender(
                        u.clone(),
                        c.clone(),
                        shared.clone(),
                        pacer.clone(),
                        seq.clone(),
                    )));
                }
            }
            (Sock::Udp(u), false) => receivers.push(runtime::spawn(udp_receiver(u.clone(), c.clone(), shared.clone()))),
        }
    }
    Streams { list, shared, senders, receivers, started }
}

impl Streams {
    /// A snapshot of every stream, in order.
    pub fn samples(&self) -> Vec<Sample> {
        self.list
            .iter()
            .map(|(s, c)| Sample {
                bytes: c.bytes.get(),
                packets: c.packets.get(),
                udp: c.udp.get(),
                tcp: match (&s.sock, s.sender) {
                    (Sock::Tcp(_), true) => crate::sys::tcp_info(s.fd),
                    _ => None,
                },
            })
            .collect()
    }

    /// Resolves when the senders spent the byte budget or the receivers reached their target.
    pub fn done(&self) -> Flag {
        self.shared.done.clone()
    }

    /// Stops sending, lets in-flight sends finish (at most [`DRAIN_MAX`]), ends the TCP streams
    /// this side sends on, and waits for the receivers to drain: until the peer ends the stream,
    /// or nothing arrived for [`QUIET`], or [`DRAIN_MAX`] passed.
    pub async fn stop(&mut self) {
        let deadline = runtime::now() + DRAIN_MAX;
        self.shared.stop_at.set(Some(runtime::now()));
        self.shared.stop.set();
        // In-flight sends finish while they make progress; sends the peer no longer reads (an
        // iperf3 client stops reading once it has sent its byte count) are cancelled after
        // [`QUIET`] without progress.
        let sent = |list: &[(DataStream, Rc<Counters>)]| -> u64 {
            list.iter().filter(|(s, _)| s.sender).map(|(_, c)| c.bytes.get()).sum()
        };
        let mut seen = sent(&self.list);
        for mut h in self.senders.drain(..) {
            while runtime::timeout(QUIET, &mut h).await.is_err() {
                let now_sent = sent(&self.list);
                if now_sent == seen || runtime::now() >= deadline {
                    self.shared.halt_sends.set();
                }
                seen = now_sent;
            }
        }
        for (s, c) in &self.list {
            if s.sender {
                c.ended.set(Some(end_time(c, &self.shared)));
                if let Sock::Tcp(t) = &s.sock {
                    let _ = runtime::timeout_at(deadline.max(runtime::now() + QUIET), t.shutdown_write()).await;
                }
            }
        }
        let deadline = deadline.max(runtime::now() + QUIET);
        for h in self.receivers.drain(..) {
            if runtime::timeout_at(deadline, h).await.is_err() {
                self.shared.halt();
            }
        }
        self.shared.halt();
        let now = runtime::now();
        for (_, c) in &self.list {
            if c.ended.get().is_none() {
                c.ended.set(Some(now));
            }
        }
    }

    /// The omitted seconds are over: a byte or block budget starts again from here.
    pub fn end_omit(&self) {
        self.shared.restart_budget();
    }

    /// The first error of each stream that failed, as "stream ID: error".
    pub fn errors(&self) -> Vec<String> {
        self.list
            .iter()
            .filter_map(|(s, c)| c.error.borrow().as_ref().map(|e| format!("stream {}: {e}", s.id)))
            .collect()
    }

    /// Whether nothing arrived on any receiving stream for `d` (since its last data, or since
    /// the start for a stream that got none): a UDP receiver whose byte target cannot be met
    /// because datagrams were lost.
    pub fn receivers_quiet_for(&self, d: Duration) -> bool {
        let now = runtime::now();
        let mut any = false;
        for (s, c) in &self.list {
            if !s.sender {
                any = true;
                let since = c.last_data.get().unwrap_or(self.started);
                if now.saturating_duration_since(since) < d {
                    return false;
                }
            }
        }
        any
    }

    /// When the last stream stopped counting (now, if one still counts).
    pub fn ended_at(&self) -> Instant {
        self.list.iter().map(|(_, c)| c.ended.get().unwrap_or_else(runtime::now)).max().unwrap_or_else(runtime::now)
    }

    /// Ends everything now (a failed test): in-flight operations are cancelled.
    pub fn abort(&mut self) {
        self.shared.stop.set();
        self.shared.halt();
        self.senders.clear();
        self.receivers.clear();
    }

    /// Closes the sockets.
    pub async fn close(mut self) {
        self.abort();
        for (s, _) in std::mem::take(&mut self.list) {
            if let Sock::Tcp(t) = s.sock {
                if let Ok(t) = Rc::try_unwrap(t) {
                    let _ = t.close().await;
                }
            }
        }
    }
}

impl Drop for Streams {
    /// A test that ends any way (an error, a lost control connection) stops its streams' tasks:
    /// they are detached, and would otherwise go on sending.
    fn drop(&mut self) {
        self.shared.stop.set();
        self.shared.halt();
    }
}

/// Runs `f` unless the hard stop comes first.
async fn unless_hard<F: std::future::Future>(hard: &Flag, f: F) -> Option<F::Output> {
    match runtime::select(f, hard.wait()).await {
        Either::Left(v) => Some(v),
        Either::Right(()) => None,
    }
}

/// The block TCP senders send, one per core (a core-local value).
#[derive(Default)]
struct BlockCache(RefCell<Option<Bytes>>);

/// One of a TCP stream's in-flight senders: the same block again and again (iperf3's receivers
/// count bytes and look at none of them).
async fn tcp_sender(t: Rc<TcpStream>, c: Rc<Counters>, sh: Rc<Shared>, pacer: Rc<RefCell<Pacer>>) {
    let len = sh.plan.len;
    // One shared block per core and size: the kernel copies from it (or, zero-copy, reads it).
    let cache = crate::runtime::Core::with(|core| core.local::<BlockCache>());
    let block = {
        let mut b = cache.0.borrow_mut();
        match b.as_ref() {
            Some(x) if x.len() == len => x.clone(),
            _ => {
                let x = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
                *b = Some(x.clone());
                x
            }
        }
    };
    while !sh.stop.is_set() {
        let (due, next) = pacer.borrow().due(runtime::now(), 1);
        if due == 0 {
            let wake = next.unwrap_or_else(|| runtime::now() + Duration::from_millis(1));
            if unless_hard(&sh.stop, runtime::sleep_until(wake)).await.is_none() {
                break;
            }
            continue;
        }
        let want = sh.take(len);
        if want == 0 {
            break;
        }
        pacer.borrow_mut().sent(1);
        // This reservation goes whole (a short send sends its rest), so that a byte budget is
        // spent exactly.
        let mut off = 0;
        while off < want {
            let chunk = block.slice(off..want);
            let r = if sh.plan.zerocopy {
                let Some((r, _, copied)) =
                    unless_hard(&sh.halt_sends, crate::net::send::send_zc_once(t.shared_fd(), vec![chunk], 0)).await
                else {
                    sh.give_back(want - off);
                    return;
                };
                match copied {
                    Some(true) => c.zc_copied.set(c.zc_copied.get() + 1),
                    Some(false) => c.zc_zero_copy.set(c.zc_zero_copy.get() + 1),
                    None => {}
                }
                r
            } else {
                // Small writes say more follow (they do: several are in flight), so the kernel
                // fills segments instead of sending one per write.
                let more = len < 64 * 1024;
                let op = if more {
                    crate::ring::ops::send_more(t.shared_fd(), chunk, 0)
                } else {
                    crate::ring::ops::send(t.shared_fd(), chunk, 0)
                };
                let Some((r, _)) = unless_hard(&sh.halt_sends, async move {
                    let (c, (_, b)) = op.await;
                    (c.into_result().map(|n| n as usize), b)
                })
                .await
                else {
                    sh.give_back(want - off);
                    return;
                };
                r
            };
            match r {
                Ok(n) if n > 0 => {
                    c.bytes.set(c.bytes.get() + n as u64);
                    c.last_data.set(Some(runtime::now()));
                    sh.sent(n);
                    off += n;
                }
                Ok(_) => {
                    sh.give_back(want - off);
                    note_error(&c, &sh, "send: the socket took nothing".into());
                    return;
                }
                Err(e) => {
                    sh.give_back(want - off);
                    note_error(&c, &sh, format!("send: {e}"));
                    return;
                }
            }
        }
    }
}

/// Bytes a TCP receiver asks for per receive (iperf3 reads one block, 128 KiB by default).
pub const TCP_READ: usize = 128 * 1024;

/// A TCP stream's receiver: counts what arrives until the peer ends the stream or, after the
/// stop, until it goes quiet. One receive at a time into one buffer that stays hot in the cache
/// (a bulk receiver cycling through a pool's buffers copies into cold memory); a receive still
/// pending at the end is cancelled and awaited, so no byte the kernel handed over goes uncounted.
async fn tcp_receiver(t: Rc<TcpStream>, c: Rc<Counters>, sh: Rc<Shared>) {
    let fd = t.shared_fd();
    let mut buf: Vec<u8> = Vec::with_capacity(TCP_READ);
    let mut poll_first = false;
    'outer: loop {
        buf.clear();
        let mut op = crate::ring::ops::recv(fd.clone(), std::mem::take(&mut buf), poll_first);
        let (done, data) = loop {
            if sh.stop.is_set() {
                match runtime::select(runtime::select(&mut op, runtime::sleep(QUIET)), sh.hard.wait()).await {
                    Either::Left(Either::Left(r)) => break r,
                    _ => {
                        // Quiet (or the hard stop): cancel, and count what it got before the cancel.
                        op.cancel();
                        let (done, data) = (&mut op).await;
                        if let Ok(n) = done.into_result() {
                            count_received(&c, &sh, n as usize);
                        }
                        drop(data);
                        break 'outer;
                    }
                }
            }
            match runtime::select(&mut op, sh.stop.wait()).await {
                Either::Left(r) => break r,
                Either::Right(()) => continue,
            }
        };
        buf = data.1;
        match done.into_result() {
            Ok(0) => break,
            Ok(n) => {
                count_received(&c, &sh, n as usize);
                poll_first = (n as usize) < TCP_READ;
            }
            Err(e) => {
                note_error(&c, &sh, format!("receive: {e}"));
                break;
            }
        }
    }
    receiver_ended(&c, &sh);
}

fn count_received(c: &Counters, sh: &Shared, n: usize) {
    if n > 0 {
        c.bytes.set(c.bytes.get() + n as u64);
        c.last_data.set(Some(runtime::now()));
        sh.received(n);
    }
}

/// One of a UDP stream's in-flight senders: takes the next sequence numbers the pacer allows,
/// writes their headers into its own buffer and sends (one datagram, or a GSO batch).
async fn udp_sender(u: Rc<UdpSocket>, c: Rc<Counters>, sh: Rc<Shared>, pacer: Rc<RefCell<Pacer>>, seq: Rc<Cell<u64>>) {
    let len = sh.plan.len;
    let segs = sh.plan.gso_segments.max(1);
    let mut buf = vec![0u8; len * segs];
    while !sh.stop.is_set() {
        let (n, next) = pacer.borrow().due(runtime::now(), segs as u64);
        if n == 0 {
            let wake = next.unwrap_or_else(|| runtime::now() + Duration::from_millis(1));
            if unless_hard(&sh.stop, runtime::sleep_until(wake)).await.is_none() {
                break;
            }
            continue;
        }
        let want = sh.take(n as usize * len);
        if want == 0 {
            break;
        }
        // Whole datagrams only: a budget that is not a multiple of the length rounds up, as
        // iperf3 sends (a short last datagram leaves an iperf3 receiver waiting for its bytes).
        let count = want.div_ceil(len);
        pacer.borrow_mut().sent(count as u64);
        let now = SystemTime::now();
        let first = seq.get() + 1;
        seq.set(seq.get() + count as u64);
        // A short batch goes from the buffer's tail (sent from an offset): the buffer keeps its
        // length, and nothing is zeroed again between sends.
        let start = (segs - count) * len;
        for i in 0..count {
            udp::write_header(&mut buf[start + i * len..], now, first + i as u64, sh.plan.counters_64bit);
        }
        let Some((r, b)) = unless_hard(&sh.halt_sends, u.send(buf, start)).await else { return };
        buf = b;
        match r {
            Ok(sent) => {
                c.bytes.set(c.bytes.get() + sent as u64);
                c.packets.set(c.packets.get() + count as u64);
                c.last_data.set(Some(runtime::now()));
                sh.sent(want);
            }
            // A full socket buffer or an unreachable peer (ICMP): these sequence numbers are spent
            // and the receiver counts them lost (iperf3 3.12 does the same).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECONNREFUSED | libc::EAGAIN)) => {
                sh.give_back(want);
                runtime::sleep(Duration::from_micros(200)).await;
            }
            Err(e) => {
                note_error(&c, &sh, format!("send: {e}"));
                return;
            }
        }
    }
}

/// A UDP stream's receiver: each datagram's header (several per buffer with receive offload) goes
/// to the loss, order and jitter counts.
async fn udp_receiver(u: Rc<UdpSocket>, c: Rc<Counters>, sh: Rc<Shared>) {
    let mut rx = u.recv_stream();
    let len = sh.plan.len.max(udp::header_len(sh.plan.counters_64bit));
    loop {
        let next = if sh.stop.is_set() {
            match unless_hard(&sh.hard, runtime::timeout(QUIET, rx.next())).await {
                Some(Ok(r)) => r,
                _ => break,
            }
        } else {
            match runtime::select(rx.next(), sh.stop.wait()).await {
                Either::Left(r) => r,
                Either::Right(()) => continue,
            }
        };
        match next {
            Ok(d) => {
                let arrived = udp::wall_now();
                let mut st = c.udp.get();
                let stride = if sh.plan.gro { len } else { d.data.len().max(1) };
                for seg in d.data.chunks(stride) {
                    if let Some((sent, seq)) = udp::read_header(seg, sh.plan.counters_64bit) {
                        st.datagram(sent, seq, arrived);
                    }
                }
                c.udp.set(st);
                c.last_data.set(Some(runtime::now()));
                c.bytes.set(c.bytes.get() + d.data.len() as u64);
                sh.received(d.data.len());
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
            Err(e) => {
                note_error(&c, &sh, format!("receive: {e}"));
                break;
            }
        }
    }
    receiver_ended(&c, &sh);
}

/// A receiver's end. Once every receiver has ended before the stop (the peer ended its streams,
/// or they failed), nothing more can arrive: the test is done.
fn receiver_ended(c: &Counters, sh: &Shared) {
    c.ended.set(Some(end_time(c, sh)));
    sh.receivers_live.set(sh.receivers_live.get().saturating_sub(1));
    if sh.receivers_live.get() == 0 && !sh.stop.is_set() {
        sh.done.set();
    }
}

/// When a stream stopped counting: when its last data went or came, or the stop if that came
/// later (a receiver that waited out [`QUIET`] did not receive during the wait, a sender whose
/// last sends were cancelled did not send during it).
fn end_time(c: &Counters, sh: &Shared) -> Instant {
    let now = runtime::now();
    match (c.last_data.get(), sh.stop_at.get()) {
        (Some(d), Some(s)) => d.max(s).min(now),
        (None, Some(s)) => s,
        _ => now,
    }
}

/// A stream's failure, unless the test was already stopping (a peer that closes its data
/// connections once the test is over, as iperf3 does, is not a failure).
/// A failed stream ends the test (its counts can no longer reach a byte target).
fn note_error(c: &Counters, sh: &Shared, e: String) {
    if !sh.stop.is_set() {
        c.error.borrow_mut().get_or_insert(e);
        sh.done.set();
    }
}
