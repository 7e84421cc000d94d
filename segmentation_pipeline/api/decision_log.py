"""The decision log of the scoring API: every request it answers with a rating (or refuses) is kept on disk.

A request only appends, to an in-memory buffer, what it already holds as bytes: its body as received and its
answer as sent (the route has encoded it), with the time, request id, key id, status, latency and rules version.
A background thread wakes every ``flush_seconds`` (or sooner when many customers wait), makes one Arrow column of
each (a few ``pa.array`` calls over the buffer, whatever the number of customers) and appends them as one Parquet
segment of request rows with ``warehouse.decisions.write_segment`` (temporary file + rename; lz4, statistics only
on the small columns). Stopping the service (SIGTERM, SIGINT: uvicorn's graceful shutdown, then the app's lifespan)
flushes what is left, so a graceful stop loses nothing; a crash loses at most what was buffered since the last
flush.

The customer records (``warehouse.decisions.SCHEMA``: one per customer, its input, hash, tier, reasons ...) are
not built here: ``warehouse.decisions.records_sql`` derives them from the request rows, in the ``api_decisions``
view and when segments are compacted into daily files. The input of a customer is its JSON object as DuckDB
writes it, and ``input_sha256`` the SHA-256 of that text (see ``records_sql``). In ``hash-only`` mode the body
must not be stored: the flusher has an in-memory DuckDB compute the inputs' hashes with the same SQL
(``decisions.hash_inputs``; off the GIL, but on the server's core: it costs more than ``full``) and stores them
instead of the body. A refused request (422) gives one
record per customer sent, each with its field problems (field and kind of problem, never the value) and no text;
its customers' ids are the one thing computed here (``fields.customer_id``, the API's own reading of an id).

When the folder cannot be written (full disk, permissions), the rows are kept and retried at every flush,
the problem is logged once (and once more when it is over) and ``/healthz`` says ``degraded``; beyond
``max_pending`` buffered customers the oldest requests are dropped and their customers counted. With
``fail_closed`` the route refuses to score (503) for as long as the log cannot be written, instead.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from itertools import count

import duckdb
import msgspec
import numpy as np
import orjson
import pyarrow as pa

from segmentation_pipeline import schema
from segmentation_pipeline.api.schemas import ScoreBatchResponseOut, ScoreResultOut
from segmentation_pipeline.stages import fields
from segmentation_pipeline.warehouse import decisions
from segmentation_pipeline.warehouse.decisions import REQUEST_SCHEMA, DecisionSettings

log = logging.getLogger("segmentation.api")

# (unix time, request id, key id, body, HTTP status, answer as sent, latency ms, model version, customers)
Entry = tuple[float, str, str | None, bytes, int, bytes, float, str | None, int]


class _RawBatch(msgspec.Struct):
    customers: list[msgspec.Raw]


_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
_RAW = msgspec.json.Decoder(msgspec.Raw)


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
        self._unwritten: list[tuple[pa.Table, np.ndarray]] = []  # built, not written yet: (rows, customers a row)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._flushing = threading.Lock()
        self._ids = count(1)
        self._prefix = secrets.token_hex(4)  # request ids unique across restarts: <prefix>-<counter, hex>
        self.error: str | None = None
        self.written = 0  # customers written
        self.dropped = 0  # customers dropped (buffer full while the folder could not be written)
        self._duckdb: duckdb.DuckDBPyConnection | None = None

    # -- the request side ---------------------------------------------------------------------------------------
    def request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids):x}"

    @property
    def refusing(self) -> bool:
        """Fail-closed and the log cannot be written: the route must not score."""
        return self.settings.fail_closed and self.error is not None

    def add(self, request_id: str, key_id: str | None, body: bytes, status: int, payload: object, answer: bytes,
            started: float) -> None:  # fmt: skip
        """Record an answer (200 or 422) of ``POST /v1/score``: its bytes are kept, nothing is computed here."""
        if type(payload) is ScoreBatchResponseOut:
            n, version = payload.count, payload.model_version
        else:
            n, version = 1, (payload.model_version if type(payload) is ScoreResultOut else None)
        entry = (time.time(), request_id, key_id, body, status, answer, (time.perf_counter() - started) * 1000,
                 version, n)  # fmt: skip
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
            "error": self.error, "pending": self._pending_customers + sum(int(c.sum()) for _, c in self._unwritten),
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
        if self._duckdb is not None:
            self._duckdb.close()
            self._duckdb = None
        lost = sum(int(counts.sum()) for _, counts in self._unwritten)
        if lost:
            log.error("decision log: %d record(s) could not be written before the service stopped (%s)", lost,
                      self.error)  # fmt: skip

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.settings.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is buffered as one segment; returns the customers written (0 when none, or on failure)."""
        with self._flushing:
            with self._lock:
                entries, self._pending, self._pending_customers = self._pending, [], 0
            if entries:
                try:
                    self._unwritten.append(self.build(entries))
                except Exception:  # a bug here must never stop the flusher nor the service
                    self.dropped += sum(entry[8] for entry in entries)
                    log.exception("decision log: %d answer(s) could not be turned into records", len(entries))
            del entries
            if not self._unwritten:
                return 0
            if len(self._unwritten) > 1:
                table = pa.concat_tables([t for t, _ in self._unwritten])
                counts = np.concatenate([c for _, c in self._unwritten])
            else:
                table, counts = self._unwritten[0]
            try:
                decisions.write_segment(self.settings.folder, table)
            except OSError as error:
                self._unwritten = [(table, counts)]
                self._failed(error)
                self._bound()
                return 0
            self._unwritten = []
            written = int(counts.sum())
            self.written += written
            if self.error is not None:
                log.warning("decision log: writing again into %s; nothing was lost", self.settings.folder)
                self.error = None
            return written

    def _failed(self, error: OSError) -> None:
        if self.error is None:  # one line when the problem starts (and one when it ends)
            action = "scoring is REFUSED (fail-closed)" if self.settings.fail_closed else "scoring continues"
            log.error("decision log: cannot write into %s (%s); records are kept in memory and retried every %g s; "
                      "%s", self.settings.folder, error, self.settings.flush_seconds, action)  # fmt: skip
        self.error = f"cannot write the decision log: {error.strerror or type(error).__name__}"

    def _bound(self) -> None:
        """Beyond ``max_pending`` customers waiting, the oldest rows go (whole requests, at least the excess)."""
        table, counts = self._unwritten[0]
        excess = int(counts.sum()) - self._max_pending
        if excess > 0:
            rows = int(np.searchsorted(np.cumsum(counts), excess)) + 1  # the fewest oldest rows holding the excess
            dropped = int(counts[:rows].sum())
            self._unwritten = [(table.slice(rows), counts[rows:])]
            self.dropped += dropped
            log.error("decision log: %d oldest record(s) dropped: more than %d waiting to be written", dropped,
                      self._max_pending)  # fmt: skip

    # -- answers -> rows --------------------------------------------------------------------------------------------
    def build(self, entries: Sequence[Entry]) -> tuple[pa.Table, np.ndarray]:
        """The request rows of ``entries`` (``REQUEST_SCHEMA``; in ``hash-only`` mode their customer records
        instead, see the module's docstring) and the number of customers of each row."""
        times, request_ids, key_ids, bodies, statuses, answers, latencies, versions, counts = zip(*entries, strict=True)
        micros = (np.array(times, dtype=np.float64) * 1e6).astype(np.int64)
        known = {version: self._policy_version_of(version) for version in set(versions) if version is not None}
        refused = [i for i, status in enumerate(statuses) if status != 200]
        ids: list[list[str | None] | None] = [None] * len(entries)
        customers = np.array(counts, dtype=np.int64)
        for i in refused:  # rare: a few per second at most
            ids[i] = _refused_ids(bodies[i])
            customers[i] = len(ids[i])  # type: ignore[arg-type]
        table = pa.Table.from_arrays([
            pa.array(micros, pa.int64()).cast(REQUEST_SCHEMA.field("decided_at").type),
            pa.array(request_ids, pa.string()),
            pa.array(key_ids, pa.string()),
            pa.array(statuses, pa.int16()),
            pa.array(latencies, pa.float64()),
            pa.array([known.get(version) for version in versions], pa.string()),
            _bytes_column(bodies),
            _bytes_column(answers),
            pa.array(ids, REQUEST_SCHEMA.field("refused_ids").type),
            pa.nulls(len(entries), REQUEST_SCHEMA.field("input_hashes").type),
            pa.nulls(len(entries), pa.bool_()),
        ], schema=REQUEST_SCHEMA)  # fmt: skip
        if self.settings.keep_inputs:
            return table, customers
        if self._duckdb is None:  # hash-only: one in-memory DuckDB for the flusher (a connection costs ~30 ms)
            self._duckdb = duckdb.connect(config={"threads": 1})
        return decisions.hash_inputs(table, self._duckdb), customers


