"""The API decision log's upkeep as a Dagster job: compact segments into daily files, then apply retention, on a
daily schedule (``warehouse.decisions.maintain``; the same as ``segmentation decisions compact``)."""

import os

import dagster as dg

from segmentation_pipeline.orchestration.resources import WarehouseResource
from segmentation_pipeline.warehouse import decisions

COMPACT_CRON_ENV = "SEGMENTATION_DECISIONS_COMPACT_CRON"
DEFAULT_COMPACT_CRON = "30 1 * * *"  # every night at 01:30, when the API is quietest


@dg.op(description="Compact the scoring API's decision-log segments into daily files and remove days beyond "
       "retention ($SEGMENTATION_DECISIONS_COMPACT_AFTER, $SEGMENTATION_DECISIONS_RETENTION).")  # fmt: skip
def compact_api_decisions(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    folder = decisions.folder_for(warehouse.database)
    try:
        older_than, retention = decisions.maintenance_from_environment()
    except decisions.DecisionSettingsError as error:
        raise dg.Failure(description=str(error)) from None
    if not folder.is_dir():
        context.log.info(f"no decision log at {folder} yet: nothing to do")
        return
    done = decisions.maintain(folder, older_than=older_than, retention=retention)
    context.log.info(
        f"{folder}: {done.compacted_segments} segment(s) compacted into daily files {done.days_written or 'none'}; "
        f"days removed: {done.days_removed or 'none'}"
    )


@dg.job(description="Compact the scoring API's decision log and apply its retention.")
def decisions_maintenance_job() -> None:
    compact_api_decisions()


def build_decisions_schedule(cron: str | None = None) -> dg.ScheduleDefinition:
    """Nightly upkeep: ``cron``, else $SEGMENTATION_DECISIONS_COMPACT_CRON, else 01:30 UTC. An invalid cron string
    raises ValueError naming the variable (the code location then fails to load with that sentence)."""
    cron = (cron or os.environ.get(COMPACT_CRON_ENV) or DEFAULT_COMPACT_CRON).strip()
    try:
        return dg.ScheduleDefinition(
            name="decisions_maintenance_schedule",
            cron_schedule=cron,
            job=decisions_maintenance_job,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,  # `dagster dev` runs the daemon: it ticks out of the box
            description="The API decision log's segments into daily files, and days beyond retention removed.",
        )
    except dg.DagsterInvalidDefinitionError:
        example = repr(DEFAULT_COMPACT_CRON)
        raise ValueError(f"{COMPACT_CRON_ENV}={cron!r} is not a valid cron string (e.g. {example})") from None


decisions_maintenance_schedule = build_decisions_schedule()
