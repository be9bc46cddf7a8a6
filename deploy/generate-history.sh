#!/usr/bin/env bash
# Writes generated message history into a ClickHouse database, for the trace
# benchmark and the sample monthly report. ClickHouse generates the rows
# itself (INSERT ... SELECT ... FROM numbers), a million messages per insert.
#
#   deploy/generate-history.sh [--database NAME] [--from YYYY-MM-DD] [--days N] [--messages N]
#
# Defaults: database sms_history, six months ending today at the
# contract's volume (about 17 million messages). CLICKHOUSE_URL, CLICKHOUSE_USER and CLICKHOUSE_PASSWORD
# are honoured. The schema is applied first (the analytics migrations).
set -euo pipefail
cd "$(dirname "$0")/.."

database=sms_history
from=$(date -u -d '183 days ago' +%Y-%m-%d)
days=183
messages=17000000
while [ "$#" -gt 0 ]; do
  case "$1" in
    --database) database=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    *) echo "unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p smsctl --bin smsctl-history
exec target/release/smsctl-history --database "$database" --from "$from" --days "$days" --messages "$messages"
