"""Run the code location's segmentation_job in-process (what `segmentation run` and the tests call) and summarise it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from segmentation_pipeline.config import staging_dir
from segmentation_pipeline.definitions import build_resources, defs
from segmentation_pipeline.orchestration.failures import step_failure_reason
from segmentation_pipeline.orchestration.partitions import EXPORTS, export_key
from segmentation_pipeline.orchestration.progress import PROGRESS_HOOKS
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.stages.ingestion import StagingError, read_ahead, stage_file
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import served_version
from segmentation_pipeline.warehouse.store import WarehouseUnavailable

INSTANCE_CONFIG = "dagster.yaml"
HISTORY_ENV = "SEGMENTATION_RUN_HISTORY"  # "off": a run is recorded nowhere (CI, tests, one-off runs)


def open_run_history(dagster_home: str | Path | None = None) -> tuple[dg.DagsterInstance, str]:
    """The Dagster instance a `segmentation run` records its run, materialisations and check results in, and where
    that is in words. It is the one `dg dev` (or `dagster dev`) shows when started from the same directory:

    - ``dagster_home`` (``--dagster-home``), else ``$DAGSTER_HOME``: that folder's instance, configured by its
      dagster.yaml if it has one (the folder is created if missing);
    - else the working directory's dagster.yaml, as `dg dev` reads it with DAGSTER_HOME unset (the repository's,
      from its root: SQLite storage under .dagster_home/, created on first use);
    - else an ephemeral instance: the run is kept nowhere; so too with ``$SEGMENTATION_RUN_HISTORY`` set to ``off``
      (no instance set up on disk: the test suite's and one-off runs').

    Relative paths in a dagster.yaml are relative to the working directory, for Dagster and so here."""
    if dagster_home is None and os.environ.get(HISTORY_ENV, "").strip().lower() == "off":
        return dg.DagsterInstance.ephemeral(), f"not kept ({HISTORY_ENV}=off)"
    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if home:
        folder = Path(home).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.from_config(str(folder)), f"Dagster instance {folder}"
    config = Path.cwd() / INSTANCE_CONFIG
    if config.is_file():
        return dg.DagsterInstance.from_config(str(config.parent)), f"Dagster instance of {config}"
    return dg.DagsterInstance.ephemeral(), f"not kept (DAGSTER_HOME unset and no {INSTANCE_CONFIG} here)"


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
    raised_by_rule: dict[str, int] = field(default_factory=dict)
    report_path: str | None = None
    model_version: str | None = None


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """The failed blocking check's sentence, else the first failed step's reason: the one line to read."""
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.blocking:
            asset = evaluation.asset_key.to_user_string()
            reason = f"data quality check {evaluation.check_name} on {asset} failed"
            return f"{reason}: {evaluation.description}" if evaluation.description else reason
    return step_failure_reason(result.all_events)


def execute_segmentation_job(
    input_path: Path,
    warehouse_path: Path,
    *,
    sheet: str | None = None,
    settings: SegmentationSettings | None = None,
    instance: dg.DagsterInstance | None = None,
    show_progress: bool = False,
) -> dg.ExecuteInProcessResult:
    """segmentation_job of the code location (``defs``, as `dagster dev` runs it) on ``input_path``, writing
    ``warehouse_path`` with ``settings``. The file is first copied into the content-addressed ``staging/`` folder
    beside the warehouse and added as a partition of ``exports`` (its key: the start of its SHA-256), as the drop
    folder's sensor does: the run reads that copy. Never raises on a failed run (check ``.success``); raises
    OSError when the file cannot be read at all."""
    staged, sha = stage_file(input_path, staging_dir(warehouse_path))
    key = export_key(sha)
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPORTS.name, [key])
    job = defs.resolve_job_def("segmentation_job")
    if show_progress:
        job = job.with_hooks(PROGRESS_HOOKS)
    resources = build_resources(str(warehouse_path))
    if settings is not None:
        resources["segmentation"] = settings
    run_config: dict[str, object] = {
        "ops": {"raw_workbook": {"config": {"path": str(staged), "sheet": sheet, "name": Path(input_path).name}}},
        # Either one short line per step and warning, or Dagster's console logger limited to warnings: its DEBUG
        # stream is for the UI's event log, not for a terminal or a test log.
        "loggers": {"terminal": {}} if show_progress else {"console": {"config": {"log_level": "WARNING"}}},
    }
    with read_ahead(staged, sheet, name=Path(input_path).name):  # read while Dagster sets the run up
        return job.execute_in_process(
            run_config=run_config, resources=resources, instance=instance, partition_key=key, raise_on_error=False
        )


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
    try:
        Warehouse(warehouse_path).check_usable()  # before staging a copy beside it: said at once, in one line
    except WarehouseUnavailable as error:
        return RunSummary(success=False, run_id="", error=str(error))
    try:
        result = execute_segmentation_job(
            input_path, warehouse_path, sheet=sheet, settings=settings, instance=instance, show_progress=show_progress
        )
    except StagingError as error:
        return RunSummary(success=False, run_id="", error=str(error))
    except FileNotFoundError:
        return RunSummary(success=False, run_id="", error=f"{Path(input_path).name}: file not found")
    except OSError as error:
        return RunSummary(success=False, run_id="", error=f"{Path(input_path).name}: cannot be read "
                                                          f"({error.strerror or 'not a readable file'})")  # fmt: skip
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
    raised = warehouse.query("SELECT item, customers FROM rating_governance WHERE measure = 'rule_raised'")
    return RunSummary(
        success=True,
        run_id=run_id,
        customers=int(tiers["n"].sum()),
        k=int(model["k"]),
        silhouette=float(model["silhouette"]),
        davies_bouldin=float(model["davies_bouldin"]),
        tier_counts={str(t): int(n) for t, n in zip(tiers["risk_tier"], tiers["n"], strict=True)},
        raised_by_rule={str(r): int(n) for r, n in zip(raised["item"], raised["customers"], strict=True)},
        report_path=str(report["latest_path"].iloc[0]) if len(report) else None,
        model_version=str(model["model_version"]),
    )
