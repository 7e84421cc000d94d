"""Every count, share, mean and median the report shows about ALL customers, computed in SQL over everyone.

The report draws per-customer pictures (the PCA map, the outlier search) from a bounded sample, but a count or a
share of the population is never estimated: :func:`population_figures` runs GROUP BY queries in DuckDB over a
relation holding one row per customer (the cleaned columns plus cluster, risk_tier, ...). That relation is a view
over the warehouse tables when the report reads a run (:func:`build.load_report_data`), or a registered pandas
frame when a report is built from plain data (:func:`population_of`): one implementation either way.

Labels defined in Python (a flag's 0/1 reading, a category's "(not given)", a channel combination) are applied
to the DISTINCT values SQL groups by, never re-implemented in SQL; the counts are then summed per label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from segmentation_pipeline.reporting.data import (
    FLAG_FEATURES,
    LOG_FEATURES,
    NUMERIC_FEATURES,
    categorical,
    channel_combination,
    flag_values,
    tier_order,
)

RELATION = "report_population"  # the one-row-per-customer relation the queries read
CHANNELS = "subscribed_channels"
# What the report counts per tier: the gender mix, the treemaps and the narrative's most common levels.
REPORT_LEVELS: tuple[tuple[str, ...], ...] = (
    ("gender",), (CHANNELS,), ("account_type",), ("occupation",), ("province",), ("province", "city"),
)  # fmt: skip
NARRATIVE_MEDIANS = ("exp_volume", "actual_volume", "cash_usage", "non_face_to_face_usage", "online_ft_usage")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def feature_sql(column: str) -> str:
    """A numeric feature as the report standardises it: log1p of the value clipped at 0 for money and counts,
    the value itself otherwise (NULL stays NULL)."""
    value = f"TRY_CAST({_ident(column)} AS DOUBLE)"
    return f"ln(1 + CASE WHEN {value} < 0 THEN 0 ELSE {value} END)" if column in LOG_FEATURES else value


def level_label(column: str) -> Callable[[pd.Series], pd.Series]:
    """How a categorical column's raw values become the levels the report shows (one rule per column)."""
    if column == CHANNELS:
        return lambda values: values.map(channel_combination)
    return categorical


@dataclass
class Population:
    """Exact figures over every customer (plain frames, so figures and tests read them without SQL)."""

    customers: int
    tier_counts: pd.Series  # tier -> customers, tiers present only, High first
    clusters: pd.DataFrame  # cluster, risk_tier (of its first customer by id), customers
    columns: list[str]  # every column of the relation
    numeric_features: list[str]  # report features with at least one value
    flag_features: list[str]
    numeric_summary: pd.DataFrame  # risk_tier, feature, count, mean, std, median, p25, p75
    numeric_means: pd.Series  # feature -> population mean (natural units)
    flag_counts: pd.DataFrame  # risk_tier, flag, flagged, customers, share
    cluster_stats: pd.DataFrame  # index cluster; columns (feature, mean|std|min|max), natural units
    standardised_cluster_means: pd.DataFrame  # cluster x feature: mean population z (log1p for money, counts)
    standardised_tier_means: pd.DataFrame  # tier x feature: the same per tier
    tier_facts: dict[str, dict[str, float]]
    distinct: dict[str, tuple[int, object]]  # charted column -> (distinct non-null values, one of them)
    levels: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict)  # path -> risk_tier, *path, customers

    @property
    def tiers(self) -> list[str]:
        return list(self.tier_counts.index)

    def level_counts(self, path: Sequence[str]) -> pd.DataFrame:
        """Customers per tier and level(s) of ``path`` (labels as the report shows them)."""
        return self.levels[tuple(path)]


