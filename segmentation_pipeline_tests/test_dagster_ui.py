"""`dagster dev` for real: the webserver and daemon on 127.0.0.1 load the code location, show the asset graph,
and a run launched the way the UI launches it (GraphQL launchRun) materialises every asset into the warehouse."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from segmentation_pipeline.synthetic import generate_export, write_export

pytestmark = pytest.mark.slow  # real servers on 127.0.0.1; `make test` runs them all the same

REPO = Path(__file__).resolve().parents[1]
ASSETS = {"raw_workbook", "cleaned_customers", "customer_features", "pca_embedding", "kmeans_model",
          "cluster_assignments", "segment_report"}  # fmt: skip
DAGSTER = Path(sys.executable).with_name("dagster")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(folder / "home"),
        "SEGMENTATION_WAREHOUSE": str(warehouse),
        "SEGMENTATION_INCOMING": str(folder / "incoming"),
    }
    log = (folder / "dagster_dev.log").open("w")
    process = subprocess.Popen(
        [str(DAGSTER), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not come up:\n{(folder / 'dagster_dev.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, warehouse, folder
    finally:
        os.killpg(process.pid, signal.SIGINT)  # dagster dev shuts its webserver and daemon down on SIGINT
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


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
