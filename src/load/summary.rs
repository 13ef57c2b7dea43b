//! What the load generator says about a run: the progress line, the final table, `--json`, its
//! own verdict on whether it, rather than the server, was the limit, and why nothing came back
//! when nothing did. Built from `report`'s neutral pieces (percentiles of a histogram, units).

use serde_json::json;

use super::{Interval, LoadConfig, LoadResult, Mode};
use crate::report::{ms, percentiles_json, us, PERCENTILES};

/// One line a second while the run goes: connections up, rate, throughput, p50/p99, errors.
pub fn progress_line(at: std::time::Duration, length: std::time::Duration, iv: &Interval) -> String {
    let secs = length.as_secs_f64().max(1e-3);
    format!(
        "[{:>5.1}s] {} conns up  {:.0} replies/s  {:.2} MB/s  p50 {:.1} µs  p99 {:.1} µs  errors {}",
        at.as_secs_f64(),
        iv.connections,
        iv.replies as f64 / secs,
        iv.bytes as f64 / secs / 1e6,
        us(iv.latency.value_at_quantile(0.5)),
        us(iv.latency.value_at_quantile(0.99)),
        iv.errors
    )
}

/// What limited the run, in plain words: requested against achieved, and the generator's own CPU
/// and schedule lag.
pub fn limits(cfg: &LoadConfig, r: &LoadResult) -> Vec<String> {
    let mut out = Vec::new();
    if r.connected < cfg.own_connections() as u64 && cfg.mode != Mode::Connect {
        out.push(format!(
            "only {} of {} connections came up ({} connect errors)",
            r.connected,
            cfg.own_connections(),
            r.errors.connect
        ));
    }
    if let Some(late) = r.start_late.filter(|l| *l > std::time::Duration::from_millis(100)) {
        out.push(format!(
            "traffic started {:.2} s after --start-at (the connections took that long, or the process started late): \
             this segment is that much behind the others",
            late.as_secs_f64()
        ));
    }
    if r.held > 0 {
        out.push(format!(
            "{} requests waited for --max-inflight ({} per connection): replies came slower than the rate; \
             the wait is in the corrected latency",
            r.held, cfg.max_inflight
        ));
    }
    if r.unsent > 0 {
        out.push(format!(
            "{} requests fell due in the measured window and never went (recorded with their wait, as lower bounds)",
            r.unsent
        ));
    }
    if r.warmup_dropped > 0 {
        out.push(format!(
            "{} requests of the warm-up had not gone when the window opened (the generator or --max-inflight \
             fell behind): dropped then, so that the window measures its own",
            r.warmup_dropped
        ));
    }
    let busiest = r.core_cpu.iter().zip(&r.core_wall).map(|(c, w)| c / w.max(1e-9)).fold(0.0, f64::max);
    let lag_p99 = r.schedule_lag.value_at_quantile(0.99);
    if let Some(want) = cfg.own_rate() {
        let got = match cfg.mode {
            Mode::Stream => r.send_rate(),
            Mode::Connect => r.measured as f64 / r.elapsed.as_secs_f64().max(1e-9),
            _ => r.rate(),
        };
        if got < want * 0.95 {
            let who = if busiest > 0.9 || lag_p99 > 10_000_000 {
                "the generator was the limit (a core at or near 100% CPU, or sends late on their schedule): \
                 add cores (--cores) or lower the rate"
            } else {
                "the server could not keep up (the generator had CPU to spare and kept its schedule)"
            };
            out.push(format!("achieved {got:.0} of {want:.0} requested per second: {who}"));
        }
    } else if busiest > 0.9 {
        out.push(format!(
            "a generator core was at {:.0}% CPU: in a closed loop that means the generator, not the server, \
             may be the limit; add cores (--cores) to check",
            100.0 * busiest
        ));
    }
    if lag_p99 > 1_000_000 {
        out.push(format!("sends ran late on their schedule: p99 {:.2} ms behind", ms(lag_p99)));
    }
    out
}

/// Whether a value of the latency histogram is only a lower bound: it is at or above the
/// smallest wait recorded for a request without a counted answer.
fn lower_bound(r: &LoadResult, v: u64) -> bool {
    r.censored_min.is_some_and(|m| v >= r.latency.lowest_equivalent(m))
}

