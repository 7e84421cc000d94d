"""Customers that fit no segment well: flagged two ways, listed with the reasons an analyst can check.

- IsolationForest on the PCA embedding (every component, not just the two plotted), taken relative to each
  customer's own cluster: customers that are easy to isolate from the rest of their segment;
- distance to their own cluster's centroid, as a robust z-score within the cluster (median and MAD, so the
  outliers themselves do not widen the yardstick): customers the segment describes badly.

Reasons compare the customer's values with its cluster's typical (median) values: the features on which it
deviates most, and risk flags that are rare in its cluster.
"""

from __future__ import annotations

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
TOP_SHARE = 0.01  # a value only 1% of the customers searched reach
CATEGORY_COLUMNS = ("nationality", "residence", "occupation", "account_type", "province", "city")


def _long(frame: pd.DataFrame, positions: np.ndarray, name: str) -> pd.DataFrame:
    """The rows ``positions`` of a customer x column frame as (position, column, ``name``) rows, row by row."""
    part = frame.iloc[positions]
    return pd.DataFrame({
        "position": np.repeat(positions, part.shape[1]),
        "column": np.tile(np.asarray(part.columns, dtype=object), len(part)),
        name: part.to_numpy().ravel(),
    })  # fmt: skip


def _numbers(values: pd.Series, columns: pd.Series) -> list[str]:
    return [format_number(v, money=c in MONEY_FEATURES) for v, c in zip(values, columns, strict=True)]


