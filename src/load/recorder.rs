//! The one recorder of a core's run: every count and histogram a reply, a send, a connection or
//! a late tick goes into, with the measured window applied in one place. Latencies go into the
//! current interval's histogram only; `publish` adds each interval into the run's.

use std::time::Instant;

use super::{ns, CoreRun, LoadResult};

impl CoreRun {
    /// Records one reply that came back complete at `now`: `intended` and `actual` are when its
    /// request was meant to go and went.
    pub fn reply(&self, now: Instant, intended: Instant, actual: Instant, status: Option<u16>) {
        let mut r = self.result.borrow_mut();
        r.received += 1;
        if let Some(code) = status {
            *r.status.entry(code).or_default() += 1;
        }
        if self.in_window(intended) {
            let corrected = ns(now - intended);
            r.measured += 1;
            let _ = r.uncorrected.record(ns(now.saturating_duration_since(actual)));
            // Into the interval's histogram only: it is added into the run's when it is handed
            // on (one record per reply, not two).
            let mut iv = self.interval.borrow_mut();
            iv.replies += 1;
            let _ = iv.latency.record(corrected);
        }
    }

    /// A request that fell due at `intended` got no answer it could count: it is in the latency
    /// distribution with the time it waited until `now`, a lower bound (percentiles at or above
    /// the smallest such value print as "≥").
    fn censored(&self, r: &mut LoadResult, now: Instant, intended: Instant) {
        if self.in_window(intended) {
            let waited = ns(now.saturating_duration_since(intended));
            self.censored_n(r, waited, waited, 1);
        }
    }

    /// `n` requests without a counted answer that waited `waited` (the least of them `least`).
    fn censored_n(&self, r: &mut LoadResult, waited: u64, least: u64, n: u64) {
        r.censored_min = Some(r.censored_min.map_or(least, |m| m.min(least)));
        r.censored += n;
        let _ = self.interval.borrow_mut().latency.record_n(waited, n);
    }

    fn in_window(&self, intended: Instant) -> bool {
        intended >= self.measure_start.get() && intended < self.deadline.get()
    }

    /// A reply was overdue at `now` (`--timeout`): a timeout, recorded with its wait so far.
    pub fn overdue(&self, now: Instant, intended: Instant) {
        self.censored(&mut self.result.borrow_mut(), now, intended);
        self.error(|c| c.timeout += 1);
    }

    /// A request still unanswered when the run ended at `end`.
    pub fn unanswered(&self, end: Instant, intended: Instant) {
        self.censored(&mut self.result.borrow_mut(), end, intended);
        self.error(|c| c.timeout += 1);
    }

    /// `n` requests that fell due from about `intended` to `latest` (in the measured window or
    /// all outside it) and never went (the generator fell behind, or `--max-inflight` held
    /// them) before the run ended at `end`, recorded with the wait of the one due at
    /// `intended`: a run that ends billions of requests behind its rate records them in groups.
    pub fn unsent_n(&self, end: Instant, intended: Instant, latest: Instant, n: u64) {
        if self.in_window(intended) {
            let mut r = self.result.borrow_mut();
            r.unsent += n;
            let waited = ns(end.saturating_duration_since(intended));
            self.censored_n(&mut r, waited, ns(end.saturating_duration_since(latest)), n);
        }
    }

    /// `n` requests of the warm-up had not gone when the window opened, and never will.
    pub fn warmup_dropped(&self, n: u64) {
        self.result.borrow_mut().warmup_dropped += n;
    }

    /// A due request waited for `--max-inflight`.
    pub fn held(&self) {
        self.result.borrow_mut().held += 1;
    }

    /// A send failed part-way through a request: `bytes` of it went.
    pub fn cut(&self, bytes: u64) {
        let mut r = self.result.borrow_mut();
        r.cut += 1;
        r.bytes_sent += bytes;
        self.interval.borrow_mut().bytes += bytes;
    }

    /// The server closed a connection cleanly and a new one took its place after `took`.
    pub fn reconnected(&self, took: std::time::Duration) {
        let mut r = self.result.borrow_mut();
        r.reconnects += 1;
        r.reconnect_time += took;
    }

    /// A send was submitted to the ring (the cost of a message is in how many it takes).
    pub fn counted_send(&self) {
        self.result.borrow_mut().sends += 1;
    }

    /// A receive completion brought bytes.
    pub fn counted_receive(&self) {
        self.result.borrow_mut().receives += 1;
    }

    /// Records bytes that came in.
    pub fn received_bytes(&self, n: usize) {
        let now = crate::runtime::now();
        let mut r = self.result.borrow_mut();
        r.bytes_received += n as u64;
        if now >= self.measure_start.get() && now < self.deadline.get() {
            r.measured_bytes_received += n as u64;
        }
        self.interval.borrow_mut().bytes += n as u64;
    }

    /// Records a request that went out.
    pub fn sent(&self, at: Instant, bytes: usize) {
        let mut r = self.result.borrow_mut();
        r.sent += 1;
        r.bytes_sent += bytes as u64;
        if at >= self.measure_start.get() && at < self.deadline.get() {
            r.measured_bytes_sent += bytes as u64;
            r.measured_sent += 1;
        }
        self.interval.borrow_mut().bytes += bytes as u64;
    }

    /// Records a connection opened (connect mode): due at `intended`, attempted at `attempted`,
    /// up at `now`. Its latency counts like a reply's.
    pub fn connected(&self, intended: Instant, attempted: Instant, now: Instant) {
        let mut r = self.result.borrow_mut();
        r.connected += 1;
        if self.in_window(intended) {
            let corrected = ns(now - intended);
            let _ = r.connect_latency.record(corrected);
            let _ = r.uncorrected.record(ns(now - attempted));
            r.measured += 1;
            let mut iv = self.interval.borrow_mut();
            iv.replies += 1;
            let _ = iv.latency.record(corrected);
        }
    }

    /// Records a connection of a request/response or stream mode opened (attempted at
    /// `attempted`, up at `now`), before traffic starts.
    pub fn opened(&self, attempted: Instant, now: Instant) {
        let mut r = self.result.borrow_mut();
        r.connected += 1;
        let _ = r.connect_latency.record(ns(now - attempted));
    }

    /// Notes when connecting first failed, and how many connections were open by then.
    pub fn first_failure(&self) {
        let mut r = self.result.borrow_mut();
        if r.first_failure.is_none() {
            r.first_failure = Some(self.start.get().elapsed());
            r.opened_before_failure = r.connected;
        }
    }

    /// Records the request of a connect-mode exchange (counted in the totals; connect mode's
    /// measured rate and latency are its connections').
    pub fn exchange_sent(&self, bytes: usize) {
        let mut r = self.result.borrow_mut();
        r.sent += 1;
        r.bytes_sent += bytes as u64;
        self.interval.borrow_mut().bytes += bytes as u64;
    }

    /// Records bytes of a connect-mode exchange's reply.
    pub fn exchange_received_bytes(&self, n: usize) {
        self.result.borrow_mut().bytes_received += n as u64;
        self.interval.borrow_mut().bytes += n as u64;
    }

    /// Records a connect-mode exchange's reply.
    pub fn exchange_reply(&self, status: Option<u16>) {
        let mut r = self.result.borrow_mut();
        r.received += 1;
        if let Some(code) = status {
            *r.status.entry(code).or_default() += 1;
        }
    }

    /// Records how late a request due at `intended` went out at `now` (open loop).
    pub fn lag(&self, intended: Instant, now: Instant) {
        let _ = self.result.borrow_mut().schedule_lag.record(ns(now.saturating_duration_since(intended)));
    }
}
