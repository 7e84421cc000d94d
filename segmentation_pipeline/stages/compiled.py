"""The compiled scorer: a fitted model as plain arrays and one vectorised ``score``.

``cluster_assignments`` (the batch run), ``segmentation`` CLI summaries, the report and the scoring API all score
customers with :meth:`CompiledScorer.score`; nothing else turns a customer into a cluster, a tier, a score or
reasons. A batch is scored in chunks (``chunk_size`` customers at a time), so memory stays bounded whatever the
number of customers.

Per chunk: features (the fitted transformer's ``transform``) -> PCA (``(x - mean) @ components.T``) -> nearest
centroid (K-means' own criterion, ``||c||^2 - 2 x.c``) -> the segment's tier; the customer's risk score from the
tier model's terms and the tier it reaches; the policy rules it matches; the rating (``policy.rate``: the riskiest
of the three). Reasons are ordered for the final rating (``tiering.reason_order`` decides the order, ties
included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.policy import Rating, rate, rule_id_lists
from segmentation_pipeline.stages.tiering import INDICATORS, REASONS_PER_CUSTOMER, TIERS, indicator_matrix, reason_order

if TYPE_CHECKING:
    from segmentation_pipeline.stages.model import SegmentationModel

DEFAULT_CHUNK = 100_000


@dataclass
class ScoredBatch:
    """Per customer: cluster, rating (and what it came from), risk score, distance to the centroid, the embedding,
    and what reasons need."""

    customer_id: np.ndarray
    cluster: np.ndarray
    risk_tier: np.ndarray  # object array of tier names: the rating
    segment_rank: np.ndarray  # tier ranks (0 = High): the cluster's tier
    score_rank: np.ndarray  # the tier the score reaches on its own
    before_rules: np.ndarray  # the riskier of the two
    risk_rank: np.ndarray  # the rating: raised to the floors of the rules matched
    rules_matched: np.ndarray  # (n, rules) booleans, in the policy's order
    risk_score: np.ndarray
    distance_to_centroid: np.ndarray
    embedding: np.ndarray  # (n, components)
    indicators: np.ndarray  # (n, len(INDICATORS)) natural units, NaN where unknown
    contributions: np.ndarray  # (n, len(INDICATORS)) weight * z
    features: np.ndarray | None = None  # (n, features) when asked for

    @property
    def rating(self) -> Rating:
        return Rating(segment_rank=self.segment_rank, score_rank=self.score_rank, before_rules=self.before_rules,
                      risk_rank=self.risk_rank, matched=self.rules_matched)  # fmt: skip

    @property
    def segment_tier(self) -> np.ndarray:
        return _TIER_NAMES[self.segment_rank]

    @property
    def tier_before_rules(self) -> np.ndarray:
        return _TIER_NAMES[self.before_rules]


_TIER_NAMES = np.array(TIERS, dtype=object)


@dataclass(frozen=True)
class ReasonTable:
    """Reasons of ``n`` customers, flat and customer-major: entries ``[i * per_customer, (i + 1) * per_customer)``
    are customer ``i``'s, most telling first."""

    n: int
    per_customer: int
    indicator: list[str]
    value: list[float | None]
    segment_typical: list[float | None]
    population_typical: list[float | None]
    contribution: list[float]

    def per_customer_lists(self, flat: list[Any]) -> list[list[Any]]:
        """Cut one object per entry (``flat``, in this table's order) into one list per customer."""
        size = self.per_customer
        if size == 0:
            return [[] for _ in range(self.n)]
        groups = [iter(flat)] * size  # the same iterator `size` times: zip takes consecutive entries
        return [list(group) for group in zip(*groups, strict=True)]

    def dicts(self) -> list[list[dict[str, object]]]:
        flat = [
            {"indicator": i, "value": v, "segment_typical": s, "population_typical": p, "contribution": c}
            for i, v, s, p, c in zip(self.indicator, self.value, self.segment_typical, self.population_typical,
                                     self.contribution, strict=True)
        ]  # fmt: skip
        return self.per_customer_lists(flat)


@dataclass(frozen=True)
class ReasonArrays:
    """:class:`ReasonTable` as arrays (NaN where a value is unknown; ``indicator``: positions in ``INDICATORS``),
    what a table of many customers' reasons is built from."""

    n: int
    per_customer: int
    indicator: np.ndarray
    value: np.ndarray
    segment_typical: np.ndarray
    population_typical: np.ndarray
    contribution: np.ndarray


def _with_none(values: np.ndarray) -> np.ndarray:
    """Floats as an object array with None for NaN (what reasons show for 'unknown')."""
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out


