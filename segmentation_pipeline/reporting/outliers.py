"""Customers that fit no segment well: flagged two ways, listed with the reasons an analyst can check.

- IsolationForest on the PCA embedding (every component, not just the two plotted), taken relative to each
  customer's own cluster: customers that are easy to isolate from the rest of their segment;
- distance to their own cluster's centroid, as a robust z-score within the cluster (median and MAD, so the
  outliers themselves do not widen the yardstick): customers the segment describes badly.

Reasons compare the customer's values with its cluster's typical (median) values: the features on which it
deviates most, and risk flags that are rare in its cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from segmentation_pipeline.reporting.data import (
    FLAG_FEATURES,
    LOG_FEATURES,
    MONEY_FEATURES,
    categorical,
    flag_features,
    flag_values,
    format_number,
    format_share,
    numeric_features,
    short_label,
)

OUTLIER_COLUMNS = [
    "customer_id", "cluster", "risk_tier", "risk_score", "method", "isolation_score", "distance_z", "reasons",
]  # fmt: skip


@dataclass(frozen=True)
class OutlierSettings:
    """How many customers are flagged: the IsolationForest share and the distance z-score threshold."""

    contamination: float = 0.005  # the most isolated 0.5%
    distance_z: float = 4.0  # robust z of distance to centroid within the cluster
    max_reasons: int = 3
    random_state: int = 0


def _robust_z(values: pd.Series, groups: pd.Series) -> pd.Series:
    """(x - group median) / (1.4826 * group MAD), falling back to the group std when the MAD is 0."""
    median = values.groupby(groups).transform("median")
    mad = (values - median).abs().groupby(groups).transform("median") * 1.4826
    std = values.groupby(groups).transform("std")
    scale = mad.where(mad > 0, std).where(lambda s: s > 0, np.nan)
    return ((values - median) / scale).fillna(0.0)


def within_cluster_residuals(embedding: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each customer's position relative to its own cluster: (x - cluster mean) / cluster std per component.

    On raw coordinates an IsolationForest mostly rediscovers the smallest cluster (High-risk customers are rare,
    so they are "easy to isolate"); relative to the cluster it finds customers their segment describes badly."""
    residuals = np.empty_like(embedding, dtype="float64")
    for cluster in np.unique(clusters):
        members = clusters == cluster
        part = embedding[members]
        std = part.std(axis=0)
        residuals[members] = (part - part.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return residuals


def isolation_scores(embedding: np.ndarray, clusters: np.ndarray | None = None, random_state: int = 0) -> np.ndarray:
    """Anomaly score per customer (higher = more isolated), from an IsolationForest on the embedding (relative
    to each customer's cluster when ``clusters`` is given)."""
    data = within_cluster_residuals(embedding, clusters) if clusters is not None else embedding
    forest = IsolationForest(n_estimators=100, max_samples=min(256, len(data)), random_state=random_state)
    forest.fit(data)
    return -forest.score_samples(data)


RARE_LEVEL_SHARE = 0.02  # a category level held by under 2% of the customer's cluster is worth a mention
RARE_FLAG_SHARE = 0.10
TOP_SHARE = 0.01  # a value only 1% of all customers reach
CATEGORY_COLUMNS = ("nationality", "residence", "occupation", "account_type", "province", "city")


def _reasons(position: int, context: _ReasonContext, settings: OutlierSettings, distance_ratio: float | None) -> str:
    """Why one customer is unusual, most telling first: distance to its centre, values far from its cluster's,
    flags and categories rare in its cluster, then values extreme for the whole population."""
    cluster = int(context.clusters.iat[position])
    reasons: list[str] = []
    if distance_ratio is not None and math.isfinite(distance_ratio):
        reasons.append(f"far from its cluster centre ({distance_ratio:.1f}× the cluster's median distance)")
    deviation = context.deviations.iloc[position]
    for feature, size in deviation.abs().sort_values(ascending=False).items():
        if size < 2:
            break
        money = feature in MONEY_FEATURES
        value, typical = context.values.at[position, feature], context.medians.at[cluster, feature]
        direction = "high" if deviation[feature] > 0 else "low"
        reasons.append(f"{short_label(feature)} {format_number(value, money=money)} ({direction} for its cluster; "
                       f"median {format_number(typical, money=money)})")  # fmt: skip
    for flag in context.flag_rates.columns:
        rate = context.flag_rates.at[cluster, flag]
        if context.flags.at[position, flag] >= 0.5 and rate < RARE_FLAG_SHARE:
            reasons.append(f"{FLAG_FEATURES[flag]} (only {format_share(rate)} of its cluster)")
    for column, shares in context.level_shares.items():
        level = context.levels.at[position, column]
        share = shares.get((cluster, level), 0.0)
        if share < RARE_LEVEL_SHARE:
            reasons.append(f"{short_label(column)} {level} ({format_share(share)} of its cluster)")
    tops = context.population_top_share.iloc[position].dropna().sort_values()
    for feature, top in tops.items():
        if top > TOP_SHARE:
            break
        money = feature in MONEY_FEATURES
        value = format_number(context.values.at[position, feature], money=money)
        reasons.append(f"{short_label(feature)} {value} (top {format_share(top)} of all customers)")
    if not reasons:  # no single value is extreme: name the largest deviations so the analyst knows where to look
        largest = []
        for feature in deviation.abs().sort_values(ascending=False).index[:2]:
            money = feature in MONEY_FEATURES
            largest.append(f"{short_label(feature)} {format_number(context.values.at[position, feature], money=money)}"
                           f" (cluster median {format_number(context.medians.at[cluster, feature], money=money)})")
        return "unusual combination; largest deviations: " + "; ".join(largest)
    return "; ".join(dict.fromkeys(reasons[: settings.max_reasons]))


@dataclass
class _ReasonContext:
    """Per-customer and per-cluster statistics the reasons are read from (computed once, vectorised)."""

    clusters: pd.Series
    values: pd.DataFrame
    deviations: pd.DataFrame
    medians: pd.DataFrame
    flags: pd.DataFrame
    flag_rates: pd.DataFrame
    levels: pd.DataFrame
    level_shares: dict[str, dict[tuple[int, str], float]]
    population_top_share: pd.DataFrame  # share of all customers with a value at least as high


def _reason_context(frame: pd.DataFrame, clusters: pd.Series) -> _ReasonContext:
    numerics = numeric_features(frame)
    values = frame[numerics].apply(pd.to_numeric, errors="coerce")
    scaled = values.copy()
    for feature in numerics:
        if feature in LOG_FEATURES:
            scaled[feature] = np.log1p(values[feature].clip(lower=0))
    deviations = pd.DataFrame({f: _robust_z(scaled[f], clusters) for f in numerics}).where(values.notna(), 0.0)
    flags = pd.DataFrame({f: flag_values(frame[f]) for f in flag_features(frame)}, index=frame.index)
    columns = [c for c in CATEGORY_COLUMNS if c in frame.columns]
    levels = pd.DataFrame({c: categorical(frame[c]) for c in columns}, index=frame.index)
    level_shares = {
        c: levels[c].groupby(clusters).value_counts(normalize=True).to_dict() for c in columns
    }  # fmt: skip
    # Only the upper tail: a small value is ordinary for most of these (no alerts, no cash).
    upper = values[[f for f in numerics if f not in ("age", "tenure_years")]]
    top_share = upper.rank(ascending=False, method="max", pct=True).where(upper > 0)  # a zero is never "top"
    return _ReasonContext(
        clusters=clusters, values=values, deviations=deviations, medians=values.groupby(clusters).median(),
        flags=flags, flag_rates=flags.groupby(clusters).mean(), levels=levels, level_shares=level_shares,
        population_top_share=top_share,
    )  # fmt: skip


def find_outliers(
    segmented: pd.DataFrame, embedding: np.ndarray | None = None, settings: OutlierSettings | None = None
) -> pd.DataFrame:
    """Flagged customers, most anomalous first, with method, scores and reasons (columns ``OUTLIER_COLUMNS``).

    ``embedding`` rows must be in ``segmented``'s row order; without it the plotted pc1/pc2 are used."""
    settings = settings or OutlierSettings()
    if len(segmented) < 10:
        return pd.DataFrame(columns=OUTLIER_COLUMNS)
    frame = segmented.reset_index(drop=True)
    matrix = embedding if embedding is not None else frame[["pc1", "pc2"]].to_numpy()
    clusters = frame["cluster"].astype(int)
    iso = isolation_scores(np.asarray(matrix, dtype="float64"), clusters.to_numpy(), settings.random_state)
    iso_cut = np.quantile(iso, 1 - settings.contamination)
    distance = frame["distance_to_centroid"].astype("float64")
    distance_z = _robust_z(distance, clusters)
    by_iso = iso >= iso_cut
    by_distance = (distance_z >= settings.distance_z).to_numpy()
    flagged = np.flatnonzero(by_iso | by_distance)
    if not len(flagged):
        return pd.DataFrame(columns=OUTLIER_COLUMNS)

    context = _reason_context(frame, clusters)
    median_distance = distance.groupby(clusters).transform("median")

    rows = []
    for position in flagged:
        method = "both" if by_iso[position] and by_distance[position] else (
            "isolation forest" if by_iso[position] else "distance to centroid")  # fmt: skip
        typical = median_distance.iat[position]
        ratio = float(distance.iat[position] / typical) if typical else math.nan
        rows.append(
            {
                "customer_id": str(frame["customer_id"].iat[position]),  # ids are text (leading zeros count)
                "cluster": int(clusters.iat[position]),
                "risk_tier": str(frame["risk_tier"].iat[position]),
                "risk_score": float(frame["risk_score"].iat[position]),
                "method": method,
                "isolation_score": float(iso[position]),
                "distance_z": float(distance_z.iat[position]),
                "reasons": _reasons(position, context, settings, ratio if by_distance[position] else None),
            }
        )
    result = pd.DataFrame(rows, columns=OUTLIER_COLUMNS)
    result["_both"] = result["method"] == "both"
    result = result.sort_values(["_both", "isolation_score"], ascending=[False, False]).drop(columns="_both")
    return result.reset_index(drop=True)
