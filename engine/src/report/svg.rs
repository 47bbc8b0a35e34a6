//! The report's charts as inline SVG: a line chart for training curves and
//! horizontal bar charts for results. Plain string building, no script and
//! no external file, so the page renders the same offline in any browser.

use std::fmt::Write as _;

use super::page::escape;

/// One line of a line chart.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    /// Thin and faded (the raw values under a smoothed line).
    pub faint: bool,
    pub points: Vec<(f64, f64)>,
}

/// A bar with an optional interval (a 95% confidence interval, say).
pub struct Bar<'a> {
    pub label: &'a str,
    pub value: f64,
    pub interval: Option<[f64; 2]>,
}

const WIDTH: f64 = 640.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
/// Points drawn per series at most: more adds bytes, not detail, at 640 px.
const MAX_POINTS: usize = 500;

/// A line chart over `x` (steps) with a y axis fitted to the data: on a
/// log scale when every value is positive and they span 20x or more (a
/// loss that starts at 6 and settles at 0.2 would be a flat line).
pub fn line_chart(title: &str, series: &[Series]) -> String {
    let height = 200.0;
    let bottom = 28.0;
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = extent(all().map(|p| p.0));
    let (lo, hi) = extent(all().map(|p| p.1));
    let log = all().all(|p| p.1 > 0.0) && hi >= 20.0 * lo;
    let scale = |y: f64| if log { y.log10() } else { y };
    let (y0, y1) = if log {
        (lo.log10(), hi.log10())
    } else {
        (lo, hi)
    };
    let xs = ticks(x0, x1);
    let ys = if log {
        log_ticks(lo, hi)
    } else {
        ticks(y0, y1)
    };
    let (x0, x1) = (x0.min(xs[0]), x1.max(*xs.last().unwrap_or(&x1)));
    let (y0, y1) = (
        y0.min(scale(ys[0])),
        y1.max(scale(*ys.last().unwrap_or(&hi))),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = height - TOP - bottom;
    let px = |x: f64| LEFT + (x - x0) / span(x0, x1) * plot_w;
    let py = |y: f64| TOP + (1.0 - (scale(y) - y0) / span(y0, y1)) * plot_h;

    let mut svg = open(title, WIDTH, height);
    if log {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" class="tick">log scale</text>"#,
            LEFT + 6.0,
            TOP + 10.0
        );
    }
    for &y in &ys {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            WIDTH - RIGHT,
            py(y),
            py(y),
            LEFT - 6.0,
            py(y) + 4.0,
            number(y)
        );
    }
    for &x in &xs {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            px(x),
            height - bottom + 16.0,
            number(x)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">step</text>"##,
        WIDTH - RIGHT,
        height - 2.0
    );
    for s in series {
        let mut path = String::new();
        for (i, &(x, y)) in thin(&s.points).iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { "L" },
                px(x),
                py(y)
            );
        }
        let (width, opacity) = if s.faint { (1.0, 0.3) } else { (1.8, 1.0) };
        let _ = write!(
            svg,
            r#"<path d="{path}" fill="none" stroke="{}" stroke-width="{width}" stroke-opacity="{opacity}"><title>{}</title></path>"#,
            s.color,
            escape(s.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars from a zero line, each with its value written beside it
/// and its interval (if any) as a whisker.
pub fn bar_chart(title: &str, bars: &[Bar], unit: &str) -> String {
    let row = 26.0;
    let bottom = 24.0;
    let label_w = 200.0;
    let height = TOP + row * bars.len() as f64 + bottom;
    let values = bars.iter().flat_map(|b| {
        std::iter::once(b.value)
            .chain(b.interval.into_iter().flatten())
            .chain(std::iter::once(0.0))
    });
    let (v0, v1) = extent(values);
    let ts = ticks(v0, v1);
    let (v0, v1) = (v0.min(ts[0]), v1.max(*ts.last().unwrap_or(&v1)));
    let plot_w = WIDTH - label_w - RIGHT - 56.0;
    let px = |v: f64| label_w + (v - v0) / span(v0, v1) * plot_w;
    let bottom_y = TOP + row * bars.len() as f64;

    let mut svg = open(title, WIDTH, height);
    for &t in &ts {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{bottom_y:.1}" stroke="{}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            if t == 0.0 { "#6b7280" } else { "#e5e7eb" },
            bottom_y + 16.0,
            number(t),
            x = px(t)
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + row * i as f64;
        let (a, b) = (px(0.0_f64.clamp(v0, v1)), px(bar.value));
        let color = if bar.value < 0.0 {
            "#dc2626"
        } else {
            "#2563eb"
        };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.75"><title>{} {}{unit}</title></rect>"#,
            label_w - 8.0,
            y + row * 0.62,
            escape(bar.label),
            a.min(b),
            y + 5.0,
            (b - a).abs().max(1.0),
            row - 10.0,
            escape(bar.label),
            number(bar.value)
        );
        let mut text_x = a.max(b);
        if let Some([lo, hi]) = bar.interval {
            let (l, h) = (px(lo), px(hi));
            let mid = y + row / 2.0;
            let _ = write!(
                svg,
                r##"<path d="M{l:.1},{mid:.1}H{h:.1}M{l:.1},{:.1}V{:.1}M{h:.1},{:.1}V{:.1}" stroke="#111827" stroke-width="1.4"><title>95% interval [{}, {}]</title></path>"##,
                mid - 5.0,
                mid + 5.0,
                mid - 5.0,
                mid + 5.0,
                number(lo),
                number(hi)
            );
            text_x = text_x.max(h);
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" class="value">{}{unit}</text>"#,
            text_x + 6.0,
            y + row * 0.62,
            number(bar.value)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Shares in [0, 1] as pairs of bars per row: the model's and a baseline's.
pub fn paired_shares(title: &str, rows: &[(&str, f64, f64)], names: [&str; 2]) -> String {
    let row = 34.0;
    let label_w = 200.0;
    let legend = 22.0;
    let height = TOP + legend + row * rows.len() as f64 + 24.0;
    let plot_w = WIDTH - label_w - RIGHT - 56.0;
    let px = |v: f64| label_w + v.clamp(0.0, 1.0) * plot_w;
    let colors = ["#2563eb", "#9ca3af"];
    let top = TOP + legend;
    let bottom_y = top + row * rows.len() as f64;

    let mut svg = open(title, WIDTH, height);
    for (i, (name, color)) in names.iter().zip(colors).enumerate() {
        let x = label_w + 160.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{TOP}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 18.0,
            TOP + 10.5,
            escape(name)
        );
    }
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top:.1}" y2="{bottom_y:.1}" stroke="#e5e7eb"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{:.0}%</text>"##,
            bottom_y + 16.0,
            t * 100.0,
            x = px(t)
        );
    }
    for (i, (label, model, baseline)) in rows.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + row * 0.55,
            escape(label)
        );
        for (j, (value, color)) in [model, baseline].into_iter().zip(colors).enumerate() {
            let bar_y = y + 4.0 + 13.0 * j as f64;
            let _ = write!(
                svg,
                r#"<rect x="{label_w}" y="{bar_y:.1}" width="{:.1}" height="12" fill="{color}"><title>{} {:.1}%</title></rect><text x="{:.1}" y="{:.1}" class="value">{:.1}%</text>"#,
                (px(*value) - label_w).max(1.0),
                escape(names[j]),
                value * 100.0,
                px(*value) + 6.0,
                bar_y + 10.0,
                value * 100.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn open(title: &str, width: f64, height: f64) -> String {
    format!(
        r#"<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{}">"#,
        escape(title)
    )
}

/// The range of finite values, widened when it is a single value; (0, 1)
/// when there is none.
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    }
}

