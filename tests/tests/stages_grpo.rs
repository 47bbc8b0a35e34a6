//! The `grpo` stage on a tiny random LLaMA: it trains with the expert's
//! verifiable reward (and a reward model mixed in), logs PPO's figures,
//! writes a loadable actor, raises the exact expected score of its answers,
//! and, interrupted after a checkpoint and run again, ends with
//! byte-identical outputs.

#![allow(clippy::unwrap_used)]

mod stages_ppo_support;

use std::path::Path;

use poker_pipe::backend::Cpu;
use poker_pipe::graph::{Cancel, Outcome, StageKind};
use poker_pipe::model::batch::Batch;
use poker_pipe::model::load::load_dir;
use poker_pipe::model::lora;
use poker_pipe::stages::grpo::{Grpo, GrpoParams, Score};
use poker_pipe::stages::rl::read_prompts;
use poker_pipe::stages::{CAUSAL_LM, PROMPT_SET, REWARD_MODEL};
use stages_ppo_support::{Fixture, context, fixture};

fn params(extra: serde_json::Value) -> GrpoParams {
    let mut base = serde_json::json!({
        "actor": "sft", "prompts": "data.prompts", "lr": 1e-3, "group_size": 4,
        "batch_size": 6, "max_new_tokens": 3, "seed": 9
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn run(f: &Fixture, root: &Path, p: &GrpoParams, cancel: Cancel) -> Outcome {
    run_in(f, root, p, cancel, None)
}

/// [`run`] with micro-batches of `micro` sequences instead of the
/// fixture's 4.
fn run_in(f: &Fixture, root: &Path, p: &GrpoParams, cancel: Cancel, micro: Option<u32>) -> Outcome {
    let mut inputs = vec![
        ("actor", f.sft.clone(), CAUSAL_LM),
        ("prompts", f.data.join("prompts.jsonl"), PROMPT_SET),
    ];
    if p.reward_model.is_some() {
        inputs.push(("reward_model", f.reward.clone(), REWARD_MODEL));
    }
    let mut ctx = context("grpo", root, &inputs, cancel).unwrap();
    if let Some(micro) = micro {
        ctx.exec.micro_batch = micro;
    }
    match Grpo.run(p, &mut ctx) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{:?}", e.report),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn grpo_trains_with_a_reward_model_mixed_in_and_writes_a_loadable_actor() {
    let f = fixture().unwrap();
    let root = f.dir.path().join("run");
    let p = params(serde_json::json!({
        "reward_model": "reward", "reward_weight": 0.5, "iterations": 2
    }));
    assert_eq!(run(&f, &root, &p, Cancel::new()), Outcome::Done);
    let out = root.join("out");
    // 18 training prompts in batches of 6, 4 answers each.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in [
            "reward",
            "kl",
            "entropy",
            "clip_fraction",
            "policy_loss",
            "grad_norm",
            "response_tokens",
            "legal",
            "ev_reward",
            "kl_k3",
            "zero_spread_groups",
            "model_score",
        ] {
            assert!(
                v[key].as_f64().is_some_and(f64::is_finite),
                "{key} in {line}"
            );
        }
        let legal = v["legal"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&legal), "{line}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 3);
    assert_eq!(summary["group_size"], 4);
    let actor = load_dir(&Cpu, &out.join("actor")).unwrap();
    assert!(actor.adapter.is_some());
    let adapter = |d: &Path| {
        poker_pipe::model::weights::load_file(&d.join("adapter_model.safetensors")).unwrap()
    };
    let (a, s) = (adapter(&out.join("actor")), adapter(&f.sft));
    let moved = a.iter().any(|(k, t)| t.data != s[k].data);
    assert!(moved, "the actor equals the SFT adapter");
}

/// Interrupted and resumed in micro-batches of one sequence (the straight
/// run takes 4 at a time), GRPO ends with the same bytes: roll-outs, scores
/// and updates do not depend on the micro-batch either.
#[test]
fn interrupted_grpo_resumes_to_identical_outputs() {
    let f = fixture().unwrap();
    let p = params(serde_json::json!({"batch_size": 3, "epochs": 2, "checkpoint_every": 2}));
    let whole = f.dir.path().join("whole");
    assert_eq!(run(&f, &whole, &p, Cancel::new()), Outcome::Done);

    // Ctrl-C as soon as the first checkpoint is on disk, then run again in
    // the same work folder.
    let parts = f.dir.path().join("parts");
    let cancel = Cancel::new();
    let watcher = {
        let cancel = cancel.clone();
        let ckpt = parts.join("work").join("checkpoint.safetensors");
        std::thread::spawn(move || {
            while !ckpt.exists() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            cancel.cancel();
        })
    };
    assert_eq!(
        run_in(&f, &parts, &p, cancel, Some(1)),
        Outcome::Interrupted
    );
    watcher.join().unwrap();
    let _ = std::fs::remove_dir_all(parts.join("out"));
    assert_eq!(
        run_in(&f, &parts, &p, Cancel::new(), Some(1)),
        Outcome::Done
    );
    for file in [
        "actor/adapter_model.safetensors",
        "metrics.jsonl",
        "summary.json",
    ] {
        assert!(
            read(&whole.join("out").join(file)) == read(&parts.join("out").join(file)),
            "{file} differs after resume"
        );
    }
    let log = std::fs::read_to_string(parts.join("work").join("training.log")).unwrap();
    assert!(
        log.contains("resuming from the checkpoint of step"),
        "{log}"
    );
}

/// The exact expected score (`Score::total`) of one-token answers to the
/// training prompts under `policy`, averaged over prompts: for each prompt,
/// the sum over the vocabulary of p(token | prompt) (temperature 1, as
/// roll-outs sample) times the score of that token as the answer, the
/// reward model's part included. No sampling, so two policies compare
/// without noise.
fn expected_score(policy: &Path, f: &Fixture, p: &GrpoParams) -> f64 {
    let be = Cpu;
    let mut lm = load_dir(&be, policy).unwrap();
    lora::set_merged(&be, &mut lm.model, true);
    let mut rm = load_dir(&be, &f.reward).unwrap();
    lora::set_merged(&be, &mut rm.model, true);
    let vocab = lm.model.cfg.vocab_size;
    let prompts = read_prompts(&f.data.join("prompts.jsonl")).unwrap();
    let answers: Vec<String> = (0..vocab as u32)
        .map(|t| lm.tokenizer.decode(&[t]).unwrap())
        .collect();
    let mut total = 0.0;
    for record in &prompts {
        let prompt = lm.tokenizer.encode(&record.text, true).unwrap();
        let logits = lm
            .model
            .logits(&be, &Batch::left_padded(std::slice::from_ref(&prompt), 1));
        let last = &logits[(prompt.len() - 1) * vocab..prompt.len() * vocab];
        let top = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = last.iter().map(|&l| f64::from(l - top).exp()).collect();
        let z: f64 = weights.iter().sum();
        let sequences: Vec<Vec<u32>> = (0..vocab as u32)
            .map(|t| [prompt.as_slice(), &[t]].concat())
            .collect();
        let model = rm
            .model
            .scores(&be, &Batch::left_padded(&sequences, 1))
            .unwrap();
        total += weights
            .iter()
            .zip(answers.iter().zip(&model))
            .map(|(w, (answer, &m))| {
                let score = Score::of(record, answer, p.illegal_penalty, f64::from(m));
                w / z * f64::from(score.total(p))
            })
            .sum::<f64>();
    }
    total / prompts.len() as f64
}

#[test]
fn grpo_raises_the_expected_score() {
    let f = fixture().unwrap();
    let root = f.dir.path().join("learn");
    // One-token answers from a near-uniform random policy over about 200
    // tokens, of which a handful are legal, so most groups of the
    // verifiable reward alone score alike and teach nothing; the (random)
    // reward model's score differs for every token and carries the signal
    // the group advantages follow, as in PPO's test.
    let p = params(serde_json::json!({
        "lr": 3e-2, "beta": 0.0, "max_new_tokens": 1, "group_size": 8,
        "batch_size": 18, "epochs": 12, "iterations": 2,
        "reward_model": "reward", "reward_weight": 1.0, "ev_weight": 0.1, "legal_weight": 0.1
    }));
    assert_eq!(run(&f, &root, &p, Cancel::new()), Outcome::Done);
    let before = expected_score(&f.sft, &f, &p);
    let after = expected_score(&root.join("out/actor"), &f, &p);
    println!("expected score {before} -> {after}");
    assert!(after > before + 0.02, "expected score {before} -> {after}");
}

/// `validate` reports GRPO's reward mistakes at their lines: a reward
/// weight with no reward model, a reward model never read, every weight 0.
#[test]
fn validate_points_at_grpo_reward_mistakes() {
    let sandbox = poker_pipe_tests::Sandbox::new(env!("CARGO_BIN_EXE_pp-test")).unwrap();
    let yaml = "name: g
stages:
  data: {kind: poker-data, scenarios: 40, pairs: 20, prompts: 20, style: compact}
  tokenizer: {kind: tokenizer, data: [data.sft], vocab_size: 300}
  sft:
    kind: sft
    data: data.sft
    tokenizer: tokenizer
    base: {random: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2}}
    method: full
  reward: {kind: reward, init: sft, data: data.pairs}
  a:
    kind: grpo
    actor: sft
    prompts: data.prompts
    reward_weight: 0.5
  b:
    kind: grpo
    actor: sft
    prompts: data.prompts
    reward_model: reward
  c:
    kind: grpo
    actor: sft
    prompts: data.prompts
    ev_weight: 0
    legal_weight: 0
";
    sandbox.write("g.yaml", yaml).unwrap();
    let found = sandbox.problems("g.yaml").unwrap();
    let at = |needle: &str| {
        found
            .iter()
            .find(|p| p["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no `{needle}` in {found:#?}"))["line"]
            .as_u64()
    };
    assert_eq!(at("needs a `reward_model`"), Some(16));
    assert_eq!(at("loaded and never read"), Some(21));
    assert_eq!(at("every reward weight is 0"), Some(26));
    assert_eq!(found.len(), 3, "{found:#?}");
}
