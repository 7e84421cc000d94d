"""The jobs of the code location (in their own module so that sensors and schedules can target them without
importing ``definitions``)."""

import dagster as dg

from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS

segmentation_job = dg.define_asset_job(
    "segmentation_job",
    selection=dg.AssetSelection.assets(*SEGMENTATION_ASSETS),
    description="Ingest a workbook and re-segment every customer: raw_workbook through segment_report.",
)

reclustering_job = dg.define_asset_job(
    "reclustering_job",
    selection=dg.AssetSelection.assets("kmeans_model").downstream(),
    description=(
        "Re-cluster the latest accepted data (cleaned_customers already in the warehouse): kmeans_model through "
        "segment_report, with stable cluster ids, registry, migrations and drift."
    ),
)
