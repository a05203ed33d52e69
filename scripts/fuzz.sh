#!/usr/bin/env bash
# Runs every decoder fuzz target for a bounded time (default 60 s each).
# Not part of every CI run; run it before a release or after touching a parser.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
for target in csv_decode json_decode timestamp_price; do
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "fuzz: every target ran ${seconds}s without a crash"
