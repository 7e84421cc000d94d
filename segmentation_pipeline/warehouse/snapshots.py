"""Snapshots: every run writes into its own schema; one transaction at the end publishes it, or nothing changes.

A run's tables live in the DuckDB schema ``snapshot_<run id>`` while it works. The public names analysts, the API
and the report read (:data:`PUBLIC_TABLES`, as views in ``main``) point at exactly one published snapshot. The
logs a run appends to (:data:`LOG_TABLES`: lineage, ingestion report, model history, migrations, ...) are staged in
the snapshot too and appended to ``main`` when it is published, and its candidate model enters the registry then.
:func:`publish` does all of that in ONE transaction, so a run that fails or dies at any point (an error, a blocking
check, ``kill -9``, a full disk) changes nothing a reader sees: its schema is simply dropped by the next run.

A run that does not ingest a file (the weekly re-clustering) builds on the published snapshot: its schema holds
what it recomputed, and reads the rest (``raw_workbook``, ``cleaned_customers``) from its *base* snapshot.

History: when a snapshot is published, its ratings and reasons are appended to ``rating_history`` and
``reason_history`` (kept ``history_days``), and the analysts' views (:mod:`views`) are recreated for it;
superseded snapshots' schemas are dropped beyond the newest ``keep_snapshots``. :func:`explain` answers what a
customer's rating was at any moment. Publication also (re)defines the view ``api_decisions`` over the scoring
API's decision log (``decisions.create_decisions_view``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from segmentation_pipeline.warehouse import decisions, registry, views
from segmentation_pipeline.warehouse.store import (
    Warehouse,
    WarehouseUnavailable,
    add_missing_columns,
    unavailable_reason,
)

# Public names: one view each, on the published snapshot's table.
PUBLIC_TABLES: tuple[str, ...] = (
    "raw_workbook", "cleaned_customers", "quarantined_customers", "customer_features", "pca_embedding",
    "cluster_assignments", "rating_reasons", "segment_profiles", "rating_governance",
)  # fmt: skip
# Logs: staged in the snapshot, appended to main's table of the same name when it is published.
LOG_TABLES: tuple[str, ...] = (
    "lineage", "ingestion_report", "kmeans_model", "kmeans_k_search", "model_stability", "tier_migrations",
    "segment_report", "policy_rules",
)  # fmt: skip
CANDIDATE_TABLE = "model_candidate"  # the run's new model version, registered at publication
SNAPSHOTS_TABLE = "snapshots"
PUBLISHED, STAGING, SUPERSEDED, FAILED = "published", "staging", "superseded", "failed"

SNAPSHOTS_DDL = f"""
CREATE TABLE IF NOT EXISTS main.{SNAPSHOTS_TABLE} (
    snapshot_id VARCHAR NOT NULL,
    schema_name VARCHAR NOT NULL,
    run_id VARCHAR,
    export_key VARCHAR,
    base_snapshot VARCHAR,
    status VARCHAR,
    created_at TIMESTAMPTZ,
    published_at TIMESTAMPTZ,
    superseded_at TIMESTAMPTZ,
    model_version VARCHAR,
    customers BIGINT,
    report_path VARCHAR,
    source_path VARCHAR
)
"""
HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS main.rating_history (
    snapshot_id VARCHAR, published_at TIMESTAMPTZ, customer_id VARCHAR, cluster INTEGER, risk_tier VARCHAR,
    risk_score DOUBLE, distance_to_centroid DOUBLE, model_version VARCHAR
);
ALTER TABLE main.rating_history ADD COLUMN IF NOT EXISTS segment_tier VARCHAR;
ALTER TABLE main.rating_history ADD COLUMN IF NOT EXISTS tier_before_rules VARCHAR;
ALTER TABLE main.rating_history ADD COLUMN IF NOT EXISTS rating_basis VARCHAR;
ALTER TABLE main.rating_history ADD COLUMN IF NOT EXISTS rule_ids VARCHAR[];
ALTER TABLE main.rating_history ADD COLUMN IF NOT EXISTS policy_version VARCHAR;
CREATE TABLE IF NOT EXISTS main.reason_history (
    snapshot_id VARCHAR, customer_id VARCHAR, rank INTEGER, indicator VARCHAR, value DOUBLE,
    segment_typical DOUBLE, population_typical DOUBLE, contribution DOUBLE
);
"""
# The rating columns of cluster_assignments kept in rating_history.
HISTORY_COLUMNS: tuple[str, ...] = (
    "customer_id", "cluster", "risk_tier", "risk_score", "distance_to_centroid", "model_version", "segment_tier",
    "tier_before_rules", "rating_basis", "rule_ids", "policy_version",
)  # fmt: skip
DEFAULT_KEEP_SNAPSHOTS = 2  # published + the one before: intermediate tables of older ones are dropped
DEFAULT_HISTORY_DAYS = 3650  # ratings and reasons kept ten years (record-keeping rules ask for five or more)
KEEP_SNAPSHOTS_ENV, HISTORY_DAYS_ENV = "SEGMENTATION_KEEP_SNAPSHOTS", "SEGMENTATION_HISTORY_DAYS"


