"""Fit once, compile once, score everywhere: the API's batch route gives exactly what the pipeline published, a
stored model is plain arrays, and a model the running code would score differently is refused, never served."""

from __future__ import annotations

import io
import zipfile
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from segmentation_pipeline.api.app import create_app
from segmentation_pipeline.api.model_cache import ModelCache
from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages import features as features_module
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.model import ModelContractError, SegmentationModel, fit_model
from segmentation_pipeline.stages.records import parse_records
from segmentation_pipeline.warehouse import Warehouse, registry
from segmentation_pipeline.warehouse.models import load_model, model_table_row
from segmentation_pipeline_tests.api_fixtures import API_KEY, TRAIN_CUSTOMERS, file_records
from segmentation_pipeline_tests.conftest import TrainedWarehouse


def test_api_batch_route_gives_exactly_the_published_ratings(trained_warehouse: TrainedWarehouse) -> None:
    """Every customer of the training file, sent as the file's own text through POST /v1/score in one batch, gets
    the cluster, tier, score and distance cluster_assignments holds, and the reasons rating_reasons holds."""
    store = Warehouse(trained_warehouse.path)
    published = store.query("SELECT * FROM cluster_assignments ORDER BY customer_id").set_index("customer_id")
    records = file_records(trained_warehouse.source)
    assert len(records) == len(published) == TRAIN_CUSTOMERS
    with TestClient(create_app(trained_warehouse.path, [API_KEY])) as client:
        response = client.post("/v1/score", json={"customers": records}, headers={"X-API-Key": API_KEY})
    assert response.status_code == 200, response.text[:500]
    results = pd.DataFrame(response.json()["results"]).set_index("customer_id").loc[published.index]
    np.testing.assert_array_equal(results["cluster"], published["cluster"])
    assert (results["risk_tier"] == published["risk_tier"]).all()
    np.testing.assert_allclose(results["distance_to_centroid"], published["distance_to_centroid"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(results["risk_score"], published["risk_score"], rtol=0, atol=1e-9)
    with store.connect(read_only=True) as connection:
        rows = connection.execute(
            "SELECT customer_id, indicator, value, segment_typical, population_typical, contribution "
            "FROM rating_reasons ORDER BY customer_id, rank"
        ).fetchall()
    published_reasons: dict[int, list[dict[str, object]]] = {}
    for customer_id, *reason in rows:
        keys = ("indicator", "value", "segment_typical", "population_typical", "contribution")
        published_reasons.setdefault(customer_id, []).append(dict(zip(keys, reason, strict=True)))
    assert results["reasons"].tolist() == [published_reasons[c] for c in published.index]


def test_one_at_a_time_equals_the_batch(trained_warehouse: TrainedWarehouse) -> None:
    model = load_model(Warehouse(trained_warehouse.path))
    records = file_records(trained_warehouse.source)[:400]
    batch = model.scorer.score(parse_records(records, reference_date=model.reference_date))
    reasons = model.scorer.reason_table(batch).dicts()
    for position in range(0, len(records), 37):
        alone = model.scorer.score(parse_records([records[position]], reference_date=model.reference_date))
        assert int(alone.cluster[0]) == int(batch.cluster[position])
        assert abs(float(alone.distance_to_centroid[0]) - float(batch.distance_to_centroid[position])) < 1e-9
        assert model.scorer.reason_table(alone).dicts()[0] == reasons[position]


def test_chunked_scoring_equals_one_pass(trained_warehouse: TrainedWarehouse) -> None:
    model = load_model(Warehouse(trained_warehouse.path))
    batch = CustomerBatch.from_frame(Warehouse(trained_warehouse.path).query("SELECT * FROM cleaned_customers"))
    whole, chunked = model.scorer.score(batch), model.scorer.score(batch, chunk_size=777)
    np.testing.assert_array_equal(whole.cluster, chunked.cluster)
    np.testing.assert_allclose(whole.embedding, chunked.embedding, rtol=0, atol=1e-12)


def test_a_stored_model_is_plain_arrays_and_json(trained_warehouse: TrainedWarehouse) -> None:
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        blob, contract = connection.execute("SELECT model_blob, feature_contract FROM kmeans_model").fetchone()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert sorted(archive.namelist()) == ["arrays.npz", "model.json"]
        with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as arrays:
            assert all(arrays[name].dtype != object for name in arrays.files)
    assert '"derived": ["actual_to_expected", "cash_share"]' in contract


def _balance_share(batch: CustomerBatch) -> np.ndarray:
    return np.minimum(batch.number("avg_balance") / (batch.number("actual_volume") + 1.0), 1.0)


class OneMoreFeature(CustomerFeatureTransformer):
    """The running code with one more derived feature than the code that fitted the stored model."""

    derived_features = {**CustomerFeatureTransformer.derived_features, "balance_share": _balance_share}


def test_a_model_fitted_under_another_feature_contract_is_refused(trained_warehouse: TrainedWarehouse,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store = Warehouse(trained_warehouse.path)
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        (blob,) = connection.execute("SELECT model_blob FROM kmeans_model").fetchone()
    # The running code computes one more feature than the stored model was fitted with: refused, one line.
    with pytest.raises(ModelContractError, match="another feature contract.*balance_share.*refit"):
        SegmentationModel.from_bytes(blob, transformer_class=OneMoreFeature)
    # The same through load_model, as the pipeline and the API load: the class in the running code changed.
    monkeypatch.setattr(CustomerFeatureTransformer, "derived_features", OneMoreFeature.derived_features)
    with pytest.raises(ModelContractError) as refused:
        load_model(store)
    assert "\n" not in str(refused.value)
    monkeypatch.undo()
    # And the other way round: a model fitted by the subclass is refused by the code as it is.
    cleaned = store.query("SELECT * FROM cleaned_customers")
    fitted = fit_model(cleaned, PipelineSettings(n_init=2), reference_date=date(2026, 6, 30), version="sub",
                       transformer_class=OneMoreFeature)  # fmt: skip
    with pytest.raises(ModelContractError, match="another feature contract"):
        SegmentationModel.from_bytes(fitted.model.to_bytes())


def test_a_changed_rule_is_caught_by_the_stored_sample(trained_warehouse: TrainedWarehouse,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Same feature names, another formula: the contract cannot see it, the stored sample does."""
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        (blob,) = connection.execute("SELECT model_blob FROM kmeans_model").fetchone()
    SegmentationModel.from_bytes(blob)  # as stored: accepted

    def cash_over_expected(batch: CustomerBatch) -> np.ndarray:
        return np.minimum(batch.number("cash_usage") / (batch.number("exp_volume") + 1.0), 1.0)

    changed = {**features_module.DERIVED_FEATURES, "cash_share": cash_over_expected}
    monkeypatch.setattr(CustomerFeatureTransformer, "derived_features", changed)
    with pytest.raises(ModelContractError, match="stored sample"):
        SegmentationModel.from_bytes(blob)


def test_a_foreign_or_tampered_blob_is_refused_without_running_it() -> None:
    with pytest.raises(ModelContractError, match="not a stored segmentation model"):
        SegmentationModel.from_bytes(b"\x80\x04\x95 a pickle, not a model")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.json", '{"format": "segmentation-model/1"}')
        pickled = io.BytesIO()
        np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
        archive.writestr("arrays.npz", pickled.getvalue())
    with pytest.raises(ModelContractError):
        SegmentationModel.from_bytes(buffer.getvalue())


def test_the_api_keeps_serving_when_a_new_model_is_refused(warehouse_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Warehouse(warehouse_copy)
    cache = ModelCache(warehouse_copy, check_interval=60)
    serving = cache.current.version
    cleaned = store.query("SELECT * FROM cleaned_customers")
    fitted = fit_model(cleaned, PipelineSettings(n_init=2), reference_date=date(2026, 6, 30), version="sub-1",
                       transformer_class=OneMoreFeature)  # fmt: skip
    entry = registry.ModelVersion.of(fitted.model, registry.QualityResult(True), {}, previous_version=serving)
    store.write_tables({"kmeans_model": model_table_row(fitted.model)}, append=["kmeans_model"],
                       also=lambda c: registry.record_version(c, entry, activate=True))  # fmt: skip
    assert registry.active_version(store) == "sub-1"
    assert cache.refresh() is False
    assert cache.current.version == serving and "sub-1 refused" in (cache.last_error or "")


def test_the_same_stored_model_is_checked_once_per_process(trained_warehouse: TrainedWarehouse,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A run's steps load one model several times: the same bytes give the same checked model; other bytes (here
    the same archive with a comment added) are loaded and checked afresh."""
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        (blob,) = connection.execute("SELECT model_blob FROM kmeans_model").fetchone()
    first = SegmentationModel.from_bytes(blob)
    checked: list[str] = []
    monkeypatch.setattr(SegmentationModel, "verify_sample", lambda model: checked.append(model.version))
    assert SegmentationModel.from_bytes(blob) is first and checked == []
    buffer = io.BytesIO(blob)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = b"another copy"
    other = SegmentationModel.from_bytes(buffer.getvalue())
    assert other is not first and checked == [first.version]
