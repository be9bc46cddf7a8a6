"""End-to-end tests of chfront: each starts the front as a real process on a
free port with its own data directory and talks HTTP to it.

Run with an interpreter that has pytest and lz4 (the front itself runs under
deploy/clickhouse/venv when it exists, else under the same interpreter):

    python3 -m pytest deploy/clickhouse -q
    deploy/clickhouse/venv/bin/python -m pytest deploy/clickhouse -q
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import lz4.block
import pytest

HERE = Path(__file__).resolve().parent
FRONT = HERE / "chfront.py"
VENV_PYTHON = HERE / "venv" / "bin" / "python"
START_TIMEOUT_S = 60


# === The front as a process ===


class Front:
    def __init__(self, data_dir: Path, users_file: Path | None = None):
        self.data_dir = data_dir
        self.users_file = users_file
        self.port = free_port()
        self.pidfile = data_dir.parent / f"chfront-{self.port}.pid"
        self.log_path = data_dir.parent / f"chfront-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Front":
        python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
        command = [python, str(FRONT), "--port", str(self.port), "--data", str(self.data_dir)]
        command += ["--pidfile", str(self.pidfile)]
        if self.users_file:
            command += ["--users", str(self.users_file)]
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stderr=self.log_file, stdout=self.log_file)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"front exited early:\n{self.log_path.read_text()}")
            try:
                if get(self.connection(), "/ping")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"front did not answer within {START_TIMEOUT_S}s")

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.log_file.close()
        return code

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.toml"
    path.write_text('[users.analyst]\npassword = "look-only"\nreadonly = true\n')
    return path


@pytest.fixture(scope="module")
def front(tmp_path_factory, users_file):
    front = Front(tmp_path_factory.mktemp("shared") / "data", users_file).start()
    yield front
    front.stop()


@pytest.fixture
def database(front, request) -> str:
    name = "test_" + re.sub(r"\W", "_", request.node.name)
    conn = front.connection()
    assert query(conn, f"DROP DATABASE IF EXISTS {name}")[0] == 200
    assert query(conn, f"CREATE DATABASE {name}")[0] == 200
    return name


# === HTTP helpers ===


def get(conn, path: str, **params) -> tuple[int, dict, bytes]:
    target = path + ("?" + urllib.parse.urlencode(params) if params else "")
    conn.request("GET", target)
    return read_response(conn)


def post(conn, body, headers: dict | None = None, **params) -> tuple[int, dict, bytes]:
    target = "/?" + urllib.parse.urlencode(params)
    chunked = not isinstance(body, (bytes, str))
    conn.request("POST", target, body=body, headers=headers or {}, encode_chunked=chunked)
    return read_response(conn)


def query(conn, sql: str, **params) -> tuple[int, dict, bytes]:
    return post(conn, sql.encode(), **params)


def read_response(conn) -> tuple[int, dict, bytes]:
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def ok(result) -> bytes:
    status, _, body = result
    assert status == 200, body.decode(errors="replace")
    return body


# === Row encodings, written by hand as a client would ===


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def rb_string(text: str) -> bytes:
    raw = text.encode()
    return varint(len(raw)) + raw


EVENT_COLUMNS = [("id", "UInt32"), ("kind", "LowCardinality(String)"), ("at", "DateTime64(3)")]


def event_row(event_id: int, kind: str, at_ms: int) -> bytes:
    return struct.pack("<I", event_id) + rb_string(kind) + struct.pack("<q", at_ms)


def names_and_types_header(columns) -> bytes:
    return (
        varint(len(columns))
        + b"".join(rb_string(name) for name, _ in columns)
        + b"".join(rb_string(kind) for _, kind in columns)
    )


def compressed_blocks(payload: bytes, block_size: int) -> bytes:
    """ClickHouse's block framing: checksum, method, sizes, LZ4 block."""
    out = bytearray()
    for offset in range(0, len(payload), block_size):
        piece = payload[offset : offset + block_size]
        compressed = lz4.block.compress(piece, store_size=False)
        out += b"\x00" * 16  # checksum: not verified by the front
        out += bytes([0x82]) + struct.pack("<II", len(compressed) + 9, len(piece))
        out += compressed
    return bytes(out)


