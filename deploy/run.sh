#!/usr/bin/env bash
# `make run`: installs what is missing, starts Kafka and ClickHouse, creates
# the topics, starts the carrier simulator and every service (ClickHouse
# tables are created by the analytics sink at start), sends a sample of a
# day's traffic through ingest, waits for the final statuses, and prints
# where to look. `deploy/run.sh stop` (or `make stop`) stops it all.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rundir="$root/var/run"
config="$root/deploy/config"
mkdir -p "$rundir"

log() { printf 'run: %s\n' "$*" >&2; }

stop_services() {
  for name in ingest dispatcher status analytics smsc-sim; do
    pidfile="$rundir/$name.pid"
    [ -e "$pidfile" ] || continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$(cat "$pidfile")" 2>/dev/null || true
      log "stopped $name"
    fi
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = stop ]; then
  stop_services
  deploy/local-services.sh down
  exit 0
fi

deploy/prereqs.sh
deploy/local-services.sh up
eval "$(deploy/local-services.sh env)"

log "building the release binaries (the first build takes several minutes)"
cargo build --release --quiet --bins
bin="$root/target/release"

log "creating the topics"
"$bin/smsctl" --kafka "$KAFKA_BOOTSTRAP" topics create >/dev/null
"$bin/smsctl" --kafka "$KAFKA_BOOTSTRAP" topics check

# Local secrets; production passes its own through the environment.
export STATUS_GATEWAY_PASSWORD=secret
export DISPATCHER_GATEWAY_PASSWORD=secret
export INGEST_SECRET_PLATFORM=local-hmac-secret
export INGEST_KAFKA__BOOTSTRAP="$KAFKA_BOOTSTRAP" STATUS_KAFKA__BOOTSTRAP="$KAFKA_BOOTSTRAP"
export DISPATCHER_KAFKA__BOOTSTRAP="$KAFKA_BOOTSTRAP" ANALYTICS_KAFKA__BOOTSTRAP="$KAFKA_BOOTSTRAP"
export ANALYTICS_CLICKHOUSE__URL="$CLICKHOUSE_URL"

start() {
  local name="$1"; shift
  if [ -e "$rundir/$name.pid" ] && kill -0 "$(cat "$rundir/$name.pid")" 2>/dev/null; then
    log "$name already running"
    return
  fi
  nohup "$@" >"$rundir/$name.log" 2>&1 &
  echo $! >"$rundir/$name.pid"
  log "started $name (log var/run/$name.log)"
}

wait_http() {
  local name="$1" url="$2"
  for _ in $(seq 1 120); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$rundir/$name.pid")" 2>/dev/null || { log "$name exited:"; tail -n 20 "$rundir/$name.log" >&2; return 1; }
    sleep 0.5
  done
  log "$name did not answer $url"; tail -n 20 "$rundir/$name.log" >&2; return 1
}

start analytics "$bin/analytics" --config "$config/analytics.toml"
start status "$bin/status" --config "$config/status.toml"
start smsc-sim "$bin/smsc-sim" --config "$config/smsc-sim.toml"
start dispatcher "$bin/dispatcher" --config "$config/dispatcher.toml"
start ingest "$bin/ingest" --config "$config/ingest.toml"
wait_http analytics http://127.0.0.1:9464/healthz
wait_http status http://127.0.0.1:9602/healthz
wait_http smsc-sim http://127.0.0.1:8880/health
wait_http dispatcher http://127.0.0.1:9603/healthz
wait_http ingest http://127.0.0.1:8080/readyz

log "sending a sample of a day's traffic"
since="$(date +%s)"
"$bin/sample-traffic" --ingest http://127.0.0.1:8080 --token local-platform-token \
  --messages "${SAMPLE_MESSAGES:-2000}" --run-id "$since-" | tee "$rundir/sample-traffic.txt"
accepted="$(sed -n 's/.*: \([0-9]*\) accepted.*/\1/p' "$rundir/sample-traffic.txt")"

log "waiting for the $accepted accepted messages' final statuses to reach ClickHouse"
query() { curl -fsS "$CLICKHOUSE_URL/" --data-binary "$1"; }
for _ in $(seq 1 120); do
  final="$(query "SELECT count() FROM sms.sms_messages FINAL WHERE is_final = 1 AND accepted_at >= toDateTime64($since, 3)" 2>/dev/null || echo 0)"
  [ "${final:-0}" -ge "${accepted:-1}" ] && break
  sleep 2
done
log "final statuses of this run, from ClickHouse:"
query "SELECT state, count() AS messages, sum(billed_segments) AS billed_segments, round(avg(within_seven_seconds) * 100, 2) AS within_7s_pct FROM sms.sms_messages FINAL WHERE accepted_at >= toDateTime64($since, 3) GROUP BY state ORDER BY messages DESC FORMAT PrettyCompact" || true
month="$(TZ=Asia/Shanghai date +%Y-%m)"
"$bin/smsctl" --clickhouse "$CLICKHOUSE_URL" report monthly --month "$month" --out "$root/var/reports" >/dev/null \
  && log "monthly report for $month: var/reports/monthly-$month.html"

cat <<INFO

industry-sms is running.
  ingest API      http://127.0.0.1:8080  (bearer token: local-platform-token; API in crates/ingest/openapi.yaml)
  carrier sim     SGIP 127.0.0.1:8801, control http://127.0.0.1:8880 (GET /counts, PUT /faults, POST /mo)
  status          SGIP receiver 127.0.0.1:8802
  metrics         ingest :8080/metrics, dispatcher :9603, status :9602, analytics :9464
  Kafka           $KAFKA_BOOTSTRAP  (smsctl topics check)
  ClickHouse      $CLICKHOUSE_URL  (database sms; read-only user analyst / analyst-local)
  reports         var/reports/ (smsctl report monthly --month YYYY-MM --out DIR; smsctl trace --help)
  logs            var/run/*.log, var/kafka/logs/, var/clickhouse/chfront.log
  stop            make stop
INFO
