#!/usr/bin/env bash
# Quick start / CI: local services, formatting, lints, the whole test suite,
# and the end-to-end consistency check once it exists. Any failure fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "toolchain"
scripts/toolchain.sh
rustc --version

step "services"
scripts/services.sh up
# PROMO_TEST_DATABASE_URL / _REDIS / _ETCD / _KAFKA for the integration tests,
# with whichever PostgreSQL superuser (postgres or root) can log in here.
eval "$(scripts/services.sh env)"
env | grep '^PROMO_TEST_' | sort >&2
# Every test makes fresh databases; drop the ones earlier runs left behind.
scripts/drop-test-dbs.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo deny check"
# Advisories, licences, bans and sources (deny.toml). The advisory database is
# a git repository on GitHub: where it cannot be fetched the other checks
# still run, and the log says loudly that advisories were not checked.
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny check advisories licenses bans sources
else
  echo "WARNING: the RustSec advisory database cannot be fetched from here;" \
    "cargo deny checks licences, bans and sources only (advisories NOT checked)" >&2
  cargo deny check licenses bans sources
fi

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests; run them first so nextest's summary is the
  # closing test report of the run.
  step "cargo test --doc"
  cargo test --workspace --doc
  step "cargo nextest run"
  cargo nextest run --workspace --no-tests=fail
else
  step "cargo test"
  cargo test --workspace
fi

# Short mixed load plus `promoctl check`, added in a later step.
if [[ -x scripts/consistency.sh ]]; then
  step "scripts/consistency.sh"
  scripts/consistency.sh
fi

step "all checks passed"
