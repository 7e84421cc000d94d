"""Benchmark PatternKNNImputer against sklearn's KNNImputer.

Usage::

    python benchmarks/bench_imputation.py --rows 100000

Prints:
  (a) on a subset small enough for the exact O(n^2) KNNImputer (default 5,000 rows): RMSE of the
      imputed values against the known true values, for both imputers, their ratio and times;
  (b) PatternKNNImputer fit+transform time at --rows (KNNImputer is timed only if rows <= 20,000,
      otherwise its time is extrapolated quadratically from the subset timing and labelled so);
  (c) single-row ``transform`` latency (mean and p99) for a complete row and a row with gaps.

Data: correlated features from a latent-factor model (like customer risk aggregates, which are
strongly related to each other), ~15% of values missing completely at random in several columns,
standardised with nan-aware statistics exactly as the pipeline does before imputing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.impute import KNNImputer

from segmentation_pipeline.stages.imputation import PatternKNNImputer

KNN_EXACT_MAX_ROWS = 20_000


def make_data(
    n_rows: int, n_cols: int, n_gappy_cols: int, missing_rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (X_true, X_missing): standardised complete data and a copy with NaNs planted.

    Standardisation uses nan-aware statistics of the *observed* values (what the caller can see).
    """
    rng = np.random.default_rng(seed)
    n_factors = max(2, n_cols // 3)
    loadings = rng.normal(size=(n_factors, n_cols))
    latent = rng.normal(size=(n_rows, n_factors))
    X = latent @ loadings + 0.5 * rng.normal(size=(n_rows, n_cols))
    # A couple of log-normal-ish columns, like transaction amounts after a log transform.
    X[:, : max(1, n_cols // 5)] = np.exp(0.4 * X[:, : max(1, n_cols // 5)])

    mask = np.zeros(X.shape, dtype=bool)
    gappy = rng.choice(n_cols, size=min(n_gappy_cols, n_cols), replace=False)
    mask[:, gappy] = rng.random((n_rows, gappy.size)) < missing_rate
    X_missing = np.where(mask, np.nan, X)

    mu = np.nanmean(X_missing, axis=0)
    sd = np.nanstd(X_missing, axis=0)
    sd[sd == 0] = 1.0
    return (X - mu) / sd, (X_missing - mu) / sd


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rmse(X_true: np.ndarray, X_imputed: np.ndarray, X_missing: np.ndarray) -> float:
    """RMSE over the planted-missing entries only (the held-out values)."""
    held_out = np.isnan(X_missing)
    return float(np.sqrt(np.mean((X_imputed[held_out] - X_true[held_out]) ** 2)))


def latency(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """Mean and p99 latency of ``fn`` in milliseconds."""
    samples = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - t0
    return float(samples.mean() * 1e3), float(np.percentile(samples, 99) * 1e3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the scale test (b)")
    parser.add_argument("--subset", type=int, default=5_000, help="rows for the exact comparison (a)")
    parser.add_argument("--cols", type=int, default=10)
    parser.add_argument("--gappy-cols", type=int, default=5, help="columns that have missing values")
    parser.add_argument("--missing-rate", type=float, default=0.15)
    parser.add_argument("--neighbors", type=int, default=5)
    parser.add_argument("--max-donors", type=int, default=200_000)
    parser.add_argument("--latency-calls", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X_true, X_miss = make_data(args.rows, args.cols, args.gappy_cols, args.missing_rate, args.seed)
    n_incomplete = int(np.isnan(X_miss).any(axis=1).sum())
    print(
        f"data: {args.rows:,} rows x {args.cols} cols, {args.gappy_cols} cols with {args.missing_rate:.0%} missing "
        f"-> {n_incomplete:,} incomplete rows ({n_incomplete / args.rows:.1%}), k={args.neighbors}\n"
    )

    def pattern() -> PatternKNNImputer:
        return PatternKNNImputer(n_neighbors=args.neighbors, max_donors=args.max_donors, random_state=args.seed)

    # (a) accuracy on a subset where the exact O(n^2) baseline is feasible.
    n_sub = min(args.subset, args.rows)
    sub_true, sub_miss = X_true[:n_sub], X_miss[:n_sub]
    knn_out, t_knn_sub = timed(lambda: KNNImputer(n_neighbors=args.neighbors).fit_transform(sub_miss))
    pat_out, t_pat_sub = timed(lambda: pattern().fit_transform(sub_miss))
    r_knn, r_pat = rmse(sub_true, knn_out, sub_miss), rmse(sub_true, pat_out, sub_miss)
    print(f"(a) held-out RMSE on {n_sub:,} rows (lower is better)")
    print(f"    {'imputer':<20}{'RMSE':>10}{'fit+transform s':>18}")
    print(f"    {'KNNImputer':<20}{r_knn:>10.4f}{t_knn_sub:>18.3f}")
    print(f"    {'PatternKNNImputer':<20}{r_pat:>10.4f}{t_pat_sub:>18.3f}")
    print(f"    RMSE ratio Pattern/KNN = {r_pat / r_knn:.4f}   speed-up = {t_knn_sub / t_pat_sub:.1f}x\n")

    # (b) scale.
    model = pattern()
    _, t_fit = timed(lambda: model.fit(X_miss))
    full_out, t_transform = timed(lambda: model.transform(X_miss))
    assert not np.isnan(full_out).any()
    print(f"(b) fit+transform at {args.rows:,} rows")
    print(f"    {'imputer':<34}{'seconds':>12}")
    print(f"    {'PatternKNNImputer fit':<34}{t_fit:>12.3f}")
    print(f"    {'PatternKNNImputer transform':<34}{t_transform:>12.3f}")
    print(f"    {'PatternKNNImputer total':<34}{t_fit + t_transform:>12.3f}")
    if args.rows <= KNN_EXACT_MAX_ROWS:
        _, t_knn = timed(lambda: KNNImputer(n_neighbors=args.neighbors).fit_transform(X_miss))
        print(f"    {'KNNImputer (measured)':<34}{t_knn:>12.3f}")
    else:
        t_est = t_knn_sub * (args.rows / n_sub) ** 2
        print(f"    {'KNNImputer (ESTIMATE, O(n^2))':<34}{t_est:>12.0f}   (= {t_est / 3600:.1f} h, from subset)")
    print(
        f"    donors={model.donors_.shape[0]:,}  patterns seen={len(model.fit_patterns_)}  "
        f"trees cached={len(model._tree_cache)}  RMSE on all gaps={rmse(X_true, full_out, X_miss):.4f}\n"
    )

    # (c) single-row latency, as a scoring API would call it.
    complete_row = X_miss[~np.isnan(X_miss).any(axis=1)][:1]
    gappy_rows = X_miss[np.isnan(X_miss).any(axis=1)]
    gap_row = gappy_rows[:1]
    cold = pattern().fit(X_miss)
    _, t_cold = timed(lambda: cold.transform(gap_row))  # first call for this pattern builds its tree
    calls = args.latency_calls
    c_mean, c_p99 = latency(lambda: model.transform(complete_row), calls)
    g_mean, g_p99 = latency(lambda: model.transform(gap_row), calls)
    # Cycle through many different gappy rows (and so patterns), all trees cached.
    cycle = iter(range(10**9))
    v_mean, v_p99 = latency(lambda: model.transform(gappy_rows[next(cycle) % len(gappy_rows)][None, :]), calls)
    print(f"(c) single-row transform latency over {calls:,} calls (ms)")
    print(f"    {'case':<40}{'mean':>10}{'p99':>10}")
    print(f"    {'complete row':<40}{c_mean:>10.4f}{c_p99:>10.4f}")
    print(f"    {'row with gaps (tree cached)':<40}{g_mean:>10.4f}{g_p99:>10.4f}")
    print(f"    {'varied rows with gaps (trees cached)':<40}{v_mean:>10.4f}{v_p99:>10.4f}")
    print(f"    {'row with gaps, first call (tree build)':<40}{t_cold * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
