"""The DuckDB warehouse: one file, tables named after the assets and a lineage log.

Design rules:
- connections are short-lived and retried: DuckDB lets one process write a file, and an analyst's query or the
  scoring API must never hold it for long nor break because a run holds it for a moment;
- every write is one transaction (table + lineage row together), so a reader sees the old table or the new one,
  never half of one, and a failure leaves the previous good table in place;
- data moves in bulk (DataFrame/Arrow scans), never row by row.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LINEAGE_DDL = """
CREATE TABLE IF NOT EXISTS lineage (
    run_id VARCHAR,
    asset_key VARCHAR,
    upstream_assets VARCHAR[],
    row_count BIGINT,
    input_file_sha256 VARCHAR,
    code_version VARCHAR,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ
)
"""


TablePart = pd.DataFrame | pa.Table | pa.RecordBatch  # a whole table, or one part of it (Warehouse.write_parts)


class WarehouseBusy(RuntimeError):
    """The warehouse file stayed locked by another process for longer than the retry budget."""


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be opened at all (a directory, a read-only folder, no space): said at once."""


# DuckDB's messages for problems no amount of waiting fixes (a lock conflict is the only one worth retrying).
_PERMANENT = (
    ("Is a directory", "is a directory, not a DuckDB file"),
    ("Permission denied", "permission denied (is the folder read-only?)"),
    ("Read-only file system", "is on a read-only file system"),
    ("No space left on device", "no space left on the device"),
    ("File too large", "the file may not grow (file-size limit)"),
    ("not a valid DuckDB database file", "is not a DuckDB database file"),
)


LOCK_WAIT_ENV = "SEGMENTATION_LOCK_WAIT"
# DuckDB's own memory (its buffer pool; beyond it, work spills to a temporary folder beside the file). DuckDB's default
# is 80% of the machine, which next to a run's own arrays at ten million customers is more than the machine has.
MEMORY_ENV, DEFAULT_MEMORY = "SEGMENTATION_DUCKDB_MEMORY", "3GB"


def lock_wait_seconds() -> float:
    """How long a connection waits for another process to release the file: $SEGMENTATION_LOCK_WAIT, else 30 s."""
    try:
        return float(os.environ.get(LOCK_WAIT_ENV) or 30.0)
    except ValueError:
        return 30.0


def memory_limit() -> str:
    """DuckDB's memory limit: $SEGMENTATION_DUCKDB_MEMORY (an amount such as ``8GB``), else 3GB."""
    value = (os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY).strip()
    if not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?\s*(?:[KMGT]i?B|B)", value, flags=re.IGNORECASE):
        raise WarehouseUnavailable(f"setting {MEMORY_ENV}: {value!r} is not an amount of memory (e.g. 8GB)")
    return value


def unavailable_reason(error: BaseException) -> str | None:
    """The plain reason a DuckDB error is permanent, or None when it may be a passing lock."""
    text = str(error)
    return next((reason for needle, reason in _PERMANENT if needle in text), None)


@dataclass
class LineageRecord:
    run_id: str
    asset_key: str
    upstream_assets: list[str]
    input_file_sha256: str | None
    code_version: str
    started_at: datetime
    row_count: int | None = 0  # None: the rows written to the table of the asset's name (Warehouse.write_parts)
    ended_at: datetime | None = None


