#!/usr/bin/env bash
# The GPU acceptance suite, split so the GPU machine needs no Rust toolchain.
#
#   kernels/gpu-suite.sh build [DIR]   on any x86-64 Linux box with cargo:
#       builds the release binary and the release test binaries, strips them
#       and copies them into DIR/bin (default target/gpu-suite); then runs
#       the suite's pipeline (pipelines/tiny.yaml with less data and fewer
#       arena hands, training in bf16) on the CPU and keeps its eval summary
#       in DIR/reference/eval.json, the figure the GPU run is held to.
#   kernels/gpu-suite.sh run [DIR] [REPORT_DIR]   on the GPU machine, from
#       the root of a checkout of the same commit (the model tests read
#       tests/golden there): runs every step below one at a time, each under
#       its own time limit, and writes REPORT_DIR/report.json (the one
#       report: device, driver, each step's result, seconds and figures)
#       and REPORT_DIR/report.md (default DIR/report), with each step's log.
#   kernels/gpu-suite.sh steps [DIR]   anywhere: lists the steps `run` would
#       take (name, time limit, command) without running any, writes the
#       suite's pipeline to DIR/tiny_gpu_suite.yaml (checking that
#       pipelines/tiny.yaml still has what the suite edits), and fails when
#       the limits add up to more than the budget. CI runs it.
#
# The steps, 480 s of limits in all:
#   - the kernel tests (NVRTC compile for sm_80/sm_90, every kernel against
#     its reference), the Backend ops on CUDA against the CPU backend, the
#     model (HF golden fixtures, training and generation) against the CPU,
#     and the kernel tests under compute-sanitizer memcheck and racecheck;
#   - the suite's pipeline on cuda in bf16 against the CPU's bf16 run: the
#     held-out legal-action rate, action accuracy and reward-model accuracy
#     within 0.05 (bf16 rounding in different kernels flips a few greedy
#     answers of 400), and each arena opponent's 95% intervals overlapping;
#   - one LoRA step (rank 16, batch 2 x 512 tokens, checkpointing, bf16) on
#     Llama 3.1 8B's shape with random weights: the backend's tracked peak
#     within 10% of `plan`'s figure for the same settings, less the CUDA
#     context and cuBLAS workspace, which the backend does not hold;
#   - `bench attention`, `bench adamw`, `bench decode` and `bench train`
#     (Llama 3.2 1B's shape) beside their PyTorch twins in engine/benches
#     (needs python3 with torch, transformers and peft): both JSON answers
#     and their ratios go in the report.
# A test that prints SKIPPED counts as a failure: on a GPU machine every
# test must really run.
#
# Exit status: 0 when every step passed, 1 otherwise, 2 on a usage error.
set -uo pipefail

mode="${1:-}"
dir="${2:-target/gpu-suite}"

# The limit on the whole run, the sum of the steps' limits below.
readonly BUDGET_S=480

# Reads cargo's JSON messages on stdin and copies every test executable to
# $1/bin/test-<target name>.
copy_test_binaries() {
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    exe = msg.get("executable")
    if msg.get("reason") == "compiler-artifact" and exe and msg.get("profile", {}).get("test"):
        name = msg["target"]["name"].replace("-", "_")
        dest = sys.argv[1] + "/bin/test-" + name
        shutil.copy(exe, dest)
        print(dest)
' "$1"
}

# Writes the suite's pipeline to $1: pipelines/tiny.yaml with a quarter of
# the data, 400 arena hands per opponent and the training stages in bf16,
# so that the GPU run and the CPU reference each take a few minutes.
suite_pipeline() {
    python3 - "$1" <<'PY'
import pathlib, re, sys

text = pathlib.Path("pipelines/tiny.yaml").read_text()
edits = [
    (r"(?m)^name: tiny$", "name: tiny_gpu_suite"),
    (r"(?m)^(    scenarios:) \d+$", r"\1 4000"),
    (r"(?m)^(    pairs:) \d+$", r"\1 2000"),
    (r"(?m)^(    prompts:) \d+$", r"\1 1000"),
    (r"(?m)^(      hands:) \d+$", r"\1 400"),
    (r"(?m)^(      hands_against:) .*$", r"\1 {}"),
    (r"(?m)^(    kind: (sft|reward|ppo))$", r"\1\n    dtype: bf16"),
]
for pattern, replacement in edits:
    text, n = re.subn(pattern, replacement, text)
    if n == 0:
        sys.exit(f"pipelines/tiny.yaml no longer matches {pattern!r}: update gpu-suite.sh")
pathlib.Path(sys.argv[1]).write_text(text)
PY
}

