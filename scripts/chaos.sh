#!/usr/bin/env bash
# Fault injection, on loopback only, against a private service stack on spare
# ports (its own PostgreSQL, Redis, etcd and Tansu under .chaos/), so that
# stopping a dependency never touches the machine's own services.
#
#   scripts/chaos.sh                  every fault, then rewrite docs/reliability.md
#   scripts/chaos.sh crash redis      just these (the table keeps the other rows)
#   scripts/chaos.sh --down           stop the private stack
#
# Faults: crash redis broker postgres pause split clock holds
#
# Each fault runs a mixed load (`promoctl load --idempotency-keys --retry-for`,
# so unknown outcomes are resent with the same key, as a careful client does),
# injects the fault, lets the system settle, and then requires:
#   - `promoctl check --acks`: every invariant, plus nothing acknowledged
#     missing and nothing unacknowledged present (beyond unknown outcomes);
#   - every outbox event on the broker (exactly once by id; a redelivery with
#     the same id is counted, as delivery is at least once).
# The row it writes to docs/reliability.md says what was seen.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ALL_FAULTS="crash redis broker postgres pause split clock holds"
RATE=${CHAOS_RATE:-300}
STOCK=${CHAOS_STOCK:-800}
WORK="$ROOT/.chaos"
export PROMO_SERVICES_DIR="$WORK/services"
export PROMO_PG_PORT=${CHAOS_PG_PORT:-55432}
export PROMO_REDIS_PORT=${CHAOS_REDIS_PORT:-56379}
export PROMO_ETCD_PORT=${CHAOS_ETCD_PORT:-52379}
export PROMO_ETCD_PEER_PORT=${CHAOS_ETCD_PEER_PORT:-52380}
export PROMO_KAFKA_PORT=${CHAOS_KAFKA_PORT:-59092}
# A private stack never reuses the machine's Debian cluster.
export PROMO_PG_NO_DEBIAN_CLUSTER=1

svc() { scripts/services.sh "$@"; }
say() { printf 'chaos: %s\n' "$*" >&2; }
die() { printf 'chaos: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == --down ]]; then svc down; exit 0; fi
FAULTS=${*:-$ALL_FAULTS}
for f in $FAULTS; do
  [[ " $ALL_FAULTS " == *" $f "* ]] || die "unknown fault '$f' (one of: $ALL_FAULTS)"
done

mkdir -p "$WORK/runs"
say "private stack: postgres :$PROMO_PG_PORT redis :$PROMO_REDIS_PORT etcd :$PROMO_ETCD_PORT kafka :$PROMO_KAFKA_PORT"
svc up
eval "$(svc env)"
PG=$PROMO_TEST_DATABASE_URL
REDIS=$PROMO_TEST_REDIS
KAFKA=$PROMO_TEST_KAFKA
ETCD=$PROMO_TEST_ETCD

say "building promod and promoctl (release)"
cargo build -q --release -p promod -p promoctl
BIN="$ROOT/target/release"

SECRET="chaos-secret-chaos-secret-chaos-secret!"
ADMIN_EMAIL=chaos-admin@promo.local
ADMIN_PASSWORD=chaos-admin-password
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

declare -A PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  [[ -n ${LOAD_PID:-} ]] && kill "$LOAD_PID" 2>/dev/null || true
}
trap cleanup EXIT

# --- one scenario's world ---------------------------------------------------