/// The share of a requested figure reached, as "N% of M requested".
fn share(got: f64, want: f64) -> String {
    format!("{:.0}% of {want:.0} requested", 100.0 * got / want.max(1e-9))
}

/// The load result as the lines a person reads.
pub fn load_text(cfg: &LoadConfig, r: &LoadResult) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    // Percentiles and max; in the corrected latency (`bounds`), one that includes requests without
    // an answer is a lower bound, marked "≥".
    let pct = |h: &hdrhistogram::Histogram<u64>, bounds: bool| {
        let show =
            |name: &str, x: u64| format!("{name} {}{:.1}", if bounds && lower_bound(r, x) { "≥" } else { "" }, us(x));
        let mut v: Vec<String> = PERCENTILES.iter().map(|&(q, name)| show(name, h.value_at_percentile(q))).collect();
        v.push(show("max", h.max()));
        v.join("  ")
    };
    let size =
        if cfg.size.0 == cfg.size.1 { format!("{} B", cfg.size.0) } else { format!("{}-{} B", cfg.size.0, cfg.size.1) };
    let loop_kind = match cfg.own_rate() {
        Some(rate) => format!("open loop at {rate:.0}/s (max {} in flight per connection)", cfg.max_inflight),
        None => format!("closed loop, pipeline {}", cfg.pipeline),
    };
    let mut out = format!(
        "ringnode load: {} mode against {}, {} connections{}, {size}, {loop_kind}, {secs:.2} s measured{}, {} core(s)\n",
        format!("{:?}", cfg.mode).to_lowercase(),
        cfg.target,
        cfg.own_connections(),
        if cfg.segment.count > 1 {
            format!(" (segment {} of a {}-connection test)", cfg.segment, cfg.connections)
        } else {
            String::new()
        },
        if cfg.warmup.is_zero() { String::new() } else { format!(" after {:.1} s warm-up", cfg.warmup.as_secs_f64()) },
        r.core_cpu.len()
    );
    if cfg.mode == Mode::Connect {
        out += &format!(
            "  connections  {} opened, {:.0}/s\n  connect µs   {}\n",
            r.connected,
            r.measured as f64 / secs,
            pct(&r.connect_latency, false)
        );
        if let Some(at) = r.first_failure {
            out += &format!(
                "  failures     began {:.2} s in, after {} connections opened\n",
                at.as_secs_f64(),
                r.opened_before_failure
            );
        }
    } else {
        out += &format!(
            "  connections  {} up ({})\n",
            r.connected.min(cfg.own_connections() as u64),
            share(r.connected.min(cfg.own_connections() as u64) as f64, cfg.own_connections() as f64)
        );
        if r.reconnects > 0 {
            out += &format!(
                "  reconnects   {} (the server closed cleanly between requests; {:.1} ms reconnecting in all)\n",
                r.reconnects,
                r.reconnect_time.as_secs_f64() * 1e3
            );
        }
        if cfg.mode == Mode::Stream {
            out += &format!(
                "  messages     {} sent ({} in the measured window: {:.0}/s)\n",
                r.sent,
                r.measured_sent,
                r.measured_sent as f64 / secs
            );
        } else {
            out += &format!(
                "  messages     {} sent, {} received ({} in the measured window: {:.0}/s{})\n",
                r.sent,
                r.received,
                r.measured,
                r.rate(),
                cfg.own_rate().map_or(String::new(), |want| format!(", {}", share(r.rate(), want)))
            );
            if r.unsent > 0 || r.cut > 0 {
                out +=
                    &format!("  not sent     {} fell due and never went, {} cut by a failed send\n", r.unsent, r.cut);
            }
        }
        out += &format!(
            "  throughput   {:.2} MB/s sent, {:.2} MB/s received\n",
            r.measured_bytes_sent as f64 / secs / 1e6,
            r.measured_bytes_received as f64 / secs / 1e6
        );
        if cfg.mode != Mode::Stream {
            out += &format!("  latency µs   {}  (n={})\n", pct(&r.latency, true), r.latency.len());
            if r.censored_min.is_some() {
                out += "               (≥: includes requests timed out, unanswered at the end, or never sent, \
                        at the time they waited)\n";
            }
            if cfg.own_rate().is_some() {
                out += &format!(
                    "  uncorrected  {}  (from the actual send, hiding the wait)\n",
                    pct(&r.uncorrected, false)
                );
            }
        }
    }
    if !r.status.is_empty() {
        let codes: Vec<String> = r.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        out += &format!("  status       {}\n", codes.join("  "));
    }
    let e = &r.errors;
    out += &format!(
        "  errors       connect {} (refused {})  reset {}  closed early {}  timeout {}  mismatch {}  malformed {}\n",
        e.connect, e.refused, e.reset, e.closed, e.timeout, e.mismatch, e.malformed
    );
    let cpu: Vec<String> =
        r.core_cpu.iter().zip(&r.core_wall).map(|(c, w)| format!("{:.0}%", 100.0 * c / w.max(1e-9))).collect();
    out += &format!("  client cpu   {:.2} s ({} per core)", r.core_cpu.iter().sum::<f64>(), cpu.join(" "));
    if cfg.own_rate().is_some() {
        out += &format!(
            "; schedule lag p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            us(r.schedule_lag.value_at_quantile(0.5)),
            us(r.schedule_lag.value_at_quantile(0.99)),
            us(r.schedule_lag.max())
        );
    }
    out += "\n";
    for l in limits(cfg, r) {
        out += &format!("  note         {l}\n");
    }
    out
}