# Writes to $1 the pipeline whose `plan` gives the 8B LoRA step's figure:
# Llama 3.1 8B (its config.json is built into the binary), an SFT stage of
# rank 16 on all projections, 512 tokens, micro-batch 2 with
# checkpointing, as `bench train` runs it.
lora8b_pipeline() {
    cat >"$1" <<'YAML'
name: lora8b_suite
model: {base: "hf:meta-llama/Llama-3.1-8B", dtype: bf16}
memory_presets:
  suite: {gpu_memory_gib: 80, micro_batch: 2, activation_checkpointing: true}
preset: suite
stages:
  data: {kind: poker-data, scenarios: 40, pairs: 20, prompts: 8, seed: 1}
  sft: {kind: sft, data: data.sft, method: lora, lora: {rank: 16, alpha: 32}, batch_size: 2, max_seq_len: 512}
YAML
}

# Runs the suite's pipeline with binary $1 on device $2 in folder $3 and
# copies its eval summary to $4. The bf16 training stages need a build
# whose stages take `dtype` (issue 13, item 1): `validate` says so first.
suite_run() {
    local bin="$1" device="$2" work="$3" out="$4"
    rm -rf "$work"
    mkdir -p "$work/pipelines"
    suite_pipeline "$work/pipelines/tiny_gpu_suite.yaml" &&
        (cd "$work" && "$bin" validate pipelines/tiny_gpu_suite.yaml &&
            "$bin" run pipelines/tiny_gpu_suite.yaml --device "$device") &&
        cp "$work/runs/tiny_gpu_suite/eval/summary.json" "$out"
}

# Runs a command with its standard output into file $1.
to_file() {
    local out="$1"
    shift
    "$@" >"$out"
}

