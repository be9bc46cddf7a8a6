#!/usr/bin/env bash
# Starts and stops the services the system needs on one machine without
# Docker: Apache Kafka (KRaft, single node, from Maven Central jars) and the
# ClickHouse engine (chDB from PyPI behind deploy/clickhouse/chfront.py).
#
#   deploy/local-services.sh up       install what is missing, start both, wait until ready
#   deploy/local-services.sh down     stop both (data is kept under var/)
#   deploy/local-services.sh status   say what runs
#   deploy/local-services.sh env      print the exports a shell or test needs
#   deploy/local-services.sh reset    stop and delete all local data
#   deploy/local-services.sh stop-kafka | start-kafka   the broker alone (fault tests)
#
# Ports: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_SASL_PORT (9094,
# SASL_PLAINTEXT with SCRAM-SHA-512), KAFKA_SASL_SSL_PORT (9095, SASL_SSL with
# a self-signed certificate under var/kafka/tls), CLICKHOUSE_PORT (8123). The
# SCRAM user (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD in `env`) is a local
# test credential, created after every start.
# When CLICKHOUSE_URL is already set, a real ClickHouse server is used and the
# local front is not started; the same holds for KAFKA_BOOTSTRAP.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
var="$root/var"
kafka_port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
sasl_port="${KAFKA_SASL_PORT:-9094}"
sasl_ssl_port="${KAFKA_SASL_SSL_PORT:-9095}"
# Local test credentials only: the SCRAM user and the keystore's password.
sasl_user="industry-sms"
sasl_password="industry-sms-local"
tls_password="industry-sms-local-tls"
ch_port="${CLICKHOUSE_PORT:-8123}"
kafka_dir="$var/kafka"
ch_dir="$var/clickhouse"

log() { printf 'local-services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {
  local pidfile="$1" name="$2" pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "$name stopped"; return 0; }
    sleep 0.5
  done
  log "$name did not stop in 30 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

