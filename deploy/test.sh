#!/usr/bin/env bash
# `make test`: installs what is missing, starts Kafka and ClickHouse unless
# they already run (or KAFKA_BOOTSTRAP/CLICKHOUSE_URL point elsewhere), runs
# lint and every test against them, and stops what it started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

deploy/prereqs.sh

started=0
if ! deploy/local-services.sh status | grep -q "kafka: running" \
   || ! deploy/local-services.sh status | grep -q "clickhouse: running"; then
  started=1
fi
stop_services() {
  if [ "$started" = 1 ]; then deploy/local-services.sh down; fi
}
trap stop_services EXIT
deploy/local-services.sh up
eval "$(deploy/local-services.sh env)"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast
echo "== chDB front tests"
deploy/clickhouse/install.sh
deploy/clickhouse/venv/bin/python -m pytest deploy/clickhouse -q
