//! HdrHistogram interval logs: written one interval a second during a run (values in
//! nanoseconds, the max column in milliseconds), read back and merged by `ringnode report`.
//! Merging adds histograms; percentiles are never averaged.

use std::io;
use std::path::Path;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

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
    let mut total = Histogram::<u64>::new_with_bounds(1, super::MAX_LATENCY_NS, 3).expect("valid bounds");
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

/// Runs `f` with a writer of an HdrHistogram interval log at `path` (`None`: a writer that writes
/// nothing): each call writes one interval — a histogram in nanoseconds, its start after the run
/// began, and its length. Returns what `f` returned and the first write error, if any (the run goes
/// on without the log rather than stop for it). `Err` if the file cannot be created.
pub fn with_interval_log<R>(
    path: Option<&Path>,
    comment: &str,
    f: impl FnOnce(&mut dyn FnMut(&Histogram<u64>, std::time::Duration, std::time::Duration)) -> R,
) -> io::Result<(R, Option<String>)> {
    let Some(path) = path else {
        return Ok((f(&mut |_, _, _| {}), None));
    };
    let mut file = std::fs::File::create(path)?;
    let mut serializer = V2DeflateSerializer::new();
    let now = std::time::SystemTime::now();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .with_start_time(now)
        .with_base_time(now)
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut file, &mut serializer)
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    let mut error = None;
    let r = f(&mut |h, start, length| {
        if let Err(e) = log.write_histogram(h, start, length, None) {
            error.get_or_insert(format!("{e:?}"));
        }
    });
    Ok((r, error))
}