def retention_from_environment() -> tuple[int, int]:
    """(snapshots whose tables are kept, days of rating history kept): $SEGMENTATION_KEEP_SNAPSHOTS and
    $SEGMENTATION_HISTORY_DAYS, else the defaults. A value that is not a positive whole number is refused."""
    values = []
    for name, default in ((KEEP_SNAPSHOTS_ENV, DEFAULT_KEEP_SNAPSHOTS), (HISTORY_DAYS_ENV, DEFAULT_HISTORY_DAYS)):
        text = os.environ.get(name, "").strip()
        if not text:
            values.append(default)
        elif text.isdigit() and int(text) > 0:
            values.append(int(text))
        else:
            raise ValueError(f"{name}={text!r} is not a positive whole number")
    return values[0], values[1]


class PublicationError(RuntimeError):
    """A snapshot that cannot be published (missing tables, not staged): one line saying why."""


def schema_for(run_id: str) -> str:
    """The schema a run writes into."""
    return "snapshot_" + "".join(c for c in run_id.lower() if c.isalnum())[:40]


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    schema: str
    base_schema: str | None

    def store(self, path: Path, *, retry_seconds: float = 30.0) -> Warehouse:
        """The warehouse as this run sees it: writes go to its schema; reads look there, then in its base
        snapshot, then in main (the published views and the logs)."""
        search = (self.schema, *((self.base_schema,) if self.base_schema else ()), "main")
        return Warehouse(path, retry_seconds=retry_seconds, schema=self.schema, search_path=search)


def ensure_tables(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(SNAPSHOTS_DDL)
    connection.execute(HISTORY_DDL)
    for table in ("rating_history", "reason_history"):  # ids were numbers before they were text: widen once
        kind = connection.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
            "AND column_name = 'customer_id'", [table],
        ).fetchone()  # fmt: skip
        if kind is not None and kind[0] != "VARCHAR":
            connection.execute(f"ALTER TABLE main.{table} ALTER customer_id TYPE VARCHAR")


def published(connection: duckdb.DuckDBPyConnection) -> dict[str, object] | None:
    """The published snapshot's row, or None."""
    cursor = connection.execute(
        f"SELECT * FROM main.{SNAPSHOTS_TABLE} WHERE status = '{PUBLISHED}' ORDER BY published_at DESC LIMIT 1"
    )
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row, strict=True))


