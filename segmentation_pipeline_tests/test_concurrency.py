"""Concurrency: warehouse-writing runs never overlap (pool + run queue from dagster.yaml), and a reader in another
process keeps querying while a run materialises, neither side failing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.config import REPO_ROOT
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS, WAREHOUSE_POOL
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline_tests.automation_helpers import materialize_file

pytestmark = pytest.mark.slow  # real servers on 127.0.0.1; `make test` runs them all the same

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def test_every_warehouse_writer_is_in_the_pool() -> None:
    assert {asset.op.pool for asset in SEGMENTATION_ASSETS} == {WAREHOUSE_POOL}
    for name in ("segmentation_job", "reclustering_job"):
        pools = {node.definition.pool for node in defs.resolve_job_def(name).graph.node_dict.values()}
        assert pools <= {WAREHOUSE_POOL, None} and WAREHOUSE_POOL in pools


@pytest.fixture
def team_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME holding the repository's dagster.yaml, the working directory beside it: as `dagster dev` run
    from the repo root gets it (the storage paths in dagster.yaml are relative to the working directory)."""
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def team_instance(team_home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as instance:
        yield instance


def test_dagster_yaml_persists_runs_and_sets_up_the_run_queue_and_the_pool(
    team_instance: dg.DagsterInstance, team_home: Path
) -> None:
    config = team_instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == 1
    assert config.pool_config.default_pool_limit == 1
    assert config.pool_config.pool_granularity.value == "run"
    assert isinstance(team_instance.run_coordinator, dg.QueuedRunCoordinator)
    assert (team_home / ".dagster_home" / "storage" / "history" / "runs.db").exists()  # persistent SQLite storage


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from segmentation_pipeline.warehouse import Warehouse
    from segmentation_pipeline.warehouse.models import load_model

    warehouse, stop, ready, out = Warehouse(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    done, errors, stamps, versions = 0, [], [], set()
    while not stop.exists():
        try:
            # What an analyst or the API does: short read-only queries, and loading the active model.
            row = warehouse.query(
                "SELECT count(*) AS n, any_value(model_version) AS v FROM cluster_assignments"
            ).iloc[0]
            assert int(row["n"]) > 0
            versions.add(str(row["v"]))
            if done % 10 == 0:
                versions.add(load_model(warehouse).version)
            done += 1
            stamps.append(time.time())
            ready.touch()
        except Exception as error:  # any failure is what the test is about
            errors.append(f"{type(error).__name__}: {error}")
        time.sleep(0.01)
    Path(out).write_text(json.dumps({"done": done, "errors": errors, "stamps": stamps, "versions": sorted(versions)}))
    """
)


def test_reader_process_queries_in_a_loop_while_a_run_materialises(warehouse_copy: Path, tmp_path: Path) -> None:
    db = warehouse_copy  # a published warehouse (the session's trained one) that a new run replaces
    path = write_export(generate_export(1500, seed=1), tmp_path / "export.csv")
    first = set(Warehouse(db).read_table("cluster_assignments")["model_version"])

    stop, ready, out = tmp_path / "stop", tmp_path / "ready", tmp_path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(stop), str(ready), str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        deadline = time.time() + 60
        while not ready.exists():  # the reader is up and has read once before the run starts
            assert reader.poll() is None and time.time() < deadline, "reader did not start"
            time.sleep(0.05)
        started = time.time()
        result = materialize_file(path, db)
        ended = time.time()
        assert result.success
        time.sleep(0.3)  # a few reads after the run too
    finally:
        stop.touch()
        reader.wait(timeout=60)
    report = json.loads(out.read_text())
    assert report["errors"] == []
    during = [s for s in report["stamps"] if started <= s <= ended]
    assert len(during) >= 10, f"only {len(during)} reads overlapped the run"
    # Readers saw the old model, then the new one: never a half-written table (the count is always > 0).
    second = set(Warehouse(db).read_table("cluster_assignments")["model_version"])
    assert second != first and set(report["versions"]) <= first | second