def create_events(conn, database: str, table: str = "events", settings: str = "") -> None:
    ok(
        query(
            conn,
            f"CREATE TABLE {table} (id UInt32, kind LowCardinality(String), at DateTime64(3)) "
            "ENGINE = MergeTree ORDER BY id TTL toDateTime(at) + INTERVAL 3650 DAY"
            + (f" SETTINGS {settings}" if settings else ""),
            database=database,
        )
    )


AT_MS = 1_767_225_600_123  # 2026-01-01 00:00:00.123 UTC


# === Tests ===


def test_health_endpoints_answer_ok(front):
    conn = front.connection()
    for path in ("/ping", "/", "/replicas_status"):
        status, _, body = get(conn, path)
        assert (status, body) == (200, b"Ok.\n")


def test_inserts_in_three_formats_and_selects_in_three(front, database, chfront):
    conn = front.connection()
    create_events(conn, database)

    rows = event_row(1, "submit", AT_MS) + event_row(2, "report", AT_MS + 1)
    ok(
        post(
            conn,
            rows,
            database=database,
            query="INSERT INTO events (id, kind, at) FORMAT RowBinary",
        )
    )
    json_rows = b'{"id":3,"kind":"submit","at":"2026-01-01 00:00:00.125"}\n'
    ok(post(conn, json_rows, database=database, query="INSERT INTO events FORMAT JSONEachRow"))
    tsv_rows = b"4\tdeliver\t2026-01-01 00:00:00.126\n"
    ok(post(conn, tsv_rows, database=database, query="INSERT INTO events FORMAT TabSeparated"))

    status, headers, body = query(
        conn,
        "SELECT id, kind, at FROM events ORDER BY id",
        database=database,
        default_format="RowBinaryWithNamesAndTypes",
    )
    assert status == 200
    assert headers["X-ClickHouse-Format"] == "RowBinaryWithNamesAndTypes"
    names, types, rows_start = chfront.parse_names_and_types(body)
    data = body[rows_start:]
    assert names == ["id", "kind", "at"]
    assert types == ["UInt32", "LowCardinality(String)", "DateTime64(3)"]
    assert data.startswith(event_row(1, "submit", AT_MS) + event_row(2, "report", AT_MS + 1))

    body = ok(
        query(conn, "SELECT id, kind FROM events ORDER BY id FORMAT JSONEachRow", database=database)
    )
    assert [json.loads(line) for line in body.splitlines()] == [
        {"id": 1, "kind": "submit"},
        {"id": 2, "kind": "report"},
        {"id": 3, "kind": "submit"},
        {"id": 4, "kind": "deliver"},
    ]

    status, headers, body = query(conn, "SELECT id, at FROM events WHERE id = 4", database=database)
    assert status == 200
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert body == b"4\t2026-01-01 00:00:00.126\n"
    assert headers["X-ClickHouse-Timezone"] == "UTC"
    assert headers["X-ClickHouse-Query-Id"]
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"


def test_lz4_compressed_insert_as_the_rust_client_sends_it(front, database):
    conn = front.connection()
    create_events(conn, database)
    rows = b"".join(event_row(n, f"kind{n % 3}", AT_MS + n) for n in range(5000))
    payload = names_and_types_header(EVENT_COLUMNS) + rows
    body = compressed_blocks(payload, block_size=16 * 1024)
    # Chunks that do not line up with the blocks, as a streaming client sends them.
    chunks = (body[offset : offset + 7000] for offset in range(0, len(body), 7000))

    status, headers, response = post(
        conn,
        chunks,
        database=database,
        decompress="1",
        query="INSERT INTO events(id,kind,at) FORMAT RowBinaryWithNamesAndTypes",
    )
    assert status == 200, response
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "5000"

    body = ok(
        query(conn, "SELECT count(), sum(id), uniqExact(kind) FROM events", database=database)
    )
    assert body == b"5000\t12497500\t3\n"


