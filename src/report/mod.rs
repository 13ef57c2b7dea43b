//! Neutral pieces of reports, for every tool: latency percentiles of a histogram (as text units
//! and as JSON), HdrHistogram interval logs (written during a run, read and merged after), and SVG
//! plots. Takes histograms and numbers; never imports a tool, and knows nothing of sockets — each
//! tool builds its own report from these (`load::summary`, the echo service's counters).

mod hdr;
mod svg;

pub use hdr::{
    append_run_record, merge_intervals, read_interval_log, with_interval_log, IntervalLog, LogSummary, MergedInterval,
};
pub use hdrhistogram::Histogram as HdrHistogram;
pub use svg::{line_svg, percentile_svg};

use serde_json::json;

/// Highest latency the histograms track (one minute, in nanoseconds).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Latency percentiles reported everywhere, in this order.
pub const PERCENTILES: &[(f64, &str)] =
    &[(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9"), (99.99, "p99.99")];

/// Nanoseconds as microseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Nanoseconds as milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A latency histogram (nanoseconds) as JSON: the percentiles in microseconds, max, mean, samples.
pub fn percentiles_json(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for &(q, name) in PERCENTILES {
        m.insert(format!("{name}_us"), json!(us(h.value_at_percentile(q))));
    }
    m.insert("max_us".into(), json!(us(h.max())));
    m.insert("mean_us".into(), json!(h.mean() / 1000.0));
    m.insert("samples".into(), json!(h.len()));
    serde_json::Value::Object(m)
}
