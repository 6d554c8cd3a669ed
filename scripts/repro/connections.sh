#!/usr/bin/env bash
# Connection exhaustion: starts castwork on a free 127.0.0.1 port with a temp data
# dir and a low open-file limit, opens IDLE silent and SLOW slow-header
# connections (more than the cap), measures /health/live on fresh connections
# while they are held, then counts how many of them are still open after the
# header-read timeout.
#
# Usage: scripts/repro/connections.sh
#   IDLE=1100 SLOW=1100      connections of each kind (at most 5000 each)
#   FD_LIMIT=1024            soft and hard open-file limit castwork runs under
#   HEADER_TIMEOUT=5         server.header_read_timeout_secs
#   MAX_CONNECTIONS=0        server.max_connections (0: derived from FD_LIMIT)
#   PROFILE=debug|release    which build to run (built first); REPRO_BIN=path runs that binary instead (no build)
set -euo pipefail
cd "$(dirname "$0")/../.."
idle=${IDLE:-1100}
slow=${SLOW:-1100}
fd_limit=${FD_LIMIT:-1024}
header_timeout=${HEADER_TIMEOUT:-5}
max_connections=${MAX_CONNECTIONS:-0}
profile=${PROFILE:-debug}
if [ "$idle" -gt 5000 ] || [ "$slow" -gt 5000 ]; then
    echo "IDLE and SLOW are capped at 5000 each" >&2
    exit 2
fi
target=${CARGO_TARGET_DIR:-target}
if [ -z "${REPRO_BIN:-}" ]; then
    if [ "$profile" = release ]; then cargo build --release -q --bin castwork; else cargo build -q --bin castwork; fi
    bin=$target/$profile/castwork
else
    bin=$REPRO_BIN
fi
work=$(mktemp -d /tmp/castwork-repro.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CASTWORK_SERVER__HOST=127.0.0.1 CASTWORK_SERVER__PORT=$port CASTWORK_DATA_DIR=$work
export CASTWORK_SERVER__HEADER_READ_TIMEOUT_SECS=$header_timeout CASTWORK_SERVER__MAX_CONNECTIONS=$max_connections
export CASTWORK_LOG__LEVEL=info CASTWORK_LOG__FORMAT=compact
export CASTWORK_EXPLORE__IMPORT_SAMPLE_ON_START=false CASTWORK_CACHE__WARM_ON_START=false
(ulimit -n "$fd_limit" && exec "$bin" serve) >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
ready=
for _ in $(seq 1 150); do
    curl -sf "127.0.0.1:$port/health/ready" >/dev/null 2>&1 && ready=1 && break
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "castwork did not become ready; its log:" >&2
    tail -20 "$work/serve.log" >&2
    exit 1
fi
grep -E "open-file limit|castwork listening" "$work/serve.log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/castwork: /' || true

python3 -u - "$port" "$idle" "$slow" "$header_timeout" <<'PY'
import resource, socket, statistics, sys, time
port, idle, slow, header_timeout = (int(a) for a in sys.argv[1:5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
addr = ("127.0.0.1", port)

def connect():
    return socket.create_connection(addr, timeout=1)

# bounded: 1 s per connect, 60 s for the whole opening phase
held, failed = [], 0
start = time.monotonic()
for i in range(max(idle, slow)):
    if time.monotonic() - start > 60:
        print("stopped opening after 60 s")
        break
    try:
        if i < idle:
            held.append(connect())
        if i < slow:
            s = connect()
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: castwork\r\nX-Slow: ")
            held.append(s)
    except OSError:
        failed += 1
print(f"opened {len(held)} connections ({idle} silent, {slow} slow-header; {failed} failed) in {time.monotonic() - start:.1f} s")

def live():
    t = time.monotonic()
    try:
        s = socket.create_connection(addr, timeout=2)
        s.settimeout(2)
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: castwork\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:  # refused, or no answer within 2 s
        ok = False
    return time.monotonic() - t, ok

samples = [live() for _ in range(20)]  # at most 20 x 4 s
lat = sorted(ms for ms, _ in samples)
print(f"/health/live while held: {sum(ok for _, ok in samples)}/20 ok, "
      f"median {statistics.median(lat) * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")

def still_open(socks):
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(64):
                n += 1  # answered but not closed
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n

print(f"still open right after the probes: {still_open(held)} of {len(held)}")
time.sleep(header_timeout + 2)
print(f"still open {header_timeout + 2} s later (header timeout {header_timeout} s): {still_open(held)} of {len(held)}")
for s in held:
    s.close()
PY
curl -sf "127.0.0.1:$port/metrics" | grep -E "^castwork_http_(connections|accept)" | sed 's/^/metric: /' || true
