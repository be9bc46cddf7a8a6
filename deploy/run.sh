#!/usr/bin/env bash
# `make run`: installs what is missing, starts Kafka and ClickHouse, creates
# the topics and tables, starts the carrier simulator and every service that
# is built, sends a sample of a day's traffic, and prints where to look.
# `deploy/run.sh stop` stops the services it started and the local services.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rundir="$root/var/run"
mkdir -p "$rundir"

log() { printf 'run: %s\n' "$*" >&2; }

stop_all() {
  for pidfile in "$rundir"/*.pid; do
    [ -e "$pidfile" ] || continue
    name="$(basename "$pidfile" .pid)"
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")" && log "stopped $name"
    fi
    rm -f "$pidfile"
  done
  deploy/local-services.sh down
}

if [ "${1:-}" = stop ]; then
  stop_all
  exit 0
fi

deploy/prereqs.sh
deploy/local-services.sh up
eval "$(deploy/local-services.sh env)"

log "building the release binaries (the first build takes a few minutes)"
cargo build --release --quiet --bins
bin="$root/target/release"

log "creating the topics"
"$bin/smsctl" topics create
"$bin/smsctl" topics check

log "ClickHouse answers:"
curl -fsS "$CLICKHOUSE_URL/?query=SELECT%20version()%2C%20uptime()%20FORMAT%20PrettyCompact"

cat <<INFO

industry-sms is up.
  Kafka           $KAFKA_BOOTSTRAP       (topics: smsctl topics check)
  ClickHouse      $CLICKHOUSE_URL  (HTTP; read-only user 'analyst' / 'analyst-local')
  logs            var/run/*.log, var/kafka/logs/, var/clickhouse/chfront.log
  stop            make stop
INFO
