"""A local stand-in for ClickHouse's HTTP interface, over an in-process chDB engine.

Build and test machines have no ClickHouse server, so this front runs the
ClickHouse 26.9 engine that PyPI's `chdb-core` carries and answers the HTTP
requests that ClickHouse clients send, closely enough that the project's Rust
code (the `clickhouse` crate 0.15 with its default `lz4` feature) runs against
it unchanged. Production uses a real ClickHouse server; nothing here is meant
for it.

Install and run (from the repository root):

    deploy/clickhouse/install.sh
    deploy/clickhouse/venv/bin/python deploy/clickhouse/chfront.py --port 8123 --data var/clickhouse

Stop it with SIGTERM or SIGINT (`kill $(cat PIDFILE)` when started with
`--pidfile PIDFILE`): it stops accepting, lets the running query finish, closes
the engine and exits. `--help` lists every flag.

What it serves
--------------
- `GET /ping`, `GET /`, `GET /replicas_status`: `Ok.`.
- Queries on `/` by GET (`?query=`, read-only as in ClickHouse) or POST. The
  query is the `query` parameter followed by the body, as in ClickHouse; a
  `multipart/form-data` body carries `query` and `param_*` fields.
- `database`, `default_format` (TabSeparated when absent; also taken from the
  `X-ClickHouse-Database` and `X-ClickHouse-Format` headers), `query_id` and
  `param_*` query parameters (`{name:Type}` placeholders).
- ClickHouse settings as URL parameters: applied with `SET` on the engine for
  this request only and reset afterwards. An unknown setting fails the query
  as ClickHouse would. The parameters in `TRANSPORT_PARAMETERS` are read or
  ignored by the front and never reach the engine. `readonly=1|2` makes the
  request read-only.
- Any output format, written by the engine itself.
- `INSERT ... FORMAT <name>` with the rows after the query (in the body or
  inline). The rows are written to a temporary file and loaded with
  `INSERT ... SELECT * FROM file(path, '<name>')`; such inserts are
  deduplicated by content (on MergeTree tables with
  `non_replicated_deduplication_window`) like direct inserts, and honour
  `insert_deduplication_token`.
- Request bodies with `Content-Length` or `Transfer-Encoding: chunked`;
  `Content-Encoding: gzip`, `deflate` or `lz4` (LZ4 frame); and with
  `decompress=1`, ClickHouse's compressed blocks (method 0x82 LZ4 or 0x02
  none). The CityHash128 checksum in front of each block is not verified.
- Users: `default` with an empty password, and those of an optional TOML users
  file (`--users`, see `load_users`). Credentials come from `user`/`password`
  parameters, `X-ClickHouse-User`/`X-ClickHouse-Key` headers or Basic auth.
- Errors in ClickHouse's form: `Code: N. DB::Exception: ... (NAME) (version
  ...)` with `X-ClickHouse-Exception-Code`, and the HTTP status ClickHouse uses
  for that code. A failed query leaves the engine usable.

What it does not do
-------------------
- One engine connection, one query at a time: requests queue on a lock. Good
  for tests and local runs, not for load.
- Responses are never compressed (clients accept plain bodies) and are built
  in memory before they are sent, so progress headers and mid-stream
  exceptions do not exist here.
- No sessions (`session_id` is ignored): a `SET` query succeeds and has no
  lasting effect, as in ClickHouse without a session. Query parameters may
  linger on the engine after a request; a later query that uses a placeholder
  without passing it may see a stale value instead of an error.
- Multi-statement queries are refused, as ClickHouse does over HTTP.
- The read-only check looks at the kind of statement (SELECT, SHOW, DESCRIBE,
  EXISTS, WITH); it is not a security boundary (table functions such as
  `file()` still read the host's files). `INTO OUTFILE` is refused for all.
- zstd content encoding and compressed blocks other than LZ4 are refused.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import struct
import sys
import tempfile
import threading
import time
import tomllib
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
import lz4.frame

log = logging.getLogger("chfront")

# URL parameters that are not ClickHouse settings for the engine: the front
# reads some of them itself and ignores the rest (sessions, response
# compression, HTTP buffering and progress knobs have no meaning here).
TRANSPORT_PARAMETERS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "readonly",
        "decompress",
        "compress",
        "session_id",
        "session_timeout",
        "session_check",
        "role",
        "wait_end_of_query",
        "buffer_size",
        "enable_http_compression",
        "http_zlib_compression_level",
        "http_native_compression_disable_checksumming_on_decompress",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "send_timeout",
        "receive_timeout",
    }
)

# Statements a read-only user may run.
READ_ONLY_STATEMENTS = frozenset({"SELECT", "SHOW", "DESCRIBE", "DESC", "EXISTS", "WITH"})

# Output names that chDB's Python API turns into Python objects, not bytes.
PYTHON_OBJECT_FORMATS = frozenset({"arrowtable", "dataframe", "datastore"})

# Block compression methods of ClickHouse's native framing.
BLOCK_METHOD_NONE = 0x02
BLOCK_METHOD_LZ4 = 0x82
BLOCK_CHECKSUM_SIZE = 16
BLOCK_HEADER_SIZE = 9

READ_PIECE_SIZE = 1 << 20
MAX_SQL_BODY_SIZE = 256 << 20

SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

OK_PATHS = frozenset({"/ping", "/replicas_status"})


# === Errors ===


class ClickHouseError(Exception):
    """A failure reported to the client in ClickHouse's error format."""

    def __init__(self, code: int, name: str, message: str, *, close_connection: bool = False):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self.close_connection = close_connection

    @classmethod
    def from_engine(cls, error: Exception) -> "ClickHouseError":
        """Wraps an exception raised by chDB, keeping its text as it is."""
        text = str(error).strip()
        code_match = re.search(r"Code: (\d+)\.", text)
        name_matches = re.findall(r"\(([A-Z][A-Z0-9_]+)\)", text)
        code = int(code_match.group(1)) if code_match else 1002
        name = name_matches[-1] if name_matches else "UNKNOWN_EXCEPTION"
        if not code_match:
            text = f"Code: {code}. DB::Exception: {text}. ({name})"
        return cls(code, name, text)

    def http_status(self) -> int:
        """The HTTP status ClickHouse answers with for this error code."""
        if self.name == "REQUIRED_PASSWORD":
            return 401
        if self.name in {
            "UNKNOWN_USER",
            "WRONG_PASSWORD",
            "AUTHENTICATION_FAILED",
            "READONLY",
            "ACCESS_DENIED",
        }:
            return 403
        if self.name.startswith("UNKNOWN_"):
            return 404
        if self.name.startswith("CANNOT_PARSE_") or self.name in {
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "BAD_ARGUMENTS",
            "BAD_REQUEST_PARAMETER",
            "CANNOT_DECOMPRESS",
            "CANNOT_READ_ALL_DATA",
        }:
            return 400
        if self.name == "QUERY_IS_TOO_LARGE":
            return 413
        if self.name == "NOT_IMPLEMENTED":
            return 501
        if self.name in {"ABORTED", "SOCKET_TIMEOUT"}:
            return 503
        return 500

    def body(self, version: str) -> bytes:
        text = self.message
        if not re.search(r"\(version [^)]*\)\s*$", text):
            if not text.startswith("Code: "):
                text = f"Code: {self.code}. DB::Exception: {text}. ({self.name})"
            text = f"{text} (version {version})"
        return (text + "\n").encode("utf-8", "replace")


