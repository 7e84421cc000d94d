"""The data-quality gate before a model is fitted: clustering mostly imputed data produces confident nonsense.

Measured on the customers a model would be fitted on (``fit_model`` calls :func:`check_before_fit` first and
:func:`check_clusters` once K-means has run); a failed measure refuses the fit with one line naming the measure,
its value and the threshold (``PipelineSettings``: ``max_imputed_share``, ``min_complete_share``,
``min_cluster_size``), so such a model is never stored, let alone promoted.

- *imputed behaviour*: customers for whom more than half of the behaviour columns (volumes, cash, channel usage,
  alerts) are blank, i.e. whose behaviour would be mostly made up by the imputer;
- *complete rows*: customers with every behaviour column present;
- *cluster size*: customers in the smallest cluster (a cluster of a handful is an outlier, not a segment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation_pipeline import schema
from segmentation_pipeline.stages.customers import CustomerBatch

BEHAVIOUR_COLUMNS: tuple[str, ...] = (*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS)


class DataQualityError(ValueError):
    """The data fails the quality gate: one line naming the measure and its threshold."""


@dataclass(frozen=True)
class DataQuality:
    """The gate's measures on one set of customers."""

    customers: int
    behaviour_columns: tuple[str, ...]  # the behaviour columns the data has
    imputed_share: float  # customers with more than half of those columns blank
    complete_share: float  # customers with all of them present

    def metrics(self) -> dict[str, float]:
        return {"imputed_behaviour_share": self.imputed_share, "complete_rows_share": self.complete_share}


def measure(batch: CustomerBatch) -> DataQuality:
    columns = tuple(name for name in BEHAVIOUR_COLUMNS if name in batch.numbers)
    if not columns or batch.n == 0:
        return DataQuality(batch.n, columns, 1.0 if batch.n else 0.0, 0.0)
    blank = np.column_stack([np.isnan(batch.numbers[name]) for name in columns]).sum(axis=1)
    return DataQuality(
        customers=batch.n, behaviour_columns=columns, imputed_share=float((blank * 2 > len(columns)).mean()),
        complete_share=float((blank == 0).mean()),
    )  # fmt: skip


def check_before_fit(batch: CustomerBatch, *, max_imputed_share: float, min_complete_share: float) -> DataQuality:
    """The measures, or :class:`DataQualityError` for the first that fails."""
    quality = measure(batch)
    if not quality.behaviour_columns:
        raise DataQualityError(
            f"data quality gate: none of the behaviour columns ({', '.join(BEHAVIOUR_COLUMNS)}) has a value: "
            "there is no behaviour to segment"
        )
    if quality.imputed_share > max_imputed_share:
        raise DataQualityError(
            f"data quality gate: {quality.imputed_share:.1%} of customers have more than half of their behaviour "
            f"columns ({', '.join(quality.behaviour_columns)}) blank; at most {max_imputed_share:.0%} may "
            "(max_imputed_share): their segments would be made up by the imputer"
        )
    if quality.complete_share < min_complete_share:
        raise DataQualityError(
            f"data quality gate: only {quality.complete_share:.1%} of customers have every behaviour column "
            f"({', '.join(quality.behaviour_columns)}) filled in; at least {min_complete_share:.0%} must "
            "(min_complete_share)"
        )
    return quality


def check_clusters(labels: np.ndarray, k: int, *, min_cluster_size: int) -> int:
    """The smallest cluster's size, or :class:`DataQualityError` when it is below ``min_cluster_size``."""
    sizes = np.bincount(np.asarray(labels, dtype=np.intp), minlength=k)
    smallest = int(sizes.min()) if sizes.size else 0
    if smallest < min_cluster_size:
        cluster = int(np.argmin(sizes))
        raise DataQualityError(
            f"data quality gate: cluster {cluster} holds {smallest} customers; every cluster needs at least "
            f"{min_cluster_size} (min_cluster_size): the data has outliers or too few customers for k = {k}"
        )
    return smallest
