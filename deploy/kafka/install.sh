#!/usr/bin/env bash
# Puts the Apache Kafka broker and its tools (jars from Maven Central) into
# deploy/kafka/dist/libs. Idempotent: does nothing when the jars are there.
# Needs Java 17+ and Maven, which the build machines have.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
libs="$here/dist/libs"

if ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1 && ls "$libs"/kafka-tools-*.jar >/dev/null 2>&1; then
  exit 0
fi

command -v java >/dev/null || { echo "kafka: java not found (need Java 17+)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka: mvn not found (need Maven to fetch the broker jars)" >&2; exit 1; }

echo "kafka: fetching broker and tools jars from Maven Central into $libs"
mkdir -p "$libs.tmp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$libs.tmp"
rm -rf "$libs"
mv "$libs.tmp" "$libs"
echo "kafka: $(ls "$libs" | wc -l) jars installed"
