"""The model registry: every fitted model version, its quality and which one is in use.

Table ``model_versions`` (one row per version): model_version, run_id, created_at, k, seed, metrics (JSON),
n_customers, input_file_sha256, config (JSON), library_versions (JSON), status, quality_passed, quality_notes,
population_profile (JSON: what PSI drift is measured against), previous_version (the version active when it was
trained), status_changed_at. ``status`` is ``active``, ``inactive`` or ``rejected``; exactly one version is active
once any has been activated. Table ``model_activations`` logs every change of the active version (who/why), which
is what :func:`rollback` walks back through.

Every change is one DuckDB transaction on a short-lived connection (``Warehouse.connect``), so a reader sees the old
active version or the new one, never none or two.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from segmentation_pipeline.warehouse.store import Warehouse

if TYPE_CHECKING:  # a type only: `segmentation models` needs no scikit-learn
    from segmentation_pipeline.stages.model import SegmentationModel

REGISTRY_TABLE = "model_versions"
ACTIVATIONS_TABLE = "model_activations"
ACTIVE, INACTIVE, REJECTED = "active", "inactive", "rejected"
STATUSES = (ACTIVE, INACTIVE, REJECTED)
_LIBRARIES = ("segmentation-pipeline", "scikit-learn", "numpy", "pandas", "scipy", "duckdb", "dagster")

REGISTRY_DDL = f"""
CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (
    model_version VARCHAR NOT NULL,
    run_id VARCHAR,
    created_at TIMESTAMPTZ,
    k INTEGER,
    seed BIGINT,
    metrics VARCHAR,
    n_customers BIGINT,
    input_file_sha256 VARCHAR,
    config VARCHAR,
    library_versions VARCHAR,
    status VARCHAR CHECK (status IN ('active', 'inactive', 'rejected')),
    quality_passed BOOLEAN,
    quality_notes VARCHAR,
    population_profile VARCHAR,
    previous_version VARCHAR,
    status_changed_at TIMESTAMPTZ
)
"""
ACTIVATIONS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ACTIVATIONS_TABLE} (
    model_version VARCHAR,
    previous_version VARCHAR,
    activated_at TIMESTAMPTZ,
    reason VARCHAR
)
"""


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to...)."""


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a model's numbers depend on (recorded with every version)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class QualityResult:
    """Whether a model may become active automatically, and why not."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def notes(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "passed"


def quality_check(metrics: Mapping[str, float], labels: np.ndarray, k: int, silhouette_floor: float) -> QualityResult:
    """The automatic activation gate: silhouette at or above the floor, and no empty cluster."""
    reasons = []
    silhouette = float(metrics.get("silhouette", float("nan")))
    if math.isnan(silhouette) or silhouette < silhouette_floor:
        reasons.append(f"silhouette {silhouette:.3f} below the floor {silhouette_floor:.3f}")
    sizes = np.bincount(np.asarray(labels, dtype="int64"), minlength=k)
    empty = [int(c) for c in np.flatnonzero(sizes == 0)]
    if empty:
        reasons.append(f"empty cluster(s) {empty}")
    return QualityResult(passed=not reasons, reasons=reasons)