def syntax_error(message: str) -> ClickHouseError:
    return ClickHouseError(62, "SYNTAX_ERROR", message)


def bad_request(message: str) -> ClickHouseError:
    return ClickHouseError(36, "BAD_ARGUMENTS", message)


def broken_body(message: str) -> ClickHouseError:
    return ClickHouseError(33, "CANNOT_READ_ALL_DATA", message, close_connection=True)


# === SQL scanning ===


@dataclass
class Token:
    kind: str  # "word", "string", "identifier", "symbol"
    text: str
    start: int
    end: int

    def is_word(self, upper: str) -> bool:
        return self.kind == "word" and self.text.upper() == upper


def scan_tokens(text: str, start: int = 0) -> Iterator[Token]:
    """Splits SQL into tokens lazily, skipping whitespace and comments.

    `text` is the request decoded as Latin-1, so offsets are byte offsets and
    binary insert data after the query is never scanned (the caller stops).
    """
    position = start
    length = len(text)
    while position < length:
        char = text[position]
        if char.isspace():
            position += 1
        elif text.startswith("--", position) or char == "#":
            newline = text.find("\n", position)
            position = length if newline < 0 else newline + 1
        elif text.startswith("/*", position):
            close = text.find("*/", position + 2)
            position = length if close < 0 else close + 2
        elif char in "'\"`":
            end = quoted_end(text, position)
            kind = "string" if char == "'" else "identifier"
            yield Token(kind, text[position:end], position, end)
            position = end
        elif char.isalnum() or char == "_":
            end = position + 1
            while end < length and (text[end].isalnum() or text[end] in "_$"):
                end += 1
            yield Token("word", text[position:end], position, end)
            position = end
        else:
            yield Token("symbol", char, position, position + 1)
            position += 1


