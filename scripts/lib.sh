# Sourced by the scripts that run a throwaway promod with every role in one
# process (consistency.sh, fuzz.sh). They set PG (server url), RUN (a unique
# name) and, once started, PID; the databases are ${RUN}_<role>.

DBS=(gateway coupon point timesale)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Creates the run's databases; on exit stops $PID and drops them.
fresh_databases() {
  # Set first: a CREATE that fails must not leave the earlier ones behind.
  trap cleanup EXIT
  for db in "${DBS[@]}"; do
    psql -q "$PG/postgres" -c "CREATE DATABASE ${RUN}_$db" >/dev/null
  done
}

cleanup() {
  [[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  for db in "${DBS[@]}"; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${RUN}_$db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

# Points each role at its database and free ports; the gateway listens on $1.
export_roles() {
  export PROMO_GATEWAY__HTTP_ADDR="127.0.0.1:$1"
  export PROMO_GATEWAY__RATE_LIMIT__ENABLED=false
  local role up
  for role in coupon point timesale; do
    up=$(echo "$role" | tr a-z A-Z)
    export "PROMO_${up}__DATABASE_URL=$PG/${RUN}_$role"
    export "PROMO_${up}__HTTP_ADDR=127.0.0.1:$(free_port)"
    export "PROMO_${up}__GRPC_ADDR=127.0.0.1:$(free_port)"
  done
  export PROMO_GATEWAY__DATABASE_URL="$PG/${RUN}_gateway"
}

# Waits up to 20 s for the gateway on port $1 to be ready.
wait_ready() {
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$1/readyz" >/dev/null
}
