#!/usr/bin/env bash
# Whole-process timings of the engine (issue 2, item 12):
#   1. `poker-pipe validate` on every shipped pipeline (pipelines/, examples/);
#   2. a no-op `run` of a fully cached 6-stage pipeline (test stage kinds,
#      through the pp-test binary, which is poker-pipe plus those kinds).
# Targets: validate < 20 ms, no-op run < 100 ms.
#
# Usage: engine/benches/engine_cli.sh [RUNS]   (from the repository root)
# Uses hyperfine when installed (apt-get install hyperfine), else a loop.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-30}"

cargo build --release -q -p poker-pipe -p poker-pipe-tests
BIN="$PWD/target/release/poker-pipe"
TEST_BIN="$PWD/target/release/pp-test"

# Mean wall time in ms of a command over $RUNS runs (after 3 warm-ups).
mean_ms() {
    if command -v hyperfine >/dev/null; then
        local json
        json="$(mktemp)"
        hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$json" "$*" >/dev/null
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f\"{r['mean']*1e3:.2f} {r['stddev']*1e3:.2f}\")" "$json"
        rm -f "$json"
    else
        for _ in 1 2 3; do "$@" >/dev/null 2>&1; done
        local start end
        start=$(date +%s%N)
        for _ in $(seq "$RUNS"); do "$@" >/dev/null 2>&1; done
        end=$(date +%s%N)
        echo "$(( (end - start) / RUNS / 1000 ))" | awk '{printf "%.2f -\n", $1/1000}'
    fi
}

echo "{"
first=1
while IFS= read -r -d '' file; do
    [ $first -eq 1 ] || echo ","
    first=0
    read -r mean sd < <(mean_ms "$BIN" validate "$file")
    printf '  "validate %s": {"mean_ms": %s, "stddev_ms": "%s"}' "$file" "$mean" "$sd"
done < <(find pipelines examples \( -name '*.yaml' -o -name '*.yml' \) -print0 | sort -z)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/six.yaml" <<'YAML'
name: six
memory_presets:
  small: {gpu_memory_gib: 24, micro_batch: 1}
preset: small
stages:
  src: {kind: text-source, text: "x"}
  s1: {kind: text-step, input: src, suffix: "a", batch_size: 8}
  s2: {kind: text-step, input: s1, suffix: "b", batch_size: 8}
  s3: {kind: text-step, input: s2, suffix: "c", batch_size: 8}
  s4: {kind: text-step, input: s3, suffix: "d", batch_size: 8}
  judge: {kind: text-judge, init: s4, data: src}
YAML
(cd "$work" && "$TEST_BIN" run six.yaml >/dev/null 2>&1)
read -r mean sd < <(cd "$work" && mean_ms "$TEST_BIN" run six.yaml)
printf ',\n  "no-op run (6 cached stages)": {"mean_ms": %s, "stddev_ms": "%s"}\n}\n' "$mean" "$sd"
