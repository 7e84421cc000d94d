"""The decision log of the scoring API: every customer it rates (or refuses) becomes one record on disk.

A request only appends a reference to its answer to an in-memory buffer (a few hundred nanoseconds whatever its
size); a background thread wakes every ``flush_seconds`` (or sooner when many customers wait), turns what was
buffered into Arrow columns in bulk (one C-level ``map`` per column over the answer's structs, not a Python dict
per customer) and appends it as one Parquet segment with ``warehouse.decisions.write_segment`` (temporary file +
rename). Stopping the service (SIGTERM, SIGINT: uvicorn's graceful shutdown, then the app's lifespan) flushes
what is left, so a graceful stop loses nothing; a crash loses at most what was buffered since the last flush.

When the folder cannot be written (full disk, permissions), the records are kept and retried at every flush,
the problem is logged once (and once more when it is over) and ``/healthz`` says ``degraded``; beyond
``max_pending`` buffered customers the oldest are dropped and counted. With ``fail_closed`` the route refuses to
score (503) for as long as the log cannot be written, instead.

What is recorded: see ``warehouse.decisions.SCHEMA``. The input of a rated customer is its JSON text exactly as
sent (for a batch, its object within the body, cut out by msgspec without decoding it); its SHA-256 is computed
from that text by DuckDB when the log is read or compacted (hashing here would cost the batch route a tenth of its
throughput). In ``hash-only`` mode the hash alone is stored, computed here. A refused request (422) is recorded
with one record per customer sent, each with its field problems (field and kind of problem, never the value),
the hash of its text and no text.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from hashlib import sha256
from itertools import chain, count
from operator import attrgetter, methodcaller
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa

from segmentation_pipeline import schema
from segmentation_pipeline.api.schemas import ScoreBatchResponseOut
from segmentation_pipeline.stages import fields
from segmentation_pipeline.stages.compiled import ReasonTable
from segmentation_pipeline.warehouse import decisions
from segmentation_pipeline.warehouse.decisions import REASON, SCHEMA, DecisionSettings

log = logging.getLogger("segmentation.api")

# (unix time, request id, key id, body, HTTP status, payload, latency ms)
Entry = tuple[float, str, str | None, bytes, int, Any, float]


class _RawBatch(msgspec.Struct):
    customers: list[msgspec.Raw]


_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
_RAW = msgspec.json.Decoder(msgspec.Raw)
_HEX = methodcaller("hexdigest")
_RESULT_COLUMNS = ("customer_id", "risk_tier", "segment_tier", "tier_before_rules", "rating_basis", "risk_score",
                   "distance_to_centroid", "cluster", "rule_ids", "model_version")  # fmt: skip
_REASON_FIELDS = [(field.name, attrgetter(field.name)) for field in REASON]


class DecisionLog:
    """The buffer and its flusher thread. ``policy_version_of(model_version)`` names the rules version a model
    applies (the model cache knows every version it served)."""

    def __init__(
        self,
        settings: DecisionSettings,
        policy_version_of: Callable[[str], str | None] = lambda version: None,
        *,
        max_pending: int = 2_000_000,
        flush_records: int = 200_000,
    ) -> None:
        self.settings = settings
        self._policy_version_of = policy_version_of
        self._max_pending, self._flush_records = max_pending, flush_records
        self._lock = threading.Lock()
        self._pending: list[Entry] = []
        self._pending_customers = 0
        self._unwritten: list[pa.Table] = []  # built but not written yet (the folder could not be written)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._flushing = threading.Lock()
        self._ids = count(1)
        self._prefix = secrets.token_hex(4)  # request ids unique across restarts: <prefix>-<counter, hex>
        self.error: str | None = None
        self.written = 0  # customers written
        self.dropped = 0  # customers dropped (buffer full while the folder could not be written)

    # -- the request side ---------------------------------------------------------------------------------------
    def request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids):x}"

    @property
    def refusing(self) -> bool:
        """Fail-closed and the log cannot be written: the route must not score."""
        return self.settings.fail_closed and self.error is not None

    def add(self, request_id: str, key_id: str | None, body: bytes, status: int, payload: object,
            started: float) -> None:  # fmt: skip
        """Record an answer (200 or 422) of ``POST /v1/score``: a reference is kept, nothing is computed here."""
        n = payload.count if type(payload) is ScoreBatchResponseOut else 1
        entry = (time.time(), request_id, key_id, body, status, payload, (time.perf_counter() - started) * 1000)
        with self._lock:
            self._pending.append(entry)
            self._pending_customers += n
            wake = self._pending_customers >= self._flush_records
        if wake:
            self._wake.set()

    def health(self) -> dict[str, object]:
        status = "off" if not self.settings.enabled else "degraded" if self.error else "ok"
        return {
            "status": status, "mode": self.settings.mode, "fail_closed": self.settings.fail_closed,
            "error": self.error, "pending": self._pending_customers + sum(t.num_rows for t in self._unwritten),
            "written": self.written, "dropped": self.dropped,
        }  # fmt: skip

    # -- the flusher ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            decisions.ensure_folder(self.settings.folder)
        except OSError as error:
            self._failed(error)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()
        log.info("decision log: %s, %s, into %s", self.settings.mode,
                 "fail-closed" if self.settings.fail_closed else "fail-open", self.settings.folder)  # fmt: skip

    def close(self) -> None:
        """Stop the flusher after a last flush; what cannot be written then is reported lost."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self.flush()
        lost = sum(table.num_rows for table in self._unwritten)
        if lost:
            log.error("decision log: %d record(s) could not be written before the service stopped (%s)", lost,
                      self.error)  # fmt: skip

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.settings.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is buffered as one segment; returns the records written (0 when none, or on failure)."""
        with self._flushing:
            with self._lock:
                entries, self._pending, self._pending_customers = self._pending, [], 0
            if entries:
                try:
                    self._unwritten.append(self.build(entries))
                except Exception:  # a bug here must never stop the flusher nor the service
                    self.dropped += sum(p.count if type(p) is ScoreBatchResponseOut else 1 for *_, p, _ in entries)
                    log.exception("decision log: %d answer(s) could not be turned into records", len(entries))
            del entries
            if not self._unwritten:
                return 0
            table = pa.concat_tables(self._unwritten) if len(self._unwritten) > 1 else self._unwritten[0]
            try:
                decisions.write_segment(self.settings.folder, table)
            except OSError as error:
                self._unwritten = [table]
                self._failed(error)
                self._bound()
                return 0
            self._unwritten = []
            self.written += table.num_rows
            if self.error is not None:
                log.warning("decision log: writing again into %s; nothing was lost", self.settings.folder)
                self.error = None
            return table.num_rows

    def _failed(self, error: OSError) -> None:
        if self.error is None:  # one line when the problem starts (and one when it ends)
            action = "scoring is REFUSED (fail-closed)" if self.settings.fail_closed else "scoring continues"
            log.error("decision log: cannot write into %s (%s); records are kept in memory and retried every %g s; "
                      "%s", self.settings.folder, error, self.settings.flush_seconds, action)  # fmt: skip
        self.error = f"cannot write the decision log: {error.strerror or type(error).__name__}"

    def _bound(self) -> None:
        table = self._unwritten[0]
        excess = table.num_rows - self._max_pending
        if excess > 0:
            self._unwritten = [table.slice(excess)]
            self.dropped += excess
            log.error("decision log: %d oldest record(s) dropped: more than %d waiting to be written", excess,
                      self._max_pending)  # fmt: skip

    # -- answers -> records ----------------------------------------------------------------------------------------
    def build(self, entries: Sequence[Entry]) -> pa.Table:
        rated = [entry for entry in entries if entry[4] == 200]
        refused = [entry for entry in entries if entry[4] != 200]
        tables = []
        if rated:
            tables.append(self._rated(rated))
        if refused:
            tables.append(self._refused(refused))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _rated(self, entries: Sequence[Entry]) -> pa.Table:
        # A batch's answer carries the columns its results were made from (ScoredList): those are taken as they
        # are. One-customer answers (a struct each) are gathered and read one attribute at a time.
        tables = []
        singles = []
        for entry in entries:
            payload = entry[5]
            if type(payload) is ScoreBatchResponseOut and type(payload.results) is ScoredList:
                results = payload.results
                columns = {name: pa.array(values, SCHEMA.field(name).type) for name, values in results.columns.items()}
                columns["model_version"] = pa.repeat(payload.model_version, len(results))  # type: ignore[call-overload]
                columns["reasons"] = _reasons(results.reasons)
                tables.append(self._with_inputs([entry], np.array([len(results)]), columns))
            else:
                singles.append(entry)
        if singles:
            groups = [p.results if type(p) is ScoreBatchResponseOut else [p] for *_, p, _ in singles]
            results = list(chain.from_iterable(groups))
            columns = {name: pa.array(list(map(attrgetter(name), results)), SCHEMA.field(name).type)
                       for name in _RESULT_COLUMNS}  # fmt: skip
            reason_lists = list(map(attrgetter("reasons"), results))
            offsets = np.zeros(len(results) + 1, dtype=np.int32)
            np.cumsum(np.fromiter(map(len, reason_lists), dtype=np.int32, count=len(results)), out=offsets[1:])
            flat = list(chain.from_iterable(reason_lists))
            struct = pa.StructArray.from_arrays(
                [pa.array(list(map(getter, flat)), REASON.field(name).type) for name, getter in _REASON_FIELDS],
                fields=list(REASON),
            )
            columns["reasons"] = pa.ListArray.from_arrays(pa.array(offsets), struct)
            counts = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
            tables.append(self._with_inputs(singles, counts, columns))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _with_inputs(self, entries: Sequence[Entry], counts: np.ndarray, columns: dict[str, pa.Array]) -> pa.Table:
        """The rated customers' table: their columns, what they share with their request, and their inputs."""
        raws = list(chain.from_iterable(map(_inputs, entries, counts.tolist())))
        columns.update(_per_entry(entries, counts, self._policy_version_of))
        if self.settings.keep_inputs:  # the hash is computed from the text when read or compacted (DuckDB's sha256)
            columns["input_json"] = pa.array(list(map(bytes, raws)), pa.binary()).cast(pa.string())
        else:
            columns["input_sha256"] = pa.array(list(map(_HEX, map(sha256, raws))), pa.string())
        columns["outcome"] = pa.repeat("rated", len(raws))  # type: ignore[call-overload]
        return _table(columns, len(raws))

    def _refused(self, entries: Sequence[Entry]) -> pa.Table:
        rows: dict[str, list[object]] = {name: [] for name in ("customer_id", "input_sha256", "problems")}
        counts = []
        for entry in entries:
            raws, batch = _refused_inputs(entry[3])
            problems = _problems_by_row(entry[5], batch)
            everywhere = problems.pop(None, [])
            for row, raw in enumerate(raws):
                rows["customer_id"].append(_customer_id(raw))
                rows["input_sha256"].append(sha256(raw).hexdigest())
                rows["problems"].append(problems.get(row, []) + everywhere)
            counts.append(len(raws))
        columns = _per_entry(entries, np.array(counts, dtype=np.int64), None)
        columns.update({name: pa.array(values, SCHEMA.field(name).type) for name, values in rows.items()})
        columns["outcome"] = pa.repeat("refused", sum(counts))  # type: ignore[call-overload]
        return _table(columns, sum(counts))