build() {
    set -e
    cd "$(dirname "$0")/.."
    mkdir -p "$dir/bin" "$dir/reference"
    cargo build --release --bin poker-pipe
    cp target/release/poker-pipe "$dir/bin/"
    # The lib test binary holds the kernel tests; cuda_ops and cuda_model run
    # the Backend trait and the model on CUDA against the CPU; the nvrtc test
    # compiles the kernels for sm_80 and sm_90 with the machine's own NVRTC.
    # One cargo call per group, so a group that does not build (e.g. a
    # dev-dependency that needs a newer toolchain) does not cost the others.
    for targets in "-p poker-pipe --lib" "-p poker-pipe-kernels --test nvrtc" \
        "-p poker-pipe-tests --test cuda_ops --test cuda_model"; do
        # shellcheck disable=SC2086
        cargo test --release --no-run --message-format=json $targets 2>/dev/null |
            copy_test_binaries "$dir" ||
            echo "gpu-suite build: could not build the tests of: $targets" >&2
    done
    strip --strip-debug "$dir"/bin/* 2>/dev/null || true
    local bin
    bin="$(realpath "$dir/bin/poker-pipe")"
    suite_run "$bin" cpu "$(realpath "$dir")/reference/work" "$dir/reference/eval.json"
    rm -rf "$dir/reference/work"
    du -sh "$dir/bin"
}

# Writes the comparisons' helper to $1: `tiny REF GOT`, `peak BENCH PLAN`
# and `bench OURS TWIN`, each printing one JSON object with "pass".
write_compare() {
    cat >"$1" <<'PY'
import json, sys

def load(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])

def tiny(ref, got):
    ref, got = load(ref), load(got)
    out = {"tolerance": 0.05, "metrics": {}, "arena": {}}
    ok = True
    for key in ["legal_action_rate", "action_accuracy", "rm_pairwise_accuracy"]:
        a, b = ref.get(key), got.get(key)
        fine = a is not None and b is not None and abs(a - b) <= 0.05
        out["metrics"][key] = {"cpu_bf16": a, "cuda_bf16": b, "pass": fine}
        ok = ok and fine
    for name, r in ref.get("arena", {}).items():
        g = got.get("arena", {}).get(name)
        fine = g is not None and r["ci95"][0] <= g["ci95"][1] and g["ci95"][0] <= r["ci95"][1]
        out["arena"][name] = {"cpu_bf16": r, "cuda_bf16": g, "intervals_overlap": fine}
        ok = ok and fine
    out["pass"] = ok
    return out

def peak(bench, plan):
    bench, plan = load(bench), load(plan)
    # peak_bytes is the backend's tracked peak (the memory pool's, null where
    # the driver allocates outside a pool); peak_rss_bytes is host memory and is
    # never compared with the plan.
    keys = ["peak_bytes"] if bench.get("peak_bytes") is not None else []
    measured = bench[keys[0]] if keys else None
    stage = next(s for s in plan["stages"] if s["name"] == "sft")
    parts = stage.get("memory_breakdown") or {}
    planned = stage["memory_estimate_bytes"] - parts.get("workspace", 0)
    ratio = measured / planned if measured else None
    return {"measured_key": keys[0] if keys else None, "measured_bytes": measured,
            "planned_bytes_without_workspace": planned, "ratio": ratio,
            "tolerance": 0.10, "pass": ratio is not None and abs(ratio - 1) <= 0.10}

def ratios(ours, twin):
    if isinstance(ours, dict) and isinstance(twin, dict):
        return {k: r for k in ours if k in twin for r in [ratios(ours[k], twin[k])] if r is not None}
    if isinstance(ours, list) and isinstance(twin, list):
        return [ratios(a, b) for a, b in zip(ours, twin)]
    if isinstance(ours, (int, float)) and isinstance(twin, (int, float)) and twin:
        return ours / twin
    return None

def bench(ours, twin):
    ours, twin = load(ours), load(twin)
    return {"ours": ours, "pytorch": twin, "ours_over_pytorch": ratios(ours, twin), "pass": True}

kind, a, b = sys.argv[1:4]
result = {"tiny": tiny, "peak": peak, "bench": bench}[kind](a, b)
print(json.dumps(result))
sys.exit(0 if result["pass"] else 1)
PY
}

# The steps of the suite, in order. `step NAME LIMIT_S COMMAND...` runs
# one (or, under `steps`, lists it); a comparison step's last line of
# output is its JSON figure.
suite_steps() {
    local bin="$dir/bin" golden="tests/golden"
    local config8b="$golden/memory/llama-3.1-8b-config.json"
    local config1b="engine/src/model/memory/bases/llama-3.2-1b.json"
    local py="${PYTHON:-python3}"
    step nvrtc-compile 30 env POKER_PIPE_REQUIRE_NVRTC=1 "$bin/test-nvrtc" --nocapture
    step cuda-tests 40 "$bin/test-poker_pipe" backend::cuda --test-threads=1 --nocapture
    step cuda-backend-ops 30 "$bin/test-cuda_ops" --test-threads=1 --nocapture
    step cuda-model 35 "$bin/test-cuda_model" --test-threads=1 --nocapture
    for tool in memcheck racecheck; do
        step "sanitizer-$tool" 35 compute-sanitizer --tool "$tool" --error-exitcode 1 \
            --target-processes all "$bin/test-poker_pipe" backend::cuda::tests --test-threads=1
    done
    step tiny-cuda-bf16 90 suite_run "$(realpath -m "$bin/poker-pipe")" cuda \
        "${TMPDIR:-/tmp}/gpu-suite-tiny" "$report/tiny-cuda-eval.json"
    step tiny-cuda-vs-cpu 5 "$py" "$report/compare.py" tiny \
        "$dir/reference/eval.json" "$report/tiny-cuda-eval.json"
    step lora8b-step 40 to_file "$report/lora8b-bench.json" \
        "$bin/poker-pipe" bench train --model-config "$config8b" --lora-rank 16 --batch 2 \
        --seq 512 --steps 1 --checkpoint --dtype bf16 --device cuda
    step lora8b-plan 5 to_file "$report/lora8b-plan.json" \
        env HF_HUB_OFFLINE=1 "$bin/poker-pipe" plan "$report/lora8b.yaml" --format json
    step lora8b-peak-vs-plan 5 "$py" "$report/compare.py" peak \
        "$report/lora8b-bench.json" "$report/lora8b-plan.json"
    local name ours twin
    for name in attention adamw decode train; do
        case "$name" in
            attention | adamw)
                ours=(bench "$name" --device cuda)
                twin=("engine/benches/${name}_twin.py")
                ;;
            decode)
                ours=(bench decode --model-config "$config1b" --device cuda)
                twin=(engine/benches/decode_twin.py --model-config "$config1b")
                ;;
            train)
                ours=(bench train --model-config "$config1b" --lora-rank 16 --batch 2 --seq 512
                    --steps 3 --dtype bf16 --device cuda)
                twin=(engine/benches/train_twin.py --model-config "$config1b" --lora-rank 16
                    --batch 2 --seq 512 --steps 3 --device cuda)
                ;;
        esac
        step "bench-$name" 15 to_file "$report/bench-$name.json" "$bin/poker-pipe" "${ours[@]}"
        step "bench-$name-pytorch" 15 to_file "$report/bench-$name-pytorch.json" "$py" "${twin[@]}"
        step "bench-$name-vs-pytorch" 2 "$py" "$report/compare.py" bench \
            "$report/bench-$name.json" "$report/bench-$name-pytorch.json"
    done
}

# Lists the steps without running them: name, limit, command.
list_steps() {
    report="${dir}/report"
    step() {
        local name="$1" limit="$2"
        shift 2
        printf '%s\t%ss\t%s\n' "$name" "$limit" "$*"
        total=$((total + limit))
    }
    local total=0
    suite_steps
    printf 'total limit: %ss (budget %ss)\n' "$total" "$BUDGET_S"
    mkdir -p "$dir"
    suite_pipeline "$dir/tiny_gpu_suite.yaml" || return 1
    echo "suite pipeline: $dir/tiny_gpu_suite.yaml"
    [ "$total" -le "$BUDGET_S" ]
}

run() {
    report="${3:-$dir/report}"
    mkdir -p "$report"
    report="$(realpath "$report")"
    write_compare "$report/compare.py"
    lora8b_pipeline "$report/lora8b.yaml"
    export -f suite_run suite_pipeline to_file
    local results="$report/results.tsv"
    : >"$results"
    local failed=0

    step() {
        local name="$1" limit="$2"
        shift 2
        local log="$report/$name.log"
        local start end status result
        start=$(date +%s)
        if [ "$(type -t "$1")" = function ]; then
            # A function of this script (exported) runs in a child bash, so
            # that the limit ends it and what it started.
            # shellcheck disable=SC2016 # the arguments expand in the child
            timeout "$limit" bash -c '"$@"' _ "$@" >"$log" 2>&1
            status=$?
        else
            timeout "$limit" "$@" >"$log" 2>&1
            status=$?
        fi
        end=$(date +%s)
        if [ "$status" -eq 0 ] && ! grep -q "SKIPPED" "$log"; then
            result="pass"
        elif [ "$status" -eq 0 ]; then
            result="FAIL (skipped tests on a GPU machine)"
            failed=1
        elif [ "$status" -eq 124 ] || [ "$status" -eq 143 ]; then
            result="FAIL (over its ${limit}s limit)"
            failed=1
        else
            result="FAIL (exit $status)"
            failed=1
        fi
        printf '%s\t%s\t%s\t%s\n' "$name" "$result" "$((end - start))" "$limit" >>"$results"
        echo "$name: $result"
    }

    if ! command -v compute-sanitizer >/dev/null; then
        echo "compute-sanitizer is not on PATH: the sanitizer steps will fail" >&2
    fi
    local started
    started=$(date +%s)
    suite_steps
    local total=$(($(date +%s) - started))
    [ "$total" -le "$BUDGET_S" ] || failed=1
    python3 - "$report" "$total" "$BUDGET_S" "$failed" <<'PY'
import json, pathlib, platform, subprocess, sys

report, total, budget, failed = pathlib.Path(sys.argv[1]), *map(int, sys.argv[2:5])

def smi(field):
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None

steps = []
for line in (report / "results.tsv").read_text().splitlines():
    name, result, seconds, limit = line.split("\t")
    log = report / f"{name}.log"
    figure = None
    if log.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        try:
            figure = json.loads(lines[-1]) if lines else None
        except ValueError:
            figure = None
    steps.append({"name": name, "result": result, "seconds": int(seconds),
                  "limit_s": int(limit), "log": log.name, "figures": figure})
doc = {
    "host": platform.node(),
    "device": smi("name,memory.total,compute_cap"),
    "driver": smi("driver_version"),
    "seconds": total,
    "budget_s": budget,
    "passed": failed == 0,
    "steps": steps,
}
(report / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
md = ["# poker-pipe GPU suite", "", f"- host: {doc['host']}", f"- device: {doc['device']}",
      f"- driver: {doc['driver']}", f"- total: {total} s of a {budget} s budget",
      f"- passed: {doc['passed']}", "", "| step | result | seconds | limit |", "|---|---|---|---|"]
md += [f"| {s['name']} | {s['result']} | {s['seconds']} | {s['limit_s']} |" for s in steps]
(report / "report.md").write_text("\n".join(md) + "\n")
PY
    echo "report: $report/report.json"
    return "$failed"
}

case "$mode" in
    build) build ;;
    run) run "$@" ;;
    steps) list_steps ;;
    *)
        echo "usage: $0 build [DIR] | run [DIR] [REPORT_DIR] | steps [DIR]" >&2
        exit 2
        ;;
esac
