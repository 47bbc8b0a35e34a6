"""Golden AdamW trajectory from torch.optim.AdamW, with gradient clipping by
global norm (torch.nn.utils.clip_grad_norm_) before every step.

Run from the repository root with the golden environment
(tests/golden/requirements.txt, e.g. /work/venv-golden):

    python tests/golden/adamw/make_fixture.py

Writes tests/golden/adamw/trajectory.safetensors: the hyper-parameters,
initial values of two parameters, the raw gradients and learning rate of
each of 10 steps, the pre-clip global norm, and both parameters after each
step.
"""

import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 10
LR, BETAS, EPS, WD, MAX_NORM = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0

torch.manual_seed(0)
a = torch.nn.Parameter(torch.randn(8, 6))
b = torch.nn.Parameter(torch.randn(30))
out = {
    "hyper": torch.tensor([LR, BETAS[0], BETAS[1], EPS, WD, MAX_NORM], dtype=torch.float64),
    "a.init": a.detach().clone(),
    "b.init": b.detach().clone(),
}
opt = torch.optim.AdamW([a, b], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
for step in range(STEPS):
    lr = LR * (1.0 - step / STEPS)
    for group in opt.param_groups:
        group["lr"] = lr
    # Gradients large enough that clipping is active on some steps only.
    scale = 0.05 if step % 2 == 0 else 0.5
    a.grad = scale * torch.randn_like(a)
    b.grad = scale * torch.randn_like(b)
    out[f"step{step}.grad.a"] = a.grad.clone()
    out[f"step{step}.grad.b"] = b.grad.clone()
    out[f"step{step}.lr"] = torch.tensor([lr], dtype=torch.float64)
    norm = torch.nn.utils.clip_grad_norm_([a, b], MAX_NORM)
    out[f"step{step}.norm"] = norm.reshape(1).double()
    opt.step()
    out[f"step{step}.a"] = a.detach().clone()
    out[f"step{step}.b"] = b.detach().clone()
save_file(out, os.path.join(HERE, "trajectory.safetensors"))
print("wrote", os.path.join(HERE, "trajectory.safetensors"))
