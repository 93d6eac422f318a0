#!/usr/bin/env bash
# Exact instruction counts per non-streaming request of the release gateway,
# with traffic recording on (the default) and off: the figures behind the
# "recording costs" row of docs/performance.md.
#
#   bash scripts/callgrind-gateway.sh          # both modes, prints instructions per request
#   bash scripts/callgrind-gateway.sh rec      # one mode (rec | norec)
#
# The gateway runs under valgrind --tool=callgrind with instrumentation off;
# 200 warm-up requests, then instrumentation on for 2,000 requests of the
# load test's body (oha, 8 connections) and the writer's next flush, then a
# dump. Needs valgrind and oha (see scripts/loadtest.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N=2000
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
command -v oha >/dev/null || { echo "oha is missing (cargo install oha --locked)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --example gateway --example mock_provider) >&2
TMP="$(mktemp -d /tmp/modelux-callgrind.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; exit 1; }
BODY="$(cat "$ROOT/scripts/loadtest/request.json")"
load() { oha -n "$1" -c 8 --no-tui -m POST -H 'content-type: application/json' -d "$BODY" "$2" >"$TMP/oha.txt"; }

MP=$(port)
"$ROOT/target/release/examples/mock_provider" --listen "127.0.0.1:$MP" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MP/_mock/requests?model=none"
curl -sf -X POST "http://127.0.0.1:$MP/_mock/faults" -d '{"model":"bench","behaviour":{}}' >/dev/null

measure() { # rec|norec
    local mode=$1 d="$TMP/$1" gp
    mkdir -p "$d"; gp=$(port)
    python3 - "$mode" "$MP" >"$d/gateway.json" <<'PY'
import json, sys
c = {"providers": {"mock": {"kind": "openai", "base_url": f"http://127.0.0.1:{sys.argv[2]}/v1"}},
     "models": {"m-bench": {"provider": "mock", "upstream_model": "bench"}},
     "routes": {"bench": {"attempts": [{"model": "m-bench", "timeout_ms": 30000}]}}}
if sys.argv[1] == "norec":
    c["traffic"] = {"enabled": False}
print(json.dumps(c))
PY
    RUST_LOG=info valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/cg.out" \
        "$ROOT/target/release/examples/gateway" --config "$d/gateway.json" --store "sqlite:$d/gw.db" \
        --listen "127.0.0.1:$gp" >"$d/gateway.log" 2>&1 &
    local gpid=$!
    PIDS+=($gpid)
    wait_http "http://127.0.0.1:$gp/healthz"
    local url="http://127.0.0.1:$gp/v1/chat/completions"
    load 200 "$url"
    sleep 1
    callgrind_control -i on "$gpid" >/dev/null
    load "$N" "$url"
    sleep 2.5 # the writer's next flush (once a second) and its SQLite commit
    callgrind_control -i off "$gpid" >/dev/null
    callgrind_control -d "$gpid" >/dev/null
    sleep 1
    kill "$gpid" 2>/dev/null || true
    wait "$gpid" 2>/dev/null || true
    local total
    total=$(callgrind_annotate "$d/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}')
    echo "$mode: $((total / N)) instructions per request ($total over $N requests)"
}

for mode in "${@:-rec norec}"; do
    for m in $mode; do measure "$m"; done
done
