"""The Dagster code location: what `dagster dev` (via workspace.yaml) loads."""

from __future__ import annotations

import dagster as dg

from segmentation_pipeline.config import default_warehouse_path
from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS
from segmentation_pipeline.orchestration.checks import SEGMENTATION_CHECKS
from segmentation_pipeline.orchestration.resources import SegmentationSettings, WarehouseResource

segmentation_job = dg.define_asset_job(
    "segmentation_job",
    selection=dg.AssetSelection.assets(*SEGMENTATION_ASSETS),
    description="Ingest a workbook and re-segment every customer: raw_workbook through segment_report.",
)


def build_resources(warehouse_path: str | None = None) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(database=str(warehouse_path or default_warehouse_path())),
        "segmentation": SegmentationSettings(),
    }


defs = dg.Definitions(
    assets=SEGMENTATION_ASSETS,
    asset_checks=SEGMENTATION_CHECKS,
    jobs=[segmentation_job],
    resources=build_resources(),
)
