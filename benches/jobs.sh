#!/usr/bin/env bash
# aioq's work queue beside RabbitMQ, NATS JetStream and Redis Streams, as a
# team picking a work queue would compare them: acknowledged work, confirmed
# durable publishes, a worker killed mid-job, the broker killed mid-flood,
# a restart with many jobs stored. `aioq bench --scenario jobs` starts each
# broker itself (--broker-cmd, in turn, one at a time, RUNS times), kills it
# and starts it again; every figure comes with the promise it was measured at.
# Prints the median of each figure per broker, with the range. As root it
# installs the Debian packages.
#
#   benches/jobs.sh                            # 3 runs each
#   RUNS=1 JOBS=20000 RECOVER=100000 benches/jobs.sh
#   BROKERS="aioq redis" OUT=/tmp/jobs benches/jobs.sh
#   SCENARIO=durable BENCH_ARGS="--size 1KiB" benches/jobs.sh   # one scenario
#
# Settings (the promise each broker makes in these figures):
#   aioq      serve --durable /queue/bench-durable --fsync always (a confirm
#             after fsync; many publishers share one)
#   rabbitmq  durable classic queue, persistent messages, publisher confirms
#             (sent once on disk), basic.qos prefetch, manual acks
#   jetstream nats-server -js, file storage for durable runs, memory for
#             work; sync_interval left at the server's default (2 min; this
#             nats-server has no `always`): NOT synced before the ack
#   redis     --appendonly yes --appendfsync always (fsync before the reply)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SCENARIO=${SCENARIO:-jobs}
JOBS=${JOBS:-100000}
RECOVER=${RECOVER:-100000,1000000}
BROKERS=${BROKERS:-"aioq rabbitmq jetstream redis"}
BENCH_ARGS=${BENCH_ARGS:-}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "need ${need[*]}" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
AIOQ=$PWD/target/release/aioq
work=$(mktemp -d /tmp/aioq-jobs-XXXX)
trap 'rm -rf "$work"' EXIT

# The command that starts broker $1 with a store in $2, and its --target.
broker() {
  local d=$2
  mkdir -p "$d"
  case $1 in
    aioq) # the bench's own: aioq serve with the settings above
      cmd=""; target="" ;;
    rabbitmq)
      echo "[]." > "$d/plugins"
      cmd="HOME=$d RABBITMQ_NODENAME=bench{port}@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
      cmd+=" RABBITMQ_NODE_PORT={port} RABBITMQ_DIST_PORT={dist_port} RABBITMQ_MNESIA_BASE=$d/mnesia"
      cmd+=" RABBITMQ_LOG_BASE=$d/log RABBITMQ_ENABLED_PLUGINS_FILE=$d/plugins"
      cmd+=" RABBITMQ_CONFIG_FILE=$d/rabbitmq RABBITMQ_PID_FILE=$d/pid /usr/lib/rabbitmq/bin/rabbitmq-server"
      target="amqp://127.0.0.1:{port}" ;;
    jetstream)
      cmd="nats-server -js -a 127.0.0.1 -p {port} -sd $d"
      target="nats://127.0.0.1:{port}" ;;
    redis)
      cmd="redis-server --bind 127.0.0.1 --port {port} --dir $d --save '' --appendonly yes --appendfsync always"
      target="redis://127.0.0.1:{port}" ;;
  esac
}

echo "aioq $("$AIOQ" --version | cut -d' ' -f2), $(nats-server --version), redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2), rabbitmq $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null)"
echo "aioq bench --scenario $SCENARIO --jobs $JOBS --recovery-jobs $RECOVER $BENCH_ARGS, $RUNS runs each, JSON in $OUT"
for i in $(seq "$RUNS"); do
  for name in $BROKERS; do
    broker "$name" "$work/$name-$i"
    args=(bench --scenario "$SCENARIO" --json --jobs "$JOBS" --recovery-jobs "$RECOVER" --stall-timeout 60s)
    [ -n "$cmd" ] && args+=(--broker-cmd "$cmd" --target "$target")
    # shellcheck disable=SC2086
    "$AIOQ" "${args[@]}" $BENCH_ARGS > "$OUT/$name-$i.json" || echo "run $i: $name failed (exit $?)" >&2
    rm -rf "$work/$name-$i"
    # RabbitMQ's epmd outlives the node; nothing else should.
    echo "run $i: $name done" >&2
  done
