"""Fitted segmentation models as stored in the warehouse's ``kmeans_model`` table."""

from __future__ import annotations

import pickle

from segmentation_pipeline.stages.scoring import SegmentationModel
from segmentation_pipeline.warehouse.registry import REGISTRY_TABLE
from segmentation_pipeline.warehouse.store import Warehouse

MODEL_TABLE = "kmeans_model"


def load_model(warehouse: Warehouse, version: str | None = None) -> SegmentationModel:
    """The model of that version, or (version None) the ACTIVE one of the registry (``model_versions``); the
    newest one only when the warehouse predates the registry. Raises LookupError when there is none."""
    tables = warehouse.table_names()
    if MODEL_TABLE not in tables:
        raise LookupError(f"no model in {warehouse.path}: run the pipeline first (segmentation run)")
    with warehouse.connect(read_only=True) as connection:  # one connection: the active id and its blob agree
        if version is None and REGISTRY_TABLE in tables:
            active_sql = f"SELECT model_version FROM {REGISTRY_TABLE} WHERE status = 'active'"
            active = connection.execute(active_sql).fetchone()
            if active is None:
                raise LookupError(
                    f"no active model in {warehouse.path}: no version passed the quality checks; "
                    "see `segmentation models list` and `segmentation models promote VERSION`"
                )
            version = str(active[0])
        where, params = ("model_version = ?", [version]) if version else ("TRUE", [])
        row = connection.execute(
            f"SELECT model_blob FROM {MODEL_TABLE} WHERE {where} ORDER BY created_at DESC LIMIT 1", params
        ).fetchone()
    if row is None:
        raise LookupError(f"no model version {version!r} in {warehouse.path}")
    # The warehouse is the pipeline's own trusted store; nothing else writes model_blob.
    return pickle.loads(row[0])