fn span(lo: f64, hi: f64) -> f64 {
    if hi > lo { hi - lo } else { 1.0 }
}

/// About five round tick values covering [lo, hi] (steps of 1, 2 or 5
/// times a power of ten).
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = span(lo, hi) / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks for a log axis over [lo, hi] (both positive): the powers of ten,
/// with 2x and 5x between them when the range is under three decades.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let steps: &[f64] = if last - first < 3 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut out = Vec::new();
    for power in first..=last {
        for m in steps {
            let t = m * 10f64.powi(power);
            if t <= lo {
                out.clear();
            }
            out.push(t);
            if t >= hi {
                return out;
            }
        }
    }
    out
}

/// At most [`MAX_POINTS`] points: each bucket of consecutive points drawn
/// as its mean, so a long run keeps its shape.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let per = points.len().div_ceil(MAX_POINTS);
    points
        .chunks(per)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let (sx, sy) = chunk
                .iter()
                .fold((0.0, 0.0), |(sx, sy), p| (sx + p.0, sy + p.1));
            (sx / n, sy / n)
        })
        .collect()
}

/// A number for a label: short, without trailing zeros.
pub fn number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let abs = value.abs();
    if !(1e-3..1e6).contains(&abs) {
        return format!("{value:.2e}");
    }
    let digits = if abs >= 100.0 {
        0
    } else if abs >= 1.0 {
        2
    } else {
        4
    };
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        for (lo, hi) in [(0.0, 2700.0), (0.137, 6.3), (-41.2, 18.9), (0.0, 1e-4)] {
            let t = ticks(lo, hi);
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            assert!((3..=12).contains(&t.len()), "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0]
                    .iter()
                    .any(|m| (mantissa - m).abs() < 1e-9 || (mantissa - 10.0).abs() < 1e-9),
                "{step}"
            );
        }
    }

    #[test]
    fn log_ticks_bracket_the_range() {
        assert_eq!(
            log_ticks(0.13, 6.3),
            vec![0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        );
        assert_eq!(
            log_ticks(0.003, 40.0),
            vec![0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
        );
        let svg = line_chart(
            "loss",
            &[Series {
                label: "loss",
                color: "#000",
                faint: false,
                points: vec![(1.0, 6.0), (2.0, 0.2)],
            }],
        );
        assert!(svg.contains("log scale"));
    }

    #[test]
    fn thinning_keeps_the_mean_and_the_ends() {
        let points: Vec<(f64, f64)> = (0..2701).map(|i| (i as f64, (i % 7) as f64)).collect();
        let thinned = thin(&points);
        assert!(thinned.len() <= MAX_POINTS);
        let mean = |p: &[(f64, f64)]| p.iter().map(|p| p.1).sum::<f64>() / p.len() as f64;
        assert!((mean(&thinned) - mean(&points)).abs() < 0.05);
        assert!(thinned[0].0 < 10.0 && thinned.last().unwrap().0 > 2690.0);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2700.0), "2700");
        assert_eq!(number(-12.25), "-12.25");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1.5e-5), "1.50e-5");
    }

    #[test]
    fn charts_escape_labels_and_mark_losses() {
        let svg = line_chart(
            "loss <sft>",
            &[Series {
                label: "a&b",
                color: "#000",
                faint: false,
                points: vec![(1.0, 2.0), (2.0, 1.0)],
            }],
        );
        assert!(svg.contains("a&amp;b") && svg.contains("loss &lt;sft&gt;"));
        let bars = bar_chart(
            "bb/100",
            &[Bar {
                label: "random",
                value: -3.0,
                interval: Some([-9.0, 3.0]),
            }],
            "",
        );
        assert!(bars.contains("#dc2626") && bars.contains("95% interval [-9, 3]"));
    }
}
