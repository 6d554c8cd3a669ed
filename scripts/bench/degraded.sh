#!/usr/bin/env bash
# Explore reads with every cache shard down, next to the database-only baseline,
# in one run: item detail and a list page, each with wrk at the same concurrency
# against two release processes on one SQLite file (the embedded sample
# catalogue, or CATALOG=path.jsonl.gz): `db` runs with cache.enabled = false;
# `down` runs with the cache on, restart intensity 0, and every shard killed
# through the chaos endpoint, so each of its reads bypasses the cache.
# Usage: [ROUNDS=3] scripts/bench/degraded.sh [seconds] [connections]
# Each variant gets [seconds] of measurement in ROUNDS slices, the two variants
# taking turns slice by slice. Needs wrk, curl and python3.
# Method and numbers: docs/BENCHMARKS.md, "Every cache shard down".
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
connections=${2:-32}
rounds=${ROUNDS:-3}
slice=$(( (seconds + rounds - 1) / rounds ))
shards=16
db_port=${PORT:-18082}
down_port=$((db_port + 1))
work=$(mktemp -d /tmp/castwork-degraded-bench.XXXXXX)
servers=()
cleanup() {
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

export CASTWORK_AUTH__JWT_SECRET=bench-secret-0123456789abcdef0123456789
export CASTWORK_AUTH__ACCESS_TTL_SECS=86400
export CASTWORK_DATA_DIR=$work CASTWORK_LOG__LEVEL=warn
export CASTWORK_CACHE__WARM_ON_START=false CASTWORK_CACHE__SHARDS=$shards

cargo build --release -q --bin castwork
# a copy: another build into the same target directory cannot swap it mid-run
cp "${CARGO_TARGET_DIR:-target}/release/castwork" "$work/castwork"
bin=$work/castwork
if [ -n "${CATALOG:-}" ]; then
    export CASTWORK_EXPLORE__IMPORT_SAMPLE_ON_START=false
    "$bin" import "$CATALOG" | grep -iE "inserted" | sed "s/^/import: /"
else
    export CASTWORK_EXPLORE__IMPORT_SAMPLE_ON_START=true
fi
CASTWORK_USER_PASSWORD=bench-password "$bin" user add --username bench --role viewer >/dev/null
CASTWORK_USER_PASSWORD=bench-password "$bin" user add --username benchadmin --role admin >/dev/null
mint() { "$bin" token --username "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
token=$(mint bench)
admin_token=$(mint benchadmin)

start() { # name, port, then env assignments
    local name=$1 port=$2
    shift 2
    env CASTWORK_SERVER__PORT="$port" "$@" "$bin" serve >"$work/serve-$name.log" 2>&1 &
    servers+=($!)
    for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.2; done
    echo "the $name server did not become ready" >&2
    cat "$work/serve-$name.log" >&2
    exit 1
}
# the first start imports the sample catalogue into the empty file; the second finds it there
start db "$db_port" CASTWORK_CACHE__ENABLED=false
start down "$down_port" CASTWORK_CHAOS__ENABLED=true CASTWORK_SUPERVISION__MAX_RESTARTS=0 \
    CASTWORK_SUPERVISION__DOWN_RETRY_SECS=0

# every shard of the `down` process past its restart intensity
down_base=http://127.0.0.1:$down_port
for i in $(seq 0 $((shards - 1))); do
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $admin_token" -H 'content-type: application/json' \
        -d "{\"actor\":\"cache-shard-$i\",\"action\":\"kill\"}" "$down_base/api/v1/admin/chaos"
done
shards_down() { curl -sf -H "Authorization: Bearer $admin_token" "$down_base/api/v1/admin/cache" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["shards_down"])'; }
for _ in $(seq 1 100); do [ "$(shards_down)" = "$shards" ] && break; sleep 0.1; done
[ "$(shards_down)" = "$shards" ] || { echo "the shards are not all down" >&2; exit 1; }
curl -sf "$down_base/health" | python3 -c 'import json,sys; b=json.load(sys.stdin); print("down /health:", b["status"], "-", b["components"]["cache"]["last_error"])'

# 200 item ids spread over the catalogue, and one list page
curl -sf -H "Authorization: Bearer $token" "127.0.0.1:$db_port/api/v1/explore/items?limit=100" >"$work/page1.json"
python3 - "$work" <<'PY'
import json, sys, urllib.parse
work = sys.argv[1]
ids = [i["id"] for i in json.load(open(f"{work}/page1.json"))["items"]]
with open(f"{work}/detail.txt", "w") as f:
    f.writelines(f"/api/v1/explore/items/{urllib.parse.quote(i, safe='')}\n" for i in ids)
with open(f"{work}/list.txt", "w") as f:
    f.write("/api/v1/explore/items?group=Computer%20Science&limit=20\n")
PY

wrk_run() { # port, paths file, duration, extra wrk args
    BENCH_TOKEN=$token BENCH_PATHS=$2 wrk -t2 -c"$connections" -d"$3" "${@:4}" -s scripts/bench/explore.lua \
        "http://127.0.0.1:$1"
}
echo "c=$connections ${seconds}s per variant in $rounds slices, $(nproc) CPUs, commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
for case in detail list; do
    wrk_run "$db_port" "$work/$case.txt" 2s >/dev/null
    wrk_run "$down_port" "$work/$case.txt" 2s >/dev/null
    for round in $(seq 1 "$rounds"); do
        for variant in db down; do
            port=$db_port
            [ "$variant" = down ] && port=$down_port
            result=$(wrk_run "$port" "$work/$case.txt" "${slice}s" --latency | grep RESULT)
            echo "$variant $case round=$round ${result#RESULT }" | tee -a "$work/results.txt"
        done
    done
done
curl -sf -H "Authorization: Bearer $admin_token" "$down_base/api/v1/admin/cache" |
    python3 -c 'import json,sys; b=json.load(sys.stdin); print("down bypass:", b["bypass"], "shards_down:", b["shards_down"])'
python3 - "$work/results.txt" <<'PY'
import re, sys
rps = {}
for line in open(sys.argv[1]):
    variant, case = line.split()[:2]
    rps.setdefault((case, variant), []).append(float(re.search(r"rps=([\d.]+)", line).group(1)))
for case in ["detail", "list"]:
    db = sum(rps[(case, "db")]) / len(rps[(case, "db")])
    down = sum(rps[(case, "down")]) / len(rps[(case, "down")])
    print(f"{case}: db-only {db:.0f} req/s, every shard down {down:.0f} req/s, ratio {down / db:.2f}")
PY
