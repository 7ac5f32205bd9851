#!/usr/bin/env bash
# End-to-end consistency gate (CI): a fresh promod with every role in one
# process, a short mixed load through the gateway, then `promoctl check`
# against its databases, Redis and outboxes. Either failing fails the run.
# Every write carries an Idempotency-Key and its answer is logged, so the check
# also finds an acknowledged write missing (or an unacknowledged one present);
# events still unpublished MAX_BACKLOG_AGE after they were written fail it too,
# so it needs the broker (`scripts/services.sh up`).
# A second run loads checkout holds (most confirmed, some cancelled, some
# left to expire) and checks again once the last hold has expired.
# No speed threshold here: perf/ measures speed; this guards correctness.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

PROFILE=${PROFILE:-debug}
RATE=${RATE:-300}
DURATION=${DURATION:-5s}
# Shorter than the run, so a relay that publishes nothing leaves events older
# than this behind.
MAX_BACKLOG_AGE=${MAX_BACKLOG_AGE:-3s}
eval "$(scripts/services.sh env)"
[[ -n ${PROMO_TEST_KAFKA:-} ]] || { echo "consistency: no kafka broker (PROMO_TEST_KAFKA)" >&2; exit 1; }
PG=${PROMO_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
RUN="ci_$(date +%s)_$$"
ACKS="target/consistency-$RUN-acks.jsonl"

cargo build -q $([[ $PROFILE == release ]] && echo --release) -p promod -p promoctl
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
mkdir -p target

fresh_databases

GW=$(free_port)
export PROMO_JWT_SECRET="ci-consistency-secret-ci-consistency-secret"
export PROMO_LOG__LEVEL=warn
# An admin from configuration, so that `check` holds its audit entry too.
export PROMO_BOOTSTRAP_ADMIN_EMAIL=admin@consistency.test
export PROMO_BOOTSTRAP_ADMIN_PASSWORD=consistency-admin-password
export PROMO_KAFKA_BROKERS=${PROMO_TEST_KAFKA:-}
export_roles "$GW"

"$BIN/promod" &
PID=$!
wait_ready "$GW" || { echo "consistency: promod did not become ready" >&2; exit 1; }

echo "consistency: mixed load at $RATE req/s for $DURATION" >&2
"$BIN/promoctl" --gateway-url "http://127.0.0.1:$GW" load mixed \
  --rate "$RATE" --duration "$DURATION" --users 200 --stock 500 --quiet \
  --idempotency-keys --acks "$ACKS" --report "target/consistency-$RUN.json"

# Let the group commits and the relay settle, then check everything.
sleep 2
export PROMOCTL_COUPON_DATABASE_URL="$PG/${RUN}_coupon"
export PROMOCTL_POINT_DATABASE_URL="$PG/${RUN}_point"
export PROMOCTL_TIMESALE_DATABASE_URL="$PG/${RUN}_timesale"
export PROMOCTL_GATEWAY_DATABASE_URL="$PG/${RUN}_gateway"
"$BIN/promoctl" check --acks "$ACKS" --max-backlog-age "$MAX_BACKLOG_AGE"

echo "consistency: checkout holds at $RATE req/s for $DURATION" >&2
"$BIN/promoctl" --gateway-url "http://127.0.0.1:$GW" load checkout \
  --rate "$RATE" --duration "$DURATION" --users 200 --stock 500 --quiet \
  --idempotency-keys --acks "$ACKS.checkout" --report "target/consistency-$RUN-checkout.json"
# The holds left alone expire after 5 s; the sweepers run every second.
sleep 8
"$BIN/promoctl" check --acks "$ACKS.checkout" --max-backlog-age "$MAX_BACKLOG_AGE"

echo "consistency: coupon codes redeemed at $RATE req/s for $DURATION" >&2
"$BIN/promoctl" --gateway-url "http://127.0.0.1:$GW" load redeem \
  --rate "$RATE" --duration "$DURATION" --users 200 --quiet \
  --idempotency-keys --acks "$ACKS.redeem" --report "target/consistency-$RUN-redeem.json"
sleep 2
"$BIN/promoctl" check --acks "$ACKS.redeem" --max-backlog-age "$MAX_BACKLOG_AGE"