def begin(
    warehouse: Warehouse, run_id: str, *, export_key: str | None = None, rebuild: bool = True,
    source_path: Path | None = None,
) -> Snapshot:
    """The snapshot of a run (created by its first step; later steps get the same). ``rebuild``: the run ingests
    its own file; else it builds on the published snapshot (its base). Snapshots other runs left staged (they
    failed or died: runs never overlap) are dropped first."""
    schema = schema_for(run_id)
    with warehouse.connect() as connection:
        ensure_tables(connection)
        connection.execute("BEGIN TRANSACTION")
        existing = connection.execute(
            f"SELECT snapshot_id, base_snapshot FROM main.{SNAPSHOTS_TABLE} WHERE snapshot_id = ?", [run_id]
        ).fetchone()
        if existing is None:
            for (dead_schema,) in connection.execute(
                f"SELECT schema_name FROM main.{SNAPSHOTS_TABLE} WHERE status = '{STAGING}' AND snapshot_id <> ?",
                [run_id],
            ).fetchall():
                connection.execute(f'DROP SCHEMA IF EXISTS "{dead_schema}" CASCADE')
            connection.execute(
                f"UPDATE main.{SNAPSHOTS_TABLE} SET status = '{FAILED}' "
                f"WHERE status = '{STAGING}' AND snapshot_id <> ?", [run_id],
            )  # fmt: skip
            base = None if rebuild else _base_for(connection, export_key)
            base_id = None if base is None else str(base["snapshot_id"])
            connection.execute(
                f"INSERT INTO main.{SNAPSHOTS_TABLE} (snapshot_id, schema_name, run_id, export_key, base_snapshot, "
                "status, created_at, source_path) VALUES (?, ?, ?, ?, ?, ?, now(), ?)",
                [run_id, schema, run_id, export_key, base_id, STAGING,
                 None if source_path is None else str(Path(source_path).resolve())],
            )  # fmt: skip
        else:
            base_id = existing[1]
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        base_schema = None
        if base_id is not None:
            row = connection.execute(
                f"SELECT schema_name FROM main.{SNAPSHOTS_TABLE} WHERE snapshot_id = ?", [base_id]
            ).fetchone()
            base_schema = row[0] if row else None
        connection.execute("COMMIT")
    return Snapshot(snapshot_id=run_id, schema=schema, base_schema=base_schema)


def _base_for(connection: duckdb.DuckDBPyConnection, export_key: str | None) -> dict[str, object] | None:
    """What a run that does not ingest builds on: the export's newest published (or superseded, still kept)
    snapshot that ingested it; the published snapshot when the run names no export."""
    if export_key is None:
        return published(connection)
    cursor = connection.execute(
        f"SELECT * FROM main.{SNAPSHOTS_TABLE} WHERE export_key = ? AND status IN ('{PUBLISHED}', '{SUPERSEDED}') "
        "AND base_snapshot IS NULL AND schema_name NOT LIKE '% (dropped)' ORDER BY published_at DESC LIMIT 1",
        [export_key],
    )
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row, strict=True))


def source_of(warehouse: Warehouse, export_key: str) -> Path | None:
    """The staged file export ``export_key`` was read from (for re-materialising its partition), or None."""
    if not warehouse.exists() or SNAPSHOTS_TABLE not in warehouse.table_names():
        return None
    with warehouse.connect(read_only=True) as connection:
        row = connection.execute(
            f"SELECT source_path FROM main.{SNAPSHOTS_TABLE} WHERE export_key = ? AND source_path IS NOT NULL "
            "ORDER BY created_at DESC LIMIT 1", [export_key],
        ).fetchone()  # fmt: skip
    path = None if row is None else Path(row[0])
    return path if path is not None and path.exists() else None


def published_export(warehouse: Warehouse) -> str | None:
    """The export key of the published snapshot (what the weekly re-clustering refreshes), or None."""
    if not warehouse.exists() or SNAPSHOTS_TABLE not in warehouse.table_names():
        return None
    with warehouse.connect(read_only=True) as connection:
        row = published(connection)
    return None if row is None or row.get("export_key") is None else str(row["export_key"])


