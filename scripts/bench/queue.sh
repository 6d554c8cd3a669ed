#!/usr/bin/env bash
# Jobs and events over RabbitMQ next to raw lapin, in one run (examples/queue_bench.rs):
# trivial jobs created -> succeeded through castwork's queue vs a raw publish +
# consume loop with confirms and manual acks and the same message size; events
# relayed from the outbox vs raw confirmed publishes to a topic exchange; the
# outbox lag at a steady 2,000 rows per second.
# Usage: [ROUNDS=3] scripts/bench/queue.sh [jobs] [events]
# Needs the local RabbitMQ (BENCH_AMQP_URL) and PostgreSQL (CASTWORK_TEST_PG_URL).
# Method and numbers: docs/BENCHMARKS.md, "Jobs and events".
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs=${1:-2000}
events=${2:-20000}
rounds=${ROUNDS:-3}
cargo build --release -q --example queue_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/queue_bench"
echo "jobs=$jobs events=$events rounds=$rounds, $(nproc) CPUs, commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
for round in $(seq 1 "$rounds"); do
    CASTWORK_LOG__LEVEL=warn "$bin" jobs "$jobs" | grep RESULT
    CASTWORK_LOG__LEVEL=warn "$bin" events "$events" | grep RESULT
done
