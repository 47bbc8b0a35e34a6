"""PyTorch twin of `poker-pipe bench attention`: causal GQA attention forward
and backward with torch scaled_dot_product_attention in bf16, same shapes and
FLOP count (causal half: forward 2*B*H*T^2*D, backward 2.5x), printed as JSON.

    python engine/benches/attention_twin.py --seq 2048,4096
"""

import argparse
import json

import torch
import torch.nn.functional as F


def timed(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", default="2048,4096")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    rows = []
    for seq in [int(s) for s in a.seq.split(",")]:
        shape_q = (a.batch, a.heads, seq, a.head_dim)
        shape_kv = (a.batch, a.kv_heads, seq, a.head_dim)
        dev, dt = "cuda", torch.bfloat16
        q = torch.randn(shape_q, device=dev, dtype=dt, requires_grad=True)
        k = torch.randn(shape_kv, device=dev, dtype=dt, requires_grad=True)
        v = torch.randn(shape_kv, device=dev, dtype=dt, requires_grad=True)
        d_o = torch.randn(shape_q, device=dev, dtype=dt)

        def fwd():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        out = fwd()

        def bwd():
            torch.autograd.grad(out, (q, k, v), d_o, retain_graph=True)

        t_fwd = timed(fwd, a.iters)
        t_bwd = timed(bwd, a.iters)
        flops = 2.0 * a.batch * a.heads * seq * seq * a.head_dim
        rows.append({
            "seq": seq,
            "fwd_ms": t_fwd * 1e3,
            "bwd_ms": t_bwd * 1e3,
            "fwd_tflops": flops / t_fwd / 1e12,
            "bwd_tflops": 2.5 * flops / t_bwd / 1e12,
        })
    print(json.dumps({
        "bench": "attention",
        "twin": "torch sdpa",
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "results": rows,
    }))


if __name__ == "__main__":
    main()
