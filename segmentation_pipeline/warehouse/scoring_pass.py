"""The scoring step's tables, built a chunk of customers at a time: the compiled scorer run over the run's cleaned
customers as they stream out of DuckDB, and each chunk's rows of customer_features, pca_embedding,
cluster_assignments, rating_reasons (and tier_migrations against the published assignments) as Arrow tables for
:meth:`Warehouse.write_parts`. Knows nothing of Dagster: the ``score_customers`` asset calls :func:`scored_parts`."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import pandas as pd
import pyarrow as pa

from segmentation_pipeline import schema
from segmentation_pipeline.stages.compiled import ScoredBatch
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.model import SegmentationModel
from segmentation_pipeline.stages.policy import Rating, governance, rule_id_lists
from segmentation_pipeline.stages.stability import empty_migrations, tier_migrations
from segmentation_pipeline.stages.tiering import INDICATORS, TIERS
from segmentation_pipeline.warehouse.store import TablePart, Warehouse

_TIER_NAMES = pa.array(TIERS, type=pa.string())
_INDICATOR_NAMES = pa.array(INDICATORS, type=pa.string())


def _floats(values: np.ndarray) -> pa.Array:
    """Floats as Arrow with NaN as null (unknown), as DuckDB stores a DataFrame's NaN."""
    return pa.array(values, type=pa.float64(), from_pandas=True)


def _rule_id_column(model: SegmentationModel, scored: ScoredBatch) -> pa.ListArray:
    """The policy rules that apply to each customer, as a list column (DuckDB ``VARCHAR[]``), built without a loop."""
    offsets, ids = rule_id_lists(scored.rules_matched, model.policy)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(ids, type=pa.string()))


def scored_tables(model: SegmentationModel, scored: ScoredBatch, run_id: str) -> dict[str, pa.Table]:
    """One chunk of scored customers as its rows of customer_features, pca_embedding, cluster_assignments and
    rating_reasons (every customer's reasons, long format, rank 1 first), Arrow columns without a Python object
    per value."""
    n = len(scored.cluster)
    ids = pa.array(scored.customer_id, type=pa.string())
    features = np.asfortranarray(scored.features)  # column by column
    embedding = np.asfortranarray(scored.embedding)
    pcs = {f"pc{i + 1}": _floats(embedding[:, i]) for i in range(embedding.shape[1])}
    reasons = model.scorer.reason_arrays(scored)
    per_customer = reasons.per_customer
    return {
        "customer_features": pa.table({"customer_id": ids, **{
            name: _floats(features[:, j]) for j, name in enumerate(model.features.feature_names_)}}),
        "pca_embedding": pa.table({"customer_id": ids, **pcs}),
        "cluster_assignments": pa.table({
            "customer_id": ids, "cluster": pa.array(scored.cluster, type=pa.int32()),
            "risk_tier": _TIER_NAMES.take(scored.risk_rank), "segment_tier": _TIER_NAMES.take(scored.segment_rank),
            "tier_before_rules": _TIER_NAMES.take(scored.before_rules),
            "rating_basis": pa.array(scored.rating.basis, type=pa.string()),
            "rule_ids": _rule_id_column(model, scored), "risk_score": _floats(scored.risk_score),
            "distance_to_centroid": _floats(scored.distance_to_centroid), "pc1": pcs["pc1"], "pc2": pcs["pc2"],
            "model_version": pa.repeat(model.version, n), "policy_version": pa.repeat(model.policy.version, n),
            "run_id": pa.repeat(run_id, n),
        }),
        "rating_reasons": pa.table({
            "customer_id": ids.take(np.repeat(np.arange(n), per_customer)),
            "rank": pa.array(np.tile(np.arange(1, per_customer + 1, dtype=np.int32), n)),
            "indicator": _INDICATOR_NAMES.take(reasons.indicator), "value": _floats(reasons.value),
            "segment_typical": _floats(reasons.segment_typical),
            "population_typical": _floats(reasons.population_typical), "contribution": _floats(reasons.contribution),
        }),
    }  # fmt: skip


