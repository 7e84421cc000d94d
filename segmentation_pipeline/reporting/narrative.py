"""A short generated narrative per tier: every number in it is computed from the data, never written by hand.

"High — 306 customers (10.2%): 31% PEP, median expected volume 2.1M, ..." The facts behind each sentence are
kept next to the text (``TierNarrative.facts``) so tests, and auditors, can check one against the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from segmentation_pipeline.reporting.data import format_number, format_share, short_label
from segmentation_pipeline.reporting.population import Population, as_population

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


def tier_narratives(segmented: pd.DataFrame | Population, *, distinctive: int = 3) -> list[TierNarrative]:
    """One narrative per tier present, High first (facts over every customer: see :mod:`population`)."""
    population = as_population(segmented)
    total = max(population.customers, 1)
    result = []
    for tier in population.tiers:
        customers = int(population.tier_counts[tier])
        narrative = TierNarrative(tier=tier, customers=customers, share=customers / total)
        narrative.facts = dict(population.tier_facts.get(tier, {}))
        means = population.standardised_tier_means
        means = means.loc[tier].dropna() if tier in means.index else pd.Series(dtype="float64")
        ranked = means.reindex(means.abs().sort_values(ascending=False).index)
        narrative.distinctive = [(str(f), float(v)) for f, v in ranked.head(distinctive).items() if abs(v) >= 0.2]
        for column in ("occupation", "account_type", "province"):
            if (column,) not in population.levels:
                continue
            counts = population.level_counts((column,))
            counts = counts[counts["risk_tier"] == tier].sort_values("customers", ascending=False, kind="stable")
            if len(counts) and customers:
                top = counts.iloc[0]
                narrative.top_levels[column] = (str(top[column]), int(top["customers"]) / customers)
        narrative.text = _sentence(narrative)
        result.append(narrative)
    return result
