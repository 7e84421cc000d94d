"""Fitting on a bounded, seeded, stratified sample: what it keeps, and that it finds the same segments."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.stages.model import fit_model
from segmentation_pipeline.stages.sampling import strata, stratified_sample
from segmentation_pipeline.synthetic import generate_export, write_export

REFERENCE = date(2026, 6, 30)


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> CustomerBatch:
    raw = read_customer_file(write_export(generate_export(4000, seed=9), tmp_path_factory.mktemp("s") / "e.csv"))
    return CustomerBatch.from_frame(clean_customers(raw.frame, reference_date=REFERENCE).customers)


def test_the_sample_is_bounded_seeded_and_keeps_every_stratum(customers: CustomerBatch) -> None:
    rows = stratified_sample(customers, 1_000, seed=0)
    assert len(rows) <= 1_000 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, stratified_sample(customers, 1_000, seed=0))
    assert not np.array_equal(rows, stratified_sample(customers, 1_000, seed=1))
    key = strata(customers)
    everyone, picked = np.unique(key, return_counts=True), np.unique(key[rows], return_counts=True)
    assert set(picked[0]) == set(everyone[0])  # no stratum left out
    sizes = dict(zip(*everyone, strict=True))
    for stratum, count in zip(*picked, strict=True):
        assert count >= min(sizes[stratum], 50) or count >= sizes[stratum] * 1_000 / customers.n - 1
    pep = customers.numbers["is_pep"] == 1
    assert pep[rows].sum() >= min(pep.sum(), 50)  # rare risky customers are not left to chance
    assert np.array_equal(stratified_sample(customers, 10_000, seed=0), np.arange(customers.n))


def test_a_model_fitted_on_a_sample_finds_the_same_segments(customers: CustomerBatch) -> None:
    settings = PipelineSettings(n_init=3)
    full = fit_model(customers, settings.model_copy(update={"fit_sample_size": None}), reference_date=REFERENCE,
                     version="full")  # fmt: skip
    sampled = fit_model(customers, settings.model_copy(update={"fit_sample_size": 1_000}), reference_date=REFERENCE,
                        version="sample")  # fmt: skip
    assert full.rows is None and sampled.rows is not None and len(sampled.rows) <= 1_000
    assert sampled.model.n_customers == customers.n and sampled.model.metrics["training_customers"] == len(sampled.rows)
    everyone = sampled.model.scorer.score(customers)  # every customer is scored, not only the sample
    assert len(everyone.cluster) == customers.n
    assert np.array_equal(everyone.cluster[sampled.rows], sampled.labels)
    assert adjusted_rand_score(full.labels, everyone.cluster) >= 0.95
