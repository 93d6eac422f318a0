#!/usr/bin/env bash
# CPU per non-streaming request of the release gateway, of nginx, and of a
# bare hyper proxy (examples/hyper_proxy.rs: the gateway's HTTP stack with
# none of Modelux), each a keepalive proxy in front of the same fake
# provider, at the same fixed rate in the same run: the figures behind
# "What dominates the cost" in docs/performance.md.
#
#   bash scripts/cpu-per-request.sh              # 2,000 req/s for 8 s each
#   RATE=1000 SECS=5 bash scripts/cpu-per-request.sh
#   ROUNDS=3 bash scripts/cpu-per-request.sh     # three rounds over the three proxies
#   PERF=1 bash scripts/cpu-per-request.sh       # also perf-records each (kernel + user)
#
# Prints, per proxy: CPU time per request summed over all its threads
# (/proc/<pid>/task/*/schedstat, ns), its user and system shares
# (/proc/<pid>/stat ticks), and context switches per request. Servers run on
# CPU 1 and oha on CPU 0, as in scripts/loadtest.sh. With PERF=1 the
# profiles (perf record -e cpu-clock, frame pointers) are kept in a temp dir
# named at the end. Needs oha and nginx (see scripts/loadtest.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RATE=${RATE:-2000}
SECS=${SECS:-8}
ROUNDS=${ROUNDS:-1}
command -v oha >/dev/null || { echo "oha is missing (cargo install oha --locked)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing (apt-get install nginx-light)" >&2; exit 1; }
if [ "${PERF:-0}" = 1 ]; then command -v perf >/dev/null || { echo "perf is missing" >&2; exit 1; }; fi
(cd "$ROOT" && cargo build --release --example gateway --example mock_provider --example hyper_proxy) >&2
TMP="$(mktemp -d /tmp/modelux-cpu.XXXXXX)"
PIDS=()
cleanup() {
    [ -f "$TMP/nginx/nginx.pid" ] && kill "$(cat "$TMP/nginx/nginx.pid")" 2>/dev/null
    for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${PERF:-0}" = 1 ] || rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; exit 1; }
PIN=(taskset -c 1)
[ "$(nproc)" -ge 2 ] || PIN=()

MP=$(port)
"${PIN[@]}" "$ROOT/target/release/examples/mock_provider" --listen "127.0.0.1:$MP" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MP/_mock/requests?model=none"
curl -sf -X POST "http://127.0.0.1:$MP/_mock/faults" -d '{"model":"bench","behaviour":{}}' >/dev/null

NP=$(port)
mkdir -p "$TMP/nginx/tmp"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$NP#g" -e "s#@UPSTREAM_PORT@#$MP#g" -e "s#@WORKERS@#1#g" \
    "$ROOT/scripts/loadtest/nginx.conf.in" >"$TMP/nginx/nginx.conf"
"${PIN[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx/stdout.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$NP/_mock/requests?model=none"
NW=$(pgrep -P "$(cat "$TMP/nginx/nginx.pid")" | head -1)

GP=$(port)
cat >"$TMP/gateway.json" <<JSON
{"providers": {"mock": {"kind": "openai", "base_url": "http://127.0.0.1:$MP/v1"}},
 "models": {"m-bench": {"provider": "mock", "upstream_model": "bench"}},
 "routes": {"bench": {"attempts": [{"model": "m-bench", "timeout_ms": 30000}]}},
 "traffic": {"enabled": false}}
JSON
RUST_LOG=info "${PIN[@]}" "$ROOT/target/release/examples/gateway" --config "$TMP/gateway.json" \
    --store "sqlite:$TMP/gateway.db" --listen "127.0.0.1:$GP" >/dev/null 2>"$TMP/gateway.log" &
GW=$!
PIDS+=($GW)
wait_http "http://127.0.0.1:$GP/healthz"

HP=$(port)
"${PIN[@]}" "$ROOT/target/release/examples/hyper_proxy" --listen "127.0.0.1:$HP" --upstream "127.0.0.1:$MP" \
    >/dev/null 2>"$TMP/hyper_proxy.log" &
HY=$!
PIDS+=($HY)
wait_http "http://127.0.0.1:$HP/_mock/requests?model=none"

cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
ticks() { awk '{print $14, $15}' /proc/"$1"/stat; }
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}'; }
load() { # seconds port
    taskset -c 0 oha -z "$1s" -q "$RATE" --latency-correction -c 50 --no-tui -m POST \
        -H 'content-type: application/json' -D "$ROOT/scripts/loadtest/request.json" \
        "http://127.0.0.1:$2/v1/chat/completions" >"$TMP/oha.txt" 2>&1
}
echo "CPU per request at $RATE req/s for ${SECS}s, 50 connections, servers on CPU 1"
for round in $(seq "$ROUNDS"); do
[ "$ROUNDS" = 1 ] || echo "round $round"
for target in "nginx $NW $NP" "hyper $HY $HP" "gateway $GW $GP"; do
    read -r name pid p <<<"$target"
    load 2 "$p" # warm-up: both connection pools full
    c0=$(cpu_ns "$pid"); t0=$(ticks "$pid"); s0=$(switches "$pid")
    if [ "${PERF:-0}" = 1 ] && [ "$round" = 1 ]; then
        perf record -F 4999 -e cpu-clock -g -p "$pid" -o "$TMP/perf-$name.data" -- sleep "$SECS" >"$TMP/perf-$name.log" 2>&1 &
        PR=$!
    fi
    load "$SECS" "$p"
    if [ "${PERF:-0}" = 1 ] && [ "$round" = 1 ]; then wait "$PR"; fi
    c1=$(cpu_ns "$pid"); t1=$(ticks "$pid"); s1=$(switches "$pid")
    n=$(grep -m1 -o '\[200\] [0-9]*' "$TMP/oha.txt" | awk '{print $2}')
    python3 - "$name" "$n" "$c0" "$c1" "$t0" "$t1" "$s0" "$s1" <<'PY'
import sys
name, n = sys.argv[1], int(sys.argv[2] or 0)
c0, c1 = int(sys.argv[3]), int(sys.argv[4])
u0, k0 = map(int, sys.argv[5].split()); u1, k1 = map(int, sys.argv[6].split())
v0, i0 = map(int, sys.argv[7].split()); v1, i1 = map(int, sys.argv[8].split())
if n == 0:
    sys.exit(f"{name}: no successful requests")
ticks = (u1 - u0) + (k1 - k0)
sys_share = (k1 - k0) / ticks if ticks else 0.0
print(f"{name:8} {n:7} requests  {(c1 - c0) / n / 1000:6.1f} us CPU/request  "
      f"system {sys_share:4.0%}  context switches/request {(v1 - v0) / n:.2f} voluntary + {(i1 - i0) / n:.2f} involuntary")
PY
done
done
if [ "${PERF:-0}" = 1 ]; then
    echo "profiles (round 1): $TMP/perf-nginx.data $TMP/perf-hyper.data $TMP/perf-gateway.data (perf report -i FILE --sort dso)"
fi
