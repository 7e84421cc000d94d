"""Fitted segmentation models as stored in the warehouse's ``kmeans_model`` table."""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from segmentation_pipeline.stages.model import SegmentationModel
from segmentation_pipeline.warehouse.registry import REGISTRY_TABLE, active_in
from segmentation_pipeline.warehouse.store import Warehouse

MODEL_TABLE = "kmeans_model"


def served_version(connection: duckdb.DuckDBPyConnection) -> str | None:
    """The version the pipeline and the API use: the registry's active one; the newest model only when the
    warehouse predates the registry. None when there is no such version."""
    tables = {row[0] for row in connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}  # fmt: skip
    if REGISTRY_TABLE in tables:
        return active_in(connection)
    if MODEL_TABLE in tables:
        row = connection.execute(
            f"SELECT model_version FROM main.{MODEL_TABLE} ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        return None if row is None else str(row[0])
    return None


def load_model(warehouse: Warehouse, version: str | None = None) -> SegmentationModel:
    """The model of that version, or (version None) the served one (see :func:`served_version`).
    Raises LookupError when there is none, ``ModelContractError`` when this code cannot score it as it was fitted
    (another feature contract, or its stored sample scores differently)."""
    tables = warehouse.table_names() | Warehouse(warehouse.path).table_names()
    if MODEL_TABLE not in tables:
        raise LookupError(f"no model in {warehouse.path}: run the pipeline first (segmentation run)")
    with warehouse.connect(read_only=True) as connection:  # one connection: the active id and its blob agree
        if version is None:
            version = served_version(connection)
            if version is None:
                raise LookupError(
                    f"no active model in {warehouse.path}: no version passed the quality checks; "
                    "see `segmentation models list` and `segmentation models promote VERSION`"
                )
        row = None
        # A run's own snapshot holds its candidate; the published history is main's table.
        for table in (MODEL_TABLE, f"main.{MODEL_TABLE}"):
            try:
                row = connection.execute(
                    f"SELECT model_blob FROM {table} WHERE model_version = ? ORDER BY created_at DESC LIMIT 1",
                    [version],
                ).fetchone()
            except duckdb.CatalogException:
                row = None
            if row is not None:
                break
    if row is None:
        raise LookupError(f"no model version {version!r} in {warehouse.path}")
    return SegmentationModel.from_bytes(row[0])  # plain arrays and JSON: reading it runs no code


def model_table_row(model: SegmentationModel) -> pd.DataFrame:
    """The ``kmeans_model`` row of a fitted model: its queryable facts plus the stored model itself."""
    metrics = model.metrics
    return pd.DataFrame(
        [
            {
                "model_version": model.version,
                "run_id": model.run_id,
                "created_at": pd.Timestamp(model.trained_at),
                "k": model.k,
                "seed": model.settings.get("random_state"),
                "silhouette": metrics["silhouette"],
                "davies_bouldin": metrics["davies_bouldin"],
                "calinski_harabasz": metrics["calinski_harabasz"],
                "inertia": metrics["inertia"],
                "n_customers": model.n_customers,
                "input_file_sha256": model.input_sha256,
                "config": json.dumps(model.settings, default=str),
                "cluster_tiers": json.dumps({str(c): t for c, t in enumerate(model.tiers.cluster_tiers)}),
                "feature_contract": json.dumps(model.contract),
                "high_score_boundary": model.tiers.boundary_of("High"),
                "medium_score_boundary": model.tiers.boundary_of("Medium"),
                "policy_version": model.policy.version,
                "policy_sha256": model.policy.sha256,
                "code_version": model.code_version,
                "model_blob": model.to_bytes(),
            }
        ]
    )


def policy_rules_rows(model: SegmentationModel) -> pd.DataFrame:
    """The ``policy_rules`` rows of a fitted model: the rules in force for it, in the order they are applied."""
    policy = model.policy
    return pd.DataFrame(
        {
            "model_version": model.version,
            "policy_version": policy.version,
            "policy_sha256": policy.sha256,
            "policy_source": policy.source,
            "position": pd.array(range(1, len(policy.rules) + 1), dtype="int32"),
            "rule_id": [rule.id for rule in policy.rules],
            "condition": [rule.condition for rule in policy.rules],
            "min_tier": [rule.min_tier for rule in policy.rules],
            "rationale": [rule.rationale for rule in policy.rules],
        },
        columns=["model_version", "policy_version", "policy_sha256", "policy_source", "position", "rule_id",
                 "condition", "min_tier", "rationale"],
    )  # fmt: skip
