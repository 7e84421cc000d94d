"""Stability of the segmentation across runs: stable cluster ids, tier migrations, ARI and PSI drift.

Plain Python (no Dagster): the ``kmeans_model`` and ``cluster_assignments`` assets call these functions.

- :func:`match_clusters` renumbers a new clustering so that cluster ``i`` means the same segment as the previous
  model's cluster ``i``. It matches on *customer overlap* (Hungarian method on the contingency table of old vs new
  labels of the same customers), which works even when the PCA basis changed between runs, where centroid
  distances would compare coordinates of different spaces.
- :func:`adjusted_rand` compares two labelings of the same customers (1 = identical partition, ~0 = chance).
- :func:`population_stability_index` compares two distributions with bins taken from the *previous* population's
  quantiles: ``PSI = sum_b (a_b - e_b) * ln(a_b / e_b)``; by convention < 0.1 is stable, 0.1-0.25 a moderate shift
  (warn) and >= 0.25 a significant shift (alert).
- :func:`tier_migrations` lists customers whose published risk tier changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline import schema

PSI_WARN = 0.1
PSI_ALERT = 0.25
PSI_EPSILON = 1e-4  # share given to an empty bin, so ln(a/e) stays finite
PSI_BINS = 10
MISSING_BIN = "missing"  # missing values form their own bin: a column going blank is drift too

# Numeric columns of the cleaned export whose drift is tracked (those present in a run are used).
DRIFT_COLUMNS: tuple[str, ...] = (
    *schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS, *schema.FLAG_COLUMNS, "age", "tenure_years",
)  # fmt: skip
TIER_MIX_SUBJECT = "tier_mix"

MIGRATION_COLUMNS = {
    "customer_id": "str",
    "old_tier": "str",
    "new_tier": "str",
    "old_cluster": "int32",
    "new_cluster": "int32",
    "old_model_version": "str",
    "new_model_version": "str",
    "run_id": "str",
}


# --- stable cluster ids -----------------------------------------------------------------------------------------


def match_clusters(
    previous_labels: Sequence[int] | np.ndarray,
    new_labels: Sequence[int] | np.ndarray,
    k_new: int,
    *,
    fallback_order: Sequence[int] | None = None,
) -> list[int]:
    """The renumbering of a new clustering that keeps the previous model's cluster ids.

    ``previous_labels[n]`` and ``new_labels[n]`` are the old and new cluster of the same customer n. Returns
    ``order`` with ``order[i]`` = the new cluster that becomes cluster ``i`` (what ``reorder_clusters`` takes).
    New cluster j becomes old id i so that the number of customers "in i before and in j now" is maximal over
    all one-to-one matchings (Hungarian method). Ids stay ``0..k_new-1``: when k grew, the extra clusters take
    the free ids in ``fallback_order`` order (e.g. by risk score); when k shrank, old ids >= k_new cannot be kept.
    """
    previous = np.asarray(previous_labels, dtype="int64")
    new = np.asarray(new_labels, dtype="int64")
    if previous.shape != new.shape:
        raise ValueError(f"label arrays differ in length: {previous.shape} vs {new.shape}")
    fallback = list(fallback_order) if fallback_order is not None else list(range(k_new))
    if sorted(fallback) != list(range(k_new)):
        raise ValueError(f"fallback_order must be a permutation of 0..{k_new - 1}, got {fallback}")
    if len(new) and (new.min() < 0 or new.max() >= k_new):
        raise ValueError(f"new labels must lie in 0..{k_new - 1}")
    keep = previous[(previous >= 0) & (previous < k_new)] if len(previous) else previous
    if len(previous) == 0 or len(keep) == 0:
        return fallback
    k_rows = int(min(k_new, previous.max() + 1))
    overlap = np.zeros((k_rows, k_new), dtype="int64")
    mask = previous < k_rows
    np.add.at(overlap, (previous[mask], new[mask]), 1)
    rows, columns = linear_sum_assignment(overlap, maximize=True)
    order: list[int | None] = [None] * k_new
    for old_id, new_cluster in zip(rows, columns, strict=True):
        order[int(old_id)] = int(new_cluster)
    # Ids no old cluster claims (k grew, or an old cluster had no customer left) go to the remaining new clusters
    # in fallback order, so a fresh segment gets the same id on every run that finds it the same way.
    taken = {c for c in order if c is not None}
    remaining = iter(c for c in fallback if c not in taken)
    return [c if c is not None else next(remaining) for c in order]


def relabel(labels: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Labels under the renumbering ``order`` (new id i = old cluster ``order[i]``), as reorder_clusters does."""
    order_array = np.asarray(order)
    inverse = np.empty_like(order_array)
    inverse[order_array] = np.arange(len(order_array))
    return inverse[np.asarray(labels)]


