"""Run the whole asset graph in-process (what `segmentation run` and the tests call) and summarise it."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from segmentation_pipeline.definitions import build_resources
from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS
from segmentation_pipeline.orchestration.checks import SEGMENTATION_CHECKS
from segmentation_pipeline.orchestration.failures import step_failure_reason
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import served_version

_PROGRESS_EVENTS = {"STEP_START": "started", "STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED"}


@dataclass
class RunSummary:
    success: bool
    run_id: str
    error: str | None = None
    customers: int = 0
    k: int = 0
    silhouette: float = float("nan")
    davies_bouldin: float = float("nan")
    tier_counts: dict[str, int] = field(default_factory=dict)
    report_path: str | None = None
    model_version: str | None = None


@dg.logger(description="One short line per step, for a person watching a terminal.")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    class _Progress(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            meta = record.__dict__.get("dagster_meta") or {}
            event = meta.get("dagster_event")
            step = meta.get("step_key") or ""
            if event is not None and event.event_type_value in _PROGRESS_EVENTS:
                print(f"  {step:<22} {_PROGRESS_EVENTS[event.event_type_value]}", file=sys.stderr, flush=True)
            elif event is None and record.levelno >= logging.WARNING and "Not executing" not in record.getMessage():
                print(f"  {step:<22} {meta.get('orig_message', record.getMessage())}", file=sys.stderr, flush=True)

    log = logging.getLogger("segmentation.progress")
    log.setLevel(logging.DEBUG)  # step events arrive at DEBUG; the handler picks what to show
    log.handlers = [_Progress()]
    log.propagate = False
    return log


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's reason, else the failed blocking check: the one line an analyst should read."""
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            evaluation = event.event_specific_data
            asset = evaluation.asset_key.to_user_string()
            check_failure = f"data quality check {evaluation.check_name} on {asset} failed"
            return step_failure_reason(result.all_events, check_failure)
    return step_failure_reason(result.all_events)


def run_pipeline(
    input_path: Path,
    warehouse_path: Path,
    *,
    sheet: str | None = None,
    settings: SegmentationSettings | None = None,
    instance: dg.DagsterInstance | None = None,
    show_progress: bool = False,
) -> RunSummary:
    """Materialise every asset (and its checks) on ``input_path`` into ``warehouse_path``."""
    resources = build_resources(str(warehouse_path))
    if settings is not None:
        resources["segmentation"] = settings
    run_config: dict[str, object] = {
        "ops": {"raw_workbook": {"config": {"path": str(input_path), "sheet": sheet}}},
    }
    # Either our one-line-per-step progress, or Dagster's console logger limited to warnings: its DEBUG stream is
    # for the UI's event log, not for a terminal or a test log.
    run_config["loggers"] = {"progress": {}} if show_progress else {"console": {"config": {"log_level": "WARNING"}}}
    definitions = dg.Definitions(
        assets=SEGMENTATION_ASSETS,
        asset_checks=SEGMENTATION_CHECKS,
        resources=resources,
        loggers={"progress": progress_logger, "console": dg.colored_console_logger},
    )
    result = definitions.resolve_implicit_global_asset_job_def().execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False
    )
    if not result.success:
        return RunSummary(success=False, run_id=result.run_id, error=failure_reason(result))
    return summarise(Warehouse(warehouse_path), result.run_id)


def summarise(warehouse: Warehouse, run_id: str) -> RunSummary:
    # The model that tiers the customers is the served (active) one, which need not be this run's newest.
    with warehouse.connect(read_only=True) as connection:
        served = served_version(connection)
    model = warehouse.query(
        "SELECT model_version, k, silhouette, davies_bouldin FROM kmeans_model WHERE model_version = ?", [served]
    ).iloc[0]
    tiers = warehouse.query("SELECT risk_tier, count(*) AS n FROM cluster_assignments GROUP BY risk_tier")
    report = warehouse.query("SELECT latest_path FROM segment_report ORDER BY created_at DESC LIMIT 1")
    return RunSummary(
        success=True,
        run_id=run_id,
        customers=int(tiers["n"].sum()),
        k=int(model["k"]),
        silhouette=float(model["silhouette"]),
        davies_bouldin=float(model["davies_bouldin"]),
        tier_counts={str(t): int(n) for t, n in zip(tiers["risk_tier"], tiers["n"], strict=True)},
        report_path=str(report["latest_path"].iloc[0]) if len(report) else None,
        model_version=str(model["model_version"]),
    )
