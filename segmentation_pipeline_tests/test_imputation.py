"""Tests for PatternKNNImputer (fast pattern-grouped KD-tree KNN imputation)."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.impute import KNNImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from segmentation_pipeline.stages.imputation import PatternKNNImputer


def _with_gaps(X: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = rng.random(X.shape) < rate
    return np.where(mask, np.nan, X), mask


def _correlated(n: int, d: int, seed: int, rho: float = 0.9) -> np.ndarray:
    """Multivariate normal with AR(1) correlation rho^|i-j| (strongly correlated neighbours)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(d)
    cov = rho ** np.abs(idx[:, None] - idx[None, :])
    return rng.multivariate_normal(np.zeros(d), cov, size=n)


def test_complete_rows_unchanged_and_no_nan_left() -> None:
    X = _correlated(500, 6, seed=1)
    X_miss, mask = _with_gaps(X, 0.1, seed=2)
    out = PatternKNNImputer().fit_transform(X_miss)
    assert out.shape == X.shape and out.dtype == np.float64
    assert not np.isnan(out).any()
    complete = ~mask.any(axis=1)
    np.testing.assert_array_equal(out[complete], X_miss[complete])
    np.testing.assert_array_equal(out[~mask], X_miss[~mask])  # observed values are never altered
    assert np.isnan(X_miss).any()  # input not modified in place


def test_planted_neighbours_hand_computed() -> None:
    # y = 10 * x on the donors. Receiver x = 1.1: distances 1.1, 0.1, 0.9, 1.9, ... so the 3 nearest
    # donors are x = 1, 2, 0 and y is imputed as (10 + 20 + 0) / 3 = 10.
    donors = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [10.0, 100.0], [11.0, 110.0]])
    imp = PatternKNNImputer(n_neighbors=3).fit(donors)
    out = imp.transform(np.array([[1.1, np.nan], [np.nan, 105.0], [10.6, np.nan]]))
    np.testing.assert_allclose(out[0], [1.1, 10.0])
    # y = 105: nearest are y = 100, 110, then 30 -> x = (10 + 11 + 3) / 3 = 8.
    np.testing.assert_allclose(out[1], [8.0, 105.0])
    # x = 10.6: nearest 11, 10, 3 -> (110 + 100 + 30) / 3 = 80.
    np.testing.assert_allclose(out[2], [10.6, 80.0])


def test_matches_knnimputer_when_donors_are_complete() -> None:
    # Fit on complete rows, impute new rows: KNNImputer's donor pool is then also complete rows, and
    # nan_euclidean's rescaling is constant per receiver, so the neighbours and means are identical.
    X_train = _correlated(400, 5, seed=3)
    X_test, _ = _with_gaps(_correlated(200, 5, seed=4), 0.25, seed=5)
    ours = PatternKNNImputer(n_neighbors=5).fit(X_train).transform(X_test)
    ref = KNNImputer(n_neighbors=5).fit(X_train).transform(X_test)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_many_rows_of_one_pattern_queried_in_spatial_order_match_knnimputer() -> None:
    # Past _ORDERED_QUERY_MIN_ROWS rows of one gap pattern the queries are reordered before the tree search:
    # every row must still get its own neighbours (compared with KNNImputer, and with one row at a time).
    from segmentation_pipeline.stages import imputation

    X_train = _correlated(600, 5, seed=21)
    X_test = _correlated(imputation._ORDERED_QUERY_MIN_ROWS + 500, 5, seed=22)
    X_test[:, 2] = np.nan  # one pattern for every row
    imp = PatternKNNImputer(n_neighbors=5).fit(X_train)
    ours = imp.transform(X_test)
    np.testing.assert_allclose(ours, KNNImputer(n_neighbors=5).fit(X_train).transform(X_test), rtol=0, atol=1e-12)
    for i in (0, 7, len(X_test) - 1):
        np.testing.assert_array_equal(imp.transform(X_test[i : i + 1]), ours[i : i + 1])


