"""PCA embedding -> K-means segments, with k fixed or chosen by silhouette, and the quality metrics of each k."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score


@dataclass(frozen=True)
class ClusteringResult:
    model: KMeans
    k: int
    labels: np.ndarray
    metrics: dict[str, float]  # silhouette, davies_bouldin, calinski_harabasz, inertia of the chosen k
    k_search: pd.DataFrame  # one row per k tried: k, silhouette, davies_bouldin, calinski_harabasz, inertia


def segmentation_metrics(
    embedding: np.ndarray, labels: np.ndarray, *, sample_size: int = 10_000, random_state: int = 0
) -> dict[str, float]:
    """Silhouette (on a seeded sample: exact silhouette is O(n^2)), Davies-Bouldin and Calinski-Harabasz."""
    n = len(labels)
    if len(np.unique(labels)) < 2:
        return {"silhouette": float("nan"), "davies_bouldin": float("nan"), "calinski_harabasz": float("nan")}
    sample = sample_size if n > sample_size else None
    return {
        "silhouette": float(silhouette_score(embedding, labels, sample_size=sample, random_state=random_state)),
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