def _tables_in(connection: duckdb.DuckDBPyConnection, schema: str) -> set[str]:
    rows = connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema]
    ).fetchall()
    return {row[0] for row in rows}


def publish(
    warehouse: Warehouse,
    snapshot: Snapshot,
    *,
    keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
    history_days: int = DEFAULT_HISTORY_DAYS,
) -> dict[str, object]:
    """Make ``snapshot`` the published one, in ONE transaction: logs appended, candidate model registered (and
    activated when it passed the quality gate), public views switched, ratings appended to the history; its
    report is the one its ``segment_report`` row names. Then, outside the transaction, old snapshots beyond
    retention are dropped. Returns the published row."""
    main = Warehouse(warehouse.path, retry_seconds=warehouse.retry_seconds)
    with main.connect() as connection:
        ensure_tables(connection)
        connection.execute("BEGIN TRANSACTION")
        try:
            row = connection.execute(
                f"SELECT status FROM main.{SNAPSHOTS_TABLE} WHERE snapshot_id = ?", [snapshot.snapshot_id]
            ).fetchone()
            if row is None or row[0] != STAGING:
                raise PublicationError(f"snapshot {snapshot.snapshot_id} is not staged (status {row and row[0]})")
            own = _tables_in(connection, snapshot.schema)
            base = _tables_in(connection, snapshot.base_schema) if snapshot.base_schema else set()
            missing = [name for name in PUBLIC_TABLES if name not in own and name not in base]
            if missing:
                raise PublicationError(f"snapshot {snapshot.snapshot_id} lacks {', '.join(missing)}: not published")
            for name in LOG_TABLES:
                if name in own:
                    source = f'"{snapshot.schema}"."{name}"'
                    connection.execute(f"CREATE TABLE IF NOT EXISTS main.{name} AS SELECT * FROM {source} LIMIT 0")
                    add_missing_columns(connection, f"main.{name}", source)
                    connection.execute(f"INSERT INTO main.{name} BY NAME SELECT * FROM {source}")
            model_version = _register_candidate(connection, snapshot, own)
            report_path = None
            if "segment_report" in own:
                (report_path,) = connection.execute(
                    f'SELECT any_value(path) FROM "{snapshot.schema}".segment_report').fetchone()  # fmt: skip
            for name in PUBLIC_TABLES:
                schema = snapshot.schema if name in own else snapshot.base_schema
                kind = connection.execute(
                    "SELECT table_type FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
                    [name],
                ).fetchone()
                if kind is not None and kind[0] != "VIEW":  # a warehouse from before snapshots: its table goes
                    connection.execute(f"DROP TABLE main.{name}")
                connection.execute(f'CREATE OR REPLACE VIEW main.{name} AS SELECT * FROM "{schema}"."{name}"')
            now = datetime.now().astimezone()
            connection.execute(
                f"UPDATE main.{SNAPSHOTS_TABLE} SET status = '{SUPERSEDED}', superseded_at = ? "
                f"WHERE status = '{PUBLISHED}'", [now],
            )  # fmt: skip
            customers = connection.execute(
                f'SELECT count(*) FROM "{snapshot.schema if "cluster_assignments" in own else snapshot.base_schema}"'
                ".cluster_assignments"
            ).fetchone()[0]
            connection.execute(
                f"UPDATE main.{SNAPSHOTS_TABLE} SET status = '{PUBLISHED}', published_at = ?, model_version = ?, "
                "customers = ?, report_path = ? WHERE snapshot_id = ?",
                [now, model_version, customers, report_path, snapshot.snapshot_id],
            )  # fmt: skip
            connection.execute(
                f"INSERT INTO main.rating_history BY NAME SELECT ? AS snapshot_id, ? AS published_at, "
                f"{', '.join(HISTORY_COLUMNS)} FROM main.cluster_assignments", [snapshot.snapshot_id, now],
            )  # fmt: skip
            connection.execute(
                "INSERT INTO main.reason_history SELECT ?, customer_id, rank, indicator, value, segment_typical, "
                "population_typical, contribution FROM main.rating_reasons", [snapshot.snapshot_id],
            )  # fmt: skip
            views.create_views(connection, views.Publication(
                warehouse=main.path, snapshot_id=snapshot.snapshot_id, run_id=snapshot.snapshot_id,  # one id
                published_at=now, model_version=model_version, columns=views.relations(connection),
            ))  # fmt: skip
            # The API's ratings, beside the pipeline's: the view over its decision log (re-created with each
            # publication, so that it sees files that appeared since a view over an empty folder was made).
            decisions.create_decisions_view(connection, decisions.folder_for(main.path))
            connection.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(duckdb.Error):
                connection.execute("ROLLBACK")
            reason = unavailable_reason(error) if isinstance(error, duckdb.Error | OSError) else None
            if reason is not None:
                raise WarehouseUnavailable(f"warehouse {main.path}: {reason}; nothing was published") from None
            raise
        published_row = published(connection)
    apply_retention(main, keep_snapshots=keep_snapshots, history_days=history_days)
    return published_row or {}