/// The load result as one JSON object.
pub fn load_json(cfg: &LoadConfig, r: &LoadResult) -> serde_json::Value {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    json!({
        "mode": format!("{:?}", cfg.mode).to_lowercase(),
        "target": cfg.target.to_string(),
        "segment": cfg.segment.to_string(),
        "connections_requested": cfg.own_connections(),
        "connections_whole_test": cfg.connections,
        "connections_up": r.connected,
        "size": cfg.size.1,
        "size_min": cfg.size.0,
        "pipeline": cfg.pipeline,
        "rate_requested": cfg.own_rate(),
        "rate_achieved": r.rate(),
        "elapsed_s": secs,
        "warmup_s": cfg.warmup.as_secs_f64(),
        "messages_sent": r.sent,
        "messages_received": r.received,
        "messages_measured": r.measured,
        "bytes_sent": r.bytes_sent,
        "bytes_received": r.bytes_received,
        "messages_per_s": r.rate(),
        "mb_per_s": r.measured_bytes_sent.max(r.measured_bytes_received) as f64 / secs / 1e6,
        "latency": percentiles_json(&r.latency),
        "latency_lower_bounds_from_us": r.censored_min.map(us),
        "unsent": r.unsent,
        "warmup_dropped": r.warmup_dropped,
        "cut": r.cut,
        "reconnects": r.reconnects,
        "sends": r.sends,
        "receive_completions": r.receives,
        "reconnect_s": r.reconnect_time.as_secs_f64(),
        "rate_share": cfg.own_rate().map(|want| r.rate() / want.max(1e-9)),
        "connections_share": r.connected.min(cfg.own_connections() as u64) as f64 / cfg.own_connections().max(1) as f64,
        "latency_uncorrected": percentiles_json(&r.uncorrected),
        "connect_latency": percentiles_json(&r.connect_latency),
        "schedule_lag": percentiles_json(&r.schedule_lag),
        "status": r.status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "first_failure_s": r.first_failure.map(|d| d.as_secs_f64()),
        "connect_phase_s": r.connect_phase.as_secs_f64(),
        "start_late_s": r.start_late.map(|d| d.as_secs_f64()),
        "errors": {
            "connect": r.errors.connect,
            "refused": r.errors.refused,
            "reset": r.errors.reset,
            "closed": r.errors.closed,
            "timeout": r.errors.timeout,
            "mismatch": r.errors.mismatch,
            "malformed": r.errors.malformed,
        },
        "client_cpu_s": r.core_cpu,
        "client_wall_s": r.core_wall,
        "limits": limits(cfg, r),
    })
}