def test_wide_rows_match_knnimputer_too() -> None:
    # Gap patterns are grouped by an integer key up to 62 columns, by packed bytes beyond (the test above: 5).
    width = 70
    X_train = _correlated(300, width, seed=6)
    X_test, _ = _with_gaps(_correlated(150, width, seed=7), 3 / width, seed=8)
    ours = PatternKNNImputer(n_neighbors=5).fit(X_train).transform(X_test)
    ref = KNNImputer(n_neighbors=5).fit(X_train).transform(X_test)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_matches_knnimputer_fit_transform_when_neighbours_are_complete() -> None:
    # Far-apart clusters of complete rows, each with one incomplete row: the incomplete row's nearest
    # neighbours (for KNNImputer too) are the complete rows of its own cluster.
    rng = np.random.default_rng(6)
    blocks = []
    for c in range(12):
        centre = rng.normal(size=4) * 1000.0 + c * 500.0
        block = centre + rng.normal(size=(9, 4))
        block[0, rng.choice(4, size=rng.integers(1, 3), replace=False)] = np.nan
        blocks.append(block)
    X = np.vstack(blocks)
    ours = PatternKNNImputer(n_neighbors=5).fit_transform(X)
    ref = KNNImputer(n_neighbors=5).fit_transform(X)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_all_nan_row_gets_column_means() -> None:
    X = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 8.0], [np.nan, np.nan]])
    imp = PatternKNNImputer(n_neighbors=1).fit(X)
    np.testing.assert_allclose(imp.column_means_, [3.0, 5.0])
    np.testing.assert_allclose(imp.transform(np.array([[np.nan, np.nan]])), [[3.0, 5.0]])


def test_fewer_donors_than_k_uses_all_donors() -> None:
    X = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 9.0], [np.nan, 7.0, 100.0]])
    out = PatternKNNImputer(n_neighbors=5).fit_transform(X)
    np.testing.assert_allclose(out[3], [2.0, 7.0, 100.0])  # mean of the 3 complete rows' first column
    np.testing.assert_array_equal(out[:3], X[:3])


def test_no_donors_falls_back_to_column_means() -> None:
    X = np.array([[np.nan, 1.0], [2.0, np.nan], [4.0, np.nan], [np.nan, 5.0]])
    imp = PatternKNNImputer().fit(X)
    assert imp.donors_.shape == (0, 2)
    np.testing.assert_allclose(imp.transform(X), [[3.0, 1.0], [2.0, 3.0], [4.0, 3.0], [3.0, 5.0]])


def test_entirely_missing_column_is_kept_and_filled_with_zero() -> None:
    X = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]])
    out = PatternKNNImputer().fit_transform(X)
    np.testing.assert_array_equal(out, [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])


def test_max_donors_subsample_is_deterministic() -> None:
    X = _correlated(1000, 4, seed=7)
    a = PatternKNNImputer(max_donors=100, random_state=3).fit(X)
    b = PatternKNNImputer(max_donors=100, random_state=3).fit(X)
    c = PatternKNNImputer(max_donors=100, random_state=4).fit(X)
    assert a.donors_.shape == (100, 4)
    np.testing.assert_array_equal(a.donors_, b.donors_)
    assert not np.array_equal(a.donors_, c.donors_)


def test_pickle_round_trip_identical_and_cache_not_pickled() -> None:
    X_miss, _ = _with_gaps(_correlated(2000, 6, seed=8), 0.15, seed=9)
    imp = PatternKNNImputer().fit(X_miss)
    expected = imp.transform(X_miss)
    assert len(imp._tree_cache) > 0
    blob = pickle.dumps(imp)
    assert b"cKDTree" not in blob
    assert len(imp._tree_cache) > 0  # pickling must not clear the live object's cache
    loaded = pickle.loads(blob)
    assert len(loaded._tree_cache) == 0
    np.testing.assert_array_equal(loaded.transform(X_miss), expected)
    # Eager warm-up after loading builds the patterns seen during fit, most frequent first.
    fresh = pickle.loads(blob)
    n_built = fresh.warm_cache(max_patterns=3)
    assert n_built == 3
    assert set(fresh._tree_cache) == {p.tobytes() for p in fresh.fit_patterns_[:3]}
    np.testing.assert_array_equal(fresh.transform(X_miss), expected)


