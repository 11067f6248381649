#!/usr/bin/env bash
# Reproduces the figures of README.md "Performance" in one command:
#
#   benches/run.sh            # BENCH_SECONDS=10 per phase by default
#
# Builds with the `profiling` profile (release with full debug info, for perf), then on
# loopback only, each phase bounded in time:
#   1. bare    the bare hyper server (walua-load --bare), as fast as possible: the reference
#   2. ingest  walua (dry run, signed, durable) as fast as possible
#   3. 5k/s    walua at an open-loop 5,000 deliveries/s: latency p50 / p99
#   4. e2e     walua live against walua-fake-graph with a button script, clicks at
#              E2E_RATE/s: webhook → journal → store → Lua → outbox → fake Graph API, with
#              E2E_IN_FLIGHT (default 192) Graph API requests at once ([whatsapp] max_in_flight),
#              over HTTP/2 (h2c here; walua speaks HTTP/2 to Meta over TLS)
# and prints a table, with walua's peak RSS (VmHWM) per phase. Everything it starts is
# stopped at the end; its temp dir (on disk, not tmpfs, so fsync is real) is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
E2E_RATE=${E2E_RATE:-6000}
E2E_IN_FLIGHT=${E2E_IN_FLIGHT:-192}
SECRET=bench-app-secret
TOKEN=bench-access-token

# BENCH_BIN=DIR runs already built binaries (e.g. an older build, for a before/after).
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else
  cargo build --profile profiling --quiet --bin walua --bin walua-load --bin walua-fake-graph
  BIN=${CARGO_TARGET_DIR:-target}/profiling
