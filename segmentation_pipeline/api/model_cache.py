"""The served model: loaded once, kept in memory, swapped when the registry's active version changes.

The service must never hold the DuckDB file open (a pipeline run needs to write it) and never fail a request
because a run is writing. So:

- the model is read once into memory (checked against this code's feature contract and its stored sample) and
  compiled into a :class:`CompiledScorer`;
- a watcher thread asks the warehouse every ``check_interval`` seconds which version is active: one short
  read-only connection and a one-row query (``model_versions`` where ``status = 'active'``; the newest
  ``kmeans_model`` row for warehouses that predate the registry). The question is skipped while the DuckDB
  file and its write-ahead log are unchanged since the last answer (but asked at least every 30 s);
- a new version is loaded and compiled off to the side, then published by replacing one attribute (atomic in
  Python). A request takes the current model once at its start and uses it to the end, so a swap can never mix
  two models in one answer or fail a request in flight;
- if the warehouse is locked by a run (``WarehouseBusy``, DuckDB IO errors) or the new model cannot be loaded,
  the cached model keeps serving and the check is simply retried at the next tick.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from segmentation_pipeline.stages.compiled import CompiledScorer
from segmentation_pipeline.stages.model import ModelContractError, SegmentationModel
from segmentation_pipeline.stages.tiering import INDICATORS
from segmentation_pipeline.warehouse.models import load_model, served_version
from segmentation_pipeline.warehouse.store import Warehouse, WarehouseBusy

log = logging.getLogger("segmentation.api")

# Errors that mean "cannot look right now": keep serving what we have.
_TRANSIENT = (WarehouseBusy, duckdb.Error, OSError, LookupError)
_QUERY_AT_LEAST_EVERY = 30.0  # seconds: the version is queried this often even when the files look unchanged


@dataclass(frozen=True)
class LoadedModel:
    """One model version as served: the fitted model, its compiled scorer, and what the read-only routes show."""

    model: SegmentationModel
    scorer: CompiledScorer
    loaded_at: datetime
    segments: list[dict[str, object]] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.model.version


def compile_model(model: SegmentationModel) -> LoadedModel:
    """Everything a request needs, computed once per version."""
    scorer = model.scorer
    profiles = model.profiles()
    population = dict(zip(INDICATORS, model.tiers.population_typical.tolist(), strict=True))
    segments = []
    for row in profiles.to_dict("records"):
        segments.append(
            {
                "cluster": int(row["cluster"]),
                "risk_tier": str(row["risk_tier"]),
                "risk_score": _finite(row["risk_score"]),
                "contributions": {
                    key.removeprefix("contribution_"): _finite(value)
                    for key, value in row.items()
                    if key.startswith("contribution_")
                },
                "typical": {
                    key.removeprefix("median_"): _finite(value)
                    for key, value in row.items()
                    if key.startswith("median_")
                },
                "population_typical": {key: _finite(value) for key, value in population.items()},
            }
        )
    return LoadedModel(model=model, scorer=scorer, loaded_at=datetime.now().astimezone(), segments=segments)


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class ModelCache:
    """The in-memory model and the watcher that keeps it equal to the warehouse's active version."""

    def __init__(self, warehouse_path: str | Path, *, check_interval: float = 2.0, busy_timeout: float = 1.0) -> None:
        # Short retry budget: a locked warehouse means "try again next tick", not "block for 30 s".
        self.warehouse = Warehouse(Path(warehouse_path), retry_seconds=busy_timeout)
        self.check_interval = check_interval
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_check: float | None = None  # time.monotonic() of the last successful version check
        self.last_error: str | None = None
        self._last_query = time.monotonic()
        # The files as of the last complete check: taken before loading, so a write meanwhile is seen next tick.
        self._checked_signature: tuple[object, ...] | None = self._files_signature()
        self._current = compile_model(load_model(self.warehouse))  # raises LookupError when there is no model
        # The policy rules version of every model served so far (for the decision log's records).
        self.policy_versions: dict[str, str] = {self._current.version: self._current.model.policy.version}
        log.info("serving model %s", self._current.version)

    @property
    def current(self) -> LoadedModel:
        """The model to serve this request with (take it once per request)."""
        return self._current

    def active_version(self) -> str | None:
        """The version that should be served: one short read-only query. None when none is active."""
        with self.warehouse.connect(read_only=True) as connection:
            return served_version(connection)

    def _files_signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What the file system says of the warehouse file and its write-ahead log: any committed write changes
        one of them (size, modification time, or the file itself when replaced)."""
        signature = []
        for path in (self.warehouse.path, self.warehouse.path.with_name(self.warehouse.path.name + ".wal")):
            try:
                stat = path.stat()
            except OSError:
                signature.append(None)
            else:
                signature.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(signature)

    def refresh(self) -> bool:
        """Check the active version and swap to it if it changed. True when a new version is now served.
        Never raises for a busy or half-written warehouse: the cached model keeps serving."""
        with self._refresh_lock:
            # Opening DuckDB costs milliseconds of the serving process's CPU every tick; when the files have not
            # changed since the last complete check, the answer cannot have changed either. Still queried now
            # and then, for file systems whose timestamps are too coarse to see every write.
            signature = self._files_signature()
            now = time.monotonic()
            if signature == self._checked_signature and now - self._last_query < _QUERY_AT_LEAST_EVERY:
                self.last_check = now
                return False
            self._last_query = now
            try:
                version = self.active_version()
            except _TRANSIENT as error:
                self.last_error = f"version check failed: {type(error).__name__}"
                log.debug("model version check skipped: %s", error)
                return False
            self.last_check = time.monotonic()
            self.last_error = None
            if version is None or version == self._current.version:
                self._checked_signature = signature
                return False
            try:
                loaded = compile_model(load_model(self.warehouse, version=version))
            except _TRANSIENT as error:
                self.last_error = f"loading {version} failed: {type(error).__name__}"
                log.warning("could not load model %s yet (%s); still serving %s", version, error, self._current.version)
                return False
            except ModelContractError as error:  # fitted under other rules than this code's: never served
                self.last_error = f"model {version} refused"
                log.warning("%s; still serving %s", error, self._current.version)
                self._checked_signature = signature
                return False
            except Exception:  # a model this code cannot compile must not stop the service: keep the old one
                self.last_error = f"loading {version} failed"
                log.exception("model %s could not be compiled; still serving %s", version, self._current.version)
                return False
            self.policy_versions[loaded.version] = loaded.model.policy.version  # before the swap: logged answers
            previous, self._current = self._current.version, loaded  # the swap: one attribute assignment
            self._checked_signature = signature
            log.info("model %s now served (was %s)", loaded.version, previous)
            return True

    # -- the watcher thread --
    def start(self) -> None:
        """Start checking every ``check_interval`` seconds (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval):
            try:
                self.refresh()
            except Exception:  # the watcher must survive anything; the next tick tries again
                log.exception("model check failed")
