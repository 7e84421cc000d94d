"""The real server: `segmentation serve` in a subprocess on 127.0.0.1, spoken to over HTTP.

It reproduces the pipeline's cluster_assignments exactly, enforces its limits over the wire, and picks up a newly
promoted model while a pipeline run writes the warehouse, without failing a single request."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse, registry
from segmentation_pipeline_tests.api_fixtures import (
    API_KEY,
    TRAIN_SEED,
    file_records,
    server_log,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow  # real servers on 127.0.0.1; `make test` runs them all the same

KEY = {"X-API-Key": API_KEY}
Served = tuple[str, Path, subprocess.Popen]  # base URL, warehouse, server process
SECRET_CITY = "SERVERLOGCANARY"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained_warehouse) -> Iterator[Served]:  # noqa: ANN001
    directory = tmp_path_factory.mktemp("api_server")  # a copy: this module publishes a second model into it
    warehouse = directory / "warehouse.duckdb"
    shutil.copy(trained_warehouse.path, warehouse)
    shutil.copy(trained_warehouse.source, directory / trained_warehouse.source.name)
    process, base = start_server(warehouse, extra_args=("--check-interval", "0.5"))
    try:
        yield base, warehouse, process
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], headers=KEY, timeout=60) as client:
        yield client


def test_key_is_required_over_http(served: Served, http: httpx.Client) -> None:
    base = served[0]
    assert httpx.post(f"{base}/v1/score", json={"CustomerID": 1}).status_code == 401
    assert httpx.post(f"{base}/v1/score", json={"CustomerID": 1}, headers={"X-API-Key": "nope-nope-nope-nope"}
                      ).status_code == 401  # fmt: skip
    assert http.post("/v1/score", json={"CustomerID": 1, "City": SECRET_CITY}).status_code == 200
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{base}/docs").status_code == 200


def test_scoring_every_training_customer_reproduces_cluster_assignments(
    served: Served, http: httpx.Client
) -> None:
    _, warehouse, _ = served
    published = Warehouse(warehouse).read_table("cluster_assignments").set_index("customer_id")
    records = file_records(warehouse.parent / f"train_{TRAIN_SEED}.csv")
    records = [r for r in records if str(r["CustomerID"]) in published.index]  # quarantined ones are not
    assert len(records) == len(published) >= 1_400
    results = []
    for start in range(0, len(records), 500):
        response = http.post("/v1/score", json={"customers": records[start : start + 500]})
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    scored = {r["customer_id"]: r for r in results}
    expected = published.loc[list(scored)]
    assert [scored[i]["cluster"] for i in expected.index] == expected["cluster"].tolist()
    assert [scored[i]["risk_tier"] for i in expected.index] == expected["risk_tier"].tolist()
    distances = np.array([scored[i]["distance_to_centroid"] for i in expected.index])
    np.testing.assert_allclose(distances, expected["distance_to_centroid"].to_numpy(), rtol=0, atol=1e-9)
    risk = np.array([scored[i]["risk_score"] for i in expected.index])
    np.testing.assert_allclose(risk, expected["risk_score"].to_numpy(), rtol=0, atol=1e-9)
    assert {r["model_version"] for r in results} == set(published["model_version"])


def test_limits_and_validation_over_http(http: httpx.Client) -> None:
    too_many = http.post("/v1/score", json={"customers": [{"CustomerID": i} for i in range(10_001)]})
    assert too_many.status_code == 413
    at_limit = http.post("/v1/score", json={"customers": [{"CustomerID": i} for i in range(10_000)]})
    assert at_limit.status_code == 200 and at_limit.json()["count"] == 10_000
    huge = b'{"customers": [' + b" " * (17 * 1024 * 1024) + b"]}"
    assert http.post("/v1/score", content=huge, headers={"Content-Type": "application/json"}).status_code == 413
    invalid = http.post("/v1/score", json={"CustomerID": 1, "ExpVolume": -10, "Colour": "red"})
    assert invalid.status_code == 422
    assert {e["loc"][-1] for e in invalid.json()["detail"]} == {"ExpVolume", "Colour"}


def test_published_assignment_lookup_over_http(served: Served, http: httpx.Client) -> None:
    _, warehouse, _ = served
    row = Warehouse(warehouse).read_table("cluster_assignments").iloc[0]
    answer = http.get(f"/v1/customers/{int(row['customer_id'])}")
    assert answer.status_code == 200
    assert answer.json()["cluster"] == row["cluster"] and answer.json()["risk_tier"] == row["risk_tier"]
    assert http.get("/v1/customers/123").status_code == 404


def test_new_model_is_served_without_restart_or_failed_requests(
    served: Served, http: httpx.Client
) -> None:
    base, warehouse, _ = served
    store = Warehouse(warehouse)
    first = http.get("/v1/model").json()["model_version"]
    probe = file_records(warehouse.parent / f"train_{TRAIN_SEED}.csv")[:50]
    statuses: Counter[int] = Counter()
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:  # single customers and small batches, back to back, for the whole run and swap
        with httpx.Client(base_url=base, headers=KEY, timeout=60) as client:
            i = 0
            while not stop.is_set():
                if i % 5 == 4:
                    response = client.post("/v1/score", json={"customers": probe})
                    body = response.json()
                    version = body.get("model_version") if response.status_code == 200 else None
                else:
                    response = client.post("/v1/score", json=probe[i % len(probe)])
                    version = response.json().get("model_version") if response.status_code == 200 else None
                statuses[response.status_code] += 1
                if version:
                    versions.append(version)
                i += 1

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        # A new run on new data while the server answers: it writes the warehouse the server reads.
        source = write_export(generate_export(1_200, seed=8), warehouse.parent / "train_8.csv")
        summary = run_pipeline(source, warehouse, settings=SegmentationSettings(n_init=3, random_state=1))
        assert summary.success, summary.error
        new = summary.model_version
        assert new != first
        if registry.registry_exists(store) and registry.active_version(store) != new:
            registry.promote(store, new)  # the quality gate kept it inactive: promote it by hand
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not versions or versions[-1] != new):
            time.sleep(0.1)
        time.sleep(0.5)  # a little traffic on the new model too
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert versions[-1] == new, "the promoted model was not picked up"
    assert first in versions  # traffic did run on the old model before the swap
    assert statuses == Counter({200: statuses[200]}) and statuses[200] > 20, statuses
    assert http.get("/v1/model").json()["model_version"] == new
    after = http.post("/v1/score", json=probe[0]).json()
    assert after["model_version"] == new


def test_server_logs_nothing_about_customers(served: tuple[str, Path, object]) -> None:
    http_client = httpx.Client(base_url=served[0], headers=KEY)
    http_client.post("/v1/score", json={"CustomerID": 424242, "City": SECRET_CITY, "ExpVolume": 7654321.5})
    http_client.post("/v1/score", json={"CustomerID": 424243, "City": SECRET_CITY, "ExpVolume": -7654321.5})
    log = server_log(served[2])  # type: ignore[arg-type]
    assert "serving model" in log
    assert SECRET_CITY not in log and "7654321" not in log


def test_server_refuses_to_start_without_a_key(served: Served) -> None:
    _, warehouse, _ = served
    process, _ = start_server(warehouse, keys=None, wait=False)
    assert process.wait(timeout=60) == 1
    err = server_log(process)
    assert err.strip().startswith("error: no API key configured") and "Traceback" not in err
    insecure, base = start_server(warehouse, keys=None, extra_args=("--insecure-no-auth",))
    try:
        assert httpx.post(f"{base}/v1/score", json={"CustomerID": 3}).status_code == 200
    finally:
        log = stop_server(insecure)
    assert "WITHOUT a key" in log
    assert json.dumps({"City": SECRET_CITY}) not in log
