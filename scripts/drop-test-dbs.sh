#!/usr/bin/env bash
# Drops the databases that test runs create (t_*, and ci_*/perf_* left by an
# interrupted consistency or bench run), so that repeated runs do not fill the
# disk. Safe: no service database has these prefixes.
set -euo pipefail
PG=${PROMO_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
psql -Atq "$PG/postgres" -c "SELECT datname FROM pg_database
  WHERE datname ~ '^(t|ci|perf|dbg)_'" | while read -r db; do
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
done
