"""The API's decision log on disk: Parquet segments beside the warehouse, their compaction, retention and view.

The scoring API never writes the DuckDB warehouse (the pipeline is its one writer), so each rating it gives is
appended to Parquet files in a folder of its own (:func:`folder_for`, default ``<warehouse stem>_decisions/``
beside the warehouse file)::

    schema.parquet                     zero rows: every column a file can have, so that the view always binds
    segments/2026-11-30/<UTC time>-<pid>-<n>.parquet   written by the API, about one a second while it scores
    daily/2026-11-29.parquet           segments of a day, compacted

The API writes what costs it least: one row per request (``REQUEST_SCHEMA``: the body as received, the answer as
sent, time, ids, status, latency, rules version). The customer records (``SCHEMA``, one per customer rated or
refused) are derived from those rows by one query, :func:`records_sql`, which is THE definition of a record:
the view runs it at query time, :func:`compact` runs it to write the daily files (customer records, zstd: old
days are fast to query). The API's ``hash-only`` mode stores, instead of a body, its customers' input hashes
computed by the same SQL (:func:`input_hashes_sql`), so that no input text is ever stored. Files of customer
records (daily files, segments of the earlier version) are read as they are.

The input hash (``input_sha256``) is the SHA-256, in hex, of the customer's JSON object as DuckDB's
``json_extract`` writes it: the keys and values as sent, in the order sent, without whitespace, each number in its
shortest form (``1.50`` -> ``1.5``); ``input_json`` (mode ``full``) is that text. So the same customer sent alone,
in a batch or with other spacing has the same hash. A refused body that is not JSON is hashed as its bytes.

Every file appears whole or not at all: it is written under a hidden ``.*.tmp`` name and renamed
(:func:`write_segment`); the view's glob never matches a temporary name. :func:`compact` merges segments older
than a given age into their day's file and :func:`apply_retention` removes days older than the retention;
:func:`create_decisions_view` defines ``api_decisions`` in the warehouse over all of it. No HTTP, no Dagster.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from segmentation_pipeline.warehouse.views import literal

VIEW = "api_decisions"
DIR_ENV = "SEGMENTATION_DECISIONS_DIR"
MODE_ENV = "SEGMENTATION_DECISIONS"  # full | hash-only | off
ON_ERROR_ENV = "SEGMENTATION_DECISIONS_ON_ERROR"  # fail-open | fail-closed
FLUSH_ENV = "SEGMENTATION_DECISIONS_FLUSH_SECONDS"
COMPACT_AFTER_ENV = "SEGMENTATION_DECISIONS_COMPACT_AFTER"
RETENTION_ENV = "SEGMENTATION_DECISIONS_RETENTION"
MODES = ("full", "hash-only", "off")
ON_ERROR = ("fail-open", "fail-closed")
DEFAULT_FLUSH_SECONDS = 1.0
DEFAULT_COMPACT_AFTER = timedelta(days=1)
DEFAULT_RETENTION = timedelta(days=3650)  # as the rating history: record-keeping rules ask for five years or more

REASON = pa.struct([
    ("indicator", pa.string()), ("value", pa.float64()), ("segment_typical", pa.float64()),
    ("population_typical", pa.float64()), ("contribution", pa.float64()),
])  # fmt: skip
PROBLEM = pa.struct([("field", pa.string()), ("type", pa.string())])
SCHEMA = pa.schema(
    [
        ("decided_at", pa.timestamp("us", tz="UTC")),  # when the answer was ready
        ("request_id", pa.string()),  # also the answer's X-Request-ID header
        ("item", pa.int32()),  # the customer's position in the request (0 for a one-customer request)
        ("api_key_id", pa.string()),  # "key-" + 12 hex digits of the key's SHA-256; never the key; null without auth
        ("outcome", pa.string()),  # rated | refused
        ("http_status", pa.int16()),  # 200 | 422
        ("customer_id", pa.string()),  # as answered (refused: as sent when readable, else null)
        # SHA-256 (hex) of the customer's JSON object as DuckDB writes it (see the module's docstring; records_sql).
        ("input_sha256", pa.string()),
        ("input_json", pa.string()),  # that text (mode full, rated customers only); null otherwise
        ("risk_tier", pa.string()),
        ("segment_tier", pa.string()),
        ("tier_before_rules", pa.string()),
        ("rating_basis", pa.string()),
        ("risk_score", pa.float64()),
        ("distance_to_centroid", pa.float64()),
        ("cluster", pa.int32()),
        ("rule_ids", pa.list_(pa.string())),
        ("reasons", pa.list_(REASON)),  # the top indicators behind the tier, as answered
        ("model_version", pa.string()),
        ("policy_version", pa.string()),  # the version of the policy rules the model applies
        ("latency_ms", pa.float64()),  # from the request's arrival at the route to its answer being ready
        ("problems", pa.list_(PROBLEM)),  # refused: each field problem (field name and kind), never the value
    ]
)


# What the API writes: one row per REQUEST, as it already holds it (its body as received, its answer as sent),
# so that writing costs the scoring process almost nothing; the customer records are derived from it in SQL
# (:func:`records_sql`). Compacted daily files and segments of the earlier version hold customer records
# (SCHEMA). Both kinds are read together (``union_by_name``): a request row has no ``outcome``.
REQUEST_SCHEMA = pa.schema([
    SCHEMA.field("decided_at"), SCHEMA.field("request_id"), SCHEMA.field("api_key_id"), SCHEMA.field("http_status"),
    SCHEMA.field("latency_ms"), SCHEMA.field("policy_version"),
    ("request_body", pa.binary()),  # the body as received (bytes; not necessarily JSON for a 422)
    ("response_body", pa.binary()),  # the answer as sent (JSON)
    ("refused_ids", pa.list_(pa.string())),  # 422 only: each refused customer's id as the API reads ids, or null
    ("input_hashes", pa.list_(pa.string())),  # hash-only: each customer's input hash (input_hashes_sql), no body
    ("is_batch", pa.bool_()),  # hash-only: whether the body was {"customers": [...]} (it is not kept)
])  # fmt: skip
FILE_SCHEMA = pa.schema([*SCHEMA, *(field for field in REQUEST_SCHEMA if field.name not in SCHEMA.names)])

INPUT_HASH = "coalesce(input_sha256, sha256(input_json)) AS input_sha256"
# Columns whose values repeat (dictionary-encoded in the files); the others are mostly distinct.
_REPEATING = ["request_id", "api_key_id", "outcome", "risk_tier", "segment_tier", "tier_before_rules", "rating_basis",
              "model_version", "policy_version", "rule_ids.list.element", "reasons.list.element.indicator"]  # fmt: skip
# The fields of a rated customer's answer (the API's ScoreResultOut), and the type ``from_json`` reads it as: one
# parse of each answer into typed columns (extracting field by field would parse the text once a field).
_ANSWERED = ("customer_id", "cluster", "risk_tier", "segment_tier", "tier_before_rules", "rating_basis", "rule_ids",
             "distance_to_centroid", "risk_score", "model_version", "reasons")  # fmt: skip
_JSON_TYPES = {pa.string(): '"VARCHAR"', pa.float64(): '"DOUBLE"', pa.int32(): '"INTEGER"'}


def _json_type(kind: pa.DataType) -> str:
    if pa.types.is_list(kind):
        return f"[{_json_type(kind.value_type)}]"
    if pa.types.is_struct(kind):
        return "{" + ", ".join(f'"{field.name}": {_json_type(field.type)}' for field in kind) + "}"
    return _JSON_TYPES[kind]


_RESULT_FIELDS = ", ".join(f'"{name}": {_json_type(SCHEMA.field(name).type)}' for name in _ANSWERED)
_RESULT_JSON = "{" + _RESULT_FIELDS + "}"
# An answer is a batch's ({"model_version", "count", "results": [...]}) or one customer's (its fields): both read by
# one parse; a one-customer answer has no results.
_ANSWER_JSON = '{"results": [' + _RESULT_JSON + "], " + _RESULT_FIELDS + "}"
_ONE_RESULT = "[{" + ", ".join(f"'{name}': parsed.{name}" for name in _ANSWERED) + "}]"
# A refused request's field problems, as (is it one customer's, that customer's position, the field):
# ``loc`` is ["body", "customers", row, field] for a customer of a batch, else ["body", ..., field].
_OWN = "coalesce(batch AND json_type(d, '$.loc[2]') IN ('UBIGINT', 'BIGINT') AND d->>'$.loc[1]' = 'customers', false)"
_FIELD_OWN = "coalesce(d->>'$.loc[3]', '')"
_FIELD_ALL = "CASE WHEN json_array_length(d, '$.loc') > 1 THEN d->>'$.loc[#-1]' ELSE 'body' END"
_PROBLEM = "{{'field': {field}, 'type': coalesce(d->>'type', '')}}"


def _request_inputs(source: str) -> str:
    """The request rows of ``source`` with their customers' inputs: ``inputs`` (a list of JSON, one per customer:
    the body's ``customers`` when it is a non-empty batch, else the body; a null JSON for a body that is not JSON)
    and ``body_sha256`` (refused bodies that are not JSON, hashed as bytes)."""
    # A rated body is valid JSON, and a batch when it has customers (one parse of a 10,000-customer body); a
    # refused one may be anything.
    return f"""SELECT * EXCLUDE (listed),
  CASE WHEN rated THEN CASE WHEN len(listed) > 0 THEN listed ELSE [json_extract(body, '$')] END
    WHEN body IS NULL OR NOT json_valid(body) THEN [NULL::JSON]
    WHEN batch AND json_array_length(body, '$.customers') > 0 THEN json_extract(body, '$.customers[*]')
    ELSE [json_extract(body, '$')] END AS inputs,
  CASE WHEN NOT rated AND request_body IS NOT NULL AND (body IS NULL OR NOT json_valid(body))
    THEN sha256(request_body) END AS body_sha256
