#!/usr/bin/env bash
# Makes the toolchain pinned in rust-toolchain.toml resolve without a
# download: where rustup has only `stable` and `stable` is that very version
# (as on machines that reach no toolchain server), the pinned name becomes a
# link to it. Elsewhere rustup does what it always does (installs the pinned
# version where it can). Run by .ci/run, scripts/test.sh and scripts/dev.sh
# before any cargo command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v rustup >/dev/null || exit 0
want=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
[[ -n $want ]] || { echo "toolchain: no channel in rust-toolchain.toml" >&2; exit 1; }
rustup toolchain list | grep -q "^$want\(-\| \|$\)" && exit 0

have=$(rustc +stable --version 2>/dev/null | awk '{print $2}') || have=""
if [[ $have != "$want" ]]; then
  echo "toolchain: $want is pinned and stable is '${have:-absent}'; rustup will install $want" >&2
  exit 0
fi
sysroot=$(rustc +stable --print sysroot)
host=$(rustc +stable -vV | sed -n 's/^host: //p')
ln -s "$sysroot" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$want-$host"
echo "toolchain: $want-$host -> $sysroot (stable is $want)" >&2
