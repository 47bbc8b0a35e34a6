"""PyTorch twin of `poker-pipe bench decode`: batch-1 greedy decoding of a
LLaMA with random weights (transformers, bf16, SDPA, static cache) from the
same config.json, tokens/s from the difference of a 1-token and an N-token
generate, against copy bandwidth / (2 bytes x parameters), printed as JSON.

    python engine/benches/decode_twin.py --model-config CONFIG --new-tokens 64
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
    a = p.parse_args()
    cfg = LlamaConfig.from_json_file(a.model_config)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    params = sum(x.numel() for x in model.parameters())
    prompt = (torch.arange(a.prompt_len, device="cuda") * 7919 % cfg.vocab_size)[None]

    def run(n):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           cache_implementation="static", pad_token_id=0)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    run(2)
    short = run(1)
    long = run(a.new_tokens)
    per_token = (long - short) / (a.new_tokens - 1)
    n = 1 << 28
    src = torch.empty(n, device="cuda")
    dst = torch.empty(n, device="cuda")
    for _ in range(2):
        dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    copy = 2 * 4 * n * 10 / (time.perf_counter() - start)
    bound = copy / (2.0 * params)
    print(json.dumps({
        "bench": "decode",
        "twin": "transformers generate",
        "device": torch.cuda.get_device_name(),
        "params": params,
        "tokens_per_s": 1.0 / per_token,
        "bound_tokens_per_s": bound,
        "fraction_of_bound": (1.0 / per_token) / bound,
        "copy_gb_per_s": copy / 1e9,
    }))


if __name__ == "__main__":
    main()
