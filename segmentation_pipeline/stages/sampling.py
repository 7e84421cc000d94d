"""A bounded, seeded, stratified sample of customers to fit a model on when there are very many.

K-means centres, PCA axes, scaling and the tier model settle long before millions of customers: fitting on a few
hundred thousand gives the same segments (measured: ``benchmarks/bench_quality.py``; see docs/scaling.md) for a
fraction of the time and memory, and every customer is then scored by the compiled scorer in chunks. The sample is
stratified so that rare, risky customers are not left to chance: strata are the combinations of the AML flags
(PEP, previously reported, CTR match, high-net-worth housewife) and the decile of actual volume; each stratum gets
its proportional share, and at least ``min_per_stratum`` customers (all of them when it has fewer).
"""

from __future__ import annotations

import numpy as np

from segmentation_pipeline import schema
from segmentation_pipeline.stages.customers import CustomerBatch

VOLUME_BINS = 10
VOLUME_COLUMN = "actual_volume"
STRATA_COLUMNS: tuple[str, ...] = (*schema.FLAG_COLUMNS, VOLUME_COLUMN)  # all a stratum is made of


def strata(batch: CustomerBatch) -> np.ndarray:
    """Each customer's stratum: its flags as bits and its actual-volume decile (unknown volume: its own bin)."""
    key = np.zeros(batch.n, dtype=np.int64)
    for bit, flag in enumerate(schema.FLAG_COLUMNS):
        values = batch.numbers.get(flag)
        if values is not None:
            key |= (np.nan_to_num(values) > 0).astype(np.int64) << bit
    volume = batch.numbers.get(VOLUME_COLUMN)
    if volume is not None:
        known = ~np.isnan(volume)
        bins = np.full(batch.n, VOLUME_BINS, dtype=np.int64)  # unknown volume
        if known.any():
            edges = np.quantile(volume[known], np.linspace(0, 1, VOLUME_BINS + 1)[1:-1])
            bins[known] = np.searchsorted(edges, volume[known], side="right")
        key = key * (VOLUME_BINS + 1) + bins
    return key


def stratified_sample(batch: CustomerBatch, size: int, *, seed: int, min_per_stratum: int = 50) -> np.ndarray:
    """Sorted positions of at most ``size`` customers (all of them when the batch is no larger)."""
    if batch.n <= size:
        return np.arange(batch.n)
    key = strata(batch)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    quota = np.maximum(np.floor(counts * (size / batch.n)).astype(np.int64), np.minimum(counts, min_per_stratum))
    while quota.sum() > size:  # the minimums pushed it over: trim the largest strata
        largest = int(np.argmax(quota - np.minimum(counts, min_per_stratum)))
        quota[largest] -= min(int(quota.sum() - size), int(quota[largest] - min(counts[largest], min_per_stratum)))
    rank = np.empty(batch.n, dtype=np.int64)  # each customer's place in a random order within its stratum
    order = np.lexsort((np.random.default_rng(seed).random(batch.n), inverse))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(batch.n) - np.repeat(starts, counts)
    return np.flatnonzero(rank < quota[inverse])
