"""The jobs of the code location (in their own module so that sensors and schedules can target them without
importing ``definitions``)."""

import dagster as dg

from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS

# In one process: the steps share one DuckDB file and run one at a time anyway (pool segmentation_warehouse), so a
# process per step (Dagster's default) would only add ~6 s of start-up to every step.
segmentation_job = dg.define_asset_job(
    "segmentation_job",
    executor_def=dg.in_process_executor,
    selection=dg.AssetSelection.assets(*SEGMENTATION_ASSETS),
    description="Ingest a workbook and re-segment every customer: raw_workbook through segment_report.",
)

reclustering_job = dg.define_asset_job(
    "reclustering_job",
    executor_def=dg.in_process_executor,
    selection=dg.AssetSelection.assets("kmeans_model").downstream(),
    description=(
        "Re-cluster the latest accepted data (cleaned_customers already in the warehouse): kmeans_model through "
        "segment_report, with stable cluster ids, registry, migrations and drift."
    ),
)
