"""Golden fixture for LoRA reward models, made with transformers + PEFT.

Run from the repository root with the golden environment
(tests/golden/requirements.txt, e.g. /work/venv-golden):

    python tests/golden/reward_lora/make_fixture.py

On the tiny MHA checkpoint of tests/golden/llama/mha, loaded as a one-label
LlamaForSequenceClassification, it attaches a PEFT LoRA adapter (task
SEQ_CLS, random non-zero A and B, a random score head, which PEFT saves as
`modules_to_save`) and writes it to `adapter/` exactly as `save_pretrained`
does, with `base_model_name_or_path` pointing at the MHA folder relative to
the adapter. `expected.json` holds a few token sequences and the score
transformers + PEFT give each (one sequence per forward, no padding). The
Rust test `stages_reward_lora` loads the adapter through `load_dir` (eval's
way in) and compares its scores.
"""

import json
import os

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "llama", "mha")

torch.manual_seed(23)
model = LlamaForSequenceClassification.from_pretrained(BASE, num_labels=1, dtype=torch.float32)
with torch.no_grad():
    model.score.weight.normal_(0.0, 0.5)
config = LoraConfig(
    task_type="SEQ_CLS",
    r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    target_modules=["q_proj", "v_proj", "down_proj"],
)
peft = get_peft_model(model, config)
with torch.no_grad():
    for name, param in peft.named_parameters():
        if "lora_" in name:
            param.normal_(0.0, 0.2)
peft.peft_config["default"].base_model_name_or_path = "../../llama/mha"
peft.save_pretrained(os.path.join(HERE, "adapter"))
os.remove(os.path.join(HERE, "adapter", "README.md"))  # PEFT's model card
peft.eval()

generator = torch.Generator().manual_seed(5)
sequences = [
    torch.randint(3, 96, (length,), generator=generator).tolist() for length in (3, 7, 12, 20)
]
with torch.no_grad():
    scores = [peft(input_ids=torch.tensor([seq])).logits[0, 0].item() for seq in sequences]
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump({"sequences": sequences, "scores": scores}, f, indent=1)
print(json.dumps(scores))
