//! Thresholds on a run (`--slo 'p99<10ms,errors<0.1%'`) and the search for the highest open-loop
//! rate that meets them (`--find-max-rate`). Both are pure: a parsed list of limits checked
//! against a [`LoadResult`], and a bisection that is told how each step went.

use super::LoadResult;

/// What a limit bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency percentile (corrected for coordinated omission), in nanoseconds.
    Percentile(f64),
    /// The largest latency, in nanoseconds.
    Max,
    /// The mean latency, in nanoseconds.
    Mean,
    /// Errors as a share (0–1) of the requests sent or due: every error count, requests that
    /// fell due and never went, and HTTP replies outside 2xx/3xx.
    ErrorShare,
    /// The same errors, counted.
    ErrorCount,
}

/// The thresholds of one `--slo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo(pub Vec<Limit>);

/// One threshold: the metric must stay below `bound` (or at most, with `<=`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// What it bounds.
    pub metric: Metric,
    /// The bound, in the metric's unit.
    pub bound: f64,
    /// `<=` rather than `<`.
    pub inclusive: bool,
    /// As written.
    pub text: String,
}

/// A limit checked against a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The limit, as written.
    pub limit: String,
    /// What the run measured, for a person (`2.31 ms`, `0.02%`).
    pub measured: String,
    /// The value in the metric's unit (`None`: nothing to measure, such as no samples).
    pub value: Option<f64>,
    /// Whether the run met it.
    pub met: bool,
    /// Why it failed when the value alone does not say (no samples; a lower bound).
    pub why: Option<String>,
}

/// Parses `p99<10ms,errors<0.1%`: comma-separated `NAME<VALUE` or `NAME<=VALUE`, where NAME is
/// a percentile (`p50`, `p99.9`, any `pN` with 0 < N ≤ 100), `max` or `mean` with a duration
/// (`500us`, `10ms`, `1s`), or `errors` with a share (`0.1%`) or a count (`0`).
pub fn parse(s: &str) -> Result<Vec<Limit>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| format!("'{part}': {why}");
        let (name, inclusive, value) = if let Some((n, v)) = part.split_once("<=") {
            (n, true, v)
        } else if let Some((n, v)) = part.split_once('<') {
            (n, false, v)
        } else {
            return Err(bad("expected NAME<VALUE, such as p99<10ms or errors<0.1%"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        let metric = match name.as_str() {
            "max" => Metric::Max,
            "mean" => Metric::Mean,
            "errors" if value.ends_with('%') => Metric::ErrorShare,
            "errors" => Metric::ErrorCount,
            p => match p.strip_prefix('p').and_then(|q| q.parse::<f64>().ok()) {
                Some(q) if q > 0.0 && q <= 100.0 => Metric::Percentile(q),
                _ => return Err(bad("the name is a percentile (p50, p99, p99.9), max, mean or errors")),
            },
        };
        let bound = match metric {
            Metric::ErrorShare => {
                let v: f64 = value.trim_end_matches('%').trim().parse().map_err(|_| bad("not a share such as 0.1%"))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(bad("a share between 0% and 100%"));
                }
                v / 100.0
            }
            Metric::ErrorCount => value.parse::<u64>().map_err(|_| bad("not a count or a share such as 0.1%"))? as f64,
            _ => latency_ns(value).ok_or_else(|| bad("not a latency with its unit, such as 500us, 10ms or 1s"))?,
        };
        out.push(Limit { metric, bound, inclusive, text: part.to_string() });
    }
    if out.is_empty() {
        return Err(format!("'{s}': no thresholds, such as p99<10ms,errors<0.1%"));
    }
    Ok(out)
}

/// `10ms` as nanoseconds; the unit is required.
fn latency_ns(v: &str) -> Option<f64> {
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n * scale)
}

/// Errors of a run as [`Metric::ErrorShare`] counts them: (errors, what they are a share of).
/// Requests sent or due, or in connect mode (nothing sent, maybe) connections attempted. Both
/// counts cover the whole run, warm-up included (errors are not split by window).
pub fn errors_of(r: &LoadResult) -> (u64, u64) {
    let bad_status: u64 = r.status.iter().filter(|(c, _)| !(200..400).contains(*c)).map(|(_, n)| n).sum();
    let bad = r.errors.total() + r.unsent + bad_status;
    let tried = (r.sent + r.unsent).max(r.connected + r.errors.connect);
    (bad, tried)
}

/// Checks every limit against a run.
pub fn check(limits: &[Limit], r: &LoadResult) -> Vec<Verdict> {
    limits.iter().map(|l| check_one(l, r)).collect()
}

