#!/usr/bin/env bash
# Explore database-only baseline: item detail, a filtered list page and a search,
# each with wrk at a fixed concurrency against a release build holding the full
# catalogue. Usage: scripts/bench/explore.sh sqlite|postgres [seconds] [connections]
# Method and numbers: docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-sqlite}
seconds=${2:-15}
connections=${3:-32}
catalog=${CATALOG:-assets/arxiv/catalog.jsonl.gz}
work=$(mktemp -d /tmp/castwork-bench.XXXXXX)
port=${PORT:-18080}
export CASTWORK_AUTH__JWT_SECRET=bench-secret-0123456789abcdef0123456789
export CASTWORK_SERVER__PORT=$port CASTWORK_DATA_DIR=$work CASTWORK_LOG__LEVEL=warn
export CASTWORK_EXPLORE__IMPORT_SAMPLE_ON_START=false
if [ "$backend" = postgres ]; then
    db=castwork_bench_$$
    psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
    export CASTWORK_DATABASE__URL=postgres://postgres@127.0.0.1:5432/$db
fi
cargo build --release -q
bin=target/release/castwork
"$bin" import "$catalog" >"$work/import.txt"
grep -iE "inserted|seconds|items/s" "$work/import.txt" | sed "s/^/import: /"
CASTWORK_USER_PASSWORD=bench-password "$bin" user add --username bench --role viewer >/dev/null 2>&1 || true
token=$("$bin" token --username bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
"$bin" serve >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; [ "$backend" = postgres ] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "localhost:$port/health/ready" >/dev/null && break; sleep 0.2; done

base="http://127.0.0.1:$port"
# 1,000 item ids spread over the catalogue, URL-encoded
python3 - "$catalog" "$work" <<'PY'
import gzip, json, sys, urllib.parse
catalog, work = sys.argv[1], sys.argv[2]
ids = [json.loads(l)["id"] for l in gzip.open(catalog, "rt")]
step = max(1, len(ids) // 1000)
with open(f"{work}/detail.txt", "w") as f:
    for i in ids[::step][:1000]:
        f.write(f"/api/v1/explore/items/{urllib.parse.quote(i, safe='')}\n")
with open(f"{work}/list.txt", "w") as f:
    f.write("/api/v1/explore/items?group=Computer%20Science&limit=20\n")
with open(f"{work}/search.txt", "w") as f:
    for q in ["neural network", "quantum error correction", "graph", "diffusion model", "reinforcement learning"]:
        f.write(f"/api/v1/explore/search?q={urllib.parse.quote(q)}&limit=20\n")
PY
for case in detail list search; do
    # warm-up, then the measured run
    BENCH_TOKEN=$token BENCH_PATHS=$work/$case.txt wrk -t2 -c"$connections" -d3s -s scripts/bench/explore.lua "$base" >/dev/null
    result=$(BENCH_TOKEN=$token BENCH_PATHS=$work/$case.txt wrk -t2 -c"$connections" -d"${seconds}s" --latency -s scripts/bench/explore.lua "$base" | grep RESULT)
    echo "$backend $case c=$connections ${seconds}s: ${result#RESULT }"
done
