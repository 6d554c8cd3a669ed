#!/usr/bin/env bash
# Fuzzes the whole HTTP API from its own OpenAPI document with schemathesis:
# starts a node (fresh SQLite data dir, the embedded sample catalogue, a
# bootstrap admin), logs in as the admin, and runs every check against every
# operation. Fails on any server error or any response that does not match the
# document. Method and figures: docs/RELIABILITY.md.
#
# Usage: scripts/fuzz-api.sh [max-examples-per-operation] [seed]
#   FUZZ_TIME_LIMIT  seconds the schemathesis run may take (default 170)
#   FUZZ_VENV        virtual environment holding schemathesis (default .venv-fuzz)
#   FUZZ_BIN     the binary to fuzz (default: cargo build, then
#                    $CARGO_TARGET_DIR/debug/castwork)
#   FUZZ_REPORT_DIR  keep schemathesis' JUnit report and the node's log here
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${1:-50}
seed=${2:-1}
time_limit=${FUZZ_TIME_LIMIT:-170}
venv=${FUZZ_VENV:-.venv-fuzz}
schemathesis_version=4.32.5

if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/st" --version 2>/dev/null | grep -q "$schemathesis_version"; then
    echo "fuzz: installing schemathesis $schemathesis_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

if [ -z "${FUZZ_BIN:-}" ]; then
    cargo build --quiet --bin castwork
    FUZZ_BIN="${CARGO_TARGET_DIR:-target}/debug/castwork"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/castwork-fuzz.XXXXXX")
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ -n "${FUZZ_REPORT_DIR:-}" ]; then
        mkdir -p "$FUZZ_REPORT_DIR"
        cp -r "$work/report" "$work/node.log" "$FUZZ_REPORT_DIR"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Only this script's settings: nothing from the caller's CASTWORK_* variables.
while IFS='=' read -r name _; do
    case "$name" in CASTWORK_*) unset "$name" ;; esac
done < <(env)
admin_password="fuzz-admin-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export CASTWORK_DATA_DIR="$work/data"
export CASTWORK_SERVER__PORT=0
export CASTWORK_LOG__FORMAT=json
export CASTWORK_LOG__LEVEL=warn,castwork::startup=info
export CASTWORK_AUTH__JWT_SECRET="fuzz-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
export CASTWORK_BOOTSTRAP_ADMIN_PASSWORD="$admin_password"
# the fuzzer sends many wrong logins; the slow-down is tested elsewhere
export CASTWORK_AUTH__LOGIN_BURST=1000000 CASTWORK_AUTH__LOGIN_PER_MINUTE=1000000
# generations stay short (the local model answers within the fuzzer's request
# timeout whatever it is asked); the bounds themselves are what is fuzzed
export CASTWORK_INFERENCE__MAX_TOKENS_LIMIT=8 CASTWORK_INFERENCE__DEFAULT_MAX_TOKENS=8
export CASTWORK_INFERENCE__MAX_INPUT_CHARS=2000 CASTWORK_INFERENCE__MAX_EMBEDDING_INPUTS=8

"$FUZZ_BIN" serve >"$work/node.log" 2>&1 &
server=$!

port=""
for _ in $(seq 1 300); do
    port=$(grep -o '"port":[0-9]*' "$work/node.log" 2>/dev/null | head -n1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "fuzz: the node did not start" >&2
    cat "$work/node.log" >&2
    exit 1
fi
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$base/health/ready" && break
    sleep 0.1
done
# the local models load in the background after start: wait for them (60 s at most)
for _ in $(seq 1 600); do
    curl -fsS "$base/health" 2>/dev/null |
        python3 -c 'import json, sys; c = json.load(sys.stdin)["components"].get("inference", {}); sys.exit(c.get("status") != "ok")' &&
        break
    sleep 0.1
done

login() {
    curl -fsS "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"username\":\"admin\",\"password\":\"$admin_password\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

# st TOKEN ARGS...: one schemathesis run with the bearer token on every request.
st_run() {
    local token=$1
    shift
    # the runs share one time limit
    local left=$((time_limit - (SECONDS - started)))
    [ "$left" -gt 0 ] || return 124
    timeout --kill-after=10 "$left" "$venv/bin/st" --config-file scripts/schemathesis.toml \
        run "$base/api/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks all \
        --seed "$seed" \
        --generation-database none \
        --workers 1 \
        --request-timeout 10 \
        --no-color ${FUZZ_ARGS:-} \
        "$@"
}

started=$SECONDS
echo "fuzz: schemathesis $schemathesis_version against $base, seed $seed, $max_examples examples per operation"
set +e
# Logging out ends the caller's session, and revoking a user's sessions ends the
# admin's own when the fuzzer names `admin`: every later request of the run would
# then be 401. So the main run leaves those two out, and each gets a short run of
# its own with a token of its own (401 once that is spent is a documented answer).
# A summary is generated by the chat model the first time an item is asked for
# (seconds on a debug build, past the fuzzer's 10 s request timeout on a loaded
# machine, and 50 of them would spend the run's whole time budget): it is left
# out here and tested in tests/api/semantic/summary.rs.
st_run "$(login)" --max-examples "$max_examples" \
    --exclude-operation-id logout --exclude-operation-id revokeUserSessions \
    --exclude-operation-id getItemSummary \
    --report junit --report-dir "$work/report"
status=$?
for operation in logout revokeUserSessions; do
    [ "$status" -eq 0 ] || break
    st_run "$(login)" --max-examples "$(( (max_examples + 4) / 5 ))" \
        --include-operation-id "$operation" \
        --report junit --report-dir "$work/report-$operation"
    status=$?
done
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "fuzz: the run took longer than ${time_limit} s" >&2
fi
if ! kill -0 "$server" 2>/dev/null; then
    echo "fuzz: the node died during the run" >&2
    tail -n 20 "$work/node.log" >&2
    status=1
fi
exit "$status"
