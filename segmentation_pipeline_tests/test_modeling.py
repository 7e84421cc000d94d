"""Features, PCA, K-means and tiering as plain functions on synthetic customers."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.config import DEFAULT_RISK_WEIGHTS, PipelineSettings
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.clustering import fit_kmeans, reorder_clusters
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.embedding import fit_pca
from segmentation_pipeline.stages.features import DERIVED_FEATURES, MISSING_LEVEL, CustomerFeatureTransformer
from segmentation_pipeline.stages.model import fit_model
from segmentation_pipeline.stages.tiering import (
    INDICATORS,
    fit_risk_tiers,
    indicator_matrix,
    reason_order,
    tier_names_by_rank,
)
from segmentation_pipeline.synthetic import REFERENCE_DATE, generate_export

SETTINGS = PipelineSettings(n_init=4)


@pytest.fixture(scope="module")
def customers_and_labels() -> tuple[pd.DataFrame, pd.DataFrame]:
    export = generate_export(2000, seed=11)
    raw = export.to_frame()
    raw.columns = [f"{c}__2" if raw.columns[:i].tolist().count(c) else c for i, c in enumerate(raw.columns)]
    raw = raw.astype(object).where(raw.notna(), None).map(lambda v: None if v is None else str(v))
    customers = clean_customers(raw, reference_date=REFERENCE_DATE).customers
    return customers, export.labels


def test_derived_behaviour_columns() -> None:
    frame = pd.DataFrame({"actual_volume": [99.0, 0.0, np.nan], "exp_volume": [9.0, 0.0, 5.0],
                          "cash_usage": [50.0, 10.0, 1.0]})  # fmt: skip
    batch = CustomerBatch.from_frame(frame.assign(customer_id=[1, 2, 3]))
    derived = {name: compute(batch) for name, compute in DERIVED_FEATURES.items()}
    assert derived["actual_to_expected"][0] == pytest.approx(np.log(100) - np.log(10))
    assert derived["cash_share"][0] == pytest.approx(0.5)
    assert derived["cash_share"][1] == 1.0  # cash without recorded volume is capped, not infinite
    assert np.isnan(derived["actual_to_expected"][2])


def test_feature_transformer_shapes_no_gaps_and_standardised(customers_and_labels) -> None:
    customers, _ = customers_and_labels
    transformer = CustomerFeatureTransformer().fit(customers)
    features = pd.DataFrame(transformer.transform(customers), columns=transformer.feature_names_)
    assert not features.isna().any().any()
    numeric = features[[c for c in features.columns if c.startswith("num__")]]
    # Standardised before imputation: observed values have mean 0 / std 1; imputed values keep it close.
    assert np.abs(numeric.mean()).max() < 0.15
    assert numeric.std().between(0.8, 1.2).all()
    flags = features[[c for c in features.columns if c.startswith("flag__")]]
    assert set(np.unique(flags.to_numpy())) <= {0.0, 1.0}
    assert {"channel__ATM", "channel__MobileApp"} <= set(features.columns)


def test_feature_transformer_handles_unknown_categories_and_missing_columns(customers_and_labels) -> None:
    customers, _ = customers_and_labels
    transformer = CustomerFeatureTransformer().fit(customers)
    newcomer = pd.DataFrame([{"customer_id": 1, "occupation": "Astronaut", "province": "Mars", "exp_volume": 50000.0,
                              "subscribed_channels": ["Carrier Pigeon"]}])  # fmt: skip
    features = pd.DataFrame(transformer.transform(newcomer), columns=transformer.feature_names_)
    assert features.shape == (1, len(transformer.feature_names_))
    assert not features.isna().any().any()
    # An unknown level lights no known level: it joins the infrequent group where training had one, else none.
    occupation = [c for c in features.columns if c.startswith("cat__occupation")]
    known = [c for c in occupation if "infrequent" not in c]
    assert known and features[known].iloc[0].sum() == 0.0
    assert features[occupation].iloc[0].sum() <= 1.0
    assert features[[c for c in features.columns if c.startswith("channel__")]].iloc[0].sum() == 0.0


def test_transformer_round_trips_through_plain_arrays(customers_and_labels) -> None:
    customers, _ = customers_and_labels
    transformer = CustomerFeatureTransformer().fit(customers)
    meta, arrays = transformer.to_state()
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    restored = CustomerFeatureTransformer.from_state(meta, arrays)
    np.testing.assert_array_equal(transformer.transform(customers), restored.transform(customers))


def test_one_hot_lookups_equal_the_fitted_encoder(customers_and_labels) -> None:
    """The one-hot block is compiled from scikit-learn's fitted OneHotEncoder: same columns for known, rare,
    missing and unknown levels."""
    from sklearn.preprocessing import OneHotEncoder

    customers, _ = customers_and_labels
    transformer = CustomerFeatureTransformer(rare_level_share=0.05).fit(customers)
    names = transformer.categorical_columns_
    levels = customers[names].astype(object).where(customers[names].notna(), MISSING_LEVEL).astype(str)
    encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.05, sparse_output=False)
    expected_fit = encoder.fit_transform(levels)
    probe = pd.concat([customers.head(300), customers.head(3).assign(occupation="Astronaut", city=None)])
    probe_levels = probe[names].astype(object).where(probe[names].notna(), MISSING_LEVEL).astype(str)
    start = len(transformer.numeric_columns_) + len(transformer.flag_columns_)
    block = slice(start, start + expected_fit.shape[1])
    np.testing.assert_array_equal(transformer.transform(probe)[:, block], encoder.transform(probe_levels))


def test_pca_keeps_requested_variance_and_at_least_two_components() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 1))
    features = np.hstack([base + 0.01 * rng.normal(size=(500, 1)) for _ in range(6)])
    embedding = fit_pca(features, variance=0.9)
    assert embedding.n_components == 2  # one direction carries ~all variance, but plots need two
    wide = rng.normal(size=(500, 10))
    embedding = fit_pca(wide, variance=0.9)
    assert sum(embedding.explained_variance_ratio) >= 0.9
    assert embedding.components.shape == (500, embedding.n_components)


def test_kmeans_chooses_k_by_silhouette_and_records_every_k() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])
    points = np.vstack([c + rng.normal(size=(150, 2)) for c in centres])
    result = fit_kmeans(points, n_clusters=None, k_range=(2, 6), n_init=3)
    assert result.k == 4
    assert result.k_search["k"].tolist() == [2, 3, 4, 5, 6]
    assert result.k_search.set_index("k").loc[4, "silhouette"] == result.k_search["silhouette"].max()
    assert 0.5 < result.metrics["silhouette"] <= 1.0
    assert result.metrics["davies_bouldin"] < 0.6


def test_silhouette_is_sampled_on_large_inputs() -> None:
    rng = np.random.default_rng(2)
    points = np.vstack([rng.normal(size=(6000, 2)), rng.normal(size=(6000, 2)) + 8])
    sampled = fit_kmeans(points, n_clusters=2, n_init=1, silhouette_sample_size=2000)
    exact = fit_kmeans(points, n_clusters=2, n_init=1, silhouette_sample_size=20_000)
    assert sampled.metrics["silhouette"] == pytest.approx(exact.metrics["silhouette"], abs=0.01)


def test_reorder_clusters_permutes_predictions() -> None:
    rng = np.random.default_rng(3)
    points = np.vstack([rng.normal(size=(100, 2)) + offset for offset in (0, 10, 20)])
    result = fit_kmeans(points, n_clusters=3, n_init=2)
    before = result.model.predict(points)
    reorder_clusters(result.model, [2, 0, 1])
    after = result.model.predict(points)
    mapping = {2: 0, 0: 1, 1: 2}
    assert (after == np.vectorize(mapping.get)(before)).all()
    assert (result.model.labels_ == after).all()


def test_tier_names_by_rank() -> None:
    assert tier_names_by_rank(2) == ["High", "Low"]
    assert tier_names_by_rank(3) == ["High", "Medium", "Low"]
    assert tier_names_by_rank(4) == ["High", "Medium", "Medium", "Low"]
    assert tier_names_by_rank(6) == ["High", "High", "Medium", "Medium", "Low", "Low"]


def test_risk_score_uses_standardised_values_not_raw_money() -> None:
    # Cluster 0 has enormous volumes but nothing else; cluster 1 has modest volumes, PEPs, alerts and reports.
    n = 200
    customers = pd.DataFrame(
        {
            "customer_id": np.arange(2 * n),
            "exp_volume": np.r_[np.full(n, 5e7), np.full(n, 5e5)],
            "actual_volume": np.r_[np.full(n, 5e7), np.full(n, 5e5)],
            "is_pep": np.r_[np.zeros(n), np.ones(n) * (np.arange(n) % 3 == 0)],
            "num_alerts": np.r_[np.zeros(n), np.full(n, 4.0)],
            "previously_reported": np.r_[np.zeros(n), np.ones(n)],
        }
    )
    tiers = fit_risk_tiers(_indicators(customers), np.r_[np.zeros(n), np.ones(n)].astype(int), 2, DEFAULT_RISK_WEIGHTS)
    assert tiers.cluster_tiers == ["Low", "High"]
    contributions = dict(zip(INDICATORS, tiers.contributions[1], strict=True))
    assert contributions["previously_reported"] > 0 and contributions["num_alerts"] > 0


def test_risk_weights_are_configurable_and_validated() -> None:
    customers = pd.DataFrame({"customer_id": [1, 2, 3, 4], "is_pep": [1.0, 1.0, 0.0, 0.0],
                              "num_alerts": [0.0, 0.0, 5.0, 5.0]})  # fmt: skip
    clusters = np.array([0, 0, 1, 1])
    pep_heavy = fit_risk_tiers(_indicators(customers), clusters, 2, {"is_pep": 5.0, "num_alerts": 1.0})
    alert_heavy = fit_risk_tiers(_indicators(customers), clusters, 2, {"is_pep": 1.0, "num_alerts": 5.0})
    assert pep_heavy.cluster_tiers[0] == "High" and alert_heavy.cluster_tiers[1] == "High"
    with pytest.raises(ValueError, match="unknown risk indicators"):
        fit_risk_tiers(_indicators(customers), clusters, 2, {"shoe_size": 1.0})


def _indicators(customers: pd.DataFrame) -> np.ndarray:
    batch = CustomerBatch.from_frame(customers)
    return indicator_matrix(batch, CustomerFeatureTransformer().derived(batch))


def test_reason_order_is_explicit_ties_included() -> None:
    contributions = np.array([[0.5, -2.0, 0.5, 1.0], [0.5, -2.0, 0.5, 1.0], [0.5, -2.0, -0.5, 1.0]])
    order = reason_order(contributions, np.array([0, 2, 1]))
    assert order[0].tolist() == [3, 0, 2, 1]  # High: largest first; the tie 0.5/0.5 keeps indicator order
    assert order[1].tolist() == [1, 0, 2, 3]  # Low: most negative first; tie in indicator order
    assert order[2].tolist() == [1, 3, 0, 2]  # Medium: by absolute value; |0.5| == |-0.5| in indicator order


def test_reasons_explain_a_high_risk_customer(customers_and_labels) -> None:
    customers, labels = customers_and_labels
    model = fit_model(customers, SETTINGS, reference_date=date(2026, 6, 30), version="t").model
    scored = model.scorer.score(CustomerBatch.from_frame(customers))
    high = np.flatnonzero(scored.risk_tier == "High")[:5]
    rows = CustomerBatch.from_frame(customers.iloc[high])
    reasons = model.scorer.reason_table(model.scorer.score(rows)).dicts()
    assert len(reasons) == 5
    for reason_list in reasons:
        assert len(reason_list) == 3
        assert reason_list[0]["contribution"] >= reason_list[1]["contribution"] >= reason_list[2]["contribution"]
        assert reason_list[0]["contribution"] > 0
        assert {"indicator", "value", "segment_typical", "population_typical"} <= set(reason_list[0])


def test_training_recovers_planted_groups_and_tiers_high_group_high(customers_and_labels) -> None:
    customers, labels = customers_and_labels
    fitted = fit_model(customers, SETTINGS, reference_date=date(2026, 6, 30), version="t")
    model = fitted.model
    scored = model.scorer.score(CustomerBatch.from_frame(customers))
    np.testing.assert_array_equal(scored.cluster, fitted.labels)  # the compiled scorer gives the fit's clusters
    assignments = pd.DataFrame({"customer_id": customers["customer_id"], "cluster": scored.cluster,
                                "risk_tier": scored.risk_tier}).merge(labels, on="customer_id")  # fmt: skip
    assert adjusted_rand_score(assignments["planted_group"], assignments["cluster"]) >= 0.9
    tier_of_group = assignments.groupby("planted_group")["risk_tier"].agg(lambda s: s.mode().iloc[0])
    assert tier_of_group.to_dict() == {"high": "High", "medium": "Medium", "low": "Low"}
    # Cluster 0 is the riskiest by construction.
    assert model.tiers.cluster_tiers[0] == "High"
    assert model.tiers.cluster_scores[0] == max(model.tiers.cluster_scores)


@pytest.mark.parametrize("sample_size", [None, 700])
def test_silhouette_equals_sklearns(sample_size) -> None:
    from sklearn.metrics import silhouette_score

    from segmentation_pipeline.stages.clustering import silhouette

    rng = np.random.default_rng(4)
    points = np.vstack([rng.normal(size=(400, 3)), rng.normal(size=(500, 3)) + 3, [[40.0, 40, 40]]])
    points = np.vstack([points, points[:50]])  # duplicate customers: distance 0 off the diagonal
    labels = np.r_[np.full(400, 7), np.full(500, 2), [5], np.full(50, 7)]  # one cluster of a single customer
    expected = silhouette_score(points, labels, sample_size=sample_size, random_state=0)
    assert silhouette(points, labels, sample_size=sample_size, random_state=0, chunk_rows=128) == pytest.approx(
        expected, abs=1e-12
    )


def test_knn_donors_are_capped_by_the_setting(customers_and_labels) -> None:
    customers, _ = customers_and_labels
    capped = fit_model(customers, PipelineSettings(n_init=1, knn_max_donors=100), reference_date=REFERENCE_DATE,
                       version="capped").model.features.imputer_  # fmt: skip
    every = fit_model(customers, PipelineSettings(n_init=1, knn_max_donors=None), reference_date=REFERENCE_DATE,
                      version="every").model.features.imputer_  # fmt: skip
    assert capped.donors_.shape[0] == 100 < every.donors_.shape[0]
    assert every.max_donors is None and capped.max_donors == 100