done

python3 - "$OUT" "$BROKERS" <<'PY'
import glob, json, os, statistics, sys

def figures(doc):
    out = {}
    w = doc.get("work")
    if w:
        out["work: jobs/s"] = w["jobs_per_s"]
        out["work: publish→ack p99, µs"] = w["latency"]["p99_us"]
        out["work: least worker share"] = min(w["worker_shares"])
        out["work: lost"] = w["lost"]
    c = doc.get("crash_worker")
    if c:
        out["crash-worker: lost"] = c["lost"]
        out["crash-worker: duplicates"] = c["duplicates"]
        out["crash-worker: its jobs done elsewhere after, ms"] = c["handed_on_ms"]
    for d in doc.get("durable") or []:
        n = d["publishers"]
        out[f"durable, {n} publishers: confirms/s"] = d["confirms_per_s"]
        out[f"durable, {n} publishers: confirm p99, µs"] = d["confirm_latency"]["p99_us"]
        if d.get("records_per_fsync"):
            out[f"durable, {n} publishers: records per fsync"] = d["records_per_fsync"]
    r = doc.get("crash_broker")
    if r:
        out["crash-broker: confirmed lost"] = r["confirmed_lost"]
        out["crash-broker: duplicates"] = r["duplicates"]
        out["crash-broker: first job after restart, ms"] = r["first_job_ms"]
    for r in doc.get("recovery") or []:
        n = f"{r['jobs']:,}"
        out[f"recovery, {n} stored: listening after, ms"] = r["listening_ms"]
        out[f"recovery, {n} stored: first job after, ms"] = r["first_job_ms"]
        out[f"recovery, {n} stored: drained after, ms"] = r["drained_ms"]
        out[f"recovery, {n} stored: confirmed lost"] = r["confirmed_lost"]
    return out

brokers = sys.argv[2].split()
docs = {b: [json.load(open(p)) for p in sorted(glob.glob(os.path.join(sys.argv[1], f"{b}-*.json")))
            if os.path.getsize(p)] for b in brokers}
runs = {b: [figures(d) for d in docs[b]] for b in brokers}
names = []
for b in brokers:
    for r in runs[b]:
        names += [n for n in r if n not in names]

def med(b, n):
    v = [r[n] for r in runs[b] if r.get(n) is not None]
    return statistics.median(v) if v else None

def cell(b, n):
    v = [r[n] for r in runs[b] if r.get(n) is not None]
    if not v:
        return "—"
    m = statistics.median(v)
    fmt = (lambda x: f"{x:,.0f}") if max(abs(x) for x in v) >= 10 or all(x == int(x) for x in v) else (lambda x: f"{x:.2f}")
    return fmt(m) if min(v) == max(v) else f"{fmt(m)} ({fmt(min(v))}–{fmt(max(v))})"

print()
print("| figure (median of runs, range) | " + " | ".join(brokers) + " |")
print("|---|" + "---|" * len(brokers))
for n in names:
    print(f"| {n} | " + " | ".join(cell(b, n) for b in brokers) + " |")
print()
for b in brokers:
    if not docs[b]:
        print(f"{b}: no run finished")
        continue
    d = docs[b][0]
    seen = []
    for p in [(d.get("work") or {}).get("promise")] + [x["promise"] for x in d.get("durable") or []]:
        if p and p["settings"] not in seen:
            seen.append(p["settings"] + ("" if p["synced_before_confirm"] else " (not synced before the confirm)"))
    print(f"{b}: " + "; ".join(dict.fromkeys(seen)))
    for s in d.get("skipped") or []:
        print(f"  skipped: {s}")
# aioq against each peer, where the peer made the same promise.
if "aioq" in brokers:
    print()
    for n in ("work: jobs/s", "durable, 1 publishers: confirms/s", "durable, 16 publishers: confirms/s"):
        a = med("aioq", n)
        for b in brokers:
            if b == "aioq" or not a or not med(b, n):
                continue
            synced = all(x["promise"]["synced_before_confirm"] for d in docs[b] for x in d.get("durable") or [])
            note = "" if n.startswith("work") or synced else f" ({b} not synced before its confirm)"
            print(f"{n}: aioq {a / med(b, n):.1f}x {b}{note}")
PY
