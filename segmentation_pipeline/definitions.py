"""The code location: the one Definitions object that `dagster dev` (via workspace.yaml), the `segmentation run`
CLI (runner.py) and the tests all run."""

from __future__ import annotations

import dagster as dg

from segmentation_pipeline.config import default_warehouse_path
from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS
from segmentation_pipeline.orchestration.checks import SEGMENTATION_CHECKS
from segmentation_pipeline.orchestration.decisions_maintenance import (
    decisions_maintenance_job,
    decisions_maintenance_schedule,
)
from segmentation_pipeline.orchestration.documentation import document_assets
from segmentation_pipeline.orchestration.jobs import reclustering_job, segmentation_job
from segmentation_pipeline.orchestration.progress import terminal_logger
from segmentation_pipeline.orchestration.resources import SegmentationSettings, WarehouseResource
from segmentation_pipeline.orchestration.schedules import weekly_reclustering_schedule
from segmentation_pipeline.orchestration.sensors import SEGMENTATION_SENSORS, ensure_folders, incoming_dir

__all__ = ["build_resources", "defs", "reclustering_job", "segmentation_job"]


def build_resources(warehouse_path: str | None = None) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(database=str(warehouse_path or default_warehouse_path())),
        "segmentation": SegmentationSettings(),
    }


# The drop, archive and rejected folders exist as soon as the code location loads (a fresh clone has none). Where
# they cannot be created the location still loads (the UI and runs by hand do not need them): one line says so
# here, and the sensor's skip message says it at every evaluation.
_folders_problem = ensure_folders(incoming_dir())
if _folders_problem is not None:
    dg.get_dagster_logger().warning(_folders_problem)

defs = dg.Definitions(
    assets=document_assets(SEGMENTATION_ASSETS),  # with a reference to the code of each
    asset_checks=SEGMENTATION_CHECKS,
    jobs=[segmentation_job, reclustering_job, decisions_maintenance_job],
    sensors=SEGMENTATION_SENSORS,
    schedules=[weekly_reclustering_schedule, decisions_maintenance_schedule],
    resources=build_resources(),
    # A run uses the loggers its run config names (none: Dagster's default console logger). `segmentation run`
    # names "terminal".
    loggers={"console": dg.colored_console_logger, "terminal": terminal_logger},
)