@dataclass
class Continuity:
    """How a fresh clustering's ids continue the previous assignments: ``order`` (new id i = fresh cluster
    ``order[i]``, what ``reorder_clusters`` takes), and the old and new (renumbered) labels of the customers both
    assignments share (what ARI is computed on)."""

    order: list[int]
    previous_labels: np.ndarray
    new_labels: np.ndarray
    previous_model_version: str | None = None


def match_previous(
    customer_ids: np.ndarray, labels: np.ndarray, k: int, previous: pd.DataFrame | None
) -> Continuity:
    """Renumber a fresh clustering (``labels`` of ``customer_ids``, numbered by risk score) so that its ids
    continue the previous assignments' (customer_id, cluster, model_version). Without previous assignments
    (first model) or shared customers, the risk order stays."""
    empty = np.empty(0, dtype="int64")
    if previous is None or previous.empty:
        return Continuity(list(range(k)), empty, empty)
    ids = np.asarray(customer_ids).astype(str)
    # Ids are text; a warehouse written before they were keeps them as numbers: compared as their digits.
    old = previous.assign(customer_id=previous["customer_id"].astype(str)).drop_duplicates("customer_id")
    old = old.set_index("customer_id")["cluster"]
    shared = pd.Index(ids).isin(old.index)
    previous_labels = old.reindex(ids[shared]).to_numpy(dtype="int64")
    versions = previous["model_version"].dropna().astype(str) if "model_version" in previous else pd.Series([])
    previous_version = str(versions.mode().iloc[0]) if len(versions) else None
    fresh = np.asarray(labels)[shared]
    order = match_clusters(previous_labels, fresh, k)
    return Continuity(order, previous_labels, relabel(fresh, order), previous_version)


# --- agreement and drift ----------------------------------------------------------------------------------------


def adjusted_rand(previous_labels: Sequence[int] | np.ndarray, new_labels: Sequence[int] | np.ndarray) -> float:
    """Adjusted Rand index of two labelings of the same customers; NaN when there are none."""
    if len(previous_labels) == 0:
        return float("nan")
    return float(adjusted_rand_score(np.asarray(previous_labels), np.asarray(new_labels)))