# new_world NAME: fresh databases and ports; exports the promod env shared by
# every process of the scenario.
new_world() {
  RUN="chaos_${1}_$(date +%s)"
  DIR="$WORK/runs/$RUN"
  mkdir -p "$DIR"
  local db
  for db in gateway coupon point timesale; do
    psql -q "$PG/postgres" -c "CREATE DATABASE ${RUN}_$db" >/dev/null
  done
  GW=$(free_port)
  export PROMO_JWT_SECRET=$SECRET PROMO_LOG__LEVEL=info PROMO_LOG__FORMAT=json
  export PROMO_REDIS_URL=$REDIS PROMO_KAFKA_BROKERS=$KAFKA
  export PROMO_BOOTSTRAP_ADMIN_EMAIL=$ADMIN_EMAIL PROMO_BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD
  export PROMO_GATEWAY__RATE_LIMIT__ENABLED=false
  export PROMO_GATEWAY__HTTP_ADDR="127.0.0.1:$GW"
  export PROMO_GATEWAY__DATABASE_URL="$PG/${RUN}_gateway"
  export PROMO_ETCD_ENDPOINTS="[\"$ETCD\"]" PROMO_ETCD_PREFIX="/$RUN" PROMO_ETCD_LEASE_TTL_SECS=2
  export PROMO_CLOCK_OFFSET_SECS=0
  local role up
  for role in coupon point timesale; do
    up=${role^^}
    export "PROMO_${up}__DATABASE_URL=$PG/${RUN}_$role"
    export "PROMO_${up}__HTTP_ADDR=127.0.0.1:$(free_port)"
    export "PROMO_${up}__GRPC_ADDR=127.0.0.1:$(free_port)"
  done
  export PROMOCTL_COUPON_DATABASE_URL="$PG/${RUN}_coupon"
  export PROMOCTL_POINT_DATABASE_URL="$PG/${RUN}_point"
  export PROMOCTL_TIMESALE_DATABASE_URL="$PG/${RUN}_timesale"
  export PROMOCTL_REDIS_URL=$REDIS PROMOCTL_KAFKA_BROKERS=$KAFKA
}

drop_world() {
  local db
  for db in gateway coupon point timesale; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${RUN}_$db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

# launch NAME ROLES [VAR=VALUE...]: start a promod process in the background.
launch() {
  local name=$1 roles=$2; shift 2
  env "$@" "$BIN/promod" --roles "$roles" >>"$DIR/$name.log" 2>&1 &
  PIDS[$name]=$!
}

# wait_ready URL: until it answers 200 (30 s).
wait_ready() {
  local i
  for i in $(seq 1 150); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.2
  done
  die "$1 did not become ready (logs in $DIR)"
}

stop_proc() {
  local name=$1 pid=${PIDS[$1]:-}
  [[ -z $pid ]] && return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$name]"
}

kill9() {
  kill -9 "${PIDS[$1]}" 2>/dev/null || true
  wait "${PIDS[$1]}" 2>/dev/null || true
  unset "PIDS[$1]"
}

