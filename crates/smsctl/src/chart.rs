//! Small inline SVG charts for the HTML reports: bars per day, lines against a threshold, horizontal bars.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" class="chart">"#,
        escape(title)
    );
}

/// A round upper bound for an axis holding `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// Stacked bars, one per label; `series` are (name, colour, values).
pub fn stacked_bars(title: &str, labels: &[String], series: &[(&str, &str, Vec<u64>)]) -> String {
    let mut out = String::new();
    open(&mut out, title);
    let totals: Vec<u64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.2.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let top = nice_ceiling(totals.iter().copied().max().unwrap_or(0) as f64);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    axis_y(&mut out, 0.0, top, |v| format!("{v:.0}"));
    let slot = plot_w / labels.len().max(1) as f64;
    for (i, label) in labels.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let mut y = TOP + plot_h;
        for (name, colour, values) in series {
            let v = values.get(i).copied().unwrap_or(0) as f64;
            let h = v / top * plot_h;
            y -= h;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{} {}: {v}</title></rect>"#,
                slot * 0.7,
                escape(label),
                escape(name)
            );
        }
        if i % 5 == 0 || i + 1 == labels.len() {
            let short = label.get(label.len().saturating_sub(2)..).unwrap_or(label);
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                x + slot * 0.35,
                HEIGHT - BOTTOM + 14.0,
                escape(short)
            );
        }
    }
    legend(
        &mut out,
        &series.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
    );
    out.push_str("</svg>");
    out
}

/// Lines of percentages per label, with dashed threshold lines; the y axis
/// spans from just under the lowest value (or threshold) to 100 %.
pub fn rate_lines(
    title: &str,
    labels: &[String],
    series: &[(&str, &str, Vec<Option<f64>>)],
    thresholds: &[(&str, &str, f64)],
) -> String {
    let mut out = String::new();
    open(&mut out, title);
    let lowest = series
        .iter()
        .flat_map(|s| s.2.iter().flatten().copied())
        .chain(thresholds.iter().map(|t| t.2))
        .fold(100.0f64, f64::min);
    let bottom = (lowest - 1.0).floor().clamp(0.0, 99.0);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let y_of = |v: f64| TOP + plot_h - (v - bottom) / (100.0 - bottom) * plot_h;
    let slot = plot_w / labels.len().max(1) as f64;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);
    axis_y(&mut out, bottom, 100.0, |v| format!("{v:.1}%"));
    for (name, colour, level) in thresholds {
        let y = y_of(*level);
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="{colour}">{}</text>"#,
            WIDTH - RIGHT,
            WIDTH - RIGHT,
            y - 4.0,
            escape(name)
        );
    }
    for (name, colour, values) in series {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x_of(i), y_of(v))))
            .collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(name)
        );
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"><title>{} {}: {v:.3}%</title></circle>"#,
                    x_of(i),
                    y_of(*v),
                    escape(&labels[i]),
                    escape(name)
                );
            }
        }
    }
    for (i, label) in labels.iter().enumerate() {
        if i % 5 == 0 || i + 1 == labels.len() {
            let short = label.get(label.len().saturating_sub(2)..).unwrap_or(label);
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                x_of(i),
                HEIGHT - BOTTOM + 14.0,
                escape(short)
            );
        }
    }
    legend(
        &mut out,
        &series.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
    );
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per (label, value), longest first as given.
pub fn horizontal_bars(title: &str, bars: &[(String, u64)], colour: &str) -> String {
    let mut out = String::new();
    let row = 22.0;
    let height = TOP + row * bars.len().max(1) as f64 + 8.0;
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}" class="chart">"#,
        escape(title)
    );
    let label_w = 230.0;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let plot_w = WIDTH - label_w - 90.0;
    if bars.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="{:.1}" font-size="12">—</text>"#,
            TOP + 12.0
        );
    }
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = TOP + row * i as f64;
        let w = (*value as f64 / max * plot_w).max(1.0);
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text><rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="12">{value}</text>"#,
            label_w - 6.0,
            y + 14.0,
            escape(label),
            row - 6.0,
            label_w + w + 6.0,
            y + 14.0
        );
    }
    out.push_str("</svg>");
    out
}

fn axis_y(out: &mut String, low: f64, high: f64, label: impl Fn(f64) -> String) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    for step in 0..=4 {
        let v = low + (high - low) * f64::from(step) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(step) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&label(v))
        );
    }
}

fn legend(out: &mut String, entries: &[(&str, &str)]) {
    let mut x = LEFT;
    for (name, colour) in entries {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            HEIGHT - 14.0,
            x + 14.0,
            HEIGHT - 5.0,
            escape(name)
        );
        x += 20.0 + 7.0 * name.chars().count() as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_closed_svg_with_escaped_labels() {
        let labels = vec!["2026-11-01".to_string(), "2026-11-02".to_string()];
        let bars = stacked_bars("volume <daily>", &labels, &[("a&b", "#123", vec![3, 4])]);
        assert!(bars.starts_with("<svg") && bars.ends_with("</svg>"));
        assert!(bars.contains("volume &lt;daily&gt;") && bars.contains("a&amp;b"));
        let lines = rate_lines(
            "rates",
            &labels,
            &[("s", "#000", vec![Some(99.5), None])],
            &[("99%", "#f00", 99.0)],
        );
        assert!(lines.contains("<polyline") && lines.contains("stroke-dasharray"));
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