class ScoredList(list):
    """The results of one scoring call, with the columns they were made from (``app._results``): the decision
    log records a batch from these without reading its 10,000 structs back. Encoded as a plain list."""

    __slots__ = ("columns", "reasons")


def _reasons(table: ReasonTable) -> pa.Array:
    """A :class:`ReasonTable` (flat, ``per_customer`` entries a customer) as one list of reasons per customer."""
    struct = pa.StructArray.from_arrays(
        [pa.array(getattr(table, name), REASON.field(name).type) for name, _ in _REASON_FIELDS], fields=list(REASON)
    )
    offsets = np.arange(table.n + 1, dtype=np.int32) * table.per_customer
    return pa.ListArray.from_arrays(pa.array(offsets), struct)


def _inputs(entry: Entry, n: int) -> list[msgspec.Raw | bytes]:
    """Each customer's JSON text as sent (a batch's objects cut out of the body without decoding them)."""
    body = entry[3]
    if type(entry[5]) is ScoreBatchResponseOut:
        raws = _RAW_BATCH.decode(body).customers
        if len(raws) != n:  # cannot happen: the body was just scored
            raise ValueError(f"{len(raws)} customers in a body answered with {n}")
        return raws
    return [_RAW.decode(body)]


def _refused_inputs(body: bytes) -> tuple[list[msgspec.Raw | bytes], bool]:
    """A refused body's customers as sent, and whether it was a batch; the body itself when it is not JSON or
    holds no customer (one record then, without a customer id)."""
    try:
        raws = _RAW_BATCH.decode(body).customers
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        try:
            return [_RAW.decode(body)], False
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return [body], False
    return (raws or [body]), True


