#!/usr/bin/env bash
# Where promod's CPU goes (issue 10): a release promod with every role, fresh
# databases, a closed-loop load from a scenario file, and `perf record` on
# promod in the middle of it. Writes the hottest symbols and the time per
# component to perf/results/<date>-profile-<scenario>.txt.
#
#   perf/profile.sh                                  # coupon issue
#   perf/profile.sh perf/scenarios/target-point.toml
#   DURATION=30s CONC=64 perf/profile.sh perf/scenarios/target-mixed.toml
#   PERF_DATA=/tmp/p.data perf/profile.sh       # keep the recording
#
# Needs Debian's linux-perf (installed if missing). Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FILE=${1:-perf/scenarios/target-coupon.toml}
DURATION=${DURATION:-25s}
CONC=${CONC:-64}
NAME=$(basename "$FILE" .toml)
OUT=perf/results/$(date -u +%Y-%m-%d)-profile-${NAME#target-}.txt
WORK=$(mktemp -d)

command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >&2
scripts/services.sh up >&2
eval "$(scripts/services.sh env)"
PG=$PROMO_TEST_DATABASE_URL
cargo build --release -q -p promod -p promoctl
BIN=target/release
RUN="prof_$(date +%s)"
PID= LOAD=
cleanup() {
  [[ -n $LOAD ]] && kill "$LOAD" 2>/dev/null
  [[ -n $PID ]] && kill "$PID" 2>/dev/null
  wait 2>/dev/null || true
  for db in gateway coupon point timesale; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${RUN}_$db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

export PROMO_JWT_SECRET="perf-secret-perf-secret-perf-secret-perf"
export PROMO_LOG__LEVEL=warn PROMO_KAFKA_BROKERS=$PROMO_TEST_KAFKA
export PROMO_GATEWAY__RATE_LIMIT__ENABLED=false PROMO_GATEWAY__HTTP_ADDR=127.0.0.1:14200
port=13200
for r in gateway coupon point timesale; do
  psql -q "$PG/postgres" -c "CREATE DATABASE ${RUN}_$r" >/dev/null
  up=${r^^}
  export "PROMO_${up}__DATABASE_URL=$PG/${RUN}_$r"
  [[ $r == gateway ]] && continue
  export "PROMO_${up}__HTTP_ADDR=127.0.0.1:$port" "PROMO_${up}__GRPC_ADDR=127.0.0.1:$((port + 1))"
  port=$((port + 2))
done
GW=http://127.0.0.1:14200
"$BIN/promod" >"$WORK/promod.log" 2>&1 &
PID=$!
for _ in $(seq 1 150); do curl -sf "$GW/readyz" >/dev/null && break; sleep 0.2; done

"$BIN/promoctl" --gateway-url $GW load --file "$FILE" --concurrency "$CONC" --duration "$DURATION" \
  --warmup 0s --jwt-secret "$PROMO_JWT_SECRET" --quiet --report "$WORK/report.json" >/dev/null 2>&1 &
LOAD=$!
# Fixtures first, then a few seconds for the pools and caches to settle.
secs=$(echo "$DURATION" | tr -dc 0-9)
sleep 8
# DWARF call graphs: release builds keep .eh_frame but no frame pointers.
perf record -q -F 499 --call-graph dwarf,16384 -p "$PID" -o "$WORK/perf.data" -- sleep $((secs / 2)) >/dev/null 2>&1
wait "$LOAD" || true
LOAD=
# PERF_DATA=path keeps the recording for `perf report -i path`.
[[ -n ${PERF_DATA:-} ]] && cp "$WORK/perf.data" "$PERF_DATA"

perf report -i "$WORK/perf.data" --no-children --sort sym --stdio --percent-limit 0.4 \
  -g none 2>/dev/null | grep -E '^ +[0-9]' >"$WORK/self.txt"
perf report -i "$WORK/perf.data" --children --sort sym --stdio --percent-limit 2 \
  -g none 2>/dev/null | grep -E '^ +[0-9]' >"$WORK/children.txt"
perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0 \
  2>/dev/null | grep -E '^ +[0-9]' >"$WORK/all.txt"

{
  echo "# promod CPU profile: $NAME, $(date -u +'%Y-%m-%d %H:%M UTC') on $(hostname -s)"
  echo
  echo "Closed loop, $CONC workers, $DURATION; perf record -F 499 on promod for $((secs / 2)) s in the middle."
  python3 - "$WORK/report.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"Load: {s['rps']:.0f} req/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, {s['failed']} failed.")
PY
  echo
  echo "## Self time by component"
  echo
  # Symbols grouped by what they belong to; the first matching rule wins.
  python3 - "$WORK/all.txt" <<'PY'
import re, sys, collections
rules = [
    ("kernel: network, syscalls, scheduling", r"\[k\]"),
    ("JSON (serde_json)", r"serde_json|serde::"),
    ("JWT and crypto", r"jsonwebtoken|ring::|aws_lc|sha2|hmac|base64"),
    ("PostgreSQL client (sqlx)", r"sqlx"),
    ("Redis client", r"redis::|combine::"),
    ("Kafka client (librdkafka)", r"rd_kafka|rdkafka"),
    ("HTTP (hyper, axum, tower, h2)", r"hyper|axum|tower|h2::|http::|httparse|matchit"),
    ("gRPC (tonic, prost)", r"tonic|prost"),
    ("tokio runtime", r"tokio"),
    ("memory allocation", r"malloc|free|realloc|memmove|memcpy|memset|cfree|_int_|alloc::"),
    ("tracing and metrics", r"tracing|metrics"),
    ("promo code", r"promod|promo_domain"),
]
tot = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
    if not m:
        continue
    pct, sym = float(m.group(1)), m.group(2)
    for name, rx in rules:
        if re.search(rx, sym):
            tot[name] += pct
            break
    else:
        tot["other (libc, std, unresolved)"] += pct
print("| component | self % |\n|---|---|")
for name, pct in tot.most_common():
    print(f"| {name} | {pct:.1f} |")
PY
  echo
  echo "## Hottest symbols (self)"
  echo
  echo '```'
  head -n 40 "$WORK/self.txt"
  echo '```'
  echo
  echo "## Inclusive time (children), over 2 %"
  echo
  echo '```'
  head -n 60 "$WORK/children.txt"
  echo '```'
} >"$OUT"
cat "$OUT"
