//! The latency percentile plot as a standalone SVG: latency against percentile, the percentile
//! axis stretched as 1/(1-p) so the tail (99%, 99.9%, 99.99%…) gets room, one line per run.

use hdrhistogram::Histogram;

const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The document's head, its title and the two axes.
fn frame(title: &str) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    out += &format!(
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>\n",
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    out
}

/// The plot of `series` (name, histogram in nanoseconds), titled `title`.
pub fn percentile_svg(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    // x: log10(1/(1-p)) from 0 (p=0) to 5 (p=99.999%).
    let max_nines = 5.0;
    let x_of = |p: f64| {
        let nines = (1.0 / (1.0 - p.min(0.999_99))).log10();
        LEFT + (W - LEFT - RIGHT) * nines / max_nines
    };
    let ymax_ns = series.iter().map(|(_, h)| h.max()).max().unwrap_or(1).max(1) as f64;
    let y_of = |ns: f64| TOP + (H - TOP - BOTTOM) * (1.0 - ns / ymax_ns);
    let mut out = frame(title);
    for (p, label) in
        [(0.0, "0%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%"), (0.99999, "99.999%")]
    {
        let x = x_of(p);
        out += &format!(
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    for i in 0..=5 {
        let ns = ymax_ns * f64::from(i) / 5.0;
        let y = y_of(ns);
        out += &format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.3}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            ns / 1e6
        );
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">latency (ms)</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 16.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = Vec::new();
        // Sample the percentile axis evenly in "nines".
        for k in 0..=200 {
            let nines = max_nines * f64::from(k) / 200.0;
            let p = 1.0 - 10f64.powf(-nines);
            let v = h.value_at_quantile(p) as f64;
            points.push(format!("{:.1},{:.1}", x_of(p), y_of(v)));
        }
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        );
        out += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>\n",
            LEFT + 10.0,
            TOP + 16.0 * (i as f64 + 1.0),
            escape(name)
        );
    }
    out += "</svg>\n";
    out
}

/// A line chart of `series` (name, points (x, y)), titled `title`, with its axes labelled; y from
/// zero to the highest point. For values over time (throughput per interval).
pub fn line_svg(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let xmax = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(0.0f64, f64::max).max(1e-9);
    let ymax = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0f64, f64::max).max(1e-9);
    let x_of = |x: f64| LEFT + (W - LEFT - RIGHT) * x / xmax;
    let y_of = |y: f64| TOP + (H - TOP - BOTTOM) * (1.0 - y / ymax);
    let mut out = frame(title);
    for i in 0..=5 {
        let (x, y) = (xmax * f64::from(i) / 5.0, ymax * f64::from(i) / 5.0);
        let (px, py) = (x_of(x), y_of(y));
        out += &format!(
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{x:.1}</text>\n",
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
        out += &format!(
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            short_number(y)
        );
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 16.0,
        escape(x_label),
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y))).collect();
        out +=
            &format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n", pts.join(" "));
        out += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>\n",
            LEFT + 10.0,
            TOP + 16.0 * (i as f64 + 1.0),
            escape(name)
        );
    }
    out += "</svg>\n";
    out
}

/// 1.5G, 250M, 12k: an axis label.
fn short_number(v: f64) -> String {
    for (div, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= div {
            return format!("{:.1}{suffix}", v / div);
        }
    }
    format!("{v:.1}")
}
