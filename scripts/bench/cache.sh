#!/usr/bin/env bash
# Explore cache, side by side: item detail, a list page and a search, each
# database-only, on an L2 (Redis) hit and on an L1 hit, next to the bench routes
# (a bare HashMap and a bare fred GET behind the same middleware and auth, from
# the `bench-routes` feature) and the same two without any castwork middleware
# (examples/bare_routes.rs), all with wrk at the same concurrency in one run;
# plus memory per cached item. SQLite, imported once into a fresh file.
# Usage: [ROUNDS=3] scripts/bench/cache.sh [seconds] [connections]
# Each variant gets [seconds] of measurement in ROUNDS slices; variants served by
# one process (L2 and the fred route, L1 and the HashMap route, the two bare
# routes) take turns slice by slice.
# Needs wrk, redis-cli, python3 and Redis at $REDIS_URL (default redis://127.0.0.1:6379).
# Builds into $CARGO_TARGET_DIR when it is set (else target/).
# Method and numbers: docs/BENCHMARKS.md, "Explore cache (side by side)".
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-15}
connections=${2:-32}
# each variant's measured time is split into this many interleaved rounds
rounds=${ROUNDS:-3}
slice=$(( (seconds + rounds - 1) / rounds ))
catalog=${CATALOG:-assets/arxiv/catalog.jsonl.gz}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
redis_host=${redis_url#redis://}
redis_host=${redis_host%%/*}
redis=(redis-cli -h "${redis_host%%:*}" -p "${redis_host##*:}")
port=${PORT:-18081}
# items per memory set: set A is warmed from the database, set B from Redis
memory_items=${MEMORY_ITEMS:-10000}
work=$(mktemp -d /tmp/castwork-cache-bench.XXXXXX)
# the L2 and L1 runs share this namespace: the L1 run finds what the L2 run stored
prefix=castwork-bench-$$
server=

cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    "${redis[@]}" --scan --pattern "$prefix:*" | xargs -r "${redis[@]}" del >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export CASTWORK_AUTH__JWT_SECRET=bench-secret-0123456789abcdef0123456789
export CASTWORK_AUTH__ACCESS_TTL_SECS=86400
export CASTWORK_SERVER__PORT=$port CASTWORK_DATA_DIR=$work CASTWORK_LOG__LEVEL=warn
export CASTWORK_EXPLORE__IMPORT_SAMPLE_ON_START=false
export CASTWORK_CACHE__REDIS__URL=$redis_url CASTWORK_CACHE__WARM_ON_START=false

cargo build --release -q --features bench-routes --bin castwork --example bare_routes
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/castwork
# SQLite: one fresh file, imported once, shared by the three processes
"$bin" import "$catalog" >"$work/import.txt"
grep -iE "inserted|seconds|items/s" "$work/import.txt" | sed "s/^/import: /"
CASTWORK_USER_PASSWORD=bench-password "$bin" user add --username bench --role viewer >/dev/null
CASTWORK_USER_PASSWORD=bench-password "$bin" user add --username benchadmin --role admin >/dev/null
mint() { "$bin" token --username "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
token=$(mint bench)
admin_token=$(mint benchadmin)
base="http://127.0.0.1:$port"

# The request sets, the same for every variant: 200 detail ids spread over the
# catalogue, one list page, five searches; and the ids warmed for memory.
python3 - "$catalog" "$work" "$memory_items" <<'PY'
import gzip, json, sys, urllib.parse
catalog, work, n_memory = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = [json.loads(l)["id"] for l in gzip.open(catalog, "rt")]
step = max(1, len(ids) // 200)
detail = ids[::step][:200]
chosen = set(detail)
rest = [i for i in ids if i not in chosen]
item = lambda i: f"/api/v1/explore/items/{urllib.parse.quote(i, safe='')}\n"
searches = ["neural network", "quantum error correction", "graph", "diffusion model", "reinforcement learning"]
sets = {
    "detail": [item(i) for i in detail],
    "list": ["/api/v1/explore/items?group=Computer%20Science&limit=20\n"],
    "search": [f"/api/v1/explore/search?q={urllib.parse.quote(q)}&limit=20\n" for q in searches],
    "memory-a": [item(i) for i in rest[:n_memory]],
    "memory-b": [item(i) for i in rest[n_memory:2 * n_memory]],
}
for name, paths in sets.items():
    with open(f"{work}/{name}.txt", "w") as f:
        f.writelines(paths)
    if not name.startswith("memory"):
        for route in ["hashmap", "fred"]:
            with open(f"{work}/{route}-{name}.txt", "w") as f:
                f.writelines(p.replace("/api/v1/", f"/bench/{route}/", 1) for p in paths)
            with open(f"{work}/bare-{route}-{name}.txt", "w") as f:
                f.writelines(p.replace("/api/v1/", f"/bare/{route}/", 1) for p in paths)
PY

start() { # name, then env assignments
    local name=$1
    shift
    env "$@" "$bin" serve >"$work/serve-$name.log" 2>&1 &
    server=$!
    for _ in $(seq 1 150); do curl -sf "$base/health/ready" >/dev/null && return; sleep 0.2; done
    echo "the $name server did not become ready" >&2
    cat "$work/serve-$name.log" >&2
    exit 1
}
start_bare() { # the standalone bare axum routes (examples/bare_routes.rs)
    BARE_PORT=$port BARE_REDIS_URL=$redis_url BARE_KEY_PREFIX=$prefix "$target/release/examples/bare_routes" \
        >"$work/serve-bare.log" 2>&1 &
    server=$!
    for _ in $(seq 1 150); do curl -sf "$base/health" >/dev/null && return; sleep 0.2; done
    echo "the bare server did not become ready" >&2
    cat "$work/serve-bare.log" >&2
    exit 1
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=; }
busy() { { pgrep -x cargo || true; pgrep -x rustc || true; } | wc -l; }
wrk_run() { # paths file, duration, extra wrk args
    BENCH_TOKEN=$token BENCH_PATHS=$1 wrk -t2 -c"$connections" -d"$2" "${@:3}" -s scripts/bench/explore.lua "$base"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
measure_round() { # variant, case, paths file, round: one measured slice
    local before ticks0 t0 result ticks1 t1
    before=$(busy)
    ticks0=$(cpu_ticks)
    t0=$(date +%s.%N)
    result=$(wrk_run "$3" "${slice}s" --latency | grep RESULT)
    t1=$(date +%s.%N)
    ticks1=$(cpu_ticks)
    echo "$1 $2 round=$4 ${result#RESULT } cpu_ticks=$((ticks1 - ticks0)) wall_s=$(echo "$t1 - $t0" | bc) cargo=$before/$(busy)" |
        tee -a "$work/results.txt"
}
measure() { # case, then variant=paths-file pairs served by this process
    # Variants that share a process are interleaved round by round, so a slow
    # patch of the (shared, noisy) machine hits all of them alike.
    local case=$1 pair round
    shift
    for pair in "$@"; do wrk_run "${pair#*=}" 3s >/dev/null; done # warm-up: fills the caches
    for round in $(seq 1 "$rounds"); do
        for pair in "$@"; do measure_round "${pair%%=*}" "$case" "${pair#*=}" "$round"; done
    done
}
admin_report() { curl -sf -H "Authorization: Bearer $admin_token" "$base/api/v1/admin/cache"; }
summary() { # variant: what the shards counted, to show the run hit where it claims
    admin_report | python3 -c '
import json, sys
shards = json.load(sys.stdin)["shards"]
keys = ["entries", "bytes", "hits_l1", "hits_l2", "misses", "loads", "coalesced", "refreshes", "evictions"]
print(sys.argv[1], "cache:", " ".join(f"{k}={sum(s[k] for s in shards)}" for k in keys))
' "$1"
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
l1_entries() { admin_report | python3 -c 'import json,sys; print(sum(s["entries"] for s in json.load(sys.stdin)["shards"]))'; }
l2_items() { "${redis[@]}" --scan --pattern "$prefix:item:*" | wc -l; }
warm_until() { # paths file, command printing a count, the count to reach
    for _ in 1 2 3 4 5 6; do
        wrk_run "$1" 5s >/dev/null
        [ "$($2)" -ge "$3" ] && return
    done
    echo "warning: $1 did not reach $3 ($($2))" >&2
}

echo "c=$connections ${seconds}s per case, $(nproc) CPUs, commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"

start db CASTWORK_CACHE__ENABLED=false
# memory baseline: what the same reads of set A cost a process without a cache
# (SQLite page cache, view counts, allocator)
wrk_run "$work/detail.txt" 3s >/dev/null
db_rss0=$(rss_kib)
for _ in 1 2; do wrk_run "$work/memory-a.txt" 5s >/dev/null; done
db_rss1=$(rss_kib)
for case in detail list search; do measure "$case" db="$work/$case.txt"; done
stop

start l2 CASTWORK_CACHE__L1_ENABLED=false CASTWORK_CACHE__REDIS__KEY_PREFIX="$prefix"
for case in detail list search; do measure "$case" l2="$work/$case.txt" fred="$work/fred-$case.txt"; done
summary l2
# store set B in Redis for the L1 run's memory measurement
warm_until "$work/memory-b.txt" l2_items $((200 + memory_items * 99 / 100))
stop

start l1 CASTWORK_CACHE__REDIS__KEY_PREFIX="$prefix"
# memory: RSS and L1 size after the 200 detail ids, after set A (from the
# database), after set B (from Redis)
wrk_run "$work/detail.txt" 3s >/dev/null
admin_report >"$work/mem0.json"
rss0=$(rss_kib)
warm_until "$work/memory-a.txt" l1_entries $((200 + memory_items * 99 / 100))
admin_report >"$work/mem1.json"
rss1=$(rss_kib)
warm_until "$work/memory-b.txt" l1_entries $((200 + memory_items * 198 / 100))
admin_report >"$work/mem2.json"
rss2=$(rss_kib)
for case in detail list search; do measure "$case" l1="$work/$case.txt" hashmap="$work/hashmap-$case.txt"; done
summary l1
stop

# the same bytes with no castwork middleware: the HashMap fills from what the
# fred routes above stored in Redis
start_bare
for case in detail list search; do
    measure "$case" bare-hashmap="$work/bare-hashmap-$case.txt" bare-fred="$work/bare-fred-$case.txt"
done
stop

python3 - "$work" "$rss0" "$rss1" "$rss2" "$db_rss0" "$db_rss1" <<'PY' >"$work/memory-result.txt"
import json, sys
work = sys.argv[1]
rss0, rss1, rss2, db0, db1 = (int(v) * 1024 for v in sys.argv[2:])
def size(n):
    shards = json.load(open(f"{work}/mem{n}.json"))["shards"]
    return sum(s["entries"] for s in shards), sum(s["bytes"] for s in shards)
(e0, b0), (e1, b1), (e2, b2) = size(0), size(1), size(2)
na, nb = max(1, e1 - e0), max(1, e2 - e1)
print("\nmemory per cached item (detail pages):")
print(f"- set A, filled from the database: {na} entries, L1 weigher {(b1 - b0) / na:.0f} B/item (key + body + 96), "
      f"RSS {(rss1 - rss0) / na:.0f} B/item; the same reads without a cache grew RSS {(db1 - db0) / na:.0f} B/item, "
      f"so the cache's share is {((rss1 - rss0) - (db1 - db0)) / na:.0f} B/item")
print(f"- set B, filled from Redis: {nb} entries, L1 weigher {(b2 - b1) / nb:.0f} B/item, RSS {(rss2 - rss1) / nb:.0f} B/item")
print(f"- RSS {rss0 // 1024} KiB -> {rss1 // 1024} KiB -> {rss2 // 1024} KiB; without a cache {db0 // 1024} KiB -> {db1 // 1024} KiB")
PY
python3 - "$work/results.txt" <<'PY'
import os, statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    variant, case, *fields = line.split()
    rounds.setdefault((variant, case), []).append(dict(f.split("=", 1) for f in fields))
names = {"db": "DB only", "l2": "L2 hit (L1 off)", "l1": "L1 hit", "hashmap": "bench HashMap", "fred": "bench fred GET",
         "bare-hashmap": "bare axum HashMap (no middleware)", "bare-fred": "bare axum fred GET (no middleware)"}
cases = ["detail", "list", "search"]
tick = 1e6 / os.sysconf("SC_CLK_TCK")
med = lambda v, c, k: statistics.median(float(r[k]) for r in rounds[(v, c)])
def cpu_us(v, c):  # server CPU time over all rounds / requests over all rounds
    rs = rounds[(v, c)]
    return sum(int(r["cpu_ticks"]) for r in rs) * tick / sum(float(r["rps"]) * float(r["wall_s"]) for r in rs)
print("\n| case | variant | requests/s (median of rounds) | p50 | p99 | server CPU per request | errors / non-2xx |")
print("|---|---|---|---|---|---|---|")
for case in cases:
    for variant in names:
        if (variant, case) in rounds:
            rs = rounds[(variant, case)]
            print(f"| {case} | {names[variant]} | {med(variant, case, 'rps'):,.0f} | {med(variant, case, 'p50_ms'):.2f} ms | "
                  f"{med(variant, case, 'p99_ms'):.2f} ms | {cpu_us(variant, case):.0f} µs | "
                  f"{sum(int(r['errors']) for r in rs)} / {sum(int(r['non2xx']) for r in rs)} |")
def paired(num, den, c):  # same process, interleaved: the median of the per-round ratios, and their range
    ratios = sorted(float(a["rps"]) / float(b["rps"]) for a, b in zip(rounds[(num, c)], rounds[(den, c)]))
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"
unpaired = lambda num, den, c: f"{med(num, c, 'rps') / med(den, c, 'rps'):.2f}"
print("\n| throughput ratio | detail | list | search | goal |")
print("|---|---|---|---|---|")
for label, num, den, how, goal in [("L1 hit / bench HashMap (paired rounds)", "l1", "hashmap", paired, "≥ 0.8"),
                                   ("L2 hit / bench fred GET (paired rounds)", "l2", "fred", paired, "≥ 0.9"),
                                   ("L1 hit / DB only", "l1", "db", unpaired, "≥ 10 (list, search)"),
                                   ("L2 hit / DB only", "l2", "db", unpaired, ""),
                                   ("L1 hit / bare HashMap", "l1", "bare-hashmap", unpaired, ""),
                                   ("L2 hit / bare fred GET", "l2", "bare-fred", unpaired, "")]:
    if all((v, c) in rounds for v in (num, den) for c in cases):
        print(f"| {label} | {' | '.join(how(num, den, c) for c in cases)} | {goal} |")
print("\n| server CPU per request, ratio | detail | list | search |")
print("|---|---|---|---|")
for label, num, den in [("DB only / L1 hit", "db", "l1"), ("DB only / L2 hit", "db", "l2"),
                        ("L1 hit / bench HashMap", "l1", "hashmap"), ("L2 hit / bench fred GET", "l2", "fred"),
                        ("bench HashMap / bare HashMap", "hashmap", "bare-hashmap"),
                        ("bench fred GET / bare fred GET", "fred", "bare-fred")]:
    if all((v, c) in rounds for v in (num, den) for c in cases):
        print(f"| {label} | {' | '.join(f'{cpu_us(num, c) / cpu_us(den, c):.2f}' for c in cases)} |")
PY
cat "$work/memory-result.txt"
