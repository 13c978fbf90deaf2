#!/usr/bin/env bash
# aioq, nats-server and redis-server side by side, measured by `aioq bench`
# alone: each broker runs as its own process on a free loopback port, and
# every scenario it supports runs RUNS times against it (one broker at a
# time, in turn, so that they see the same machine). Prints the median of each
# figure per broker, with the range. As root it installs the Debian packages.
#
# Then each broker's memory per idle subscriber (benches/idle.py, IDLE
# connections, RUNS times), and the ratios the performance goals are stated in.
#
#   benches/peers.sh                         # 3 runs each
#   RUNS=5 BENCH_ARGS="--duration 10s" benches/peers.sh
#   OUT=/tmp/peers benches/peers.sh          # keep every run's JSON there
#   AIOQ_ARGS="--send-queue 1048576" BROKERS="aioq" benches/peers.sh
#   IDLE=0 benches/peers.sh                  # no idle-connection runs
#   FLOOR=127.0.0.1:25300 benches/peers.sh   # also a yardstick already running
#   SITTINGS=3 GAP=120 benches/peers.sh      # 3 sittings, 2 minutes apart
#   AIOQ2_ARGS="--threads 1" benches/peers.sh # a second aioq, side by side
#   QUEUE_MESSAGES=0 benches/peers.sh        # no long /queue runs
#
# Worker shares are taken from a /queue run of its own, QUEUE_MESSAGES long
# (2,000,000: half a second here), where BENCH_ARGS's 200,000 messages last
# about 45 ms: a worker whose client the scheduler keeps off the CPU for the
# last few milliseconds of so short a run is passed over for them (as a slow
# worker is) and the run ends before it is repaid the turns it is owed. Both
# runs' shares are shown; the goal is read from the long one.
#
# A sitting starts every broker afresh and runs RUNS rounds; each sitting has
# its own table of medians, and the goals' ratios are given per sitting, then
# as the median of the sittings with their spread and in how many they held:
# a lead smaller than the swing between sittings is not a lead.
#
# FLOOR names a server that speaks the aioq protocol with no features at all
# (a relay with no queues, isolation or accounting): its throughput runs show
# how far from what the machine can do at all the goals' ratios are set.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SITTINGS=${SITTINGS:-1}
GAP=${GAP:-60}
AIOQ2_ARGS=${AIOQ2_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-"--duration 5s --latency-duration 15s --messages 200000 --subscribers 4"}
IDLE=${IDLE:-10000}
QUEUE_MESSAGES=${QUEUE_MESSAGES:-2000000}
OUT=${OUT:-$(mktemp -d)}
AIOQ_ARGS=${AIOQ_ARGS:-}
BROKERS=${BROKERS:-"aioq nats redis"}
FLOOR=${FLOOR:-}
[ -n "$AIOQ2_ARGS" ] && BROKERS="$BROKERS aioq2"
[ -n "$FLOOR" ] && BROKERS="$BROKERS floor"
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

echo "aioq $("$AIOQ" --version | cut -d' ' -f2), $(nats-server --version), redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2)"
echo "aioq bench $BENCH_ARGS (and /queue alone, $QUEUE_MESSAGES messages), $RUNS runs each, $SITTINGS sitting(s) $GAP s apart, aioq serve ${AIOQ_ARGS:-with defaults}${AIOQ2_ARGS:+, aioq2 serve $AIOQ2_ARGS}, JSON in $OUT"
PIDS=""
# (An empty list would make kill, and so the script, fail after a clean run.)
trap '[ -n "$PIDS" ] && kill $PIDS 2>/dev/null; true' EXIT