def test_low_cardinality_columns_of_every_shape_survive_an_insert(front, database):
    conn = front.connection()
    ok(
        query(
            conn,
            "CREATE TABLE shapes (id UInt32, kind LowCardinality(String), "
            "code LowCardinality(Nullable(String)), tags Array(LowCardinality(String)), "
            "at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY id",
            database=database,
        )
    )
    columns = [
        ("id", "UInt32"),
        ("kind", "LowCardinality(String)"),
        ("code", "LowCardinality(Nullable(String))"),
        ("tags", "Array(LowCardinality(String))"),
        ("at", "DateTime64(3, 'UTC')"),
    ]

    def row(n: int) -> bytes:
        code = b"\x01" if n % 2 else b"\x00" + rb_string(f"c{n % 5}")
        tags = varint(2) + rb_string("a") + rb_string(f"t{n % 3}")
        return (
            struct.pack("<I", n)
            + rb_string(f"k{n % 4}")
            + code
            + tags
            + struct.pack("<q", AT_MS + n)
        )

    payload = names_and_types_header(columns) + b"".join(row(n) for n in range(1000))
    status, _, response = post(
        conn,
        compressed_blocks(payload, block_size=4096),
        database=database,
        decompress="1",
        query="INSERT INTO shapes(id,kind,code,tags,at) FORMAT RowBinaryWithNamesAndTypes",
    )
    assert status == 200, response
    body = ok(
        query(
            conn,
            "SELECT count(), uniqExact(kind), countIf(code IS NULL), uniqExact(code), "
            "sum(length(tags)), max(at) FROM shapes",
            database=database,
        )
    )
    assert body == b"1000\t4\t500\t5\t2000\t2026-01-01 00:00:01.122\n"
    body = ok(
        query(conn, "SELECT kind, code, tags FROM shapes WHERE id = 6", database=database)
    )
    assert body == b"k2\tc1\t['a','t0']\n"