def _register_candidate(connection: duckdb.DuckDBPyConnection, snapshot: Snapshot, own: set[str]) -> str | None:
    """The run's new model version into the registry (active if it passed the gate); returns the version the
    published assignments were made with."""
    if CANDIDATE_TABLE in own:
        for (entry_json, activate) in connection.execute(
            f'SELECT entry, activate FROM "{snapshot.schema}".{CANDIDATE_TABLE}'
        ).fetchall():
            registry.record_version(connection, registry.ModelVersion.from_json(entry_json), activate=bool(activate))
    schema = snapshot.schema if "cluster_assignments" in own else snapshot.base_schema
    row = connection.execute(f'SELECT any_value(model_version) FROM "{schema}".cluster_assignments').fetchone()
    return None if row is None else row[0]


def apply_retention(warehouse: Warehouse, *, keep_snapshots: int, history_days: int) -> list[str]:
    """Drop the schemas of superseded snapshots beyond the newest ``keep_snapshots`` published ones (never a base
    of a kept one), and history older than ``history_days``. Returns the snapshots dropped."""
    with warehouse.connect() as connection:
        rows = connection.execute(
            f"SELECT snapshot_id, schema_name, base_snapshot FROM main.{SNAPSHOTS_TABLE} "
            f"WHERE status IN ('{PUBLISHED}', '{SUPERSEDED}') ORDER BY published_at DESC"
        ).fetchall()
        kept = rows[: max(1, keep_snapshots)]
        needed = {r[0] for r in kept} | {r[2] for r in kept if r[2]}
        dropped = []
        connection.execute("BEGIN TRANSACTION")
        for snapshot_id, schema, _ in rows[max(1, keep_snapshots) :]:
            if snapshot_id in needed:
                continue
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            connection.execute(
                f"UPDATE main.{SNAPSHOTS_TABLE} SET schema_name = schema_name || ' (dropped)' WHERE snapshot_id = ? "
                "AND schema_name NOT LIKE '% (dropped)'", [snapshot_id],
            )  # fmt: skip
            dropped.append(snapshot_id)
        cutoff = datetime.now().astimezone() - timedelta(days=history_days)
        old = [r[0] for r in connection.execute(
            f"SELECT snapshot_id FROM main.{SNAPSHOTS_TABLE} WHERE published_at < ? AND status = '{SUPERSEDED}'",
            [cutoff]).fetchall()]  # fmt: skip
        for snapshot_id in old:
            connection.execute("DELETE FROM main.rating_history WHERE snapshot_id = ?", [snapshot_id])
            connection.execute("DELETE FROM main.reason_history WHERE snapshot_id = ?", [snapshot_id])
        connection.execute("COMMIT")
    return dropped


