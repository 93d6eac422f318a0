#!/usr/bin/env bash
# Builds the reference gateway with profile-guided optimisation: an
# instrumented build serves the load test's requests (non-streaming and
# streaming) through the fake provider, and the profile it writes guides a
# second build. The result is target/pgo/release/examples/gateway; the plain
# `cargo build --release` binary is left alone.
#
#   bash scripts/build-pgo.sh            # ~15 min on 2 cores (two full builds)
#
# Needs rustup's llvm-tools component (installed if missing) for
# llvm-profdata matching rustc's LLVM, and oha (see scripts/loadtest.sh).
# docs/performance.md (F15) gives what it buys, measured side by side.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
command -v oha >/dev/null || { echo "oha is missing (cargo install oha --locked)" >&2; exit 1; }
SYSROOT="$(rustc --print sysroot)"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
PROFDATA="$SYSROOT/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
    rustup component add llvm-tools >&2
fi
[ -x "$PROFDATA" ] || { echo "llvm-profdata not found at $PROFDATA" >&2; exit 1; }

TMP="$(mktemp -d /tmp/modelux-pgo.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; exit 1; }

echo "[pgo] 1/3 instrumented build (target/pgo-gen)" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$TMP/profiles" \
    cargo build --release --example gateway --example mock_provider --target-dir target/pgo-gen) >&2

echo "[pgo] 2/3 training: the load test's requests through the instrumented gateway" >&2
BIN="$ROOT/target/pgo-gen/release/examples"
MP=$(port)
"$BIN/mock_provider" --listen "127.0.0.1:$MP" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MP/_mock/requests?model=none"
curl -sf -X POST "http://127.0.0.1:$MP/_mock/faults" -d '{"model":"bench","behaviour":{}}' >/dev/null
curl -sf -X POST "http://127.0.0.1:$MP/_mock/faults" -d '{"model":"stream","behaviour":{"words":20}}' >/dev/null
GP=$(port)
cat >"$TMP/gateway.json" <<JSON
{"providers": {"mock": {"kind": "openai", "base_url": "http://127.0.0.1:$MP/v1"}},
 "models": {"m-bench": {"provider": "mock", "upstream_model": "bench"},
            "m-stream": {"provider": "mock", "upstream_model": "stream"}},
 "routes": {"bench": {"attempts": [{"model": "m-bench", "timeout_ms": 30000}]},
            "stream": {"attempts": [{"model": "m-stream", "timeout_ms": 30000}]}}}
JSON
RUST_LOG=info "$BIN/gateway" --config "$TMP/gateway.json" --store "sqlite:$TMP/gateway.db" \
    --listen "127.0.0.1:$GP" >/dev/null 2>"$TMP/gateway.log" &
GW=$!
wait_http "http://127.0.0.1:$GP/healthz"
oha -n 40000 -c 32 --no-tui -m POST -H 'content-type: application/json' \
    -D "$ROOT/scripts/loadtest/request.json" "http://127.0.0.1:$GP/v1/chat/completions" >"$TMP/oha-bench.txt"
oha -n 4000 -c 32 --no-tui -m POST -H 'content-type: application/json' \
    -d '{"model":"stream","stream":true,"messages":[{"role":"user","content":"Say hello."}]}' \
    "http://127.0.0.1:$GP/v1/chat/completions" >"$TMP/oha-stream.txt"
# The profile is written when the process exits: stop it the way an
# operator would, and wait for it.
kill -TERM "$GW"
wait "$GW" || true
ls "$TMP/profiles"/*.profraw >/dev/null 2>&1 || { echo "the instrumented gateway wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$TMP/merged.profdata" "$TMP/profiles"

echo "[pgo] 3/3 optimised build (target/pgo)" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$TMP/merged.profdata" \
    cargo build --release --example gateway --target-dir target/pgo) >&2
echo "$ROOT/target/pgo/release/examples/gateway"
