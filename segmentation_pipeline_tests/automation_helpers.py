"""Shared helpers of the automation tests (registry, stability, sensor, schedule, concurrency): run the real asset
graph into a real DuckDB file with ``dagster.materialize``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from segmentation_pipeline.definitions import build_resources
from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS
from segmentation_pipeline.orchestration.checks import SEGMENTATION_CHECKS
from segmentation_pipeline.orchestration.resources import SegmentationSettings

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
    resources = build_resources(str(warehouse_path))
    resources["segmentation"] = segmentation or settings()
    return dg.materialize(
        [*SEGMENTATION_ASSETS, *SEGMENTATION_CHECKS],
        resources=resources,
        run_config={
            "ops": {"raw_workbook": {"config": {"path": str(path)}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},  # the DEBUG event stream is for the UI
        },
        instance=instance,
        raise_on_error=False,
    )
