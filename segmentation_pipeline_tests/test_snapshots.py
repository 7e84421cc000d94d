"""Every run writes its own snapshot and publishes it all or nothing (its faults: test_faults.py); every published
rating can be reconstructed later (``segmentation explain --as-of``); one partition per export."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from segmentation_pipeline.cli import main as cli_main
from segmentation_pipeline.definitions import build_resources, defs
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.stages.ingestion import file_sha256
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse, registry, snapshots
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings
from segmentation_pipeline_tests.conftest import TrainedWarehouse
from segmentation_pipeline_tests.snapshot_helpers import views_point_at_one_snapshot

FAST = settings(n_init=2)


def test_public_names_read_one_published_snapshot(trained_warehouse: TrainedWarehouse) -> None:
    schemas = views_point_at_one_snapshot(trained_warehouse.path)
    assert len(schemas) == 1 and next(iter(schemas)).startswith("snapshot_")
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        published = connection.execute("SELECT count(*) FROM snapshots WHERE status = 'published'").fetchone()[0]
        customers = connection.execute("SELECT count(*) FROM cluster_assignments").fetchone()[0]
        history = connection.execute("SELECT count(*) FROM rating_history").fetchone()[0]
        reasons = connection.execute("SELECT count(*) FROM rating_reasons").fetchone()[0]
    assert published == 1 and customers == history and reasons == 3 * customers


def test_explain_reconstructs_the_rating_at_any_moment(
    warehouse_copy: Path, trained_warehouse: TrainedWarehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Warehouse(warehouse_copy)
    low = store.query("SELECT min(customer_id) FROM cluster_assignments WHERE risk_tier = 'Low'")
    customer = str(low.iloc[0, 0])
    first = snapshots.explain(store, customer)
    assert first is not None and first["risk_tier"] == "Low" and len(first["reasons"]) == 3
    between = datetime.now().astimezone()
    time.sleep(0.05)
    # The next export: the same customers, this one now previously reported with alerts and a CTR match.
    frame = pd.read_csv(trained_warehouse.source, dtype=str, keep_default_na=False)
    rows = frame["CustomerID"] == str(customer)
    frame.loc[rows, ["PreviouslyReported", "CTRMatch", "NumAlerts", "isPep"]] = ["1", "1", "9", "1"]
    second_file = tmp_path / "second.csv"
    frame.to_csv(second_file, index=False)
    assert run_pipeline(second_file, warehouse_copy, settings=FAST).success
    now = snapshots.explain(store, customer)
    assert now is not None and now["snapshot"] != first["snapshot"] and now["risk_score"] > first["risk_score"]
    assert snapshots.explain(store, customer, between) == first  # as it was published then, reasons included
    assert cli_main(["explain", str(customer), "--as-of", between.isoformat(), "--warehouse", str(warehouse_copy),
                     "--json"]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert {"customer_id", "risk_tier", "risk_score", "cluster", "model_version", "snapshot", "published_at",
            "reasons"} <= set(answer) and answer["snapshot"] == first["snapshot"]  # fmt: skip
    assert cli_main(["explain", str(customer), "--warehouse", str(warehouse_copy)]) == 0
    text = capsys.readouterr().out
    assert f"customer {customer}:" in text and "reasons:" in text and now["snapshot"] in text
    assert cli_main(["explain", str(customer), "--as-of", "2001-01-01", "--warehouse", str(warehouse_copy)]) == 1
    assert "no published rating at 2001-01-01" in capsys.readouterr().err


def test_retention_drops_superseded_snapshots_but_keeps_their_history(
    warehouse_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(snapshots.KEEP_SNAPSHOTS_ENV, "1")
    for seed in (41, 42):
        assert run_pipeline(write_export(generate_export(300, seed=seed), tmp_path / f"{seed}.csv"), warehouse_copy,
                            settings=FAST).success  # fmt: skip
    with duckdb.connect(str(warehouse_copy), read_only=True) as connection:
        rows = connection.execute("SELECT status, schema_name FROM snapshots WHERE status <> 'failed' "
                                  "ORDER BY published_at").fetchall()  # fmt: skip
        schemas = {r[0] for r in connection.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        history = dict(connection.execute("SELECT snapshot_id, count(*) FROM rating_history GROUP BY ALL").fetchall())
    assert [status for status, _ in rows] == ["superseded"] * 2 + ["published"]
    kept = [schema for _, schema in rows if schema in schemas]
    assert kept == [schema for _, schema in rows[-1:]]
    assert len(history) == 3  # every published rating stays reconstructable
    monkeypatch.setenv(snapshots.HISTORY_DAYS_ENV, "ten years")
    with pytest.raises(ValueError, match="^SEGMENTATION_HISTORY_DAYS='ten years' is not a positive whole number$"):
        snapshots.retention_from_environment()  # published_snapshot fails the run with this line (before writing)


def test_the_report_cannot_fail_a_good_run(warehouse_copy: Path, tmp_path: Path) -> None:
    """No Gender column and one City for everyone: the run publishes, the report says which charts it left out."""
    frame = generate_export(400, seed=12).to_frame()
    frame = frame.loc[:, ~frame.columns.duplicated()].drop(columns=["Gender"]).assign(City="LAHORE")
    path = tmp_path / "no_gender_one_city.csv"
    frame.to_csv(path, index=False)
    summary = run_pipeline(path, warehouse_copy, settings=FAST)
    assert summary.success, summary.error
    html = (warehouse_copy.parent / "reports" / "latest.html").read_text(encoding="utf-8")
    assert "Gender: gender is not in this export" in html and "city is not in this export" in html


def test_latest_report_follows_publication_after_a_kill_between(warehouse_copy: Path) -> None:
    """A kill after the publishing transaction but before latest.html was replaced: the next `segmentation report`
    or run puts it right (latest.html.snapshot names the snapshot it shows)."""
    latest = warehouse_copy.parent / "reports" / "latest.html"
    shutil.rmtree(latest.parent, ignore_errors=True)
    store = Warehouse(warehouse_copy)
    with store.connect(read_only=True) as connection:
        row = snapshots.published(connection)
    report = Path(str(row["report_path"]))
    latest.parent.mkdir(parents=True)
    shutil.copy(report, latest.parent / report.name)
    with store.connect() as connection:
        connection.execute("UPDATE snapshots SET report_path = ? WHERE status = 'published'",
                           [str(latest.parent / report.name)])  # fmt: skip
    assert snapshots.sync_latest_report(store, latest) is True
    assert latest.read_bytes() == report.read_bytes()
    assert snapshots.sync_latest_report(store, latest) is False  # already right


def test_each_export_is_a_partition_and_rebuilding_one_reads_its_staged_copy(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        good = write_export(generate_export(300, seed=51), tmp_path / "good.csv")
        assert materialize_file(good, warehouse, instance=instance).success
        key = file_sha256(good)[:16]
        assert instance.get_dynamic_partitions("exports") == [key]
        # A bad drop is a partition of its own that fails; the good export stays published.
        bad = tmp_path / "bad.csv"
        bad.write_text("CustomerID,ExpVolume\n1,10\n2,20\n")
        assert not run_pipeline(bad, warehouse, settings=FAST, instance=instance).success
        bad_key = file_sha256(bad)[:16]
        assert set(instance.get_dynamic_partitions("exports")) == {key, bad_key}
        assert snapshots.published_export(Warehouse(warehouse)) == key
        # Re-materialising the good partition as the UI does (no file named): its staged copy is read again and
        # a new snapshot of it is published.
        good.unlink()  # the dropped file is gone (archived); the staged copy is what counts
        resources = build_resources(str(warehouse))
        resources["segmentation"] = FAST
        result = defs.resolve_job_def("segmentation_job").execute_in_process(
            partition_key=key, resources=resources, instance=instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )  # fmt: skip
        assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute("SELECT export_key, status, source_path FROM snapshots WHERE status <> 'failed' "
                                  "ORDER BY created_at").fetchall()  # fmt: skip
    assert [(k, status) for k, status, _ in rows] == [(key, "superseded"), (key, "published")]
    assert Path(rows[-1][2]).parent == tmp_path / "staging" and Path(rows[-1][2]).name.startswith(key)
    # What the README says to do after promote or rollback: materialise cluster_assignments and what follows for
    # the published export. The run builds on the export's snapshot, scores with the active model, refits nothing.
    store = Warehouse(warehouse)
    _, restored = registry.rollback(store)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("exports", [key])
        rescored = defs.resolve_job_def("segmentation_job").execute_in_process(
            partition_key=key, resources=resources, instance=instance, raise_on_error=False,
            op_selection=["cluster_assignments", "segment_report", "published_snapshot"],
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )  # fmt: skip
    assert rescored.success
    assert set(store.query("SELECT model_version FROM cluster_assignments")["model_version"]) == {restored}
    assert len(store.query("SELECT * FROM model_versions")) == 2  # nothing refitted
