"""Golden fixtures for our LLaMA, made with HF transformers + PEFT.

Run from the repository root with the golden environment
(tests/golden/requirements.txt, e.g. /work/venv-golden):

    python tests/golden/llama/make_fixtures.py

For every tiny random checkpoint (MHA, GQA 4:1 with llama3 rope scaling and
an explicit head_dim, tied embeddings in the newer `rope_parameters` config
form) it writes `<name>/` with config.json, model.safetensors and
tokenizer.json, and `<name>/expected.safetensors` holding the token batch,
the loss mask, the logits, the masked mean loss and the gradient of every
parameter (`grad.<hf name>`). `lora/` adds a PEFT adapter (random, non-zero
B) on the MHA model with the gradients of every LoRA parameter; `reward/` is
a LlamaForSequenceClassification with scores at the last non-pad token.

The last step checks an adapter *our* code saved (tests/golden/llama/
rust_adapter/, written by the Rust test `llama_lora` with
POKER_PIPE_WRITE_FIXTURES=1): PEFT loads it onto the MHA model and its
logits are compared with the logits our code recorded beside it; the result
goes to rust_adapter/peft_check.json.
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 96
WORDS = (
    "fold check call bet raise all in pot flop turn river ace king queen jack ten "
    "nine eight seven six five four three two hearts spades clubs diamonds button "
    "small big blind preflop stack you have the board is to act with a and of on "
    "your hand position action"
).split()


def tokenizer():
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    i = 0
    while len(vocab) < VOCAB:
        vocab.setdefault(f"w{i}", len(vocab))
        i += 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def config(name):
    base = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5,
        max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=False, attn_implementation="eager",
    )
    if name == "gqa":
        base.update(num_attention_heads=8, num_key_value_heads=2, head_dim=8, eos_token_id=[2, 5],
                    rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=4.0,
                                         low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=16))
    if name == "tied":
        base.update(tie_word_embeddings=True)
    return LlamaConfig(**base)


def hub_form(path, rope_scaling):
    """Rewrites a saved config.json in the form the hub publishes for Llama
    3.1: top-level rope_theta, optional rope_scaling, no rope_parameters."""
    with open(path) as f:
        cfg = json.load(f)
    params = cfg.pop("rope_parameters", {}) or {}
    cfg["rope_theta"] = params.get("rope_theta", 10000.0)
    if rope_scaling:
        cfg["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def batch(seed, b=2, t=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (b, t), generator=g)
    mask = (torch.rand(b, t, generator=g) > 0.3).float()
    mask[:, 1] = 1.0
    return ids, mask


def masked_loss(logits, ids, mask):
    """Mean of -log p(ids[t+1] | ids[..t]) over positions whose target is in
    the mask: the loss our SFT uses."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:]
    return (nll * m).sum() / m.sum()


def save_model(model, out):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer().save(os.path.join(out, "tokenizer.json"))


def causal(name, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config(name)).float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)
    out = os.path.join(HERE, name)
    save_model(model, out)
    if name in ("mha", "gqa"):
        hub_form(os.path.join(out, "config.json"), rope_scaling=name == "gqa")
    ids, mask = batch(seed)
    logits = model(input_ids=ids).logits
    loss = masked_loss(logits, ids, mask)
    loss.backward()
    expected = {"input_ids": ids, "loss_mask": mask, "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for n, p in model.named_parameters():
        expected[f"grad.{n}"] = p.grad
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    return model


def lora(base_dir, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir, attn_implementation="eager").float()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.1)
    out = os.path.join(HERE, "lora")
    if os.path.exists(out):
        shutil.rmtree(out)
    peft.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))
    with open(os.path.join(out, "adapter_config.json")) as f:
        adapter_cfg = json.load(f)
    adapter_cfg["base_model_name_or_path"] = "../mha"
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(adapter_cfg, f, indent=2)
    ids, mask = batch(seed)
    logits = peft(input_ids=ids).logits
    loss = masked_loss(logits, ids, mask)
    loss.backward()
    expected = {"input_ids": ids, "loss_mask": mask, "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for n, p in peft.named_parameters():
        if p.requires_grad:
            # PEFT's file names drop the adapter name: ...lora_A.weight.
            expected["grad." + n.replace(".default", "")] = p.grad
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))


def reward(seed):
    torch.manual_seed(seed)
    cfg = config("mha")
    cfg.num_labels = 1
    model = LlamaForSequenceClassification(cfg).float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" not in n:
                p.normal_(0.0, 0.2)
    out = os.path.join(HERE, "reward")
    save_model(model, out)
    ids, _ = batch(seed, b=3, t=6)
    # Right padding: row 1 has 2 pads, row 2 has 4 (pad id 0).
    ids[1, 4:] = 0
    ids[2, 2:] = 0
    attn = (ids != 0).long()
    scores = model(input_ids=ids, attention_mask=attn).logits[:, 0]
    coef = torch.tensor([0.7, -1.3, 0.4])
    (scores * coef).sum().backward()
    expected = {"input_ids": ids, "scores": scores.detach(), "coef": coef}
    for n, p in model.named_parameters():
        expected[f"grad.{n}"] = p.grad
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))


def score_lines():
    """Expected output of `poker-pipe eval --mode score` on score_input.txt
    with the MHA model: token counts (BOS included) and summed logprobs."""
    model = LlamaForCausalLM.from_pretrained(os.path.join(HERE, "mha")).float()
    tok = tokenizer()
    with open(os.path.join(HERE, "score_input.txt")) as f:
        lines = f.read().splitlines()
    counts, logprobs = [], []
    for line in lines:
        ids = torch.tensor([tok.encode(line).ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
        counts.append(ids.shape[1])
        logprobs.append(logp.gather(-1, ids[0, 1:, None]).sum().item())
    save_file({"tokens": torch.tensor(counts, dtype=torch.float32),
               "logprob": torch.tensor(logprobs, dtype=torch.float32)},
              os.path.join(HERE, "score_expected.safetensors"))


def check_rust_adapter():
    from peft import PeftModel

    adapter = os.path.join(HERE, "rust_adapter")
    if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
        print("no rust_adapter yet: run the Rust test llama_lora with POKER_PIPE_WRITE_FIXTURES=1, then rerun")
        return
    base = LlamaForCausalLM.from_pretrained(os.path.join(HERE, "mha"), attn_implementation="eager").float()
    model = PeftModel.from_pretrained(base, adapter).eval()
    ours = load_file(os.path.join(adapter, "rust_logits.safetensors"))
    with torch.no_grad():
        logits = model(input_ids=ours["input_ids"].long()).logits
    err = ((logits - ours["logits"]).norm() / ours["logits"].norm()).item()
    result = {"peft_version": __import__("peft").__version__, "rel_err": err, "ok": err < 1e-4}
    with open(os.path.join(adapter, "peft_check.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("rust adapter in PEFT:", result)


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    causal("mha", 1)
    causal("gqa", 2)
    causal("tied", 3)
    lora(os.path.join(HERE, "mha"), 4)
    reward(5)
    score_lines()
    check_rust_adapter()
