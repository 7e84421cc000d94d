"""Time every step of the graph and the whole run, with peak memory, next to the previous commit in the same run.

    python benchmarks/bench_pipeline.py --rows 100000 [--against HEAD~1] [--repeat 2]

The graph: the real Dagster job (``run_pipeline``) on an N-customer workbook, in a child process per run so that
peak memory is the run's own; this checkout and ``--against`` (a git revision checked out beside it) alternate,
``--repeat`` times each, and the medians are printed side by side.
Then the textbook approach (openpyxl reader, scikit-learn KNNImputer, exact silhouette) on a subset small enough
to finish, next to ours on the same subset, so those two columns compare like with like.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.impute import KNNImputer
from sklearn.metrics import silhouette_score

from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.imputation import PatternKNNImputer
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.synthetic import generate_export, write_export

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import REPO, describe, previous_tree, python_env  # noqa: E402  (the benchmarks' own helper)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


GRAPH_CHILD = """
import json, resource, sys, time
from pathlib import Path
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.warehouse import Warehouse
workbook, database = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
summary = run_pipeline(workbook, database, settings=SegmentationSettings(reference_date="2026-06-30"))
total = time.perf_counter() - started
if not summary.success:
    sys.exit(f"run failed: {summary.error}")
steps = Warehouse(database).query(  # assets written by one step (one transaction) share a start time
    "SELECT string_agg(asset_key, ' + ' ORDER BY asset_key) AS step, max(row_count) AS row_count, "
    "max(epoch(ended_at) - epoch(started_at)) AS seconds FROM lineage GROUP BY started_at ORDER BY started_at")
print(json.dumps({"total": total, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "steps": steps.to_dict("records")}))
"""


def time_graph(workbook: Path, work: Path, tree: Path | None) -> dict:
    """One whole run of the graph in a child process importing the package from ``tree`` (None: this checkout).
    Steps that write several assets in one transaction (one lineage start time) are listed together."""
    database = work / f"graph_{time.monotonic_ns()}.duckdb"
    completed = subprocess.run([sys.executable, "-c", GRAPH_CHILD, str(workbook), str(database)],
                               env=python_env(tree), cwd=tree or REPO, capture_output=True, text=True)  # fmt: skip
    if completed.returncode:
        sys.exit(f"graph run failed ({tree or 'this checkout'}): {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def graph_side_by_side(workbook: Path, work: Path, against: str, repeat: int, rows: int) -> None:
    runs: dict[str, list[dict]] = {"this": [], "previous": []}
    with previous_tree(against) if against != "none" else _no_tree() as tree:
        for _ in range(repeat):  # in turn: a slow spell of the machine hits both columns
            runs["this"].append(time_graph(workbook, work, None))
            if tree is not None:
                runs["previous"].append(time_graph(workbook, work, tree))
    print(f"\nwhole graph on {rows:,} customers, median of {repeat} run(s) each (child process per run)")
    header = f"{'':<34}{'this checkout':>16}"
    if runs["previous"]:
        header += f"{'previous':>14}   previous = {describe(against)}"
    print(header)
    for label, key, fmt in (("wall seconds", "total", "{:.1f}"), ("peak RSS, MB", "peak_mb", "{:,.0f}")):
        line = f"{label:<34}{fmt.format(statistics.median(r[key] for r in runs['this'])):>16}"
        if runs["previous"]:
            line += f"{fmt.format(statistics.median(r[key] for r in runs['previous'])):>14}"
        print(line)
    for column, results in runs.items():
        if not results:
            continue
        print(f"\nsteps, {'this checkout' if column == 'this' else describe(against)}: rows, median seconds")
        for position, step in enumerate(results[0]["steps"]):
            seconds = statistics.median(r["steps"][position]["seconds"] for r in results)
            print(f"  {step['step']:<62}{step['row_count']:>12,}{seconds:>10.2f}")


class _no_tree:  # noqa: N801 - a context manager standing in for previous_tree
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def ours_on_subset(workbook: Path) -> dict[str, float]:
    """Our core stages, without Dagster, on the subset: the like-for-like comparison with the baseline."""
    timings = {}
    t = time.perf_counter()
    raw = read_customer_file(workbook)
    timings["read"] = time.perf_counter() - t
    customers = clean_customers(raw.frame, reference_date=date(2026, 6, 30), source_rows=raw.source_rows).customers
    numeric = _scaled_numeric(customers)
    t = time.perf_counter()
    PatternKNNImputer().fit_transform(numeric)
    timings["impute"] = time.perf_counter() - t
    return timings


def _scaled_numeric(customers: pd.DataFrame) -> np.ndarray:
    """The standardised numeric block with its gaps: what the feature transformer hands its imputer."""
    batch = CustomerBatch.from_frame(customers)
    transformer = CustomerFeatureTransformer().fit(batch)
    numeric = transformer._numeric_matrix(batch, transformer.derived(batch))
    return (numeric - transformer.scale_mean_) / transformer.scale_


def baseline_on_subset(workbook: Path) -> dict[str, float]:
    timings = {}
    t = time.perf_counter()
    frame = pd.read_excel(workbook, engine="openpyxl")
    timings["read"] = time.perf_counter() - t
    customers = clean_customers(
        frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v)),
        reference_date=date(2026, 6, 30),
    ).customers
    numeric = _scaled_numeric(customers)
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
    embedding = PCA(n_components=0.9).fit_transform(CustomerFeatureTransformer().fit_transform(customers))
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
    parser.add_argument("--against", default="HEAD~1", help="git revision measured beside this checkout ('none')")
    parser.add_argument("--repeat", type=int, default=1, help="graph runs of each checkout (median printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        t = time.perf_counter()
        workbook = write_export(generate_export(args.rows, seed=1), work / "big.xlsx")
        print(f"generated {args.rows:,} customers as xlsx in {time.perf_counter() - t:.1f} s "
              f"({workbook.stat().st_size / 1e6:.1f} MB)")  # fmt: skip

        graph_side_by_side(workbook, work, args.against, args.repeat, args.rows)

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
