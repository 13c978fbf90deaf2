#!/usr/bin/env bash
# What durability costs aioq, measured side by side in one sitting: confirmed
# /queue publishes to an in-memory channel and to durable ones at each
# --fsync, with acknowledging workers, RUNS times each in turn (medians and
# ranges); the store's records per fsync and mean fsync time from /metrics;
# then the time a restarted broker takes to read back RECOVER stored 64-byte
# messages after a SIGKILL.
#
#   benches/durable.sh                        # 3 runs, 1 and 16 publishers' worth
#   RUNS=5 SIZE=1KiB benches/durable.sh
#   RECOVER=0 benches/durable.sh              # no recovery run
#
# The data directory is a temporary directory on the file system of TMPDIR:
# what fsync costs there is what these figures say.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZE=${SIZE:-64}
MESSAGES=${MESSAGES:-200000}
RECOVER=${RECOVER:-1000000}
BIN=${AIOQ_BIN:-target/release/aioq}
[ -n "${AIOQ_BIN:-}" ] || cargo build --release --quiet
work=$(mktemp -d)
trap 'pkill -f "aioq-durable-bench" 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # start NAME ARGS...: a broker, its port in $port, its monitor in $http
  local name=$1; shift
  port=$(free_port); http=$(free_port)
  # The tag in argv lets the trap find every broker this script started.
  "$BIN" serve --port "$port" --http "127.0.0.1:$http" --backlog 4000000 \
    --backlog-bytes 1GiB --metrics-channel /topic/aioq-durable-bench "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.out" 2>/dev/null && return; sleep 0.1; done
  echo "broker $name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}
metric() { curl -s "127.0.0.1:$http/metrics" | awk -v m="$1" '$1==m {print $2}'; }
median() { sort -g | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%s (%s-%s)", m, a[1], a[NR]}'; }

modes=("memory:" "always:--durable /queue/ --fsync always" "interval:--durable /queue/ --fsync interval:1s" "never:--durable /queue/ --fsync never")
for run in $(seq "$RUNS"); do
  for m in "${modes[@]}"; do
    name=${m%%:*}; args=${m#*:}
    rm -rf "$work/data"
    # shellcheck disable=SC2086
    start "$name" --data-dir "$work/data" $args
    "$BIN" bench --target "127.0.0.1:$port" --scenario throughput --kinds queue \
      --protocol v2 --confirms --acks --messages "$MESSAGES" --size "$SIZE" \
      --subscribers 4 --json >"$work/$name.$run.json"
    python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["throughput"][0]; assert t["lost"] == 0, t; print(round(t["delivered_per_s"]))' \
      "$work/$name.$run.json" >>"$work/$name.rate"
    if [ "$name" != memory ]; then
      f=$(metric aioq_store_fsyncs_total); r=$(metric aioq_store_synced_records_total)
      s=$(metric aioq_store_fsync_seconds_total)
      python3 -c "f=$f or 1; print(f'{$r/f:.0f} {1e3*$s/f:.3f}')" >>"$work/$name.fsync"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
echo "confirmed /queue publishes with acknowledging workers, $SIZE-byte payloads, 4 workers, medians of $RUNS (range):"
mem=$(median <"$work/memory.rate" | cut -d' ' -f1)
for m in "${modes[@]}"; do
  name=${m%%:*}
  line="  $name: $(median <"$work/$name.rate") msgs/s"
  med=$(median <"$work/$name.rate" | cut -d' ' -f1)
  line="$line, $(python3 -c "print(f'{100*$med/$mem:.0f}')")% of memory"
  if [ -f "$work/$name.fsync" ]; then
    line="$line; records per fsync $(cut -d' ' -f1 <"$work/$name.fsync" | median), mean fsync $(cut -d' ' -f2 <"$work/$name.fsync" | median) ms"
  fi
  echo "$line"
done

if [ "$RECOVER" -gt 0 ]; then
  rm -rf "$work/data"
  start recover --data-dir "$work/data" --durable /queue/ --fsync interval:1s
  python3 - "$port" "$RECOVER" <<'EOF'
import socket, struct, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
ch = b"/queue/recover"
# Protocol 1: the first frame subscribes (to nothing: a publisher).
buf = bytearray(struct.pack(">I", 5) + b"/null")
for i in range(n):
    p = b"%063d" % i
    buf += struct.pack(">I", len(ch)) + ch + struct.pack(">I", len(p)) + p
    if len(buf) > 1 << 20:
        s.sendall(buf); buf.clear()
s.sendall(buf + struct.pack(">I", 0))
s.settimeout(600)
while s.recv(65536):
    pass
EOF
  stored=$(metric aioq_store_messages)
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  start recover2 --data-dir "$work/data" --durable /queue/
  echo "recovery after SIGKILL: $(metric aioq_store_recovered_messages) of $stored stored 64-byte messages read back in $(metric aioq_store_recovery_seconds) s"
  grep "durable store" "$work/recover2.log" | cut -c29-
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi
