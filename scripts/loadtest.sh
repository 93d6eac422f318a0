#!/usr/bin/env bash
# Load test of the modelux reference gateway against nginx, both in front of
# the same fake provider, with the provider called directly as the baseline.
#
#   bash scripts/loadtest.sh            # full run (~6 min after the builds)
#   bash scripts/loadtest.sh --quick    # shorter steps, two rates (~2 min after the builds)
#   bash scripts/loadtest.sh --keep     # keep the temp dir (logs, configs, raw results)
#   bash scripts/loadtest.sh --gateway=PATH  # measure another gateway binary (e.g. the
#                                       # PGO build of scripts/build-pgo.sh) instead of
#                                       # target/release/examples/gateway
#
# What it does, from a fresh clone:
#   1. installs what is missing: nginx (apt-get install nginx-light), oha
#      (cargo install oha --locked; an open-loop HTTP load generator with
#      -q RATE and --latency-correction against coordinated omission);
#   2. builds --release the gateway and mock_provider examples and the
#      stream_load tool (benches/stream_load.rs);
#   3. starts on 127.0.0.1 only: the fake provider, nginx as a keepalive
#      reverse proxy to it (its own config in a temp prefix, foreground), and
#      the gateway with one route per test to the provider (openai kind, no
#      faults);
#   4. drives direct / nginx / gateway: closed-loop to find max throughput;
#      recording's cost (a recording and a non-recording gateway side by
#      side at the same rate, CPU per request); open-loop at constant rates
#      (bounded steps) for latency; 1,000 concurrent streams for time to
#      first token; then 10,000 idle open streams for RSS, through nginx and
#      through fresh gateways: over HTTP/1.1, with an HTTP/2 provider, and
#      with HTTP/2 clients too;
#   5. prints one table, and stops everything it started (trap).
#
# Two CPUs are shared by the load generator and the servers. With 2+ CPUs the
# load generator runs on CPU 0 and every server (provider, nginx, gateway) on
# the others, so a proxy and the provider behind it share the same CPU(s):
# figures are ratios against the direct baseline measured in the same run.
set -euo pipefail

QUICK=0
KEEP=0
GATEWAY_BIN=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --gateway=*) GATEWAY_BIN="${arg#--gateway=}" ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/loadtest"
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

if [[ $QUICK == 1 ]]; then
    STEP=3s; MAX_STEP=4s; RATES="1000 5000"
    TTFT_RAMP_MS=1000; HOLD_RAMP_MS=5000; HOLD_MS=2000
else
    STEP=8s; MAX_STEP=8s; RATES="1000 2000 5000 7500 10000 15000 20000"
    TTFT_RAMP_MS=1000; HOLD_RAMP_MS=8000; HOLD_MS=5000
fi
REC_ROUNDS=5            # recording on/off rounds, side by side (median of the ratios)
CONNS=64                # oha connections (open loop: enough to never limit the rate)
TTFT_STREAMS=1000
HOLD_TARGET=10000       # the RSS target's stream count
HOLD_STREAMS=$HOLD_TARGET
# TTFT streams, started over a 1 s ramp and lasting 2-3 s, so all 1,000 are
# open at once: 20 content chunks 100 ms apart (10 tokens/s; the judged pass),
# 3 chunks 1 s apart (1 token/s: the TTFT cost alone, without the per-chunk
# forwarding load), and in the full run 40 chunks 50 ms apart (20 tokens/s).
STREAM_WORDS=20; STREAM_INTERVAL_MS=100
SLOW_WORDS=3; SLOW_INTERVAL_MS=1000
FAST_WORDS=40; FAST_INTERVAL_MS=50

