#!/usr/bin/env bash
# A/B of two release promod binaries (issue 10): alternated on fresh
# databases in one session, every role in one process, each run followed by
# `promoctl check`. The machine is shared and noisy: compare ratios.
#
#   perf/ab.sh BASE_PROMOD NEW_PROMOD [SCENARIO_FILE] [ROUNDS]
#   DURATION=10s CONC=128 RATE=3000 perf/ab.sh a/promod b/promod perf/scenarios/target-point.toml 3
#
# Each run: a closed loop of CONC workers (capacity), then an open loop at
# RATE, or at a multiple of the ok/s the closed loop just measured
# (RATE=3x: the issue-18 peak). The rss column is promod's peak (VmHWM) over
# both. EXTRA adds load flags to every run (EXTRA=--idempotency-keys: keyed
# writes; EXTRA="--max-in-flight 10000" for the peak). PIN=1 runs promod on
# the last CPU and promoctl on CPU 0, so the generator cannot take the
# server's CPU; pin PostgreSQL and Redis to the last CPU yourself
# (`taskset -acp`) for a clean split.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
A=$1 B=$2 FILE=${3:-perf/scenarios/target-point.toml} ROUNDS=${4:-2}
DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} CONC=${CONC:-128} RATE=${RATE:-3000}
eval "$(scripts/services.sh env)"
PG=$PROMO_TEST_DATABASE_URL
CTL=target/release/promoctl
WORK=$(mktemp -d)
# shellcheck source=perf/lib.sh
. perf/lib.sh
# Ports may be moved (GW_PORT, HTTP_PORT, GRPC_PORT) when another run uses these.
promod_env "${GW_PORT:-14100}" "${HTTP_PORT:-13100}" "${GRPC_PORT:-15150}"
SERVER= CLIENT=
if [ -n "${PIN:-}" ]; then
  SERVER="taskset -c $(($(nproc) - 1))" CLIENT="taskset -c 0"
fi
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

run() { # label binary
  local label=$1 bin=$2 db r
  db="ab_$(date +%s%N)"
  create_dbs "$db"
  $SERVER "$bin" >>"$WORK/promod.log" 2>&1 & PID=$!
  for _ in $(seq 1 150); do curl -sf "$GW/readyz" >/dev/null && break; sleep 0.2; done
  local rows=() mode
  local cap=0
  for mode in "--concurrency $CONC" "--rate $RATE"; do
    if [[ $mode == *x ]]; then
      mode="--rate $(python3 -c "print(round(${RATE%x} * $cap))")"
    fi
    # shellcheck disable=SC2086
    $CLIENT $CTL --gateway-url $GW load --file "$FILE" $mode ${EXTRA:-} --jwt-secret "$PROMO_JWT_SECRET" \
      --duration "$DURATION" --warmup "$WARMUP" --quiet --report "$WORK/r.json" >/dev/null 2>&1 || true
    sleep 1
    local check=green
    $CTL check >"$WORK/check.txt" 2>&1 || { check=RED; cat "$WORK/check.txt" >&2; }
    rows+=("$(python3 - "$WORK/r.json" "$label" "$check" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]; e = max(s["elapsed_secs"], 1e-9)
print(f"| {sys.argv[2]} | {r['mode']} | {s['rps']:.0f} | {s['succeeded']/e:.0f} | {s['refused']/e:.0f} | {s['shed']/e:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['p999_ms']:.1f} | {s['ok_p99_ms']:.1f} | {s['shed_p99_ms']:.1f} | {s['failed']}+{s['missed']} | {sys.argv[3]} |")
PY
)")
    cap=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print(s["succeeded"]/max(s["elapsed_secs"],1e-9))' "$WORK/r.json")
  done
  local hwm
  hwm=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$PID/status")
  for r in "${rows[@]}"; do echo "$r $hwm |"; done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  drop_dbs "$db"
}

echo "Scenario: $FILE; $WARMUP warm-up, then $DURATION per row."
echo
echo "| build | mode | req/s | ok/s | refused/s | shed/s | p50 ms | p99 ms | p99.9 ms | ok p99 ms | 503 p99 ms | errors | check | peak rss MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for _ in $(seq 1 "$ROUNDS"); do
  run before "$A"
  run after "$B"
done