def psi_flag(value: float) -> str:
    """``ok`` below 0.1, ``warn`` from 0.1, ``alert`` from 0.25 (``n/a`` when it could not be computed)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value >= PSI_ALERT:
        return "alert"
    if value >= PSI_WARN:
        return "warn"
    return "ok"


def psi_from_shares(expected: Mapping[str, float], actual: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """PSI of two distributions over the same named bins (shares; a bin absent from one side counts as empty)."""
    bins = sorted(set(expected) | set(actual))
    total = 0.0
    for name in bins:
        e = max(float(expected.get(name, 0.0)), epsilon)
        a = max(float(actual.get(name, 0.0)), epsilon)
        total += (a - e) * math.log(a / e)
    return float(total)


def shares(values: Iterable[object]) -> dict[str, float]:
    """Share of each distinct value (as text), e.g. the tier mix {"High": 0.1, "Medium": 0.3, "Low": 0.6}."""
    series = pd.Series(list(values), dtype="object").astype(str)
    if series.empty:
        return {}
    return {str(k): float(v) for k, v in series.value_counts(normalize=True).items()}


@dataclass(frozen=True)
class BinnedDistribution:
    """A population's distribution of one numeric column: interior bin edges and the share in each bin.

    Bin b holds values in ``[edges[b-1], edges[b])`` (bin 0 everything below ``edges[0]``, the last bin everything
    from ``edges[-1]``); missing values are counted in the extra bin :data:`MISSING_BIN`."""

    edges: list[float]
    shares: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"edges": self.edges, "shares": self.shares}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BinnedDistribution:
        bin_shares = {str(k): float(v) for k, v in dict(data["shares"]).items()}
        return cls(edges=[float(e) for e in data["edges"]], shares=bin_shares)


def _bin_shares(values: np.ndarray, edges: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, dtype="float64")
    n = len(values)
    if n == 0:
        return {}
    missing = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges, dtype="float64"), values[~missing], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    out = {str(b): float(c) / n for b, c in enumerate(counts)}
    out[MISSING_BIN] = float(missing.sum()) / n
    return out


def fit_bins(values: Sequence[float] | np.ndarray | pd.Series, n_bins: int = PSI_BINS) -> BinnedDistribution:
    """Quantile bins of a reference population (deciles by default) and its shares in them. Tied quantiles (flags,
    counts) collapse into one edge, so a 0/1 column gets two bins and a constant one bin."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    present = array[~np.isnan(array)]
    if len(present):
        quantiles = np.quantile(present, np.linspace(0, 1, n_bins + 1)[1:-1], method="lower")
        # An edge at the minimum would leave bin 0 empty (nothing lies below the minimum): leave it out.
        edges = sorted({float(q) for q in quantiles if q > present.min()})
    else:
        edges = []
    return BinnedDistribution(edges=edges, shares=_bin_shares(array, edges))


def population_stability_index(
    reference: BinnedDistribution, values: Sequence[float] | np.ndarray | pd.Series
) -> float:
    """PSI of ``values`` against a reference population, in the reference's bins."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    if len(array) == 0 or not reference.shares:
        return float("nan")
    return psi_from_shares(reference.shares, _bin_shares(array, reference.edges))


def drift_columns(columns: Iterable[str]) -> list[str]:
    """The tracked numeric columns among these cleaned customers' columns."""
    present = set(columns)
    return [c for c in DRIFT_COLUMNS if c in present]


def population_profile(customers: pd.DataFrame, tiers: Iterable[str]) -> dict[str, object]:
    """What a model remembers of its training population, to measure the next population's drift against:
    quantile bins per tracked column, and the tier mix."""
    return {
        "features": {c: fit_bins(customers[c]).to_json() for c in drift_columns(customers.columns)},
        TIER_MIX_SUBJECT: shares(tiers),
    }


@dataclass
class StabilityReport:
    """Stability of a new model against the previous one (ARI on shared customers) and drift of the population
    (PSI per feature and of the tier mix)."""

    previous_model_version: str | None
    n_shared_customers: int
    ari: float
    feature_psi: dict[str, float]
    tier_mix_psi: float

    @property
    def flags(self) -> dict[str, str]:
        """Every PSI that is not ``ok``: feature (or tier_mix) -> ``warn`` / ``alert``."""
        out = {name: psi_flag(v) for name, v in self.feature_psi.items()}
        out[TIER_MIX_SUBJECT] = psi_flag(self.tier_mix_psi)
        return {name: flag for name, flag in out.items() if flag in ("warn", "alert")}

    def to_frame(self, *, run_id: str, model_version: str, created_at: pd.Timestamp) -> pd.DataFrame:
        """Long format, one row per figure: metric (ari / psi), feature (clusters / tier_mix / a column),
        value and flag — easy to filter in SQL (``WHERE flag = 'alert'``)."""
        rows: list[dict[str, object]] = [
            {"metric": "ari", "feature": "clusters", "value": self.ari, "flag": None},
            {"metric": "psi", "feature": TIER_MIX_SUBJECT, "value": self.tier_mix_psi,
             "flag": psi_flag(self.tier_mix_psi)},
        ]  # fmt: skip
        rows += [{"metric": "psi", "feature": c, "value": v, "flag": psi_flag(v)} for c, v in self.feature_psi.items()]
        frame = pd.DataFrame(rows)
        frame.insert(0, "run_id", run_id)
        frame.insert(1, "model_version", model_version)
        frame.insert(2, "previous_model_version", self.previous_model_version)
        frame["n_shared_customers"] = self.n_shared_customers
        frame["created_at"] = created_at
        return frame.astype({"value": "float64", "flag": "str", "previous_model_version": "str"})

    def summary(self) -> dict[str, object]:
        """The figures as plain JSON-able values (Dagster metadata, logs)."""
        return {
            "previous_model_version": self.previous_model_version,
            "n_shared_customers": self.n_shared_customers,
            "ari": None if math.isnan(self.ari) else round(self.ari, 4),
            "tier_mix_psi": None if math.isnan(self.tier_mix_psi) else round(self.tier_mix_psi, 4),
            "feature_psi": {k: (None if math.isnan(v) else round(v, 4)) for k, v in self.feature_psi.items()},
            "flags": self.flags,
        }