log() { printf '[loadtest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools ---
install_tools() {
    if ! command -v nginx >/dev/null 2>&1; then
        log "installing nginx-light (apt-get)"
        command -v apt-get >/dev/null || die "nginx is missing and apt-get is not available"
        apt-get install -y nginx-light >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y nginx-light >/dev/null; } \
            || apt-get install -y nginx >/dev/null \
            || die "cannot install nginx"
    fi
    if ! command -v oha >/dev/null 2>&1; then
        log "installing oha (cargo install oha --locked; this compiles for several minutes)"
        cargo install oha --locked >/dev/null 2>&1 || die "cannot install oha"
    fi
    for t in taskset python3 curl; do
        command -v "$t" >/dev/null || die "$t is required"
    done
}

# --------------------------------------------------------------- build ----
build() {
    log "building the gateway, the fake provider and stream_load (--release)"
    (cd "$ROOT" && cargo build --release --example gateway --example mock_provider) >&2
    STREAM_LOAD="$(cd "$ROOT" && cargo build --release --bench stream_load --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except ValueError: continue
    if m.get("reason")=="compiler-artifact" and m.get("target",{}).get("name")=="stream_load" and m.get("executable"): print(m["executable"])' | tail -1)"
    [[ -x "$STREAM_LOAD" ]] || die "stream_load did not build"
    GATEWAY="$ROOT/target/release/examples/gateway"
    if [[ -n $GATEWAY_BIN ]]; then
        GATEWAY="$(cd "$(dirname "$GATEWAY_BIN")" && pwd)/$(basename "$GATEWAY_BIN")"
        log "gateway binary: $GATEWAY"
    fi
    MOCK="$ROOT/target/release/examples/mock_provider"
    [[ -x "$GATEWAY" && -x "$MOCK" ]] || die "the examples did not build"
}

# ------------------------------------------------------------- processes --
PIDS=()
TMP=""
cleanup() {
    local code=$?
    for pid in "${PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ $KEEP == 1 || $code != 0 ]]; then
            log "logs, configs and raw results kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit $code
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url, what
    for _ in $(seq 1 100); do
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.1
    done
    die "$2 did not come up ($1)"
}

# Pinning: load generator on CPU 0, servers on the others (when there are 2+).
NCPU=$(nproc)
if [[ $NCPU -ge 2 ]]; then
    LOAD_CPUS=0; SERVER_CPUS="1-$((NCPU - 1))"
    LOAD_PIN=(taskset -c "$LOAD_CPUS"); SERVER_PIN=(taskset -c "$SERVER_CPUS")
    SERVER_NCPU=$((NCPU - 1))
    PINNING="load generator on CPU $LOAD_CPUS, servers on CPU $SERVER_CPUS"
else
    LOAD_PIN=(); SERVER_PIN=(); SERVER_NCPU=1
    PINNING="1 CPU: no pinning, everything shares it"
fi

start_gateway() { # log name [RUST_LOG] [config] [port]
    local filter="${2:-info}" config="${3:-$TMP/gateway.json}" port="${4:-$GW_PORT}"
    log "gateway on 127.0.0.1:$port (logging: $filter, to $1.log, config $(basename "$config"))"
    # Its own SQLite store (config versions and the traffic log) in the temp dir.
    RUST_LOG="$filter" "${SERVER_PIN[@]}" "$GATEWAY" --config "$config" --store "sqlite:$TMP/$1.db" \
        --listen "127.0.0.1:$port" >"$TMP/$1.stdout.log" 2>"$TMP/$1.log" &
    GW_PID=$!
    PIDS+=($GW_PID)
    wait_http "http://127.0.0.1:$port/healthz" "the gateway"
}

start_nginx() {
    sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$NGINX_PORT#g" \
        -e "s#@UPSTREAM_PORT@#$MOCK_PORT#g" -e "s#@WORKERS@#$SERVER_NCPU#g" \
        "$HERE/nginx.conf.in" >"$TMP/nginx/nginx.conf"
    log "nginx on 127.0.0.1:$NGINX_PORT ($(nginx -v 2>&1 | sed 's/.*: //'), $SERVER_NCPU worker(s))"
    "${SERVER_PIN[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        >"$TMP/nginx/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=($NGINX_PID)
    wait_http "http://127.0.0.1:$NGINX_PORT/_mock/requests?model=none" "nginx"
}