def quoted_end(text: str, start: int) -> int:
    """The offset just past the quoted literal or identifier opening at `start`."""
    quote = text[start]
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
        elif char == quote:
            if text.startswith(quote, position + 1):
                position += 2
            else:
                return position + 1
        else:
            position += 1
    raise syntax_error(
        f"Unterminated quoted literal or identifier starting at position {start + 1}"
    )


@dataclass
class Statement:
    """What the front needs to know about a query before running it."""

    kind: str  # first keyword, upper case ("SELECT", "INSERT", ...)
    output_format: str | None = None  # FORMAT clause of a non-insert query
    insert_format: str | None = None  # FORMAT of an insert whose rows follow
    insert_head_end: int = 0  # where the FORMAT keyword of that insert starts
    data_start: int = 0  # where that insert's rows start
    into_outfile: bool = False


def analyse(text: str) -> Statement:
    """Reads the statement kind and its FORMAT clause; refuses multi-statements.

    For `INSERT ... FORMAT name` it stops at the format name: what follows is
    rows, not SQL.
    """
    statement: Statement | None = None
    inserts_from_query = False  # INSERT ... SELECT / VALUES / WITH
    depth = 0
    previous: Token | None = None
    before_previous: Token | None = None
    ended = False
    for token in scan_tokens(text):
        if ended:
            raise syntax_error("Multi-statements are not allowed")
        if statement is None:
            if token.text == "(":
                continue
            statement = Statement(kind=token.text.upper())
        if token.kind == "symbol":
            depth += {"(": 1, ")": -1}.get(token.text, 0)
            ended = token.text == ";" and depth <= 0
        elif token.kind == "word" and depth <= 0 and previous is not None:
            upper = token.text.upper()
            statement.into_outfile |= upper == "OUTFILE" and previous.is_word("INTO")
            if statement.kind == "INSERT" and upper in {"SELECT", "VALUES", "WITH"}:
                inserts_from_query = True
            if previous.is_word("FORMAT") and not names_something(before_previous):
                if statement.kind == "INSERT" and not inserts_from_query:
                    statement.insert_format = token.text
                    statement.insert_head_end = previous.start
                    statement.data_start = insert_data_start(text, token.end)
                    return statement
                statement.output_format = token.text
        before_previous, previous = previous, token
    if statement is None:
        raise syntax_error("Empty query")
    return statement


# Tokens after which `format` is a table or column name, not the FORMAT clause.
NAME_POSITIONS = frozenset(
    {"SELECT", "DISTINCT", ",", ".", "INTO", "TABLE", "FROM", "JOIN", "BY", "AS", "EXISTS", "DESC"}
)


def names_something(token: Token | None) -> bool:
    return token is not None and token.text.upper() in NAME_POSITIONS


def insert_data_start(text: str, format_name_end: int) -> int:
    """Where an insert's rows begin: after the first newline following the
    format name, or after all the whitespace when no newline comes first."""
    position = format_name_end
    while position < len(text) and text[position] in " \t\r\n":
        if text[position] == "\n":
            return position + 1
        position += 1
    return position