/// Why a run that got nothing back failed, in one phrase; `None` when it did get something back
/// (and, with `--fail-fast`, no error stopped it).
pub fn verdict(cfg: &LoadConfig, result: &LoadResult) -> Option<String> {
    let failed_fast = cfg.fail_fast && result.errors.total() > 0;
    let nothing = match cfg.mode {
        Mode::Connect if cfg.payload.is_some() => result.received == 0,
        Mode::Connect => result.connected == 0,
        Mode::Stream => result.sent == 0,
        _ => result.received == 0,
    };
    if !nothing && !failed_fast {
        return None;
    }
    Some(if result.connected == 0 {
        if result.errors.refused > 0 {
            "no connection could be established: connection refused (is the server running on that port?)".to_string()
        } else {
            "no connection could be established".to_string()
        }
    } else if failed_fast {
        format!("stopped at the first error (--fail-fast): {} errors", result.errors.total())
    } else if result.errors.mismatch > 0 {
        let hint = if cfg.mode == Mode::Echo && matches!(cfg.reply, super::ReplyRule::Echo) {
            " (a server that does not echo needs --reply-bytes or --reply-delimiter)"
        } else {
            ""
        };
        format!(
            "no reply matched what was sent: {} mismatch(es), each closing its connection{hint}",
            result.errors.mismatch
        )
    } else if result.errors.malformed > 0 {
        format!("no reply could be read: {} malformed, each closing its connection", result.errors.malformed)
    } else if result.errors.reset > 0 {
        "no reply came back: the server reset the connections".to_string()
    } else if result.errors.timeout > 0 {
        format!(
            "no reply came back: {} request(s) still unanswered {} s after the end",
            result.errors.timeout,
            super::DRAIN_TIMEOUT.as_secs()
        )
    } else {
        "no reply came back".to_string()
    })
}

/// What a run writes of itself at the end of its interval log, for `ringnode report` to merge
/// segments by: which segment, its measured window on the log's clock, its counts.
pub fn run_record(cfg: &LoadConfig, r: &LoadResult) -> serde_json::Value {
    json!({
        "tool": "ringnode load",
        "mode": format!("{:?}", cfg.mode).to_lowercase(),
        "target": cfg.target.to_string(),
        "segment": cfg.segment.to_string(),
        "connections": cfg.own_connections(),
        "connections_whole_test": cfg.connections,
        "rate_requested": cfg.own_rate(),
        "window_start_s": r.window_start.as_secs_f64(),
        "window_s": r.elapsed.as_secs_f64(),
        "start_late_s": r.start_late.map(|d| d.as_secs_f64()),
        "messages_sent": r.sent,
        "messages_received": r.received,
        "messages_measured": r.measured,
        "samples": r.latency.len(),
        "unsent": r.unsent,
        "warmup_dropped": r.warmup_dropped,
        "errors": r.errors.total(),
    })
}

/// Thresholds checked, as one line of the table: `slo  p99<10ms: 2.31 ms met; …`.
pub fn slo_line(verdicts: &[super::slo::Verdict]) -> String {
    let parts: Vec<String> = verdicts
        .iter()
        .map(|v| {
            format!(
                "{}: {} {}{}",
                v.limit,
                v.measured,
                if v.met { "met" } else { "CROSSED" },
                v.why.as_deref().map_or(String::new(), |w| format!(" ({w})"))
            )
        })
        .collect();
    format!("  slo          {}", parts.join("; "))
}

/// Thresholds checked, as JSON.
pub fn slo_json(verdicts: &[super::slo::Verdict]) -> serde_json::Value {
    verdicts
        .iter()
        .map(|v| json!({"limit": v.limit, "measured": v.measured, "value": v.value, "met": v.met, "why": v.why}))
        .collect()
}

/// The thresholds crossed, for the one-line error (`None`: all met).
pub fn slo_crossed(verdicts: &[super::slo::Verdict]) -> Option<String> {
    let crossed: Vec<String> =
        verdicts.iter().filter(|v| !v.met).map(|v| format!("{} (measured {})", v.limit, v.measured)).collect();
    (!crossed.is_empty()).then(|| crossed.join(", "))
}