def test_single_row_transform_equals_batch() -> None:
    X_miss, mask = _with_gaps(_correlated(1500, 6, seed=10), 0.15, seed=11)
    imp = PatternKNNImputer().fit(X_miss)
    batch = imp.transform(X_miss)
    imp.clear_cache()
    rows = np.flatnonzero(mask.any(axis=1))[:50].tolist() + np.flatnonzero(~mask.any(axis=1))[:5].tolist()
    for i in rows:
        np.testing.assert_array_equal(imp.transform(X_miss[i : i + 1]), batch[i : i + 1])


def test_small_cache_budget_evicts_but_results_unchanged() -> None:
    X_miss, _ = _with_gaps(_correlated(1500, 6, seed=12), 0.2, seed=13)
    expected = PatternKNNImputer().fit_transform(X_miss)
    imp = PatternKNNImputer().fit(X_miss)
    imp.cache_max_bytes = 1  # instance override of the class-level budget
    np.testing.assert_array_equal(imp.transform(X_miss), expected)
    assert len(imp._tree_cache) == 1


def test_concurrent_transforms_agree() -> None:
    X_miss, _ = _with_gaps(_correlated(1500, 6, seed=14), 0.15, seed=15)
    imp = PatternKNNImputer().fit(X_miss)
    expected = PatternKNNImputer().fit(X_miss).transform(X_miss)
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(np.vstack([imp.transform(X_miss[i : i + 1]) for i in range(0, 300)]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, expected[:300])


def test_dataframe_input_and_pipeline() -> None:
    cols = [f"f{i}" for i in range(5)]
    X_miss, _ = _with_gaps(_correlated(600, 5, seed=16) * 3.0 + 10.0, 0.1, seed=17)
    df = pd.DataFrame(X_miss, columns=cols)

    imp = PatternKNNImputer().fit(df)
    assert imp.n_features_in_ == 5
    assert list(imp.feature_names_in_) == cols
    assert list(imp.get_feature_names_out()) == cols
    np.testing.assert_array_equal(imp.transform(df), PatternKNNImputer().fit(X_miss).transform(X_miss))

    # The pipeline standardises first (StandardScaler ignores NaN), then imputes, then clusters.
    pipe = Pipeline(
        [("scale", StandardScaler()), ("impute", PatternKNNImputer()), ("kmeans", KMeans(3, n_init=2, random_state=0))]
    )
    labels = pipe.fit_predict(df)
    assert labels.shape == (600,)
    np.testing.assert_array_equal(pipe.predict(df.iloc[:7]), labels[:7])

    pre = Pipeline([("scale", StandardScaler()), ("impute", PatternKNNImputer())]).set_output(transform="pandas")
    out = pre.fit_transform(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == cols
    assert not out.isna().any().any()


def test_input_validation() -> None:
    imp = PatternKNNImputer().fit(_correlated(50, 3, seed=18))
    with pytest.raises(ValueError):
        imp.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        imp.transform(np.array([[np.inf, 0.0, 0.0]]))
    with pytest.raises(ValueError):
        PatternKNNImputer(n_neighbors=0).fit(np.zeros((3, 2)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_sklearn_estimator_checks() -> None:
    check_estimator(PatternKNNImputer())


def test_held_out_rmse_close_to_knnimputer() -> None:
    # 3000 x 8 correlated MVN, 10% of values masked at random (~43% complete rows remain as donors).
    X = _correlated(3000, 8, seed=19)
    X_miss, mask = _with_gaps(X, 0.10, seed=20)

    def rmse(out: np.ndarray) -> float:
        return float(np.sqrt(np.mean((out[mask] - X[mask]) ** 2)))

    ours = rmse(PatternKNNImputer(n_neighbors=5).fit_transform(X_miss))
    ref = rmse(KNNImputer(n_neighbors=5).fit_transform(X_miss))
    assert ours / ref <= 1.02, (ours, ref)
