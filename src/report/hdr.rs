//! HdrHistogram interval logs: written one interval a second during a run (values in
//! nanoseconds, the max column in milliseconds), read back and merged by `ringnode report`.
//! Merging adds histograms; percentiles are never averaged.

use std::io;
use std::path::Path;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

pub use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
pub use hdrhistogram::serialization::V2DeflateSerializer;

/// One interval log, read back.
#[derive(Debug, Clone)]
pub struct IntervalLog {
    /// Where it came from.
    pub name: String,
    /// Its intervals, added together.
    pub total: Histogram<u64>,
    /// How many intervals it held.
    pub intervals: usize,
}

/// Percentiles of a merged log, for the report.
#[derive(Debug, Clone)]
pub struct LogSummary {
    /// Samples.
    pub samples: u64,
    /// `(percentile, nanoseconds)`.
    pub percentiles: Vec<(f64, u64)>,
    /// Largest value.
    pub max: u64,
}

/// Reads an interval log and adds its intervals into one histogram.
pub fn read_interval_log(path: &Path) -> io::Result<IntervalLog> {
    let bytes = std::fs::read(path)?;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let mut total = Histogram::<u64>::new_with_bounds(1, crate::load::MAX_LATENCY_NS, 3).expect("valid bounds");
    let mut intervals = 0;
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| bad(format!("not an HdrHistogram interval log ({e:?})")))?;
        if let LogEntry::Interval(iv) = entry {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(iv.encoded_histogram())
                .map_err(|e| bad(format!("interval {intervals}: bad base64 ({e})")))?;
            let h: Histogram<u64> = de
                .deserialize(&mut io::Cursor::new(raw))
                .map_err(|e| bad(format!("interval {intervals}: bad histogram ({e:?})")))?;
            total.add(&h).map_err(|e| bad(format!("interval {intervals}: {e:?}")))?;
            intervals += 1;
        }
    }
    if intervals == 0 {
        return Err(bad("no intervals in the log".into()));
    }
    Ok(IntervalLog { name: path.display().to_string(), total, intervals })
}

impl LogSummary {
    /// The usual percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> LogSummary {
        LogSummary {
            samples: h.len(),
            percentiles: super::PERCENTILES.iter().map(|&(q, _)| (q, h.value_at_percentile(q))).collect(),
            max: h.max(),
        }
    }
}
