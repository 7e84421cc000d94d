"""`segmentation sql`: SQL over the warehouse for analysts, on the DuckDB library the pipeline writes with.

The ``duckdb`` command-line tool is released on its own schedule and may not read the file format of the library
the project installs, so analysts' SQL goes through the library itself: the versions always match.

Every input runs on its own short-lived read-only connection (:meth:`Warehouse.connect`, retried while a run holds
the file, up to ``SEGMENTATION_LOCK_WAIT`` seconds), closed before the prompt waits for the next one: an open
prompt never keeps a run from writing. So temporary tables and ``SET`` last for one input only.

Output formats: ``table`` draws the first ``max_rows`` rows with DuckDB's own box renderer (the duckdb CLI's), and
says so when there were more; in a terminal DuckDB fits the table to its width (cutting a long value with ``…`` and
naming the columns it leaves out in its footer), elsewhere nothing is cut. ``csv`` writes every row as CSV (each
value as DuckDB writes it as text; NULL is an empty field), ``json`` an array of objects (DuckDB's ``to_json``:
dates and times as text, numbers and decimals as numbers, lists and structs nested; NaN and infinities as null).
Several statements run in order: ``table`` prints each result, ``csv`` and ``json`` the last one's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import duckdb
import pyarrow.csv as pa_csv

from segmentation_pipeline.warehouse import decisions
from segmentation_pipeline.warehouse.store import Warehouse, WarehouseBusy, WarehouseUnavailable

FORMATS = ("table", "csv", "json")
DEFAULT_MAX_ROWS = 40
BATCH_ROWS = 10_000
PROMPT, CONTINUATION = "sql> ", "...> "
QUIT_COMMANDS = (".quit", ".exit", ".q")
HELP = """Statements end with ';' and may span lines. Each input runs on its own read-only connection.
  .tables   the tables and views (with their descriptions)
  .help     this text
  .quit     leave (or Ctrl-D)"""
TABLES_QUERY = """
SELECT table_name AS name, 'TABLE' AS kind, coalesce(comment, '') AS description FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
UNION ALL
SELECT view_name, 'VIEW', coalesce(comment, '') FROM duckdb_views()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
ORDER BY name
"""


class SqlError(RuntimeError):
    """A statement DuckDB refused or failed: one line."""


def error_line(error: BaseException) -> str:
    """DuckDB's message on one line: its first line and any hint ("Did you mean …"), without the echo of the
    statement and the caret under it."""
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(kept) or type(error).__name__


@dataclass(frozen=True)
class Output:
    """Where and how results are written."""

    stream: TextIO
    format: str = "table"
    max_rows: int = DEFAULT_MAX_ROWS
    width: int | None = None  # the table's width; None: unlimited (nothing cut)

    @classmethod
    def to(cls, stream: TextIO, format: str = "table", max_rows: int = DEFAULT_MAX_ROWS) -> Output:
        if format not in FORMATS:
            raise ValueError(f"format {format!r}: use one of {', '.join(FORMATS)}")
        if max_rows < 1:
            raise ValueError(f"max rows {max_rows}: give a number above 0")
        terminal = stream.isatty() if hasattr(stream, "isatty") else False
        width = shutil.get_terminal_size().columns if terminal else None
        return cls(stream=stream, format=format, max_rows=max_rows, width=width)


def run(warehouse: Warehouse, text: str, output: Output) -> int:
    """Run every statement of ``text`` in order on one read-only connection and write the results. Returns how
    many statements ran. Raises :class:`SqlError` (one line) when DuckDB refuses or fails one; the missing, locked
    or unreadable warehouse errors of :meth:`Warehouse.connect` pass through."""
    with warehouse.connect(read_only=True) as connection:
        # The API's decisions as they are on disk now (a file written since the last publication included): this
        # connection's own api_decisions, over the decision log beside the warehouse.
        decisions.create_decisions_view(connection, decisions.folder_for(warehouse.path))
        try:
            statements = connection.extract_statements(text)
        except duckdb.Error as error:
            raise SqlError(error_line(error)) from None
        if not statements:
            raise SqlError("no SQL statement to run")
        for position, statement in enumerate(statements, start=1):
            try:
                relation = connection.sql(statement.query)
                if not _returns_rows(statement) or relation is None:
                    continue
                if output.format == "table":
                    _write_table(connection, relation, output)
                elif position == len(statements):
                    (_write_csv if output.format == "csv" else _write_json)(relation, output.stream)
            except duckdb.Error as error:
                where = f"statement {position}: " if len(statements) > 1 else ""
                raise SqlError(where + error_line(error)) from None
        return len(statements)


def _returns_rows(statement: object) -> bool:
    return duckdb.ExpectedResultType.QUERY_RESULT in getattr(statement, "expected_result_type", ())


def _write_table(connection: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, output: Output) -> None:
    """The first ``max_rows`` rows in DuckDB's box; a line after it when rows were left out."""
    head = relation.limit(output.max_rows + 1).to_arrow_table()  # one run of the query, at most max_rows + 1 rows
    shown = connection.from_arrow(head.slice(0, output.max_rows))
    wide = 1 << 20  # no terminal: every column, every character; in one, DuckDB's own fitting to its width
    with contextlib.redirect_stdout(output.stream):
        shown.show(max_rows=output.max_rows, max_width=output.width or wide,
                   max_col_width=None if output.width else wide)  # fmt: skip
    if head.num_rows > output.max_rows:
        print(f"more than {output.max_rows} rows: the first {output.max_rows} are shown (--max-rows N shows more, "
              "--format csv or json shows every row)", file=output.stream)  # fmt: skip


