"""Cleaned customers -> the numeric feature matrix K-means sees.

One scikit-learn transformer holds every fitted parameter (log transform, scaler, KNN imputer, one-hot levels,
channel list), so the pipeline and the scoring API turn a customer into features in exactly the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from segmentation_pipeline import schema
from segmentation_pipeline.stages.imputation import PatternKNNImputer

# Behaviour derived from two columns: moving more than declared, and how much of it is cash, are the classic
# AML red flags, and neither is visible in any single column.
DERIVED_COLUMNS: tuple[str, ...] = ("actual_to_expected", "cash_share")
NUMERIC_CANDIDATES: tuple[str, ...] = (
    *schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS, *DERIVED_COLUMNS, "age", "tenure_years",
)  # fmt: skip
LOG_COLUMNS: frozenset[str] = frozenset((*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS))
MISSING_LEVEL = "(missing)"


def derive_behaviour(customers: pd.DataFrame) -> pd.DataFrame:
    """Add ``actual_to_expected`` (log ratio of actual to expected volume) and ``cash_share`` (cash usage as a
    share of actual volume, 0..1) where their inputs exist. NaN where an input is missing."""
    out = customers.copy()
    if {"actual_volume", "exp_volume"} <= set(out.columns):
        actual = out["actual_volume"].astype("float64")
        expected = out["exp_volume"].astype("float64")
        out["actual_to_expected"] = np.log1p(actual.clip(lower=0)) - np.log1p(expected.clip(lower=0))
    if {"cash_usage", "actual_volume"} <= set(out.columns):
        cash = out["cash_usage"].astype("float64").clip(lower=0)
        actual = out["actual_volume"].astype("float64").clip(lower=0)
        out["cash_share"] = (cash / (actual + 1.0)).clip(upper=1.0)
    return out


class CustomerFeatureTransformer(TransformerMixin, BaseEstimator):
    """Fit on cleaned customers; transform any cleaned customers (one or a million) into features.

    - numeric columns: money and counts ``log1p``-transformed (they span five orders of magnitude), then all
      standardised, then gaps filled by K-nearest-neighbour imputation on the standardised values;
    - flags (PEP, housewife, CTR match, previously reported): kept as 0/1, a missing flag is "not flagged".
      They are not z-scored: a 1%-rare flag would become a value of ~10 and swamp every distance;
    - categoricals: one-hot, levels rarer than ``rare_level_share`` grouped as one infrequent level, unknown
      levels at scoring time fall into that group;
    - subscribed channels: multi-hot over the channels seen in training.
    """

    def __init__(self, knn_neighbors: int = 5, rare_level_share: float = 0.01, random_state: int = 0) -> None:
        self.knn_neighbors = knn_neighbors
        self.rare_level_share = rare_level_share
        self.random_state = random_state

    def fit(self, customers: pd.DataFrame, y: object = None) -> CustomerFeatureTransformer:
        data = derive_behaviour(customers)
        self.numeric_columns_ = [c for c in NUMERIC_CANDIDATES if c in data.columns and data[c].notna().any()]
        self.flag_columns_ = [c for c in schema.FLAG_COLUMNS if c in data.columns]
        self.categorical_columns_ = [c for c in schema.CATEGORICAL_COLUMNS if c in data.columns]
        numeric = self._numeric_matrix(data)
        self.scaler_ = StandardScaler().fit(numeric)
        self.imputer_ = PatternKNNImputer(n_neighbors=self.knn_neighbors, random_state=self.random_state)
        self.imputer_.fit(self.scaler_.transform(numeric))
        self.encoder_: OneHotEncoder | None = None
        if self.categorical_columns_:
            self.encoder_ = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=self.rare_level_share if self.rare_level_share > 0 else None,
                sparse_output=False,
                dtype=np.float64,
            ).fit(self._categorical_frame(data))
        channel_lists = data[schema.CHANNEL_COLUMN] if schema.CHANNEL_COLUMN in data.columns else []
        self.channels_ = sorted({channel for channels in channel_lists for channel in _as_channels(channels)})
        self.feature_names_ = self._feature_names()
        return self

    def transform(self, customers: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_")
        data = derive_behaviour(customers)
        blocks = [self.imputer_.transform(self.scaler_.transform(self._numeric_matrix(data)))]
        if self.flag_columns_:
            flags = np.column_stack([_column(data, c) for c in self.flag_columns_])
            blocks.append(np.nan_to_num(flags, nan=0.0))
        if self.encoder_ is not None:
            blocks.append(self.encoder_.transform(self._categorical_frame(data)))
        if self.channels_:
            channel_lists = data[schema.CHANNEL_COLUMN] if schema.CHANNEL_COLUMN in data.columns else None
            multi_hot = np.zeros((len(data), len(self.channels_)))
            if channel_lists is not None:
                position = {channel: i for i, channel in enumerate(self.channels_)}
                for row, channels in enumerate(channel_lists):
                    for channel in _as_channels(channels):
                        if channel in position:
                            multi_hot[row, position[channel]] = 1.0
            blocks.append(multi_hot)
        matrix = np.hstack(blocks)
        return pd.DataFrame(matrix, columns=self.feature_names_, index=customers.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_")
        return np.asarray(self.feature_names_, dtype=object)

    # -- helpers --
    def _numeric_matrix(self, data: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.numeric_columns_:
            values = _column(data, name)
            columns.append(np.log1p(np.clip(values, 0, None)) if name in LOG_COLUMNS else values)
        return np.column_stack(columns) if columns else np.empty((len(data), 0))

    def _categorical_frame(self, data: pd.DataFrame) -> pd.DataFrame:
        frame = {}
        for name in self.categorical_columns_:
            values = data[name] if name in data.columns else pd.Series([None] * len(data), index=data.index)
            frame[name] = values.astype(object).where(values.notna(), MISSING_LEVEL).astype(str).to_numpy()
        return pd.DataFrame(frame)

    def _feature_names(self) -> list[str]:
        names = [f"num__{c}" for c in self.numeric_columns_]
        names += [f"flag__{c}" for c in self.flag_columns_]
        if self.encoder_ is not None:
            names += [f"cat__{n}" for n in self.encoder_.get_feature_names_out(self.categorical_columns_)]
        names += [f"channel__{c}" for c in self.channels_]
        return names


def _column(data: pd.DataFrame, name: str) -> np.ndarray:
    if name not in data.columns:
        return np.full(len(data), np.nan)
    return pd.to_numeric(data[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _as_channels(value: object) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value)
