"""Stable cluster ids, ARI, PSI and tier migrations: the core functions on cases with known answers, and the
pipeline's behaviour across re-clusterings (real DuckDB warehouses, real Dagster runs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.config import DEFAULT_RISK_WEIGHTS
from segmentation_pipeline.stages.stability import (
    MISSING_BIN,
    BinnedDistribution,
    StabilityReport,
    adjusted_rand,
    fit_bins,
    match_clusters,
    population_stability_index,
    psi_flag,
    psi_from_shares,
    relabel,
    tier_migrations,
)
from segmentation_pipeline.synthetic import SyntheticExport, generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings

# --- matching -----------------------------------------------------------------------------------------------------


def test_match_clusters_undoes_a_permutation() -> None:
    rng = np.random.default_rng(0)
    previous = rng.integers(0, 4, size=500)
    permutation = np.array([2, 0, 3, 1])  # old cluster c is called permutation[c] by the new fit
    new = permutation[previous]
    order = match_clusters(previous, new, 4)
    assert order == [2, 0, 3, 1]  # new id i = new cluster order[i] = what old cluster i became
    assert np.array_equal(relabel(new, order), previous)


def test_match_clusters_follows_the_majority_of_customers() -> None:
    previous = np.array([0] * 50 + [1] * 50 + [2] * 50)
    new = previous.copy()
    new[:50] = 1  # old cluster 0 is now mostly "1" ...
    new[50:100] = 2  # ... old 1 is now "2" ...
    new[100:140] = 0  # ... and old 2 mostly "0", with some noise
    new[140:] = 1
    assert list(relabel(new, match_clusters(previous, new, 3))[:100]) == list(previous[:100])


def test_match_clusters_when_k_changes() -> None:
    previous = np.array([0] * 40 + [1] * 40)
    # k grew to 3: new clusters 2 and 0 carry old 0 and 1; new cluster 1 is a fresh segment and takes id 2.
    new = np.array([2] * 40 + [0] * 30 + [1] * 10)
    order = match_clusters(previous, new, 3)
    assert order == [2, 0, 1]
    # k shrank to 2 from 3: ids stay 0..1, old cluster 2's customers go wherever they went.
    previous3 = np.array([0] * 30 + [1] * 30 + [2] * 20)
    new2 = np.array([1] * 30 + [0] * 30 + [0] * 20)
    assert match_clusters(previous3, new2, 2) == [1, 0]


def test_match_clusters_without_previous_keeps_the_fallback_order() -> None:
    assert match_clusters([], [], 3, fallback_order=[2, 0, 1]) == [2, 0, 1]
    with pytest.raises(ValueError):
        match_clusters([0, 1], [0], 2)


# --- ARI and PSI on known cases -----------------------------------------------------------------------------------


def test_adjusted_rand_known_values() -> None:
    assert adjusted_rand([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 4, 4]) == pytest.approx(1.0)  # same partition, new names
    # Contingency {(0,0): 2, (1,1): 1, (1,2): 1}: index 1, expected 1/3, max 3/2 -> (1 - 1/3) / (3/2 - 1/3) = 4/7.
    assert adjusted_rand([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    assert math.isnan(adjusted_rand([], []))


def test_psi_from_shares_matches_the_formula() -> None:
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5)
    expected = 0.4 * math.log(1.8) + (-0.4) * math.log(0.2)
    assert psi_from_shares({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == pytest.approx(expected)
    assert psi_from_shares({"a": 1.0}, {"a": 1.0}) == 0.0
    # An empty bin gets epsilon instead of a division by zero.
    assert math.isfinite(psi_from_shares({"a": 1.0}, {"a": 0.5, "b": 0.5}))


def test_psi_of_a_flag_column_uses_the_previous_population_bins() -> None:
    reference = fit_bins(np.r_[np.zeros(500), np.ones(500)])
    assert reference.edges == [1.0]
    shifted = np.r_[np.zeros(900), np.ones(100)]
    assert population_stability_index(reference, shifted) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))
    assert population_stability_index(reference, np.r_[np.zeros(500), np.ones(500)]) == pytest.approx(0.0)


@pytest.mark.parametrize(("shift", "flag"), [(0.0, "ok"), (0.4, "warn"), (1.0, "alert")])
def test_psi_flags_a_mean_shift_of_a_normal_feature(shift: float, flag: str) -> None:
    reference = fit_bins(np.random.default_rng(0).normal(0.0, 1.0, 20_000))
    assert len(reference.edges) == 9  # deciles
    psi = population_stability_index(reference, np.random.default_rng(1).normal(shift, 1.0, 20_000))
    assert psi_flag(psi) == flag, psi


def test_psi_counts_missing_values_as_their_own_bin() -> None:
    reference = fit_bins(np.arange(1000, dtype=float))
    assert reference.shares[MISSING_BIN] == 0.0
    half_blank = np.r_[np.arange(500, dtype=float), np.full(500, np.nan)]
    assert psi_flag(population_stability_index(reference, half_blank)) == "alert"
    # The reference survives its JSON round trip (it is stored in model_versions.population_profile).
    again = BinnedDistribution.from_json(reference.to_json())
    assert population_stability_index(again, half_blank) == population_stability_index(reference, half_blank)


def test_psi_flag_thresholds() -> None:
    flags = [psi_flag(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)]
    assert flags == ["ok", "ok", "warn", "warn", "alert", "alert"]
    assert psi_flag(float("nan")) == "n/a"


def test_stability_report_long_frame_and_flags() -> None:
    report = StabilityReport("v1", 10, 0.9, {"exp_volume": 0.05, "num_alerts": 0.3}, 0.12)
    assert report.flags == {"num_alerts": "alert", "tier_mix": "warn"}
    frame = report.to_frame(run_id="r", model_version="v2", created_at=pd.Timestamp.now(tz="UTC"))
    assert set(frame["metric"]) == {"ari", "psi"}
    assert frame.set_index("feature").loc["num_alerts", "flag"] == "alert"
    assert frame.set_index("feature").loc["clusters", "value"] == pytest.approx(0.9)


def test_tier_migrations_lists_exactly_the_changed_customers() -> None:
    previous = pd.DataFrame(
        {"customer_id": [1, 2, 3, 4], "cluster": [0, 1, 2, 2], "risk_tier": ["High", "Medium", "Low", "Low"],
         "model_version": "v1"}
    )  # fmt: skip
    current = pd.DataFrame(
        {"customer_id": [2, 3, 4, 5], "cluster": [0, 2, 1, 0], "risk_tier": ["High", "Low", "Medium", "High"],
         "model_version": "v2"}
    )  # fmt: skip
    moved = tier_migrations(previous, current, run_id="run-2")
    assert moved["customer_id"].tolist() == ["2", "4"]  # 1 left, 3 unchanged, 5 is new
    assert moved[["old_tier", "new_tier"]].values.tolist() == [["Medium", "High"], ["Low", "Medium"]]
    assert moved[["old_cluster", "new_cluster"]].values.tolist() == [[1, 0], [2, 1]]
    assert set(moved["old_model_version"]) == {"v1"} and set(moved["new_model_version"]) == {"v2"}
    assert set(moved["run_id"]) == {"run-2"}


# --- across real re-clusterings -----------------------------------------------------------------------------------

def _variant(base: SyntheticExport, *, drop_share: float, new_seed: int, new_customers: int) -> SyntheticExport:
    """The same export with some customers gone and a few new ones: "slightly different data"."""
    ids = base.labels["customer_id"].to_numpy()
    rng = np.random.default_rng(new_seed)
    gone = set(rng.choice(ids, size=int(len(ids) * drop_share), replace=False).tolist())
    id_column = base.header.index("CustomerID")
    kept = base.rows[~base.rows[id_column].astype(str).isin(gone)]
    extra = generate_export(new_customers, seed=new_seed)
    rows = pd.concat([kept, extra.rows], ignore_index=True)
    labels = pd.concat([base.labels[~base.labels["customer_id"].isin(gone)], extra.labels], ignore_index=True)
    return SyntheticExport(header=base.header, rows=rows, labels=labels.drop_duplicates("customer_id"))


def _assignments(warehouse: Warehouse) -> pd.DataFrame:
    return warehouse.query(
        "SELECT customer_id, cluster, risk_tier, segment_tier, model_version FROM cluster_assignments"
    )


def test_cluster_ids_persist_across_two_reclusterings_of_slightly_different_data(tmp_path: Path) -> None:
    base = generate_export(1600, seed=3)
    files = [
        write_export(base, tmp_path / "week1.csv"),
        write_export(_variant(base, drop_share=0.05, new_seed=11, new_customers=100), tmp_path / "week2.csv"),
        write_export(_variant(base, drop_share=0.10, new_seed=12, new_customers=150), tmp_path / "week3.parquet"),
    ]
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    published = []
    for number, path in enumerate(files):
        # A different K-means seed each week: the raw cluster numbering is free to change, the ids must not.
        assert materialize_file(path, warehouse.path, settings(random_state=number)).success
        published.append(_assignments(warehouse))

    for before, after in zip(published, published[1:], strict=False):
        shared = before.merge(after, on="customer_id", suffixes=("_old", "_new"))
        assert len(shared) > 1100
        kept = (shared["cluster_old"] == shared["cluster_new"]).mean()
        assert kept > 0.9, f"only {kept:.1%} of shared customers kept their cluster id"
        # Migrations: exactly the shared customers whose published tier changed, old and new as published.
        migrations = warehouse.query(
            "SELECT * FROM tier_migrations WHERE new_model_version = ?", [after["model_version"].iloc[0]]
        )
        changed = shared[shared["risk_tier_old"] != shared["risk_tier_new"]]
        assert sorted(migrations["customer_id"]) == sorted(changed["customer_id"])

    stability = warehouse.query("SELECT * FROM model_stability ORDER BY created_at")
    assert stability["run_id"].nunique() == 2  # no stability row for the very first model
    ari = stability[stability["metric"] == "ari"]["value"]
    assert (ari > 0.8).all(), ari.tolist()
    psi = stability[(stability["metric"] == "psi") & (stability["feature"] != "tier_mix")]
    assert {"exp_volume", "actual_volume", "num_alerts", "is_pep"} <= set(psi["feature"])
    assert (psi["flag"] == "ok").all(), psi[psi["flag"] != "ok"][["feature", "value"]]
    versions = warehouse.query("SELECT model_version, status FROM model_versions ORDER BY created_at")
    assert versions["status"].tolist() == ["inactive", "inactive", "active"]


def test_known_change_reversed_risk_weights(tmp_path: Path) -> None:
    """Same data, risk weights negated: the K-means partition is unchanged (ARI 1, same ids) but the segments' tier
    ranking flips (exactly the High and Low segments swap), ratings follow, every changed rating is logged in
    tier_migrations and the tier mix PSI alerts."""
    path = write_export(generate_export(1500, seed=5), tmp_path / "export.csv")
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    assert materialize_file(path, warehouse.path).success
    before = _assignments(warehouse)
    reversed_weights = {name: -weight for name, weight in DEFAULT_RISK_WEIGHTS.items()}
    assert materialize_file(path, warehouse.path, settings(risk_weights=reversed_weights)).success
    after = _assignments(warehouse)

    shared = before.merge(after, on="customer_id", suffixes=("_old", "_new"))
    assert (shared["cluster_old"] == shared["cluster_new"]).all()  # unmatched ids would follow the risk order
    migrations = warehouse.read_table("tier_migrations")
    segments = shared[shared["segment_tier_old"] != "Medium"]
    assert (segments["segment_tier_old"] != segments["segment_tier_new"]).all()
    assert (shared.loc[shared["segment_tier_old"] == "Medium", "segment_tier_new"] == "Medium").all()
    changed = shared[shared["risk_tier_old"] != shared["risk_tier_new"]]
    assert sorted(migrations["customer_id"]) == sorted(changed["customer_id"])
    pairs = set(zip(migrations["old_tier"], migrations["new_tier"], strict=True))
    assert any(old == "High" != new for old, new in pairs) and any(new == "High" != old for old, new in pairs)
    assert (migrations["old_cluster"] == migrations["new_cluster"]).all()

    stability = warehouse.read_table("model_stability").set_index("feature")
    assert stability.loc["clusters", "value"] == pytest.approx(1.0)
    assert stability.loc["tier_mix", "flag"] == "alert"
    assert np.allclose(stability.drop(index=["clusters", "tier_mix"])["value"], 0.0)  # same population
