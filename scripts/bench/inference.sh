#!/usr/bin/env bash
# The local inference backend in one run (examples/inference_local_bench.rs):
# decoding with SmolLM2's weights as shipped (Q4_1) and requantised to Q8_0,
# 4 concurrent generations against 1, embeddings batched against single; first
# with candle's kernels on the calling thread (CANDLE_NUM_THREADS=1,
# RAYON_NUM_THREADS=1, as castwork is meant to run), then with candle's shared
# kernel pool (both unset) for comparison.
# Usage: [ROUNDS=3] scripts/bench/inference.sh [models-dir]
# Needs the models (scripts/fetch-models.sh). Method and numbers: docs/BENCHMARKS.md,
# "Inference: local models".
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${1:-models}
rounds=${ROUNDS:-3}
cargo build --release -q --example inference_local_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/inference_local_bench"
echo "$(nproc) CPUs, commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== kernels on the calling thread"
CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 "$bin" "$models" "$rounds"
echo "== candle's shared kernel pool"
env -u CANDLE_NUM_THREADS -u RAYON_NUM_THREADS "$bin" "$models" "$rounds"
