"""Random ggml blocks and their values as llama.cpp's own Python package
(`gguf`, llama.cpp's gguf-py) dequantizes them, for the Rust dequantizer's
tests; plus q8_0 bytes as gguf-py quantizes random rows.

    .venv-golden/bin/python tests/golden/gguf/make_quant_fixture.py

writes tests/golden/gguf/quant.json.
"""

import json
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# (type, byte offsets of the f16 scale fields in one block)
SCALES = {
    T.Q8_0: [0],
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def blocks(rng, qtype, count):
    elems, size = quants.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(count, size), dtype=np.uint8)
    for at in SCALES[qtype]:
        scale = rng.uniform(-0.05, 0.05, size=count).astype(np.float16)
        raw[:, at : at + 2] = scale.view(np.uint8).reshape(count, 2)
    return raw.reshape(-1)


def main():
    rng = np.random.default_rng(20261128)
    out = {}
    for qtype in SCALES:
        raw = blocks(rng, qtype, 3)
        values = quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
        out[qtype.name] = {"raw_hex": raw.tobytes().hex(), "values": [float(v) for v in values]}
    for qtype, dtype in [(T.F16, np.float16), (T.F32, np.float32)]:
        x = rng.normal(0, 1, size=64).astype(dtype)
        raw = x.view(np.uint8)
        values = quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
        out[qtype.name] = {"raw_hex": raw.tobytes().hex(), "values": [float(v) for v in values]}
    bf = rng.normal(0, 1, size=64).astype(np.float32)
    raw = quants.quantize(bf, T.BF16).view(np.uint8).reshape(-1)
    values = quants.dequantize(raw, T.BF16).reshape(-1).astype(np.float32)
    out["BF16"] = {"raw_hex": raw.tobytes().hex(), "values": [float(v) for v in values]}
    rows = rng.normal(0, 0.5, size=(2, 64)).astype(np.float32)
    out["quantize_q8_0"] = {
        "input": [float(v) for v in rows.reshape(-1)],
        "raw_hex": quants.quantize(rows, T.Q8_0).tobytes().hex(),
    }
    path = pathlib.Path(__file__).with_name("quant.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
