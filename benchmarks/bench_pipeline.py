"""Time every asset of the graph and the whole run, with peak memory, against a naive baseline in the same run.

    python benchmarks/bench_pipeline.py --rows 100000

Ours: the real Dagster graph (calamine reader, PatternKNNImputer, sampled silhouette) on an N-customer workbook.
Baseline: the textbook approach (openpyxl reader, scikit-learn KNNImputer, exact silhouette) on a subset small
enough to finish, next to ours on the same subset, so the two columns compare like with like.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.impute import KNNImputer
from sklearn.metrics import silhouette_score

from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_graph(workbook: Path, database: Path) -> tuple[float, pd.DataFrame]:
    started = time.perf_counter()
    summary = run_pipeline(workbook, database, settings=SegmentationSettings(reference_date="2026-06-30"))
    total = time.perf_counter() - started
    if not summary.success:
        sys.exit(f"run failed: {summary.error}")
    steps = Warehouse(database).query(
        "SELECT asset_key, row_count, epoch(ended_at) - epoch(started_at) AS seconds FROM lineage ORDER BY started_at"
    )
    return total, steps


def ours_on_subset(workbook: Path) -> dict[str, float]:
    """Our core stages, without Dagster, on the subset: the like-for-like comparison with the baseline."""
    timings = {}
    t = time.perf_counter()
    raw = read_customer_file(workbook)
    timings["read"] = time.perf_counter() - t
    customers = clean_customers(raw.frame, reference_date=date(2026, 6, 30), source_rows=raw.source_rows).customers
    transformer = CustomerFeatureTransformer().fit(customers)
    t = time.perf_counter()
    transformer.imputer_.transform(transformer.scaler_.transform(transformer._numeric_matrix(customers)))
    timings["impute"] = time.perf_counter() - t
    return timings


def baseline_on_subset(workbook: Path) -> dict[str, float]:
    timings = {}
    t = time.perf_counter()
    frame = pd.read_excel(workbook, engine="openpyxl")
    timings["read"] = time.perf_counter() - t
    customers = clean_customers(
        frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v)),
        reference_date=date(2026, 6, 30),
    ).customers
    transformer = CustomerFeatureTransformer().fit(customers)
    numeric = transformer.scaler_.transform(transformer._numeric_matrix(customers))
    t = time.perf_counter()
    KNNImputer(n_neighbors=5).fit_transform(numeric)
    timings["impute"] = time.perf_counter() - t
    return timings


def silhouette_timings(rows: int) -> dict[str, float]:
    """Exact silhouette (baseline) vs the pipeline's seeded 10,000-customer sample, on a real embedding."""
    customers = clean_customers(
        read_customer_file(write_export(generate_export(rows, seed=3), Path(tempfile.mkdtemp()) / "s.parquet")).frame,
        reference_date=date(2026, 6, 30),
    ).customers
    embedding = PCA(n_components=0.9).fit_transform(CustomerFeatureTransformer().fit_transform(customers).to_numpy())
    labels = KMeans(3, n_init=3, random_state=0).fit_predict(embedding)
    t = time.perf_counter()
    exact = silhouette_score(embedding, labels)
    exact_seconds = time.perf_counter() - t
    t = time.perf_counter()
    sampled = silhouette_score(embedding, labels, sample_size=10_000, random_state=0)
    return {"baseline": exact_seconds, "ours": time.perf_counter() - t, "difference": abs(exact - sampled)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="customers in the timed workbook")
    parser.add_argument("--baseline-rows", type=int, default=5_000, help="customers in the like-for-like subset")
    parser.add_argument("--silhouette-rows", type=int, default=30_000, help="customers for exact vs sampled")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        t = time.perf_counter()
        workbook = write_export(generate_export(args.rows, seed=1), work / "big.xlsx")
        print(f"generated {args.rows:,} customers as xlsx in {time.perf_counter() - t:.1f} s "
              f"({workbook.stat().st_size / 1e6:.1f} MB)")  # fmt: skip

        total, steps = time_graph(workbook, work / "warehouse.duckdb")
        print(f"\nwhole graph on {args.rows:,} customers: {total:.1f} s, peak RSS {peak_rss_mb():,.0f} MB")
        print(f"{'asset':<22}{'rows':>12}{'seconds':>10}")
        for row in steps.itertuples():
            print(f"{row.asset_key:<22}{row.row_count:>12,}{row.seconds:>10.2f}")
        print(f"{'(Dagster overhead and checks)':<34}{total - steps['seconds'].sum():>10.2f}")

        subset = write_export(generate_export(args.baseline_rows, seed=2), work / "subset.xlsx")
        ours = ours_on_subset(subset)
        baseline = baseline_on_subset(subset)
        print(f"\nlike for like on {args.baseline_rows:,} customers (seconds):")
        print(f"{'stage':<12}{'baseline':>12}{'ours':>10}{'speed-up':>10}   baseline = openpyxl / KNNImputer / exact")
        for stage in ("read", "impute"):
            print(f"{stage:<12}{baseline[stage]:>12.2f}{ours[stage]:>10.2f}{baseline[stage] / ours[stage]:>9.0f}x")
        silhouette = silhouette_timings(args.silhouette_rows)
        print(f"silhouette on {args.silhouette_rows:,}: exact {silhouette['baseline']:.2f} s, sampled (10,000) "
              f"{silhouette['ours']:.2f} s, |difference| {silhouette['difference']:.4f}")  # fmt: skip
        scale = (args.rows / args.baseline_rows) ** 2
        print(f"baseline KNNImputer extrapolated to {args.rows:,} customers (O(n^2)): "
              f"~{baseline['impute'] * scale:,.0f} s")  # fmt: skip
        print(f"\npeak RSS of the whole benchmark process: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
