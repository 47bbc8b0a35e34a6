#!/usr/bin/env bash
# Build and run the CPU emulation check of every kernel (kernels/emu/check.cpp)
# against f64 references (needs g++ with C++20; about a minute on 2 cores).
# POKER_PIPE_TEST_SEED replays a run.
set -euo pipefail
cd "$(dirname "$0")"
out="${TMPDIR:-/tmp}/poker-pipe-kernel-emu"
g++ -std=c++20 -O1 -w -pthread check.cpp -o "$out"
exec "$out"
