//! Ctrl-C is honoured within a second in the data stage, with the exit
//! code 130 also when `--until` selects only that stage, and the stage
//! reports its progress with an ETA on stderr meanwhile.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use poker_pipe_tests::{Sandbox, signal};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const PIPELINE: &str = "name: big\nstages:\n  data: {kind: poker-data, scenarios: 5000000, pairs: 10, prompts: 10}\n  tokenizer: {kind: tokenizer, data: [data.sft], vocab_size: 300}\n";

#[test]
fn ctrl_c_stops_the_data_stage_within_a_second_and_exits_130() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("p.yaml", PIPELINE).unwrap();
    let mut child = sandbox
        .spawn(&["run", "p.yaml", "--until", "data"], &[])
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The first progress line shows that generation is under way.
    while !seen.contains("ETA") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    assert!(seen.contains("data: "), "{seen}");
    let asked = Instant::now();
    signal(&child, "INT").unwrap();
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(rest.contains("interrupted"), "{rest}");
}