admin_token() {
  curl -sf "http://127.0.0.1:$GW/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# start_load SECONDS [SCENARIO]: a load (mixed by default) in the background;
# its acks go to $DIR.
start_load() {
  "$BIN/promoctl" --gateway-url "http://127.0.0.1:$GW" load "${2:-mixed}" \
    --rate "$RATE" --duration "${1}s" --users 100 --stock "$STOCK" --jwt-secret "$SECRET" \
    --idempotency-keys --retry-for 90s --request-timeout 2s --max-in-flight 4096 \
    --acks "$DIR/acks.jsonl" --report "$DIR/report.json" --quiet >"$DIR/load.txt" 2>&1 &
  LOAD_PID=$!
  # Fixtures (policy, sale, users, pre-issued coupons) come first.
  local i
  for i in $(seq 1 300); do
    [[ -s $DIR/acks.jsonl ]] && return 0
    kill -0 "$LOAD_PID" 2>/dev/null || { cat "$DIR/load.txt" >&2; die "load failed to start"; }
    sleep 0.1
  done
  die "load fixtures took over 30 s"
}

wait_load() {
  wait "$LOAD_PID" || true
  LOAD_PID=""
}

# probe NAME METHOD PATH BODY: one admin request during a fault; records
# "status seconds" to $DIR/probes.
probe() {
  local out
  out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 -X "$2" \
    "http://127.0.0.1:$GW/api/v1$3" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' ${4:+-d "$4"}) || true
  echo "$1 ${out:-000 5}" >>"$DIR/probes"
}

# probes_for SECONDS: a probe of each kind every 0.5 s.
probes_for() {
  local until=$((SECONDS + $1)) user
  user=$(python3 -c 'import uuid; print(uuid.uuid4())')
  while ((SECONDS < until)); do
    probe points POST /points/earn "{\"user_id\":\"$user\",\"amount\":1}"
    probe coupons POST /coupons/issue "{\"policy_id\":\"$PROBE_POLICY\",\"user_id\":\"$user\"}"
    sleep 0.5
  done
}

# A policy of its own for the probes, so they never count against the load's.
probe_policy() {
  curl -sf "http://127.0.0.1:$GW/api/v1/coupon-policies" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "{\"name\":\"probe\",\"discount_type\":\"FIXED\",
      \"discount_value\":1,\"total_quantity\":1000000,\"per_user_limit\":1000,
      \"valid_from\":\"2000-01-01T00:00:00Z\",\"valid_until\":\"2100-01-01T00:00:00Z\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# settle: wait (60 s) until the outboxes drain and the checks pass.
settle() {
  local i
  for i in $(seq 1 60); do
    if "$BIN/promoctl" -o json check --acks "$DIR/acks.jsonl" >"$DIR/check.json" 2>"$DIR/check.err" &&
       [[ $(pending_events) == 0 ]]; then
      return 0
    fi
    sleep 1
  done
  return 1
}

pending_events() {
  local n=0 db c
  for db in coupon point timesale; do
    c=$(psql -tAq "$PG/${RUN}_$db" -c "SELECT count(*) FROM outbox WHERE published_at IS NULL")
    n=$((n + c))
  done
  echo "$n"
}

# verify FAULT EXPECTED OBSERVED [SINCE]: the final check and the broker
# comparison (events published at or after SINCE, an SQL timestamp, must be on
# the broker); appends the row.
verify() {
  local fault=$1 expected=$2 observed=$3 since=${4:-'-infinity'} settled=yes db
  settle || settled=no
  "$BIN/promoctl" -o json check --acks "$DIR/acks.jsonl" >"$DIR/check.json" 2>"$DIR/check.err" || true
  : >"$DIR/outbox.ids"
  for db in coupon point timesale; do
    psql -tAq -F ' ' "$PG/${RUN}_$db" -c "SELECT id, topic FROM outbox WHERE published_at >= '$since'" >>"$DIR/outbox.ids"
  done
  # A consumer of every partition at once was seen to skip a record on Tansu
  # (the dev broker) that a consumer of its topic alone then reads: read
  # everything, then re-read the topics that still miss an event.
  timeout 120 "$BIN/promoctl" events tail --from-beginning --no-follow --json >"$DIR/broker.jsonl" 2>"$DIR/broker.err" || true
  local topic
  for topic in $(python3 scripts/chaos_row.py --missing-topics "$DIR"); do
    timeout 60 "$BIN/promoctl" events tail --topic "$topic" --from-beginning --no-follow --json >>"$DIR/broker-reread.jsonl" 2>>"$DIR/broker.err" || true
  done
  python3 scripts/chaos_row.py "$fault" "$expected" "$observed" "$settled" "$DIR" >>"$WORK/rows.md"
  tail -n1 "$WORK/rows.md" >&2
}

# --- the faults -------------------------------------------------------------

all_in_one() {
  launch promod gateway,coupon,point,timesale
  wait_ready "http://127.0.0.1:$GW/readyz"
  TOKEN=$(admin_token)
  PROBE_POLICY=$(probe_policy)
}

# crash_restart: kill -9 of the all-in-one promod, restarted after 2 s; sets
# DOWN (how long it did not answer, "1.2 s").
crash_restart() {
  local t0 ms
  t0=$(now_ms)
  kill9 promod
  sleep 2
  launch promod gateway,coupon,point,timesale
  wait_ready "http://127.0.0.1:$GW/readyz"
  ms=$(( $(now_ms) - t0 ))
  DOWN="$((ms / 1000)).$(( ms % 1000 / 100 )) s"
}

fault_crash() {
  new_world crash
  all_in_one
  start_load 20
  sleep 5
  say "crash: kill -9 promod mid-load, restart after 2 s"
  crash_restart
  wait_load
  verify "kill -9 of promod mid-load, restarted" \
    "retries with the same keys converge; nothing lost, doubled or oversold" \
    "down $DOWN; $(retries) requests resent"
  stop_proc promod
}

# Held orders (the checkout load: most confirmed, some cancelled, one in ten
# left to expire after 5 s): kill -9 while holds are due and being swept.
fault_holds() {
  new_world holds
  all_in_one
  start_load 20 checkout
  sleep 5
  # A pile of holds besides (10 min each), all made due at once, so that the
  # kill lands while the sweeper works through them.
  "$BIN/promoctl" --gateway-url "http://127.0.0.1:$GW" load hold --concurrency 32 --duration 3s \
    --users 5000 --stock 100000 --jwt-secret "$SECRET" --quiet >"$DIR/pile.txt" 2>&1 || true
  local pile
  pile=$(psql -tAq "$PG/${RUN}_timesale" -c "WITH d AS (UPDATE time_sale_orders SET expires_at = now()
    WHERE status = 'PENDING' AND expires_at > now() + interval '1 minute' RETURNING 1) SELECT count(*) FROM d")
  sleep 0.2
  say "holds: kill -9 promod while $pile holds expire, restart after 2 s"
  crash_restart
  wait_load
  sleep 7 # the last holds come due and are swept
  local expired
  expired=$(psql -tAq "$PG/${RUN}_timesale" -c "SELECT count(*) FROM time_sale_orders WHERE status = 'EXPIRED'")
  verify "kill -9 of promod while holds expire, restarted" \
    "each hold resolved once (confirmed, cancelled or expired); every unit back once" \
    "down $DOWN; $expired holds expired; $(retries) requests resent"
  stop_proc promod
}

retries() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["retries"])' "$DIR/report.json"; }

fault_redis() {
  new_world redis
  all_in_one
  start_load 25
  sleep 5
  say "redis: stopped for 5 s, restarted empty"
  svc stop redis
  probes_for 5
  svc up >/dev/null
  wait_load
  verify "Redis restarted, data lost" \
    "fast 503 while down; counters and stock rebuilt from PostgreSQL; no oversell" \
    "$(probe_summary)"
  stop_proc promod
}

fault_broker() {
  new_world broker
  all_in_one
  start_load 45
  sleep 5
  say "broker: stopped for 30 s"
  svc stop kafka
  sleep 15
  local backlog
  backlog=$(pending_events)
  sleep 15
  local since
  since=$(psql -tAq "$PG/postgres" -c "SELECT now()")
  svc up >/dev/null
  wait_load
  # The dev broker keeps topics in memory: what it had before the stop is
  # gone with it, so the comparison covers what was published after.
  verify "Kafka broker stopped for 30 s" \
    "writes go on; the outbox backlog grows, then drains with nothing lost" \
    "backlog ${backlog} events mid-outage" "$since"
  stop_proc promod
}

fault_postgres() {
  new_world postgres
  all_in_one
  start_load 30
  sleep 5
  say "postgres: stopped for 10 s"
  svc stop postgres
  probes_for 10
  svc up >/dev/null
  wait_load
  verify "PostgreSQL stopped for 10 s" \
    "503 within the pool's 1 s acquire timeout, no hang, no partial state; recovers without a restart" \
    "$(probe_summary); same promod process throughout"
  stop_proc promod
}

# Split processes: a gateway, and one process per service role (two for
# coupon when asked), found through etcd.
split_world() {
  local coupons=$1 i
  launch gateway gateway
  for ((i = 1; i <= coupons; i++)); do
    launch "coupon$i" coupon "PROMO_COUPON__HTTP_ADDR=127.0.0.1:$(free_port)" \
      "PROMO_COUPON__GRPC_ADDR=127.0.0.1:$(free_port)"
  done
  launch point point
  launch timesale timesale
  wait_ready "http://127.0.0.1:$GW/readyz"
  # Every role registered and reachable: a policy and a sale can be made.
  local tries
  for tries in $(seq 1 50); do
    TOKEN=$(admin_token 2>/dev/null) && PROBE_POLICY=$(probe_policy 2>/dev/null) && return 0
    sleep 0.2
  done
  die "split roles did not come up (logs in $DIR)"
}

fault_pause() {
  new_world pause
  split_world 2
  # Enough coupons that issues go on through the pause (the default stock
  # sells out in about five seconds).
  STOCK=5000 start_load 30
  sleep 5
  say "pause: SIGSTOP one coupon instance for 15 s while the other serves"
  kill -STOP "${PIDS[coupon1]}"
  probes_for 15
  kill -CONT "${PIDS[coupon1]}"
  wait_load
  verify "a coupon role paused (SIGSTOP 15 s) beside a second instance" \
    "no double issue after SIGCONT; the other instance serves" \
    "$(probe_summary) during the pause; $(route_summary coupons/issue)"
  local p; for p in "${!PIDS[@]}"; do stop_proc "$p"; done
}

fault_split() {
  new_world split
  split_world 1
  start_load 30
  sleep 5
  say "split: kill -9 the timesale role for 10 s"
  kill9 timesale
  sleep 3
  probes_for 2
  local breaker
  breaker=$(curl -s "http://127.0.0.1:$GW/metrics" | grep -E '^promo_circuit_state\{.*timesale' | awk '{print $2}' | head -n1)
  sleep 5
  launch timesale timesale
  wait_load
  verify "split roles, the timesale role killed for 10 s" \
    "its breaker opens and its routes answer 503; coupon and point keep serving; recovers" \
    "timesale circuit state ${breaker:-?} (1 = open) while down; $(probe_summary) on coupon and point; $(route_summary time-sales/orders); $(route_summary points/earn)"
  local p; for p in "${!PIDS[@]}"; do stop_proc "$p"; done
}

fault_clock() {
  new_world clock
  all_in_one
  start_load 40
  sleep 5
  # The load's sale runs from its creation for an hour: step the service
  # clock past its end, then before its start, then back.
  say "clock: stepped +2 h (after the sale), then -1 h (before it), then back"
  local offset
  for offset in 7200 -3600 0; do
    stop_proc promod
    launch promod gateway,coupon,point,timesale "PROMO_CLOCK_OFFSET_SECS=$offset"
    wait_ready "http://127.0.0.1:$GW/readyz"
    sleep 8
  done
  wait_load
  verify "clock stepped across a sale's end and start" \
    "orders only inside the window (by the service clock); refusals outside it" \
    "$(route_summary time-sales/orders)"
  stop_proc promod
}

probe_summary() {
  [[ -s $DIR/probes ]] || { echo "no probes"; return; }
  python3 - "$DIR/probes" <<'EOF'
import sys, collections
codes, worst = collections.Counter(), 0.0
for line in open(sys.argv[1]):
    _, code, t = line.split()
    codes[code] += 1
    worst = max(worst, float(t))
print("probes " + ", ".join(f"{n}x{c}" for c, n in sorted(codes.items())) + f", slowest {worst * 1000:.0f} ms")
EOF
}

route_summary() {
  python3 - "$DIR/report.json" "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["routes"].get(sys.argv[2], {})
print(f"{sys.argv[2]}: {r.get('succeeded', 0)} ok, {r.get('refused', 0)} refused, {r.get('failed', 0)} failed")
EOF
}

: >"$WORK/rows.md"
for f in $FAULTS; do
  say "=== $f"
  "fault_$f"
  # A failed fault keeps its databases for a look.
  if tail -n1 "$WORK/rows.md" | grep -q '| PASS |$'; then drop_world; else say "kept databases ${RUN}_*"; fi
done
python3 scripts/chaos_row.py --table "$WORK/rows.md" docs/reliability.md
say "docs/reliability.md updated"
if grep -q '| FAIL |' "$WORK/rows.md"; then die "a fault broke an invariant (see docs/reliability.md and $WORK/runs)"; fi
say "every fault held"
