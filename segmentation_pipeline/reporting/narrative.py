"""A short generated narrative per tier: every number in it is computed from the data, never written by hand.

"High — 306 customers (10.2%): 31% PEP, median expected volume 2.1M, ..." The facts behind each sentence are
kept next to the text (``TierNarrative.facts``) so tests, and auditors, can check one against the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from segmentation_pipeline.reporting.data import (
    categorical,
    flag_values,
    format_number,
    format_share,
    short_label,
    standardise,
    tiers_present,
)
from segmentation_pipeline.reporting.figures import profile_features

_FLAG_WORDS = {
    "is_pep": "PEP",
    "high_income_hw": "high-net-worth housewives",
    "ctr_match": "CTR match",
    "previously_reported": "previously reported",
}


@dataclass
class TierNarrative:
    """One tier's summary: the computed facts and the sentence built from them."""

    tier: str
    customers: int
    share: float
    facts: dict[str, float] = field(default_factory=dict)
    distinctive: list[tuple[str, float]] = field(default_factory=list)  # (feature, standardised mean) by |z|
    top_levels: dict[str, tuple[str, float]] = field(default_factory=dict)  # column -> (level, share)
    text: str = ""


def _median(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.median()) if len(numbers) else math.nan


def tier_facts(group: pd.DataFrame) -> dict[str, float]:
    """The computed facts of one group of customers (keys absent when the export lacks the column)."""
    facts: dict[str, float] = {}
    for flag in _FLAG_WORDS:
        if flag in group.columns:
            facts[f"{flag}_share"] = float((flag_values(group[flag]) >= 0.5).mean()) if len(group) else math.nan
    for column in ("exp_volume", "actual_volume", "cash_usage", "non_face_to_face_usage", "online_ft_usage"):
        if column in group.columns:
            facts[f"median_{column}"] = _median(group[column])
    if {"exp_volume", "actual_volume"} <= set(group.columns):
        expected = pd.to_numeric(group["exp_volume"], errors="coerce")
        actual = pd.to_numeric(group["actual_volume"], errors="coerce")
        facts["median_actual_to_expected"] = _median(actual / expected.where(expected > 0))
    if {"cash_usage", "actual_volume"} <= set(group.columns):
        cash = pd.to_numeric(group["cash_usage"], errors="coerce")
        actual = pd.to_numeric(group["actual_volume"], errors="coerce")
        facts["median_cash_share"] = _median((cash / actual.where(actual > 0)).clip(upper=1.0))
    if "num_alerts" in group.columns:
        alerts = pd.to_numeric(group["num_alerts"], errors="coerce")
        facts["alerted_share"] = float((alerts.fillna(0) >= 1).mean()) if len(group) else math.nan
        facts["mean_alerts"] = float(alerts.mean()) if alerts.notna().any() else math.nan
    return facts


def _top_level(group: pd.DataFrame, column: str) -> tuple[str, float] | None:
    if column not in group.columns or not len(group):
        return None
    shares = categorical(group[column]).value_counts(normalize=True)
    return str(shares.index[0]), float(shares.iloc[0])


def _sentence(narrative: TierNarrative) -> str:
    facts = narrative.facts
    clauses = []
    if "is_pep_share" in facts:
        clauses.append(f"{format_share(facts['is_pep_share'])} PEP")
    if "median_exp_volume" in facts:
        clauses.append(f"median expected volume {format_number(facts['median_exp_volume'], money=True)}")
    if "median_actual_volume" in facts:
        actual = f"median actual volume {format_number(facts['median_actual_volume'], money=True)}"
        ratio = facts.get("median_actual_to_expected", math.nan)
        if np.isfinite(ratio):
            actual += f" ({ratio:.1f}× expected)"
        clauses.append(actual)
    if np.isfinite(facts.get("median_cash_share", math.nan)):
        clauses.append(f"median cash share {format_share(facts['median_cash_share'])}")
    if "alerted_share" in facts:
        clauses.append(
            f"{format_share(facts['alerted_share'])} with at least one alert "
            f"(mean {facts.get('mean_alerts', math.nan):.1f})"
        )
    for flag in ("ctr_match", "previously_reported", "high_income_hw"):
        if f"{flag}_share" in facts:
            clauses.append(f"{format_share(facts[f'{flag}_share'])} {_FLAG_WORDS[flag]}")
    text = f"{narrative.tier} — {narrative.customers:,} customers ({narrative.share:.1%}): "
    text += ", ".join(clauses) + "." if clauses else "no risk indicators in this export."
    levels = [f"{short_label(column)} {level} ({format_share(share)})"
              for column, (level, share) in narrative.top_levels.items()]  # fmt: skip
    if levels:
        text += " Most common: " + "; ".join(levels) + "."
    if narrative.distinctive:
        parts = [f"{short_label(feature)} ({z:+.1f} sd)" for feature, z in narrative.distinctive]
        text += " Stands out from the average customer on " + ", ".join(parts) + "."
    return text


def tier_narratives(segmented: pd.DataFrame, *, distinctive: int = 3) -> list[TierNarrative]:
    """One narrative per tier present, High first."""
    features = profile_features(segmented)
    z = pd.DataFrame({f: standardise(segmented[f], f) for f in features}, index=segmented.index)
    tiers = segmented["risk_tier"].astype(str)
    total = max(len(segmented), 1)
    result = []
    for tier in tiers_present(segmented):
        mask = tiers == tier
        group = segmented[mask]
        narrative = TierNarrative(tier=tier, customers=int(mask.sum()), share=float(mask.sum()) / total)
        narrative.facts = tier_facts(group)
        means = z[mask].mean().dropna()
        ranked = means.reindex(means.abs().sort_values(ascending=False).index)
        narrative.distinctive = [(str(f), float(v)) for f, v in ranked.head(distinctive).items() if abs(v) >= 0.2]
        for column in ("occupation", "account_type", "province"):
            top = _top_level(group, column)
            if top is not None:
                narrative.top_levels[column] = top
        narrative.text = _sentence(narrative)
        result.append(narrative)
    return result