fn check_one(l: &Limit, r: &LoadResult) -> Verdict {
    let below = |v: f64| if l.inclusive { v <= l.bound } else { v < l.bound };
    let fmt_ns = |v: f64| {
        if v >= 1e9 {
            format!("{:.2} s", v / 1e9)
        } else if v >= 1e6 {
            format!("{:.2} ms", v / 1e6)
        } else {
            format!("{:.1} µs", v / 1e3)
        }
    };
    let h = &r.latency;
    // A value at or above the smallest wait of a request without an answer (timed out,
    // unanswered, never sent) is a lower bound: those waits are in the histogram, and their true
    // latency is longer. Moving all `k` of them to the top moves a percentile's rank by at most
    // `k`, so the true value is at most the value `k` samples further up: the limit is met only if
    // that upper bound is below it.
    let latency = |v: u64, q: Option<f64>| {
        let lower = r.censored_min.is_some_and(|m| v >= m);
        let value = v as f64;
        let upper = match (lower, q) {
            (false, _) => Some(value),
            (true, Some(q)) => {
                let up = q + 100.0 * r.censored as f64 / h.len().max(1) as f64;
                (up < 100.0).then(|| h.value_at_percentile(up) as f64)
            }
            (true, None) => None,
        };
        let met = upper.is_some_and(below);
        let measured = match (lower, upper) {
            (false, _) => fmt_ns(value),
            (true, Some(u)) => format!("≥{}, ≤{}", fmt_ns(value), fmt_ns(u)),
            (true, None) => format!("≥{}", fmt_ns(value)),
        };
        Verdict {
            limit: l.text.clone(),
            measured,
            value: Some(value),
            met,
            why: (lower && !met && below(value))
                .then(|| "a lower bound (requests unanswered or never sent are in it)".to_string()),
        }
    };
    match l.metric {
        Metric::Percentile(_) | Metric::Max | Metric::Mean if h.is_empty() => Verdict {
            limit: l.text.clone(),
            measured: "no samples".into(),
            value: None,
            met: false,
            why: Some("no request was measured".into()),
        },
        Metric::Percentile(q) => latency(h.value_at_percentile(q), Some(q)),
        Metric::Max => latency(h.max(), None),
        Metric::Mean => {
            let mean = h.mean();
            let lower = r.censored > 0;
            Verdict {
                limit: l.text.clone(),
                measured: format!("{}{}", if lower { "≥" } else { "" }, fmt_ns(mean)),
                value: Some(mean),
                met: below(mean) && !lower,
                why: (lower && below(mean))
                    .then(|| "a lower bound (requests unanswered or never sent are in it)".to_string()),
            }
        }
        Metric::ErrorShare => {
            let (bad, all) = errors_of(r);
            let share = bad as f64 / all.max(1) as f64;
            Verdict {
                limit: l.text.clone(),
                measured: format!("{:.3}% ({bad} of {all})", share * 100.0),
                value: Some(share),
                met: below(share),
                why: None,
            }
        }
        Metric::ErrorCount => {
            let (bad, _) = errors_of(r);
            Verdict {
                limit: l.text.clone(),
                measured: bad.to_string(),
                value: Some(bad as f64),
                met: below(bad as f64),
                why: None,
            }
        }
    }
}

/// The search for the highest rate that meets the thresholds: double from the first rate while
/// steps pass (halve while they fail) until one passing and one failing rate are known, then
/// bisect until they are within `precision` of each other (or `max_steps` ran).
#[derive(Debug, Clone)]
pub struct RateSearch {
    next: f64,
    /// The highest rate that passed.
    pub passed: Option<f64>,
    /// The lowest rate that failed.
    pub failed: Option<f64>,
    steps: usize,
    max_steps: usize,
    precision: f64,
}

/// The lowest rate the search tries (per second).
pub const MIN_RATE: f64 = 1.0;
/// The highest.
pub const MAX_RATE: f64 = 1e9;

impl RateSearch {
    /// A search from `first` per second; `precision` 0.05 stops when the failing rate is within
    /// 5% of the passing one.
    pub fn new(first: f64, precision: f64, max_steps: usize) -> RateSearch {
        RateSearch { next: first.clamp(MIN_RATE, MAX_RATE), passed: None, failed: None, steps: 0, max_steps, precision }
    }

