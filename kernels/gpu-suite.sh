#!/usr/bin/env bash
# The CUDA correctness suite, split so the GPU machine needs no Rust toolchain.
#
#   kernels/gpu-suite.sh build [DIR]   on any x86-64 Linux box with cargo:
#       builds the release binary and the release test binaries, strips them
#       and copies them into DIR/bin (default target/gpu-suite).
#   kernels/gpu-suite.sh run [DIR] [REPORT_DIR]   on the GPU machine:
#       runs every CUDA test from DIR/bin one at a time, then the kernel tests
#       under compute-sanitizer memcheck and racecheck, and writes
#       REPORT_DIR/report.md (default DIR/report) with the device, driver,
#       (run it from the repository root: the model tests read
#       tests/golden/llama there, or set POKER_PIPE_TESTS_DIR)
#       each step's result and the logs. A test that prints SKIPPED counts as
#       a failure here: on a GPU machine every test must really run.
#
# Exit status: 0 when every step passed, 1 otherwise.
set -uo pipefail

mode="${1:-}"
dir="${2:-target/gpu-suite}"

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

build() {
    set -e
    cd "$(dirname "$0")/.."
    mkdir -p "$dir/bin"
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
    du -sh "$dir/bin"
}

run() {
    local report="${3:-$dir/report}"
    mkdir -p "$report"
    local md="$report/report.md"
    local failed=0
    {
        echo "# poker-pipe GPU suite"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- host: $(hostname)"
        if command -v nvidia-smi >/dev/null; then
            echo "- device: $(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader | head -n 1)"
            echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
        else
            echo "- device: nvidia-smi not found"
        fi
        echo
        echo "| step | result | seconds |"
        echo "|---|---|---|"
    } >"$md"

    step() {
        local name="$1"
        shift
        local log="$report/$name.log"
        local start end status result
        start=$(date +%s)
        "$@" >"$log" 2>&1
        status=$?
        end=$(date +%s)
        if [ "$status" -eq 0 ] && ! grep -q "SKIPPED" "$log"; then
            result="pass"
        elif [ "$status" -eq 0 ]; then
            result="FAIL (skipped tests on a GPU machine)"
            failed=1
        else
            result="FAIL (exit $status)"
            failed=1
        fi
        echo "| $name | $result | $((end - start)) |" >>"$md"
        echo "$name: $result"
    }

    local lib="$dir/bin/test-poker_pipe"
    local nvrtc="$dir/bin/test-nvrtc"
    step nvrtc-compile env POKER_PIPE_REQUIRE_NVRTC=1 "$nvrtc" --nocapture
    step cuda-tests "$lib" backend::cuda --test-threads=1 --nocapture
    # cuda_model reads tests/golden/llama: run from the repository root (the
    # compiled-in path is the build machine's).
    export POKER_PIPE_TESTS_DIR="${POKER_PIPE_TESTS_DIR:-$PWD/tests}"
    step cuda-backend-ops "$dir/bin/test-cuda_ops" --test-threads=1 --nocapture
    step cuda-model "$dir/bin/test-cuda_model" --test-threads=1 --nocapture
    if command -v compute-sanitizer >/dev/null; then
        for tool in memcheck racecheck; do
            step "sanitizer-$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 \
                --target-processes all "$lib" backend::cuda::tests --test-threads=1
        done
    else
        echo "| compute-sanitizer | FAIL (not found on PATH) | 0 |" >>"$md"
        failed=1
    fi
    {
        echo
        echo "## Errors per step (last lines of each log)"
        for log in "$report"/*.log; do
            echo
            echo "### $(basename "$log" .log)"
            echo '```'
            grep -E "rel err|SKIPPED|panicked|ERROR|error|test result" "$log" | tail -n 60
            echo '```'
        done
    } >>"$md"
    echo "report: $md"
    return "$failed"
}

case "$mode" in
    build) build ;;
    run) run "$@" ;;
    *)
        echo "usage: $0 build [DIR] | run [DIR] [REPORT_DIR]" >&2
        exit 2
        ;;
esac