def sync_latest_report(warehouse: Warehouse, latest: Path) -> bool:
    """Make ``latest`` the published snapshot's report (after a kill between publication and the copy, the next
    run or ``segmentation report`` puts it right). True when it was copied."""
    if not warehouse.exists() or SNAPSHOTS_TABLE not in warehouse.table_names():
        return False
    with warehouse.connect(read_only=True) as connection:
        row = published(connection)
    source = Path(str(row["report_path"])) if row and row.get("report_path") else None
    if source is None or not source.exists():
        return False
    marker = latest.with_name(latest.name + ".snapshot")
    if latest.exists() and marker.exists() and marker.read_text().strip() == str(row["snapshot_id"]):
        return False
    latest.parent.mkdir(parents=True, exist_ok=True)
    staged = latest.with_name(latest.name + ".tmp")
    shutil.copyfile(source, staged)
    staged.replace(latest)  # atomic: a reader sees the old report or the new one
    marker.write_text(str(row["snapshot_id"]))
    return True


# --- history --------------------------------------------------------------------------------------------------


def explain(warehouse: Warehouse, customer_id: str, as_of: datetime | None = None) -> dict[str, object] | None:
    """The rating ``customer_id`` had at ``as_of`` (now when None): the snapshot published last at or before
    that moment, and the customer's tier, score, cluster, model and reasons in it. None when there is none."""
    moment = as_of or datetime.now().astimezone()
    with warehouse.connect(read_only=True) as connection:
        snapshot = connection.execute(
            f"SELECT snapshot_id, published_at, export_key FROM main.{SNAPSHOTS_TABLE} "
            "WHERE published_at IS NOT NULL AND published_at <= ? ORDER BY published_at DESC LIMIT 1", [moment],
        ).fetchone()  # fmt: skip
        if snapshot is None:
            return None
        cursor = connection.execute(
            "SELECT customer_id, risk_tier, risk_score, segment_tier, tier_before_rules, rating_basis, cluster, "
            "distance_to_centroid, "
            "model_version, policy_version, coalesce(rule_ids, []) AS rule_ids "
            "FROM main.rating_history WHERE snapshot_id = ? AND customer_id = ?", [snapshot[0], customer_id],
        )  # fmt: skip
        row = cursor.fetchone()
        if row is None:
            return None
        rating = dict(zip([c[0] for c in cursor.description], row, strict=True))
        reasons = connection.execute(
            "SELECT indicator, value, segment_typical, population_typical, contribution FROM main.reason_history "
            "WHERE snapshot_id = ? AND customer_id = ? ORDER BY rank", [snapshot[0], customer_id],
        ).fetchall()  # fmt: skip
        rules = _rules_of(connection, str(rating["model_version"]), list(rating["rule_ids"]))
    return {
        **rating,
        "rules": rules,
        "snapshot": snapshot[0],
        "published_at": snapshot[1].isoformat() if snapshot[1] else None,
        "export": snapshot[2],
        "reasons": [
            dict(zip(("indicator", "value", "segment_typical", "population_typical", "contribution"), r, strict=True))
            for r in reasons
        ],
    }


def _rules_of(connection: duckdb.DuckDBPyConnection, model_version: str, rule_ids: list[str]
              ) -> list[dict[str, object]]:  # fmt: skip
    """The stored text of the rules that apply to a rating (as in force for its model), in the order applied."""
    if not rule_ids:
        return []
    rows = connection.execute(
        "SELECT rule_id, condition, min_tier, rationale FROM main.policy_rules WHERE model_version = ? "
        "AND list_contains(?, rule_id) ORDER BY position", [model_version, rule_ids],
    ).fetchall()  # fmt: skip
    found = {r[0]: dict(zip(("id", "condition", "min_tier", "rationale"), r, strict=True)) for r in rows}
    return [found.get(i, {"id": i, "condition": None, "min_tier": None, "rationale": None}) for i in rule_ids]


def to_json(explained: dict[str, object]) -> str:
    return json.dumps(explained, default=str, indent=2)