    /// The rate of the next step, or `None` when the search is done.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps >= self.max_steps {
            return None;
        }
        if let (Some(p), Some(f)) = (self.passed, self.failed) {
            // Within the precision, or no whole rate left between them.
            if f <= p * (1.0 + self.precision) || self.next <= p || self.next >= f {
                return None;
            }
        }
        if self.passed.is_none() && self.failed.is_some_and(|f| f <= MIN_RATE) {
            return None;
        }
        if self.failed.is_none() && self.passed.is_some_and(|p| p >= MAX_RATE) {
            return None;
        }
        Some(self.next)
    }

    /// How the step at `rate` went.
    pub fn record(&mut self, rate: f64, met: bool) {
        self.steps += 1;
        if met {
            self.passed = Some(self.passed.map_or(rate, |p| p.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        self.next = match (self.passed, self.failed) {
            (Some(p), Some(f)) => (p + f) / 2.0,
            (Some(p), None) => (p * 2.0).min(MAX_RATE),
            (None, Some(f)) => (f / 2.0).max(MIN_RATE),
            (None, None) => self.next,
        }
        .round()
        .max(MIN_RATE);
    }

    /// Steps run so far.
    pub fn steps(&self) -> usize {
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_with_their_units_and_bad_ones_say_why() {
        let l = parse("p99<10ms, p99.9<=1s ,errors<0.1%,max<500us,errors<1,mean<2ms").unwrap();
        assert_eq!(l[0].metric, Metric::Percentile(99.0));
        assert_eq!(l[0].bound, 10e6);
        assert!(l[1].inclusive && l[1].bound == 1e9);
        assert_eq!((l[2].metric, l[2].bound), (Metric::ErrorShare, 0.001));
        assert_eq!((l[3].metric, l[3].bound), (Metric::Max, 500e3));
        assert_eq!((l[4].metric, l[4].bound), (Metric::ErrorCount, 1.0));
        for bad in ["p99>10ms", "p99<10", "p0<1ms", "p101<1ms", "errors<x%", "latency<1ms", "", "errors<200%"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    fn result(latencies_us: &[u64]) -> LoadResult {
        let mut r = LoadResult::new();
        for &v in latencies_us {
            r.latency.record(v * 1000).unwrap();
        }
        r.sent = latencies_us.len() as u64;
        r
    }

    #[test]
    fn a_run_meets_or_crosses_each_limit_and_a_lower_bound_meets_only_with_room_above_it() {
        let mut r = result(&[100; 1000]);
        let limits = parse("p99<1ms,errors<1%").unwrap();
        assert!(check(&limits, &r).iter().all(|v| v.met));
        r.errors.timeout = 20;
        let v = check(&limits, &r);
        assert!(v[0].met && !v[1].met, "{v:?}");
        // The p99 includes requests still unanswered (5 of 1,000, waits of 50 µs): only a lower
        // bound, but 5 samples up is still 100 µs, so the limit is met.
        r.censored_min = Some(50_000);
        r.censored = 5;
        let v = check(&limits, &r);
        assert!(v[0].met && v[0].measured.starts_with('≥'), "{v:?}");
        // Twenty of 1,000 unanswered after 50 µs: the p99 is still 100 µs, but moving those
        // twenty up could make it anything: not met.
        r.censored = 20;
        let v = check(&limits, &r);
        assert!(!v[0].met && v[0].why.is_some(), "{v:?}");
        assert!(!check(&limits, &result(&[]))[0].met, "no samples never meets a latency limit");
    }

    #[test]
    fn the_search_doubles_then_bisects_to_the_capacity() {
        // A server that holds up to 37,000/s.
        let mut s = RateSearch::new(1000.0, 0.05, 30);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            tried.push(rate);
            s.record(rate, rate <= 37_000.0);
        }
        let (p, f) = (s.passed.unwrap(), s.failed.unwrap());
        assert!(p <= 37_000.0 && f > 37_000.0 && f <= p * 1.05, "{p} {f} {tried:?}");
        assert_eq!(&tried[..6], &[1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0]);
        // Nothing passes: halves down to the floor and stops.
        let mut s = RateSearch::new(100.0, 0.05, 30);
        while let Some(rate) = s.next_rate() {
            s.record(rate, false);
        }
        assert_eq!((s.passed, s.failed), (None, Some(MIN_RATE)));
        // At low rates it stops when no whole rate is left between pass and fail.
        let mut s = RateSearch::new(10.0, 0.05, 30);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            tried.push(rate);
            s.record(rate, rate <= 15.0);
        }
        assert_eq!((s.passed, s.failed), (Some(15.0), Some(16.0)), "{tried:?}");
        assert!(tried.len() <= 6, "{tried:?}");
        // The step budget bounds it.
        let mut s = RateSearch::new(100.0, 0.0, 4);
        while let Some(rate) = s.next_rate() {
            s.record(rate, true);
        }
        assert_eq!(s.steps(), 4);
    }
}