# One sitting: every broker started afresh, RUNS rounds, JSON in $1.
sitting() {
  local dir=$1
  mkdir -p "$dir"
  P_AIOQ=$(free_port); P_HTTP=$(free_port); P_NATS=$(free_port); P_REDIS=$(free_port)
  P_AIOQ2=$(free_port); P_HTTP2=$(free_port)
  # The monitoring endpoint gives the bench aioq's own physics (--target-metrics).
  # shellcheck disable=SC2086
  "$AIOQ" serve --port "$P_AIOQ" --http "127.0.0.1:$P_HTTP" $AIOQ_ARGS -q >/dev/null 2>&1 & PIDS="$!"
  if [ -n "$AIOQ2_ARGS" ]; then
    # shellcheck disable=SC2086
    "$AIOQ" serve --port "$P_AIOQ2" --http "127.0.0.1:$P_HTTP2" $AIOQ2_ARGS -q >/dev/null 2>&1 & PIDS="$PIDS $!"
  fi
  nats-server -a 127.0.0.1 -p "$P_NATS" >/dev/null 2>&1 & PIDS="$PIDS $!"
  redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & PIDS="$PIDS $!"
  wait_port "$P_AIOQ"; wait_port "$P_NATS"; wait_port "$P_REDIS"
  [ -n "$AIOQ2_ARGS" ] && wait_port "$P_AIOQ2"
  for i in $(seq "$RUNS"); do
    for t in "aioq=127.0.0.1:$P_AIOQ" "aioq2=127.0.0.1:$P_AIOQ2" "nats=nats://127.0.0.1:$P_NATS" "redis=redis://127.0.0.1:$P_REDIS" "floor=$FLOOR"; do
      name=${t%%=*}
      case " $BROKERS " in *" $name "*) ;; *) continue ;; esac
      extra=()
      [ "$name" = aioq ] && extra=(--target-metrics "http://127.0.0.1:$P_HTTP/metrics")
      [ "$name" = aioq2 ] && extra=(--target-metrics "http://127.0.0.1:$P_HTTP2/metrics")
      # A relay blocks on a stalled subscriber: throughput is all it can show.
      [ "$name" = floor ] && extra=(--scenario throughput)
      # shellcheck disable=SC2086
      "$AIOQ" bench --target "${t#*=}" $BENCH_ARGS "${extra[@]}" --json > "$dir/$name-$i.json"
      echo "$(basename "$dir") run $i: $name done" >&2
      # Redis has no work queue; the relay's shares are no goal.
      if [ "$QUEUE_MESSAGES" != 0 ] && [ "$name" != redis ] && [ "$name" != floor ]; then
        "$AIOQ" bench --target "${t#*=}" --scenario throughput --kinds queue \
          --messages "$QUEUE_MESSAGES" --subscribers 4 --json > "$dir/long-queue-$name-$i.json"
        echo "$(basename "$dir") run $i: $name long /queue run done" >&2
      fi
    done
  done
  # shellcheck disable=SC2086
  kill $PIDS 2>/dev/null; wait 2>/dev/null || true
  PIDS=""
  if [ "$IDLE" != 0 ]; then
    for i in $(seq "$RUNS"); do
      AIOQ="$AIOQ" python3 benches/idle.py "$IDLE" --brokers "$(echo ${BROKERS% floor} | sed 's/ aioq2//' | tr ' ' ,)" > "$dir/idle-$i.txt"
      echo "$(basename "$dir") idle run $i done" >&2
    done
  fi
}

DIRS=()
for s in $(seq "$SITTINGS"); do
  if [ "$SITTINGS" = 1 ]; then dir=$OUT; else dir=$OUT/sitting-$s; fi
  [ "$s" -gt 1 ] && sleep "$GAP"
  sitting "$dir"
  DIRS+=("$dir")
done

python3 - "$BROKERS" "${DIRS[@]}" <<'PY'
import glob, json, os, re, statistics, sys

def figures(doc):
    out = {}
    for i in doc.get("isolation") or []:
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
        if t.get("physics"):
            p = t["physics"]
            out[f"/{k} messages per socket write"] = p["messages_per_write"]
            out[f"/{k} bytes per socket write"] = p["bytes_per_write"]
            out[f"/{k} broker CPU per delivery, ns"] = p["cpu_ns_per_delivery"]
    lat = doc.get("latency")
    if lat:
        out["latency p99 from schedule, µs"] = lat["intended_latency"]["p99_us"]
        out["latency p50 from send, µs"] = lat["latency"]["p50_us"]
    f = doc.get("fanout")
    if f:
        out[f"fan-out to {f['connections']}, deliveries/s"] = f["delivered_per_s"]
    return out


