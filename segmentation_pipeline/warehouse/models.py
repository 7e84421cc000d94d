"""Fitted segmentation models as stored in the warehouse's ``kmeans_model`` table."""

from __future__ import annotations

import pickle

from segmentation_pipeline.stages.scoring import SegmentationModel
from segmentation_pipeline.warehouse.store import Warehouse

MODEL_TABLE = "kmeans_model"


def load_model(warehouse: Warehouse, version: str | None = None) -> SegmentationModel:
    """The model of that version, or the newest one. Raises LookupError when there is none."""
    if MODEL_TABLE not in warehouse.table_names():
        raise LookupError(f"no model in {warehouse.path}: run the pipeline first (segmentation run)")
    where, params = ("model_version = ?", [version]) if version else ("TRUE", [])
    with warehouse.connect(read_only=True) as connection:
        row = connection.execute(
            f"SELECT model_blob FROM {MODEL_TABLE} WHERE {where} ORDER BY created_at DESC LIMIT 1", params
        ).fetchone()
    if row is None:
        raise LookupError(f"no model version {version!r} in {warehouse.path}")
    # The warehouse is the pipeline's own trusted store; nothing else writes model_blob.
    return pickle.loads(row[0])
