//! Equity against an independent evaluator: the fixture in
//! tests/golden/equity/ was computed with eval7 (see make_fixture.py).
//! Exact cases agree within 0.002; Monte Carlo within 3 standard errors.

use std::path::Path;

use poker_pipe::poker::cards::{parse_board, parse_hole};
use poker_pipe::poker::equity::{DEFAULT_EXACT_LIMIT, Holding, Method, equity};
use poker_pipe::poker::range::parse_range;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture() -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/equity/equity_cases.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(json["cases"].as_array().ok_or("no cases")?.clone())
}

fn holdings(case: &Value) -> Result<Vec<Holding>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for hand in case["hands"].as_array().ok_or("no hands")? {
        out.push(Holding::Hand(parse_hole(hand.as_str().ok_or("hand")?)?));
    }
    if let Some(range) = case["range"].as_str() {
        out.push(Holding::Range(parse_range(range)?.combos));
    }
    Ok(out)
}

#[test]
fn exact_cases_match_eval7() -> TestResult {
    let mut checked = 0;
    for case in fixture()? {
        if case["method"] != "exact" {
            continue;
        }
        let board = parse_board(case["board"].as_str().ok_or("board")?)?;
        let ours = equity(&holdings(&case)?, &board, 0, 0, DEFAULT_EXACT_LIMIT)?;
        assert_eq!(ours.method, Method::Exact, "{case}");
        assert_eq!(Some(ours.samples), case["samples"].as_u64(), "{case}");
        for (mine, theirs) in ours
            .equity
            .iter()
            .zip(case["equity"].as_array().ok_or("eq")?)
        {
            let theirs = theirs.as_f64().ok_or("eq")?;
            assert!((mine - theirs).abs() < 0.002, "{case}: {mine} vs {theirs}");
        }
        checked += 1;
    }
    assert!(checked >= 10);
    Ok(())
}

#[test]
fn monte_carlo_cases_match_eval7_within_three_standard_errors() -> TestResult {
    let mut checked = 0;
    for case in fixture()? {
        if case["method"] != "monte-carlo" {
            continue;
        }
        let board = parse_board(case["board"].as_str().ok_or("board")?)?;
        let ours = equity(&holdings(&case)?, &board, 200_000, 5, DEFAULT_EXACT_LIMIT)?;
        assert_eq!(ours.method, Method::MonteCarlo);
        let theirs = case["equity"][0].as_f64().ok_or("eq")?;
        let their_se = case["std_error"].as_f64().ok_or("se")?;
        let se = (ours.std_error[0].powi(2) + their_se.powi(2)).sqrt();
        assert!(se > 0.0 && se < 0.002, "{case}: se {se}");
        assert!(
            (ours.equity[0] - theirs).abs() < 3.0 * se,
            "{case}: {} vs {theirs} (se {se})",
            ours.equity[0]
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
    Ok(())
}