def long_queue(doc):
    out = {}
    for t in doc["throughput"]:
        n = f"{t['published']:,}"
        out[f"/queue throughput over {n} messages, deliveries/s"] = t["delivered_per_s"]
        out[f"/queue throughput over {n} messages lost"] = t["lost"]
        if t.get("worker_shares"):
            out[f"/queue worker shares over {n} messages, least"] = t["worker_shares"][0]
            out[f"/queue worker shares over {n} messages, most"] = t["worker_shares"][1]
    return out


brokers = sys.argv[1].split()
dirs = sys.argv[2:]


def load(d):
    runs = {b: [figures(json.load(open(p))) for p in sorted(glob.glob(os.path.join(d, f"{b}-*.json")))] for b in brokers}
    for b in brokers:
        for i, p in enumerate(sorted(glob.glob(os.path.join(d, f"long-queue-{b}-*.json")))):
            if i < len(runs[b]):
                runs[b][i].update(long_queue(json.load(open(p))))
    # benches/idle.py lines: "<broker> <n> idle subscribers ...: ..., <x> KiB per connection"
    for path in sorted(glob.glob(os.path.join(d, "idle-*.txt"))):
        got = {}
        for line in open(path):
            m = re.match(r"(\w+)\s+(\d+) idle subscribers.* ([\d.]+) KiB per connection", line)
            if m:
                got[m.group(1)] = (int(m.group(2)), float(m.group(3)))
        for b, (n, kib) in got.items():
            if b in runs:
                i = sum(1 for r in runs[b] if any(k.startswith("idle") for k in r))
                if i < len(runs[b]):
                    runs[b][i][f"idle subscriber, broker RSS KiB ({n:,} connections)"] = kib
                else:
                    runs[b].append({f"idle subscriber, broker RSS KiB ({n:,} connections)": kib})
    return runs


def fmt_of(v):
    return (lambda x: f"{x:,.0f}") if max(abs(x) for x in v) >= 10 else (lambda x: f"{x:.3g}")


def table(runs):
    names = []
    for b in brokers:
        for r in runs[b]:
            names += [n for n in r if n not in names]

    def cell(b, n):
        v = [r[n] for r in runs[b] if r.get(n) is not None]
        if not v:
            return "n/a"
        m = statistics.median(v)
        fmt = fmt_of(v)
        return fmt(m) if min(v) == max(v) else f"{fmt(m)} ({fmt(min(v))}–{fmt(max(v))})"

    print()
    print("| figure (median of runs, range) | " + " | ".join(brokers) + " |")
    print("|---|" + "---|" * len(brokers))
    for n in names:
        print(f"| {n} | " + " | ".join(cell(b, n) for b in brokers) + " |")
    return names


def med(runs, b, n):
    v = [r[n] for r in runs.get(b, []) if r.get(n) is not None]
    return statistics.median(v) if v else None


def lossless(runs, b, k):
    return all(r.get(f"/{k} throughput lost", 1) == 0 for r in runs.get(b, []))


peers = [b for b in brokers if b not in ("aioq", "aioq2", "floor")]
mine = [b for b in ("aioq", "aioq2") if b in brokers]


