//! When requests (or connections) are due: one schedule for every mode. Open loop: a fixed
//! period from the start of traffic, each tick at `start + offset + i × period` whether or not the
//! last one was served (so a stall shows as latency, not as fewer requests), until the end of the
//! run. Closed loop: now, every time (the caller waits for its replies instead).

use std::time::{Duration, Instant};

use super::LoadConfig;
use crate::runtime;

/// One connection's (or one slot's) schedule.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    period: Option<Duration>,
    offset: Duration,
    tick: u64,
}

impl Schedule {
    /// Requests on connection `id`: the total rate split evenly over the connections, the
    /// connections staggered over one period so that the total is smooth.
    pub(super) fn per_connection(cfg: &LoadConfig, id: usize) -> Schedule {
        match cfg.total_rate() {
            None => Schedule { period: None, offset: Duration::ZERO, tick: 0 },
            Some(total) => {
                let period = Duration::from_secs_f64(cfg.connections as f64 / total);
                let offset = Duration::from_secs_f64((id as f64 / total) % period.as_secs_f64());
                Schedule { period: Some(period), offset, tick: 0 }
            }
        }
    }

    /// When the next tick falls due (`None` in a closed loop), without waiting for it.
    pub(super) fn peek(&self, start: Instant) -> Option<Instant> {
        self.period.map(|p| self.at(start, p, self.tick))
    }

    /// The next tick was taken.
    pub(super) fn advance(&mut self) {
        self.tick += 1;
    }

    /// One slot of `cfg.connections` sharing the total rate (stream and connect modes); `stagger`
    /// offsets slot `id` by `id / total`.
    pub(super) fn per_slot(cfg: &LoadConfig, stagger: Option<usize>) -> Schedule {
        match cfg.total_rate() {
            None => Schedule { period: None, offset: Duration::ZERO, tick: 0 },
            Some(total) => Schedule {
                period: Some(Duration::from_secs_f64(cfg.connections as f64 / total)),
                offset: stagger.map_or(Duration::ZERO, |id| Duration::from_secs_f64(id as f64 / total)),
                tick: 0,
            },
        }
    }

    /// How many ticks from the next one fall due before `t` (none in a closed loop).
    pub(super) fn due_before(&self, start: Instant, t: Instant) -> u64 {
        // (A period is at least 1 ns: rates are capped at 1e9 per second.)
        let Some(p) = self.period.filter(|p| !p.is_zero()) else { return 0 };
        let Some(span) = t.checked_duration_since(start + self.offset) else { return 0 };
        // The first tick at or after `t`, estimated, then settled against `at` itself (the
        // float estimate may be one off either way).
        let mut i = (span.as_secs_f64() / p.as_secs_f64()).ceil() as u64;
        while i > 0 && self.at(start, p, i - 1) >= t {
            i -= 1;
        }
        while self.at(start, p, i) < t {
            i += 1;
        }
        i.saturating_sub(self.tick)
    }

    /// `n` ticks were taken at once.
    pub(super) fn skip(&mut self, n: u64) {
        self.tick += n;
    }

    /// The `i`-th tick after `start` (no overflow however long the run).
    fn at(&self, start: Instant, period: Duration, i: u64) -> Instant {
        start + self.offset + Duration::from_secs_f64(period.as_secs_f64() * i as f64)
    }

    /// Waits for the next tick and returns when it was due (`None` once ticks reach `deadline`);
    /// in a closed loop, the time now.
    pub(super) async fn next(&mut self, start: Instant, deadline: Instant) -> Option<Instant> {
        let Some(period) = self.period else { return Some(Instant::now()) };
        let due = self.at(start, period, self.tick);
        if due >= deadline {
            return None;
        }
        self.tick += 1;
        runtime::sleep_until(due).await;
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_fixed_from_the_start_and_stop_at_the_deadline() {
        let s = Schedule { period: Some(Duration::from_millis(10)), offset: Duration::from_millis(3), tick: 0 };
        let t0 = Instant::now();
        assert_eq!(s.at(t0, Duration::from_millis(10), 0), t0 + Duration::from_millis(3));
        assert_eq!(s.at(t0, Duration::from_millis(10), 1_000_000), t0 + Duration::from_millis(10_000_003));
    }

    #[test]
    fn ticks_due_before_a_time_are_counted_exactly() {
        let t0 = Instant::now();
        for (period_ns, offset_ns, tick) in [(10_000_000u64, 3_000_000u64, 0u64), (333, 17, 5), (7, 0, 1000), (1, 0, 0)]
        {
            let mut s = Schedule {
                period: Some(Duration::from_nanos(period_ns)),
                offset: Duration::from_nanos(offset_ns),
                tick: 0,
            };
            s.skip(tick);
            for t_ns in [0u64, offset_ns, offset_ns + 1, 5_000, 123_457, 2_999_999, 3_000_000, 3_000_001] {
                let t = t0 + Duration::from_nanos(t_ns);
                let mut brute = 0;
                while s.at(t0, Duration::from_nanos(period_ns), tick + brute) < t {
                    brute += 1;
                }
                assert_eq!(s.due_before(t0, t), brute, "period {period_ns} offset {offset_ns} tick {tick} t {t_ns}");
            }
        }
    }
}
