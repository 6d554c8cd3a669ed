#!/usr/bin/env bash
# The inference gateway's overhead: castwork's /v1/chat/completions in front of a
# fixed-latency OpenAI-compatible server against calling that server directly, in
# one process and one run (examples/gateway_bench.rs; method in docs/BENCHMARKS.md).
#
# Usage: scripts/bench/gateway.sh [rate] [seconds] [concurrency]
#   BENCH_BACKEND_MS  the backend's fixed latency (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-500}
secs=${2:-10}
concurrency=${3:-64}
cargo build --release --quiet --example gateway_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/gateway_bench"
"$bin" latency "$rate" "$secs"
"$bin" throughput "$concurrency" "$secs"
