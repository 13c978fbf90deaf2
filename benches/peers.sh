#!/usr/bin/env bash
# Runs ../shared/peerbench (or $PEERBENCH_DIR) against aioq, nats-server and
# redis-server started side by side, RUNS times per mode, and prints the median
# deliveries per second of each broker. As root it installs the Debian packages.
#
#   benches/peers.sh            # 5 runs each of topic and queue
#   RUNS=9 benches/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
PEERBENCH_DIR=${PEERBENCH_DIR:-../shared/peerbench}
if ! command -v nats-server >/dev/null || ! command -v redis-server >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "need nats-server and redis-server" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq nats-server redis-server >/dev/null
fi
cargo build --release --quiet
cargo build --release --quiet --manifest-path "$PEERBENCH_DIR/Cargo.toml" --target-dir target/peerbench
PB=target/peerbench/release/peerbench

nats-server -a 127.0.0.1 -p 14222 >/dev/null 2>&1 & NATS=$!
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & REDIS=$!
target/release/aioq serve --port 25999 -qq >/dev/null & AIOQ=$!
trap 'kill $NATS $REDIS $AIOQ 2>/dev/null' EXIT
sleep 1

out=$(mktemp)
echo "versions: aioq $(target/release/aioq --version | cut -d' ' -f2), $(nats-server --version), $(redis-server --version | cut -d' ' -f3)"
for i in $(seq "$RUNS"); do
  $PB --target aioq=127.0.0.1:25999 --target nats=127.0.0.1:14222 --target redis=127.0.0.1:16379 | tail -n +2 >> "$out"
  $PB --mode queue --target aioq=127.0.0.1:25999 --target nats=127.0.0.1:14222 | tail -n +2 >> "$out"
done
echo "all runs (target mode subs size delivered expected elapsed_s deliveries_per_s):"
cat "$out"
echo
echo "median deliveries/s and runs with loss:"
python3 - "$out" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, mode, subs, size, got, exp, secs, rate = line.split()
    rows[(mode, t)].append((float(rate), int(got) < int(exp)))
for (mode, t), v in sorted(rows.items()):
    print(f"{mode:6} {t:6} median {statistics.median(r for r, _ in v):>10.0f}/s  lossy runs {sum(l for _, l in v)}/{len(v)}")
PY
