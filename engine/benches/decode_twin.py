"""PyTorch twin of `poker-pipe bench decode`: greedy decoding of a LLaMA with
random weights (transformers, SDPA, static cache) from the same config.json,
a batch of distinct prompts, decode steps/s from the difference of a 1-token
and an N-token generate, against copy bandwidth / weight bytes (bf16 on
CUDA, f32 on the CPU), and the prefill's tokens/s, printed as JSON.

    python engine/benches/decode_twin.py --model-config CONFIG --new-tokens 64
    python engine/benches/decode_twin.py --model-config CONFIG --device cpu --batch 16 --prompt-len 130 --new-tokens 8
"""

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-config", required=True)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    a = p.parse_args()
    dev = a.device
    dtype, weight_bytes = (torch.bfloat16, 2.0) if dev == "cuda" else (torch.float32, 4.0)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    cfg = LlamaConfig.from_json_file(a.model_config)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dev, dtype).eval()
    params = sum(x.numel() for x in model.parameters())
    # The same distinct prompts as the Rust side.
    i = torch.arange(a.prompt_len, device=dev)[None]
    b = torch.arange(a.batch, device=dev)[:, None]
    prompt = (i * 7919 + b * 104729) % cfg.vocab_size

    def run(n):
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           cache_implementation="static", pad_token_id=0)
        sync()
        return time.perf_counter() - start

    run(2)
    short = run(1)
    long = run(a.new_tokens)
    per_step = (long - short) / (a.new_tokens - 1)
    n = 1 << 28
    src = torch.rand(n, device=dev)
    dst = torch.empty(n, device=dev)
    for _ in range(2):
        dst.copy_(src)
    sync()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync()
    copy = 2 * 4 * n * 10 / (time.perf_counter() - start)
    bound = copy / (weight_bytes * params)
    print(json.dumps({
        "bench": "decode",
        "twin": "transformers generate",
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "params": params,
        "batch": a.batch,
        "prompt_len": a.prompt_len,
        "new_tokens": a.new_tokens,
        "prefill_s": short,
        "prefill_tokens_per_s": a.batch * a.prompt_len / short,
        "steps_per_s": 1.0 / per_step,
        "tokens_per_s": a.batch / per_step,
        "bound_steps_per_s": bound,
        "fraction_of_bound": (1.0 / per_step) / bound,
        "copy_gb_per_s": copy / 1e9,
    }))


if __name__ == "__main__":
    main()
