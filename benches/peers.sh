#!/usr/bin/env bash
# aioq, nats-server and redis-server side by side, measured by `aioq bench`
# alone: each broker runs as its own process on a free loopback port, and
# every scenario it supports runs RUNS times against it (one broker at a
# time, in turn, so that they see the same machine). Prints the median of each
# figure per broker, with the range. As root it installs the Debian packages.
#
#   benches/peers.sh                         # 3 runs each
#   RUNS=5 BENCH_ARGS="--duration 10s" benches/peers.sh
#   OUT=/tmp/peers benches/peers.sh          # keep every run's JSON there
#   AIOQ_ARGS="--send-queue 1048576" BROKERS="aioq" benches/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
BENCH_ARGS=${BENCH_ARGS:-"--duration 5s --messages 200000"}
OUT=${OUT:-$(mktemp -d)}
AIOQ_ARGS=${AIOQ_ARGS:-}
BROKERS=${BROKERS:-"aioq nats redis"}
mkdir -p "$OUT"
if ! command -v nats-server >/dev/null || ! command -v redis-server >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "need nats-server and redis-server" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq nats-server redis-server >/dev/null
fi
cargo build --release --quiet
AIOQ=target/release/aioq

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}

P_AIOQ=$(free_port); P_NATS=$(free_port); P_REDIS=$(free_port)
# shellcheck disable=SC2086
"$AIOQ" serve --port "$P_AIOQ" $AIOQ_ARGS -q >/dev/null 2>&1 & PID_AIOQ=$!
nats-server -a 127.0.0.1 -p "$P_NATS" >/dev/null 2>&1 & PID_NATS=$!
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & PID_REDIS=$!
trap 'kill $PID_AIOQ $PID_NATS $PID_REDIS 2>/dev/null' EXIT
wait_port "$P_AIOQ"; wait_port "$P_NATS"; wait_port "$P_REDIS"

echo "aioq $("$AIOQ" --version | cut -d' ' -f2), $(nats-server --version), redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2)"
echo "aioq bench $BENCH_ARGS, $RUNS runs each, aioq serve ${AIOQ_ARGS:-with defaults}, JSON in $OUT"
for i in $(seq "$RUNS"); do
  for t in "aioq=127.0.0.1:$P_AIOQ" "nats=nats://127.0.0.1:$P_NATS" "redis=redis://127.0.0.1:$P_REDIS"; do
    name=${t%%=*}
    case " $BROKERS " in *" $name "*) ;; *) continue ;; esac
    # shellcheck disable=SC2086
    "$AIOQ" bench --target "${t#*=}" $BENCH_ARGS --json > "$OUT/$name-$i.json"
    echo "run $i: $name done" >&2
  done
done

python3 - "$OUT" "$BROKERS" <<'PY'
import glob, json, os, statistics, sys

def figures(doc):
    out = {}
    for i in doc["isolation"]:
        k = i["channel_kind"]
        out[f"/{k} isolation ratio"] = i["isolation_ratio"]
        out[f"/{k} fast p99 with stall, µs"] = i["with_slow"]["fast"]["latency"]["p99_us"]
        out[f"/{k} stalled one disconnected"] = float(any(s["disconnected_by_broker"] for s in i["with_slow"]["slow"]))
    for t in doc["throughput"]:
        k = t["channel_kind"]
        out[f"/{k} throughput, deliveries/s"] = t["delivered_per_s"]
        out[f"/{k} throughput lost"] = t["lost"]
        if t.get("worker_shares"):
            out[f"/{k} worker shares, least"] = t["worker_shares"][0]
            out[f"/{k} worker shares, most"] = t["worker_shares"][1]
    lat = doc["latency"]
    out["latency p99 from schedule, µs"] = lat["intended_latency"]["p99_us"]
    out["latency p50 from send, µs"] = lat["latency"]["p50_us"]
    f = doc["fanout"]
    out[f"fan-out to {f['connections']}, deliveries/s"] = f["delivered_per_s"]
    return out

brokers = sys.argv[2].split()
runs = {b: [figures(json.load(open(p))) for p in sorted(glob.glob(os.path.join(sys.argv[1], f"{b}-*.json")))] for b in brokers}
names = []
for b in brokers:
    for r in runs[b]:
        names += [n for n in r if n not in names]

def cell(b, n):
    v = [r[n] for r in runs[b] if r.get(n) is not None]
    if not v:
        return "n/a"
    m = statistics.median(v)
    fmt = (lambda x: f"{x:,.0f}") if max(abs(x) for x in v) >= 10 else (lambda x: f"{x:.3g}")
    return fmt(m) if min(v) == max(v) else f"{fmt(m)} ({fmt(min(v))}–{fmt(max(v))})"

print()
print("| figure (median of runs, range) | " + " | ".join(brokers) + " |")
print("|---|" + "---|" * len(brokers))
for n in names:
    print(f"| {n} | " + " | ".join(cell(b, n) for b in brokers) + " |")
PY
