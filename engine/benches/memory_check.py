#!/usr/bin/env python3
"""Check the memory planner against measured GPU memory, stage by stage.

For each pipeline and each of its memory presets, this runs every stage the
planner estimates (sft, reward and ppo: each on the pretrained model its
lineage descends from) once on the GPU (`run --until STAGE --force STAGE --preset P`; cached
upstream stages are reused, since presets never change a stage's hash),
samples the GPU's used memory every 20 ms with nvidia-smi, and compares the
peak above the idle baseline with the planner's `memory_estimate_bytes` from
`plan --format json`. The baseline is taken with no process on the GPU, so
the measured peak includes the CUDA context, which the planner counts under
`workspace`. The issue's bar: every stage within 10%.

Pipelines:
  - pipelines/tiny.yaml as shipped (the tiny model, started from random
    weights: planned from its architecture and its tokenizer's vocab_size);
  - pipelines/llama8b_lora.yaml with its data shrunk to a few dozen examples
    and one epoch (peak memory per step does not depend on how many steps
    run). The 8B weights must be reachable: in the hub cache (set
    HF_HUB_OFFLINE=1 on a machine without network) or via HF_TOKEN; or pass
    --model-8b DIR with a local folder in the Hugging Face layout. Without
    them, --skip-8b measures the tiny model alone.

Standard library only. Writes memory_check.json and memory_check.md to
--out and prints the table.

    cargo build --release -p poker-pipe
    python3 engine/benches/memory_check.py --out /tmp/memcheck
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIB = 1024.0**3
TOLERANCE = 0.10


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def gpu_used_mib():
    out = sh(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"])
    if out.returncode != 0:
        sys.exit(f"nvidia-smi failed: {out.stderr.strip()}")
    return float(out.stdout.strip().splitlines()[0])


class PeakSampler:
    """Polls the GPU's used memory in a thread; `peak` is the maximum seen."""

    def __init__(self, period_s=0.02):
        self.period_s = period_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, gpu_used_mib())
            time.sleep(self.period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def shrink_8b(text, model_dir):
    """The 8B pipeline with tiny data and one epoch: same shapes per step."""
    for field, value in (("scenarios", 64), ("pairs", 64), ("prompts", 24), ("hands", 20)):
        text = re.sub(rf"(\b{field}:\s*)\d+", rf"\g<1>{value}", text)
    text = re.sub(r"(\bepochs:\s*)\d+", r"\g<1>1", text)
    text = text.replace("name: llama8b_lora", "name: llama8b_memcheck")
    if model_dir:
        text = text.replace('"hf:meta-llama/Llama-3.1-8B"', json.dumps(str(model_dir)))
    return text


def preset_names(text):
    """The names under `memory_presets:` (written one flow mapping a line)."""
    block = text.split("memory_presets:", 1)[1].split("\npreset:", 1)[0]
    return re.findall(r"^\s+([\w.-]+):\s*\{", block, re.M)


def plan(binary, pipeline, preset, cwd):
    out = sh([binary, "plan", str(pipeline), "--format", "json", "--preset", preset,
              "--device", "cuda"], cwd=cwd)
    if out.returncode != 0:
        sys.exit(f"plan failed for {pipeline} / {preset}:\n{out.stderr}")
    return json.loads(out.stdout)


def measure(binary, pipeline, preset, stage, cwd, log):
    baseline = gpu_used_mib()
    args = [binary, "run", str(pipeline), "--until", stage, "--force", stage,
            "--preset", preset, "--device", "cuda"]
    started = time.time()
    with PeakSampler() as sampler:
        out = sh(args, cwd=cwd)
    log.write(f"$ {' '.join(args)}\n{out.stdout}\n{out.stderr}\n")
    if out.returncode != 0:
        return None, f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"
    peak_bytes = (sampler.peak - baseline) * 1024 * 1024
    return peak_bytes, f"{time.time() - started:.0f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO / "target/release/poker-pipe"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-8b", help="local folder with Llama 3.1 8B (HF layout)")
    ap.add_argument("--skip-8b", action="store_true")
    ap.add_argument("--presets", help="comma-separated preset names to measure (default: all)")
    args = ap.parse_args()

    if shutil.which("nvidia-smi") is None:
        sys.exit("no nvidia-smi: this check needs an NVIDIA GPU")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="memcheck-"))
    pipelines = [work / "tiny.yaml"]
    shutil.copy(REPO / "pipelines/tiny.yaml", pipelines[0])
    if not args.skip_8b:
        text = (REPO / "pipelines/llama8b_lora.yaml").read_text()
        pipelines.append(work / "llama8b_memcheck.yaml")
        pipelines[-1].write_text(shrink_8b(text, args.model_8b))
    wanted = set(args.presets.split(",")) if args.presets else None

    rows = []
    with open(out_dir / "memory_check.log", "w") as log:
        for pipeline in pipelines:
            presets = preset_names(pipeline.read_text())
            for preset in presets:
                if wanted and preset not in wanted:
                    continue
                planned = plan(args.bin, pipeline, preset, work)
                for stage in planned["stages"]:
                    estimate = stage.get("memory_estimate_bytes")
                    if estimate is None:
                        why = stage.get("memory_note") or "not a GPU training stage"
                        print(f"skip {planned['pipeline']}/{preset}/{stage['name']}: {why}", flush=True)
                        continue
                    measured, note = measure(args.bin, pipeline, preset, stage["name"], work, log)
                    ratio = measured / estimate if measured else None
                    rows.append({
                        "pipeline": planned["pipeline"], "preset": preset, "stage": stage["name"],
                        "estimate_bytes": estimate, "measured_bytes": measured,
                        "ratio": ratio, "within_10pct": ratio is not None and abs(ratio - 1) <= TOLERANCE,
                        "breakdown": stage.get("memory_breakdown"), "note": note,
                    })
                    print(json.dumps(rows[-1]), flush=True)

    (out_dir / "memory_check.json").write_text(json.dumps(rows, indent=2))
    lines = ["| pipeline | preset | stage | planned GiB | measured GiB | measured/planned | within 10% |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        measured = f"{r['measured_bytes'] / GIB:.2f}" if r["measured_bytes"] else f"failed ({r['note']})"
        ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
        lines.append(f"| {r['pipeline']} | {r['preset']} | {r['stage']} | {r['estimate_bytes'] / GIB:.2f} "
                     f"| {measured} | {ratio} | {'yes' if r['within_10pct'] else 'NO'} |")
    table = "\n".join(lines)
    (out_dir / "memory_check.md").write_text(table + "\n")
    print(table)
    return 0 if rows and all(r["within_10pct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
