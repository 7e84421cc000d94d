"""Clusters -> High / Medium / Low risk tiers an analyst can explain to an auditor.

K-means finds groups; it does not know which group is risky. Each cluster gets a risk score from interpretable
AML indicators (weights in ``config.DEFAULT_RISK_WEIGHTS``, configurable):

    score(cluster) = sum over indicators i of  weight_i * mean over the cluster of z_i

where z_i is the indicator standardised over the whole population (money and counts on a log scale first), so a
money column in millions cannot swamp a 0/1 flag. Clusters are ranked by score; the top third of clusters is
High, the bottom third Low, the rest Medium (k = 3 gives one of each; k = 2 gives High and Low). A customer's own
score is the same sum over its own z values.

A customer's rating is never below its segment's tier, and its own score raises it: the *score boundary* of a tier
is the lowest score of any training customer whose segment has that tier or a riskier one
(:meth:`RiskTierModel.score_ranks`). So on the training customers no one is rated below a customer with a lower
score (no rank inversions), and a customer who scores like the High segments is High whatever its segment. Policy
rules (``stages/policy.py``) may then raise the rating further.

Reasons: a customer's indicators ordered from the most to the least telling for its tier (High: largest
contribution first; Low: most negative first; Medium: largest absolute contribution first), ties kept in
``INDICATORS`` order. :func:`reason_order` is the one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segmentation_pipeline import schema
from segmentation_pipeline.stages.customers import CustomerBatch

TIERS: tuple[str, ...] = ("High", "Medium", "Low")
TIER_RANK: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS)}
INDICATORS: tuple[str, ...] = (
    "is_pep", "high_income_hw", "exp_volume", "actual_volume", "actual_to_expected", "cash_share",
    "non_face_to_face_usage", "online_ft_usage", "num_alerts", "ctr_match", "previously_reported",
)  # fmt: skip
_LOG_SCALE = frozenset((*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS))
_FLAGS = frozenset(schema.FLAG_COLUMNS)
_FLAG_POSITIONS = np.array([i for i, name in enumerate(INDICATORS) if name in _FLAGS])
REASONS_PER_CUSTOMER = 3


def indicator_matrix(batch: CustomerBatch, derived: dict[str, np.ndarray]) -> np.ndarray:
    """The indicators in their natural units (PKR, counts, 0/1, "x times expected", share), NaN where unknown;
    columns in ``INDICATORS`` order. A missing flag means "not flagged", as in the features."""
    out = np.full((batch.n, len(INDICATORS)), np.nan)
    for position, name in enumerate(INDICATORS):
        values = derived[name] if name in derived else batch.numbers.get(name)
        if values is not None:
            out[:, position] = values
    ratio = out[:, _RATIO_POSITION]
    np.exp(ratio, out=ratio)  # back from log ratio to "x times expected"
    flags = out[:, _FLAG_POSITIONS]
    flags[np.isnan(flags)] = 0.0
    out[:, _FLAG_POSITIONS] = flags
    return out


_LOG1P_POSITIONS = np.array([i for i, name in enumerate(INDICATORS) if name in _LOG_SCALE])
_RATIO_POSITION = INDICATORS.index("actual_to_expected")


def scaled(indicators: np.ndarray) -> np.ndarray:
    """The scale z-scores are taken on: log1p for money and counts, log for the ratio, as-is otherwise."""
    out = indicators.copy()
    block = out[:, _LOG1P_POSITIONS]
    np.maximum(block, 0.0, out=block)
    out[:, _LOG1P_POSITIONS] = np.log1p(block, out=block)
    ratio = out[:, _RATIO_POSITION]
    np.maximum(ratio, 1e-9, out=ratio)
    np.log(ratio, out=ratio)
    return out


def tier_names_by_rank(k: int) -> list[str]:
    """Tier of each rank (0 = riskiest) for k clusters: a third High, a third Low, the rest Medium."""
    if k == 2:
        return ["High", "Low"]
    n_high = n_low = max(1, round(k / 3))
    return ["High"] * n_high + ["Medium"] * (k - n_high - n_low) + ["Low"] * n_low


def reason_order(contributions: np.ndarray, tier_ranks: np.ndarray) -> np.ndarray:
    """Per row, the indicator positions from the most to the least telling for the row's tier (0 High: by
    contribution, largest first; 2 Low: smallest first; 1 Medium: by absolute value, largest first). Ties keep
    ``INDICATORS`` order (a stable sort on the negated key)."""
    keys = np.where(tier_ranks[:, None] == 0, -contributions,
                    np.where(tier_ranks[:, None] == 2, contributions, -np.abs(contributions)))  # fmt: skip
    return np.argsort(keys, axis=1, kind="stable")


@dataclass
class RiskTierModel:
    """The fitted tiering as arrays over ``INDICATORS``: population scale of each indicator, cluster scores and
    tiers, the score's terms per cluster and the typical (median) values reasons compare against."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    cluster_scores: np.ndarray  # (k,)
    cluster_tiers: list[str]  # (k,)
    contributions: np.ndarray  # (k, indicators): weight * mean z
    typical: np.ndarray  # (k, indicators): median in natural units (NaN: none known)
    population_typical: np.ndarray  # (indicators,)
    score_boundaries: np.ndarray  # (len(TIERS),): a score at or above [r] is rated rank r or riskier; Low: -inf

    @property
    def k(self) -> int:
        return len(self.cluster_tiers)

    def terms(self, indicators: np.ndarray) -> np.ndarray:
        """Each customer's score terms: weight * z (unknown -> population average: adds nothing)."""
        z = scaled(indicators)
        z -= self.means
        z /= self.stds
        z[np.isnan(z)] = 0.0
        z *= self.weights
        return z

    def tier_ranks(self, clusters: np.ndarray) -> np.ndarray:
        """The segment tier (rank, 0 = High) of each customer's cluster."""
        ranks = np.array([TIER_RANK[t] for t in self.cluster_tiers], dtype=np.int8)
        return ranks[clusters]

    def score_ranks(self, scores: np.ndarray) -> np.ndarray:
        """The tier (rank) each score reaches on its own: the riskiest tier whose boundary it is at or above."""
        ranks = np.full(len(scores), len(TIERS) - 1, dtype=np.int8)
        for rank in range(len(TIERS) - 2, -1, -1):  # Medium, then High overwrites
            ranks[scores >= self.score_boundaries[rank]] = rank
        return ranks

    def boundary_of(self, tier: str) -> float:
        return float(self.score_boundaries[TIER_RANK[tier]])

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {name: getattr(self, name) for name in
                  ("weights", "means", "stds", "cluster_scores", "contributions", "typical", "population_typical",
                   "score_boundaries")}
        return {"cluster_tiers": self.cluster_tiers, "indicators": list(INDICATORS)}, arrays  # fmt: skip

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> RiskTierModel:
        return cls(cluster_tiers=list(meta["cluster_tiers"]), **arrays)