start_servers() {
    TMP="$(mktemp -d /tmp/modelux-loadtest.XXXXXX)"
    chmod 755 "$TMP"
    mkdir -p "$TMP/nginx/tmp" "$TMP/results"
    MOCK_PORT=$(free_port); NGINX_PORT=$(free_port); GW_PORT=$(free_port); GW2_PORT=$(free_port)

    log "fake provider on 127.0.0.1:$MOCK_PORT"
    # No HTTP/2 stream limit: the RSS pass through an HTTP/2 upstream holds
    # every stream on one connection (HTTP/1.1 runs are unaffected).
    "${SERVER_PIN[@]}" "$MOCK" --listen "127.0.0.1:$MOCK_PORT" --h2-max-streams none >"$TMP/mock.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$MOCK_PORT/_mock/requests?model=none" "the fake provider"
    local faults="http://127.0.0.1:$MOCK_PORT/_mock/faults"
    curl -sf -X POST "$faults" -d '{"model":"bench","behaviour":{}}' >/dev/null
    curl -sf -X POST "$faults" -d "{\"model\":\"stream\",\"behaviour\":{\"words\":$STREAM_WORDS,\"chunk_interval_ms\":$STREAM_INTERVAL_MS}}" >/dev/null
    curl -sf -X POST "$faults" -d "{\"model\":\"stream-slow\",\"behaviour\":{\"words\":$SLOW_WORDS,\"chunk_interval_ms\":$SLOW_INTERVAL_MS}}" >/dev/null
    curl -sf -X POST "$faults" -d "{\"model\":\"stream-fast\",\"behaviour\":{\"words\":$FAST_WORDS,\"chunk_interval_ms\":$FAST_INTERVAL_MS}}" >/dev/null
    curl -sf -X POST "$faults" -d '{"model":"idle","behaviour":{"words":20,"fault":{"kind":"stall_after","chunks":1,"ms":600000}}}' >/dev/null

    start_nginx


    cat >"$TMP/gateway.json" <<EOF
{
  "providers": {"mock": {"kind": "openai", "base_url": "http://127.0.0.1:$MOCK_PORT/v1"}},
  "models": {
    "m-bench":  {"provider": "mock", "upstream_model": "bench"},
    "m-stream": {"provider": "mock", "upstream_model": "stream"},
    "m-stream-fast": {"provider": "mock", "upstream_model": "stream-fast"},
    "m-stream-slow": {"provider": "mock", "upstream_model": "stream-slow"},
    "m-idle":   {"provider": "mock", "upstream_model": "idle"}
  },
  "routes": {
    "bench":  {"attempts": [{"model": "m-bench", "timeout_ms": 30000}]},
    "stream": {"attempts": [{"model": "m-stream", "timeout_ms": 30000}]},
    "stream-fast": {"attempts": [{"model": "m-stream-fast", "timeout_ms": 30000}]},
    "stream-slow": {"attempts": [{"model": "m-stream-slow", "timeout_ms": 30000}]},
    "idle":   {"attempts": [{"model": "m-idle", "timeout_ms": 60000}], "stream_idle_timeout_ms": 600000}
  }
}
EOF
    # The same with traffic recording (for dry-runs) switched off, to
    # measure what recording costs.
    python3 -c 'import json,sys
c=json.load(open(sys.argv[1])); c["traffic"]={"enabled": False}
json.dump(c, open(sys.argv[2], "w"))' "$TMP/gateway.json" "$TMP/gateway-norec.json"
    # The same speaking HTTP/2 (h2c) to the provider, for the RSS pass.
    python3 -c 'import json,sys
c=json.load(open(sys.argv[1])); c["providers"]["mock"]["http2"]=True
json.dump(c, open(sys.argv[2], "w"))' "$TMP/gateway.json" "$TMP/gateway-h2.json"
    start_gateway gateway

    URL_direct="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    URL_nginx="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    URL_gateway="http://127.0.0.1:$GW_PORT/v1/chat/completions"
    for t in direct nginx gateway; do
        local u="URL_$t"
        curl -sf "${!u}" -H 'content-type: application/json' -d @"$HERE/request.json" \
            | grep -q '"chat.completion"' || die "$t does not answer a completion"
    done
}