def _df(connection: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
    return connection.execute(sql, list(params)).df()


def _level_counts(connection: duckdb.DuckDBPyConnection, path: Sequence[str]) -> pd.DataFrame:
    """Customers per tier and combination of levels, the Python labels applied to the distinct raw values."""
    columns = ", ".join(_ident(c) for c in path)
    raw = _df(connection, f"SELECT CAST(risk_tier AS VARCHAR) AS risk_tier, {columns}, count(*) AS customers "
                          f"FROM {RELATION} GROUP BY ALL")  # fmt: skip
    for column in path:
        raw[column] = level_label(column)(raw[column]).to_numpy()
    counts = raw.groupby(["risk_tier", *path], sort=False)["customers"].sum().reset_index()
    counts["customers"] = counts["customers"].astype("int64")
    return counts


def _flag_counts(connection: duckdb.DuckDBPyConnection, flags: list[str], tiers: pd.Series) -> pd.DataFrame:
    rows = []
    for flag in flags:
        raw = _df(connection, f"SELECT CAST(risk_tier AS VARCHAR) AS risk_tier, {_ident(flag)} AS value, "
                              f"count(*) AS n FROM {RELATION} GROUP BY ALL")  # fmt: skip
        raw["flagged"] = np.where(flag_values(raw["value"]) >= 0.5, raw["n"], 0)
        flagged = raw.groupby("risk_tier")["flagged"].sum()
        for tier, customers in tiers.items():
            n = int(flagged.get(tier, 0))
            rows.append({"risk_tier": tier, "flag": flag, "flagged": n, "customers": int(customers),
                         "share": n / customers if customers else math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=["risk_tier", "flag", "flagged", "customers", "share"])


def _numeric_summary(connection: duckdb.DuckDBPyConnection, features: list[str], tiers: list[str]) -> pd.DataFrame:
    columns = ["risk_tier", "feature", "count", "mean", "std", "median", "p25", "p75"]
    if not features:
        return pd.DataFrame(columns=columns)
    parts = []
    for feature in features:
        value = f"TRY_CAST({_ident(feature)} AS DOUBLE)"
        parts.append(f"SELECT CAST(risk_tier AS VARCHAR) AS risk_tier, '{feature}' AS feature, "
                     f"count({value}) AS count, avg({value}) AS mean, stddev_samp({value}) AS std, "
                     f"quantile_cont({value}, [0.25, 0.5, 0.75]) AS q FROM {RELATION} GROUP BY risk_tier")  # fmt: skip
    summary = _df(connection, f"SELECT * EXCLUDE (q), q[2] AS median, q[1] AS p25, q[3] AS p75 FROM "
                              f"({' UNION ALL '.join(parts)})")  # fmt: skip
    summary["count"] = summary["count"].astype("int64")
    summary["std"] = summary["std"].where(summary["count"] > 1, 0.0)
    order = {(t, f): i for i, (t, f) in enumerate((t, f) for t in tiers for f in features)}
    summary["_order"] = [order.get((t, f), len(order)) for t, f in zip(summary["risk_tier"], summary["feature"],
                                                                         strict=True)]  # fmt: skip
    summary = summary[summary["risk_tier"].isin(tiers)].sort_values("_order").drop(columns="_order")
    return summary[columns].reset_index(drop=True)


def _standardised_means(connection: duckdb.DuckDBPyConnection, features: list[str], by: str) -> pd.DataFrame:
    """``by`` x feature: the mean of the population z-score (ddof 0) of each feature, on log1p for money and
    counts; 0 for a feature without spread."""
    if not features:
        return pd.DataFrame()
    stats = ", ".join(f"avg({feature_sql(f)}) AS m{i}, stddev_pop({feature_sql(f)}) AS s{i}"
                      for i, f in enumerate(features))  # fmt: skip
    means = ", ".join(f"avg({feature_sql(f)}) AS {_ident(f)}" for f in features)
    population = _df(connection, f"SELECT {stats} FROM {RELATION}").iloc[0]
    groups = _df(connection, f"SELECT {by} AS key, {means} FROM {RELATION} GROUP BY {by} ORDER BY key")
    groups = groups.set_index("key")
    for i, feature in enumerate(features):
        mean, std = population[f"m{i}"], population[f"s{i}"]
        if pd.isna(std) or not np.isfinite(std) or std == 0:
            groups[feature] = groups[feature] * 0.0
        else:
            groups[feature] = (groups[feature] - mean) / std
    return groups


def _cluster_stats(connection: duckdb.DuckDBPyConnection, features: list[str]) -> pd.DataFrame:
    if not features:
        return pd.DataFrame()
    stats = {"mean": "avg", "std": "stddev_samp", "min": "min", "max": "max"}
    aggregates = ", ".join(f"{fn}(TRY_CAST({_ident(f)} AS DOUBLE))" for f in features for fn in stats.values())
    frame = _df(connection, f"SELECT cluster, {aggregates} FROM {RELATION} GROUP BY cluster ORDER BY cluster")
    frame = frame.set_index("cluster")
    frame.columns = pd.MultiIndex(levels=[features, list(stats)], codes=[  # levels unsorted: mean, std, min, max
        np.repeat(np.arange(len(features)), len(stats)), np.tile(np.arange(len(stats)), len(features))])
    return frame


def _tier_facts(connection: duckdb.DuckDBPyConnection, columns: set[str], flags: pd.DataFrame,
                tiers: pd.Series) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per tier: the narrative's facts (flag shares, medians, ratios, alerts); keys absent when the export lacks
    the column."""
    def number(column: str) -> str:
        return f"TRY_CAST({_ident(column)} AS DOUBLE)"

    selects = ["CAST(risk_tier AS VARCHAR) AS risk_tier"]
    for column in NARRATIVE_MEDIANS:
        if column in columns:
            selects.append(f"median({number(column)}) AS median_{column}")
    if {"exp_volume", "actual_volume"} <= columns:
        selects.append(f"median({number('actual_volume')} / CASE WHEN {number('exp_volume')} > 0 "
                       f"THEN {number('exp_volume')} END) AS median_actual_to_expected")  # fmt: skip
    if {"cash_usage", "actual_volume"} <= columns:
        share = f"{number('cash_usage')} / CASE WHEN {number('actual_volume')} > 0 THEN {number('actual_volume')} END"
        selects.append(f"median(CASE WHEN {share} > 1 THEN 1.0 ELSE {share} END) AS median_cash_share")
    if "num_alerts" in columns:
        selects.append(f"avg(CASE WHEN coalesce({number('num_alerts')}, 0) >= 1 THEN 1.0 ELSE 0.0 END) "
                       "AS alerted_share")  # fmt: skip
        selects.append(f"avg({number('num_alerts')}) AS mean_alerts")
    rows = _df(connection, f"SELECT {', '.join(selects)} FROM {RELATION} GROUP BY risk_tier").set_index("risk_tier")
    facts: dict[str, dict[str, float]] = {}
    for tier in tiers.index:
        tier_facts: dict[str, float] = {}
        for flag in flags["flag"].unique():
            if flag in FLAG_FEATURES:
                row = flags[(flags["risk_tier"] == tier) & (flags["flag"] == flag)]
                tier_facts[f"{flag}_share"] = float(row["share"].iloc[0]) if len(row) else math.nan
        for key in rows.columns:
            value = rows.at[tier, key] if tier in rows.index else math.nan
            tier_facts[key] = float(value) if pd.notna(value) else math.nan
        facts[tier] = tier_facts
    return facts


def population_columns(level_paths: Sequence[Sequence[str]] = REPORT_LEVELS) -> list[str]:
    """The customer columns :func:`population_figures` reads (besides customer_id, cluster and risk_tier)."""
    return list(dict.fromkeys([*NUMERIC_FEATURES, *FLAG_FEATURES, *(c for path in level_paths for c in path)]))


def population_figures(connection: duckdb.DuckDBPyConnection, *, level_paths: Sequence[Sequence[str]] = REPORT_LEVELS
                       ) -> Population:  # fmt: skip
    """Compute every population figure over the relation ``RELATION`` on ``connection`` (one row per customer).
    ``level_paths``: the category combinations to count per tier (treemaps, mixes); absent columns are skipped."""
    columns = [str(c) for c in _df(connection, f"SELECT * FROM {RELATION} LIMIT 0").columns]
    present = set(columns)
    counts = _df(connection, f"SELECT CAST(risk_tier AS VARCHAR) AS risk_tier, count(*) AS n FROM {RELATION} "
                             "GROUP BY ALL")  # fmt: skip
    order = tier_order(counts["risk_tier"])
    tier_counts = counts.set_index("risk_tier")["n"].reindex(order).fillna(0).astype("int64")
    clusters = _df(connection, f"SELECT cluster, CAST(arg_min(risk_tier, customer_id) AS VARCHAR) AS risk_tier, "
                               f"count(*) AS customers FROM {RELATION} GROUP BY cluster ORDER BY cluster")  # fmt: skip
    clusters["customers"] = clusters["customers"].astype("int64")
    numeric = _with_numbers(connection, [c for c in NUMERIC_FEATURES if c in present])
    charted = list(dict.fromkeys(c for path in level_paths for c in path if c in present))
    distinct: dict[str, tuple[int, object]] = {}
    if charted:
        selects = ", ".join(f"count(DISTINCT {_ident(c)}) AS \"n{i}\", any_value({_ident(c)}) AS \"v{i}\""
                            for i, c in enumerate(charted))  # fmt: skip
        row = _df(connection, f"SELECT {selects} FROM {RELATION}").iloc[0]
        distinct = {c: (int(row[f"n{i}"]), row[f"v{i}"]) for i, c in enumerate(charted)}
    flags = [c for c in FLAG_FEATURES if c in present]
    flag_counts = _flag_counts(connection, flags, tier_counts)
    means = (_df(connection, "SELECT " + ", ".join(f"avg(TRY_CAST({_ident(f)} AS DOUBLE)) AS {_ident(f)}"
                                                   for f in numeric) + f" FROM {RELATION}").iloc[0]
             if numeric else pd.Series(dtype="float64"))  # fmt: skip
    profile = numeric + flags
    population = Population(
        customers=int(counts["n"].sum()),
        tier_counts=tier_counts, clusters=clusters, columns=columns, numeric_features=numeric, flag_features=flags,
        numeric_summary=_numeric_summary(connection, numeric, order), numeric_means=means.astype("float64"),
        flag_counts=flag_counts, cluster_stats=_cluster_stats(connection, profile),
        standardised_cluster_means=_standardised_means(connection, profile, "cluster"),
        standardised_tier_means=_standardised_means(connection, profile, "CAST(risk_tier AS VARCHAR)"),
        tier_facts=_tier_facts(connection, present, flag_counts, tier_counts), distinct=distinct,
    )  # fmt: skip
    for path in level_paths:
        if set(path) <= present:
            population.levels[tuple(path)] = _level_counts(connection, path)
    return population


def _with_numbers(connection: duckdb.DuckDBPyConnection, columns: list[str]) -> list[str]:
    """The columns holding at least one number."""
    if not columns:
        return []
    row = _df(connection, "SELECT " + ", ".join(f"count(TRY_CAST({_ident(c)} AS DOUBLE)) AS {_ident(c)}"
                                                for c in columns) + f" FROM {RELATION}").iloc[0]  # fmt: skip
    return [c for c in columns if row[c] > 0]


def population_of(segmented: pd.DataFrame, *, level_paths: Sequence[Sequence[str]] = REPORT_LEVELS) -> Population:
    """The population figures of a frame holding every customer (reports built from plain data, tests)."""
    with duckdb.connect() as connection:
        connection.register("_customers", segmented)  # copied once: every query then reads DuckDB's own columns
        connection.execute(f"CREATE TABLE {RELATION} AS SELECT * FROM _customers")
        return population_figures(connection, level_paths=level_paths)


def as_population(source: pd.DataFrame | Population, *paths: Sequence[str]) -> Population:
    """``source`` itself when it is already a :class:`Population`, else the figures of the frame (with the level
    counts of ``paths`` besides the report's own)."""
    if isinstance(source, Population):
        return source
    return population_of(source, level_paths=[*REPORT_LEVELS, *(tuple(p) for p in paths)])


def stratified_sample(connection: duckdb.DuckDBPyConnection, size: int, seed: int = 0) -> str:
    """SQL selecting the customer_id of at most about ``size`` customers of ``RELATION``, drawn within each
    (risk tier, cluster) stratum in proportion to its size, at least one per stratum (a small High cluster is
    never sampled away). Deterministic for a seed: customers are ranked by a hash of their id and the seed."""
    total = connection.execute(f"SELECT count(*) FROM {RELATION}").fetchone()
    fraction = min(1.0, size / max(int(total[0]) if total else 0, 1))
    return (
        "SELECT customer_id FROM (SELECT customer_id, "
        "row_number() OVER (PARTITION BY risk_tier, cluster ORDER BY hash(CAST(customer_id AS VARCHAR), "
        f"{int(seed)}), customer_id) AS rank, count(*) OVER (PARTITION BY risk_tier, cluster) AS stratum "
        f"FROM {RELATION}) WHERE rank <= greatest(1, round(stratum * {fraction!r}))"
    )
