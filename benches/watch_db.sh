#!/usr/bin/env bash
# GET latency and requests/s of `aioq watch-db --http`: cache hits (one hot row)
# and misses (random ids over 100,000 rows with a 1-row cache), with wrk; then
# how fast a watcher applies change events in keys mode (it reads each row)
# beside rows mode (the event carries it).
# Starts a throwaway PostgreSQL cluster; as root it runs it as `postgres` and
# installs wrk when missing.
#
#   benches/watch_db.sh                 # 10 s per run, 64 connections
#   DURATION=30s CONNS=128 benches/watch_db.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
DIR=$(mktemp -d /tmp/aioq-bench-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
W1=; W2=
cleanup() { kill $W1 $W2 2>/dev/null || true; as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
DSN="postgres://postgres@127.0.0.1:$PORT/postgres"
psql -q "$DSN" -c "CREATE TABLE patron (id serial PRIMARY KEY, name text, visits int);
  INSERT INTO patron (name, visits) SELECT 'patron ' || i, i FROM generate_series(1, 100000) i;"
target/release/aioq watch-db --dsn "$DSN" --table patron --install >/dev/null

target/release/aioq -q watch-db --dsn "$DSN" --table patron --http 127.0.0.1:18081 >/dev/null & W1=$!
target/release/aioq -q watch-db --dsn "$DSN" --table patron --http 127.0.0.1:18082 --cache-size 1 >/dev/null & W2=$!
for p in 18081 18082; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/_stats" >/dev/null 2>&1 && break; sleep 0.1; done
done
cat > "$DIR/random.lua" <<'LUA'
request = function() return wrk.format("GET", "/patron/" .. math.random(1, 100000)) end
LUA
echo "== cache hit: GET /patron/1, $CONNS connections, $DURATION"
curl -s http://127.0.0.1:18081/patron/1 >/dev/null
wrk -t2 -c"$CONNS" -d"$DURATION" --latency http://127.0.0.1:18081/patron/1
echo "== cache miss: random ids of 100,000 rows, 1-row cache, $CONNS connections, $DURATION"
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$DIR/random.lua" http://127.0.0.1:18082
echo "== one request at a time (latency without queueing)"
wrk -t1 -c1 -d"$DURATION" --latency http://127.0.0.1:18081/patron/1 | grep -E 'Latency|50%|99%|Requests/sec'
wrk -t1 -c1 -d"$DURATION" --latency -s "$DIR/random.lua" http://127.0.0.1:18082 | grep -E 'Latency|50%|99%|Requests/sec'

echo "== events: 20,000 single-row UPDATEs (one transaction each, 4 writers), keys vs rows"
kill $W1 $W2 2>/dev/null || true; W1=; W2=
for mode in keys rows; do
  target/release/aioq watch-db --dsn "$DSN" --table patron --install --payload $mode >/dev/null
  target/release/aioq -q watch-db --dsn "$DSN" --table patron --payload $mode --json \
    --http 127.0.0.1:18083 >/dev/null & W1=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:18083/_stats" >/dev/null 2>&1 && break; sleep 0.1; done
  start=$(date +%s.%N)
  for w in 0 1 2 3; do
    (for i in $(seq 1 5000); do echo "UPDATE patron SET visits = visits + 1 WHERE id = $((w * 5000 + i));"; done \
      | psql -q "$DSN" >/dev/null) &
  done
  wait $(jobs -p | grep -v "^$W1$") 2>/dev/null || true
  written=$(date +%s.%N)
  stats() { curl -s http://127.0.0.1:18083/_stats | python3 -c "import json,sys; s=json.load(sys.stdin); print(s['events'] + s['overflows'], s['overflows'])"; }
  until [ "$(stats | cut -d' ' -f1)" -ge 20000 ]; do sleep 0.05; done
  applied=$(date +%s.%N)
  dropped=$(stats | cut -d' ' -f2)
  python3 -c "w=$written-$start; a=$applied-$start; print(f'{\"$mode\":5}: written in {w:.2f} s, all 20,000 handled after {a:.2f} s ({20000/a:,.0f} events/s), {$dropped} dropped by the event queue')"
  kill $W1; wait $W1 2>/dev/null || true; W1=
done