@dataclass
class Warehouse:
    """A DuckDB warehouse file. Cheap to construct; holds no connection between calls."""

    path: Path
    retry_seconds: float = field(default_factory=lambda: lock_wait_seconds())
    schema: str | None = None  # where this store writes (a run's snapshot); None: main
    search_path: tuple[str, ...] = ()  # where unqualified names are looked up, in order; () = main
    _tables_ready: bool = field(default=False, repr=False)
    _pinned: duckdb.DuckDBPyConnection | None = field(default=None, repr=False, compare=False)
    _writing: duckdb.DuckDBPyConnection | None = field(default=None, repr=False, compare=False)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.schema:
            _check_identifier(self.schema)
        for name in self.search_path:
            _check_identifier(name)

    def check_usable(self) -> None:
        """Say at once, in one line, why the warehouse cannot be written (a directory, a read-only folder)."""
        if self.path.is_dir():
            raise WarehouseUnavailable(f"warehouse {self.path} is a directory, not a DuckDB file")
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
            raise WarehouseUnavailable(f"warehouse folder {folder} is not writable")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise WarehouseUnavailable(f"warehouse {self.path} is read-only")

    @contextmanager
    def reading(self) -> Iterator[Warehouse]:
        """One read-only connection for a burst of reads (the report runs tens of queries; opening the file costs
        ~20 ms each time): read-only :meth:`connect` calls reuse it until the block ends."""
        with self.connect(read_only=True) as connection:
            self._pinned = connection
            try:
                yield self
            finally:
                self._pinned = None

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, retried with jittered backoff while another process holds the file."""
        if read_only and self._pinned is not None:
            yield self._pinned
            return
        if read_only and self._writing is not None:  # a read while write_parts runs: beside its connection
            with self._write_lock:  # not while write_parts' writer thread is using that connection
                cursor = self._writing.cursor()
            try:
                if self.search_path:
                    cursor.execute(f"SET search_path = '{','.join(self.search_path)}'")
                yield cursor
            finally:
                cursor.close()
            return
        if not read_only:
            self.check_usable()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():  # not a lock: nothing to wait for
            raise FileNotFoundError(f"no warehouse at {self.path}: run the pipeline first (segmentation run)")
        elif self.path.is_dir():
            raise WarehouseUnavailable(f"warehouse {self.path} is a directory, not a DuckDB file")
        config = {"memory_limit": memory_limit()}
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.02
        while True:
            try:
                connection = duckdb.connect(str(self.path), read_only=read_only, config=config)
                break
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                reason = unavailable_reason(error)
                if reason is not None:
                    raise WarehouseUnavailable(f"warehouse {self.path}: {reason}") from None
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"warehouse {self.path} stayed locked by another process for {self.retry_seconds:.0f} s "
                        "(a run or an open connection); try again when it is done"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
        try:
            if self.search_path:
                connection.execute(f"SET search_path = '{','.join(self.search_path)}'")
            if self.schema and not read_only:
                connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            yield connection
        finally:
            connection.close()

    def qualified(self, name: str) -> str:
        """A table name in this store's schema (quoted)."""
        _check_identifier(name)
        return f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'

    def exists(self) -> bool:
        return self.path.exists()

    def _ensure_tables(self, connection: duckdb.DuckDBPyConnection) -> None:
        if not self._tables_ready:
            connection.execute(LINEAGE_DDL.replace("lineage (", f"{self.qualified('lineage')} (", 1))
            self._tables_ready = True

    # -- writing --
    def write_tables(
        self,
        tables: Mapping[str, TablePart],
        *,
        lineage: LineageRecord | Sequence[LineageRecord] | None = None,
        append: Sequence[str] = (),
        also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        """Replace (or, for names in ``append``, append to) several tables and record lineage (one record per asset
        written), all in ONE transaction: readers see all of it or none of it. ``also`` runs further statements
        inside that transaction (e.g. the model registry's status update)."""
        for name in tables:
            _check_identifier(name)
        self.write_parts([tables], lineage=lineage, append=append, also=also)

    def write_parts(
        self,
        parts: Iterable[Mapping[str, TablePart]],
        *,
        lineage: LineageRecord | Sequence[LineageRecord] | None = None,
        append: Sequence[str] = (),
        also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> dict[str, int]:
        """:meth:`write_tables` for tables that come in parts (a step that scores customers a chunk at a time):
        ``parts`` yields {table: part} mappings, each part (a DataFrame, Arrow table or record batch) written as it
        comes, so no table needs to be whole in memory. A table's first part replaces it (or is appended, for names
        in ``append``), its later parts are appended; all of it, and lineage, in ONE transaction. A lineage record
        whose ``row_count`` is None gets the rows written to the table of its asset's name. While ``parts`` is
        consumed, reads of this store (:meth:`query`, :meth:`batches`) go through cursors of the writing connection
        and see what was committed before the write began.

        A part is written by a writer thread while ``parts`` builds the next one (DuckDB compresses and stores
        without Python's lock, so building and writing share the two cores); at most one part is in flight, so
        memory holds two parts at most. Returns the rows written per table."""
        written: dict[str, int] = {}

        def write(chunk: Mapping[str, TablePart]) -> None:
            with self._write_lock:
                for name, part in chunk.items():
                    self._write_part(connection, name, part, first=name not in written, append=name in append)
                    written[name] = written.get(name, 0) + len(part)

        with self.connect() as connection:
            self._ensure_tables(connection)
            # The writer thread and the step's own work share the cores: DuckDB writes on one thread while Python
            # builds the next part (with DuckDB's default of a thread per core beside Python's, the 1M scoring step
            # measured 21-31 s from run to run; with one, 24-25 s). From the first part written on, not before:
            # building the first part may read (the scoring step's sorted read of every customer) with all cores.
            # Reset after the commit.
            connection.execute("BEGIN TRANSACTION")
            try:
                self._writing = connection
                try:
                    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse-writer") as writer:
                        pending: Future[None] | None = None
                        for chunk in parts:
                            for name in chunk:
                                _check_identifier(name)
                            if pending is not None:
                                pending.result()
                            else:
                                connection.execute("SET threads = 1")
                            pending = writer.submit(write, chunk)
                            chunk = None  # the writer holds it; the next part may be built meanwhile
                        if pending is not None:
                            pending.result()
                finally:
                    self._writing = None
                if also is not None:
                    also(connection)
                records = [lineage] if isinstance(lineage, LineageRecord) else list(lineage or [])
                for record in records:
                    record.ended_at = datetime.now().astimezone()
                    if record.row_count is None:
                        record.row_count = written.get(record.asset_key, 0)
                    connection.execute(
                        f"INSERT INTO {self.qualified('lineage')} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            record.run_id,
                            record.asset_key,
                            record.upstream_assets,
                            record.row_count,
                            record.input_file_sha256,
                            record.code_version,
                            record.started_at,
                            record.ended_at,
                        ],
                    )
                connection.execute("COMMIT")
                connection.execute("RESET threads")
            except BaseException as error:
                with contextlib.suppress(duckdb.Error):
                    connection.execute("ROLLBACK")
                reason = unavailable_reason(error) if isinstance(error, duckdb.Error | OSError) else None
                if reason is not None:  # a full disk or a file-size limit: one plain line
                    raise WarehouseUnavailable(f"warehouse {self.path}: {reason}; nothing was changed") from None
                raise
        return written

    def _write_part(self, connection: duckdb.DuckDBPyConnection, name: str, part: TablePart, *, first: bool,
                    append: bool) -> None:  # fmt: skip
        target = self.qualified(name)
        if append:
            _with_incoming(connection, part, lambda: connection.execute(
                f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM _incoming LIMIT 0"))  # fmt: skip
            _with_incoming(connection, part, lambda: add_missing_columns(connection, target, "_incoming"))
            _with_incoming(connection, part, lambda: connection.execute(
                f"INSERT INTO {target} BY NAME SELECT * FROM _incoming"))  # fmt: skip
        elif first:
            _with_incoming(connection, part, lambda: connection.execute(
                f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM _incoming"))  # fmt: skip
        else:
            _with_incoming(connection, part, lambda: connection.execute(
                f"INSERT INTO {target} BY NAME SELECT * FROM _incoming"))  # fmt: skip

    # -- reading --
    def table_names(self) -> set[str]:
        """Tables and views this store reads (in its search path; main when it has none)."""
        if not self.exists():
            return set()
        schemas = list(self.search_path or ("main",))
        with self.connect(read_only=True) as connection:
            rows = connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema IN "
                f"({', '.join('?' * len(schemas))})", schemas
            ).fetchall()
        return {row[0] for row in rows}

    def batches(self, sql: str, params: Sequence[object] = (), *, rows: int) -> Iterator[pa.RecordBatch]:
        """The result of ``sql`` streamed as Arrow record batches of at most ``rows`` rows (a table larger than
        memory read a chunk at a time; the connection stays open until the iterator is exhausted or closed)."""
        with self.connect(read_only=True) as connection:
            yield from connection.sql(sql, params=list(params) or None).to_arrow_reader(rows)

    def arrow(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """The result of ``sql`` as one Arrow table (columns kept compact: no Python object per value)."""
        with self.connect(read_only=True) as connection:
            return connection.sql(sql, params=list(params) or None).to_arrow_table()

    def read_table(self, name: str, *, where: str | None = None, params: Sequence[object] = ()) -> pd.DataFrame:
        _check_identifier(name)
        sql = f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else "")
        with self.connect(read_only=True) as connection:
            return connection.execute(sql, list(params)).df()

    def query(self, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
        with self.connect(read_only=True) as connection:
            return connection.execute(sql, list(params)).df()


def _with_incoming(connection: duckdb.DuckDBPyConnection, part: TablePart, statement: Callable[[], object]) -> None:
    """Run ``statement`` with ``part`` readable as ``_incoming``. An Arrow part is handed over as a reader: DuckDB
    keeps a registered Arrow table's text buffers alive until the transaction ends (every part of a table written
    in parts would stay in memory), a reader's it copies."""
    if isinstance(part, pa.RecordBatch):
        part = pa.Table.from_batches([part])
    source = pa.RecordBatchReader.from_batches(part.schema, part.to_batches()) if isinstance(part, pa.Table) else part
    connection.register("_incoming", source)
    try:
        statement()
    finally:
        connection.unregister("_incoming")


def add_missing_columns(connection: duckdb.DuckDBPyConnection, target: str, source: str) -> None:
    """Columns of ``source`` that ``target`` lacks are added to it, and a column ``source`` holds as text becomes
    text in ``target`` (later versions add columns and may widen one to text, e.g. customer ids; never drop)."""
    existing = {row[0]: row[1] for row in connection.execute(f"DESCRIBE {target}").fetchall()}
    for column, dtype, *_ in connection.execute(f"DESCRIBE {source}").fetchall():
        if column not in existing:
            connection.execute(f'ALTER TABLE {target} ADD COLUMN "{column}" {dtype}')
        elif dtype == "VARCHAR" and existing[column] != "VARCHAR":
            connection.execute(f'ALTER TABLE {target} ALTER "{column}" TYPE VARCHAR')


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid table name: {name!r}")
