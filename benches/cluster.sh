#!/usr/bin/env bash
# Cross-broker figures of `serve --cluster` next to one broker alone, in one
# run: nats-server with JetStream (temp store), two clustered brokers, and a
# standalone broker, all on loopback. Each pass runs `aioq bench` throughput and
# latency three ways, RUNS passes, and prints medians. As root it installs
# nats-server when missing.
#
#   benches/cluster.sh                  # 5 passes, 200,000 messages per run
#   RUNS=3 MESSAGES=100000 benches/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
MESSAGES=${MESSAGES:-200000}
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  [ "$(id -u)" = 0 ] || { echo "need nats-server" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
fi
export PATH="$PATH:/usr/sbin"
cargo build --release --quiet
AIOQ=target/release/aioq
STORE=$(mktemp -d)
nats-server -js -sd "$STORE" -a 127.0.0.1 -p 14333 >/dev/null 2>&1 & NATS=$!
sleep 1
$AIOQ serve --port 25801 --cluster nats://127.0.0.1:14333 -qq >/dev/null & A=$!
$AIOQ serve --port 25802 --cluster nats://127.0.0.1:14333 -qq >/dev/null & B=$!
$AIOQ serve --port 25803 -qq >/dev/null & ALONE=$!
trap 'kill $A $B $ALONE 2>/dev/null; sleep 0.5; kill $NATS 2>/dev/null; rm -rf "$STORE"' EXIT
sleep 1

out=$(mktemp)
echo "versions: aioq $($AIOQ --version | cut -d' ' -f2), $(nats-server --version)"
for i in $(seq "$RUNS"); do
  for mode in alone same across; do
    case $mode in
      alone) args=(--target 127.0.0.1:25803) ;;
      same) args=(--target 127.0.0.1:25801) ;;
      across) args=(--target 127.0.0.1:25801 --subscribe-target 127.0.0.1:25802) ;;
    esac
    $AIOQ bench "${args[@]}" --scenario throughput --messages "$MESSAGES" --json \
      | python3 -c '
import json, sys
d = json.load(sys.stdin)
for t in d["throughput"]:
    print(sys.argv[1], t["channel_kind"], "delivered_per_s", round(t["delivered_per_s"]), "lost", t["lost"])
' "$mode" >> "$out"
    $AIOQ bench "${args[@]}" --scenario latency --json \
      | python3 -c '
import json, sys
l = json.load(sys.stdin)["latency"]
print(sys.argv[1], "latency", "p50_us", l["latency"]["p50_us"], "p99_us", l["latency"]["p99_us"], "complete", l["complete"])
' "$mode" >> "$out"
  done
done
echo "all runs:"
cat "$out"
echo
echo "medians over $RUNS passes (alone: one broker without --cluster; same: publisher and"
echo "subscribers on one clustered broker; across: publisher on one, subscribers on the other):"
python3 - "$out" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    mode, kind = f[0], f[1]
    if kind == "latency":
        rows[(mode, "latency p50 µs")].append(float(f[3]))
        rows[(mode, "latency p99 µs")].append(float(f[5]))
    else:
        rows[(mode, f"/{kind} delivered/s")].append(float(f[3]))
        rows[(mode, f"/{kind} lost")].append(float(f[5]))
for (mode, what), v in sorted(rows.items()):
    print(f"{mode:7} {what:24} {statistics.median(v):>12.0f}")
PY
