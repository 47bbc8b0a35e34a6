//! `runs/<pipeline>/report.html`: `run` writes it with every stage of a
//! small whole recipe (the stage table, curves, the scorecard, bb/100 with
//! its interval, accuracy per spot type, the confusion matrix), `report`
//! rebuilds it from the cache and marks a stage whose inputs changed as
//! stale, and headless Chromium renders it with no console message and
//! nothing missing. The eval's progress lines are checked on the way.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn pipeline(hands: u32) -> String {
    format!(
        r#"name: rep
stages:
  data: {{kind: poker-data, scenarios: 400, pairs: 200, prompts: 32, style: compact, seed: 3, test_fraction: 0.25, heads_up_fraction: 1.0}}
  tokenizer: {{kind: tokenizer, data: [data.sft, data.pairs], vocab_size: 300}}
  sft:
    kind: sft
    data: data.sft
    tokenizer: tokenizer
    base: {{random: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2}}}}
    method: full
    optim: {{lr: 2.0e-3}}
    batch_size: 8
    epochs: 1
    max_seq_len: 96
    seed: 3
  reward: {{kind: reward, init: sft, data: data.pairs, test_data: data.test_pairs, batch_size: 8, epochs: 1, max_seq_len: 96, seed: 3}}
  rlhf: {{kind: ppo, actor: sft, critic: reward, prompts: data.prompts, batch_size: 8, max_new_tokens: 4, seed: 3}}
  eval:
    kind: eval
    model: rlhf.model
    sft: sft
    reward: reward
    scenarios: data.test_prompts
    train_prompts: data.prompts
    pairs: data.test_pairs
    max_new_tokens: 4
    arena: {{opponents: [random, calling-station], hands: {hands}, seed: 1}}
"#
    )
}

/// The status badge of `stage`'s row in the stage table.
fn status(html: &str, stage: &str) -> String {
    let row = html
        .split("<tr>")
        .find(|r| r.starts_with(&format!("<td>{stage}</td>")))
        .unwrap_or_else(|| panic!("no row for {stage}"));
    let badge = row.split("<span class=\"status ").nth(1).unwrap();
    badge[badge.find('>').unwrap() + 1..badge.find("</span>").unwrap()].to_string()
}

fn read_json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const STAGES: [&str; 6] = ["data", "tokenizer", "sft", "reward", "rlhf", "eval"];
/// sft loss, reward loss and accuracy, PPO reward, KL and entropy, bb/100,
/// spot types.
const CHARTS: usize = 8;

#[test]
fn run_writes_the_report_and_report_rebuilds_it_from_the_cache() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("p.yaml", &pipeline(200)).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("report: runs/rep/report.html"),
        "{}",
        text(&out)
    );
    // Off a terminal, eval reports its progress in plain lines too.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "eval answers: ",
        "eval arena vs random (deals): 100/100 (100%)",
        "eval arena vs calling-station (deals): 100/100 (100%)",
    ] {
        assert!(stderr.contains(line), "{line}: {stderr}");
    }
    let page = sandbox.path().join("runs/rep/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for stage in STAGES {
        assert_eq!(status(&html, stage), "ran", "{stage}");
    }
    assert_eq!(html.matches("<svg").count(), CHARTS);
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));

    // The figures are the eval summary's.
    let summary = read_json(sandbox.path().join("runs/rep/eval/summary.json"));
    let accuracy = summary["action_accuracy"].as_f64().unwrap();
    assert!(html.contains(&format!("{:.1}%", accuracy * 100.0)));
    for (spot_type, figures) in summary["by_spot_type"].as_object().unwrap() {
        let spots = figures["spots"].as_u64().unwrap();
        assert!(
            html.contains(&format!("{spot_type} ({spots})")),
            "{spot_type}"
        );
    }
    for opponent in ["random", "calling-station"] {
        let ci = &summary["arena"][opponent]["ci95"];
        assert!(ci.is_array(), "{summary}");
        assert!(html.contains(&format!(">{opponent}</text>")), "{opponent}");
    }
    let fold_row = summary["confusion"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap();
    assert!(html.contains(&format!("<tr><th>{fold_row}</th>")));
    render_in_chromium(&page);

    // `report` rebuilds it from the cache: everything is cached now.
    std::fs::remove_file(&page).unwrap();
    let out = sandbox.run(&["report", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    for stage in STAGES {
        assert_eq!(status(&html, stage), "cached", "{stage}");
    }
    assert_eq!(html.matches("<svg").count(), CHARTS);

    // An edited eval is not in the cache: its row shows the earlier run.
    sandbox.write("p.yaml", &pipeline(300)).unwrap();
    let out = sandbox.run(&["report", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(status(&html, "eval"), "stale");
    assert_eq!(status(&html, "rlhf"), "cached");
    assert_eq!(html.matches("<svg").count(), CHARTS);
}

/// Headless Chromium, or None (the test says SKIPPED).
fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("POKER_PIPE_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// Chromium's rendering of a page: the DOM after layout, the console
/// messages it logged, and a screenshot's size in bytes.
struct Rendered {
    dom: String,
    console: Vec<String>,
    screenshot_bytes: u64,
}

fn render(chromium: &Path, page: &Path) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let base = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ));
    };
    let mut dump = Command::new(chromium);
    base(&mut dump);
    let out = dump.arg("--dump-dom").arg(&url).output().unwrap();
    assert!(out.status.success(), "chromium: {}", text(&out));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let shot = dir.path().join("shot.png");
    let mut screenshot = Command::new(chromium);
    base(&mut screenshot);
    let out = screenshot
        .arg("--window-size=1000,1400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", text(&out));
    Rendered {
        dom,
        console,
        screenshot_bytes: std::fs::metadata(&shot).map_or(0, |m| m.len()),
    }
}

/// The page renders: no console message at all (it has no script, so any
/// is an error: a failed load, a parse error), every chart and table is in
/// the DOM after layout, and the screenshot is not a blank page. The
/// detector is first shown to catch a page with an error and a blank one.
fn render_in_chromium(page: &Path) {
    let Some(chromium) = chromium() else {
        println!("SKIPPED: Chromium rendering (no chromium; set POKER_PIPE_CHROMIUM)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><body><script>missing()</script></body></html>",
    )
    .unwrap();
    let broken = render(&chromium, &bad);
    assert!(
        broken
            .console
            .iter()
            .any(|l| l.contains("missing is not defined")),
        "the console check sees nothing: {:?}",
        broken.console
    );
    let blank_bytes = broken.screenshot_bytes;

    let rendered = render(&chromium, page);
    assert!(
        rendered.console.is_empty(),
        "console: {:#?}",
        rendered.console
    );
    assert_eq!(
        rendered.dom.matches("<svg").count(),
        CHARTS,
        "{}",
        rendered.dom
    );
    for stage in STAGES {
        assert!(
            rendered.dom.contains(&format!("<td>{stage}</td>")),
            "{stage}"
        );
    }
    assert!(
        rendered.screenshot_bytes > 4 * blank_bytes.max(1),
        "screenshot {} bytes, a blank page's {blank_bytes}",
        rendered.screenshot_bytes
    );
}