class CompiledScorer:
    """A :class:`SegmentationModel` compiled to arrays (built once per model: ``model.scorer``)."""

    def __init__(self, model: SegmentationModel) -> None:
        self.version = model.version
        self.reference_date = model.reference_date
        self.features = model.features
        self.features.imputer_.warm_cache()  # the KD-trees of the common gap patterns now, not on first requests
        components = np.asarray(model.pca_components, dtype=np.float64)
        self._components_t = np.ascontiguousarray(components.T)
        self._pca_offset = np.asarray(model.pca_mean, dtype=np.float64) @ components.T
        self._centers = np.asarray(model.centers, dtype=np.float64)
        self._centers_t = np.ascontiguousarray(self._centers.T)
        self._centers_sq = (self._centers**2).sum(axis=1)
        self.tiers = model.tiers
        self.policy = model.policy
        self._names = np.array(INDICATORS, dtype=object)

    def score(self, batch: CustomerBatch, *, chunk_size: int = DEFAULT_CHUNK, keep_features: bool = False
              ) -> ScoredBatch:  # fmt: skip
        """Cluster, tier, risk score, distance and reason terms of every customer of ``batch``."""
        parts = [self._score_chunk(chunk, keep_features) for chunk in batch.chunks(chunk_size)]
        if len(parts) == 1:
            return parts[0]
        return ScoredBatch(**{
            name: np.concatenate([getattr(p, name) for p in parts]) if getattr(parts[0], name) is not None else None
            for name in ScoredBatch.__dataclass_fields__
        })  # fmt: skip

    def _score_chunk(self, batch: CustomerBatch, keep_features: bool) -> ScoredBatch:
        derived = self.features.derived(batch)
        features = self.features.transform(batch, derived)
        embedding = features @ self._components_t
        embedding -= self._pca_offset
        clusters = np.argmin(self._centers_sq - 2.0 * (embedding @ self._centers_t), axis=1)
        offsets = embedding - self._centers[clusters]
        distances = np.sqrt(np.einsum("ij,ij->i", offsets, offsets))
        indicators = indicator_matrix(batch, derived)
        contributions = self.tiers.terms(indicators)
        scores = contributions.sum(axis=1)
        rating = rate(self.tiers.tier_ranks(clusters), self.tiers.score_ranks(scores),
                      self.policy.matches(batch, indicators), self.policy)  # fmt: skip
        return ScoredBatch(
            customer_id=batch.customer_ids, cluster=clusters.astype(np.int32), risk_tier=_TIER_NAMES[rating.risk_rank],
            segment_rank=rating.segment_rank, score_rank=rating.score_rank, before_rules=rating.before_rules,
            risk_rank=rating.risk_rank, rules_matched=rating.matched, risk_score=scores,
            distance_to_centroid=distances, embedding=embedding, indicators=indicators, contributions=contributions,
            features=features if keep_features else None,
        )  # fmt: skip

    def rule_ids(self, scored: ScoredBatch) -> list[list[str]]:
        """Per customer, the ids of the policy rules that apply to it (it matches their condition), file order."""
        if len(scored.rules_matched) <= 16:  # a request's few customers: no array bookkeeping
            names = self.policy.ids
            return [[names[j] for j in np.flatnonzero(row).tolist()] for row in scored.rules_matched]
        offsets, ids = rule_id_lists(scored.rules_matched, self.policy)
        listed = ids.tolist()
        return [listed[start:end] for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]

    def reason_arrays(self, scored: ScoredBatch, top: int = REASONS_PER_CUSTOMER) -> ReasonArrays:
        """The top reasons of every scored customer, gathered and rounded (4 decimals) as arrays."""
        n = len(scored.cluster)
        chosen = reason_order(scored.contributions, scored.risk_rank)[:, :top]
        per_customer = chosen.shape[1]
        columns = chosen.ravel()
        rows = np.repeat(np.arange(n), per_customer)
        return ReasonArrays(
            n=n,
            per_customer=per_customer,
            indicator=columns,
            value=scored.indicators[rows, columns],
            segment_typical=self.tiers.typical[scored.cluster[rows], columns],
            population_typical=self.tiers.population_typical[columns],
            contribution=np.round(scored.contributions[rows, columns], 4),
        )

    def reason_table(self, scored: ScoredBatch, top: int = REASONS_PER_CUSTOMER) -> ReasonTable:
        """:meth:`reason_arrays` as plain lists (None where a value is unknown)."""
        arrays = self.reason_arrays(scored, top)
        return ReasonTable(
            n=arrays.n,
            per_customer=arrays.per_customer,
            indicator=self._names[arrays.indicator].tolist(),
            value=_with_none(arrays.value).tolist(),
            segment_typical=_with_none(arrays.segment_typical).tolist(),
            population_typical=_with_none(arrays.population_typical).tolist(),
            contribution=arrays.contribution.tolist(),
        )