def quote_literal(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def quote_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("`", "\\`")
    return f"`{escaped}`"


def parse_names_and_types(head: bytes) -> tuple[list[str], list[str], int]:
    """The column names and types at the start of `RowBinaryWithNamesAndTypes`
    data, and the offset where its rows begin. Raises IndexError or
    UnicodeDecodeError when the header is cut short or is not text."""
    position = 0

    def read_varint() -> int:
        nonlocal position
        value, shift = 0, 0
        while True:
            byte = head[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def read_string() -> str:
        nonlocal position
        length = read_varint()
        if position + length > len(head):
            raise IndexError("header longer than what was read")
        text = head[position : position + length].decode("utf-8")
        position += length
        return text

    count = read_varint()
    names = [read_string() for _ in range(count)]
    types = [read_string() for _ in range(count)]
    return names, types, position


def read_names_and_types(path: str) -> tuple[list[str], list[str]] | None:
    """The column names and types in the header of a file of
    `RowBinaryWithNamesAndTypes` rows, or None when it has no whole header."""
    with open(path, "rb") as rows_file:
        head = rows_file.read(1 << 20)
    try:
        names, types, _ = parse_names_and_types(head)
    except (IndexError, UnicodeDecodeError):
        return None
    return names, types


def without_low_cardinality(type_name: str) -> str:
    """`type_name` with every `LowCardinality(T)` in it replaced by `T`."""
    marker = "LowCardinality("
    while (start := type_name.find(marker)) >= 0:
        depth, position, quoted = 1, start + len(marker), False
        while depth and position < len(type_name):
            char = type_name[position]
            if quoted:
                if char == "\\":
                    position += 1
                elif char == "'":
                    quoted = False
            elif char == "'":
                quoted = True
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            position += 1
        if depth:
            return type_name
        inner = type_name[start + len(marker) : position - 1]
        type_name = type_name[:start] + inner + type_name[position:]
    return type_name


# === Users ===


@dataclass(frozen=True)
class User:
    name: str
    password_sha256: str  # hex digest of the password; empty password included
    readonly: bool = False

    def accepts(self, password: str) -> bool:
        digest = hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(digest, self.password_sha256)


DEFAULT_USER = User("default", hashlib.sha256(b"").hexdigest())


def load_users(path: str | None) -> dict[str, User]:
    """Reads the users file, a TOML document such as:

        [users.analyst]
        password = "secret"            # or password_sha256_hex = "..."
        readonly = true

    `default` (empty password, read-write) exists unless the file redefines it.
    """
    users = {DEFAULT_USER.name: DEFAULT_USER}
    if not path:
        return users
    with open(path, "rb") as file:
        document = tomllib.load(file)
    for name, entry in document.get("users", {}).items():
        if "password_sha256_hex" in entry:
            digest = str(entry["password_sha256_hex"]).lower()
        else:
            digest = hashlib.sha256(str(entry.get("password", "")).encode()).hexdigest()
        users[name] = User(name, digest, bool(entry.get("readonly", False)))
    return users


# === Request bodies ===


class BodyReader:
    """Reads one request body off the socket, framed by Content-Length or
    chunked transfer encoding, so that a keep-alive connection is always left
    at the start of the next request. Reading can stop and resume (`drain`
    after a failure picks up where `pieces` stopped)."""

    def __init__(self, stream, headers):
        self._stream = stream
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._remaining = 0  # of the body, or of the current chunk when chunked
        self.finished = False
        if not self._chunked:
            length = headers.get("Content-Length") or "0"
            if not length.isdigit():
                self.finished = True
                raise broken_body(f"Invalid Content-Length: {length!r}")
            self._remaining = int(length)
            self.finished = self._remaining == 0

    def pieces(self) -> Iterator[bytes]:
        while not self.finished:
            if self._chunked and self._remaining == 0:
                self._start_chunk()
                continue
            piece = self._stream.read(min(self._remaining, READ_PIECE_SIZE))
            if not piece:
                raise broken_body("Request body ended early")
            self._remaining -= len(piece)
            if self._remaining == 0:
                if self._chunked:
                    self._end_chunk()
                else:
                    self.finished = True
            yield piece

    def drain(self) -> None:
        """Discards what is left of the body."""
        for _ in self.pieces():
            pass

    def _start_chunk(self) -> None:
        size_line = self._stream.readline(1024)
        if not size_line.endswith(b"\n"):
            raise broken_body("Malformed chunk size line in request body")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            self._remaining = int(size_text, 16)
        except ValueError:
            raise broken_body(f"Malformed chunk size {size_text!r} in request body") from None
        if self._remaining == 0:
            self._skip_trailers()
            self.finished = True

    def _end_chunk(self) -> None:
        if self._stream.readline(1024) not in (b"\r\n", b"\n"):
            raise broken_body("Missing CRLF after a chunk in request body")

    def _skip_trailers(self) -> None:
        while True:
            line = self._stream.readline(8192)
            if not line:
                raise broken_body("Request body ended inside chunk trailers")
            if not line.strip():
                return


def decode_content(pieces: Iterator[bytes], content_encoding: str) -> Iterator[bytes]:
    """Undoes HTTP `Content-Encoding` (gzip, deflate, lz4 frames)."""
    encoding = content_encoding.strip().lower()
    if encoding in {"", "identity"}:
        yield from pieces
        return
    if encoding in {"gzip", "deflate", "x-gzip"}:
        decompressor = zlib.decompressobj(wbits=47)  # gzip or zlib header
        feed, finish = decompressor.decompress, decompressor.flush
    elif encoding == "lz4":
        decompressor = lz4.frame.LZ4FrameDecompressor()
        feed, finish = decompressor.decompress, lambda: b""
    else:
        raise ClickHouseError(
            48, "NOT_IMPLEMENTED", f"Content-Encoding {content_encoding!r} is not supported here"
        )
    try:
        for piece in pieces:
            output = feed(piece)
            if output:
                yield output
        tail = finish()
    except (zlib.error, RuntimeError) as error:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decode request body: {error}")
    if tail:
        yield tail


def decompress_blocks(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Unpacks ClickHouse compressed blocks (`decompress=1`).

    Each block: 16-byte checksum (not verified), method byte, compressed size
    (u32 LE, counting the 9-byte method and sizes header), uncompressed size
    (u32 LE), then the compressed bytes.
    """
    pending = bytearray()
    for piece in pieces:
        pending += piece
        while True:
            block = take_block(pending)
            if block is None:
                break
            yield block
    if pending:
        raise ClickHouseError(
            271,
            "CANNOT_DECOMPRESS",
            f"Compressed request body ends inside a block ({len(pending)} bytes left)",
        )


def take_block(pending: bytearray) -> bytes | None:
    """Removes one complete block from `pending` and returns its contents, or
    returns None when `pending` does not hold a whole block yet."""
    header_end = BLOCK_CHECKSUM_SIZE + BLOCK_HEADER_SIZE
    if len(pending) < header_end:
        return None
    method = pending[BLOCK_CHECKSUM_SIZE]
    compressed_size, uncompressed_size = struct.unpack_from("<II", pending, BLOCK_CHECKSUM_SIZE + 1)
    if compressed_size < BLOCK_HEADER_SIZE:
        raise ClickHouseError(
            271, "CANNOT_DECOMPRESS", f"Invalid compressed block size {compressed_size}"
        )
    block_end = BLOCK_CHECKSUM_SIZE + compressed_size
    if len(pending) < block_end:
        return None
    payload = bytes(pending[header_end:block_end])
    del pending[:block_end]
    if method == BLOCK_METHOD_LZ4:
        try:
            return lz4.block.decompress(payload, uncompressed_size=uncompressed_size)
        except lz4.block.LZ4BlockError as error:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress LZ4 block: {error}")
    if method == BLOCK_METHOD_NONE:
        return payload
    raise ClickHouseError(
        271, "CANNOT_DECOMPRESS", f"Unsupported compression method 0x{method:02x} in request body"
    )


def multipart_fields(body: bytes, content_type: str) -> dict[str, str]:
    """Reads the text fields of a `multipart/form-data` body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise bad_request("multipart/form-data request without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, separator, value = part.partition(b"\r\n\r\n")
        if not separator:
            raise bad_request("Malformed multipart/form-data part")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            if value.endswith(b"\r\n"):
                value = value[:-2]
            fields[name.group(1).decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return fields


# === Engine ===


@dataclass
class QueryOutcome:
    body: bytes
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    elapsed_ns: int = 0

    def summary_header(self) -> str:
        fields = {
            "read_rows": self.read_rows,
            "read_bytes": self.read_bytes,
            "written_rows": self.written_rows,
            "written_bytes": self.written_bytes,
            "total_rows_to_read": self.read_rows,
            "result_rows": self.result_rows,
            "result_bytes": len(self.body),
            "elapsed_ns": self.elapsed_ns,
        }
        return json.dumps(
            {name: str(value) for name, value in fields.items()}, separators=(",", ":")
        )


class Engine:
    """The one chDB connection of this process; runs one query at a time."""

    def __init__(self, data_dir: str):
        os.makedirs(data_dir, exist_ok=True)
        self._connection = chdb.connect(data_dir)
        self._lock = threading.Lock()
        self._closed = False
        self.version = (
            self._connection.query("SELECT version()", "TabSeparated").bytes().decode().strip()
        )

    def run(
        self,
        sql: str,
        *,
        database: str,
        settings: dict[str, str],
        params: dict[str, str],
        output_format: str,
    ) -> QueryOutcome:
        """Runs `sql` in `database` with `settings` applied for this query only."""
        if output_format.lower() in PYTHON_OBJECT_FORMATS:
            raise ClickHouseError(73, "UNKNOWN_FORMAT", f"Unknown format {output_format}")
        with self._lock:
            if self._closed:
                raise ClickHouseError(
                    210, "NETWORK_ERROR", "Server is shutting down", close_connection=True
                )
            self._call(f"USE {quote_identifier(database)}")
            applied = []
            try:
                for name, value in settings.items():
                    self._call(f"SET {name} = {quote_literal(value)}")
                    applied.append(name)
                result = self._call(sql, output_format, params)
            finally:
                self._reset_settings(applied)
        return QueryOutcome(
            body=result.bytes(),
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            elapsed_ns=int(result.elapsed() * 1e9),
        )

    def close(self) -> None:
        """Waits for the running query, then closes the engine."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()

    def _call(self, sql: str, output_format: str = "TabSeparated", params: dict | None = None):
        try:
            return self._connection.query(sql, output_format, params=params or {})
        except Exception as error:  # chDB raises ChdbError (a RuntimeError)
            raise ClickHouseError.from_engine(error) from None

    def _reset_settings(self, names: list[str]) -> None:
        for name in names:
            try:
                self._connection.query(f"SET {name} = DEFAULT", "TabSeparated")
            except Exception as error:
                log.error("could not reset setting %s after a query: %s", name, error)


# === Requests ===


@dataclass
class QueryRequest:
    """A query request after authentication and parameter parsing."""

    user: User
    database: str = "default"
    default_format: str = "TabSeparated"
    query_id: str = ""
    read_only: bool = False
    decompress: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def split_parameters(parameters: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Separates engine settings from `param_*` query parameters."""
    settings, params = {}, {}
    for name, value in parameters.items():
        if name.startswith("param_"):
            params[name[len("param_") :]] = value
        elif name not in TRANSPORT_PARAMETERS:
            if not SETTING_NAME.match(name):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
            settings[name] = value
    return settings, params


class FrontHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests, one at a time, keep-alive included."""

    protocol_version = "HTTP/1.1"
    server_version = "chfront"
    server: "FrontServer"
    logged_query: str = ""  # the query as far as it is known, for the log line
    logged_insert: str = ""  # for an insert: its rows' size and where the time went
    # Small replies would otherwise wait on the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.answer("GET")

    def do_POST(self) -> None:
        self.answer("POST")

    def answer(self, method: str) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        parameters = dict(parse_qsl(url.query, keep_blank_values=True))
        self.logged_query = parameters.get("query", "")
        self.logged_insert = ""
        status = 500
        body = None
        with self.server.in_flight():
            try:
                body = BodyReader(self.rfile, self.headers)
                if url.path in OK_PATHS or (
                    url.path == "/" and method == "GET" and not self.logged_query
                ):
                    body.drain()
                    status = self.send_reply(
                        200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}
                    )
                elif url.path == "/":
                    request = self.query_request(method, parameters)
                    status = self.run_query(request, self.logged_query, body)
                else:
                    body.drain()
                    status = self.send_reply(
                        404,
                        f"There is no handle {url.path}\n".encode(),
                        {"Content-Type": "text/plain; charset=UTF-8"},
                    )
            except ClickHouseError as error:
                status = self.send_failure(error, body)
            except (ConnectionError, TimeoutError) as error:
                self.close_connection = True
                log.info("connection lost: %s", error)
            except Exception as error:
                log.exception("unexpected failure")
                failure = ClickHouseError(1001, "STD_EXCEPTION", f"{type(error).__name__}: {error}")
                status = self.send_failure(failure, body)
            finally:
                self.log_request_line(method, url.path, self.logged_query, started, status)

    # --- authentication and parameters ---

    def query_request(self, method: str, parameters: dict[str, str]) -> QueryRequest:
        user = self.authenticate(parameters)
        settings, params = split_parameters(parameters)
        readonly_parameter = parameters.get("readonly", "0") not in {"", "0"}
        return QueryRequest(
            user=user,
            database=parameters.get("database")
            or self.headers.get("X-ClickHouse-Database")
            or "default",
            default_format=(
                parameters.get("default_format")
                or self.headers.get("X-ClickHouse-Format")
                or "TabSeparated"
            ),
            query_id=parameters.get("query_id") or str(uuid.uuid4()),
            read_only=user.readonly or method == "GET" or readonly_parameter,
            decompress=parameters.get("decompress", "0") not in {"", "0"},
            settings=settings,
            params=params,
        )

    def authenticate(self, parameters: dict[str, str]) -> User:
        name, password = self.credentials(parameters)
        user = self.server.users.get(name)
        if user is None or not user.accepts(password):
            raise ClickHouseError(
                516,
                "AUTHENTICATION_FAILED",
                f"{name}: Authentication failed: password is incorrect, "
                "or there is no user with such name",
            )
        return user

    def credentials(self, parameters: dict[str, str]) -> tuple[str, str]:
        if "X-ClickHouse-User" in self.headers:
            return self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key", "")
        if "user" in parameters:
            return parameters["user"], parameters.get("password", "")
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            except ValueError:
                raise bad_request("Malformed Basic authorization header") from None
            name, _, password = decoded.partition(":")
            return name, password
        return "default", parameters.get("password", "")

    # --- queries ---

    def run_query(self, request: QueryRequest, query_param: str, body: BodyReader) -> int:
        """Runs the request's query and answers it; returns the HTTP status."""
        pieces = decode_content(body.pieces(), self.headers.get("Content-Encoding", ""))
        if request.decompress:
            pieces = decompress_blocks(pieces)

        # As in ClickHouse, the query is the `query` parameter, a newline, then
        # the body. SQL is scanned as Latin-1 so that offsets are byte offsets.
        head = query_param.encode("utf-8") + b"\n" if query_param else b""

        # The usual insert: the statement in the URL, the rows in the body.
        if head:
            statement = analyse(head.decode("latin-1"))
            if statement.insert_format and statement.data_start == len(head):
                self.check_allowed(request, statement)
                outcome = self.insert_rows(request, statement, head, pieces)
                return self.send_outcome(request, outcome, statement)

        sql = head + read_all(pieces)
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            fields = multipart_fields(sql[len(head) :], content_type)
            for name, value in fields.items():
                if name.startswith("param_"):
                    request.params[name[len("param_") :]] = value
            sql = head + fields.get("query", "").encode("utf-8")

        self.logged_query = sql[:200].decode("utf-8", "replace")
        statement = analyse(sql.decode("latin-1"))
        if statement.insert_format:
            self.logged_query = sql[: statement.data_start].decode("utf-8", "replace")
        self.check_allowed(request, statement)
        if statement.insert_format:
            outcome = self.insert_rows(request, statement, sql, iter(()))
        elif statement.kind == "SET":
            # Without sessions a SET has no lasting effect in ClickHouse either.
            outcome = QueryOutcome(body=b"")
        else:
            outcome = self.server.engine.run(
                sql.decode("utf-8", "replace"),
                database=request.database,
                settings=request.settings,
                params=request.params,
                output_format=request.default_format,
            )
        return self.send_outcome(request, outcome, statement)

    def check_allowed(self, request: QueryRequest, statement: Statement) -> None:
        if statement.into_outfile:
            raise ClickHouseError(48, "NOT_IMPLEMENTED", "INTO OUTFILE is not allowed over HTTP")
        if request.read_only and statement.kind not in READ_ONLY_STATEMENTS:
            raise ClickHouseError(
                164, "READONLY", f"{request.user.name}: Cannot execute query in readonly mode"
            )

    def insert_rows(
        self, request: QueryRequest, statement: Statement, sql: bytes, more_rows: Iterator[bytes]
    ) -> QueryOutcome:
        """Spools an insert's rows (those inline in `sql`, then `more_rows`) to
        a temporary file and loads them with `INSERT ... SELECT * FROM file()`."""
        insert_head = sql[: statement.insert_head_end].decode("utf-8", "replace").rstrip()
        descriptor, path = tempfile.mkstemp(prefix="chfront-insert-", suffix=".rows")
        try:
            started = time.monotonic()
            with os.fdopen(descriptor, "wb") as rows_file:
                rows_file.write(sql[statement.data_start :])
                for piece in more_rows:
                    rows_file.write(piece)
                size = rows_file.tell()
            spooled = time.monotonic()
            self.logged_insert = f"{size} bytes of rows received in {(spooled - started) * 1000:.1f}ms"
            if size == 0:
                # ClickHouse accepts an insert without rows; file() would not.
                return QueryOutcome(body=b"")
            # Deduplicate by content as a direct insert would (INSERT SELECT
            # otherwise skips it); the request may override this.
            settings = {
                "deduplicate_insert_select": "enable_even_for_bad_queries",
                **request.settings,
            }
            arguments = [quote_literal(path), quote_literal(statement.insert_format)]
            structure = self.plain_structure(statement.insert_format, path, settings)
            if structure is not None:
                arguments.append(quote_literal(structure))
                settings["input_format_with_types_use_header"] = "0"
            source = f"file({', '.join(arguments)})"
            outcome = self.server.engine.run(
                f"{insert_head} SELECT * FROM {source}",
                database=request.database,
                settings=settings,
                params=request.params,
                output_format=request.default_format,
            )
            self.logged_insert += f", stored in {(time.monotonic() - spooled) * 1000:.1f}ms"
            return outcome
        finally:
            os.unlink(path)

    @staticmethod
    def plain_structure(insert_format: str, path: str, settings: dict[str, str]) -> str | None:
        """For `RowBinaryWithNamesAndTypes` rows with LowCardinality columns:
        the header's columns with those read as their inner types.

        RowBinary writes a LowCardinality value as its inner type, and the
        engine's RowBinary reader adds each such value to its column's
        dictionary one row at a time; read as plain values, the insert turns
        them into LowCardinality a whole column at once. Into the analytics
        events table (nine LowCardinality columns) that made an insert of
        100,000 rows take 170 to 290 ms rather than 310 to 480 ms. None when
        nothing is to be gained or the request set how headers are used."""
        if insert_format != "RowBinaryWithNamesAndTypes":
            return None
        if "input_format_with_types_use_header" in settings:
            return None
        header = read_names_and_types(path)
        if header is None or not any("LowCardinality(" in kind for kind in header[1]):
            return None
        names, types = header
        return ", ".join(
            f"{quote_identifier(name)} {without_low_cardinality(kind)}"
            for name, kind in zip(names, types)
        )

    # --- responses ---

    def send_outcome(
        self, request: QueryRequest, outcome: QueryOutcome, statement: Statement
    ) -> int:
        output_format = statement.output_format or request.default_format
        headers = {
            "Content-Type": content_type_for(output_format),
            "X-ClickHouse-Format": output_format,
            "X-ClickHouse-Query-Id": request.query_id,
            "X-ClickHouse-Summary": outcome.summary_header(),
        }
        return self.send_reply(200, outcome.body, headers)

    def send_failure(self, error: ClickHouseError, body: BodyReader | None) -> int:
        """Answers with ClickHouse's error format, after reading the rest of
        the body so that the connection can serve the next request."""
        if error.close_connection or body is None:
            self.close_connection = True
        else:
            try:
                body.drain()
            except ClickHouseError:
                self.close_connection = True
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
        }
        status = error.http_status()
        try:
            return self.send_reply(status, error.body(self.server.engine.version), headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return status

    def send_reply(self, status: int, payload: bytes, headers: dict[str, str]) -> int:
        if self.server.stopping:
            self.close_connection = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-ClickHouse-Server-Display-Name", self.server.display_name)
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        return status

    # --- logging ---

    def log_request_line(
        self, method: str, path: str, query: str, started: float, status: int
    ) -> None:
        head = " ".join(query.split())
        if len(head) > 100:
            head = head[:100] + "..."
        elapsed_ms = (time.monotonic() - started) * 1000
        detail = f" ({self.logged_insert})" if self.logged_insert else ""
        log.info("%s %s %d %.1fms %s%s", method, path, status, elapsed_ms, json.dumps(head), detail)

    def log_request(self, code="-", size="-") -> None:
        """Silences the base class's own request line (see `log_request_line`)."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        log.warning("%s: %s", self.address_string(), format % args)


def read_all(pieces: Iterator[bytes]) -> bytes:
    collected = bytearray()
    for piece in pieces:
        collected += piece
        if len(collected) > MAX_SQL_BODY_SIZE:
            raise ClickHouseError(
                202,
                "QUERY_IS_TOO_LARGE",
                "Query with inline data is larger than 256 MiB",
                close_connection=True,
            )
    return bytes(collected)


def content_type_for(output_format: str) -> str:
    lower = output_format.lower()
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


# === Server ===


class FrontServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once, and a count
    of requests in flight so that shutdown can wait for them."""

    daemon_threads = True

    def __init__(self, address, engine: Engine, users: dict[str, User], max_connections: int):
        super().__init__(address, FrontHandler)
        self.engine = engine
        self.users = users
        self.display_name = f"chfront-{os.uname().nodename}"
        self.stopping = False
        self._slots = threading.BoundedSemaphore(max_connections)
        self._requests = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def in_flight(self):
        with self._idle:
            self._requests += 1
        try:
            yield
        finally:
            with self._idle:
                self._requests -= 1
                self._idle.notify_all()

    def wait_for_requests(self, timeout_s: float) -> bool:
        """Waits until no request is being answered; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._requests == 0, timeout=timeout_s)

    def process_request(self, request, client_address):
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ClickHouse HTTP interface over an in-process chDB engine."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8123, help="port to listen on (default 8123)")
    parser.add_argument(
        "--data", default="var/clickhouse", help="engine data directory (default var/clickhouse)"
    )
    parser.add_argument("--users", help="TOML users file (see load_users); default: only `default`")
    parser.add_argument("--pidfile", help="write the process id here while running")
    parser.add_argument(
        "--max-connections", type=int, default=64, help="connections served at once (default 64)"
    )
    parser.add_argument(
        "--idle-timeout-s",
        type=float,
        default=300,
        help="close a connection idle or stalled this long, in seconds (default 300)",
    )
    parser.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=60,
        help="on SIGTERM, wait this long for running requests, in seconds (default 60)",
    )
    return parser.parse_args(argv)


def serve(arguments: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    users = load_users(arguments.users)
    engine = Engine(arguments.data)
    FrontHandler.timeout = arguments.idle_timeout_s
    server = FrontServer((arguments.host, arguments.port), engine, users, arguments.max_connections)

    def stop(signum, _frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        server.stopping = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if arguments.pidfile:
        with open(arguments.pidfile, "w") as pidfile:
            pidfile.write(f"{os.getpid()}\n")
    host, port = server.server_address[:2]
    data_dir = os.path.abspath(arguments.data)
    log.info("listening on %s:%d, data in %s, engine %s", host, port, data_dir, engine.version)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if not server.wait_for_requests(timeout_s=arguments.shutdown_timeout_s):
            log.warning(
                "requests still running after %ss; closing anyway", arguments.shutdown_timeout_s
            )
        engine.close()
        if arguments.pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(arguments.pidfile)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(serve(parse_arguments(sys.argv[1:])))
