#!/usr/bin/env bash
# Does watching the broker cost its clients? `aioq bench --scenario throughput`
# against one `aioq serve --http`, RUNS times each way, alternating: with
# /metrics, /api/connections and /api/channels scraped every second, and with
# the same scraper pointed at a second, idle broker instead (so that both ways
# pay for the scraper's own CPU on this machine, and only the measured broker's
# answering differs). Prints the median /topic and /queue deliveries per
# second of each way and their ratio.
#
#   benches/monitoring.sh            # 5 runs each way
#   RUNS=9 MESSAGES=2000000 benches/monitoring.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
MESSAGES=${MESSAGES:-1000000}
OUT=$(mktemp -d)
cargo build --release --quiet
AIOQ=target/release/aioq
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); HTTP=$(free_port); IDLE=$(free_port); IDLE_HTTP=$(free_port)
"$AIOQ" serve --port "$PORT" --http "127.0.0.1:$HTTP" -q >/dev/null 2>&1 & BROKER=$!
"$AIOQ" serve --port "$IDLE" --http "127.0.0.1:$IDLE_HTTP" -q >/dev/null 2>&1 & OTHER=$!
trap 'kill $BROKER $OTHER 2>/dev/null; [ -n "${SCRAPER:-}" ] && kill $SCRAPER 2>/dev/null; true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# One long-lived scraper, so that what is measured is the broker answering,
# not a process starting every second.
scrape() {
  exec python3 - "$1" <<'PY'
import sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
while True:
    for path in ("/metrics", "/api/connections", "/api/channels"):
        urllib.request.urlopen(base + path).read()
    time.sleep(1)
PY
}

run() { # run WAY SCRAPED_PORT N
  scrape "$2" & SCRAPER=$!
  "$AIOQ" bench --target "127.0.0.1:$PORT" --scenario throughput --messages "$MESSAGES" --json > "$OUT/$1-$3.json"
  kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=
}
# Alternating which way goes first, so that neither always runs second.
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then
    run quiet "$IDLE_HTTP" "$i"; run scraped "$HTTP" "$i"
  else
    run scraped "$HTTP" "$i"; run quiet "$IDLE_HTTP" "$i"
  fi
  echo "run $i done" >&2
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
def rates(way, kind):
    out = []
    for p in glob.glob(os.path.join(sys.argv[1], f"{way}-*.json")):
        for t in json.load(open(p))["throughput"]:
            if t["channel_kind"] == kind:
                out.append(t["delivered_per_s"])
    return out
print("| deliveries/s (median, range) | scraper on an idle broker | this broker scraped every second | ratio |")
print("|---|---|---|---|")
for kind in ["topic", "queue"]:
    q, s = rates("quiet", kind), rates("scraped", kind)
    mq, ms = statistics.median(q), statistics.median(s)
    print(f"| /{kind} | {mq:,.0f} ({min(q):,.0f}–{max(q):,.0f}) | {ms:,.0f} ({min(s):,.0f}–{max(s):,.0f}) | {ms/mq:.3f} |")
PY