# ----------------------------------------------------------------- load ---
oha_run() { # out, url, extra args...
    local out=$1 url=$2
    shift 2
    "${LOAD_PIN[@]}" oha --no-tui --output-format json -w -c "$CONNS" \
        -m POST -T application/json -D "$HERE/request.json" "$@" "$url" >"$out" 2>"$out.err" \
        || die "oha failed: $(tail -3 "$out.err")"
}

max_rps() { # oha json -> successful requests per second
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1])); s=d["summary"]
print(int(s["requestsPerSec"]*s["successRate"]))' "$1"
}

run_http() {
    local R="$TMP/results"
    log "warm-up (1 s each)"
    for t in direct nginx gateway; do
        local u="URL_$t"
        oha_run "$R/warm_$t.json" "${!u}" -z 1s -q 2000
    done
    for t in direct nginx gateway; do
        local u="URL_$t"
        log "max throughput: $t ($MAX_STEP, $CONNS connections, closed loop)"
        oha_run "$R/max_$t.json" "${!u}" -z "$MAX_STEP"
        declare -g "MAX_$t=$(max_rps "$R/max_$t.json")"
        local m="MAX_$t"
        log "  $t: ${!m} req/s"
    done
    # Traffic recording on (the gateway above) against off: CPU time per
    # request. Both gateways run side by side and serve the same rate at the
    # same time (a quarter of the gateway's max each, so together they load
    # the machine like one gateway at half its max), in $REC_ROUNDS rounds:
    # whatever else this shared machine does hits both alike, which a
    # one-after-the-other comparison cannot promise (single rounds of that
    # moved by +-10 % here). The median of the rounds' ratios is reported.
    local rec_rate=$(( (MAX_gateway / 4) / 100 * 100 ))
    (( rec_rate < 200 )) && rec_rate=200
    echo "$rec_rate" >"$R/recording_rate"
    kill "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null || true
    start_gateway gateway-norec info "$TMP/gateway-norec.json" "$GW2_PORT"
    local norec_pid=$GW_PID
    start_gateway gateway-rec
    local rec_pid=$GW_PID
    local url_norec="http://127.0.0.1:$GW2_PORT/v1/chat/completions"
    side_by_side() { # result name (recording on), result name (off), duration
        oha_run "$R/$1.json" "$URL_gateway" -z "$3" -q "$rec_rate" &
        local a=$!
        oha_run "$R/$2.json" "$url_norec" -z "$3" -q "$rec_rate" &
        local b=$!
        wait "$a" && wait "$b" || die "the recording comparison ($1) failed"
    }
    side_by_side warm_rec_rec warm_rec_norec 1s
    # CPU time of all of a process's threads, in ns (schedstat; /proc/PID/stat
    # counts in 10 ms ticks, 1-2 % of a round here).
    cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
    for round in $(seq 1 "$REC_ROUNDS"); do
        local r0 r1 n0 n1
        r0=$(cpu_ns "$rec_pid"); n0=$(cpu_ns "$norec_pid")
        side_by_side "recording_rec_$round" "recording_norec_$round" "$STEP"
        r1=$(cpu_ns "$rec_pid"); n1=$(cpu_ns "$norec_pid")
        echo "$((r1 - r0)) 1000000000" >"$R/recording_rec_$round.cpu"
        echo "$((n1 - n0)) 1000000000" >"$R/recording_norec_$round.cpu"
        log "  recording round $round at $rec_rate req/s each: on $(((r1 - r0) / 1000000)), off $(((n1 - n0) / 1000000)) ms of CPU"
    done
    kill "$rec_pid" "$norec_pid" 2>/dev/null; wait "$rec_pid" "$norec_pid" 2>/dev/null || true
    start_gateway gateway
    local rates="$RATES"
    if [[ $QUICK == 1 ]] && (( MAX_gateway < 5000 )); then
        # 5k is beyond this machine's gateway: add a rate it sustains with headroom (60% of its max).
        rates="$rates $(( (MAX_gateway * 6 / 10) / 250 * 250 ))"
    fi
    echo "$rates" >"$R/rates"
    for rate in $rates; do
        for t in direct nginx gateway; do
            local u="URL_$t" m="MAX_$t"
            if (( rate > ${!m} * 12 / 10 )); then
                log "rate $rate: $t skipped (max throughput ${!m})"
                continue
            fi
            log "rate $rate req/s: $t ($STEP, open loop, latency-corrected)"
            oha_run "$R/rate_${rate}_$t.json" "${!u}" -z "$STEP" -q "$rate" --latency-correction
        done
    done
}

