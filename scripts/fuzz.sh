#!/usr/bin/env bash
# Schemathesis against a throwaway promod (every role, fresh databases, free
# ports): it reads /api/docs/openapi.json and sends generated requests, valid
# and invalid, to every operation with an admin token. Fails on any 5xx, on a
# response that does not match the documented schema, or if promod panicked.
# Not part of CI: it installs schemathesis from PyPI into ~/.cache/promo/venv.
#
#   EXAMPLES=30 scripts/fuzz.sh        # examples per operation (default 50)
#   SEED=1 scripts/fuzz.sh             # reproduce a run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

PROFILE=${PROFILE:-debug}
EXAMPLES=${EXAMPLES:-50}
VENV=${PROMO_FUZZ_VENV:-$HOME/.cache/promo/venv}
ST="$VENV/bin/schemathesis"
if [[ ! -x $ST ]]; then
  echo "fuzz: installing schemathesis into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi

eval "$(scripts/services.sh env)"
PG=${PROMO_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
RUN="fuzz_$(date +%s)_$$"
OUT="target/fuzz-$RUN"
mkdir -p "$OUT"

cargo build -q $([[ $PROFILE == release ]] && echo --release) -p promod
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE

fresh_databases

GW=$(free_port)
ADMIN_PASSWORD="fuzz-admin-$RANDOM$RANDOM"
export PROMO_JWT_SECRET="fuzz-secret-fuzz-secret-fuzz-secret-fuzz"
export PROMO_LOG__LEVEL=${PROMO_LOG__LEVEL:-warn}
export PROMO_KAFKA_BROKERS=""
export PROMO_BOOTSTRAP_ADMIN_EMAIL=fuzz-admin@promo.local
export PROMO_BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD
export_roles "$GW"

"$BIN/promod" >"$OUT/promod.log" 2>&1 &
PID=$!
wait_ready "$GW" || { echo "fuzz: promod did not become ready" >&2; cat "$OUT/promod.log" >&2; exit 1; }

TOKEN=$(curl -sf "http://127.0.0.1:$GW/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"email\":\"fuzz-admin@promo.local\",\"password\":\"$ADMIN_PASSWORD\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

echo "fuzz: schemathesis, $EXAMPLES examples per operation, report in $OUT" >&2
status=0
"$ST" run "http://127.0.0.1:$GW/api/docs/openapi.json" \
  --url "http://127.0.0.1:$GW" \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" \
  --workers 2 \
  --request-timeout 15 \
  ${SEED:+--seed "$SEED"} \
  --report junit --report-dir "$OUT" || status=$?

if ! kill -0 "$PID" 2>/dev/null; then
  echo "fuzz: promod died during the run" >&2
  status=1
fi
if grep -q "panicked" "$OUT/promod.log"; then
  echo "fuzz: promod panicked:" >&2
  grep -A3 "panicked" "$OUT/promod.log" >&2
  status=1
fi
[[ $status -eq 0 ]] && echo "fuzz: ok" >&2 || echo "fuzz: FAILED (promod log: $OUT/promod.log)" >&2
exit $status
