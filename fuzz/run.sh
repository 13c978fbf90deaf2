#!/usr/bin/env bash
# Runs each fuzz target for a fixed number of iterations from the committed
# corpus (copied, so the run does not grow it). Longer runs: see README.
#   fuzz/run.sh                 # CI: 2,000,000 decoder runs, 50,000 connections
#   RUNS_SCALE=100 fuzz/run.sh  # a hundred times longer
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${RUNS_SCALE:-1}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
# cargo fuzz passes nightly-only flags; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# No sanitizer: aioq forbids unsafe code; what is looked for is panics,
# hangs and leaks, which the targets assert themselves.
cargo fuzz build -s none -O
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for spec in frame_decoder:2000000 connection:50000; do
  target=${spec%%:*}
  runs=$(( ${spec##*:} * scale ))
  mkdir -p "$work/$target"
  cp fuzz/corpus/"$target"/* "$work/$target"/
  echo "fuzz: $target, $runs runs"
  if ! cargo fuzz run -s none -O "$target" "$work/$target" -- \
    -runs="$runs" -max_len=4096 -timeout=30 -print_final_stats=1 >"$work/$target.log" 2>&1; then
    grep -v '^ *[0-9]*: \|^ *at ' "$work/$target.log" | tail -40
    echo "fuzz: $target FAILED (the input is in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::peak_rss_mb)' "$work/$target.log"
done
