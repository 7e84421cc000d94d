"""`dagster dev` for real, with the repository's dagster.yaml: the webserver and daemon on 127.0.0.1 load the
code location, show the asset graph, a run launched the way the UI launches it (GraphQL launchRun) materialises
every asset into the warehouse, and two runs submitted together go through the run queue one after the other."""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

from segmentation_pipeline.config import REPO_ROOT
from segmentation_pipeline.stages.ingestion import file_sha256
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline_tests.automation_helpers import FAST
from segmentation_pipeline_tests.automation_helpers import dagster_dev as run_dagster_dev

pytestmark = pytest.mark.slow  # real servers on 127.0.0.1; `make test` runs them all the same

ASSETS = {"raw_workbook", "cleaned_customers", "customer_features", "pca_embedding", "kmeans_model",
          "cluster_assignments", "segment_report"}  # fmt: skip


def _graphql(url: str, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    payload = response.json()
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    folder = tmp_path_factory.mktemp("dagster_dev")  # no incoming/ folder: loading the code location creates it
    # The team's instance: dagster.yaml's run queue and pool (its storage paths are relative to the working
    # directory, as when `dagster dev` runs from the repository root).
    shutil.copy(REPO_ROOT / "dagster.yaml", folder / "dagster.yaml")
    warehouse = folder / "warehouse.duckdb"
    env = {
        "DAGSTER_HOME": str(folder),
        "SEGMENTATION_WAREHOUSE": str(warehouse),
        "SEGMENTATION_INCOMING": str(folder / "incoming"),
    }
    with run_dagster_dev(folder, env) as url:
        yield url, warehouse, folder


def test_asset_graph_is_served_with_groups_and_descriptions(dagster_dev) -> None:
    url, _, folder = dagster_dev
    data = _graphql(url, "{ assetNodes { assetKey { path } groupName description } }")
    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(nodes) >= ASSETS
    for name in ASSETS:
        assert nodes[name]["groupName"] == "segmentation"
        assert nodes[name]["description"]
    # Loading the code location created the drop, archive and rejected folders (a fresh clone has none).
    assert all((folder / name).is_dir() for name in ("incoming", "archive", "rejected"))


def test_run_launched_like_the_ui_materialises_the_warehouse(dagster_dev) -> None:
    url, warehouse, folder = dagster_dev
    workbook = write_export(generate_export(500, seed=8), folder / "ui.xlsx")
    # As in the UI: the export is a partition of `exports` (added with "Add partition"), then materialised.
    key = file_sha256(workbook)[:16]
    _add_partition(url, key)
    launched = _graphql(
        url,
        """mutation Launch($params: ExecutionParams!) {
             launchRun(executionParams: $params) {
               __typename
               ... on LaunchRunSuccess { run { runId } }
               ... on PythonError { message }
               ... on RunConfigValidationInvalid { errors { message } }
             }
           }""",
        {
            "params": {
                "selector": {"repositoryLocationName": "segmentation_pipeline", "repositoryName": "__repository__",
                             "jobName": "segmentation_job"},  # fmt: skip
                "runConfigData": {"ops": {"raw_workbook": {"config": {"path": str(workbook)}}},
                                  "resources": {"segmentation": {"config": {"n_init": 2}}}},  # fmt: skip
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        status = _graphql(url, 'query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }',
                          {"id": run_id})["runOrError"]["status"]  # fmt: skip
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(2)
    assert status == "SUCCESS"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        tables = {row[0] for row in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert tables >= ASSETS
        assert connection.execute("SELECT count(*) FROM cluster_assignments").fetchone()[0] == 500
        assert connection.execute("SELECT count(*) > 0 FROM lineage WHERE run_id = ?", [run_id]).fetchone()[0]

def _add_partition(url: str, key: str) -> None:
    added = _graphql(
        url,
        """mutation Add($selector: RepositorySelector!, $key: String!) {
             addDynamicPartition(repositorySelector: $selector, partitionsDefName: "exports", partitionKey: $key) {
               __typename
             }
           }""",
        {"selector": {"repositoryLocationName": "segmentation_pipeline", "repositoryName": "__repository__"},
         "key": key},
    )["addDynamicPartition"]  # fmt: skip
    assert added["__typename"] == "AddDynamicPartitionSuccess", added


def test_two_runs_launched_together_through_the_queue_run_one_after_the_other(dagster_dev) -> None:
    """Two segmentation_job runs submitted back to back: the daemon starts the second only once the first has
    finished (dagster.yaml's run queue and pool), and both succeed on the one DuckDB file. (Without dagster.yaml's
    concurrency section, or with its pool but not its queue limit, the daemon starts both at once and this fails.)"""
    url, warehouse, folder = dagster_dev
    export = write_export(generate_export(600, seed=3), folder / "queued.csv")
    key = file_sha256(export)[:16]  # the export's partition, as the sensor adds it
    _add_partition(url, key)
    client = DagsterGraphQLClient(urlsplit(url).hostname, port_number=urlsplit(url).port)
    run_config = {"ops": {"raw_workbook": {"config": {"path": str(export)}}},
                  "resources": {"segmentation": {"config": FAST}}}  # fmt: skip
    run_ids = [client.submit_job_execution("segmentation_job", run_config=run_config,
                                           tags={"dagster/partition": key}) for _ in range(2)]  # fmt: skip
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status startTime endTime } } }"
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        runs = [_graphql(url, query, {"id": run_id})["runOrError"] for run_id in run_ids]
        if all(run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for run in runs):
            break
        time.sleep(2)
    assert [run["status"] for run in runs] == ["SUCCESS"] * 2, (folder / "dagster_dev.log").read_text()[-3000:]
    first, second = sorted(runs, key=lambda run: run["startTime"])
    assert first["endTime"] <= second["startTime"], "the two warehouse-writing runs overlapped"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        written = connection.execute("SELECT count(DISTINCT run_id) FROM lineage WHERE list_contains(?, run_id)",
                                     [run_ids]).fetchone()[0]  # fmt: skip
    assert written == 2
