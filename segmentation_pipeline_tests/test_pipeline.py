"""The whole asset graph, materialised for real into a DuckDB file, and the `segmentation` CLI on top of it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.cli import main as cli_main
from segmentation_pipeline.config import REPO_ROOT
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.synthetic import generate_export, write_export, write_labels
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings

ASSET_KEYS = [
    "raw_workbook",
    "cleaned_customers",
    "customer_features",
    "pca_embedding",
    "kmeans_model",
    "cluster_assignments",
    "rating_reasons",
    "segment_profiles",
    "segment_report",
    "published_snapshot",
]


@pytest.fixture(scope="module")
def workbook(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("workbook")
    export = generate_export(2500, seed=5)
    path = write_export(export, folder / "customers.xlsx")
    write_labels(export, folder / "customers.labels.csv")
    return path, export.labels


@pytest.fixture(scope="module")
def materialised(workbook, tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.ExecuteInProcessResult, Path]:
    path, _ = workbook
    database = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    return materialize_file(path, database, settings(n_init=4)), database


def test_definitions_expose_every_asset_with_group_and_description() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(ASSET_KEYS) <= keys
    for name in ASSET_KEYS:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "segmentation"
        assert node.description and len(node.description) > 40
    assert defs.resolve_job_def("segmentation_job") is not None
    upstream = {name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys} for name in ASSET_KEYS}
    assert upstream["cleaned_customers"] == {"raw_workbook"}
    assert upstream["segment_report"] == {"cluster_assignments"}


def test_materialisation_succeeds_with_checks_passing(materialised) -> None:
    result, _ = materialised
    assert result.success
    materialised_keys = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert set(ASSET_KEYS) <= materialised_keys
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {
        "unique_customer_ids", "required_columns_present", "values_in_range", "silhouette_above_floor",
        "every_customer_assigned_once", "tier_mix_within_bounds"}  # fmt: skip
    assert all(e.passed for e in evaluations)
    by_name = {e.check_name: e for e in evaluations}
    assigned = by_name["every_customer_assigned_once"]  # blocking, on cluster_assignments
    assert assigned.asset_key == dg.AssetKey("cluster_assignments") and assigned.blocking
    assert {k: assigned.metadata[k].value for k in ("missing", "extra", "duplicated")} == dict.fromkeys(
        ("missing", "extra", "duplicated"), 0)  # fmt: skip
    mix = by_name["tier_mix_within_bounds"]
    assert mix.asset_key == dg.AssetKey("cluster_assignments") and mix.severity == dg.AssetCheckSeverity.WARN
    shares = mix.metadata["shares"].value
    assert set(shares) == {"High", "Medium", "Low"} and abs(sum(shares.values()) - 1) < 1e-3
    assert by_name["ratings_meet_policy_floors"].asset_key == dg.AssetKey("cluster_assignments")


def test_every_asset_is_a_table_with_rows(materialised, workbook) -> None:
    _, database = materialised
    _, labels = workbook
    with duckdb.connect(str(database), read_only=True) as connection:
        tables = {row[0] for row in connection.execute(  # public names are views on the published snapshot
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}  # fmt: skip
        assert (set(ASSET_KEYS) - {"published_snapshot"}) | {"lineage", "snapshots", "rating_history"} <= tables
        count = dict(connection.execute(
            "SELECT 'raw', count(*) FROM raw_workbook UNION ALL SELECT 'clean', count(*) FROM cleaned_customers "
            "UNION ALL SELECT 'features', count(*) FROM customer_features UNION ALL SELECT 'pca', count(*) "
            "FROM pca_embedding UNION ALL SELECT 'assign', count(*) FROM cluster_assignments"
        ).fetchall())  # fmt: skip
        assert count["clean"] == len(labels) == count["features"] == count["pca"] == count["assign"]
        assert count["raw"] > count["clean"]  # some customers arrive as one row per channel
        raw_columns = [r[0] for r in connection.execute("DESCRIBE raw_workbook").fetchall()]
        assert {"CustomerID", "isPep", "DateofBirth", "DateofBirth__2"} <= set(raw_columns)
        assert {"_source_file", "_sheet", "_source_row", "_file_sha256", "_ingested_at", "_run_id"} <= set(raw_columns)
        model = connection.execute("SELECT k, silhouette, davies_bouldin, calinski_harabasz FROM kmeans_model").df()
        assert model["k"].iloc[0] == 3
        assert 0.1 < model["silhouette"].iloc[0] <= 1 and 0 < model["davies_bouldin"].iloc[0] < 3
        assignment_columns = [r[0] for r in connection.execute("DESCRIBE cluster_assignments").fetchall()]
        assert {"customer_id", "cluster", "risk_tier", "distance_to_centroid", "pc1", "pc2", "model_version",
                "run_id"} <= set(assignment_columns)  # fmt: skip
        lineage = connection.execute("SELECT asset_key, row_count, input_file_sha256 FROM lineage").df()
        assert set(ASSET_KEYS) - {"published_snapshot"} <= set(lineage["asset_key"])  # publishing writes no table
        assert lineage["input_file_sha256"].nunique() == 1
        report = connection.execute("SELECT path FROM segment_report").fetchone()[0]
    html = Path(report).read_text(encoding="utf-8")
    # plotly.js is inline (it is megabytes), and nothing is loaded from elsewhere.
    assert len(html) > 1_000_000 and "Plotly.newPlot" in html
    assert re.search(r"<script[^>]*\bsrc=", html) is None


def test_materialisations_show_the_columns_written_with_duckdb_types_and_descriptions(materialised) -> None:
    """What the UI shows after a run: each table's columns as DuckDB wrote them (names, order, DuckDB types), each
    described, and previews without long float tails."""
    result, database = materialised
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    with duckdb.connect(str(database), read_only=True) as connection:
        for table in set(ASSET_KEYS) - {"published_snapshot"}:
            shown = events[table]["dagster/column_schema"].schema.columns
            written = [tuple(row[:2]) for row in connection.execute(f"DESCRIBE {table}").fetchall()]
            assert [(c.name, c.type) for c in shown] == written, table
            assert all(c.description and "not in the column contract" not in c.description for c in shown), table
    assert events["pca_embedding"]["dagster/column_schema"].schema.columns[1].description.startswith(
        "coordinate on principal component 1")  # fmt: skip
    preview = events["cluster_assignments"]["preview"].md_str
    assert re.search(r"[0-9]\.[0-9]{5}", preview) is None and re.search(r"[0-9]\.[0-9]{1,4}\b", preview)


def test_planted_groups_recovered_and_high_group_tiered_high(materialised, workbook) -> None:
    _, database = materialised
    _, labels = workbook
    with duckdb.connect(str(database), read_only=True) as connection:
        assignments = connection.execute("SELECT customer_id, cluster, risk_tier FROM cluster_assignments").df()
    joined = assignments.merge(labels, on="customer_id")
    assert adjusted_rand_score(joined["planted_group"], joined["cluster"]) >= 0.9
    high = joined[joined["planted_group"] == "high"]
    assert (high["risk_tier"] == "High").mean() > 0.95


def test_cli_run_recovers_planted_groups_and_keeps_its_run_history(
    workbook, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, labels = workbook
    database = tmp_path / "cli.duckdb"
    # As `make run` from the repository root: DAGSTER_HOME unset, the repository's dagster.yaml in the working
    # directory. The run is recorded where `dg dev` started there reads (its storage paths are relative to it).
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", project / "dagster.yaml")
    monkeypatch.chdir(project)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("SEGMENTATION_RUN_HISTORY", raising=False)  # (the suite's own runs keep none)
    assert cli_main(["run", "--input", str(path), "--warehouse", str(database)]) == 0
    captured = capsys.readouterr()
    assert f"run history: Dagster instance of {project / 'dagster.yaml'}" in captured.err.splitlines()
    assert (project / ".dagster_home" / "storage" / "history" / "runs.db").is_file()
    monkeypatch.setenv("DAGSTER_HOME", str(project))  # the same instance, opened as `dg dev` would with it set
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records()
        assert [record.dagster_run.status for record in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].dagster_run.job_name == "segmentation_job"
        for name in ASSET_KEYS:
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            assert event is not None and event.run_id == runs[0].dagster_run.run_id, name
        logs = instance.all_logs(runs[0].dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        evaluations = [entry.dagster_event.asset_check_evaluation_data for entry in logs]
        checks = {evaluation.check_name: evaluation.passed for evaluation in evaluations}
    expected = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert set(checks) == expected, checks  # every check's result is recorded (passed or not)
    out = captured.out
    assert "customers:       2500" in out and "silhouette:" in out and "report:" in out
    # Progress on stderr: one short line per finished step (asset or check), nothing of Dagster's DEBUG stream.
    done = [name for line in captured.err.splitlines() if line.startswith("  ") and line.endswith(" done")
            for name in line.removesuffix(" done").strip().split(" + ")]  # fmt: skip
    assert set(ASSET_KEYS) <= set(done) and len(done) == len(set(done))
    assert "DEBUG" not in captured.err and "STEP_SUCCESS" not in captured.err
    with duckdb.connect(str(database), read_only=True) as connection:
        assignments = connection.execute("SELECT customer_id, cluster, risk_tier FROM cluster_assignments").df()
    joined = assignments.merge(labels, on="customer_id")
    assert adjusted_rand_score(joined["planted_group"], joined["cluster"]) >= 0.9
    assert joined.loc[joined["planted_group"] == "high", "risk_tier"].eq("High").mean() > 0.95


def test_cli_bad_file_one_line_no_traceback_and_warehouse_intact(materialised, tmp_path: Path) -> None:
    _, database = materialised
    with duckdb.connect(str(database), read_only=True) as connection:
        before = connection.execute("SELECT count(*), min(model_version) FROM cluster_assignments").fetchone()
    bad = tmp_path / "broken.xlsx"
    bad.write_bytes(b"this is not a workbook at all\n" * 10)
    process = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.cli", "run", "--input", str(bad), "--warehouse", str(database)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode != 0
    assert "Traceback" not in process.stderr + process.stdout and "Stack Trace" not in process.stderr
    assert "  cleaned_customers + raw_workbook FAILED" in process.stderr.splitlines()
    error_lines = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "broken.xlsx" in error_lines[0]
    with duckdb.connect(str(database), read_only=True) as connection:
        after = connection.execute("SELECT count(*), min(model_version) FROM cluster_assignments").fetchone()
    assert after == before


def test_cli_generate_writes_workbook_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "g.xlsx"
    assert cli_main(["generate", "--rows", "50", "--out", str(out), "--seed", "3"]) == 0
    assert out.exists() and (tmp_path / "g.labels.csv").exists()
    assert len(pd.read_csv(tmp_path / "g.labels.csv")) == 50
