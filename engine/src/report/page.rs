//! The report as one HTML page: a stylesheet in the head, the stage table,
//! then a section per stage with something to show (training curves, or an
//! evaluation's results). Every text that comes from a file is escaped.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use super::svg::{Bar, Series, bar_chart, line_chart, number, paired_shares};
use super::{Report, RowStatus, StageRow};

/// Curves drawn for a training stage when its metrics have them, in this
/// order: the loss of every trainer, then what RL kinds log.
const CURVES: &[(&str, &str)] = &[
    ("loss", "loss"),
    ("accuracy", "pairwise accuracy of the training batches"),
    ("reward", "reward (mean per step)"),
    ("kl", "KL to the reference"),
    ("entropy", "entropy"),
];

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#111827;background:#f9fafb;margin:0}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}h3{font-size:14px;margin:16px 0 6px;color:#374151}
.meta{color:#6b7280;margin:0 0 20px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:0 0 20px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;text-align:left;border-bottom:1px solid #f3f4f6}
th{font-weight:600;color:#374151}
td.num{text-align:right}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.status{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px}
.ran{background:#dcfce7;color:#166534}.cached{background:#e0e7ff;color:#3730a3}
.failed{background:#fee2e2;color:#991b1b}.interrupted{background:#fef3c7;color:#92400e}
.notrun,.stale{background:#f3f4f6;color:#6b7280}
.figures{color:#374151;margin:4px 0 8px}
svg{width:100%;max-width:760px;height:auto;font-size:12px}
svg .tick{fill:#6b7280;font-size:11px}svg .value{fill:#374151;font-size:11px}
.confusion td{text-align:right;min-width:56px}
";

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut html = String::with_capacity(64 * 1024);
    let title = format!("poker-pipe report: {}", report.pipeline);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>",
        escape(&title)
    );
    let _ = write!(
        html,
        "<h1>{}</h1><p class=\"meta\">preset {} · device {} · rebuilt by <code>poker-pipe report</code> \
         and after every <code>poker-pipe run</code></p>",
        escape(&title),
        escape(report.preset.as_deref().unwrap_or("none")),
        escape(&report.device)
    );
    stage_table(&mut html, &report.stages);
    for stage in &report.stages {
        if stage.kind == "eval" && stage.summary.is_object() {
            eval_section(&mut html, stage);
        } else if CURVES.iter().any(|(k, _)| stage.curves.contains_key(*k)) {
            training_section(&mut html, stage);
        }
    }
    html.push_str("</main></body></html>\n");
    html
}

fn stage_table(html: &mut String, stages: &[StageRow]) {
    html.push_str(
        "<section><h2>Stages</h2><p class=\"meta\">time: how long the stage took when it ran. \
         stale: not in the cache for the current code and inputs; the row shows the earlier run \
         <code>runs/</code> still points at.</p><table><thead><tr><th>stage</th><th>kind</th><th>status</th>\
         <th>time</th><th>hash</th><th>output</th></tr></thead><tbody>",
    );
    for s in stages {
        let class = match s.status {
            RowStatus::NotRun => "notrun",
            other => other.label(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td><span class=\"status {class}\">{}</span></td>\
             <td class=\"num\">{}</td><td><code title=\"{}\">{}</code></td><td><code>{}</code></td></tr>",
            escape(&s.name),
            escape(&s.kind),
            s.status.label(),
            s.duration_s.map_or_else(|| "–".to_string(), duration),
            escape(&s.hash),
            escape(s.hash.get(..12).unwrap_or(&s.hash)),
            s.output
                .as_ref()
                .map_or_else(|| "–".to_string(), |p| escape(&p.display().to_string())),
        );
    }
    html.push_str("</tbody></table></section>");
}

/// Curves of a training stage: the raw values faint, their moving mean
/// over about 2% of the run on top (as TensorBoard smooths).
fn training_section(html: &mut String, stage: &StageRow) {
    let _ = write!(
        html,
        "<section><h2>{} <small>({})</small></h2>",
        escape(&stage.name),
        escape(&stage.kind)
    );
    figures(html, &stage.summary);
    for (key, title) in CURVES {
        let Some(points) = stage.curves.get(*key) else {
            continue;
        };
        let window = (points.len() / 50).max(1);
        let mut series = vec![Series {
            label: key,
            color: "#2563eb",
            faint: window > 1,
            points: points.clone(),
        }];
        let label = format!("{key}, mean of {window} steps");
        if window > 1 {
            series.push(Series {
                label: &label,
                color: "#2563eb",
                faint: false,
                points: moving_mean(points, window),
            });
        }
        let _ = write!(html, "<h3>{}</h3>", escape(title));
        html.push_str(&line_chart(&format!("{} {title}", stage.name), &series));
    }
    html.push_str("</section>");
}

/// The summary's top-level numbers in one line (`steps 2700 · final_loss
/// 0.398`).
fn figures(html: &mut String, summary: &Value) {
    let Some(fields) = summary.as_object() else {
        return;
    };
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            v.as_f64()
                .map(|v| format!("{} <b>{}</b>", escape(k), number(v)))
        })
        .collect();
    if !parts.is_empty() {
        let _ = write!(html, "<p class=\"figures\">{}</p>", parts.join(" · "));
    }
}

fn eval_section(html: &mut String, stage: &StageRow) {
    let s = &stage.summary;
    let _ = write!(
        html,
        "<section><h2>{} <small>(eval)</small></h2><h3>Scorecard</h3><table><thead><tr><th>figure</th>\
         <th>model</th><th>baseline</th></tr></thead><tbody>",
        escape(&stage.name)
    );
    let share = |key: &str| s[key].as_f64().map(percent);
    let baselines = [
        ("spot_type_baseline", "spot type"),
        ("majority_baseline", "majority"),
    ]
    .iter()
    .filter_map(|(key, name)| share(key).map(|b| format!("{b} ({name})")))
    .collect::<Vec<_>>();
    let rows: [(&str, Option<String>, Option<String>); 5] = [
        (
            "action accuracy on held-out spots",
            share("action_accuracy"),
            (!baselines.is_empty()).then(|| baselines.join(" · ")),
        ),
        ("legal actions", share("legal_action_rate"), None),
        (
            "reward model pairwise accuracy",
            share("rm_pairwise_accuracy"),
            Some("50% (chance)".to_string()),
        ),
        (
            "reward of sampled answers (PPO vs SFT)",
            s["reward_mean_ppo"].as_f64().map(number),
            s["reward_mean_sft"].as_f64().map(number),
        ),
        (
            "reward of greedy answers (PPO vs SFT)",
            s["reward_mean_ppo_greedy"].as_f64().map(number),
            s["reward_mean_sft_greedy"].as_f64().map(number),
        ),
    ];
    for (label, model, baseline) in rows {
        if model.is_none() && baseline.is_none() {
            continue;
        }
        let _ = write!(
            html,
            "<tr><td>{label}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            model.unwrap_or_else(|| "–".to_string()),
            baseline.unwrap_or_else(|| "–".to_string())
        );
    }
    html.push_str("</tbody></table>");

    if let Some(arena) = s["arena"].as_object().filter(|a| !a.is_empty()) {
        let bars: Vec<Bar> = arena
            .iter()
            .filter_map(|(opponent, r)| {
                let interval = r["ci95"]
                    .as_array()
                    .and_then(|ci| Some([ci.first()?.as_f64()?, ci.get(1)?.as_f64()?]));
                Some(Bar {
                    label: opponent,
                    value: r["bb_per_100"].as_f64()?,
                    interval,
                })
            })
            .collect();
        html.push_str("<h3>At the table: bb/100 per opponent, with its 95% interval</h3>");
        html.push_str(&bar_chart("bb/100 per opponent", &bars, ""));
        let hands: Vec<String> = arena
            .iter()
            .filter_map(|(o, r)| Some(format!("{} {}", escape(o), r["hands"].as_u64()?)))
            .collect();
        let _ = write!(
            html,
            "<p class=\"figures\">hands played: {}</p>",
            hands.join(" · ")
        );
    }

    if let Some(types) = s["by_spot_type"].as_object().filter(|t| !t.is_empty()) {
        let labels: Vec<String> = types
            .iter()
            .map(|(t, v)| format!("{t} ({})", v["spots"].as_u64().unwrap_or(0)))
            .collect();
        let rows: Vec<(&str, f64, f64)> = types
            .values()
            .zip(&labels)
            .map(|(v, label)| {
                (
                    label.as_str(),
                    v["accuracy"].as_f64().unwrap_or(0.0),
                    v["baseline"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        html.push_str("<h3>Action accuracy per spot type (spots)</h3>");
        html.push_str(&paired_shares(
            "action accuracy per spot type",
            &rows,
            ["model", "spot-type baseline"],
        ));
    }

    if let Some(confusion) = s["confusion"].as_object().filter(|c| !c.is_empty()) {
        confusion_table(html, confusion);
    }
    html.push_str("</section>");
}

/// `{expert: {model: count}}` as a table, each cell shaded by its share of
/// the expert's row, so the diagonal stands out.
fn confusion_table(html: &mut String, confusion: &serde_json::Map<String, Value>) {
    let mut columns: BTreeSet<&str> = confusion.keys().map(String::as_str).collect();
    for row in confusion.values() {
        columns.extend(
            row.as_object()
                .into_iter()
                .flat_map(|r| r.keys().map(String::as_str)),
        );
    }
    // "illegal" (an answer that does not parse) goes last.
    let mut columns: Vec<&str> = columns.into_iter().filter(|c| *c != "illegal").collect();
    if confusion.values().any(|r| r.get("illegal").is_some()) {
        columns.push("illegal");
    }
    html.push_str(
        "<h3>Confusion: the model's action (columns) where the expert chose (rows)</h3>\
         <table class=\"confusion\"><thead><tr><th>expert \\ model</th>",
    );
    for c in &columns {
        let _ = write!(html, "<th>{}</th>", escape(c));
    }
    html.push_str("</tr></thead><tbody>");
    for (expert, row) in confusion {
        let count = |c: &str| row.get(c).and_then(Value::as_u64).unwrap_or(0);
        let total: u64 = columns.iter().map(|c| count(c)).sum();
        let _ = write!(html, "<tr><th>{}</th>", escape(expert));
        for c in &columns {
            let n = count(c);
            let share = n as f64 / total.max(1) as f64;
            let _ = write!(
                html,
                "<td style=\"background:rgba(37,99,235,{:.2})\" title=\"{:.1}% of the expert's {}\">{n}</td>",
                share * 0.6,
                share * 100.0,
                escape(expert)
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
}

/// The mean of each point and the `window - 1` before it.
fn moving_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= window {
                sum -= points[i - window].1;
            }
            (x, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = seconds.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// Text for HTML element content and attribute values.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn moving_mean_averages_the_window_before_each_point() {
        let points = [(1.0, 4.0), (2.0, 2.0), (3.0, 6.0), (4.0, 0.0)];
        let mean = moving_mean(&points, 2);
        assert_eq!(mean, vec![(1.0, 4.0), (2.0, 3.0), (3.0, 4.0), (4.0, 3.0)]);
    }

    #[test]
    fn every_file_text_is_escaped() {
        let summary = serde_json::json!({
            "action_accuracy": 0.5,
            "arena": {"<b>bot</b>": {"bb_per_100": 3.0, "ci95": [-1.0, 7.0], "hands": 10}},
            "confusion": {"fold": {"<i>": 2}},
        });
        let report = Report {
            pipeline: "p&q".into(),
            preset: None,
            device: "cpu".into(),
            stages: vec![StageRow {
                name: "eval".into(),
                kind: "eval".into(),
                status: RowStatus::Ran,
                duration_s: Some(75.0),
                hash: "\"0123456789abcdef".into(),
                output: None,
                curves: BTreeMap::new(),
                summary,
            }],
        };
        let html = render(&report);
        assert!(!html.contains("<b>bot") && !html.contains("<i>") && !html.contains("p&q"));
        assert!(html.contains("&lt;b&gt;bot") && html.contains("1 min 15 s"));
    }
}
