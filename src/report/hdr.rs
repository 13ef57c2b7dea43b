//! HdrHistogram interval logs: written one interval a second during a run (values in
//! nanoseconds, the max column in milliseconds), read back and merged by `ringnode report`.
//! Merging adds histograms; percentiles are never averaged.

use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogHistogram;

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
    /// The zero of its interval times (its `BaseTime`, else its `StartTime`), if it says.
    pub base: Option<SystemTime>,
    /// Each interval: its start after `base`, its length, its histogram.
    pub each: Vec<(Duration, Duration, Histogram<u64>)>,
    /// What the run that wrote it said of itself at the end ([`append_run_record`]), if it did.
    pub record: Option<serde_json::Value>,
}

/// The comment line that carries a run's own record at the end of its interval log.
const RECORD_TAG: &str = "#[ringnode-run: ";

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
    let mut each = Vec::new();
    let (mut start, mut base) = (None, None);
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| bad(format!("not an HdrHistogram interval log ({e:?})")))?;
        match entry {
            LogEntry::StartTime(t) => {
                start = Some(SystemTime::UNIX_EPOCH.checked_add(t).ok_or_else(|| bad("StartTime out of range".into()))?)
            }
            LogEntry::BaseTime(t) => {
                base = Some(SystemTime::UNIX_EPOCH.checked_add(t).ok_or_else(|| bad("BaseTime out of range".into()))?)
            }
            LogEntry::Interval(iv) => {
                let h = decode(&mut de, &iv).map_err(|e| bad(format!("interval {}: {e}", each.len())))?;
                total.add(&h).map_err(|e| bad(format!("interval {}: {e:?}", each.len())))?;
                each.push((iv.start_timestamp(), iv.duration(), h));
            }
        }
    }
    if each.is_empty() {
        return Err(bad("no intervals in the log".into()));
    }
    let text = String::from_utf8_lossy(&bytes);
    let record = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RECORD_TAG)?.strip_suffix(']'))
        .map(|j| serde_json::from_str(j).map_err(|e| bad(format!("the run's record is not JSON ({e})"))))
        .transpose()?;
    Ok(IntervalLog {
        name: path.display().to_string(),
        total,
        intervals: each.len(),
        base: base.or(start),
        each,
        record,
    })
}

fn decode(de: &mut Deserializer, iv: &IntervalLogHistogram<'_>) -> Result<Histogram<u64>, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(iv.encoded_histogram())
        .map_err(|e| format!("bad base64 ({e})"))?;
    de.deserialize(&mut io::Cursor::new(raw)).map_err(|e| format!("bad histogram ({e:?})"))
}

/// Appends a run's record of itself (one JSON object) to its interval log, as a comment line that
/// other readers of the format skip.
pub fn append_run_record(path: &Path, record: &serde_json::Value) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    writeln!(f, "{RECORD_TAG}{record}]")
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
/// nothing): each call writes one interval — a histogram in nanoseconds, its start after `origin`
/// (the log's start and base time), and its length. Returns what `f` returned and the first write
/// error, if any (the run goes on without the log rather than stop for it). `Err` if the file
/// cannot be created.
pub fn with_interval_log<R>(
    path: Option<&Path>,
    comment: &str,
    origin: SystemTime,
    f: impl FnOnce(&mut dyn FnMut(&Histogram<u64>, Duration, Duration)) -> R,
) -> io::Result<(R, Option<String>)> {
    let Some(path) = path else {
        return Ok((f(&mut |_, _, _| {}), None));
    };
    let mut file = std::fs::File::create(path)?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .with_start_time(origin)
        .with_base_time(origin)
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

/// One second of several logs added together.
#[derive(Debug, Clone)]
pub struct MergedInterval {
    /// Its start after the earliest log's zero.
    pub at: Duration,
    /// The longest of the intervals added into it.
    pub length: Duration,
    /// How many logs had an interval here.
    pub logs: usize,
    /// Their histograms, added.
    pub latency: Histogram<u64>,
}

/// Adds the logs' intervals that fall on the same second of wall-clock time (each log's interval
/// times are after its own zero, so logs of runs started together with `--start-at` line up
/// exactly; others go to the nearest second). Every interval lands in exactly one merged one, so
/// the merged counts are the sum of the logs'.
pub fn merge_intervals(logs: &[IntervalLog]) -> Result<Vec<MergedInterval>, String> {
    let zero = |l: &IntervalLog| l.base.unwrap_or(SystemTime::UNIX_EPOCH);
    let origin = logs.iter().map(zero).min().unwrap_or(SystemTime::UNIX_EPOCH);
    let mut merged: std::collections::BTreeMap<u64, MergedInterval> = std::collections::BTreeMap::new();
    for l in logs {
        let shift = zero(l).duration_since(origin).unwrap_or_default();
        for (start, length, h) in &l.each {
            let at =
                shift.checked_add(*start).ok_or_else(|| format!("{}: an interval's time is out of range", l.name))?;
            let second = (at.as_secs_f64() + 0.5) as u64;
            let m = merged.entry(second).or_insert_with(|| MergedInterval {
                at: Duration::from_secs(second),
                length: Duration::ZERO,
                logs: 0,
                latency: Histogram::new_from(h),
            });
            m.length = m.length.max(*length);
            m.logs += 1;
            m.latency.add(h).map_err(|e| format!("{}: cannot merge an interval ({e:?})", l.name))?;
        }
    }
    Ok(merged.into_values().collect())
}
