#!/usr/bin/env bash
# A sustained peak (issue 18): one release promod, every role in one process,
# a keyed open-loop load for WINDOWS windows of WINDOW each, back to back.
# After each window: that window's latency, the relay's backlog (unpublished
# events and the age of the oldest), the outbox and idempotency table sizes
# and promod's RSS. Flat columns are the result; a growing backlog or p99 is a
# table or a queue that grows with time. The outbox keeps published rows for
# RETENTION seconds, so the pruner works during the run.
#
#   perf/soak.sh                                  # 60 x 60 s at 1,200/s, mixed
#   WINDOWS=5 WINDOW=20s RATE=800 perf/soak.sh    # a quick look
#
# Writes perf/results/<date>-soak.md. Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

WINDOWS=${WINDOWS:-60}
WINDOW=${WINDOW:-60s}
RATE=${RATE:-1200}
SCENARIO=${SCENARIO:-mixed}
RETENTION=${RETENTION:-300}
OUT=${OUT:-perf/results/$(date -u +%Y-%m-%d)-soak.md}

scripts/services.sh up >&2
eval "$(scripts/services.sh env)"
PG=$PROMO_TEST_DATABASE_URL
cargo build --release -q -p promod -p promoctl
BIN=${CARGO_TARGET_DIR:-target}/release
RUN="soak_$(date +%s)"
WORK=$(mktemp -d)
fresh_databases

GW=$(free_port)
export PROMO_JWT_SECRET="perf-secret-perf-secret-perf-secret-perf"
export PROMO_LOG__LEVEL=warn PROMO_KAFKA_BROKERS=$PROMO_TEST_KAFKA
export PROMO_OUTBOX__RETENTION_SECS=$RETENTION
export_roles "$GW"
for db in coupon point timesale; do
  export "PROMOCTL_$(echo $db | tr a-z A-Z)_DATABASE_URL=$PG/${RUN}_$db"
done
"$BIN/promod" >>"$WORK/promod.log" 2>&1 &
PID=$!
wait_ready "$GW" || { echo "soak: promod did not become ready" >&2; exit 1; }

# backlog: "unpublished oldest_age_s outbox_rows idempotency_rows" over the
# three service databases.
backlog() {
  local db u=0 age=0 rows=0 keys=0 r
  for db in coupon point timesale; do
    r=$(psql -tAq -F ' ' "$PG/${RUN}_$db" -c "SELECT
          (SELECT count(*) FROM outbox WHERE published_at IS NULL),
          (SELECT coalesce(extract(epoch FROM now() - min(created_at))::int, 0)
             FROM outbox WHERE published_at IS NULL),
          (SELECT count(*) FROM outbox), (SELECT count(*) FROM idempotency_keys)")
    read -r a b c d <<<"$r"
    u=$((u + a)); ((b > age)) && age=$b; rows=$((rows + c)); keys=$((keys + d))
  done
  echo "$u $age $rows $keys"
}

ROWS=()
for w in $(seq 1 "$WINDOWS"); do
  "$BIN/promoctl" --gateway-url "http://127.0.0.1:$GW" load "$SCENARIO" --rate "$RATE" \
    --duration "$WINDOW" --users 100000 --stock 100000000 --idempotency-keys \
    --jwt-secret "$PROMO_JWT_SECRET" --quiet --report "$WORK/r.json" >/dev/null 2>&1 || true
  read -r unpublished age rows keys <<<"$(backlog)"
  rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PID/status")
  row=$(python3 - "$WORK/r.json" "$w" "$unpublished" "$age" "$rows" "$keys" "$rss" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]; e = max(s["elapsed_secs"], 1e-9)
w, u, age, rows, keys, rss = sys.argv[2:]
print(f"| {w} | {s['succeeded']/e:.0f} | {s['refused']/e:.0f} | {s['shed']}+{s['failed']}+{s['missed']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['ok_p99_ms']:.1f} | {u} | {age} | {rows} | {keys} | {rss} |")
PY
)
  ROWS+=("$row")
  echo "$row" >&2
done

check=green
"$BIN/promoctl" check >"$WORK/check.txt" 2>&1 || { check=RED; cat "$WORK/check.txt" >&2; }
{
  echo "# Soak: $WINDOWS x $WINDOW of keyed '$SCENARIO' at $RATE/s, $(date -u +'%Y-%m-%d %H:%M UTC') on $(hostname -s)"
  echo
  echo "\`WINDOWS=$WINDOWS WINDOW=$WINDOW RATE=$RATE SCENARIO=$SCENARIO RETENTION=$RETENTION perf/soak.sh\`:"
  echo "release promod with every role in one process, outbox retention ${RETENTION} s (idempotency keys are kept 24 h, so that table only grows)."
  echo "Each row is one window of the open-loop load (latency from the intended send time), then the"
  echo "state after it: events not yet published and the oldest one's age, outbox and idempotency rows (three databases), promod RSS."
  echo
  echo "| window | ok/s | refused/s | shed+failed+missed | p50 ms | p99 ms | ok p99 ms | unpublished | oldest s | outbox rows | idempotency rows | rss MB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "promoctl check after the run: $check."
} >"$OUT"
cat "$OUT"