class SortedRows:
    """Rows sorted by customer_id, arriving as record batches, handed out in order: :meth:`upto` gives those not
    handed out yet whose id is at most a given id (one batch held at a time)."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._batches = iter(batches)
        self._held: pa.RecordBatch | None = None

    def upto(self, last: str) -> pd.DataFrame | None:
        parts = []
        while True:
            if self._held is None:
                self._held = next(self._batches, None)
                if self._held is None:
                    break
            end = bisect.bisect_right(self._held.column(schema.ID_COLUMN), last, key=lambda cell: cell.as_py())
            parts.append(self._held.slice(0, end))
            if end < self._held.num_rows:
                self._held = self._held.slice(end)
                break
            self._held = None
        return pa.Table.from_batches(parts).to_pandas() if parts else None


@dataclass
class ScoringPass:
    """What the scoring pass keeps of all customers: the first chunk's tables (the UI's preview and schema) and a
    few small arrays per customer for the run's governance figures; the tier migrations counted."""

    first: dict[str, pa.Table] = field(default_factory=dict)
    ratings: list[Rating] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    figures: pd.DataFrame | None = None
    migrations: int = 0
    moves: Counter[str] = field(default_factory=Counter)

    def governance(self, model: SegmentationModel, run_id: str) -> pd.DataFrame:
        rating = Rating(**{name: np.concatenate([getattr(r, name) for r in self.ratings])
                           for name in Rating.__dataclass_fields__})  # fmt: skip
        rows = pd.DataFrame(governance(rating, np.concatenate(self.scores), model.policy))
        self.figures = rows.assign(run_id=run_id, model_version=model.version, policy_version=model.policy.version)
        return self.figures

    def tier_counts(self) -> dict[str, int]:
        counts = np.bincount(np.concatenate([r.risk_rank for r in self.ratings]), minlength=len(TIERS))
        return {TIERS[r]: int(counts[r]) for r in np.argsort(-counts, kind="stable") if counts[r]}


def scored_parts(store: Warehouse, model: SegmentationModel, run_id: str, *, chunk_size: int, previous: bool,
                  scoring: ScoringPass) -> Iterator[dict[str, TablePart]]:  # fmt: skip
    """The scoring step's tables, a chunk of customers (in customer_id order) at a time, for ``write_parts``;
    ``previous``: the published assignments exist, each chunk's tier migrations against them are listed."""
    chunks = store.batches(f"SELECT * FROM cleaned_customers ORDER BY {schema.ID_COLUMN}", rows=chunk_size)
    first = next(chunks, None)
    chunks = chain([first], chunks) if first is not None else iter([store.arrow(
        "SELECT * FROM cleaned_customers LIMIT 0")])  # fmt: skip
    published = SortedRows(store.batches(
        f"SELECT CAST({schema.ID_COLUMN} AS VARCHAR) AS {schema.ID_COLUMN}, cluster, risk_tier, model_version "
        f"FROM main.cluster_assignments ORDER BY 1", rows=chunk_size)) if previous else None  # fmt: skip
    for chunk in chunks:
        scored = model.scorer.score(CustomerBatch.from_arrow(chunk), chunk_size=chunk_size, keep_features=True)
        tables: dict[str, TablePart] = dict(scored_tables(model, scored, run_id))
        if not scoring.first:
            scoring.first = dict(tables)
            tables["segment_profiles"] = model.profiles()
        scoring.ratings.append(scored.rating)
        scoring.scores.append(scored.risk_score)
        before = published.upto(str(scored.customer_id[-1])) if published is not None and len(scored.cluster) else None
        if before is not None:
            current = pd.DataFrame({"customer_id": scored.customer_id, "cluster": scored.cluster,
                                    "risk_tier": scored.risk_tier, "model_version": model.version})  # fmt: skip
            moved = tier_migrations(before, current, run_id=run_id)
            if len(moved):
                tables["tier_migrations"] = moved
                scoring.migrations += len(moved)
                scoring.moves.update(moved["old_tier"] + " -> " + moved["new_tier"])
        yield tables
    last: dict[str, TablePart] = {"rating_governance": scoring.governance(model, run_id)}
    if not scoring.migrations:
        last["tier_migrations"] = empty_migrations()  # the table exists from the first run on
    yield last
