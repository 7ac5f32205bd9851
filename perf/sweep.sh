#!/usr/bin/env bash
# Issue 21: how long the lot sweepers take to expire LOTS expired point lots
# while a point load runs (target: 1,000,000 in <= 60 s).
#
#   perf/sweep.sh [PROMOD]
#   LOTS=1000000 USERS=100000 RATE=1000 LEAD=60 perf/sweep.sh target/release/promod
#
# Starts promod (every role, fresh databases), seeds LOTS lots over USERS
# users as the group commit writes them (an EARN row and a lot each, and the
# balance rows) with one expiry instant T = now + LEAD s (set LEAD above the
# seeding time), starts `promoctl load` (the point scenario, open loop at
# RATE over 100,000 other users) and times from T (or the end of seeding,
# if later) until no lot is due. Then `promoctl check --point`. PROMO_POINT__LOTS__*
# in the environment tune the sweepers. Prints one markdown row.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-target/release/promod}
LOTS=${LOTS:-1000000} USERS=${USERS:-100000} RATE=${RATE:-1000} LEAD=${LEAD:-60}
eval "$(scripts/services.sh env)"
PG=$PROMO_TEST_DATABASE_URL
CTL=target/release/promoctl
WORK=$(mktemp -d)
# shellcheck source=perf/lib.sh
. perf/lib.sh
promod_env 14110 13110 15160
DB="sweep_$(date +%s%N)"
PID= LOAD=
cleanup() {
  [ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null || true
  drop_dbs "$DB"
  rm -rf "$WORK"
}
trap cleanup EXIT

create_dbs "$DB"
POINT=$PG/${DB}_point
"$BIN" >>"$WORK/promod.log" 2>&1 & PID=$!
for _ in $(seq 1 150); do curl -sf "$GW/readyz" >/dev/null && break; sleep 0.2; done

PER=$((LOTS / USERS))
T=$(psql -qAt "$POINT" -c "SELECT extract(epoch FROM now() + make_interval(secs => $LEAD))")
SEED0=$(date +%s.%N)
psql -q -v ON_ERROR_STOP=1 "$POINT" <<SQL
WITH u AS (SELECT gen_random_uuid() AS user_id FROM generate_series(1, $USERS)),
     e AS (SELECT gen_random_uuid() AS id, user_id, n FROM u, generate_series(1, $PER) n),
     t AS (INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
                                          created_at)
           SELECT id, user_id, 'EARN', n, n, n, now() - interval '1 day' FROM e),
     l AS (INSERT INTO point_lots (id, user_id, earn_transaction_id, amount, remaining,
                                   expires_at, earned_at)
           SELECT id, user_id, id, n, n, to_timestamp($T), now() - interval '1 day' FROM e)
INSERT INTO point_balances (user_id, balance) SELECT user_id, $PER * ($PER + 1) / 2 FROM u;
ANALYZE point_lots; ANALYZE point_balances; ANALYZE point_transactions;
SQL
SEED1=$(date +%s.%N)
# shellcheck disable=SC2086
$CTL --gateway-url $GW load --file perf/scenarios/target-point.toml --rate "$RATE" \
  --jwt-secret "$PROMO_JWT_SECRET" --duration "$((LEAD + 120))s" --warmup 0s --quiet \
  --report "$WORK/load.json" >/dev/null 2>&1 & LOAD=$!
START=$(python3 -c "print(max($T, $SEED1))")
while (( $(python3 -c "import time; print(int(time.time() < $START))") )); do sleep 0.2; done
due() { psql -qAt "$POINT" -c "SELECT EXISTS (SELECT 1 FROM point_lots
  WHERE remaining > 0 AND expires_at <= now())"; }
while [ "$(due)" = t ]; do sleep 0.5; done
END=$(date +%s.%N)
wait "$LOAD" || true; LOAD=
CHECK=green
$CTL check --point >"$WORK/check.txt" 2>&1 || { CHECK=RED; cat "$WORK/check.txt" >&2; }
read -r EXPIRED < <(psql -qAt "$POINT" -c "SELECT count(*) FROM point_transactions WHERE type = 'EXPIRE'")
python3 - "$WORK/load.json" <<PY
import json, sys
s = json.load(open(sys.argv[1]))["summary"]; e = max(s["elapsed_secs"], 1e-9)
secs = $END - $START
print("| lots | users | seeding s | sweep s | lots/s | EXPIRE rows | load ok/s | load p99 ms | check |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| {$LOTS:,} | {$USERS:,} | {$SEED1 - $SEED0:.0f} | {secs:.1f} | {$LOTS / secs:,.0f} | {$EXPIRED:,} "
      f"| {s['succeeded'] / e:.0f} | {s['p99_ms']:.1f} | $CHECK |")
PY
