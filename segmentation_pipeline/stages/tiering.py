"""Clusters -> High / Medium / Low risk tiers an analyst can explain to an auditor.

K-means finds groups; it does not know which group is risky. Each cluster gets a risk score from interpretable
AML indicators (weights in ``config.DEFAULT_RISK_WEIGHTS``, configurable):

    score(cluster) = sum over indicators i of  weight_i * mean over the cluster of z_i

where z_i is the indicator standardised over the whole population (money and counts on a log scale first), so a
money column in millions cannot swamp a 0/1 flag. Clusters are ranked by score; the top third of clusters is
High, the bottom third Low, the rest Medium (k = 3 gives one of each; k = 2 gives High and Low).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segmentation_pipeline import schema
from segmentation_pipeline.stages.features import derive_behaviour

TIERS: tuple[str, ...] = ("High", "Medium", "Low")
INDICATORS: tuple[str, ...] = (
    "is_pep", "high_income_hw", "exp_volume", "actual_volume", "actual_to_expected", "cash_share",
    "non_face_to_face_usage", "online_ft_usage", "num_alerts", "ctr_match", "previously_reported",
)  # fmt: skip
_LOG_SCALE = frozenset((*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS))
_FLAG_DEFAULT_ZERO = frozenset(schema.FLAG_COLUMNS)


def risk_indicators(customers: pd.DataFrame) -> pd.DataFrame:
    """The indicators in their natural units (PKR, counts, 0/1, ratio), NaN where unknown."""
    data = derive_behaviour(customers)
    out = {}
    for name in INDICATORS:
        if name in data.columns:
            values = pd.to_numeric(data[name], errors="coerce").astype("float64")
        else:
            values = pd.Series(np.nan, index=data.index)
        if name in _FLAG_DEFAULT_ZERO:
            values = values.fillna(0.0)  # a missing flag means "not flagged", as in the features
        if name == "actual_to_expected":
            values = np.expm1(values) + 1.0  # back from log ratio to "x times expected", readable for analysts
        out[name] = values
    return pd.DataFrame(out, index=customers.index)


def _scaled(indicators: pd.DataFrame) -> pd.DataFrame:
    """The scale z-scores are taken on: log1p for money and counts, log for the ratio, as-is otherwise."""
    scaled = indicators.copy()
    for name in scaled.columns:
        if name in _LOG_SCALE:
            scaled[name] = np.log1p(scaled[name].clip(lower=0))
        elif name == "actual_to_expected":
            scaled[name] = np.log(scaled[name].clip(lower=1e-9))
    return scaled


def tier_names_by_rank(k: int) -> list[str]:
    """Tier of each rank (0 = riskiest) for k clusters: a third High, a third Low, the rest Medium."""
    if k == 2:
        return ["High", "Low"]
    n_high = n_low = max(1, round(k / 3))
    return ["High"] * n_high + ["Medium"] * (k - n_high - n_low) + ["Low"] * n_low


@dataclass
class RiskTierModel:
    """The fitted tiering: population scale of each indicator, cluster scores and tiers, typical values."""

    weights: dict[str, float]
    means: dict[str, float]
    stds: dict[str, float]
    cluster_scores: dict[int, float]
    cluster_tiers: dict[int, str]
    contributions: pd.DataFrame  # cluster x indicator: weight * mean z (the score's terms)
    typical: pd.DataFrame  # cluster x indicator: median in natural units
    population_typical: dict[str, float]

    def z_scores(self, indicators: pd.DataFrame) -> pd.DataFrame:
        scaled = _scaled(indicators[list(self.means)])
        z = (scaled - pd.Series(self.means)) / pd.Series(self.stds)
        return z.fillna(0.0)  # unknown -> population average: adds nothing either way

    def customer_scores(self, indicators: pd.DataFrame) -> np.ndarray:
        z = self.z_scores(indicators)
        return (z * pd.Series(self.weights).reindex(z.columns).fillna(0.0)).sum(axis=1).to_numpy()

    def tier_of(self, clusters: np.ndarray) -> np.ndarray:
        return np.array([self.cluster_tiers[int(c)] for c in clusters], dtype=object)

    def reasons(self, indicators: pd.DataFrame, clusters: np.ndarray, top: int = 3) -> list[list[dict[str, object]]]:
        """Per customer, the indicators that most put it in its tier: for High the largest positive
        contributions, for Low the largest negative ones, for Medium the largest either way; each with the
        customer's value against its segment's and the population's typical (median) value."""
        weights = pd.Series(self.weights).reindex(list(self.means)).fillna(0.0)
        contributions = self.z_scores(indicators) * weights
        result = []
        for position, cluster in enumerate(clusters):
            row = contributions.iloc[position]
            tier = self.cluster_tiers[int(cluster)]
            if tier == "High":
                ranked = row.sort_values(ascending=False)
            elif tier == "Low":
                ranked = row.sort_values(ascending=True)
            else:
                ranked = row.reindex(row.abs().sort_values(ascending=False).index)
            reasons = []
            chosen = ranked.head(top)
            for name, contribution in zip(chosen.index, round_contributions(chosen.to_numpy()).tolist(), strict=True):
                value = indicators.iloc[position][name]
                reasons.append(
                    {
                        "indicator": name,
                        "value": None if pd.isna(value) else float(value),
                        "segment_typical": _or_none(self.typical.loc[int(cluster), name]),
                        "population_typical": _or_none(self.population_typical.get(name)),
                        "contribution": contribution,
                    }
                )
            result.append(reasons)
        return result


def round_contributions(contributions: np.ndarray) -> np.ndarray:
    """Contributions as reasons show them: 4 decimals (NumPy's rounding, so a batch is rounded in one call and
    the API's fast scorer and this model give the very same numbers)."""
    return np.round(np.asarray(contributions, dtype=np.float64), 4)


def _or_none(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def fit_risk_tiers(customers: pd.DataFrame, clusters: np.ndarray, weights: dict[str, float]) -> RiskTierModel:
    """Score every cluster from the indicators of its customers and rank the clusters into tiers."""
    unknown = set(weights) - set(INDICATORS)
    if unknown:
        raise ValueError(f"unknown risk indicators in weights: {sorted(unknown)}; known: {list(INDICATORS)}")
    indicators = risk_indicators(customers)
    scaled = _scaled(indicators)
    means = {name: float(scaled[name].mean()) if scaled[name].notna().any() else 0.0 for name in INDICATORS}
    stds = {}
    for name in INDICATORS:
        std = float(scaled[name].std(ddof=0)) if scaled[name].notna().sum() > 1 else 0.0
        stds[name] = std if std > 0 else 1.0  # a constant indicator has z = 0 everywhere
    full_weights = {name: float(weights.get(name, 0.0)) for name in INDICATORS}
    z = ((scaled - pd.Series(means)) / pd.Series(stds)).fillna(0.0)
    labels = pd.Series(np.asarray(clusters), index=customers.index, name="cluster")
    contributions = z.groupby(labels).mean() * pd.Series(full_weights)
    scores = contributions.sum(axis=1)
    ranked = scores.sort_values(ascending=False).index.tolist()
    tier_names = tier_names_by_rank(len(ranked))
    cluster_tiers = {int(cluster): tier_names[rank] for rank, cluster in enumerate(ranked)}
    typical = indicators.groupby(labels).median()
    return RiskTierModel(
        weights=full_weights,
        means=means,
        stds=stds,
        cluster_scores={int(c): float(s) for c, s in scores.items()},
        cluster_tiers=cluster_tiers,
        contributions=contributions,
        typical=typical,
        population_typical={name: _or_none(indicators[name].median()) for name in INDICATORS},
    )