_OWN_CHUNK_BYTES = 1 << 20


def _bytes_column(values: Sequence[bytes]) -> pa.Array | pa.ChunkedArray:
    """The bodies or answers as one Arrow binary column. A big one (a batch's: megabytes) becomes a chunk of its
    own over the bytes object itself, not copied: copying a 10,000-customer batch's 12 MB of body and answer into
    fresh memory cost the server more in page faults than the copy itself (measured: ~30 ms of system time a
    batch with the log on, ~9 ms with it off)."""
    if max(map(len, values)) < _OWN_CHUNK_BYTES:
        return pa.array(values, pa.binary())
    chunks: list[pa.Array] = []
    small: list[bytes] = []
    for value in values:
        if len(value) < _OWN_CHUNK_BYTES:
            small.append(value)
            continue
        if small:
            chunks.append(pa.array(small, pa.binary()))
            small = []
        offsets = pa.py_buffer(np.array([0, len(value)], dtype=np.int32))
        chunks.append(pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(value)]))
    if small:
        chunks.append(pa.array(small, pa.binary()))
    return pa.chunked_array(chunks, pa.binary())


def _refused_ids(body: bytes) -> list[str | None]:
    """The ids of a refused body's customers, in order (one null for a body that is not JSON or holds no
    customer), read as the API reads ids; ``records_sql`` pairs them with the customers it finds in the body."""
    try:
        raws = _RAW_BATCH.decode(body).customers
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        try:
            return [_customer_id(_RAW.decode(body))]
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return [None]
    return [_customer_id(raw) for raw in raws] or [None]


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
