"""Quality at scale: do the segments find the planted groups, does fitting on a sample change them, and is the fast
imputer as accurate as the exact one?

    python benchmarks/bench_quality.py --rows 1000000 [--sample-size 250000] [--impute-rows 20000]

Generates N customers with planted behaviour groups (``synthetic.generate_export(...).labels``), cleans them as the
pipeline does (Parquet in, ``read_customer_file``, ``clean_customers``) and fits the real model (``fit_model``)
twice: with ``fit_sample_size`` (default the pipeline's, 250,000: a seeded stratified sample, ``stages/sampling.py``)
and on everyone (``fit_sample_size = None``). Every customer is then scored by each model's compiled scorer, and
it prints:

* the adjusted Rand index (ARI) of the risk tiers and of the clusters against the planted groups (target >= 0.9);
* sample fit vs full fit: ARI between the two models' clusters over all customers, and the silhouette of each
  (on the same seeded 10,000 customers, each in its own embedding), with each fit's time;
* imputation on ``--impute-rows`` customers: a random 10 % of the known values of the columns the imputer fills
  (those with gaps) is hidden, the standardised block the feature transformer hands its imputer is imputed by
  ``PatternKNNImputer`` and by scikit-learn's exact ``KNNImputer`` (same k), and the held-out RMSE of each and
  their ratio are printed (target ours <= 1.02 x exact). ``bench_imputation.py`` does the same on a latent-factor
  matrix; this one on the customers' own features.

At sizes the in-memory comparison cannot hold (ten million customers), the pipeline's own published output is
measured instead: ``segmentation generate --rows N --out c.parquet`` writes the planted groups beside the export
(``c.labels.csv``), ``segmentation run --input c.parquet --warehouse w.duckdb`` publishes the run, and

    python benchmarks/bench_quality.py --warehouse w.duckdb --labels c.labels.csv

prints the ARI of the published clusters, segment tiers and ratings (``cluster_assignments``) against them, joined
by customer id in DuckDB.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.impute import KNNImputer
from sklearn.metrics import adjusted_rand_score, silhouette_score

from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.imputation import PatternKNNImputer
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.stages.model import FittedModel, fit_model
from segmentation_pipeline.synthetic import REFERENCE_DATE, generate_export, write_export

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_imputation import rmse  # noqa: E402  (the benchmarks' own helpers)

SCORE_CHUNK = 200_000
SILHOUETTE_CUSTOMERS = 10_000


def log(message: str) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  [{time.strftime('%H:%M:%S')}, peak RSS {peak:,.0f} MB] {message}", flush=True)


def cleaned_customers(rows: int, seed: int, work: Path) -> tuple[CustomerBatch, np.ndarray]:
    """N generated customers as the pipeline cleans them, and each one's planted group (aligned)."""
    started = time.perf_counter()
    export = generate_export(rows, seed=seed)
    labels = export.labels.set_index("customer_id")["planted_group"]
    path = write_export(export, work / "customers.parquet")
    del export
    log(f"generated {rows:,} customers in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    raw = read_customer_file(path)
    customers = clean_customers(raw.frame, reference_date=REFERENCE_DATE, source_rows=raw.source_rows).customers
    del raw
    batch = CustomerBatch.from_frame(customers)
    del customers
    planted = labels.reindex(pd.Index(batch.customer_ids.astype(str))).to_numpy()
    if pd.isna(planted).any():
        sys.exit(f"{int(pd.isna(planted).sum())} cleaned customers have no planted group: ids changed in cleaning?")
    log(f"read and cleaned {batch.n:,} customers in {time.perf_counter() - started:.1f} s")
    return batch, planted


def fit(batch: CustomerBatch, settings: PipelineSettings, name: str) -> tuple[FittedModel, float]:
    started = time.perf_counter()
    fitted = fit_model(batch, settings, reference_date=REFERENCE_DATE, version=name)
    seconds = time.perf_counter() - started
    log(f"fitted {name} on {int(fitted.model.metrics['training_customers']):,} customers in {seconds:.1f} s")
    return fitted, seconds


def score(fitted: FittedModel, batch: CustomerBatch, silhouette_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Cluster and rating of every customer, and the embedding of the silhouette customers, scored in chunks."""
    scorer = fitted.model.scorer
    clusters, tiers, segment_tiers, embedding = [], [], [], []
    start = 0
    for chunk in batch.chunks(SCORE_CHUNK):
        scored = scorer.score(chunk)
        clusters.append(scored.cluster)
        tiers.append(scored.risk_tier)
        segment_tiers.append(scored.segment_tier)
        inside = silhouette_rows[(silhouette_rows >= start) & (silhouette_rows < start + chunk.n)] - start
        embedding.append(scored.embedding[inside])
        start += chunk.n
    return {"cluster": np.concatenate(clusters), "risk_tier": np.concatenate(tiers),
            "segment_tier": np.concatenate(segment_tiers), "embedding": np.concatenate(embedding)}  # fmt: skip


def imputation_accuracy(batch: CustomerBatch, settings: PipelineSettings, rows: int, seed: int) -> dict[str, object]:
    """Held-out RMSE of PatternKNNImputer and exact KNNImputer on ``rows`` customers: 10 % of the known values of
    every behaviour column with gaps is blanked in the customers themselves (so the columns derived from them,
    actual/expected and cash share, are unknown too, as for a real gap), the numeric block is built and
    standardised exactly as the feature transformer does (statistics of the customers before blanking), both
    imputers fill the same matrix, and the blanked values are compared with the truth in standardised units."""
    rng = np.random.default_rng(seed)
    subset = batch.take(np.sort(rng.choice(batch.n, size=min(rows, batch.n), replace=False)))
    transformer = CustomerFeatureTransformer(knn_neighbors=settings.knn_neighbors,
                                             rare_level_share=settings.rare_level_share,
                                             random_state=settings.random_state).fit(subset)  # fmt: skip

    def standardised(customers: CustomerBatch) -> np.ndarray:
        block = transformer._numeric_matrix(customers, transformer.derived(customers))
        return (block - transformer.scale_mean_) / transformer.scale_

    truth = standardised(subset)
    columns = transformer.numeric_columns_
    gappy = [c for c in columns if c in subset.numbers and np.isnan(subset.numbers[c]).any()]
    numbers = dict(subset.numbers)
    hidden = np.zeros(truth.shape, dtype=bool)
    for name in gappy:
        values = numbers[name].copy()
        blank = ~np.isnan(values) & (rng.random(subset.n) < 0.10)
        values[blank] = np.nan
        numbers[name] = values
        hidden[:, columns.index(name)] = blank
    masked = standardised(dataclasses.replace(subset, numbers=numbers))
    started = time.perf_counter()
    ours = PatternKNNImputer(n_neighbors=settings.knn_neighbors, random_state=settings.random_state)
    ours_out = ours.fit_transform(masked)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exact_out = KNNImputer(n_neighbors=settings.knn_neighbors, keep_empty_features=True).fit_transform(masked)
    exact_seconds = time.perf_counter() - started
    probe = np.where(hidden, np.nan, 0.0)  # rmse() scores the NaN positions of its third argument: the blanked ones
    return {
        "customers": float(subset.n), "columns": ", ".join(gappy), "hidden": float(hidden.sum()),
        "ours": rmse(truth, ours_out, probe), "exact": rmse(truth, exact_out, probe),
        "ours_seconds": ours_seconds, "exact_seconds": exact_seconds,
    }  # fmt: skip


def compare_fits(batch: CustomerBatch, planted: np.ndarray, args: argparse.Namespace) -> None:
    """Fit with the sample and on everyone, score every customer with each, and print the ARIs and silhouettes."""
    silhouette_rows = np.sort(np.random.default_rng(0).choice(batch.n, min(SILHOUETTE_CUSTOMERS, batch.n), False))

    sampled_settings = PipelineSettings(fit_sample_size=args.sample_size, n_init=args.n_init)
    fits = {"sample fit": fit(batch, sampled_settings, "sample-fit")}
    if not args.skip_full_fit:
        full_settings = PipelineSettings(fit_sample_size=None, n_init=args.n_init)
        fits["full fit"] = fit(batch, full_settings, "full-fit")
    scored = {}
    for name, (fitted, _) in fits.items():
        started = time.perf_counter()
        scored[name] = score(fitted, batch, silhouette_rows)
        log(f"scored {batch.n:,} customers with the {name} in {time.perf_counter() - started:.1f} s")

    print(f"\nagainst the planted groups ({batch.n:,} customers; target ARI >= 0.9)")
    print(f"{'model':<14}{'customers fitted':>18}{'fit s':>8}{'ARI rating':>12}{'ARI segment tier':>18}"
          f"{'ARI clusters':>14}{'k':>4}{'silhouette':>12}")  # fmt: skip
    for name, (fitted, seconds) in fits.items():
        result = scored[name]
        silhouette = silhouette_score(result["embedding"], result["cluster"][silhouette_rows])
        rating, segment, clusters = (adjusted_rand_score(planted, result[key])
                                     for key in ("risk_tier", "segment_tier", "cluster"))  # fmt: skip
        print(f"{name:<14}{int(fitted.model.metrics['training_customers']):>18,}{seconds:>8.1f}{rating:>12.4f}"
              f"{segment:>18.4f}{clusters:>14.4f}{fitted.model.k:>4}{silhouette:>12.4f}")  # fmt: skip
    print("(rating: the customer's risk tier, its segment's tier raised by its own score and the policy floors; "
          "segment tier: its cluster's tier;\n silhouette: the same seeded "
          f"{len(silhouette_rows):,} customers, each model's own embedding)")
    if "full fit" in scored:
        same = adjusted_rand_score(scored["full fit"]["cluster"], scored["sample fit"]["cluster"])
        tiers = adjusted_rand_score(scored["full fit"]["risk_tier"], scored["sample fit"]["risk_tier"])
        moved = float(np.mean(scored["full fit"]["risk_tier"] != scored["sample fit"]["risk_tier"]))
        print(f"sample fit vs full fit, all {batch.n:,} customers: ARI clusters {same:.4f}, ARI tiers {tiers:.4f}, "
              f"{moved:.3%} of customers rated differently")  # fmt: skip
        if batch.n <= args.sample_size:
            print(f"  ({batch.n:,} customers <= fit_sample_size {args.sample_size:,}: the sample is everyone)")


def published_against_planted(warehouse: Path, labels: Path) -> None:
    """ARI of a published run's clusters, segment tiers and ratings against the generator's planted groups."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as connection:
        [(published,)] = connection.sql("SELECT count(*) FROM cluster_assignments").fetchall()
        columns = connection.sql(
            "SELECT p.planted_group, c.cluster, c.segment_tier, c.risk_tier FROM cluster_assignments c"
            " JOIN read_csv(?, all_varchar=true) p ON c.customer_id = p.customer_id",
            params=[str(labels)],
        ).to_arrow_table()
    matched = columns.num_rows
    log(f"{matched:,} of {published:,} published customers have a planted label")
    if matched < published:
        sys.exit(f"{published - matched:,} published customers have no planted label in {labels}: the warehouse was "
                 "not published from the export these labels belong to")  # fmt: skip
    planted = pd.factorize(columns["planted_group"].to_numpy(zero_copy_only=False))[0]
    print(f"\npublished run {warehouse} against the planted groups ({matched:,} customers; target ARI >= 0.9)")
    for name in ("cluster", "segment_tier", "risk_tier"):
        values = pd.factorize(columns[name].to_numpy(zero_copy_only=False))[0]
        print(f"  ARI {name:<13}{adjusted_rand_score(planted, values):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="customers generated and fitted")
    parser.add_argument("--sample-size", type=int, default=PipelineSettings().fit_sample_size,
                        help="fit_sample_size of the sample fit (the pipeline's default)")  # fmt: skip
    parser.add_argument("--impute-rows", type=int, default=20_000, help="customers in the imputation comparison")
    parser.add_argument("--n-init", type=int, default=PipelineSettings().n_init, help="K-means restarts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-full-fit", action="store_true", help="only the sample fit (no fit on everyone)")
    parser.add_argument("--only-imputation", action="store_true", help="no fit: the imputation comparison only")
    parser.add_argument("--warehouse", type=Path, help="a published warehouse: its ARI against --labels, nothing else")
    parser.add_argument("--labels", type=Path, help="the planted groups `segmentation generate` wrote (*.labels.csv)")
    args = parser.parse_args()
    if (args.warehouse is None) != (args.labels is None):
        parser.error("--warehouse and --labels go together")
    if args.warehouse is not None:
        published_against_planted(args.warehouse, args.labels)
        return
    print(f"quality at {args.rows:,} customers (seed {args.seed}), fit_sample_size {args.sample_size:,}, "
          f"n_init {args.n_init}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        batch, planted = cleaned_customers(args.rows, args.seed, Path(folder))
    sampled_settings = PipelineSettings(fit_sample_size=args.sample_size, n_init=args.n_init)
    if not args.only_imputation:
        compare_fits(batch, planted, args)

    accuracy = imputation_accuracy(batch, sampled_settings, args.impute_rows, args.seed)
    print(f"\nimputation, held-out RMSE (standardised units) on {int(accuracy['customers']):,} customers, "
          f"k = {sampled_settings.knn_neighbors}: {int(accuracy['hidden']):,} known values blanked (10 %) in "
          f"{accuracy['columns']}")  # fmt: skip
    print(f"{'imputer':<36}{'RMSE':>10}{'seconds':>10}")
    print(f"{'KNNImputer (exact)':<36}{accuracy['exact']:>10.4f}{accuracy['exact_seconds']:>10.1f}")
    print(f"{'PatternKNNImputer (ours)':<36}{accuracy['ours']:>10.4f}{accuracy['ours_seconds']:>10.1f}")
    print(f"ratio ours / exact = {accuracy['ours'] / accuracy['exact']:.4f} (target <= 1.02)")
    log("done")


if __name__ == "__main__":
    main()
