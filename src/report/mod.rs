//! What a person reads, and what a machine reads (`--json`): load results, server counters, the
//! kernel probe. Knows nothing of sockets.

use serde_json::json;

use crate::echo::EchoStats;
use crate::load::{LoadConfig, LoadResult};
use crate::ring::Probe;

/// Latency percentiles reported everywhere, in this order.
pub const PERCENTILES: &[(f64, &str)] = &[(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9")];

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The load result as the lines a person reads.
pub fn load_text(cfg: &LoadConfig, r: &LoadResult) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let h = &r.latency;
    let pct: Vec<String> =
        PERCENTILES.iter().map(|&(q, name)| format!("{name} {:.1}", us(h.value_at_percentile(q)))).collect();
    let cpu: f64 = r.core_cpu.iter().sum();
    let cpu_per_core: Vec<String> = r.core_cpu.iter().map(|c| format!("{:.0}%", 100.0 * c / secs)).collect();
    format!(
        "ringnode load: {target}, {conns} connections, {size} B, pipeline {pipe}, {secs:.2} s, {cores} core(s)\n\
         \x20 connections  {up} up of {conns} requested\n\
         \x20 messages     {sent} sent, {recv} received, {rate:.0}/s\n\
         \x20 throughput   {mbs:.2} MB/s received ({mbs_out:.2} MB/s sent)\n\
         \x20 latency µs   {pct}  max {max:.1}  (n={n})\n\
         \x20 errors       connect {ec}  reset {er}  closed {ecl}  timeout {et}  mismatch {em}\n\
         \x20 client cpu   {cpu:.2} s ({cpu_per_core})\n",
        target = cfg.target,
        conns = cfg.connections,
        size = cfg.size,
        pipe = cfg.pipeline,
        cores = r.core_cpu.len(),
        up = r.connected,
        sent = r.sent,
        recv = r.received,
        rate = r.rate(),
        mbs = r.bytes_received as f64 / secs / 1e6,
        mbs_out = r.bytes_sent as f64 / secs / 1e6,
        pct = pct.join("  "),
        max = us(h.max()),
        n = h.len(),
        ec = r.errors.connect,
        er = r.errors.reset,
        ecl = r.errors.closed,
        et = r.errors.timeout,
        em = r.errors.mismatch,
        cpu_per_core = cpu_per_core.join(" "),
    )
}

/// The load result as one JSON object.
pub fn load_json(cfg: &LoadConfig, r: &LoadResult) -> serde_json::Value {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let h = &r.latency;
    let mut lat = serde_json::Map::new();
    for &(q, name) in PERCENTILES {
        lat.insert(format!("{name}_us"), json!(us(h.value_at_percentile(q))));
    }
    lat.insert("max_us".into(), json!(us(h.max())));
    lat.insert("mean_us".into(), json!(h.mean() / 1000.0));
    lat.insert("samples".into(), json!(h.len()));
    json!({
        "target": cfg.target.to_string(),
        "connections_requested": cfg.connections,
        "connections_up": r.connected,
        "size": cfg.size,
        "pipeline": cfg.pipeline,
        "elapsed_s": secs,
        "messages_sent": r.sent,
        "messages_received": r.received,
        "bytes_sent": r.bytes_sent,
        "bytes_received": r.bytes_received,
        "messages_per_s": r.rate(),
        "mb_per_s": r.bytes_received as f64 / secs / 1e6,
        "latency": lat,
        "errors": {
            "connect": r.errors.connect,
            "reset": r.errors.reset,
            "closed": r.errors.closed,
            "timeout": r.errors.timeout,
            "mismatch": r.errors.mismatch,
        },
        "client_cpu_s": r.core_cpu,
    })
}

/// The echo server's counters: one line, plus one for bad frames when there were any.
pub fn echo_text(s: &EchoStats) -> String {
    let mut out = format!(
        "ringnode echo: stopped: {} connections, {} messages / {} bytes in, {} messages / {} bytes out, {} errors",
        s.connections, s.messages_in, s.bytes_in, s.messages_out, s.bytes_out, s.errors
    );
    out += &format!(
        "\nringnode echo: receive pool: {} buffers leased, {} recycled, {} times empty (ENOBUFS, re-armed)",
        s.pool.leases, s.pool.recycled, s.pool.enobufs
    );
    if s.decode.frames > 0 {
        let d = &s.decode;
        let pct = 100.0 * d.copied_bytes as f64 / d.payload_bytes.max(1) as f64;
        out += &format!(
            "\nringnode echo: frames: {} decoded, {} payload bytes, {} copied in user space ({pct:.3}%, {} frames spanned receive buffers)",
            d.frames, d.payload_bytes, d.copied_bytes, d.spanning_frames
        );
        let t = &s.send;
        out += &format!(
            "\nringnode echo: sends: {} vectored, {} zero-copy ({} bytes; kernel copied {} of them, {} went without a copy; \
             {} connections stopped asking after repeated copies); {} bytes of small frames coalesced (copied)",
            t.writevs, t.zc_sends, t.zc_bytes, t.zc_copied, t.zc_zero_copy, t.zc_given_up, t.coalesced_bytes
        );
    }
    if s.frame_errors.iter().any(|&n| n > 0) {
        let parts: Vec<String> = crate::frame::FrameError::NAMES
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
