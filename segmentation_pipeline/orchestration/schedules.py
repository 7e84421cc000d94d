"""Scheduled re-clustering: re-fit the segmentation on the latest accepted data every week (cron configurable)."""

import os

import dagster as dg

from segmentation_pipeline.orchestration.jobs import reclustering_job
from segmentation_pipeline.orchestration.resources import WarehouseResource
from segmentation_pipeline.warehouse import snapshots

RECLUSTER_CRON_ENV = "SEGMENTATION_RECLUSTER_CRON"
RECLUSTER_TIMEZONE_ENV = "SEGMENTATION_RECLUSTER_TIMEZONE"
DEFAULT_RECLUSTER_CRON = "0 6 * * 1"  # Mondays 06:00, before the analysts start the week


def recluster_cron() -> str:
    """$SEGMENTATION_RECLUSTER_CRON, else every Monday at 06:00. Raises ValueError on an invalid cron string
    (the code location then fails to load with that message, instead of a schedule that never ticks)."""
    cron = (os.environ.get(RECLUSTER_CRON_ENV) or DEFAULT_RECLUSTER_CRON).strip()
    try:
        # Dagster's own rule (5 fields, no 30th of February, ...): the definition it would refuse to load.
        dg.ScheduleDefinition(name="recluster_cron_check", cron_schedule=cron, job_name=reclustering_job.name)
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(
            f"{RECLUSTER_CRON_ENV}={cron!r} is not a valid cron string (e.g. {DEFAULT_RECLUSTER_CRON!r})"
        ) from None
    return cron


def build_reclustering_schedule(cron: str | None = None) -> dg.ScheduleDefinition:
    """The weekly re-clustering schedule (a function so tests can build it with another cron)."""

    @dg.schedule(
        name="weekly_reclustering_schedule",
        job=reclustering_job,
        cron_schedule=cron or recluster_cron(),
        execution_timezone=os.environ.get(RECLUSTER_TIMEZONE_ENV) or "UTC",
        # `dagster dev` runs the daemon: the schedule ticks out of the box (turn it off under Automation).
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-cluster the latest accepted data (customer_features -> segment_report) on a cron.",
    )
    def weekly_reclustering_schedule(
        context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
    ) -> dg.RunRequest | dg.SkipReason:
        # The published export's partition is refreshed; nothing published yet: nothing to re-cluster.
        export = snapshots.published_export(warehouse.store())
        if export is None:
            return dg.SkipReason(f"no published export in {warehouse.database} yet: drop a workbook first")
        scheduled = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"{export}@{scheduled.isoformat()}" if scheduled else None,
            partition_key=export,
            tags={"segmentation/trigger": "weekly_reclustering"},
        )

    return weekly_reclustering_schedule


weekly_reclustering_schedule = build_reclustering_schedule()
