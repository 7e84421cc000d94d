"""Shared helpers of the tests that run the real asset graph into a real DuckDB file (pipeline, rejections,
registry, stability, sensor, schedule, concurrency): the code location's segmentation_job, as the CLI runs it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import execute_segmentation_job

FAST = {"n_init": 3, "reference_date": "2026-06-30"}  # few K-means restarts; a fixed date keeps ages stable


def settings(**overrides: object) -> SegmentationSettings:
    return SegmentationSettings(**{**FAST, **overrides})


def materialize_file(
    path: Path,
    warehouse_path: Path,
    segmentation: SegmentationSettings | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """The whole graph (and its checks) on one file; never raises on a failed run (check ``.success``)."""
    return execute_segmentation_job(path, warehouse_path, settings=segmentation or settings(), instance=instance)
