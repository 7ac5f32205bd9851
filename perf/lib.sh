# Shared by perf/ab.sh and perf/sweep.sh (sourced): promod's environment for
# a run with every role in one process on databases of its own.

# promod_env GW HTTP GRPC: the gateway on port GW, the coupon, point and
# timesale roles on HTTP+1.. and GRPC+1..; sets GW to the gateway's url.
promod_env() {
  export PROMO_JWT_SECRET="perf-secret-perf-secret-perf-secret-perf"
  export PROMO_LOG__LEVEL=warn PROMO_KAFKA_BROKERS=$PROMO_TEST_KAFKA
  export PROMO_GATEWAY__RATE_LIMIT__ENABLED=false PROMO_GATEWAY__HTTP_ADDR=127.0.0.1:$1
  local i=0 r
  for r in coupon point timesale; do
    i=$((i + 1))
    export "PROMO_${r^^}__HTTP_ADDR=127.0.0.1:$(($2 + i))" "PROMO_${r^^}__GRPC_ADDR=127.0.0.1:$(($3 + i))"
  done
  GW=http://127.0.0.1:$1
}

# create_dbs NAME: a fresh database per role (NAME_role), promod and
# promoctl pointed at them.
create_dbs() {
  local r
  for r in gateway coupon point timesale; do
    psql -q "$PG/postgres" -c "CREATE DATABASE ${1}_$r" >/dev/null
    export "PROMO_${r^^}__DATABASE_URL=$PG/${1}_$r"
  done
  export PROMOCTL_COUPON_DATABASE_URL=$PG/${1}_coupon PROMOCTL_POINT_DATABASE_URL=$PG/${1}_point
  export PROMOCTL_TIMESALE_DATABASE_URL=$PG/${1}_timesale
}

# drop_dbs NAME: what create_dbs made, even while connections remain.
drop_dbs() {
  local r
  for r in gateway coupon point timesale; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${1}_$r WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