def test_bad_query_answers_in_clickhouse_error_format(front):
    conn = front.connection()
    status, headers, body = query(conn, "SELECT no_such_column")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] == "47"
    text = body.decode()
    assert re.fullmatch(
        r"Code: 47\. DB::Exception: .+\. \(UNKNOWN_IDENTIFIER\) \(version 26\.9[^)]*\)\n",
        text,
        re.S,
    ), text

    status, headers, body = query(conn, "SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert b"(SYNTAX_ERROR)" in body

    # The same keep-alive connection and the engine are still usable.
    assert ok(query(conn, "SELECT 1")) == b"1\n"


def test_multi_statements_are_refused(front):
    status, headers, _ = query(front.connection(), "SELECT 1; SELECT 2")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")


def test_readonly_user_may_read_but_not_insert(front, database):
    conn = front.connection()
    create_events(conn, database)
    analyst = {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": "look-only"}

    status, headers, body = post(
        conn,
        b"1\tx\t2026-01-01 00:00:00\n",
        headers=analyst,
        database=database,
        query="INSERT INTO events FORMAT TabSeparated",
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    assert b"(READONLY)" in body
    status, _, _ = post(conn, b"DROP TABLE events", headers=analyst, database=database)
    assert status == 403

    assert (
        ok(post(conn, b"SELECT count() FROM events", headers=analyst, database=database)) == b"0\n"
    )
    assert ok(query(conn, "SELECT 1", user="analyst", password="look-only")) == b"1\n"

    status, headers, _ = query(conn, "SELECT 1", user="analyst", password="wrong")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")


def test_get_requests_are_read_only(front):
    conn = front.connection()
    assert get(conn, "/", query="SELECT 2")[2] == b"2\n"
    status, headers, _ = get(conn, "/", query="CREATE DATABASE never_created")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")


def test_settings_apply_to_their_request_only(front):
    conn = front.connection()
    sql = "SELECT getSetting('max_block_size')"
    default = ok(query(conn, sql))
    assert ok(query(conn, sql, max_block_size="1234")) == b"1234\n"
    assert ok(query(conn, sql)) == default
    # Parameters the front handles itself never reach the engine.
    assert (
        ok(query(conn, "SELECT 1", decompress="0", compress="1", wait_end_of_query="1")) == b"1\n"
    )
    status, headers, _ = query(conn, "SELECT 1", no_such_setting="1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "115")
    # `readonly` makes this request read-only and never locks the shared engine.
    status, headers, _ = query(conn, "CREATE DATABASE never_created", readonly="1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    ok(query(conn, "CREATE DATABASE IF NOT EXISTS created_after_readonly"))
    # A SET query has no lasting effect without sessions.
    ok(query(conn, "SET max_block_size = 77"))
    assert ok(query(conn, sql)) == default


def test_query_parameters_in_url_and_multipart_body(front):
    conn = front.connection()
    assert ok(query(conn, "SELECT {n:UInt8} + 1", param_n="41")) == b"42\n"

    boundary = "clickhouse-rs-boundary-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="query"\r\n\r\n'
        "SELECT {s:String} AS s\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="param_s"\r\n\r\n'
        "multi\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert ok(post(conn, body, headers=headers, default_format="JSONEachRow")) == b'{"s":"multi"}\n'


def test_chunked_bodies_keep_the_connection_in_step(front, database):
    conn = front.connection()
    sql_chunks = iter([b"SELECT ", b"40 ", b"+ 2"])
    assert ok(post(conn, sql_chunks, database=database)) == b"42\n"

    create_events(conn, database)
    rows = [f"{n}\tchunk\t2026-01-01 00:00:00\n".encode() for n in range(100)]
    ok(post(conn, iter(rows), database=database, query="INSERT INTO events FORMAT TabSeparated"))
    # A failing insert whose body the front must still read to the end.
    status, _, _ = post(conn, iter(rows), database=database, query="INSERT INTO missing FORMAT TSV")
    assert status == 404
    assert ok(query(conn, "SELECT count() FROM events", database=database)) == b"100\n"


def test_deduplication_token_drops_a_repeated_insert(front, database):
    conn = front.connection()
    create_events(conn, database, settings="non_replicated_deduplication_window = 100")
    rows = event_row(1, "submit", AT_MS)
    insert = "INSERT INTO events FORMAT RowBinary"
    for _ in range(2):
        ok(post(conn, rows, database=database, query=insert, insert_deduplication_token="batch-1"))
    ok(post(conn, rows, database=database, query=insert, insert_deduplication_token="batch-2"))
    assert ok(query(conn, "SELECT count() FROM events", database=database)) == b"2\n"

    # Without a token, identical rows are deduplicated by content, as a direct
    # insert into ClickHouse would be.
    rows = event_row(2, "report", AT_MS)
    for _ in range(2):
        ok(post(conn, rows, database=database, query=insert))
    assert ok(query(conn, "SELECT count() FROM events", database=database)) == b"3\n"


def test_an_insert_logs_the_size_of_its_rows_and_where_the_time_went(front, database):
    conn = front.connection()
    create_events(conn, database, table="logged_events")
    rows = b"".join(event_row(n, "logged", AT_MS) for n in range(10))
    ok(post(conn, rows, database=database, query="INSERT INTO logged_events FORMAT RowBinary"))
    # The request's line is logged just after the answer is sent.
    deadline = time.monotonic() + 10
    while True:
        lines = [
            line
            for line in front.log_path.read_text().splitlines()
            if "INSERT INTO logged_events FORMAT RowBinary" in line
        ]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines, "no log line for the insert"
    line = lines[-1]
    assert re.search(
        rf"\({len(rows)} bytes of rows received in \d+\.\dms, stored in \d+\.\dms\)$", line
    ), line


def test_concurrent_requests_stay_in_their_databases(front):
    setup = front.connection()
    for name in ("tenant_a", "tenant_b"):
        ok(query(setup, f"CREATE DATABASE IF NOT EXISTS {name}"))
        ok(
            query(
                setup,
                "CREATE TABLE IF NOT EXISTS owner (name String) ENGINE = MergeTree ORDER BY name",
                database=name,
            )
        )
        ok(query(setup, "TRUNCATE TABLE owner", database=name))
        ok(query(setup, f"INSERT INTO owner VALUES ('{name}')", database=name))

    mismatches = []

    def ask(name: str) -> None:
        conn = front.connection()
        for _ in range(25):
            body = ok(query(conn, "SELECT currentDatabase(), name FROM owner", database=name))
            if body != f"{name}\t{name}\n".encode():
                mismatches.append((name, body))

    threads = [threading.Thread(target=ask, args=(name,)) for name in ("tenant_a", "tenant_b") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert mismatches == []


def test_data_survives_a_restart_and_sigterm_stops_cleanly(tmp_path):
    front = Front(tmp_path / "data").start()
    conn = front.connection()
    create_events(conn, "default")
    ok(post(conn, event_row(7, "kept", AT_MS), query="INSERT INTO events FORMAT RowBinary"))
    assert front.pidfile.read_text().strip() == str(front.process.pid)
    assert front.stop() == 0
    assert not front.pidfile.exists()

    front = Front(tmp_path / "data").start()
    try:
        assert ok(query(front.connection(), "SELECT id, kind FROM events")) == b"7\tkept\n"
    finally:
        assert front.stop() == 0
    log = front.log_path.read_text()
    assert "received SIGTERM" in log and "stopped" in log


# === Unit tests of the front's parsing (need chdb importable here too) ===


@pytest.fixture(scope="module")
def chfront():
    pytest.importorskip("chdb")
    sys.path.insert(0, str(HERE))
    import chfront

    return chfront


def test_insert_rows_start_after_the_first_newline_even_when_they_are_whitespace(chfront):
    text = "INSERT INTO format (a) FORMAT RowBinary\n\n\t rest"
    statement = chfront.analyse(text)
    assert statement.insert_format == "RowBinary"
    assert text[statement.data_start :] == "\n\t rest"
    assert text[: statement.insert_head_end].rstrip() == "INSERT INTO format (a)"


def test_statement_kinds_formats_and_multi_statements(chfront):
    assert chfront.analyse("SELECT format FROM t").output_format is None
    assert chfront.analyse("(SELECT 1) FORMAT JSON").output_format == "JSON"
    assert chfront.analyse("INSERT INTO t SELECT 1 FORMAT TSV").insert_format is None
    assert chfront.analyse("SELECT ';' -- ; \n;").kind == "SELECT"
    with pytest.raises(chfront.ClickHouseError, match="Multi-statements"):
        chfront.analyse("SELECT 1; INSERT INTO t VALUES (1)")
    assert chfront.analyse("SELECT 1 INTO OUTFILE 'x'").into_outfile


def test_header_types_are_read_without_low_cardinality(chfront, tmp_path):
    assert chfront.without_low_cardinality("LowCardinality(String)") == "String"
    nested = "Map(LowCardinality(String), LowCardinality(Nullable(String)))"
    assert chfront.without_low_cardinality(nested) == "Map(String, Nullable(String))"
    assert (
        chfront.without_low_cardinality("Enum8('LowCardinality(' = 1)")
        == "Enum8('LowCardinality(' = 1)"
    )
    assert chfront.without_low_cardinality("DateTime64(3, 'UTC')") == "DateTime64(3, 'UTC')"
    assert chfront.without_low_cardinality("LowCardinality(String") == "LowCardinality(String"

    rows = tmp_path / "rows"
    rows.write_bytes(names_and_types_header(EVENT_COLUMNS) + event_row(1, "x", AT_MS))
    assert chfront.read_names_and_types(str(rows)) == (
        ["id", "kind", "at"],
        ["UInt32", "LowCardinality(String)", "DateTime64(3)"],
    )
    plain = chfront.FrontHandler.plain_structure
    assert plain("RowBinaryWithNamesAndTypes", str(rows), {}) == (
        "`id` UInt32, `kind` String, `at` DateTime64(3)"
    )
    assert plain("RowBinary", str(rows), {}) is None
    told = {"input_format_with_types_use_header": "1"}
    assert plain("RowBinaryWithNamesAndTypes", str(rows), told) is None

    rows.write_bytes(names_and_types_header(EVENT_COLUMNS)[:-3])
    assert chfront.read_names_and_types(str(rows)) is None
    assert plain("RowBinaryWithNamesAndTypes", str(rows), {}) is None


def test_compressed_blocks_split_across_pieces(chfront):
    payload = bytes(range(256)) * 300
    framed = compressed_blocks(payload, block_size=10_000)
    pieces = [framed[offset : offset + 333] for offset in range(0, len(framed), 333)]
    assert b"".join(chfront.decompress_blocks(iter(pieces))) == payload
    with pytest.raises(chfront.ClickHouseError, match="ends inside a block"):
        b"".join(chfront.decompress_blocks(iter([framed[:-1]])))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
