"""PCA embedding -> K-means segments, with k fixed or chosen by silhouette, and the quality metrics of each k."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class ClusteringResult:
    model: KMeans
    k: int
    labels: np.ndarray
    metrics: dict[str, float]  # silhouette, davies_bouldin, calinski_harabasz, inertia of the chosen k
    k_search: pd.DataFrame  # one row per k tried: k, silhouette, davies_bouldin, calinski_harabasz, inertia


_SILHOUETTE_THREADS = max(1, min(4, os.cpu_count() or 1))  # each holds a block of distances (80 MB for 10,000)


def silhouette(
    embedding: np.ndarray, labels: np.ndarray, *, sample_size: int | None = None, random_state: int = 0,
    chunk_rows: int = 1024,
) -> float:
    """The mean silhouette coefficient: :func:`sklearn.metrics.silhouette_score` with the Euclidean metric, on
    the same seeded sample (``sample_size`` customers drawn as it draws them), equal to it within rounding.

    sklearn reduces each row of distances with its own ``bincount`` (about 2.5 s on a 10,000-customer sample);
    here a block of rows' distances (the same ``|x|^2 + |y|^2 - 2xy`` expansion) is summed per cluster by one
    matrix product with the clusters' indicator matrix. Memory: ``chunk_rows`` x sample floats per thread.
    a(i) is the mean distance to the other members of i's cluster, b(i) the smallest mean distance to another
    cluster; a customer alone in its cluster scores 0, as in sklearn. Blocks are scored on up to four threads (the
    same value: each block's scores are its own): 0.5 s instead of 0.75 s on two cores."""
    points = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    if sample_size is not None:
        rows = check_random_state(random_state).permutation(len(points))[:sample_size]
        points, labels = points[rows], labels[rows]
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    n, k = len(points), int(codes.max()) + 1
    if not 2 <= k <= n - 1:
        raise ValueError(f"the silhouette needs 2 to n - 1 clusters; got {k} cluster(s) of {n} customer(s)")
    sizes = np.bincount(codes, minlength=k).astype(np.float64)
    members = np.zeros((n, k))
    members[np.arange(n), codes] = 1.0
    squares = np.einsum("ij,ij->i", points, points)
    scores = np.empty(n)

    def score_block(start: int) -> None:
        stop = min(start + chunk_rows, n)
        block = np.arange(stop - start)
        distances = points[start:stop] @ points.T
        distances *= -2.0
        distances += squares[start:stop, None]
        distances += squares[None, :]
        np.maximum(distances, 0.0, out=distances)
        np.sqrt(distances, out=distances)
        distances[block, block + start] = 0.0
        sums = distances @ members
        own = codes[start:stop]
        own_size = sizes[own]
        a = sums[block, own] / np.maximum(own_size - 1.0, 1.0)
        means = sums / sizes
        means[block, own] = np.inf
        b = means.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (b - a) / np.maximum(a, b)
        s[own_size <= 1] = 0.0
        scores[start:stop] = np.nan_to_num(s)

    # Blocks are independent: one per core at a time (NumPy lets go of the GIL), BLAS on one thread inside each.
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(_SILHOUETTE_THREADS) as pool:
        list(pool.map(score_block, range(0, n, chunk_rows)))
    return float(scores.mean())


def segmentation_metrics(
    embedding: np.ndarray, labels: np.ndarray, *, sample_size: int = 10_000, random_state: int = 0
) -> dict[str, float]:
    """Silhouette (on a seeded sample: exact silhouette is O(n^2)), Davies-Bouldin and Calinski-Harabasz."""
    n = len(labels)
    if len(np.unique(labels)) < 2:
        return {"silhouette": float("nan"), "davies_bouldin": float("nan"), "calinski_harabasz": float("nan")}
    sample = sample_size if n > sample_size else None
    return {
        "silhouette": silhouette(embedding, labels, sample_size=sample, random_state=random_state),
        "davies_bouldin": float(davies_bouldin_score(embedding, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(embedding, labels)),
    }


def fit_kmeans(
    embedding: np.ndarray,
    *,
    n_clusters: int | None = 3,
    k_range: tuple[int, int] = (2, 8),
    random_state: int = 0,
    n_init: int = 10,
    silhouette_sample_size: int = 10_000,
) -> ClusteringResult:
    """K-means with ``n_clusters`` clusters, or, when it is None, the k in ``k_range`` (inclusive) with the
    best silhouette. Metrics are recorded for every k tried."""
    embedding = np.asarray(embedding, dtype="float64")
    n = len(embedding)
    candidates = [n_clusters] if n_clusters is not None else list(range(k_range[0], k_range[1] + 1))
    candidates = [k for k in candidates if 2 <= k < n]
    if not candidates:
        raise ValueError(f"cannot cluster {n} customers into {n_clusters or k_range} clusters")
    rows, fits = [], {}
    for k in candidates:
        model = KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(embedding)
        metrics = segmentation_metrics(
            embedding, model.labels_, sample_size=silhouette_sample_size, random_state=random_state
        )
        rows.append({"k": k, **metrics, "inertia": float(model.inertia_)})
        fits[k] = model
    k_search = pd.DataFrame(rows)
    best = k_search.loc[k_search["silhouette"].fillna(-1).idxmax()]
    k = int(best["k"])
    chosen = fits[k]
    metrics = {name: float(best[name]) for name in ("silhouette", "davies_bouldin", "calinski_harabasz", "inertia")}
    return ClusteringResult(model=chosen, k=k, labels=chosen.labels_.copy(), metrics=metrics, k_search=k_search)


def reorder_clusters(model: KMeans, order: list[int]) -> KMeans:
    """Renumber a fitted K-means in place so that new cluster i is old cluster ``order[i]``.

    Permuting the centroids is all ``predict`` depends on, so renumbered labels are exactly the old labels
    mapped through the permutation."""
    order_array = np.asarray(order)
    model.cluster_centers_ = model.cluster_centers_[order_array]
    inverse = np.empty_like(order_array)
    inverse[order_array] = np.arange(len(order_array))
    model.labels_ = inverse[model.labels_]
    return model
