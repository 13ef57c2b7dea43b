//! `ringnode info`: what this kernel offers, for a person or as JSON.

use serde_json::json;

use crate::ring::Probe;

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
