#!/usr/bin/env bash
# `make bench`: every benchmark against the local services, in release mode.
# Each one's output goes to var/bench/<name>.txt; a summary of all of them to
# var/bench/latest.txt. Not part of `make test`.
#
#   deploy/bench.sh            run all
#   deploy/bench.sh status     run the ones whose name contains "status"
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/var/bench"
mkdir -p "$out"

deploy/prereqs.sh
started=0
deploy/local-services.sh status | grep -q "kafka: running" || started=1
stop_services() { if [ "$started" = 1 ]; then deploy/local-services.sh down; fi; }
trap stop_services EXIT
deploy/local-services.sh up
eval "$(deploy/local-services.sh env)"

# name | command
benches=(
  "sgip-codec|cargo bench -p sgip --bench codec"
  "sgip-session|cargo bench -p smsc-sim --bench session_throughput"
  "ingest|cargo run --release -p ingest --bin ingest-bench"
  "dispatcher|cargo bench -p dispatcher --bench dispatch"
  "status-correlation|cargo bench -p status --bench correlation"
  "analytics|cargo bench -p analytics --bench throughput"
  "pipeline|cargo build --release --bins -p analytics -p status -p smsc-sim -p dispatcher -p ingest && cargo bench -p sms-tests --bench pipeline"
)

filter="${1:-}"
: >"$out/latest.txt"
for entry in "${benches[@]}"; do
  name="${entry%%|*}"
  command="${entry#*|}"
  [ -z "$filter" ] || [[ "$name" == *"$filter"* ]] || continue
  echo "== $name: $command" | tee -a "$out/latest.txt"
  if (eval "$command") >"$out/$name.txt" 2>"$out/$name.err"; then
    grep -vE '^\s*$' "$out/$name.txt" | tail -n 25 | tee -a "$out/latest.txt"
  else
    echo "FAILED (see $out/$name.err)" | tee -a "$out/latest.txt"
    tail -n 20 "$out/$name.err" >&2
  fi
done
echo "results in $out/latest.txt"