def stability_report(
    *,
    previous_model_version: str | None,
    previous_labels: np.ndarray,
    new_labels: np.ndarray,
    previous_profile: Mapping[str, object] | None,
    customers: pd.DataFrame,
    new_tiers: Iterable[str],
) -> StabilityReport:
    """ARI of old vs new labels of the shared customers, PSI of each tracked column of ``customers`` and of the
    new tier mix against the previous model's population profile (NaN where there is nothing to compare)."""
    feature_psi: dict[str, float] = {}
    tier_mix_psi = float("nan")
    if previous_profile:
        for column, data in dict(previous_profile.get("features", {})).items():
            if column in customers.columns:
                feature_psi[column] = population_stability_index(BinnedDistribution.from_json(data), customers[column])
        previous_mix = previous_profile.get(TIER_MIX_SUBJECT) or {}
        tiers = list(new_tiers)
        if previous_mix and tiers:
            tier_mix_psi = psi_from_shares(previous_mix, shares(tiers))
    return StabilityReport(
        previous_model_version=previous_model_version,
        n_shared_customers=len(previous_labels),
        ari=adjusted_rand(previous_labels, new_labels),
        feature_psi=feature_psi,
        tier_mix_psi=tier_mix_psi,
    )


# --- tier migrations --------------------------------------------------------------------------------------------


def empty_migrations() -> pd.DataFrame:
    """A tier_migrations frame with no rows but the right column types (so the table exists from the start)."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in MIGRATION_COLUMNS.items()})


def tier_migrations(previous: pd.DataFrame, current: pd.DataFrame, *, run_id: str) -> pd.DataFrame:
    """Customers whose risk tier changed between two published assignments.

    Both frames have customer_id, cluster, risk_tier and model_version (as in ``cluster_assignments``); only
    customers in both are compared. Returns one row per migrated customer with old/new tier, cluster and model
    version, sorted by customer id."""
    columns = ["customer_id", "cluster", "risk_tier", "model_version"]
    old, new = (frame[columns].assign(customer_id=frame["customer_id"].astype(str)) for frame in (previous, current))
    merged = old.merge(new, on="customer_id", suffixes=("_old", "_new"))
    moved = merged[merged["risk_tier_old"].astype(str) != merged["risk_tier_new"].astype(str)]
    if moved.empty:
        return empty_migrations()
    out = pd.DataFrame(
        {
            "customer_id": moved["customer_id"].to_numpy(dtype=object),
            "old_tier": moved["risk_tier_old"].astype(str).to_numpy(dtype=object),
            "new_tier": moved["risk_tier_new"].astype(str).to_numpy(dtype=object),
            "old_cluster": moved["cluster_old"].to_numpy(dtype="int32"),
            "new_cluster": moved["cluster_new"].to_numpy(dtype="int32"),
            "old_model_version": moved["model_version_old"].astype(str).to_numpy(dtype=object),
            "new_model_version": moved["model_version_new"].astype(str).to_numpy(dtype=object),
            "run_id": run_id,
        }
    )
    return out.sort_values("customer_id", ignore_index=True).astype(MIGRATION_COLUMNS)
