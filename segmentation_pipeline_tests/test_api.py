"""The scoring API in-process (TestClient): authentication, validation, limits, aliases, reasons, read-only routes,
the model cache's hot swap and its behaviour while the warehouse is locked."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from segmentation_pipeline.api import create_app
from segmentation_pipeline.api.model_cache import ModelCache
from segmentation_pipeline.api.schemas import EXAMPLE_CUSTOMER, MAX_BATCH
from segmentation_pipeline.api.security import ApiKeyConfigError, ApiKeyVerifier, load_api_keys
from segmentation_pipeline.cli import main
from segmentation_pipeline.stages.tiering import INDICATORS
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline_tests.api_fixtures import API_KEY, OTHER_KEY, TRAIN_SEED, file_records

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def warehouse(trained_warehouse) -> Path:  # noqa: ANN001 - the conftest fixture
    return trained_warehouse.path


@pytest.fixture(scope="module")
def client(warehouse: Path) -> TestClient:
    return TestClient(create_app(warehouse, [API_KEY, OTHER_KEY], max_body_bytes=200_000, max_batch=50))


def _detail_fields(response: object) -> set[str]:
    return {str(error["loc"][-1]) for error in response.json()["detail"]}  # type: ignore[attr-defined]


# --- security ---------------------------------------------------------------------------------------------------


def test_every_v1_route_needs_a_valid_key(client: TestClient) -> None:
    for method, path in [("post", "/v1/score"), ("get", "/v1/model"), ("get", "/v1/segments"),
                         ("get", "/v1/customers/1")]:  # fmt: skip
        kwargs = {"json": EXAMPLE_CUSTOMER} if method == "post" else {}
        for headers in ({}, {"X-API-Key": "wrong-key-wrong-key"}, {"X-API-Key": ""}, {"X-API-Key": API_KEY + "x"}):
            response = getattr(client, method)(path, headers=headers, **kwargs)
            assert response.status_code == 401, (path, headers)
            assert response.json() == {"detail": "missing or invalid API key"}
    assert client.post("/v1/score", json=EXAMPLE_CUSTOMER, headers={"X-API-Key": OTHER_KEY}).status_code == 200
    assert client.get("/healthz").status_code == 200  # liveness needs no key (it says nothing about customers)
    assert client.get("/docs").status_code == 200


def test_keys_come_from_the_environment_and_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    lines = ["# rotated monthly", "file-key-0123456789abc", "", "other-file-key-0123456789, third-key-0123456789ab"]
    key_file.write_text("\n".join(lines) + "\n")
    environment = {"SEGMENTATION_API_KEYS": f" {API_KEY} ,{OTHER_KEY}",
                   "SEGMENTATION_API_KEYS_FILE": str(key_file)}  # fmt: skip
    keys = load_api_keys(environment)
    assert keys == [API_KEY, OTHER_KEY, "file-key-0123456789abc", "other-file-key-0123456789", "third-key-0123456789ab"]
    assert load_api_keys({}) == []
    with pytest.raises(ApiKeyConfigError, match="shorter than 16"):
        load_api_keys({"SEGMENTATION_API_KEYS": "short"})
    with pytest.raises(ApiKeyConfigError, match="cannot read"):
        load_api_keys({"SEGMENTATION_API_KEYS_FILE": str(tmp_path / "missing")})
    verifier = ApiKeyVerifier(keys)
    assert verifier("third-key-0123456789ab") and not verifier("third-key-0123456789aB") and not verifier(None)
    assert not verifier("clé-non-ascii-ünïcode")  # non-ASCII header text: compared as bytes, never a crash
    with pytest.raises(ApiKeyConfigError):
        ApiKeyVerifier([])


def test_serve_refuses_to_start_without_a_key(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SEGMENTATION_API_KEYS", raising=False)
    monkeypatch.delenv("SEGMENTATION_API_KEYS_FILE", raising=False)
    assert main(["serve", "--warehouse", str(warehouse), "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no API key configured") and "--insecure-no-auth" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("SEGMENTATION_API_KEYS", API_KEY)
    assert main(["serve", "--warehouse", str(warehouse.parent / "none.duckdb")]) == 1
    assert "no warehouse at" in capsys.readouterr().err


def test_insecure_mode_is_explicit(warehouse: Path) -> None:
    open_client = TestClient(create_app(warehouse, None))
    assert open_client.post("/v1/score", json=EXAMPLE_CUSTOMER).status_code == 200
    with pytest.raises(ApiKeyConfigError):
        create_app(warehouse, [])  # an empty key list is a mistake, not "no auth"


# --- scoring ------------------------------------------------------------------------------------------------------


def test_one_customer_gets_segment_tier_distance_and_reasons(client: TestClient, warehouse: Path) -> None:
    response = client.post("/v1/score", json=EXAMPLE_CUSTOMER, headers=KEY)
    assert response.status_code == 200
    body = response.json()
    model = load_model(Warehouse(warehouse))
    assert body["customer_id"] == str(EXAMPLE_CUSTOMER["CustomerID"])  # ids are answered as text
    assert body["model_version"] == model.version
    assert 0 <= body["cluster"] < model.k
    assert body["risk_tier"] == model.tiers.cluster_tiers[body["cluster"]]
    assert body["distance_to_centroid"] >= 0 and isinstance(body["risk_score"], float)
    assert len(body["reasons"]) == 3
    for reason in body["reasons"]:
        assert set(reason) == {"indicator", "value", "segment_typical", "population_typical", "contribution"}
        assert reason["indicator"] in INDICATORS
        typical = model.tiers.typical[body["cluster"], INDICATORS.index(reason["indicator"])]
        assert reason["segment_typical"] == (None if np.isnan(typical) else typical)


def test_a_batch_scores_each_customer_like_single_requests(client: TestClient, warehouse: Path) -> None:
    records = file_records(warehouse.parent / f"train_{TRAIN_SEED}.csv")[:40]
    batch = client.post("/v1/score", json={"customers": records}, headers=KEY)
    assert batch.status_code == 200
    body = batch.json()
    assert body["count"] == 40 and len(body["results"]) == 40
    for record, result in zip(records[:5], body["results"][:5], strict=True):
        single = client.post("/v1/score", json=record, headers=KEY).json()
        for name in ("distance_to_centroid", "risk_score"):  # one row vs many: BLAS may round the last bit
            assert single.pop(name) == pytest.approx(result.pop(name), abs=1e-9)
        assert single == result


def test_aliases_are_accepted_as_in_ingestion(client: TestClient) -> None:
    workbook = client.post("/v1/score", json={"CustomerID": 77, "isPep": 1, "ExpVolume": 5000, "NumAlerts": 2},
                           headers=KEY).json()  # fmt: skip
    aliased = client.post(
        "/v1/score",
        json={"Customer No": "77", "Is PEP": "Y", "expected transaction volume": "5,000", "number_of_alerts": 2},
        headers=KEY,
    ).json()
    assert aliased == workbook


def test_missing_fields_are_imputed_and_unknown_levels_handled(client: TestClient) -> None:
    only_id = client.post("/v1/score", json={"CustomerID": 1}, headers=KEY)
    assert only_id.status_code == 200
    odd = client.post("/v1/score", json={**EXAMPLE_CUSTOMER, "City": "ATLANTIS", "Occupation": "Astronaut",
                                         "SubscribedChannels": "Carrier pigeon"}, headers=KEY)  # fmt: skip
    assert odd.status_code == 200


def test_dates_centuries_apart_do_not_overflow(client: TestClient) -> None:
    # Found by the fuzzer: an Excel-serial-looking 1678 read as the year 1678 overflowed pandas' nanoseconds.
    for record in ({"CustomerID": 1, "IncorporatedSince": 1678}, {"CustomerID": 2, "CustomerSince": "1700-01-01"},
                   {"CustomerID": 3, "IncorporatedSince": "2261-12-31"}):  # fmt: skip
        assert client.post("/v1/score", json=record, headers=KEY).status_code in (200, 422)


def test_invalid_fields_are_each_named(client: TestClient) -> None:
    response = client.post(
        "/v1/score",
        json={"CustomerID": 5, "Favourite Colour": "red", "ExpVolume": -1, "NumAlerts": "many", "isPep": 7,
              "DateofBirth": "yesterday", "Gender": ["F"], "CashUsage": True},
        headers=KEY,
    )  # fmt: skip
    assert response.status_code == 422
    assert _detail_fields(response) == {"Favourite Colour", "ExpVolume", "NumAlerts", "isPep", "DateofBirth",
                                        "Gender", "CashUsage"}  # fmt: skip
    messages = {error["loc"][-1]: error["msg"] for error in response.json()["detail"]}
    assert messages["Favourite Colour"] == "unknown field"
    assert messages["ExpVolume"] == "negative exp_volume"  # the words of a file's quarantine reason
    assert all(error["loc"][0] == "body" for error in response.json()["detail"])


def test_batch_errors_give_the_record_position(client: TestClient) -> None:
    response = client.post("/v1/score", json={"customers": [EXAMPLE_CUSTOMER, {"CustomerID": 2, "ActualVolume": -3}]},
                           headers=KEY)  # fmt: skip
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "customers", 1, "ActualVolume"]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', b"null", b'{"CustomerID": NaN}', b'{"CustomerID": Infinity}',
     b'{"customers": []}', b'{"customers": {"a": 1}}', b'{"customers": [1], "extra": 2}', b"\xff\xfe",
     b"[" * 5000 + b"]" * 5000, b'{"CustomerID": 1' + b"0" * 5000 + b"}", b""],
)  # fmt: skip
def test_malformed_bodies_get_422(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/score", content=body, headers={**KEY, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_limits_give_413(client: TestClient) -> None:
    too_many = client.post("/v1/score", json={"customers": [{"CustomerID": i} for i in range(51)]}, headers=KEY)
    assert too_many.status_code == 413 and "limit is 50" in too_many.json()["detail"]
    big = json.dumps({"customers": [EXAMPLE_CUSTOMER] * 40, "pad": "x" * 200_000}).encode()
    assert client.post("/v1/score", content=big, headers=KEY).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(30):
            yield b" " * 10_000

    assert client.post("/v1/score", content=chunks(), headers=KEY).status_code == 413
    assert MAX_BATCH == 10_000  # the documented default


def test_default_limits_are_documented(warehouse: Path) -> None:
    spec = TestClient(create_app(warehouse, [API_KEY])).get("/openapi.json").json()
    batch = spec["components"]["schemas"]["ScoreBatchRequest"]["properties"]["customers"]
    assert batch["maxItems"] == 10_000
    record = spec["components"]["schemas"]["CustomerRecord"]
    assert record["additionalProperties"] is False and record["required"] == ["CustomerID"]
    assert "isPep" in record["properties"] and "ExpVolume" in record["properties"]
    assert spec["paths"]["/v1/score"]["post"]["security"] == [{"APIKeyHeader": []}]


def test_nothing_about_customers_is_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    record = {**EXAMPLE_CUSTOMER, "City": "UNIQUECITYNAME", "ExpVolume": 987654.25}
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/score", json=record, headers=KEY)
        client.post("/v1/score", json={**record, "ExpVolume": -1}, headers=KEY)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "UNIQUECITYNAME" not in logged and "987654" not in logged


# --- read-only routes ----------------------------------------------------------------------------------------------


def test_model_segments_and_published_assignments(client: TestClient, warehouse: Path) -> None:
    store = Warehouse(warehouse)
    model = load_model(store)
    info = client.get("/v1/model", headers=KEY).json()
    assert info["model_version"] == model.version and info["k"] == model.k
    assert info["input_sha256"] == model.input_sha256 and info["n_customers"] == model.n_customers
    assert set(info["metrics"]) >= {"silhouette", "davies_bouldin"}
    segments = client.get("/v1/segments", headers=KEY).json()
    assert segments["model_version"] == model.version and len(segments["segments"]) == model.k
    assert {s["risk_tier"] for s in segments["segments"]} <= {"High", "Medium", "Low"}
    published = store.read_table("cluster_assignments").iloc[0]
    row = client.get(f"/v1/customers/{published['customer_id']}", headers=KEY).json()
    assert row["customer_id"] == published["customer_id"] and row["segment_tier"] and row["rating_basis"]
    assert row["cluster"] == published["cluster"] and row["risk_tier"] == published["risk_tier"]
    assert row["distance_to_centroid"] == pytest.approx(published["distance_to_centroid"], abs=1e-12)
    assert client.get("/v1/customers/1", headers=KEY).status_code == 404
    assert client.get("/v1/customers/CIF-1", headers=KEY).status_code == 404  # an id may hold letters
    assert client.get("/v1/customers/-5", headers=KEY).status_code == 422
    assert client.get(f"/v1/customers/{'9' * 65}", headers=KEY).status_code == 422


# --- hot swap and a locked warehouse ----------------------------------------------------------------------------


def test_cache_swaps_to_a_promoted_version_and_survives_a_locked_warehouse(tmp_path: Path, warehouse: Path) -> None:
    copy = tmp_path / "warehouse.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    store = Warehouse(copy)
    cache = ModelCache(copy, check_interval=60)
    app_client = TestClient(create_app(copy, [API_KEY], cache=cache))
    first = cache.current.version
    assert cache.refresh() is False  # nothing changed

    # A writer holds the file (here: a read-write connection in this process) and writes: keep serving, no error.
    with duckdb.connect(str(copy)) as writer:
        writer.execute("CREATE TABLE run_in_progress AS SELECT 1 AS step")
        assert cache.refresh() is False
        assert cache.last_error is not None
        assert app_client.post("/v1/score", json=EXAMPLE_CUSTOMER, headers=KEY).status_code == 200
    assert cache.refresh() is False and cache.last_error is None

    # A second version (the same fitted objects under a new version id), registered and promoted.
    promoted = _store_copy_as_new_version(store, "20990101T000000-promoted")
    assert cache.refresh() is True
    assert cache.current.version == promoted != first
    body = app_client.post("/v1/score", json=EXAMPLE_CUSTOMER, headers=KEY).json()
    assert body["model_version"] == promoted
    assert app_client.get("/v1/model", headers=KEY).json()["model_version"] == promoted


def test_cache_queries_the_warehouse_only_when_its_files_change(tmp_path: Path, warehouse: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    copy = tmp_path / "warehouse.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    cache = ModelCache(copy, check_interval=60)
    queries: list[str | None] = []
    active_version = cache.active_version
    monkeypatch.setattr(cache, "active_version", lambda: queries.append(active_version()) or queries[-1])
    assert cache.refresh() is False and cache.refresh() is False and queries == []  # unchanged since loaded
    assert cache.last_check is not None
    with duckdb.connect(str(copy)) as writer:
        writer.execute("CREATE TABLE unrelated AS SELECT 1 AS x")
    assert cache.refresh() is False and len(queries) == 1  # the files changed: asked
    assert cache.refresh() is False and len(queries) == 1
    cache._last_query -= 31  # coarse file-system timestamps: still asked at least every 30 s
    assert cache.refresh() is False and len(queries) == 2
    promoted = _store_copy_as_new_version(Warehouse(copy), "20990101T000000-promoted")
    assert cache.refresh() is True and cache.current.version == promoted


def _store_copy_as_new_version(store: Warehouse, version: str) -> str:
    from segmentation_pipeline.warehouse import registry

    model = dataclasses.replace(load_model(store), version=version)  # a loaded model is shared: copied, not changed
    with store.connect() as connection:
        row = connection.execute("SELECT * FROM kmeans_model ORDER BY created_at DESC LIMIT 1").df()
        row["model_version"] = version
        row["created_at"] = row["created_at"] + pd.Timedelta(seconds=1)
        row["model_blob"] = [model.to_bytes()]
        connection.register("incoming", row)
        connection.execute("INSERT INTO kmeans_model SELECT * FROM incoming")
        tables = {r[0] for r in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if registry.REGISTRY_TABLE in tables:
            entry = connection.execute(f"SELECT * FROM {registry.REGISTRY_TABLE} LIMIT 1").df()
            entry["model_version"], entry["status"] = version, "inactive"
            connection.register("incoming_version", entry)
            connection.execute(f"INSERT INTO {registry.REGISTRY_TABLE} SELECT * FROM incoming_version")
            promote = True
        else:
            promote = False
    if promote:
        registry.promote(store, version)
    return version
