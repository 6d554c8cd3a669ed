#!/usr/bin/env bash
# Login flood: N concurrent wrong-password logins for one user from one address
# (127.0.0.1), against a fresh node. Prints how many passwords the node really
# verified (castwork_auth_password_verifications_total, from its /metrics), the
# answers by status, and the node's resident memory: idle, peak during the flood
# (VmRSS sampled every 5 ms, and VmHWM), and the peak over idle.
# Goal: verified <= auth.login_burst (5), peak - idle < 150 MiB.
# Usage: [PROFILE=release|debug] [BIN=path/to/castwork] scripts/repro/login-flood.sh [logins]
# Needs python3 and Linux (/proc). SQLite in a temp dir; nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
logins=${1:-200}
profile=${PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "${BIN:-}" ]; then
    if [ "$profile" = release ]; then
        cargo build --release -q --bin castwork
    else
        cargo build -q --bin castwork
    fi
    BIN=$target_dir/$profile/castwork
fi
work=$(mktemp -d /tmp/castwork-login-flood.XXXXXX)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CASTWORK_SERVER__PORT=$port CASTWORK_DATA_DIR=$work CASTWORK_LOG__LEVEL=error
export CASTWORK_EXPLORE__IMPORT_SAMPLE_ON_START=false CASTWORK_CACHE__WARM_ON_START=false
export CASTWORK_BOOTSTRAP_ADMIN_PASSWORD='login flood bootstrap passphrase'
"$BIN" serve >"$work/server.log" 2>&1 &
server=$!

python3 - "$server" "$port" "$logins" "$BIN" <<'PY'
import json, socket, sys, threading, time, urllib.error, urllib.request

pid, port, logins, binary = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = f"http://127.0.0.1:{port}"

def status_kib():
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields

def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return r.status, r.read().decode()

deadline = time.time() + 60
while True:
    try:
        if get("/health/ready")[0] == 200:
            break
    except (urllib.error.URLError, ConnectionError):
        pass
    if time.time() > deadline:
        sys.exit("the node did not become ready; see its log")
    time.sleep(0.1)

def verifications():
    counts = {}
    for line in get("/metrics")[1].splitlines():
        if line.startswith("castwork_auth_password_verifications_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts

time.sleep(1)  # let start-up allocations settle
idle = status_kib()
before = verifications()

peak = {"rss": idle["VmRSS"]}
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak["rss"] = max(peak["rss"], status_kib()["VmRSS"])
        time.sleep(0.005)
sampler = threading.Thread(target=sample)
sampler.start()

statuses = {}
lock = threading.Lock()
# Every connection is open before any request is sent, and each request is one prepared
# write, so the logins reach the node together rather than at the pace of Python threads.
body = json.dumps({"username": "admin", "password": "wrong-password"}).encode()
request = (f"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
sockets = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(logins)]
barrier = threading.Barrier(logins + 1)
def attempt(sock):
    barrier.wait()
    try:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(256)
            if not chunk:
                break
            head += chunk
        code = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else "no answer"
    except OSError as e:
        code = type(e).__name__
    finally:
        sock.close()
    with lock:
        statuses[code] = statuses.get(code, 0) + 1

threads = [threading.Thread(target=attempt, args=(sock,)) for sock in sockets]
for t in threads:
    t.start()
started = time.time()
barrier.wait()
for t in threads:
    t.join()
elapsed = time.time() - started
time.sleep(0.5)  # verifications still running finish
stop.set()
sampler.join()
after = status_kib()
verified = {k: v - before.get(k, 0) for k, v in verifications().items()}
mib = lambda kib: kib / 1024
top = max(peak["rss"], after["VmHWM"])
print(f"binary:            {binary}")
print(f"logins:            {logins} concurrent, wrong password, user admin, from 127.0.0.1, in {elapsed:.2f} s")
print(f"answers:           {dict(sorted(statuses.items(), key=str))}")
print(f"verified:          {sum(verified.values())} (castwork_auth_password_verifications_total: {verified})")
print(f"rss idle:          {mib(idle['VmRSS']):.1f} MiB (VmHWM {mib(idle['VmHWM']):.1f} MiB)")
print(f"rss peak:          {mib(peak['rss']):.1f} MiB sampled, VmHWM {mib(after['VmHWM']):.1f} MiB")
print(f"peak over idle:    {mib(top - idle['VmRSS']):+.1f} MiB (goal < +150 MiB)")
PY
