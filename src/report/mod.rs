//! What a person reads, and what a machine reads (`--json`): load results, server counters, the
//! kernel probe. Knows nothing of sockets.

mod hdr;
mod load;
mod svg;

pub use hdr::{read_interval_log, IntervalLog, IntervalLogWriterBuilder, LogSummary, V2DeflateSerializer};
pub use load::{limits, load_json, load_text, progress_line, PERCENTILES};
pub use svg::percentile_svg;

use serde_json::json;

use crate::echo::EchoStats;
use crate::ring::Probe;

/// The echo server's counters: one line, plus one for bad frames when there were any.
pub fn echo_text(s: &EchoStats) -> String {
    let mut out = format!(
        "ringnode echo: stopped: {} connections, {} messages / {} bytes in, {} messages / {} bytes out, {} errors",
        s.connections, s.messages_in, s.bytes_in, s.messages_out, s.bytes_out, s.errors
    );
    let mut all = crate::buf::PoolStats::default();
    s.pools.iter().for_each(|p| all += *p);
    out += &format!(
        "\nringnode echo: receive pools: {} buffers leased, {} recycled, {} times empty (ENOBUFS, re-armed; {} receives into heap buffers \
         at a pool's ceiling); {} receives stopped for a reader that fell behind",
        all.leases, all.recycled, all.enobufs, all.heap_fallbacks, s.receives_capped
    );
    for g in crate::buf::Group::ALL {
        let p = &s.pools[g as usize];
        if p.buffers > 0 {
            out += &format!(
                "; {} ({} B buffers): {} leased, {} buffers (grown {} times)",
                format!("{g:?}").to_lowercase(),
                g.default_config().buf_size,
                p.leases,
                p.buffers,
                p.grown
            );
        }
    }
    if s.decode.frames > 0 {
        let d = &s.decode;
        let pct = 100.0 * d.copied_bytes as f64 / d.payload_bytes.max(1) as f64;
        out += &format!(
            "\nringnode echo: frames: {} decoded, {} payload bytes, {} copied in user space ({pct:.3}%, {} frames spanned receive buffers); \
             {} bytes compacted out of receive buffers to bound what a connection holds",
            d.frames, d.payload_bytes, d.copied_bytes, d.spanning_frames, d.compacted_bytes
        );
        let t = &s.send;
        out += &format!(
            "\nringnode echo: sends: {} vectored, {} zero-copy ({} bytes; kernel copied {} of them, {} went without a copy; \
             {} connections stopped asking after repeated copies); {} bytes of small frames coalesced (copied); \
             {} bytes copied rather than hold receive buffers for a slow reader",
            t.writevs, t.zc_sends, t.zc_bytes, t.zc_copied, t.zc_zero_copy, t.zc_given_up, t.coalesced_bytes, t.unpinned_bytes
        );
    }
    if s.truncated > 0 {
        out += &format!("\nringnode echo: connections whose peer ended the stream inside a frame: {}", s.truncated);
    }
    if s.expired.iter().any(|&n| n > 0) {
        out += &format!(
            "\nringnode echo: connections closed at a limit: handshake_timeout {}, idle_timeout {}, send_timeout {}",
            s.expired[0], s.expired[1], s.expired[2]
        );
    }
    if s.frame_errors.iter().any(|&n| n > 0) {
        let parts: Vec<String> = crate::session::INPUT_ERROR_NAMES
            .iter()
            .zip(s.frame_errors)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        out += &format!("\nringnode echo: connections closed for bad frames: {}", parts.join(", "));
    }
    out
}

/// The probe as lines a person reads.
pub fn info_text(kernel: &str, disabled: Option<i64>, probe: &Result<Probe, String>) -> String {
    let mut out = format!("kernel               {kernel}\n");
    out += &format!(
        "io_uring_disabled    {}\n",
        disabled.map_or("unknown (no /proc/sys/kernel/io_uring_disabled)".to_string(), |d| d.to_string())
    );
    match probe {
        Err(e) => out += &format!("io_uring             unavailable: {e}\n"),
        Ok(p) => {
            out += &format!("setup flags          {}\n", p.mode.flags());
            let feats: Vec<&str> = p.features.iter().filter(|(_, ok)| *ok).map(|(n, _)| *n).collect();
            out += &format!("features             {}\n", feats.join(" "));
            out += "opcodes\n";
            for (name, ok, required) in &p.opcodes {
                let status = if *ok { "supported" } else { "missing" };
                let need = if *required { "required" } else { "optional" };
                out += &format!("  {name:<20} {status:<10} ({need})\n");
            }
            out += &format!("in use               {}\n", crate::ring::features_in_use(p).join(", "));
        }
    }
    out
}

/// The probe as one JSON object.
pub fn info_json(kernel: &str, disabled: Option<i64>, probe: &Result<Probe, String>) -> serde_json::Value {
    match probe {
        Err(e) => {
            json!({ "kernel": kernel, "io_uring_disabled": disabled, "available": false, "error": e })
        }
        Ok(p) => json!({
            "kernel": kernel,
            "io_uring_disabled": disabled,
            "available": true,
            "setup_flags": p.mode.flags(),
            "features": p.features.iter().map(|(n, ok)| (n.to_string(), json!(ok))).collect::<serde_json::Map<_, _>>(),
            "opcodes": p.opcodes.iter().map(|(n, ok, req)| json!({"name": n, "supported": ok, "required": req})).collect::<Vec<_>>(),
            "in_use": crate::ring::features_in_use(p),
        }),
    }
}
