"""PyTorch twin of `poker-pipe bench train`: the same training step
(forward, masked-mean cross-entropy, backward, clip to norm 1, AdamW at lr
1e-4) on the same shapes, random weights and tokens, in eager mode on the
CPU, with the same thread count, or on a GPU (`--device cuda`: bf16
weights, as `bench train --device cuda`, with the peak from
torch.cuda.max_memory_allocated). Prints the same JSON.

    python engine/benches/train_twin.py --model-config engine/benches/tiny_config.json \
        --batch 4 --seq 128 --steps 10 --threads 2 [--lora-rank 8] [--device cuda]

Environment: tests/golden/requirements.txt (e.g. /work/venv-golden).
"""

import argparse
import json
import resource
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-config", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lora-rank", type=int)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--attn", default="sdpa", help="transformers attention implementation: sdpa or eager")
    ap.add_argument("--device", default="cpu", help="cpu (f32) or cuda (bf16 weights)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.model_config) as f:
        cfg = LlamaConfig(**json.load(f))
    model = LlamaForCausalLM._from_config(cfg, attn_implementation=args.attn)
    model = model.to(args.device, torch.bfloat16) if cuda else model.float()
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                 lora_dropout=0.0, target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq)).to(args.device)
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - start)
    total = sum(times)
    times.sort()
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq * args.steps / total,
        "step_ms_median": times[len(times) // 2] * 1e3,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_device_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }))


if __name__ == "__main__":
    main()
