"""Learning-rate schedules from HF transformers, for train::schedule's test.

Records the learning rate an optimizer sees at every step under
get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
get_cosine_schedule_with_warmup, for several warmup/total combinations.

Run from the repository root with the environment in tests/golden/requirements.txt:
    .venv-golden/bin/python tests/golden/schedule/make_fixture.py
It writes tests/golden/schedule/schedules.json.
"""

import json
import pathlib

import torch
import transformers
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

CASES = [
    # kind, base lr, warmup steps, total steps, extra steps past the end
    ("constant", 5e-4, 0, 20, 3),
    ("constant", 5e-4, 7, 20, 3),
    ("linear", 2e-5, 0, 25, 3),
    ("linear", 2e-5, 5, 25, 3),
    ("linear", 1e-3, 10, 10, 3),
    ("cosine", 5e-4, 0, 30, 3),
    ("cosine", 5e-6, 4, 30, 3),
    ("cosine", 5e-7, 3, 1, 3),
]


def rates(kind, lr, warmup, total, extra):
    param = torch.nn.Parameter(torch.zeros(1))
    optim = torch.optim.SGD([param], lr=lr)
    if kind == "constant":
        sched = get_constant_schedule_with_warmup(optim, warmup)
    elif kind == "linear":
        sched = get_linear_schedule_with_warmup(optim, warmup, total)
    else:
        sched = get_cosine_schedule_with_warmup(optim, warmup, total)
    out = []
    for _ in range(total + extra):
        out.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    return out


def main():
    cases = []
    for kind, lr, warmup, total, extra in CASES:
        cases.append(
            {
                "kind": kind,
                "lr": lr,
                "warmup_steps": warmup,
                "total_steps": total,
                "rates": rates(kind, lr, warmup, total, extra),
            }
        )
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}
    path = pathlib.Path(__file__).with_name("schedules.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
