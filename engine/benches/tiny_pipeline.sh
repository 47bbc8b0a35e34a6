#!/usr/bin/env bash
# The tiny pipeline end to end (issue 5, item 5): a release build runs
# pipelines/tiny.yaml from an empty cache in a scratch folder, twice, and
# prints one JSON object: wall seconds of each run and each stage (from the
# run table), the eval summary, and whether the two runs wrote identical
# outputs (same machine, same seed). Target: at most 300 s a run on 2 cores.
#
# Usage: engine/benches/tiny_pipeline.sh [RUNS]   (from the repository root;
# RUNS defaults to 2, and identity is checked when it is at least 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-2}"

cargo build --release -q -p poker-pipe
BIN="$PWD/target/release/poker-pipe"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

# Every run works in the same folder (outputs may name their absolute
# paths, e.g. an adapter's base model) and leaves its log and hashes.
for i in $(seq "$RUNS"); do
    work="$SCRATCH/work"
    dir="$SCRATCH/run$i"
    rm -rf "$work"
    mkdir -p "$work/pipelines" "$dir"
    cp pipelines/tiny.yaml "$work/pipelines/"
    start=$(date +%s%N)
    (cd "$work" && "$BIN" run pipelines/tiny.yaml >"$dir/log.txt" 2>&1)
    end=$(date +%s%N)
    echo $(((end - start) / 1000000)) >"$dir/wall_ms"
    cp "$work/runs/tiny/eval/summary.json" "$dir/eval.json"
    # Content of every output file, not the logs (they carry timings).
    (cd "$work/runs/tiny" && find -L . -type f ! -name training.log ! -name manifest.json -print0 \
        | sort -z | xargs -0 sha256sum) >"$dir/outputs.sha256"
done

python3 - "$SCRATCH" "$RUNS" <<'PY'
import json, pathlib, re, sys
scratch, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
out = {"runs": []}
for i in range(1, runs + 1):
    d = scratch / f"run{i}"
    stages = {}
    for line in (d / "log.txt").read_text(errors="replace").splitlines():
        m = re.match(r"^(\S+)\s+ran\s+([0-9.]+)s\s", line)
        if m:
            stages[m.group(1)] = float(m.group(2))
    out["runs"].append({"wall_s": int((d / "wall_ms").read_text()) / 1000, "stages_s": stages})
out["eval"] = json.loads((scratch / "run1/eval.json").read_text())
if runs >= 2:
    first = (scratch / "run1/outputs.sha256").read_text()
    out["identical_outputs"] = all(
        (scratch / f"run{i}/outputs.sha256").read_text() == first for i in range(2, runs + 1)
    )
    out["files_compared"] = len(first.splitlines())
print(json.dumps(out, indent=1))
PY
