"""The two steps that see every customer, at bank scale: scoring a chunk at a time writes exactly the tables one
pass writes, and the model fitted from a few columns of everyone plus the sample's rows is the model fitted from
the whole table."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.orchestration.assets import plan_and_training_customers
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.stages.model import fit_model
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline.warehouse.scoring_pass import ScoringPass, scored_parts

REFERENCE = date(2026, 6, 30)
SCORED_TABLES = ("customer_features", "pca_embedding", "cluster_assignments", "rating_reasons", "segment_profiles",
                 "rating_governance", "tier_migrations")  # fmt: skip
# The shapes readers rely on (the API, the report, analysts' SQL): a chunked write must not change them.
EXPECTED_TYPES = {
    "cluster_assignments": [
        ("customer_id", "VARCHAR"), ("cluster", "INTEGER"), ("risk_tier", "VARCHAR"), ("segment_tier", "VARCHAR"),
        ("tier_before_rules", "VARCHAR"), ("rating_basis", "VARCHAR"), ("rule_ids", "VARCHAR[]"),
        ("risk_score", "DOUBLE"), ("distance_to_centroid", "DOUBLE"), ("pc1", "DOUBLE"), ("pc2", "DOUBLE"),
        ("model_version", "VARCHAR"), ("policy_version", "VARCHAR"), ("run_id", "VARCHAR"),
    ],
    "rating_reasons": [
        ("customer_id", "VARCHAR"), ("rank", "INTEGER"), ("indicator", "VARCHAR"), ("value", "DOUBLE"),
        ("segment_typical", "DOUBLE"), ("population_typical", "DOUBLE"), ("contribution", "DOUBLE"),
    ],
}  # fmt: skip


def _score_into(path: Path, model: object, schema: str, chunk_size: int) -> ScoringPass:
    store = Warehouse(path, schema=schema, search_path=(schema, "small", "main"))
    scoring = ScoringPass()
    store.write_parts(scored_parts(store, model, "run-x", chunk_size=chunk_size, previous=True,  # type: ignore[arg-type]
                                    scoring=scoring))  # fmt: skip
    return scoring


def test_scoring_in_chunks_of_seven_writes_what_one_pass_writes(warehouse_copy: Path) -> None:
    store = Warehouse(warehouse_copy)
    published = store.query("SELECT schema_name FROM snapshots WHERE status = 'published'")["schema_name"].iloc[0]
    with store.connect() as connection:
        for schema in ("small", "chunked", "whole"):
            connection.execute(f"CREATE SCHEMA {schema}")
        # 120 customers: 18 chunks of at most 7
        connection.execute("CREATE TABLE small.cleaned_customers AS "
                           "SELECT * FROM main.cleaned_customers USING SAMPLE 120 ROWS (reservoir, 1)")  # fmt: skip
        # the published ratings of some customers differ from what this model says: they migrate
        connection.execute(f"UPDATE {published}.cluster_assignments SET risk_tier = CASE risk_tier WHEN 'Low' THEN "
                           "'High' ELSE 'Low' END WHERE hash(customer_id) % 3 = 0")  # fmt: skip
    model = load_model(store)
    chunked = _score_into(warehouse_copy, model, "chunked", 7)
    whole = _score_into(warehouse_copy, model, "whole", 100_000)
    assert len(chunked.ratings) == 18 and len(whole.ratings) == 1
    assert chunked.migrations == whole.migrations > 0 and chunked.moves == whole.moves
    assert chunked.tier_counts() == whole.tier_counts()
    with store.reading():  # one connection for the comparisons
        for table in SCORED_TABLES:
            assert store.query(f"DESCRIBE chunked.{table}").equals(store.query(f"DESCRIBE whole.{table}")), table
            pd.testing.assert_frame_equal(store.query(f"SELECT * FROM chunked.{table}"),
                                          store.query(f"SELECT * FROM whole.{table}"), obj=table)  # fmt: skip
        for table, columns in EXPECTED_TYPES.items():
            described = store.query(f"DESCRIBE chunked.{table}")
            assert list(zip(described["column_name"], described["column_type"], strict=True)) == columns
        ids = store.query("SELECT customer_id FROM small.cleaned_customers ORDER BY customer_id")["customer_id"]
        assert store.query("SELECT customer_id FROM chunked.cluster_assignments")["customer_id"].equals(ids)
        reasons = store.query("SELECT customer_id, rank FROM chunked.rating_reasons")
    assert reasons.equals(reasons.sort_values(["customer_id", "rank"], ignore_index=True))
    assert len(reasons) == len(ids) * reasons["rank"].max() and reasons["rank"].min() == 1


@pytest.fixture(scope="module")
def cleaned_store(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    folder = tmp_path_factory.mktemp("fit")
    raw = read_customer_file(write_export(generate_export(2000, seed=11), folder / "e.csv"))
    customers = clean_customers(raw.frame, reference_date=REFERENCE).customers
    store = Warehouse(folder / "w.duckdb")
    store.write_tables({"cleaned_customers": customers.sample(frac=1.0, random_state=3).assign(
        _reference_date=pd.Timestamp(REFERENCE), _file_sha256="sha")})  # stored in no particular order
    return store


def test_the_model_fitted_from_a_few_columns_and_the_sample_rows_is_the_whole_table_model(
    cleaned_store: Warehouse,
) -> None:
    settings = PipelineSettings(n_init=1, fit_sample_size=1_000)
    everyone = cleaned_store.query("SELECT * FROM cleaned_customers ORDER BY customer_id")  # what it read before
    before = fit_model(CustomerBatch.from_frame(everyone), settings, reference_date=REFERENCE, version="v")
    plan, training = plan_and_training_customers(cleaned_store, settings)
    after = fit_model(CustomerBatch.from_arrow(training), settings, reference_date=REFERENCE, version="v", plan=plan)
    assert before.rows is not None and training.num_rows == len(before.rows) < len(everyone)
    np.testing.assert_array_equal(after.rows, before.rows)
    np.testing.assert_array_equal(plan.rows, before.rows)
    pd.testing.assert_frame_equal(training.to_pandas(), everyone.iloc[before.rows].reset_index(drop=True))
    np.testing.assert_array_equal(after.labels, before.labels)
    old, new = before.model, after.model
    for name in ("pca_components", "pca_mean", "explained_variance_ratio", "centers"):
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    for part in ("features", "tiers"):
        old_meta, old_arrays = getattr(old, part).to_state()
        new_meta, new_arrays = getattr(new, part).to_state()
        assert new_meta == old_meta and old_arrays.keys() == new_arrays.keys()
        for key, values in old_arrays.items():
            np.testing.assert_array_equal(new_arrays[key], values, err_msg=f"{part}.{key}")
    assert new.metrics == old.metrics and new.n_customers == old.n_customers == len(everyone)
    assert new.sample == old.sample


def test_a_batch_read_as_arrow_is_the_batch_read_as_a_frame(cleaned_store: Warehouse) -> None:
    sql = "SELECT * FROM cleaned_customers ORDER BY customer_id"
    from_frame = CustomerBatch.from_frame(cleaned_store.query(sql))
    from_arrow = CustomerBatch.from_arrow(cleaned_store.arrow(sql))
    assert from_arrow.customer_ids.tolist() == from_frame.customer_ids.tolist()
    assert from_arrow.numbers.keys() == from_frame.numbers.keys() and from_arrow.numbers
    for name, values in from_frame.numbers.items():
        np.testing.assert_array_equal(from_arrow.numbers[name], values, err_msg=name)
    assert from_arrow.categories.keys() == from_frame.categories.keys() and from_arrow.categories
    for name, values in from_frame.categories.items():
        assert from_arrow.categories[name].tolist() == values.tolist(), name
    assert from_arrow.channels == from_frame.channels and any(from_arrow.channels)


@pytest.mark.parametrize("shape", ["plain", "dictionary", "chunked", "nulls only"])
def test_categories_from_arrow_are_the_texts_with_none_for_missing(shape: str) -> None:
    from segmentation_pipeline.stages.customers import _category_objects

    texts = ["Clerk", None, "Farmer", "Clerk", "", None] if shape != "nulls only" else [None, None]
    values = pa.array(texts, pa.string()) if shape != "nulls only" else pa.array(texts)
    if shape == "dictionary":
        values = values.dictionary_encode()
    elif shape == "chunked":
        values = pa.chunked_array([values[:2], values[2:]])
    out = _category_objects(values)
    assert out.dtype == object and out.tolist() == texts
