#!/usr/bin/env bash
# Installs what the build needs and a fresh machine may lack. Idempotent.
# Kafka's jars and the chDB engine are installed by deploy/local-services.sh.
set -euo pipefail

log() { printf 'prereqs: %s\n' "$*" >&2; }

command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup) first"; exit 1; }
if command -v rustup >/dev/null; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" \
      || { log "adding rust component $component"; rustup component add "$component"; }
  done
fi

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
# librdkafka is built from source by the rdkafka crate.
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)
# librdkafka (TLS, SASL/SCRAM), the ClickHouse client and the ingest API link
# the system OpenSSL, found through pkg-config.
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
