//! Chat templates in training: a base whose tokenizer_config.json has a
//! chat template is trained on prompts rendered in it, by default; the
//! trained folder carries the template on (so eval prompts it the same
//! way); `chat_template: false` trains on bare prompts, writes no template
//! and is a different stage (another hash).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

/// The toy base's words only (others are `<unk>`): the template wraps the
/// spot in "your hand ... action", so training with and without it sees
/// different tokens.
const TEMPLATE: &str = "{% for m in messages %}{% if m.role == 'user' %}your hand {{ m.content }} action{% else %} {{ m.content }}{% endif %}{% endfor %}";

/// A copy of the toy base with a chat template beside its tokenizer.
fn base_with_template(sandbox: &Sandbox) -> PathBuf {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/mha");
    let base = sandbox.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(golden.join(file), base.join(file)).unwrap();
    }
    let config = serde_json::json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "chat_template": TEMPLATE,
    });
    std::fs::write(base.join("tokenizer_config.json"), config.to_string()).unwrap();
    base
}

fn pipeline(base: &Path, chat: &str) -> String {
    format!(
        r#"name: chat
model: {{base: "{}"}}
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl}}
  sft:
    kind: sft
    data: data.sft
    lora: {{rank: 4, alpha: 8, dropout: 0.0}}
    optim: {{lr: 2.0e-2}}
    batch_size: 8
    epochs: 2
    max_seq_len: 32{chat}
"#,
        base.display()
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sft_trains_in_the_chat_template_and_can_turn_it_off() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let base = base_with_template(&sandbox);
    let mut sft = String::new();
    for i in 0..16 {
        let (spot, answer) = [("two seven", "fold"), ("ace king", "raise")][i % 2];
        sft.push_str(&format!(
            "{{\"prompt\":\"{spot}\",\"response\":\"{answer}\"}}\n"
        ));
    }
    sandbox.write("sft.jsonl", &sft).unwrap();
    sandbox.write("on.yaml", &pipeline(&base, "")).unwrap();
    sandbox
        .write("off.yaml", &pipeline(&base, "\n    chat_template: false"))
        .unwrap();

    let hash = |file: &str| {
        let plan = sandbox.plan(file, &[]).unwrap();
        plan["stages"][1]["hash"].as_str().unwrap().to_string()
    };
    assert_ne!(hash("on.yaml"), hash("off.yaml"));

    let out_dir = sandbox.path().join("runs/chat/sft");
    let mut losses = Vec::new();
    for (file, on) in [("on.yaml", true), ("off.yaml", false)] {
        let out = sandbox.run(&["run", file]).unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let config = read_json(&out_dir.join("tokenizer_config.json"));
        assert_eq!(
            config["chat_template"].as_str() == Some(TEMPLATE),
            on,
            "{file}"
        );
        assert_eq!(config["eos_token"], "</s>", "{file}");
        losses.push(std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap());
    }
    // The template's words are in every prompt of one run and none of the
    // other: the two trainings saw different tokens.
    assert_ne!(losses[0], losses[1]);

    // eval answers through the trained folder with its template.
    sandbox.write("prompts.txt", "two seven\n").unwrap();
    sandbox.run(&["run", "on.yaml"]).unwrap();
    let eval = sandbox
        .run(&[
            "eval",
            "--model",
            out_dir.to_str().unwrap(),
            "--mode",
            "batch",
            "--test-file",
            "prompts.txt",
            "--temperature",
            "0",
        ])
        .unwrap();
    assert!(eval.status.success(), "{}", text(&eval));
}
