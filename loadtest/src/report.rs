//! A self-contained HTML report (inline SVG charts, no script, no external file) and the
//! side-by-side comparison of two JSON results.

use std::fmt::Write as _;

use crate::stats::{LATENCIES, RunResult};

/// A line chart of `series` (name, colour, points) as inline SVG.
fn line_chart(title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, pad) = (720.0, 240.0, 48.0);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0).max(2);
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max;
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>\
         <text x='{pad}' y='20' font-size='14' font-weight='bold'>{title}</text>\
         <line x1='{pad}' y1='{}' x2='{}' y2='{}' stroke='#888'/>\
         <line x1='{pad}' y1='{pad}' x2='{pad}' y2='{}' stroke='#888'/>\
         <text x='4' y='{}' font-size='11'>{:.1} {unit}</text><text x='4' y='{}' font-size='11'>0</text>\
         <text x='{}' y='{}' font-size='11' text-anchor='end'>{} s</text>",
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        pad + 4.0,
        max / 1.1,
        h - pad,
        w - pad,
        h - pad + 16.0,
        n - 1
    );
    for (k, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>\
             <text x='{}' y='{}' font-size='12' fill='{colour}'>{name}</text>",
            path.join(" "),
            w - pad - 140.0,
            pad + 14.0 * k as f64,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The HTML report of one run.
pub fn html(r: &RunResult, command: &str) -> String {
    let per_second = |f: &dyn Fn(&crate::stats::IntervalResult) -> f64| -> Vec<f64> {
        r.intervals.iter().map(f).collect()
    };
    let rates = line_chart(
        "Calls per second",
        "calls/s",
        &[
            ("attempted", "#1f77b4", per_second(&|i| i.attempted as f64)),
            (
                "established",
                "#2ca02c",
                per_second(&|i| i.established as f64),
            ),
            ("failed", "#d62728", per_second(&|i| i.failed as f64)),
        ],
    );
    let key = r.headline.as_str();
    let title = format!("{} latency per second", headline_title(key));
    let latency = line_chart(
        &title,
        "ms",
        &[
            (
                "p50",
                "#2ca02c",
                per_second(&|i| i.latency_ms.get(key).map_or(0.0, |p| p.p50)),
            ),
            (
                "p99",
                "#ff7f0e",
                per_second(&|i| i.latency_ms.get(key).map_or(0.0, |p| p.p99)),
            ),
            (
                "max",
                "#d62728",
                per_second(&|i| i.latency_ms.get(key).map_or(0.0, |p| p.max)),
            ),
        ],
    );
    let concurrent = line_chart(
        "Calls up",
        "calls",
        &[(
            "concurrent",
            "#9467bd",
            per_second(&|i| i.concurrent as f64),
        )],
    );
    let mut table = String::from(
        "<table><tr><th>latency (steady phase)</th><th>count</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    for name in LATENCIES {
        if let Some(p) = r.latency_ms.get(name) {
            let _ = write!(
                table,
                "<tr><td>{name}</td><td>{}</td><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.3} ms</td>\
                 <td>{:.3} ms</td><td>{:.3} ms</td></tr>",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
    }
    table.push_str("</table>");
    let mut failures = String::from("<table><tr><th>failure</th><th>calls</th></tr>");
    for (code, n) in &r.failed_by_code {
        let label = if code == "0" { "no final status" } else { code };
        let _ = write!(failures, "<tr><td>{label}</td><td>{n}</td></tr>");
    }
    let _ = write!(
        failures,
        "<tr><td>timeouts</td><td>{}</td></tr></table>",
        r.timeouts
    );
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>sipshard-load {role} → {target}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}code{{background:#f4f4f4;padding:2px}}</style>\
         </head><body><h1>sipshard-load: {role} → {target}</h1><p><code>{command}</code></p>\
         <p><b>{established}</b> established of {attempted} attempted, <b>{failed}</b> failed \
         ({ratio:.4} %), {retrans} retransmissions; <b>{rate:.0} calls/s</b> achieved over the \
         steady phase (seconds {s0}–{s1}) of {requested:.0} requested.</p>\
         {rates}{latency}{concurrent}{table}{failures}</body></html>",
        role = r.role,
        target = r.target,
        established = r.established,
        attempted = r.attempted,
        failed = r.failed,
        ratio = if r.attempted > 0 {
            100.0 * r.failed as f64 / r.attempted as f64
        } else {
            0.0
        },
        retrans = r.retransmissions,
        rate = r.achieved_rate,
        s0 = r.steady_phase_s[0],
        s1 = r.steady_phase_s[1],
        requested = r.rate_requested,
    )
}

/// Two runs side by side, as plain text.
pub fn compare(a: &RunResult, b: &RunResult) -> String {
    let mut out = format!("{:<28} {:>16} {:>16} {:>9}\n", "", "A", "B", "B/A");
    let mut row = |name: &str, x: f64, y: f64| {
        let ratio = if x != 0.0 {
            format!("{:.2}", y / x)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(out, "{name:<28} {x:>16.3} {y:>16.3} {ratio:>9}");
    };
    row("achieved_rate (calls/s)", a.achieved_rate, b.achieved_rate);
    row("attempted", a.attempted as f64, b.attempted as f64);
    row("established", a.established as f64, b.established as f64);
    row("failed", a.failed as f64, b.failed as f64);
    row("timeouts", a.timeouts as f64, b.timeouts as f64);
    row(
        "retransmissions",
        a.retransmissions as f64,
        b.retransmissions as f64,
    );
    for name in LATENCIES {
        if let (Some(x), Some(y)) = (a.latency_ms.get(name), b.latency_ms.get(name)) {
            row(&format!("{name} p50 (ms)"), x.p50, y.p50);
            row(&format!("{name} p99 (ms)"), x.p99, y.p99);
            row(&format!("{name} max (ms)"), x.max, y.max);
        }
    }
    out
}

/// A latency's name for people: `invite_to_200` → `INVITE→200`.
pub fn headline_title(key: &str) -> String {
    match key {
        "request_to_final" => "request→final".to_owned(),
        k => k.replace("_to_", "→").to_uppercase(),
    }
}
