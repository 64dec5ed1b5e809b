//! Results: medians and ranges, the table, the JSON file and the SVG plot.

use std::fmt::Write as _;

use crate::machine::Machine;

/// All repetitions of one alternative at one size.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The case name, e.g. `large_e2e`.
    pub case: &'static str,
    /// Bytes per operation.
    pub size: usize,
    /// `ours`, a baseline name, or `variant:...` (another way to use this project).
    pub alt: &'static str,
    /// Seconds per operation, one value per repetition.
    pub secs: Vec<f64>,
}

impl Measured {
    /// The median over repetitions.
    pub fn median(&self) -> f64 {
        let mut v = self.secs.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    fn min(&self) -> f64 {
        self.secs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.secs.iter().copied().fold(0.0, f64::max)
    }

    /// Whether this is one of this project's own variants rather than a baseline.
    pub fn is_variant(&self) -> bool {
        self.alt.starts_with("variant:")
    }
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn fmt_size(b: usize) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

fn ours_of<'a>(all: &'a [Measured], m: &Measured) -> Option<&'a Measured> {
    all.iter()
        .find(|o| o.case == m.case && o.size == m.size && o.alt == "ours")
}

/// The table of medians (min–max), throughput and ratios (`baseline / ours`: above 1 means
/// ours is faster).
pub fn table(all: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | size | alternative | median | min – max | GB/s | ratio (alt / ours) |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|");
    for m in all {
        let med = m.median();
        let gbs = if m.size >= 4096 {
            format!("{:.2}", m.size as f64 / med / 1e9)
        } else {
            "–".to_owned()
        };
        let ratio = match ours_of(all, m) {
            Some(o) if m.alt != "ours" => format!("{:.2}", med / o.median()),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} – {} | {} | {} |",
            m.case,
            fmt_size(m.size),
            m.alt,
            fmt_time(med),
            fmt_time(m.min()),
            fmt_time(m.max()),
            gbs,
            ratio
        );
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".to_owned()
    }
}

fn json_entries(all: &[Measured], variants: bool) -> Vec<String> {
    let mut rows = Vec::new();
    for m in all
        .iter()
        .filter(|m| m.alt != "ours" && m.is_variant() == variants)
    {
        let Some(o) = ours_of(all, m) else { continue };
        let (ours, base) = (o.median(), m.median());
        rows.push(format!(
            "{{\"case\": {}, \"size_bytes\": {}, \"ours_s\": {}, \"baseline\": {}, \
             \"baseline_s\": {}, \"ratio\": {}, \"ours_min_s\": {}, \"ours_max_s\": {}, \
             \"baseline_min_s\": {}, \"baseline_max_s\": {}, \"repetitions\": {}}}",
            json_str(m.case),
            m.size,
            json_num(ours),
            json_str(m.alt),
            json_num(base),
            json_num(base / ours),
            json_num(o.min()),
            json_num(o.max()),
            json_num(m.min()),
            json_num(m.max()),
            m.secs.len().min(o.secs.len()),
        ));
    }
    rows
}

/// The JSON document: `{"machine": {...}, "cases": [...], "variants": [...]}`.
pub fn json(machine: &Machine, command: &str, all: &[Measured]) -> String {
    let mut out = String::from("{\n  \"machine\": {");
    let fields: Vec<String> = machine
        .fields()
        .iter()
        .map(|(k, v)| format!("{}: {}", json_str(k), json_str(v)))
        .collect();
    out.push_str(&fields.join(", "));
    let _ = write!(
        out,
        "}},\n  \"command\": {},\n  \"cases\": [\n    ",
        json_str(command)
    );
    out.push_str(&json_entries(all, false).join(",\n    "));
    out.push_str("\n  ],\n  \"variants\": [\n    ");
    out.push_str(&json_entries(all, true).join(",\n    "));
    out.push_str("\n  ]\n}\n");
    out
}

/// An SVG line plot: throughput (GB/s) against size, both on log scales, for every
/// alternative of `case`.
pub fn svg(all: &[Measured], case: &str, title: &str) -> String {
    let rows: Vec<&Measured> = all.iter().filter(|m| m.case == case).collect();
    let mut alts: Vec<&str> = Vec::new();
    for m in &rows {
        if !alts.contains(&m.alt) {
            alts.push(m.alt);
        }
    }
    let gbs = |m: &Measured| m.size as f64 / m.median() / 1e9;
    // Log scale on both axes: the in-process floor is ~50x the transports.
    let ys: Vec<f64> = rows.iter().map(|m| gbs(m)).filter(|y| *y > 0.0).collect();
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3);
    let hi = ys.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (min_y, max_y) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );
    let xs: Vec<f64> = rows.iter().map(|m| (m.size as f64).log2()).collect();
    let (min_x, max_x) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let span_x = if max_x > min_x { max_x - min_x } else { 1.0 };
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 70.0, 190.0, 40.0, 50.0);
    let px = |size: usize| left + ((size as f64).log2() - min_x) / span_x * (w - left - right);
    let span_y = (max_y / min_y).log10();
    let py = |y: f64| top + (1.0 - (y / min_y).log10() / span_y) * (h - top - bottom);
    let colors = [
        "#1b6ac9", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#00798c", "#8d6a48", "#555555",
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{title}</text>",
        (left + w - right) / 2.0
    );
    let _ = writeln!(
        s,
        "<path d=\"M{left} {top} V{} H{}\" stroke=\"black\" fill=\"none\"/>",
        h - bottom,
        w - right
    );
    // Grid lines at 1, 2 and 5 times each power of ten.
    let mut decade = min_y;
    while decade < max_y * 1.001 {
        for m in [1.0, 2.0, 5.0] {
            let y = decade * m;
            if y > max_y * 1.001 {
                break;
            }
            let label = if y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y}")
            };
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                w - right,
                left - 6.0,
                py(y) + 4.0,
                py = py(y)
            );
        }
        decade *= 10.0;
    }
    let mut sizes: Vec<usize> = rows.iter().map(|m| m.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for &size in &sizes {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(size),
            h - bottom + 18.0,
            fmt_size(size)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">buffer size (log scale)</text>",
        (left + w - right) / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">\
         throughput, GB/s (median, log scale)</text>",
        (top + h - bottom) / 2.0
    );
    // Ours drawn last (on top) and thicker.
    for (i, alt) in alts.iter().enumerate().rev() {
        let width = if *alt == "ours" { 3.5 } else { 2.0 };
        let color = colors[i % colors.len()];
        let mut pts: Vec<(usize, f64)> = rows
            .iter()
            .filter(|m| m.alt == *alt)
            .map(|m| (m.size, gbs(m)))
            .collect();
        pts.sort_by_key(|p| p.0);
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\"/>",
            path.join(" ")
        );
        for &(x, y) in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>",
                px(x),
                py(y)
            );
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" \
             stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{alt}</text>",
            w - right + 12.0,
            w - right + 36.0,
            w - right + 42.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