fi
TMP=$(mktemp -d "$PWD/target/bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# CPU time (user + system) walua has used so far, in clock ticks
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# µs of walua CPU per delivery: $1 ticks before, $2 ticks after, $3 deliveries
per_delivery() { python3 -c "import os,sys; t=os.sysconf('SC_CLK_TCK'); print(f'{($2-$1)/t*1e6/max($3,1):.0f}')"; }
# Everything the deliveries caused is done: processed (journal) and indexed for search.
drained() { for _ in $(seq 1 600); do curl -sf -H "authorization: Bearer bench-admin" "http://127.0.0.1:$1/healthz" | grep "\"journal_backlog\":0" | grep -q "\"search_backlog\":0" && return 0; sleep 0.1; done; }
wait_http() { for _ in $(seq 1 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

config() { # $1 dir, $2 port, $3 extra [whatsapp] keys
  mkdir -p "$1/scripts/buttons"
  cat > "$1/walua.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
admin_token = "bench-admin"
shutdown_timeout = "10s"
[store]
path = "$1/walua.redb"
[whatsapp]
phone_number_id = "1234567890"
access_token = "$TOKEN"
app_secret = "$SECRET"
verify_token = "bench-verify"
$3
[scripts]
dir = "$1/scripts"
workers = 2
[log]
level = "info"
[vars]
shop = "Boutique Awa"
TOML
}

start_walua() { # $1 dir, $2 port
  RUST_LOG=${WALUA_LOG:-info} "$BIN/walua" --config "$1/walua.toml" serve 2>"$1/walua.log" &
  WALUA=$!
  PIDS+=("$WALUA")
  wait_http "http://127.0.0.1:$2/healthz"
}
stop_walua() { kill "$WALUA"; wait "$WALUA" 2>/dev/null || true; cp "$1/walua.log" "target/walua-$2.log" 2>/dev/null || true; }

# PERF_PHASE=ingest|e2e records a perf profile of walua during that phase into target/perf-<phase>.data
perf_start() { if [ "${PERF_PHASE:-}" = "$1" ]; then perf record -F 250 --call-graph dwarf,16384 -o "target/perf-$1.data" -p "$WALUA" 2>/dev/null & PERF=$!; fi; }
perf_stop() { if [ "${PERF_PHASE:-}" = "$1" ]; then kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true; fi; }

load() { "$BIN/walua-load" --app-secret "$SECRET" --connections "$CONNS" --duration "$SECS" --json "$@"; }

ROWS=()
row() { ROWS+=("$(printf '| %-44s | %12s | %9s | %9s | %9s | %8s | %6s |' "$@")"); }

PHASES=${PHASES:-bare ingest e2e}
has() { [[ " $PHASES " == *" $1 "* ]]; }
RATIO="-"; BARE_TPUT=0

# 1. bare hyper reference
if has bare; then
BP=$(port)
"$BIN/walua-load" --bare --listen "127.0.0.1:$BP" --duration $((SECS * 3)) 2>/dev/null &
BARE=$!; PIDS+=("$BARE")
sleep 0.3
R=$(load --url "http://127.0.0.1:$BP/webhook")
BARE_TPUT=$(field "$R" throughput)
row "bare hyper server, as fast as possible" "$(printf %.0f "$BARE_TPUT")" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" max_ms)" "-" "-"
kill "$BARE" 2>/dev/null || true
fi

# 2 + 3. durable signed ingest (dry run)
if has ingest; then
P=$(port); D="$TMP/ingest"; config "$D" "$P" "dry_run = true"
start_walua "$D" "$P"
perf_start ingest
C0=$(ticks "$WALUA")
R=$(load --url "http://127.0.0.1:$P/webhook")
perf_stop ingest
drained "$P"
CPU=$(per_delivery "$C0" "$(ticks "$WALUA")" "$(field "$R" ok)")
T=$(field "$R" throughput)
row "walua ingest, as fast as possible" "$(printf %.0f "$T")" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" max_ms)" "$(hwm "$WALUA")" "$CPU"
echo "errors (ingest): $(field "$R" statuses)" >&2
C0=$(ticks "$WALUA")
R=$(load --url "http://127.0.0.1:$P/webhook" --rate 5000)
drained "$P"
CPU=$(per_delivery "$C0" "$(ticks "$WALUA")" "$(field "$R" ok)")
row "walua ingest at 5,000/s (open loop)" "$(printf %.0f "$(field "$R" throughput)")" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" max_ms)" "$(hwm "$WALUA")" "$CPU"
RATIO=$(python3 -c "print(f'{$BARE_TPUT/$T:.2f}')")
stop_walua "$D" ingest
fi

# 4. end to end: button click → Lua → outbox → fake Graph API
if has e2e; then
FGURL="$TMP/fg.url"; FGSTATS="$TMP/fg.stats"
"$BIN/walua-fake-graph" --token "$TOKEN" --url-file "$FGURL" --stats "$FGSTATS" --duration $((SECS * 6 + 60)) 2>/dev/null &
PIDS+=("$!")
for _ in $(seq 1 100); do [ -s "$FGURL" ] && break; sleep 0.05; done
P=$(port); D="$TMP/e2e"
config "$D" "$P" "dry_run = false
api_base = \"$(cat "$FGURL")\"
allow_outside_window = false
max_per_second = 100000
pair_burst = 1000
pair_interval = \"1ms\"
max_in_flight = $E2E_IN_FLIGHT
http2_cleartext = true
request_timeout = \"30s\""
cat > "$D/scripts/buttons/validate_order.lua" <<'LUA'
return {
  match = "^btn_validate_order_(%d+)$",
  anyone = true, -- walua-load clicks buttons walua never sent
  run = function(order_id)
    env.whatsapp.send_text(message.from, "Commande " .. order_id .. " validée, merci " .. contact.name .. " — " .. env.vars.shop)
  end,
}
LUA
start_walua "$D" "$P"
if [ -n "${PIDSTAT:-}" ]; then pidstat -t -p "$WALUA" "$SECS" 1 > target/pidstat-e2e.txt 2>&1 & fi
perf_start e2e
C0=$(ticks "$WALUA")
R=$(load --url "http://127.0.0.1:$P/webhook" --kind button --contacts 500 --rate "$E2E_RATE")
OK=$(field "$R" ok)
# Wait (bounded) until the fake Graph API has accepted one send per acknowledged click.
for _ in $(seq 1 $((SECS * 20 + 600))); do
  N=$(tail -n1 "$FGSTATS" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.read() or "{\"accepted\":0}")["accepted"])')
  [ "$N" -ge "$OK" ] && break
  sleep 0.1
done
perf_stop e2e
CPU=$(per_delivery "$C0" "$(ticks "$WALUA")" "$OK")
cp "$FGSTATS" target/bench-e2e.stats 2>/dev/null || true
E2E=$(python3 - "$FGSTATS" "$OK" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = int(sys.argv[2])
first = next(r["t"] for r in rows if r["accepted"] > 0)
last = rows[-1]
# from the first accepted send to the last one (0.1 s resolution)
print(f'{last["accepted"]} {last["accepted"] / max(last["t"] - first + 0.1, 0.1):.0f}')
PY
)
row "walua e2e: click → Lua → outbox → Graph, at ${E2E_RATE}/s, ${E2E_IN_FLIGHT} in flight" "${E2E#* }" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" max_ms)" "$(hwm "$WALUA")" "$CPU"
echo "e2e: $OK clicks acknowledged, ${E2E% *} sends accepted by the fake Graph API" >&2
stop_walua "$D" e2e
fi

echo
echo "| phase (${SECS}s each, ${CONNS} connections, loopback, $(nproc) cores) | deliveries/s | p50 ms | p99 ms | max ms | VmHWM MB | CPU µs/delivery |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
echo "bare / walua ingest throughput ratio: $RATIO"