@dataclass
class ModelVersion:
    """One row of ``model_versions``."""

    model_version: str
    run_id: str | None
    created_at: datetime
    k: int
    seed: int | None
    metrics: dict[str, float]
    n_customers: int
    input_file_sha256: str | None
    config: dict[str, object]
    library_versions: dict[str, str]
    quality: QualityResult
    population_profile: dict[str, object] = field(default_factory=dict)
    previous_version: str | None = None

    @classmethod
    def of(
        cls,
        model: SegmentationModel,
        quality: QualityResult,
        population_profile: dict[str, object],
        previous_version: str | None,
    ) -> ModelVersion:
        """The registry entry of a fitted model."""
        return cls(
            model_version=model.version,
            run_id=model.run_id,
            created_at=model.trained_at,
            k=model.k,
            seed=model.settings.get("random_state"),  # type: ignore[arg-type]
            metrics=model.metrics,
            n_customers=model.n_customers,
            input_file_sha256=model.input_sha256,
            config=model.settings,
            library_versions=library_versions(),
            quality=quality,
            population_profile=population_profile,
            previous_version=previous_version,
        )

    def to_json(self) -> str:
        """The entry as JSON (how a run stages it until its snapshot is published)."""
        fields_ = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "quality"}
        fields_["created_at"] = self.created_at.isoformat()
        fields_["quality"] = {"passed": self.quality.passed, "reasons": self.quality.reasons}
        return json.dumps(fields_, default=str, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> ModelVersion:
        data = json.loads(text)
        quality = data.pop("quality")
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(quality=QualityResult(passed=quality["passed"], reasons=list(quality["reasons"])), **data)

    def row(self, status: str) -> list[object]:
        return [
            self.model_version,
            self.run_id,
            self.created_at,
            self.k,
            self.seed,
            json.dumps(self.metrics, allow_nan=True),
            self.n_customers,
            self.input_file_sha256,
            json.dumps(self.config, default=str),
            json.dumps(self.library_versions),
            status,
            self.quality.passed,
            self.quality.notes,
            json.dumps(self.population_profile),
            self.previous_version,
            self.created_at,
        ]


# --- reading ----------------------------------------------------------------------------------------------------


def registry_exists(warehouse: Warehouse) -> bool:
    return REGISTRY_TABLE in warehouse.table_names()


def list_versions(warehouse: Warehouse) -> pd.DataFrame:
    """Every version, newest first (empty frame when nothing is registered yet)."""
    if not registry_exists(warehouse):
        return pd.DataFrame(columns=["model_version", "status", "created_at", "k", "quality_passed"])
    return warehouse.query(f"SELECT * FROM {REGISTRY_TABLE} ORDER BY created_at DESC, model_version DESC")


def active_version(warehouse: Warehouse) -> str | None:
    """The active version's id, or None."""
    if not registry_exists(warehouse):
        return None
    with warehouse.connect(read_only=True) as connection:
        return active_in(connection)


def active_entry(warehouse: Warehouse) -> dict[str, object] | None:
    """The active version's row (JSON columns decoded), or None."""
    if not registry_exists(warehouse):
        return None
    rows = warehouse.query(f"SELECT * FROM {REGISTRY_TABLE} WHERE status = 'active'")
    if rows.empty:
        return None
    row = rows.iloc[0].to_dict()
    for column in ("metrics", "config", "library_versions", "population_profile"):
        row[column] = json.loads(row[column]) if row[column] else {}
    return row


def active_in(connection: duckdb.DuckDBPyConnection) -> str | None:
    """The active version's id over an open connection (the registry table must exist)."""
    row = connection.execute(f"SELECT model_version FROM {REGISTRY_TABLE} WHERE status = 'active'").fetchone()
    return None if row is None else str(row[0])


# --- writing (each function is one transaction) -----------------------------------------------------------------


def ensure_registry(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(REGISTRY_DDL)
    connection.execute(ACTIVATIONS_DDL)


@contextmanager
def _transaction(warehouse: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    with warehouse.connect() as connection:
        ensure_registry(connection)
        connection.execute("BEGIN TRANSACTION")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def _activate(connection: duckdb.DuckDBPyConnection, version: str, reason: str) -> str | None:
    """Make ``version`` the only active one (inside the caller's transaction); returns the one it replaces."""
    previous = active_in(connection)
    now = datetime.now().astimezone()
    connection.execute(
        f"UPDATE {REGISTRY_TABLE} SET status = 'inactive', status_changed_at = ? "
        "WHERE status = 'active' AND model_version <> ?",
        [now, version],
    )
    connection.execute(
        f"UPDATE {REGISTRY_TABLE} SET status = 'active', status_changed_at = ? WHERE model_version = ?", [now, version]
    )
    if previous != version:
        connection.execute(f"INSERT INTO {ACTIVATIONS_TABLE} VALUES (?, ?, ?, ?)", [version, previous, now, reason])
    return previous


def record_version(connection: duckdb.DuckDBPyConnection, entry: ModelVersion, *, activate: bool) -> str:
    """Insert a new version inside the caller's open transaction (so it lands together with the model's own
    tables); active if ``activate``, else ``rejected`` when it failed quality, ``inactive`` otherwise.
    Returns the status it got."""
    ensure_registry(connection)
    # No primary key on the table (DuckDB rewrites indexed rows on UPDATE): uniqueness is checked here instead.
    if connection.execute(f"SELECT 1 FROM {REGISTRY_TABLE} WHERE model_version = ?", [entry.model_version]).fetchone():
        raise RegistryError(f"model version {entry.model_version!r} is already registered")
    status = INACTIVE if activate or entry.quality.passed else REJECTED
    connection.execute(f"INSERT INTO {REGISTRY_TABLE} VALUES ({', '.join('?' * 16)})", entry.row(status))
    if activate:
        _activate(connection, entry.model_version, "automatic: passed quality checks")
        status = ACTIVE
    return status


def register_version(warehouse: Warehouse, entry: ModelVersion, *, activate: bool | None = None) -> str:
    """Register a version on its own (one transaction). ``activate`` None: activate iff it passed quality."""
    with _transaction(warehouse) as connection:
        return record_version(connection, entry, activate=entry.quality.passed if activate is None else activate)


def promote(warehouse: Warehouse, version: str, *, reason: str = "promoted by hand") -> str | None:
    """Make ``version`` the active one (also a rejected version: a person may overrule the automatic gate).
    Returns the version it replaced. Raises RegistryError for an unknown version."""
    if not registry_exists(warehouse):
        raise RegistryError(f"no model registry in {warehouse.path}: run the pipeline first")
    with _transaction(warehouse) as connection:
        if connection.execute(f"SELECT 1 FROM {REGISTRY_TABLE} WHERE model_version = ?", [version]).fetchone() is None:
            raise RegistryError(f"no model version {version!r} in {warehouse.path}")
        return _activate(connection, version, reason)


def rollback(warehouse: Warehouse) -> tuple[str, str]:
    """Re-activate the version that was active before the current one; the current one becomes inactive.
    Returns (from_version, to_version). Raises RegistryError when there is nothing to roll back to."""
    if not registry_exists(warehouse):
        raise RegistryError(f"no model registry in {warehouse.path}: run the pipeline first")
    with _transaction(warehouse) as connection:
        current = active_in(connection)
        if current is None:
            raise RegistryError("no active model version to roll back from")
        # The latest activation of the current version that was not itself a rollback says which version it
        # replaced: so rolling back twice walks two steps back instead of toggling between two versions.
        row = connection.execute(
            f"SELECT a.previous_version FROM {ACTIVATIONS_TABLE} a JOIN {REGISTRY_TABLE} v "
            "ON v.model_version = a.previous_version "
            "WHERE a.model_version = ? AND a.reason NOT LIKE 'rollback%' ORDER BY a.activated_at DESC LIMIT 1",
            [current],
        ).fetchone()
        if row is None or row[0] is None:
            raise RegistryError(f"{current} is the first active version: there is nothing to roll back to")
        target = str(row[0])
        _activate(connection, target, f"rollback from {current}")
        return current, target