def _customer_id(raw: msgspec.Raw | bytes) -> str | None:
    """The customer id of a refused record, as the API would answer it; None when there is no readable one."""
    try:
        record = orjson.loads(bytes(raw))
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if type(record) is not dict:
        return None
    for key, value in record.items():
        if schema.canonical_name(key) == schema.ID_COLUMN:
            parsed = fields.customer_id(value)
            return None if parsed is None or type(parsed) is fields.Bad else str(parsed)
    return None


def _problems_by_row(payload: object, batch: bool) -> dict[int | None, list[dict[str, str]]]:
    """Field problems of a 422 by customer position (None: the request as a whole), without messages: a message
    can quote the value."""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    found: dict[int | None, list[dict[str, str]]] = {}
    for error in detail if isinstance(detail, list) else []:
        loc = list(error.get("loc", []))
        if batch and len(loc) >= 3 and loc[1] == "customers" and type(loc[2]) is int:
            row, field = loc[2], str(loc[3]) if len(loc) > 3 else ""
        else:
            row, field = (0 if not batch else None), str(loc[-1]) if len(loc) > 1 else "body"
        found.setdefault(row, []).append({"field": field, "type": str(error.get("type", ""))})
    return found


def _per_entry(entries: Sequence[Entry], counts: np.ndarray, policy_version_of: Callable[[str], str | None] | None
               ) -> dict[str, pa.Array]:  # fmt: skip
    """The columns every customer of a request shares, repeated for each, and the customer's position."""
    take = pa.array(np.repeat(np.arange(len(entries)), counts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, dtype=np.int64)
    micros = np.fromiter((entry[0] * 1e6 for entry in entries), dtype=np.float64, count=len(entries)).astype(np.int64)
    columns = {
        "decided_at": pa.array(micros, pa.int64()).cast(SCHEMA.field("decided_at").type).take(take),
        "request_id": pa.array([entry[1] for entry in entries], pa.string()).take(take),
        "api_key_id": pa.array([entry[2] for entry in entries], pa.string()).take(take),
        "http_status": pa.array([entry[4] for entry in entries], pa.int16()).take(take),
        "latency_ms": pa.array([entry[6] for entry in entries], pa.float64()).take(take),
        "item": pa.array((np.arange(int(counts.sum())) - np.repeat(starts, counts)).astype(np.int32)),
    }
    if policy_version_of is not None:
        versions = [(p.model_version if p is not None else None) for *_, p, _ in entries]
        known = {version: policy_version_of(version) for version in set(versions)}
        columns["policy_version"] = pa.array([known[v] for v in versions], pa.string()).take(take)
    return columns


def _table(columns: dict[str, pa.Array], n: int) -> pa.Table:
    arrays = [columns[field.name] if field.name in columns else pa.nulls(n, field.type) for field in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)
