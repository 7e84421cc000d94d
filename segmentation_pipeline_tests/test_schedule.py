"""The weekly re-clustering schedule: its definition (cron, env override, target job), its evaluation, and a real
run of the job it launches on a warehouse holding accepted data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.definitions import build_resources, defs
from segmentation_pipeline.orchestration.resources import WarehouseResource
from segmentation_pipeline.orchestration.schedules import (
    DEFAULT_RECLUSTER_CRON,
    RECLUSTER_CRON_ENV,
    build_reclustering_schedule,
)
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse, registry
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings

RECLUSTERED = {"customer_features", "pca_embedding", "kmeans_model", "cluster_assignments", "rating_reasons",
               "segment_profiles", "segment_report", "published_snapshot"}  # fmt: skip


def test_schedule_definition_in_the_code_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECLUSTER_CRON_ENV, raising=False)
    schedule = defs.resolve_schedule_def("weekly_reclustering_schedule")
    assert schedule.job_name == "reclustering_job"
    assert build_reclustering_schedule().cron_schedule == DEFAULT_RECLUSTER_CRON == "0 6 * * 1"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC"
    job = defs.resolve_job_def("reclustering_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == RECLUSTERED
    # The sensors are there too, running by default (dagster dev starts the daemon).
    for name in ("new_workbook_sensor", "archive_accepted_workbook", "reject_failed_workbook"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_cron_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RECLUSTER_CRON_ENV, "30 2 * * *")
    assert build_reclustering_schedule().cron_schedule == "30 2 * * *"
    # Dagster's rule: five fields, and no date that never comes (the 30th of February).
    for invalid in ("every monday", "0 6 * * 1 2026", "0 6 30 2 *"):
        monkeypatch.setenv(RECLUSTER_CRON_ENV, invalid)
        with pytest.raises(ValueError, match=f"{RECLUSTER_CRON_ENV}=.* is not a valid cron string"):
            build_reclustering_schedule()


def test_schedule_skips_without_data_and_reclusters_the_latest_accepted_data(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    schedule = build_reclustering_schedule()
    when = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        resources = {"warehouse": WarehouseResource(database=str(db))}
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources=resources,
                                            repository_def=defs.get_repository_def())  # fmt: skip
        assert isinstance(schedule.evaluate_tick(context).skip_message, str)  # nothing accepted yet

        path = write_export(generate_export(1500, seed=6), tmp_path / "export.csv")
        assert materialize_file(path, db, instance=instance).success
        warehouse = Warehouse(db)
        cleaned_run = warehouse.query("SELECT any_value(_run_id) AS r FROM cleaned_customers")["r"].iloc[0]
        first = registry.active_version(warehouse)

        (request,) = schedule.evaluate_tick(context).run_requests
        assert request.tags["segmentation/trigger"] == "weekly_reclustering"
        export = Warehouse(db).query("SELECT export_key FROM snapshots WHERE status = 'published'").iloc[0, 0]
        assert request.partition_key == export and request.run_key == f"{export}@{when.isoformat()}"

        # What the daemon would launch: the code location's reclustering_job with the request's tags, on the same
        # warehouse.
        job_resources = build_resources(str(db))
        job_resources["segmentation"] = settings(random_state=1)
        job = defs.resolve_job_def(schedule.job_name)
        result = job.execute_in_process(
            tags=request.tags, resources=job_resources, instance=instance, partition_key=request.partition_key,
            raise_on_error=False,
        )
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == RECLUSTERED  # raw_workbook and cleaned_customers are not touched ...
        assert warehouse.query("SELECT any_value(_run_id) AS r FROM cleaned_customers")["r"].iloc[0] == cleaned_run
        # ... a new model version is registered and activated, with its stability against the previous one.
        second = registry.active_version(warehouse)
        assert second != first
        stability = warehouse.query("SELECT * FROM model_stability WHERE run_id = ?", [result.run_id])
        assert stability.set_index("feature").loc["clusters", "value"] > 0.9
        assert set(warehouse.read_table("cluster_assignments")["model_version"]) == {second}
