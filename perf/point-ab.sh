#!/usr/bin/env bash
# A/B of the point write path (issue 10, group commit): two release promod
# binaries, alternated on fresh databases in one session, each run followed
# by `promoctl check`. The machine is shared and noisy: compare ratios.
#
#   perf/point-ab.sh BASE_PROMOD NEW_PROMOD [ROUNDS]
#   DURATION=10s CONC=128 RATE=3000 perf/point-ab.sh ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
A=$1 B=$2 ROUNDS=${3:-2}
DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} CONC=${CONC:-128} RATE=${RATE:-3000}
eval "$(scripts/services.sh env)"
PG=$PROMO_TEST_DATABASE_URL
CTL=target/release/promoctl
WORK=$(mktemp -d)
export PROMO_JWT_SECRET="perf-secret-perf-secret-perf-secret-perf"
export PROMO_LOG__LEVEL=warn PROMO_KAFKA_BROKERS=$PROMO_TEST_KAFKA
export PROMO_GATEWAY__RATE_LIMIT__ENABLED=false PROMO_GATEWAY__HTTP_ADDR=127.0.0.1:14100
export PROMO_POINT__HTTP_ADDR=127.0.0.1:13102 PROMO_POINT__GRPC_ADDR=127.0.0.1:15152
GW=http://127.0.0.1:14100
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

run() { # label binary
  local label=$1 bin=$2 db
  db="pointab_$(date +%s%N)"
  export PROMO_GATEWAY__DATABASE_URL=$PG/${db}_gateway PROMO_POINT__DATABASE_URL=$PG/${db}_point
  psql -q "$PG/postgres" -c "CREATE DATABASE ${db}_gateway" -c "CREATE DATABASE ${db}_point" >/dev/null
  export PROMOCTL_POINT_DATABASE_URL=$PG/${db}_point
  "$bin" --roles gateway,point >>"$WORK/promod.log" 2>&1 & PID=$!
  for _ in $(seq 1 150); do curl -sf "$GW/readyz" >/dev/null && break; sleep 0.2; done
  local auth=(--jwt-secret "$PROMO_JWT_SECRET")
  for mode in "--concurrency $CONC" "--rate $RATE"; do
    # shellcheck disable=SC2086
    $CTL --gateway-url $GW load point $mode --users 100000 "${auth[@]}" --duration "$WARMUP" --quiet >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    $CTL --gateway-url $GW load point $mode --users 100000 "${auth[@]}" --duration "$DURATION" --quiet --report "$WORK/r.json" >/dev/null 2>&1 || true
    sleep 1
    local check=green
    $CTL check --point >"$WORK/check.txt" 2>&1 || { check=RED; cat "$WORK/check.txt" >&2; }
    python3 - "$WORK/r.json" "$label" "$check" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]; e = max(s["elapsed_secs"], 1e-9)
print(f"| {sys.argv[2]} | {r['mode']} | {s['rps']:.0f} | {s['succeeded']/e:.0f} | {s['refused']/e:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['p999_ms']:.1f} | {s['failed']}+{s['missed']} | {sys.argv[3]} |")
PY
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  for d in "${db}_gateway" "${db}_point"; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

echo "| build | mode | req/s | ok/s | refused/s | p50 ms | p99 ms | p99.9 ms | errors | check |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for _ in $(seq 1 "$ROUNDS"); do
  run before "$A"
  run after "$B"
done
