"""PyTorch twin of `poker-pipe bench adamw`: torch.optim.AdamW(fused=True) on
one flat f32 parameter of the same element count, with the same 30-byte
per-element traffic convention as the Rust bench (torch keeps no bf16 copy,
so it moves 28 bytes; the figure uses 30 for a like-for-like time ratio),
and the measured device-to-device copy bandwidth, printed as JSON.

    python engine/benches/adamw_twin.py --elements 268435456
"""

import argparse
import json

import torch


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
    p.add_argument("--elements", type=int, default=1 << 28)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    n = a.elements
    param = torch.nn.Parameter(torch.rand(n, device="cuda") * 2 - 1)
    param.grad = torch.rand(n, device="cuda") * 2 - 1
    opt = torch.optim.AdamW([param], lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01, fused=True)
    secs = timed(opt.step, a.iters)
    src = torch.empty(n, device="cuda")
    dst = torch.empty(n, device="cuda")
    copy_secs = timed(lambda: dst.copy_(src), 10)
    copy = 2 * 4 * n / copy_secs
    achieved = 30.0 * n / secs
    print(json.dumps({
        "bench": "adamw",
        "twin": "torch fused AdamW",
        "device": torch.cuda.get_device_name(),
        "elements": n,
        "ms": secs * 1e3,
        "gb_per_s": achieved / 1e9,
        "copy_gb_per_s": copy / 1e9,
        "fraction_of_copy": achieved / copy,
    }))


if __name__ == "__main__":
    main()
