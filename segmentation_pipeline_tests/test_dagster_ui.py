"""`dagster dev` for real: the webserver and daemon on 127.0.0.1 load the code location, show the asset graph,
and a run launched the way the UI launches it (GraphQL launchRun) materialises every asset into the warehouse."""

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from segmentation_pipeline.stages.ingestion import file_sha256
from segmentation_pipeline.synthetic import generate_export, write_export
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
    folder = tmp_path_factory.mktemp("dagster_dev")
    (folder / "home").mkdir()
    (folder / "incoming").mkdir()
    warehouse = folder / "warehouse.duckdb"
    env = {
        "DAGSTER_HOME": str(folder / "home"),
        "SEGMENTATION_WAREHOUSE": str(warehouse),
        "SEGMENTATION_INCOMING": str(folder / "incoming"),
    }
    with run_dagster_dev(folder, env) as url:
        yield url, warehouse, folder


def test_asset_graph_is_served_with_groups_and_descriptions(dagster_dev) -> None:
    url, _, _ = dagster_dev
    data = _graphql(url, "{ assetNodes { assetKey { path } groupName description } }")
    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(nodes) >= ASSETS
    for name in ASSETS:
        assert nodes[name]["groupName"] == "segmentation"
        assert nodes[name]["description"]


def test_run_launched_like_the_ui_materialises_the_warehouse(dagster_dev) -> None:
    url, warehouse, folder = dagster_dev
    workbook = write_export(generate_export(500, seed=8), folder / "ui.xlsx")
    # As in the UI: the export is a partition of `exports` (added with "Add partition"), then materialised.
    key = file_sha256(workbook)[:16]
    added = _graphql(
        url,
        """mutation Add($selector: RepositorySelector!, $key: String!) {
             addDynamicPartition(repositorySelector: $selector, partitionsDefName: "exports", partitionKey: $key) {
               __typename
             }
           }""",
        {"selector": {"repositoryLocationName": "segmentation_pipeline", "repositoryName": "__repository__"},
         "key": key},
    )["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added
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
        assert connection.execute("SELECT count(DISTINCT run_id) FROM lineage").fetchone()[0] == 1
