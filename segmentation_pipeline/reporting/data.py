"""What the report is built from: plain DataFrames, column roles, labels, colours and number formatting.

Everything here is pure pandas (no warehouse, no Dagster), so the figures, the narrative and the outlier list
can be unit-tested on hand-made frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from segmentation_pipeline import schema
from segmentation_pipeline.stages.tiering import TIERS

if TYPE_CHECKING:
    from segmentation_pipeline.reporting.population import Population

# Red / orange / blue rather than a traffic light: readable for red-green colour-blind readers, and still
# "hot = risky" at a glance.
TIER_COLOURS: dict[str, str] = {"High": "#c62828", "Medium": "#ef8f00", "Low": "#1f6fb2"}
NUMERIC_FEATURES: dict[str, str] = {
    "exp_volume": "Expected volume (PKR)",
    "actual_volume": "Actual volume (PKR)",
    "cash_usage": "Cash usage (PKR)",
    "num_alerts": "Monitoring alerts",
    "non_face_to_face_usage": "Non-face-to-face transactions",
    "online_ft_usage": "Online funds transfers",
    "age": "Age (years)",
    "tenure_years": "Tenure (years)",
}
FLAG_FEATURES: dict[str, str] = {
    "is_pep": "PEP",
    "high_income_hw": "High-net-worth housewife",
    "ctr_match": "CTR match",
    "previously_reported": "Previously reported",
}
# Money and counts span orders of magnitude: standardised on log1p so one millionaire does not set the scale.
LOG_FEATURES: frozenset[str] = frozenset((*schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS))
MONEY_FEATURES: frozenset[str] = frozenset(schema.MONEY_COLUMNS)
NO_CHANNEL = "no channel"
MISSING = "(not given)"
ASSIGNMENT_COLUMNS: tuple[str, ...] = ("cluster", "risk_tier", "risk_score", "distance_to_centroid", "pc1", "pc2")


@dataclass
class ReportData:
    """Everything a report shows, as plain frames and values (what :func:`build.load_report_data` reads).

    ``segmented`` holds one row per customer: the cleaned columns plus cluster, risk_tier, risk_score,
    distance_to_centroid, pc1, pc2 — every customer, or a stratified sample of them when ``population`` holds the
    figures of everyone (computed in SQL); without ``population`` the report computes it from ``segmented``.
    ``embedding`` holds customer_id plus every principal component, in ``segmented``'s row order."""

    segmented: pd.DataFrame
    k_search: pd.DataFrame
    chosen_k: int
    metrics: dict[str, float]
    model_version: str
    centroids: pd.DataFrame  # cluster, pc1, pc2 (the model's centres on the first two components)
    profiles: pd.DataFrame = field(default_factory=pd.DataFrame)  # segment_profiles (risk score terms)
    embedding: pd.DataFrame | None = None
    run_id: str | None = None
    rows_in_file: int | None = None
    rows_read: int | None = None
    rows_kept: int | None = None
    quarantined: int | None = None
    source_file: str | None = None
    file_sha256: str | None = None
    reference_date: str | None = None
    ingested_at: str | None = None
    model_trained_at: str | None = None
    k_fixed: bool = False
    k_range: tuple[int, int] | None = None
    migrations: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    population: Population | None = None


def tier_order(tiers: Sequence[object] | pd.Series) -> list[str]:
    """The given tiers as High / Medium / Low in that order, then anything unexpected."""
    present = {str(t) for t in pd.unique(pd.Series(tiers).dropna())}  # hashed in C: a million rows in ms
    return [t for t in TIERS if t in present] + sorted(present - set(TIERS))


def tiers_present(segmented: pd.DataFrame) -> list[str]:
    """High / Medium / Low in that order, only those that have customers (k = 2 has no Medium)."""
    return tier_order(segmented["risk_tier"])


def tier_colour(tier: str) -> str:
    """The tier's colour (grey for anything unexpected)."""
    return TIER_COLOURS.get(tier, "#7f7f7f")


def numeric_features(segmented: pd.DataFrame) -> list[str]:
    """The numeric report features this export has (columns with at least one value)."""
    return [c for c in NUMERIC_FEATURES if c in segmented.columns and segmented[c].notna().any()]


def flag_features(segmented: pd.DataFrame) -> list[str]:
    """The 0/1 flags this export has."""
    return [c for c in FLAG_FEATURES if c in segmented.columns]


def label(column: str) -> str:
    """Human label of a report column."""
    return NUMERIC_FEATURES.get(column) or FLAG_FEATURES.get(column) or column.replace("_", " ").capitalize()


def short_label(column: str) -> str:
    """Label without its unit, lower case, for running text ("actual volume")."""
    text = label(column).split(" (")[0]
    return text if text.isupper() else text[0].lower() + text[1:]


def channel_combination(value: object) -> str:
    """A customer's set of subscribed channels as one level ("ATM + MobileApp"), so that every customer
    counts exactly once in the channel treemap."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_CHANNEL
    if isinstance(value, str):
        channels: Sequence[str] = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
    else:
        channels = [str(v) for v in value if v is not None and str(v).strip()]
    return " + ".join(sorted(set(channels))) if channels else NO_CHANNEL


def categorical(series: pd.Series) -> pd.Series:
    """A categorical column with gaps named, as plain strings."""
    return series.astype("object").where(series.notna(), MISSING).astype(str).str.strip().replace("", MISSING)


def flag_values(series: pd.Series) -> pd.Series:
    """A 0/1 flag as float; a missing flag means "not flagged" (as in the features and the tiering)."""
    return pd.to_numeric(series, errors="coerce").fillna(0.0).astype("float64")


def format_number(value: float | int | None, *, money: bool = False, digits: int = 1) -> str:
    """Compact human number: 2.1M, 59K, 3, 0.35 ("n/a" for a missing value)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    magnitude = abs(float(value))
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if magnitude >= threshold and (money or magnitude >= 1e4):
            scaled = value / threshold
            text = f"{scaled:.{0 if abs(scaled) >= 100 else digits}f}"  # 622K, 33.7M: three significant digits
            return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{2 if magnitude < 10 else digits}f}"


def format_share(share: float) -> str:
    """A share as a percentage; small non-zero shares keep a decimal so "0%" never hides a flagged customer."""
    if not math.isfinite(share):
        return "n/a"
    percent = share * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%"
    return f"{percent:.1f}%"
