"""Typed customers -> the numeric feature matrix K-means sees.

One scikit-learn transformer holds every fitted parameter as plain arrays (scaler, KNN imputer donors, one-hot
lookups, channel list), and its ``transform`` is the only code that turns customers into features: fitting, the
batch run and the scoring API all call it.

- numeric columns: money and counts ``log1p``-transformed (they span five orders of magnitude), then all
  standardised, then gaps filled by K-nearest-neighbour imputation on the standardised values;
- flags (PEP, housewife, CTR match, previously reported): kept as 0/1, a missing flag is "not flagged". They are
  not z-scored: a 1%-rare flag would become a value of ~10 and swamp every distance;
- categoricals: one-hot, levels rarer than ``rare_level_share`` grouped as one infrequent level (scikit-learn's
  ``OneHotEncoder`` decides the levels at fit time); unknown levels at scoring time fall into that group;
- subscribed channels: multi-hot over the channels seen in training.

The *feature contract* (:meth:`CustomerFeatureTransformer.contract`) names every input and derived column in order;
a stored model records it, and loading a model whose contract differs from the running code's is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from segmentation_pipeline import schema
from segmentation_pipeline.stages.customers import CustomerBatch, as_batch
from segmentation_pipeline.stages.imputation import PatternKNNImputer

# Bump when a rule changes what a feature means without changing its name (models fitted before are refused).
CONTRACT_VERSION = 1
MISSING_LEVEL = "(missing)"
LOG_COLUMNS: frozenset[str] = frozenset((*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS))


def _actual_to_expected(batch: CustomerBatch) -> np.ndarray:
    """Moving more than declared: log of actual over expected volume (0 = as declared)."""
    actual = np.log1p(np.maximum(batch.number("actual_volume"), 0.0))
    return actual - np.log1p(np.maximum(batch.number("exp_volume"), 0.0))


def _cash_share(batch: CustomerBatch) -> np.ndarray:
    """How much of the volume is cash: cash usage over actual volume, 0..1."""
    cash = np.maximum(batch.number("cash_usage"), 0.0)
    return np.minimum(cash / (np.maximum(batch.number("actual_volume"), 0.0) + 1.0), 1.0)


# Behaviour derived from two columns: moving more than declared, and how much of it is cash, are the classic AML
# red flags, and neither is visible in any single column. NaN where an input is unknown.
DERIVED_FEATURES: dict[str, Callable[[CustomerBatch], np.ndarray]] = {
    "actual_to_expected": _actual_to_expected,
    "cash_share": _cash_share,
}
YEARS_COLUMNS: tuple[str, ...] = ("age", "tenure_years")


class CustomerFeatureTransformer(TransformerMixin, BaseEstimator):
    """Fit on typed customers (a :class:`CustomerBatch` or a cleaned DataFrame); transform any number of them
    (one or a million) into the feature matrix, a float64 array whose columns are ``feature_names_``."""

    derived_features: ClassVar[dict[str, Callable[[CustomerBatch], np.ndarray]]] = DERIVED_FEATURES

    def __init__(self, knn_neighbors: int = 5, rare_level_share: float = 0.01, random_state: int = 0,
                 knn_max_donors: int | None = 25_000) -> None:  # fmt: skip
        self.knn_neighbors = knn_neighbors
        self.rare_level_share = rare_level_share
        self.random_state = random_state
        self.knn_max_donors = knn_max_donors

    # -- the contract --
    @classmethod
    def numeric_candidates(cls) -> tuple[str, ...]:
        return (*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS, *cls.derived_features, *YEARS_COLUMNS)

    @classmethod
    def contract(cls) -> dict[str, object]:
        """What this code computes, in order: a stored model must have been fitted under the same contract."""
        return {
            "version": CONTRACT_VERSION,
            "numeric_candidates": list(cls.numeric_candidates()),
            "derived": list(cls.derived_features),
            "log_columns": sorted(LOG_COLUMNS),
            "flags": list(schema.FLAG_COLUMNS),
            "categoricals": list(schema.CATEGORICAL_COLUMNS),
            "channels": schema.CHANNEL_COLUMN,
        }

    def derived(self, batch: CustomerBatch) -> dict[str, np.ndarray]:
        """Every derived column of a batch (computed once per batch; the tiering reads them too)."""
        return {name: compute(batch) for name, compute in self.derived_features.items()}

    # -- fitting --
    def fit(self, X: Any, y: object = None) -> CustomerFeatureTransformer:
        batch = as_batch(X)
        derived = self.derived(batch)
        values = {**batch.numbers, **derived}
        self.numeric_columns_ = [
            c for c in self.numeric_candidates() if c in values and not np.isnan(values[c]).all()
        ]
        self.flag_columns_ = [c for c in schema.FLAG_COLUMNS if c in batch.numbers]
        self.categorical_columns_ = [c for c in schema.CATEGORICAL_COLUMNS if c in batch.categories]
        numeric = self._numeric_matrix(batch, derived)
        scaler = StandardScaler().fit(numeric)
        self.scale_mean_ = np.asarray(scaler.mean_, dtype=np.float64)
        self.scale_ = np.asarray(scaler.scale_, dtype=np.float64)
        self.imputer_ = PatternKNNImputer(n_neighbors=self.knn_neighbors, max_donors=self.knn_max_donors,
                                          random_state=self.random_state)  # fmt: skip
        self.imputer_.fit((numeric - self.scale_mean_) / self.scale_)
        self.category_lookups_: list[dict[str, int]] = []
        self.category_unknown_: list[int] = []
        category_names: list[str] = []
        if self.categorical_columns_:
            # The encoder learns from each customer's level as a code into the column's sorted levels (NumPy's
            # unique over integers, not Python's over a quarter of a million strings), then is told the levels'
            # names: codes and names sort alike, so its categories, infrequent groups and output names are the
            # ones fitting on the names gives.
            coded = {c: self._level_codes(batch, c) for c in self.categorical_columns_}
            encoder = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=self.rare_level_share if self.rare_level_share > 0 else None,
                sparse_output=False,
            ).fit(pd.DataFrame({c: codes for c, (codes, _) in coded.items()}))
            encoder.categories_ = [names[codes] for codes, (_, names) in zip(encoder.categories_, coded.values(),
                                                                             strict=True)]  # fmt: skip
            self._compile_encoder(encoder)
            category_names = [f"cat__{n}" for n in encoder.get_feature_names_out(self.categorical_columns_)]
        channel_lists = batch.channels or []
        self.channels_ = sorted(set(chain.from_iterable(channel_lists)))
        self.feature_names_ = [
            *(f"num__{c}" for c in self.numeric_columns_),
            *(f"flag__{c}" for c in self.flag_columns_),
            *category_names,
            *(f"channel__{c}" for c in self.channels_),
        ]
        self.n_features_out_ = len(self.feature_names_)
        return self

    def _compile_encoder(self, encoder: OneHotEncoder) -> None:
        """The fitted encoder as plain lookups: level -> output column (global), and where unknown levels go.
        scikit-learn lays out each column's frequent levels in sorted order, then one infrequent column."""
        start = len(self.numeric_columns_) + len(self.flag_columns_)
        infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(encoder.categories_)
        for levels, rare in zip(encoder.categories_, infrequent, strict=True):
            rare_set = set() if rare is None else {str(level) for level in rare}
            frequent = [str(level) for level in levels if str(level) not in rare_set]
            lookup = {level: start + i for i, level in enumerate(frequent)}
            unknown = -1
            if rare_set:
                unknown = start + len(frequent)
                lookup.update(dict.fromkeys(rare_set, unknown))
            self.category_lookups_.append(lookup)
            self.category_unknown_.append(unknown)
            start += len(frequent) + (1 if rare_set else 0)

    # -- transforming: the one path from customers to features --
    def transform(self, X: Any, derived: dict[str, np.ndarray] | None = None) -> np.ndarray:
        if not hasattr(self, "feature_names_"):  # check_is_fitted's full inspection costs more than a request
            check_is_fitted(self, "feature_names_")
        batch = as_batch(X)
        derived = self.derived(batch) if derived is None else derived
        n = batch.n
        matrix = np.zeros((n, self.n_features_out_), order="F")  # column-major: stored a column at a time
        width = len(self.numeric_columns_)
        if width:
            block = self._numeric_matrix(batch, derived)
            block -= self.scale_mean_
            block /= self.scale_
            gaps = np.isnan(block).any(axis=1)  # the imputer returns complete rows unchanged: only gaps need it
            if gaps.any():
                block[gaps] = self.imputer_.transform(block[gaps])
            matrix[:, :width] = block
        for offset, name in enumerate(self.flag_columns_, start=width):
            flags = batch.numbers.get(name)
            if flags is not None:
                matrix[:, offset] = flags
        if self.flag_columns_:
            flags_block = matrix[:, width : width + len(self.flag_columns_)]
            flags_block[np.isnan(flags_block)] = 0.0  # a missing flag is "not flagged"
        if self.categorical_columns_:
            columns = self._category_block(batch, n)
            rows = np.tile(np.arange(n), len(self.categorical_columns_)) if n > 1 else np.zeros(len(columns), np.intp)
            known = columns >= 0
            matrix[rows[known], columns[known]] = 1.0
        if self.channels_ and batch.channels is not None:
            start = self.n_features_out_ - len(self.channels_)
            index = {channel: start + i for i, channel in enumerate(self.channels_)}
            columns_of = {s: [index[c] for c in s if c in index] for s in set(batch.channels)}
            hot = [columns_of[s] for s in batch.channels]
            counts = [len(h) for h in hot]
            if any(counts):
                matrix[np.repeat(np.arange(n), counts), list(chain.from_iterable(hot))] = 1.0
        return matrix

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_")
        return np.asarray(self.feature_names_, dtype=object)

    # -- helpers --
    def _numeric_matrix(self, batch: CustomerBatch, derived: dict[str, np.ndarray]) -> np.ndarray:
        """The numeric columns, money and counts as log1p(max(x, 0)) (one call over all of them)."""
        matrix = np.full((batch.n, len(self.numeric_columns_)), np.nan)
        numbers = batch.numbers
        for position, name in enumerate(self.numeric_columns_):
            values = derived[name] if name in derived else numbers.get(name)
            if values is not None:
                matrix[:, position] = values
        logged = self._logged_positions()
        if logged.size:
            block = matrix[:, logged]
            np.maximum(block, 0.0, out=block)
            matrix[:, logged] = np.log1p(block, out=block)
        return matrix

    def _logged_positions(self) -> np.ndarray:
        """Positions of the money and count columns among ``numeric_columns_`` (derived once, not stored)."""
        cached = self.__dict__.get("_logged")
        if cached is None or len(cached[0]) != len(self.numeric_columns_):
            positions = np.array([i for i, c in enumerate(self.numeric_columns_) if c in LOG_COLUMNS], dtype=np.intp)
            cached = self._logged = (list(self.numeric_columns_), positions)
        return cached[1]

    @staticmethod
    def _level_codes(batch: CustomerBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's level (as text; no value: MISSING_LEVEL) as a code into the column's sorted levels,
        and those levels."""
        values = batch.category(name)
        if values is None:
            return np.zeros(batch.n, dtype=np.intp), np.array([MISSING_LEVEL], dtype=object)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        texts = np.array([*(str(v) for v in uniques), MISSING_LEVEL], dtype=object)  # code -1: the last
        final, levels = pd.factorize(texts, sort=True)  # two values with one text are one level
        return final[codes].astype(np.intp, copy=False), np.asarray(levels, dtype=object)

    def _category_block(self, batch: CustomerBatch, n: int) -> np.ndarray:
        """The output column of every customer's level, category after category (-1: lights nothing)."""
        described = zip(self.categorical_columns_, self.category_lookups_, self.category_unknown_, strict=True)
        if n <= 64:  # a request's few customers: plain lookups, one array at the end
            flat: list[int] = []
            for name, lookup, unknown in described:
                values = batch.categories.get(name)
                missing = lookup.get(MISSING_LEVEL, unknown)
                if values is None:
                    flat.extend([missing] * n)
                else:
                    flat.extend([missing if v is None else lookup.get(v, unknown) for v in values])
            return np.array(flat, dtype=np.intp)
        return np.concatenate([self._category_columns(batch.category(name), lookup, unknown, n)
                               for name, lookup, unknown in described])  # fmt: skip

    @staticmethod
    def _category_columns(values: np.ndarray | None, lookup: dict[str, int], unknown: int, n: int) -> np.ndarray:
        """The output column of each customer's level (-1: an unknown level with no infrequent group)."""
        missing = lookup.get(MISSING_LEVEL, unknown)
        if values is None:
            return np.full(n, missing, dtype=np.intp)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        table = np.array([lookup.get(v, unknown) for v in uniques] + [missing], dtype=np.intp)
        return table[codes]

    # -- storage: plain arrays and JSON, no pickle --
    def to_state(self) -> tuple[dict[str, object], dict[str, np.ndarray]]:
        check_is_fitted(self, "feature_names_")
        meta = {
            "params": self.get_params(),
            "numeric_columns": self.numeric_columns_,
            "flag_columns": self.flag_columns_,
            "categorical_columns": self.categorical_columns_,
            "category_lookups": self.category_lookups_,
            "category_unknown": self.category_unknown_,
            "channels": self.channels_,
            "feature_names": self.feature_names_,
            "imputer": self.imputer_.get_params(),
        }
        arrays = {"scale_mean": self.scale_mean_, "scale": self.scale_, **{
            f"imputer.{name}": value for name, value in self.imputer_.fitted_arrays().items()
        }}  # fmt: skip
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> CustomerFeatureTransformer:
        transformer = cls(**meta["params"])
        transformer.numeric_columns_ = list(meta["numeric_columns"])
        transformer.flag_columns_ = list(meta["flag_columns"])
        transformer.categorical_columns_ = list(meta["categorical_columns"])
        transformer.category_lookups_ = [dict(lookup) for lookup in meta["category_lookups"]]
        transformer.category_unknown_ = [int(u) for u in meta["category_unknown"]]
        transformer.channels_ = list(meta["channels"])
        transformer.feature_names_ = list(meta["feature_names"])
        transformer.n_features_out_ = len(transformer.feature_names_)
        transformer.scale_mean_ = arrays["scale_mean"]
        transformer.scale_ = arrays["scale"]
        imputer_arrays = {k.removeprefix("imputer."): v for k, v in arrays.items() if k.startswith("imputer.")}
        transformer.imputer_ = PatternKNNImputer.from_fitted_arrays(meta["imputer"], imputer_arrays)
        return transformer
