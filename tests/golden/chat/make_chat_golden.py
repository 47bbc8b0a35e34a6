"""Chat templates rendered as transformers' `apply_chat_template` renders
them (jinja2's sandbox with trim_blocks, lstrip_blocks and loop controls,
`raise_exception`, special tokens as variables), for the Rust test of
engine/src/model/chat.rs.

    python3 tests/golden/chat/make_chat_golden.py [models/SmolLM2-135M-Instruct.Q4_1.gguf]

reads tests/golden/chat/templates.json (templates written for this test)
and, when a GGUF is given (needs the `gguf` package), that model's own
template and special tokens as "smollm2"; writes tests/golden/chat/rendered.json:
per template and prompt, the rendered prompt (with the generation prompt)
and the rendered exchange with the answer.
"""

import json
import pathlib
import sys

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).resolve().parent
EXCHANGES = [
    ("Hero holds AhKd on the button, 100bb deep. Villain folds. Action?", "raise 2.5"),
    ("  Board: Qs Jh 4c. Pot 12bb, to call 4bb. Fold, call or raise?  ", "call"),
    ("Stack 8bb, 72o under the gun:\nfold or shove?", "fold"),
]


def raise_exception(message):
    raise TemplateError(message)


def token_text(value):
    return value["content"] if isinstance(value, dict) else value


def render(spec, messages, add_generation_prompt):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(spec["chat_template"])
    specials = {
        name: token_text(spec[name])
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        if name in spec
    }
    return template.render(
        messages=messages, add_generation_prompt=add_generation_prompt, **specials
    )


def smollm2(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def field(name):
        f = reader.fields[name]
        return f.contents()

    tokens = field("tokenizer.ggml.tokens")
    return {
        "chat_template": field("tokenizer.chat_template"),
        "bos_token": tokens[field("tokenizer.ggml.bos_token_id")],
        "eos_token": tokens[field("tokenizer.ggml.eos_token_id")],
    }


def main():
    specs = json.loads((HERE / "templates.json").read_text())
    if len(sys.argv) > 1:
        specs["smollm2"] = smollm2(sys.argv[1])
    out = {}
    for name, spec in specs.items():
        out[name] = [
            {
                "user": user,
                "assistant": assistant,
                "prompt": render(spec, [{"role": "user", "content": user}], True),
                "exchange": render(
                    spec,
                    [
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": assistant},
                    ],
                    False,
                ),
            }
            for user, assistant in EXCHANGES
        ]
    (HERE / "rendered.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