def _reasons(context: _ReasonContext, positions: np.ndarray, distance_ratio: pd.Series,
             settings: OutlierSettings) -> pd.Series:  # fmt: skip
    """Why each customer at ``positions`` is unusual, most telling first: distance to its centre (where
    ``distance_ratio``, indexed by position, has a finite value), values far from its cluster's, flags and
    categories rare in its cluster, then values extreme for the whole population. Built for every customer at
    once: one row per candidate reason (position, group, rank within the group, text), the first
    ``settings.max_reasons`` of each customer kept."""
    cluster_of = context.clusters.to_numpy()
    parts = []
    ratios = distance_ratio[np.isfinite(distance_ratio.astype("float64"))]
    parts.append(pd.DataFrame({"position": ratios.index.to_numpy(), "group": 0, "rank": 0.0, "text": [
        f"far from its cluster centre ({r:.1f}× the cluster's median distance)" for r in ratios]}))  # fmt: skip

    deviations = _long(context.deviations, positions, "z")
    deviations["value"] = _long(context.values, positions, "value")["value"].to_numpy()
    deviations["cluster"] = cluster_of[deviations["position"]]
    medians = context.medians.stack().rename("median").rename_axis(["cluster", "column"]).reset_index()
    deviations = deviations.merge(medians, on=["cluster", "column"], how="left", sort=False)
    deviations["size"] = deviations["z"].abs()
    deviations = deviations.sort_values(["position", "size"], ascending=[True, False], kind="stable")
    value_text, median_text = _numbers(deviations["value"], deviations["column"]), _numbers(
        deviations["median"], deviations["column"])  # fmt: skip
    labels = deviations["column"].map(short_label)
    far = (deviations["size"] >= 2).to_numpy()
    direction = np.where(deviations["z"] > 0, "high", "low")
    texts = [f"{name} {value} ({way} for its cluster; median {median})"
             for name, value, way, median in zip(labels, value_text, direction, median_text, strict=True)]  # fmt: skip
    parts.append(pd.DataFrame({"position": deviations["position"].to_numpy()[far], "group": 1,
                               "rank": -deviations["size"].to_numpy()[far], "text": np.asarray(texts)[far]}))

    flags = _long(context.flags, positions, "flag")
    flags["cluster"] = cluster_of[flags["position"]]
    rates = context.flag_rates.stack().rename("rate").rename_axis(["cluster", "column"]).reset_index()
    flags = flags.merge(rates, on=["cluster", "column"], how="left", sort=False)
    flags = flags[(flags["flag"] >= 0.5) & (flags["rate"] < RARE_FLAG_SHARE)]
    order = {c: i for i, c in enumerate(context.flag_rates.columns)}
    parts.append(pd.DataFrame({"position": flags["position"], "group": 2, "rank": flags["column"].map(order),
                               "text": [f"{FLAG_FEATURES[f]} (only {format_share(r)} of its cluster)"
                                        for f, r in zip(flags["column"], flags["rate"], strict=True)]}))  # fmt: skip

    levels = _long(context.levels, positions, "level")
    cluster_level = list(zip(cluster_of[levels["position"]], levels["level"], strict=True))
    levels["share"] = [context.level_shares[c].get(key, 0.0) for c, key in zip(levels["column"], cluster_level,
                                                                                strict=True)]  # fmt: skip
    levels = levels[levels["share"] < RARE_LEVEL_SHARE]
    order = {c: i for i, c in enumerate(context.levels.columns)}
    parts.append(pd.DataFrame({"position": levels["position"], "group": 3, "rank": levels["column"].map(order),
                               "text": [f"{short_label(c)} {v} ({format_share(s)} of its cluster)" for c, v, s
                                        in zip(levels["column"], levels["level"], levels["share"], strict=True)]}))

    tops = _long(context.population_top_share, positions, "top")
    tops = tops[tops["top"].notna() & (tops["top"] <= TOP_SHARE)]
    values = context.values.to_numpy()[tops["position"], [context.values.columns.get_loc(c) for c in tops["column"]]]
    parts.append(pd.DataFrame({"position": tops["position"], "group": 4, "rank": tops["top"],
                               "text": [f"{short_label(c)} {v} (top {format_share(t)} of customers)" for c, v, t
                                        in zip(tops["column"], _numbers(values, tops["column"]), tops["top"],
                                               strict=True)]}))  # fmt: skip

    candidates = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else (
        pd.DataFrame(columns=["position", "group", "rank", "text"]))  # fmt: skip
    candidates = candidates.sort_values(["position", "group", "rank"], kind="stable")
    kept = candidates.groupby("position", sort=False).head(settings.max_reasons)
    kept = kept.drop_duplicates(["position", "text"])
    reasons = kept.groupby("position", sort=False)["text"].agg("; ".join)

    # No single value is extreme: name the largest deviations so the analyst knows where to look.
    largest = deviations.groupby("position", sort=False).head(2)
    fallback = [f"{name} {value} (cluster median {median})" for name, value, median in zip(
        largest["column"].map(short_label), _numbers(largest["value"], largest["column"]),
        _numbers(largest["median"], largest["column"]), strict=True)]  # fmt: skip
    fallback = pd.Series(fallback, index=largest["position"].to_numpy(), dtype=object)
    fallback = "unusual combination; largest deviations: " + fallback.groupby(level=0, sort=False).agg("; ".join)
    return reasons.reindex(positions).fillna(fallback.reindex(positions))


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
    population_top_share: pd.DataFrame  # share of the customers searched with a value at least as high


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
    ratio = (distance / median_distance.where(median_distance != 0)).iloc[flagged][by_distance[flagged]]
    both = by_iso[flagged] & by_distance[flagged]
    rows = pd.DataFrame({
        "customer_id": frame["customer_id"].iloc[flagged].astype(str).to_numpy(),  # ids are text (leading zeros)
        "cluster": clusters.iloc[flagged].to_numpy(dtype=int),
        "risk_tier": frame["risk_tier"].iloc[flagged].astype(str).to_numpy(),
        "risk_score": frame["risk_score"].iloc[flagged].astype("float64").to_numpy(),
        "method": np.where(both, "both", np.where(by_iso[flagged], "isolation forest", "distance to centroid")),
        "isolation_score": iso[flagged].astype("float64"),
        "distance_z": distance_z.iloc[flagged].astype("float64").to_numpy(),
        "reasons": _reasons(context, flagged, ratio, settings).to_numpy(),
    })  # fmt: skip
    result = rows.assign(_both=rows["method"] == "both")
    result = result.sort_values(["_both", "isolation_score"], ascending=[False, False]).drop(columns="_both")
    return result.reset_index(drop=True)
