#!/usr/bin/env bash
# Runs each fuzz target for a fixed number of iterations from the committed
# corpus (copied, so the run does not grow it). Longer runs: see README.
#   fuzz/run.sh                 # CI: 2,000,000 frame, 1,000,000 v2 decoder and 500,000 segment runs, 20,000 connections
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
for spec in frame_decoder:2000000 v2_decoder:1000000 segment_replay:500000 connection:20000; do
  target=${spec%%:*}
  runs=$(( ${spec##*:} * scale ))
  mkdir -p "$work/$target"
  cp fuzz/corpus/"$target"/* "$work/$target"/
  echo "fuzz: $target, $runs runs"
  # A fixed seed: a CI failure replays the same way (FUZZ_SEED to vary it).
  if ! cargo fuzz run -s none -O "$target" "$work/$target" -- \
    -seed="${FUZZ_SEED:-1}" -runs="$runs" -max_len=4096 -timeout=60 \
    -print_final_stats=1 >"$work/$target.log" 2>&1; then
    # The panic or assertion text first (it comes before the backtrace and
    # libFuzzer's report, which can push it out of a tail), then the end.
    grep -A6 'panicked at' "$work/$target.log" | head -40 || true
    echo "..."
    grep -v '^ *[0-9]*: \|^ *at ' "$work/$target.log" | tail -25
    echo "fuzz: $target FAILED (the input is in fuzz/artifacts/$target/;" \
      "replay it alone: cargo fuzz run -s none -O $target fuzz/artifacts/$target/<file>)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::peak_rss_mb)' "$work/$target.log"
done
