#!/usr/bin/env bash
# Quick start: bring up the local service stack, then run every promod role
# (gateway, coupon, point, timesale) in one release-mode process.
# Extra arguments go to promod, e.g. `scripts/dev.sh --log-level debug`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/toolchain.sh
scripts/services.sh up

# Development-only defaults; anything already set in the environment wins.
# The JWT secret must be at least 32 bytes, so the default is long enough.
export PROMO_JWT_SECRET="${PROMO_JWT_SECRET:-promo-dev-only-jwt-secret-not-for-production-0123456789}"
export PROMO_BOOTSTRAP_ADMIN_EMAIL="${PROMO_BOOTSTRAP_ADMIN_EMAIL:-admin@promo.local}"
export PROMO_BOOTSTRAP_ADMIN_PASSWORD="${PROMO_BOOTSTRAP_ADMIN_PASSWORD:-admin-password}"
# The local broker from services.sh; events publish from the outbox to it.
export PROMO_KAFKA_BROKERS="${PROMO_KAFKA_BROKERS:-127.0.0.1:9092}"

echo "dev: promod with all roles; admin login $PROMO_BOOTSTRAP_ADMIN_EMAIL (dev credentials, do not reuse)" >&2
exec cargo run --release -p promod -- --roles gateway,coupon,point,timesale "$@"