kafka_up() {
  # A KAFKA_BOOTSTRAP naming the local broker (as `env` prints it) still
  # means this script's broker, so stop-kafka/start-kafka work from a shell
  # or a test that evaluated `env`.
  if [ -n "${KAFKA_BOOTSTRAP:-}" ] && [ "$KAFKA_BOOTSTRAP" != "127.0.0.1:$kafka_port" ]; then
    log "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP is set; not starting a local broker"
    return 0
  fi
  if pid_alive "$kafka_dir/kafka.pid"; then
    log "kafka already running on 127.0.0.1:$kafka_port"
    return 0
  fi
  if port_open "$kafka_port"; then
    log "port $kafka_port is taken by another process; set KAFKA_PORT"
    return 1
  fi
  "$root/deploy/kafka/install.sh"
  local libs="$root/deploy/kafka/dist/libs"
  mkdir -p "$kafka_dir/data" "$kafka_dir/logs"
  kafka_tls
  sed -e "s#@DATA@#$kafka_dir/data#" -e "s#@PORT@#$kafka_port#" \
      -e "s#@CONTROLLER_PORT@#$controller_port#" \
      -e "s#@SASL_PORT@#$sasl_port#" -e "s#@SASL_SSL_PORT@#$sasl_ssl_port#" \
      -e "s#@TLS_DIR@#$kafka_dir/tls#" -e "s#@TLS_PASSWORD@#$tls_password#" \
      "$root/deploy/kafka/server.properties.in" > "$kafka_dir/server.properties"

  # The log directory is formatted once; a restart keeps the data.
  if [ ! -f "$kafka_dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -cp "$libs/*" -Dlog4j2.configurationFile="$root/deploy/kafka/log4j2.yaml" \
      -Dkafka.logs.dir="$kafka_dir/logs" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$kafka_dir/server.properties" >"$kafka_dir/logs/format.log" 2>&1 \
      || { log "formatting the kafka log directory failed:"; cat "$kafka_dir/logs/format.log" >&2; return 1; }
    log "formatted $kafka_dir/data (cluster $cluster_id)"
  fi

  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$root/deploy/kafka/log4j2.yaml" \
    -Dkafka.logs.dir="$kafka_dir/logs" \
    -cp "$libs/*" kafka.Kafka "$kafka_dir/server.properties" \
    >"$kafka_dir/logs/stdout.log" 2>&1 &
  echo $! >"$kafka_dir/kafka.pid"

  for _ in $(seq 1 120); do
    if grep -q "Kafka Server started" "$kafka_dir/logs/server.log" 2>/dev/null && port_open "$kafka_port"; then
      log "kafka ready on 127.0.0.1:$kafka_port (data in $kafka_dir/data)"
      kafka_scram_user
      return 0
    fi
    pid_alive "$kafka_dir/kafka.pid" || break
    sleep 0.5
  done
  log "kafka did not start; last lines of its logs:"
  tail -n 30 "$kafka_dir/logs/stdout.log" >&2 || true
  tail -n 30 "$kafka_dir/logs/server.log" >&2 || true
  return 1
}

# The broker's certificate for the SASL_SSL listener: self-signed, for
# 127.0.0.1 and localhost, made once. Clients trust var/kafka/tls/ca.pem.
kafka_tls() {
  local tls="$kafka_dir/tls"
  [ -f "$tls/broker.p12" ] && [ -f "$tls/ca.pem" ] && return 0
  command -v keytool >/dev/null || { log "keytool (from the JDK) is needed for the SASL_SSL listener"; return 1; }
  mkdir -p "$tls"
  rm -f "$tls/broker.p12" "$tls/ca.pem"
  keytool -genkeypair -noprompt -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
    -dname "CN=localhost" -ext "SAN=IP:127.0.0.1,DNS:localhost" \
    -storetype PKCS12 -keystore "$tls/broker.p12" -storepass "$tls_password" \
    >"$kafka_dir/logs/keytool.log" 2>&1 \
    || { log "keytool failed:"; cat "$kafka_dir/logs/keytool.log" >&2; return 1; }
  keytool -exportcert -rfc -alias broker -keystore "$tls/broker.p12" \
    -storepass "$tls_password" -file "$tls/ca.pem" >>"$kafka_dir/logs/keytool.log" 2>&1
  log "made the broker certificate $tls/ca.pem"
}

# Creates (or resets) the SCRAM-SHA-512 user through the running broker, so
# a data directory formatted before the SASL listeners existed gets it too.
kafka_scram_user() {
  local libs="$root/deploy/kafka/dist/libs"
  java -cp "$libs/*" -Dlog4j2.configurationFile="$root/deploy/kafka/log4j2.yaml" \
    -Dkafka.logs.dir="$kafka_dir/logs" \
    kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$kafka_port" \
    --alter --entity-type users --entity-name "$sasl_user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$sasl_password]" \
    >"$kafka_dir/logs/scram.log" 2>&1 \
    || { log "creating the SCRAM user failed:"; cat "$kafka_dir/logs/scram.log" >&2; return 1; }
  log "SCRAM-SHA-512 user $sasl_user on 127.0.0.1:$sasl_port (SASL_PLAINTEXT) and 127.0.0.1:$sasl_ssl_port (SASL_SSL)"
}

clickhouse_up() {
  if [ -n "${CLICKHOUSE_URL:-}" ]; then
    log "CLICKHOUSE_URL=$CLICKHOUSE_URL is set; not starting the local engine"
    return 0
  fi
  if pid_alive "$ch_dir/chfront.pid"; then
    log "clickhouse (chDB front) already running on 127.0.0.1:$ch_port"
    return 0
  fi
  if port_open "$ch_port"; then
    log "port $ch_port is taken by another process; set CLICKHOUSE_PORT"
    return 1
  fi
  "$root/deploy/clickhouse/install.sh"
  mkdir -p "$ch_dir"
  nohup "$root/deploy/clickhouse/venv/bin/python" "$root/deploy/clickhouse/chfront.py" \
    --host 127.0.0.1 --port "$ch_port" --data "$ch_dir/data" \
    --users "$root/deploy/clickhouse/users.toml" \
    --pidfile "$ch_dir/chfront.pid" >"$ch_dir/chfront.log" 2>&1 &
  echo $! >"$ch_dir/chfront.pid"

  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$ch_port/ping" >/dev/null 2>&1; then
      log "clickhouse (chDB front) ready on http://127.0.0.1:$ch_port (data in $ch_dir/data)"
      return 0
    fi
    pid_alive "$ch_dir/chfront.pid" || break
    sleep 0.5
  done
  log "the chDB front did not start; last lines of its log:"
  tail -n 30 "$ch_dir/chfront.log" >&2 || true
  return 1
}

print_env() {
  echo "export KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-127.0.0.1:$kafka_port}"
  # The SASL listeners: the local broker's, unless KAFKA_SASL_* already point
  # at another cluster's (a remote KAFKA_BOOTSTRAP has no local ones).
  if [ -n "${KAFKA_SASL_BOOTSTRAP:-}" ]; then
    echo "export KAFKA_SASL_BOOTSTRAP=$KAFKA_SASL_BOOTSTRAP"
    echo "export KAFKA_SASL_USERNAME=${KAFKA_SASL_USERNAME:-}"
    echo "export KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-}"
    [ -n "${KAFKA_SASL_SSL_BOOTSTRAP:-}" ] && echo "export KAFKA_SASL_SSL_BOOTSTRAP=$KAFKA_SASL_SSL_BOOTSTRAP"
    [ -n "${KAFKA_SSL_CA_FILE:-}" ] && echo "export KAFKA_SSL_CA_FILE=$KAFKA_SSL_CA_FILE"
  elif [ "${KAFKA_BOOTSTRAP:-127.0.0.1:$kafka_port}" = "127.0.0.1:$kafka_port" ]; then
    echo "export KAFKA_SASL_BOOTSTRAP=127.0.0.1:$sasl_port"
    echo "export KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:$sasl_ssl_port"
    echo "export KAFKA_SASL_USERNAME=$sasl_user"
    echo "export KAFKA_SASL_PASSWORD=$sasl_password"
    echo "export KAFKA_SSL_CA_FILE=$kafka_dir/tls/ca.pem"
  fi
  echo "export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:$ch_port}"
}

case "${1:-}" in
  up) kafka_up; clickhouse_up ;;
  down)
    stop_pid "$ch_dir/chfront.pid" clickhouse
    stop_pid "$kafka_dir/kafka.pid" kafka
    ;;
  status)
    pid_alive "$kafka_dir/kafka.pid" && echo "kafka: running on 127.0.0.1:$kafka_port" || echo "kafka: stopped"
    pid_alive "$ch_dir/chfront.pid" && echo "clickhouse: running on 127.0.0.1:$ch_port" || echo "clickhouse: stopped"
    ;;
  env) print_env ;;
  stop-kafka) stop_pid "$kafka_dir/kafka.pid" kafka ;;
  start-kafka) kafka_up ;;
  reset)
    "$0" down
    rm -rf "$kafka_dir" "$ch_dir"
    log "local data deleted"
    ;;
  *) echo "usage: $0 up|down|status|env|reset|stop-kafka|start-kafka" >&2; exit 2 ;;
esac
