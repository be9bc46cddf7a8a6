#!/usr/bin/env bash
# Install the local ClickHouse front's Python environment.
#
# Creates deploy/clickhouse/venv with `python3 -m venv` when it is missing
# (reuses it otherwise) and installs the chDB engine (about 180 MB),
# requirements.txt and requirements-test.txt into it. Safe to run again: pip
# skips what is already installed.
#
# Usage: deploy/clickhouse/install.sh
# Then:  deploy/clickhouse/venv/bin/python deploy/clickhouse/chfront.py --port 8123 --data var/clickhouse
# Tests: deploy/clickhouse/venv/bin/python -m pytest deploy/clickhouse -q
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/venv"
chdb_requirement="chdb-core==26.9.0"

if [[ -x "$venv/bin/python" ]]; then
    echo "install.sh: reusing virtualenv $venv"
else
    echo "install.sh: creating virtualenv $venv"
    python3 -m venv "$venv"
fi

echo "install.sh: installing $chdb_requirement, requirements.txt and requirements-test.txt"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$chdb_requirement" -r "$here/requirements.txt" -r "$here/requirements-test.txt"

"$venv/bin/python" - <<'PY'
import chdb, lz4, pytest
print(f"install.sh: ready: chdb {chdb.__version__}, lz4 {lz4.__version__}, pytest {pytest.__version__}")
PY