def _nan_median(values: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN; NaN for a column with no value (without numpy's warning)."""
    out = np.full(values.shape[1], np.nan)
    for column in range(values.shape[1]):
        present = values[:, column][~np.isnan(values[:, column])]
        if present.size:
            out[column] = np.median(present)
    return out


def fit_risk_tiers(
    indicators: np.ndarray, clusters: np.ndarray, k: int, weights: dict[str, float]
) -> RiskTierModel:
    """Score every cluster from the indicators (``indicator_matrix``) of its customers; rank clusters into tiers."""
    unknown = set(weights) - set(INDICATORS)
    if unknown:
        raise ValueError(f"unknown risk indicators in weights: {sorted(unknown)}; known: {list(INDICATORS)}")
    values = scaled(indicators)
    present = ~np.isnan(values)
    counts = present.sum(axis=0)
    means = np.divide(np.nansum(values, axis=0), counts, out=np.zeros(len(INDICATORS)), where=counts > 0)
    spread = np.sqrt(np.divide(np.nansum((values - means) ** 2, axis=0), counts,
                               out=np.zeros(len(INDICATORS)), where=counts > 1))  # fmt: skip
    stds = np.where(spread > 0, spread, 1.0)  # a constant indicator has z = 0 everywhere
    full_weights = np.array([float(weights.get(name, 0.0)) for name in INDICATORS])
    z = (values - means) / stds
    z[np.isnan(z)] = 0.0
    clusters = np.asarray(clusters, dtype=np.intp)
    sizes = np.bincount(clusters, minlength=k).astype(np.float64)
    sums = np.zeros((k, len(INDICATORS)))
    np.add.at(sums, clusters, z)
    contributions = np.divide(sums, sizes[:, None], out=np.zeros_like(sums), where=sizes[:, None] > 0) * full_weights
    scores = contributions.sum(axis=1)
    ranked = np.argsort(-scores, kind="stable")
    names = tier_names_by_rank(k)
    tiers = [""] * k
    for rank, cluster in enumerate(ranked):
        tiers[int(cluster)] = names[rank]
    order = np.argsort(clusters, kind="stable")
    bounds = np.cumsum(np.bincount(clusters, minlength=k))[:-1]
    typical = np.vstack([_nan_median(indicators[rows]) for rows in np.split(order, bounds)])
    model = RiskTierModel(
        weights=full_weights, means=means, stds=stds, cluster_scores=scores, cluster_tiers=tiers,
        contributions=contributions, typical=typical, population_typical=_nan_median(indicators),
        score_boundaries=np.full(len(TIERS), -np.inf),
    )  # fmt: skip
    model.score_boundaries = score_boundaries(model.terms(indicators).sum(axis=1), model.tier_ranks(clusters))
    return model


def score_boundaries(scores: np.ndarray, segment_ranks: np.ndarray) -> np.ndarray:
    """Per tier rank, the lowest score among customers whose segment is that tier or riskier (-inf for Low; a tier
    no segment has takes the boundary of the next riskier one, so the score alone never reaches it)."""
    out = np.full(len(TIERS), -np.inf)
    riskier = np.inf  # no customer at all: nothing is reached by score
    for rank in range(len(TIERS) - 1):
        members = scores[segment_ranks <= rank]
        riskier = float(members.min()) if members.size else riskier
        out[rank] = riskier
    return out
