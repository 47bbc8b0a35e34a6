"""Checks that GGUF files written by `poker-pipe export` are accepted by
llama.cpp's own reader (the `gguf` package) and, when torch and
transformers are installed, by transformers' GGUF loader, whose
log-probabilities must match the committed ones of the original model
(smollm2_logprobs.json) within each encoding's tolerance.

    poker-pipe export gguf:models/SmolLM2-135M-Instruct.Q4_1.gguf --format gguf --quant f16 --out /tmp/f16.gguf
    .venv-golden/bin/python tests/golden/gguf/check_export.py /tmp/f16.gguf 2e-2 [--reader-only]

Exits non-zero on any failure; prints one JSON line per checked file.
"""

import json
import pathlib
import sys

from gguf import GGUFReader


def main():
    path = pathlib.Path(sys.argv[1]).resolve()
    tolerance = float(sys.argv[2])
    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    assert arch == "llama", arch
    names = {t.name for t in reader.tensors}
    assert "token_embd.weight" in names and "blk.0.attn_q.weight" in names, sorted(names)[:5]
    result = {"file": path.name, "reader": "ok", "tensors": len(reader.tensors)}
    if "--reader-only" not in sys.argv:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        golden = json.loads(pathlib.Path(__file__).with_name("smollm2_logprobs.json").read_text())
        worst = 0.0
        for line in golden["lines"]:
            ids = line["ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
            got = sum(float(logp[i - 1, ids[i]]) for i in range(1, len(ids)))
            want = sum(line["logprobs"])
            worst = max(worst, abs(got - want) / abs(want))
        # The relative error of a line's total log-probability, as the Rust test measures it.
        result["transformers_line_relative"] = worst
        assert worst < tolerance, result
    print(json.dumps(result))


if __name__ == "__main__":
    main()