ttft_pass() { # results prefix, model, targets...
    local R="$TMP/results" prefix=$1 model=$2
    shift 2
    for t in "$@"; do
        local u="URL_$t"
        log "TTFT ($model): $TTFT_STREAMS concurrent streams via $t (warm-up pass, then measured pass)"
        "${LOAD_PIN[@]}" "$STREAM_LOAD" ttft --url "${!u}" --model "$model" --streams "$TTFT_STREAMS" \
            --ramp-ms "$TTFT_RAMP_MS" --warmup >"$R/${prefix}_$t.json" 2>"$R/${prefix}_$t.err" \
            || die "stream_load ttft failed: $(tail -3 "$R/${prefix}_$t.err")"
    done
}

# Restarts the gateway (log NAME, RUST_LOG, config), warms it with a few
# streams, then holds STREAMS (default $HOLD_STREAMS) idle streams through
# it, passing the remaining arguments to stream_load; results in OUT.json.
hold_fresh_gateway() { # name out filter config [streams [stream_load flags...]]
    local streams=${5:-$HOLD_STREAMS}
    local R="$TMP/results"
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    start_gateway "$1" "$3" "$4"
    "${LOAD_PIN[@]}" "$STREAM_LOAD" ttft --url "$URL_gateway" --model stream --streams 10 --ramp-ms 100 "${@:6}" \
        >/dev/null 2>&1 || true
    log "RSS: $streams open idle streams through a fresh gateway, $(basename "$4") ${*:6} (pid $GW_PID)"
    "${LOAD_PIN[@]}" "$STREAM_LOAD" hold --url "$URL_gateway" --model idle --streams "$streams" \
        --ramp-ms "$HOLD_RAMP_MS" --hold-ms "$HOLD_MS" --pid "$GW_PID" --timeout-ms 60000 "${@:6}" \
        >"$R/$2.json" 2>"$R/$2.err" \
        || die "stream_load hold through $1 failed: $(tail -3 "$R/$2.err")"
}