def ratios(runs, names):
    """The goals' ratios, from one sitting's medians: each aioq against the
    best peer that was lossless in every run (for latency and memory, lower
    is better). Returns {(aioq, goal): (ratio, line)}."""
    out = {}
    for a in mine:
        for k in ("topic", "queue"):
            n = f"/{k} throughput, deliveries/s"
            best = max(((med(runs, b, n), b) for b in peers if med(runs, b, n) and lossless(runs, b, k)), default=None)
            if best and med(runs, a, n):
                r = med(runs, a, n) / best[0]
                out[(a, f"/{k} throughput vs best lossless peer, x")] = (
                    r, f"/{k} throughput: {a} {r:.2f}x {best[1]} (best lossless peer)"
                    + ("" if lossless(runs, a, k) else f"; {a} lost messages in some run"))
            if med(runs, "floor", n) and med(runs, a, n):
                r = med(runs, a, n) / med(runs, "floor", n)
                goal = " (goal ≥ 0.6)" if k == "queue" else ""
                out[(a, f"/{k} throughput, share of the floor{goal}")] = (
                    r, f"/{k} throughput at the floor: {med(runs, 'floor', n):,.0f}/s; {a} {r:.0%} of it"
                    + (f", best peer {best[1]} {best[0] / med(runs, 'floor', n):.0%}" if best else ""))
        for n in [n for n in names if n.startswith("/queue worker shares over") and n.endswith("least")]:
            if med(runs, a, n) is not None:
                most = med(runs, a, n[: -len("least")] + "most")
                out[(a, "/queue least worker share, long run (goal ≥ 0.23)")] = (
                    med(runs, a, n), f"{n[:-len(', least')]}: {a} least {med(runs, a, n):.3f}, most {most:.3f}")
                out[(a, "/queue most worker share, long run (goal ≤ 0.27)")] = (most, None)
        n = "latency p99 from schedule, µs"
        best = min(((med(runs, b, n), b) for b in peers if med(runs, b, n)), default=None)
        if best and med(runs, a, n):
            out[(a, "latency p99 vs best peer, x (lower is better)")] = (
                med(runs, a, n) / best[0],
                f"latency p99: {a} {med(runs, a, n):.0f} µs, best peer {best[1]} {best[0]:.0f} µs")
        for n in [n for n in names if n.startswith("idle")]:
            best = min(((med(runs, b, n), b) for b in peers if med(runs, b, n)), default=None)
            if best and med(runs, a, n):
                out[(a, "idle subscriber vs best peer, x (lower is better)")] = (
                    med(runs, a, n) / best[0],
                    f"idle subscriber: {a} {med(runs, a, n):.1f} KiB, best peer {best[1]} {best[0]:.1f} KiB")
    return out


every = []
for k, d in enumerate(dirs):
    runs = load(d)
    if len(dirs) > 1:
        print(f"\n## sitting {k + 1} ({d})")
    names = table(runs)
    got = ratios(runs, names)
    if got:
        print()
        for _, line in got.values():
            if line:
                print(line)
    every.append(got)

# Across sittings: the median of the sittings' ratios, their spread, and in
# how many sittings each goal held (2x the best peer for throughput, no
# worse than it for latency).
if len(dirs) > 1:
    print(f"\n## across {len(dirs)} sittings (median of the sittings, range)\n")
    print("| ratio | " + " | ".join(mine) + " |")
    print("|---|" + "---|" * len(mine))
    goals = []
    for got in every:
        for (_, g) in got:
            if g not in goals:
                goals.append(g)
    for g in goals:
        cells = []
        for a in mine:
            v = [got[(a, g)][0] for got in every if (a, g) in got]
            if not v:
                cells.append("n/a")
                continue
            bound = re.search(r"goal ([≥≤]) ([\d.]+)", g)
            lower = "lower is better" in g or (bound is not None and bound.group(1) == "≤")
            target = (float(bound.group(2)) if bound else
                      1.0 if lower else (2.0 if "vs best" in g else None))
            held = ""
            if target is not None:
                k = sum(1 for x in v if (x <= target if lower else x >= target))
                if bound:
                    cells.append(f"{statistics.median(v):.3f} ({min(v):.3f}–{max(v):.3f}); held in {k} of {len(v)}")
                    continue
                held = f"; goal ({'≤' if lower else '≥'}{target:g}) held in {k} of {len(v)}"
            cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f}){held}")
        print(f"| {g} | " + " | ".join(cells) + " |")
PY