FROM (
  SELECT *, coalesce(is_batch, CASE WHEN rated THEN len(listed) > 0
    ELSE coalesce(CASE WHEN json_valid(body) THEN json_type(body, '$.customers') = 'ARRAY' END, false) END) AS batch
  FROM (
    SELECT *, http_status = 200 AS rated, CASE WHEN http_status = 200 THEN json_extract(body, '$.customers[*]') END
      AS listed
    FROM (SELECT *, try(decode(request_body)) AS body FROM {source} WHERE outcome IS NULL)
  )
)"""


_INPUT_HASH = "coalesce(sha256(CAST({input} AS VARCHAR)), body_sha256)"  # THE input hash (module docstring)


def input_hashes_sql(source: str) -> str:
    """Each request row's list of input hashes (``input_hashes``), in the order of ``source``: what ``hash-only``
    mode stores instead of the body."""
    hashed = _INPUT_HASH.format(input="i")
    return f"SELECT [{hashed} FOR i IN inputs] AS input_hashes, batch FROM ({_request_inputs(source)})"


def records_sql(source: str) -> str:
    """THE definition of the customer records (``SCHEMA``, in its order) from the files of the log: ``source`` is a
    relation with ``FILE_SCHEMA``'s columns (``read_parquet(..., union_by_name = true)``). Customer rows are taken
    as they are (their hash computed from their text when missing); each request row gives one record per customer
    of its body, its answer's results and its body's customers (or their hashes) unnested in lockstep.

    The input of a customer (``input_json``) is its JSON object as DuckDB writes it (``json_extract``: the keys and
    values as sent, in the order sent, without whitespace, numbers in their shortest form); ``input_sha256`` is the
    SHA-256 (hex) of that text, whichever path wrote it (this query, or ``hash-only`` mode storing
    :func:`input_hashes_sql`'s hashes). A refused body that is not JSON is hashed as its bytes."""
    customer_columns = ", ".join(INPUT_HASH if name == "input_sha256" else f'"{name}"' for name in SCHEMA.names)
    own = _PROBLEM.format(field=_FIELD_OWN)
    everywhere = _PROBLEM.format(field=_FIELD_ALL)
    derived = {
        "decided_at": "decided_at",
        "request_id": "request_id",
        "item": "CAST(item AS INTEGER)",
        "api_key_id": "api_key_id",
        "outcome": "CASE WHEN rated THEN 'rated' ELSE 'refused' END",
        "http_status": "http_status",
        "customer_id": "CASE WHEN rated THEN result.customer_id ELSE refused_id END",
        "input_sha256": f"coalesce(given_hash, {_INPUT_HASH.format(input='input')})",
        "input_json": "CASE WHEN rated THEN CAST(input AS VARCHAR) END",
        **{
            name: f"result.{name}"
            for name in SCHEMA.names[SCHEMA.names.index("risk_tier") : SCHEMA.names.index("model_version") + 1]
        },
        "policy_version": "policy_version",
        "latency_ms": "latency_ms",
        "problems": f"CASE WHEN NOT rated THEN list_concat([{own} FOR d IN detail IF {_OWN} AND "
        f"CAST(d->>'$.loc[2]' AS BIGINT) = item], [{everywhere} FOR d IN detail IF NOT {_OWN}]) END",
    }
    assert list(derived) == SCHEMA.names
    records = ", ".join(f'{expression} AS "{name}"' for name, expression in derived.items())
    return f"""SELECT {customer_columns} FROM {source} WHERE outcome IS NOT NULL
UNION ALL
SELECT {records} FROM (
  SELECT decided_at, request_id, api_key_id, http_status, latency_ms, policy_version, rated, batch, detail,
    body_sha256, unnest(inputs) AS input, unnest(results) AS result, unnest(refused_ids) AS refused_id,
    unnest(input_hashes) AS given_hash, unnest(range(greatest(len(inputs), coalesce(len(input_hashes), 0)))) AS item
  FROM (
    SELECT *,
      CASE WHEN rated THEN coalesce(parsed.results, {_ONE_RESULT}) END AS results,
      CASE WHEN NOT rated THEN json_extract(answer, '$.detail[*]') END AS detail
    FROM (
      SELECT * EXCLUDE (request_body, body), decode(response_body) AS answer,
        CASE WHEN rated THEN from_json(decode(response_body), '{_ANSWER_JSON}') END AS parsed
      FROM ({_request_inputs(source)})
    )
  )
)"""


def as_file_table(requests: pa.Table) -> pa.Table:
    """A table of request rows (``REQUEST_SCHEMA``) with every column of ``FILE_SCHEMA`` (the others null)."""
    n = requests.num_rows
    arrays = [requests[f.name] if f.name in requests.column_names else pa.nulls(n, f.type) for f in FILE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FILE_SCHEMA)


def hash_inputs(requests: pa.Table, connection: duckdb.DuckDBPyConnection) -> pa.Table:
    """Request rows (``REQUEST_SCHEMA``) with their inputs' hashes (``input_hashes``, by ``connection``, an
    in-memory DuckDB, running :func:`input_hashes_sql`) instead of their bodies: what ``hash-only`` mode writes."""
    connection.register("request_rows", as_file_table(requests))
    try:
        hashed = connection.sql(input_hashes_sql("request_rows")).to_arrow_table()
    finally:
        connection.unregister("request_rows")
    if hashed.num_rows != requests.num_rows:  # cannot happen: one row out for one row in
        raise ValueError(f"{hashed.num_rows} lists of hashes for {requests.num_rows} requests")
    columns = {"input_hashes": hashed["input_hashes"], "is_batch": hashed["batch"],
               "request_body": pa.nulls(requests.num_rows, pa.binary())}  # fmt: skip
    for name, values in columns.items():
        requests = requests.set_column(requests.schema.get_field_index(name), name, values)
    return requests


class DecisionSettingsError(ValueError):
    """A decision-log setting that cannot be used: one sentence naming it."""


@dataclass(frozen=True)
class DecisionSettings:
    folder: Path
    mode: str = "full"
    fail_closed: bool = False
    flush_seconds: float = DEFAULT_FLUSH_SECONDS

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def keep_inputs(self) -> bool:
        return self.mode == "full"


def folder_for(warehouse_path: str | Path, environ: dict[str, str] | None = None) -> Path:
    """The decision-log folder: ``$SEGMENTATION_DECISIONS_DIR``, else ``<warehouse stem>_decisions`` beside the
    warehouse file; absolute, so that a view over it reads the same folder from any working directory."""
    configured = (os.environ if environ is None else environ).get(DIR_ENV, "").strip()
    warehouse = Path(warehouse_path)
    folder = Path(configured) if configured else warehouse.with_name(f"{warehouse.stem}_decisions")
    return folder.expanduser().absolute()


def settings_from_environment(
    warehouse_path: str | Path, *, folder: str | Path | None = None, mode: str | None = None,
    on_error: str | None = None, environ: dict[str, str] | None = None,
) -> DecisionSettings:  # fmt: skip
    """The API's decision-log settings: explicit values (``segmentation serve`` flags) over the environment over
    the defaults (full inputs, fail-open, a flush a second)."""
    env = os.environ if environ is None else environ
    mode = (mode or env.get(MODE_ENV, "") or "full").strip().lower()
    if mode not in MODES:
        raise DecisionSettingsError(f"{MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    on_error = (on_error or env.get(ON_ERROR_ENV, "") or "fail-open").strip().lower()
    if on_error not in ON_ERROR:
        raise DecisionSettingsError(f"{ON_ERROR_ENV}={on_error!r}: expected one of {', '.join(ON_ERROR)}")
    raw = env.get(FLUSH_ENV, "").strip()
    try:
        flush = float(raw) if raw else DEFAULT_FLUSH_SECONDS
    except ValueError:
        flush = -1.0
    if not 0 < flush <= 60:
        raise DecisionSettingsError(f"{FLUSH_ENV}={raw!r}: expected seconds between 0 and 60 (e.g. 1)")
    where = Path(folder).expanduser().absolute() if folder else folder_for(warehouse_path, env)
    return DecisionSettings(folder=where, mode=mode, fail_closed=on_error == "fail-closed", flush_seconds=flush)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, name: str) -> timedelta:
    """``"36h"``, ``"7d"``, ``"90m"``, ``"30s"`` -> a timedelta; ``DecisionSettingsError`` naming ``name``."""
    match = _DURATION.match(text)
    if match is None:
        raise DecisionSettingsError(f"{name}={text!r}: expected a duration such as 36h, 7d, 90m or 30s")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def maintenance_from_environment(environ: dict[str, str] | None = None) -> tuple[timedelta, timedelta]:
    """(compact segments older than, remove days older than): ``$SEGMENTATION_DECISIONS_COMPACT_AFTER`` and
    ``$SEGMENTATION_DECISIONS_RETENTION``, else 1 day and 3650 days."""
    env = os.environ if environ is None else environ
    after = env.get(COMPACT_AFTER_ENV, "").strip()
    keep = env.get(RETENTION_ENV, "").strip()
    return (
        parse_duration(after, COMPACT_AFTER_ENV) if after else DEFAULT_COMPACT_AFTER,
        parse_duration(keep, RETENTION_ENV) if keep else DEFAULT_RETENTION,
    )


# --- writing ------------------------------------------------------------------------------------------------------

_SEQUENCE = count()


def ensure_folder(folder: Path) -> None:
    """Create the folder and its zero-row ``schema.parquet`` of every column a file can have (``FILE_SCHEMA``),
    or bring an older one up to date (OSError when it cannot be written)."""
    folder.mkdir(parents=True, exist_ok=True)
    schema_file = folder / "schema.parquet"
    with contextlib.suppress(OSError, pa.ArrowException):
        if pq.read_schema(schema_file).remove_metadata().equals(FILE_SCHEMA):
            return
    _write_atomically(FILE_SCHEMA.empty_table(), schema_file)


# Request rows: cheap to write (lz4, statistics and dictionaries only on the small columns); compaction recompresses.
_REQUEST_WRITE = {"compression": "lz4", "use_dictionary": ["api_key_id", "policy_version"],
                  "write_statistics": ["decided_at", "http_status"]}  # fmt: skip


def _write_atomically(table: pa.Table, target: Path, **options: object) -> None:
    """Write under a hidden temporary name in the same folder, flush to disk, rename: whole or absent."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    options = options or {"compression": "zstd", "use_dictionary": _REPEATING}
    try:
        with temporary.open("wb") as sink:
            pq.write_table(table, sink, **options)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_segment(folder: Path, table: pa.Table, now: datetime | None = None) -> Path:
    """Append one segment (request rows, ``REQUEST_SCHEMA``, or customer records, ``SCHEMA``) to the log; returns
    its path. OSError when the folder cannot be written (full disk, permissions): nothing is left behind but the
    caller's records."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if not (folder / "schema.parquet").exists():  # a folder that could not be made at start, or was removed
        ensure_folder(folder)
    day = folder / "segments" / now.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    target = day / f"{now.strftime('%Y%m%dT%H%M%S.%f')}Z-{os.getpid()}-{next(_SEQUENCE)}.parquet"
    if table.schema.equals(REQUEST_SCHEMA):
        _write_atomically(table, target, **_REQUEST_WRITE)
    else:  # lz4: cheaper to write than zstd; compaction recompresses
        _write_atomically(table, target, compression="lz4", use_dictionary=_REPEATING)
    return target


# --- reading ------------------------------------------------------------------------------------------------------


def _glob(folder: Path) -> str:
    """Every Parquet file under ``folder``, as a SQL literal."""
    return literal(folder / "**" / "*.parquet")


def _read(files: str) -> str:
    """The relation of the log's files ``files`` (a SQL literal: a glob or a list) with every column of either
    kind, whichever columns the files have (a folder whose ``schema.parquet`` predates the request rows)."""
    return f"(SELECT * FROM read_parquet({files}, union_by_name = true) UNION ALL BY NAME {_typed_empty(FILE_SCHEMA)})"


@functools.cache
def _typed_empty(schema: pa.Schema = SCHEMA) -> str:
    """``SELECT`` of no rows with ``schema``'s column names and types (for a folder with no file yet)."""
    connection = duckdb.connect()
    try:
        columns = connection.from_arrow(schema.empty_table()).types
    finally:
        connection.close()
    casts = ", ".join(f'CAST(NULL AS {kind}) AS "{name}"' for name, kind in zip(schema.names, columns, strict=True))
    return f"SELECT {casts} WHERE false"


def view_sql(folder: Path) -> str:
    """The query behind ``api_decisions``: every segment and daily file; the typed empty relation when the folder
    holds none (DuckDB binds a view when it is created, and a glob matching nothing is an error)."""
    if any(folder.glob("**/*.parquet")):
        sql = records_sql(_read(_glob(folder)))
        probe = duckdb.connect()  # bound aside first: a failing statement would abort the caller's transaction
        try:
            probe.execute(f"DESCRIBE {sql}")
            return sql
        except duckdb.Error:  # an unreadable file (not one this code wrote): empty until it is put right
            pass
        finally:
            probe.close()
    return _typed_empty()


def create_decisions_view(connection: duckdb.DuckDBPyConnection, folder: Path) -> str:
    """Define ``api_decisions`` over the decision log in ``folder``: in ``main`` on a writable connection (it
    persists in the warehouse; call it inside the publishing transaction), a TEMP view on a read-only one. The
    folder and its ``schema.parquet`` are created when possible, so that the view stays valid as files come and
    go. Returns ``"main"`` or ``"temp"``."""
    with contextlib.suppress(OSError):
        ensure_folder(folder)
    sql = view_sql(folder)
    try:
        connection.execute(f"CREATE OR REPLACE VIEW main.{VIEW} AS {sql}")
        return "main"
    except duckdb.InvalidInputException as error:  # read-only: the view lives as long as this connection
        if "read-only" not in str(error):
            raise
        connection.execute(f"CREATE OR REPLACE TEMP VIEW {VIEW} AS {sql}")
        return "temp"


def recent(folder: Path, customer_id: str, *, limit: int = 10, as_of: datetime | None = None) -> list[dict]:
    """The customer's latest API decisions (newest first), at or before ``as_of`` when given; [] when none."""
    if not folder.is_dir() or not any(folder.glob("**/*.parquet")) or view_sql(folder) == _typed_empty():
        return []
    moment = "" if as_of is None else "AND decided_at <= ?"
    connection = duckdb.connect()
    try:
        # The days not compacted yet hold request rows whose answers the records' query parses: only those whose
        # answer holds the id's text (or whose refused ids list it) are parsed; the records are then matched exactly.
        connection.execute(
            f"CREATE TEMP VIEW requests AS SELECT * FROM {_read(_glob(folder))} WHERE outcome IS NOT NULL "
            f"OR list_contains(refused_ids, {literal(customer_id)}) "
            f"OR contains(decode(response_body), {literal(customer_id)})"
        )  # fmt: skip
        records = records_sql("requests")
        cursor = connection.execute(
            f"SELECT decided_at, request_id, outcome, risk_tier, risk_score, cluster, rule_ids, model_version, "
            f"policy_version, api_key_id, [p.field FOR p IN coalesce(problems, [])] AS problem_fields "
            f"FROM ({records}) WHERE customer_id = ? {moment} "
            f"ORDER BY decided_at DESC LIMIT {int(limit)}", [customer_id, *([as_of] if as_of else [])],
        )  # fmt: skip
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()


# --- compaction and retention -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Maintenance:
    compacted_segments: int
    days_written: list[str]
    days_removed: list[str]


_SEGMENT_TIME = re.compile(r"^(\d{8}T\d{6}\.\d{6})Z-")


def _segment_time(path: Path) -> datetime | None:
    match = _SEGMENT_TIME.match(path.name)
    return None if match is None else datetime.strptime(match[1], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)


def _day_dirs(folder: Path) -> Iterator[tuple[date, Path]]:
    segments = folder / "segments"
    if not segments.is_dir():
        return
    for directory in sorted(segments.iterdir()):
        with contextlib.suppress(ValueError):
            yield date.fromisoformat(directory.name), directory


def _manifest(daily: Path) -> Path:
    return daily.with_name(f".{daily.stem}.manifest.json")


def _finish_interrupted(daily_dir: Path) -> None:
    """A compaction killed part-way: a manifest means its merged file was complete (the manifest is written after
    it), so rename it if that did not happen yet and remove the segments it holds; a temporary file without a
    manifest is an incomplete write and goes."""
    if not daily_dir.is_dir():
        return
    for manifest in daily_dir.glob(".*.manifest.json"):
        entry = json.loads(manifest.read_text())
        staged, target = Path(entry["staged"]), Path(entry["target"])
        if staged.exists():
            os.replace(staged, target)
        for segment in entry["segments"]:
            with contextlib.suppress(FileNotFoundError):
                Path(segment).unlink()
        manifest.unlink()
    for leftover in daily_dir.glob(".*.tmp"):
        leftover.unlink()


def compact(folder: Path, *, older_than: timedelta = DEFAULT_COMPACT_AFTER, now: datetime | None = None) -> list[str]:
    """Merge the segments written more than ``older_than`` ago into their day's file ``daily/<day>.parquet``
    (added to what it already holds), then remove them. Safe against a kill at any point: the merged file is
    renamed into place only when complete, and a manifest written before the rename lets the next run finish
    the removal, so no record is lost or counted twice. Returns the days written."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    daily_dir = folder / "daily"
    _finish_interrupted(daily_dir)
    ensure_folder(folder)  # its schema.parquet is read with the segments: every column binds
    cutoff = now - older_than
    written = []
    for day, directory in _day_dirs(folder):
        old = sorted(p for p in directory.glob("*.parquet") if (_segment_time(p) or now) <= cutoff)
        if not old:
            continue
        daily_dir.mkdir(parents=True, exist_ok=True)
        target = daily_dir / f"{day.isoformat()}.parquet"
        staged = daily_dir / f".{target.name}.{os.getpid()}.tmp"
        sources = [str(folder / "schema.parquet")] + ([str(target)] if target.exists() else []) + [str(p) for p in old]
        connection = duckdb.connect()
        try:
            connection.execute(f"SET temp_directory = {literal(daily_dir / '.spill')}")
            listed = ", ".join(map(literal, sources))
            connection.execute(
                f"COPY ({records_sql(_read(f'[{listed}]'))}) TO {literal(staged)} (FORMAT parquet, COMPRESSION zstd)"
            )
        finally:
            connection.close()
        shutil.rmtree(daily_dir / ".spill", ignore_errors=True)
        with staged.open("rb") as written_file:
            os.fsync(written_file.fileno())
        manifest = _manifest(target)
        entry = {"staged": str(staged), "target": str(target), "segments": [str(p) for p in old]}
        manifest.write_text(json.dumps(entry))
        _finish_interrupted(daily_dir)  # rename, remove the segments, remove the manifest
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty
        written.append(day.isoformat())
    return written


def apply_retention(folder: Path, *, retention: timedelta = DEFAULT_RETENTION, now: datetime | None = None
                    ) -> list[str]:  # fmt: skip
    """Remove the days (daily files and segments) older than ``retention``. Returns the days removed."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    oldest_kept = (now - retention).date()
    removed = set()
    daily_dir = folder / "daily"
    if daily_dir.is_dir():
        for path in daily_dir.glob("*.parquet"):
            with contextlib.suppress(ValueError):
                if date.fromisoformat(path.stem) < oldest_kept:
                    path.unlink()
                    removed.add(path.stem)
    for day, directory in _day_dirs(folder):
        if day < oldest_kept:
            shutil.rmtree(directory)
            removed.add(day.isoformat())
    return sorted(removed)


def maintain(folder: Path, *, older_than: timedelta, retention: timedelta, now: datetime | None = None
             ) -> Maintenance:  # fmt: skip
    """Compaction, then retention (what ``segmentation decisions compact`` and the Dagster job run)."""
    before = sum(1 for _ in (folder / "segments").glob("*/*.parquet")) if (folder / "segments").is_dir() else 0
    days = compact(folder, older_than=older_than, now=now)
    after = sum(1 for _ in (folder / "segments").glob("*/*.parquet")) if (folder / "segments").is_dir() else 0
    removed = apply_retention(folder, retention=retention, now=now)
    return Maintenance(compacted_segments=before - after, days_written=days, days_removed=removed)