run_streams() {
    local R="$TMP/results"
    ttft_pass ttft stream direct nginx gateway
    ttft_pass ttftslow stream-slow direct nginx gateway
    if [[ $QUICK == 0 ]]; then
        ttft_pass ttftfast stream-fast direct nginx gateway
    fi

    # nginx for reference (master and workers), restarted like the gateway
    # below so that neither holds idle upstream connections from earlier runs.
    kill -TERM "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    start_nginx
    local ngx_pids="$NGINX_PID"
    for c in $(cat /proc/"$NGINX_PID"/task/*/children 2>/dev/null); do ngx_pids="$ngx_pids,$c"; done
    log "RSS: $HOLD_STREAMS open idle streams through nginx (pids $ngx_pids)"
    "${LOAD_PIN[@]}" "$STREAM_LOAD" hold --url "$URL_nginx" --model idle --streams "$HOLD_STREAMS" \
        --ramp-ms "$HOLD_RAMP_MS" --hold-ms "$HOLD_MS" --pid "$ngx_pids" --timeout-ms 60000 \
        >"$R/hold_nginx.json" 2>"$R/hold_nginx.err" \
        || die "stream_load hold failed: $(tail -3 "$R/hold_nginx.err")"

    # The gateway after the throughput runs keeps the allocator's high-water
    # mark: note it, then measure on a fresh gateway (one warm-up stream).
    echo "$(awk '/VmRSS/{print $2}' /proc/"$GW_PID"/status)" >"$R/gateway_rss_after_load_kb"
    hold_fresh_gateway gateway-hold hold_gateway "info,modelux::fallback=debug" "$TMP/gateway.json"
    # The same speaking HTTP/2 to the provider: all streams share its
    # connection instead of holding one each.
    hold_fresh_gateway gateway-hold-h2 hold_gateway_h2 info "$TMP/gateway-h2.json"
    # And the clients over HTTP/2 too (100 streams to a connection): no
    # socket per stream on either side, so all 10,000 fit under any
    # descriptor limit.
    hold_fresh_gateway gateway-hold-h2h2 hold_gateway_h2h2 info "$TMP/gateway-h2.json" "$HOLD_TARGET" --http2
    # Why any stream failed to open, from the gateway's per-request events.
    sed 's/\x1b\[[0-9;]*m//g' "$TMP/gateway-hold.log" | grep 'attempt finished' | grep -v 'outcome="ok"' \
        | grep -o 'outcome="[a-z_]*"' | sort | uniq -c >"$R/hold_gateway_failures.txt" || true
}

# ----------------------------------------------------------------- main ---
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# A proxy holds two sockets per open stream (client and upstream): with a
# hard limit below ~20,200 descriptors (20,000 in this sandbox, not raisable
# without CAP_SYS_RESOURCE), fewer than 10,000 streams fit. Hold as many as
# fit; the report extrapolates the RSS to 10,000 from the per-stream slope.
FD_LIMIT=$(ulimit -n)
if [[ "$FD_LIMIT" != unlimited ]] && (( FD_LIMIT < 2 * HOLD_STREAMS + 400 )); then
    HOLD_STREAMS=$(( (FD_LIMIT - 400) / 2 / 100 * 100 ))
    log "file descriptor limit $FD_LIMIT: holding $HOLD_STREAMS streams instead of 10000"
fi
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"

install_tools
build
start_servers
run_http
run_streams

cat >"$TMP/results/meta.json" <<EOF
{"quick": $QUICK, "nproc": $NCPU, "cpu": "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')",
 "pinning": "$PINNING", "step": "$STEP", "max_step": "$MAX_STEP", "conns": $CONNS,
 "ttft_streams": $TTFT_STREAMS, "stream_words": $STREAM_WORDS, "stream_interval_ms": $STREAM_INTERVAL_MS,
 "fast_words": $FAST_WORDS, "fast_interval_ms": $FAST_INTERVAL_MS,
 "slow_words": $SLOW_WORDS, "slow_interval_ms": $SLOW_INTERVAL_MS,
 "hold_streams": $HOLD_STREAMS, "nginx": "$(nginx -v 2>&1 | sed 's/.*: //')", "oha": "$(oha --version | head -1)",
 "hold_target": $HOLD_TARGET, "hold_h2h2_streams": $HOLD_TARGET, "fd_limit": "$FD_LIMIT",
 "load_start": "$LOAD_AT_START", "load": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "gateway_bin": "${GATEWAY_BIN:+$GATEWAY}"}
EOF
python3 "$HERE/report.py" "$TMP/results"
