//! Loading a model never widens the whole of it on the host: the
//! safetensors files are mapped and each tensor is read, widened and
//! uploaded before the next. With bf16 weights (`CpuBf16`) the most heap the
//! load holds is the bf16 model plus about one tensor in f32, well under the
//! model in f32. Its own process, so no other test allocates meanwhile.

#![allow(clippy::unwrap_used)]

use poker_pipe::backend::{Cpu, CpuBf16, meter};
use poker_pipe::model::{Llama, LlamaConfig};

#[test]
fn loading_holds_at_most_one_tensor_in_f32() {
    let config = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 8192, "hidden_size": 256, "intermediate_size": 688,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "tie_word_embeddings": false
    }"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let cfg = LlamaConfig::load(&dir.path().join("config.json")).unwrap();
    let mut model = Llama::random(&Cpu, cfg, 7).unwrap();
    model.save_weights(&Cpu, dir.path()).unwrap();
    let params: usize = model.params_mut().iter().map(|p| p.numel()).sum();
    let largest = 8192 * 256;
    drop(model);

    let base = meter::current();
    meter::reset_peak();
    let loaded = Llama::load(&CpuBf16, dir.path()).unwrap();
    let peak = meter::peak() - base;
    let (f32_model, bf16_model) = (4 * params as u64, 2 * params as u64);
    println!("peak {peak} B; model f32 {f32_model} B, bf16 {bf16_model} B");
    assert!(
        peak < bf16_model + 4 * largest as u64 + (1 << 20),
        "loading held {peak} B: more than the bf16 model and one f32 tensor"
    );
    assert!(
        peak < f32_model,
        "loading held {peak} B, the f32 model is {f32_model}"
    );
    drop(loaded);
}
