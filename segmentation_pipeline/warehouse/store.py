"""The DuckDB warehouse: one file, tables named after the assets and a lineage log.

Design rules:
- connections are short-lived and retried: DuckDB lets one process write a file, and an analyst's query or the
  scoring API must never hold it for long nor break because a run holds it for a moment;
- every write is one transaction (table + lineage row together), so a reader sees the old table or the new one,
  never half of one, and a failure leaves the previous good table in place;
- data moves in bulk (DataFrame/Arrow scans), never row by row.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

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


class WarehouseBusy(RuntimeError):
    """The warehouse file stayed locked by another process for longer than the retry budget."""


@dataclass
class LineageRecord:
    run_id: str
    asset_key: str
    upstream_assets: list[str]
    input_file_sha256: str | None
    code_version: str
    started_at: datetime
    row_count: int = 0
    ended_at: datetime | None = None


@dataclass
class Warehouse:
    """A DuckDB warehouse file. Cheap to construct; holds no connection between calls."""

    path: Path
    retry_seconds: float = 30.0
    _tables_ready: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, retried with jittered backoff while another process holds the file."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():  # not a lock: nothing to wait for
            raise FileNotFoundError(f"no warehouse at {self.path}: run the pipeline first (segmentation run)")
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.02
        while True:
            try:
                connection = duckdb.connect(str(self.path), read_only=read_only)
                break
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(f"warehouse {self.path} is locked by another process: {error}") from error
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
        try:
            yield connection
        finally:
            connection.close()

    def exists(self) -> bool:
        return self.path.exists()

    def _ensure_tables(self, connection: duckdb.DuckDBPyConnection) -> None:
        if not self._tables_ready:
            connection.execute(LINEAGE_DDL)
            self._tables_ready = True

    # -- writing --
    def write_tables(
        self,
        tables: dict[str, pd.DataFrame],
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
        with self.connect() as connection:
            self._ensure_tables(connection)
            connection.execute("BEGIN TRANSACTION")
            try:
                for name, frame in tables.items():
                    connection.register("_incoming", frame)
                    if name in append:
                        connection.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM _incoming LIMIT 0')
                        existing = {row[0] for row in connection.execute(f'DESCRIBE "{name}"').fetchall()}
                        for column, dtype, *_ in connection.execute("DESCRIBE _incoming").fetchall():
                            if column not in existing:  # new columns appear in later versions: add, never drop
                                connection.execute(f'ALTER TABLE "{name}" ADD COLUMN "{column}" {dtype}')
                        connection.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _incoming')
                    else:
                        connection.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
                    connection.unregister("_incoming")
                if also is not None:
                    also(connection)
                records = [lineage] if isinstance(lineage, LineageRecord) else list(lineage or [])
                for record in records:
                    record.ended_at = datetime.now().astimezone()
                    connection.execute(
                        "INSERT INTO lineage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    # -- reading --
    def table_names(self) -> set[str]:
        if not self.exists():
            return set()
        with self.connect(read_only=True) as connection:
            return {row[0] for row in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()}

    def read_table(self, name: str, *, where: str | None = None, params: Sequence[object] = ()) -> pd.DataFrame:
        _check_identifier(name)
        sql = f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else "")
        with self.connect(read_only=True) as connection:
            return connection.execute(sql, list(params)).df()

    def query(self, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
        with self.connect(read_only=True) as connection:
            return connection.execute(sql, list(params)).df()


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid table name: {name!r}")