def _write_csv(relation: duckdb.DuckDBPyRelation, stream: TextIO) -> None:
    """Every row as CSV under a header (repeated names numbered, as in json): each value as DuckDB writes it as
    text, NULL as an empty field; written by pyarrow's CSV writer a batch at a time."""
    reader = relation.query("_result", "SELECT COLUMNS(*)::VARCHAR FROM _result").to_arrow_reader(BATCH_ROWS)
    options = pa_csv.WriteOptions(quoting_style="needed")
    with pa_csv.CSVWriter(_TextSink(stream), reader.schema, write_options=options) as writer:
        for batch in reader:
            writer.write_batch(batch)


class _TextSink:
    """A binary file-like object over a text stream (pyarrow writes bytes; stdout and test captures take text)."""

    closed = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(bytes(data).decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


def _write_json(relation: duckdb.DuckDBPyRelation, stream: TextIO) -> None:
    """A JSON array of one object per row, from DuckDB's ``to_json``; NaN and infinities (not JSON) become null."""
    as_json = relation.query("_result", "SELECT to_json(_result)::VARCHAR FROM _result")
    first = True
    stream.write("[")
    for batch in as_json.to_arrow_reader(BATCH_ROWS):
        for text in batch.column(0).to_pylist():  # type: ignore[attr-defined]
            stream.write(("\n" if first else ",\n") + _valid_json(text))
            first = False
    stream.write("]\n" if first else "\n]\n")


def _valid_json(text: str) -> str:
    if "NaN" not in text and "Infinity" not in text:
        return text
    return json.dumps(json.loads(text, parse_constant=lambda _: None), ensure_ascii=False, separators=(",", ":"))


# --- the interactive prompt ---------------------------------------------------------------------------------------


def _complete(buffer: str) -> bool:
    """Whether the lines typed so far end a statement: a ';' at the end that is not inside a string or comment."""
    if not buffer.rstrip().endswith(";"):
        return False
    try:
        duckdb.extract_statements(buffer)
    except duckdb.ParserException as error:
        return "unterminated" not in str(error)  # inside a quoted string: keep reading; any other error: report it
    except duckdb.Error:
        return True
    return True


def interactive(
    warehouse: Warehouse,
    output: Output,
    *,
    read_line: Callable[[str], str] = input,
    errors: TextIO = sys.stderr,
    prompts: bool = True,
) -> int:
    """The read-only prompt: reads statements (ended by ';', over several lines if need be) until ``.quit`` or the
    end of input, runs each input with :func:`run` and reports a failure in one line. Returns how many inputs
    failed."""
    failed = 0
    buffer = ""
    while True:
        try:
            line = read_line((CONTINUATION if buffer else PROMPT) if prompts else "")
        except EOFError:
            if prompts:
                print(file=output.stream)
            break
        except KeyboardInterrupt:  # Ctrl-C at the prompt: forget the statement being typed
            print(file=output.stream)
            buffer = ""
            continue
        if not buffer and line.strip().lower() in QUIT_COMMANDS:
            break
        if not buffer and line.strip().startswith("."):
            command = line.strip().lower()
            if command == ".help":
                print(HELP, file=output.stream)
            elif command == ".tables":
                failed += _run_reported(warehouse, TABLES_QUERY, output, errors)
            else:
                print(f"error: unknown command {line.strip()} (.help lists them)", file=errors)
                failed += 1
            continue
        buffer += line + "\n"
        if not buffer.strip():
            buffer = ""
            continue
        if _complete(buffer):
            failed += _run_reported(warehouse, buffer, output, errors)
            buffer = ""
    if buffer.strip():  # input ended inside a statement: run what was typed
        failed += _run_reported(warehouse, buffer, output, errors)
    return failed


def _run_reported(warehouse: Warehouse, text: str, output: Output, errors: TextIO) -> int:
    """Run one input; a failure is one line on ``errors``. Returns 1 if it failed, else 0."""
    try:
        run(warehouse, text, output)
    except (SqlError, WarehouseBusy, WarehouseUnavailable, FileNotFoundError) as error:
        print(f"error: {error}", file=errors)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=errors)
        return 1
    output.stream.flush()
    return 0


def enable_line_editing() -> None:
    """Arrow keys and history at the prompt, where the standard library's readline exists."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (importing it is what makes input() edit lines)
