"""The customer export's columns: canonical names, header aliases and column roles.

Every export generation spells its headers differently (see ``shared/column-glossary.md``). All code downstream
of ingestion speaks the canonical snake_case names defined here, and this module is the one documented place
where a header is mapped to them.
"""

from __future__ import annotations

import re
from typing import Final

# Canonical name -> the headers that mean it (2023 header first). Matching ignores case, spaces and
# punctuation, so "Is PEP", "is_pep" and "isPep" all normalise to the same key.
COLUMN_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "customer_id": ("CustomerID", "Customer ID", "Customer No", "Customer Number", "CIF"),
    "segment_id": ("SegmentID",),
    "focus_type_id": ("FocusTypeID",),
    "occupation": ("Occupation", "Source of Income", "SourceOfIncome"),
    "date_of_birth": ("DateofBirth", "Date of Birth", "DOB", "Birth Date"),
    "gender": ("Gender", "Sex"),
    "is_pep": ("isPep", "Is PEP", "PEP", "Politically Exposed Person"),
    "high_income_hw": ("HighIncomeHW", "High Net Worth House-wife", "High Net Worth Housewife", "HNW Housewife"),
    "exp_volume": ("ExpVolume", "Expected Transaction Volume", "Expected Volume"),
    "account_type": ("AccountType", "Subscribed Account Type", "Account Type"),
    "financing_type": ("FinancingType", "Financing Type"),
    "subscribed_channels": ("SubscribedChannels", "Subscribed Channels", "Channels", "Channel"),
    "nationality": ("Nationality",),
    "place_of_birth": ("PlaceofBirth", "Place of Birth"),
    "residence": ("Residence", "Country of Residence"),
    "province": ("Province",),
    "city": ("City",),
    "customer_since": ("CustomerSince", "Customer Since", "Relationship Start Date"),
    "industry": ("Industry",),
    "incorporated_since": ("IncorporatedSince", "Incorporated Since"),
    "actual_volume": ("ActualVolume", "Actual Transaction Volume", "Actual Volume"),
    "avg_balance": ("AvgBalance", "Average Balance"),
    "num_alerts": ("NumAlerts", "Number of Alerts", "Alerts"),
    "non_face_to_face_usage": ("NonFacetoFaceUsage", "Non Face to Face Usage", "NonF2FUsage"),
    "fund_remit_usage": ("fundRemitUsage", "Fund Remittance Usage", "Fund Remit Usage"),
    "online_ft_usage": ("onlineFTusage", "Online FT Usage", "Online Funds Transfer Usage"),
    "cash_usage": ("CashUsage", "Cash Usage"),
    "ctr_match": ("CTRMatch", "CTR Match"),
    "previously_reported": ("PreviouslyReported", "Previously Reported"),
    "model_id": ("ModelID",),
    "assessment_type": ("AssessmentType",),
    "prev_assessment_id": ("PrevAssessmentID",),
    "account_category": ("AccountCategory",),
}

# The 2023 export's header, in export order (DateofBirth appears twice in real files).
HEADER_2023: Final[tuple[str, ...]] = (
    "CustomerID", "SegmentID", "FocusTypeID", "Occupation", "DateofBirth", "Gender", "isPep", "HighIncomeHW",
    "ExpVolume", "AccountType", "FinancingType", "SubscribedChannels", "Nationality", "PlaceofBirth", "Residence",
    "Province", "City", "CustomerSince", "Industry", "IncorporatedSince", "ActualVolume", "AvgBalance", "NumAlerts",
    "NonFacetoFaceUsage", "fundRemitUsage", "onlineFTusage", "CashUsage", "CTRMatch", "PreviouslyReported",
    "ModelID", "AssessmentType", "PrevAssessmentID", "AccountCategory",
)  # fmt: skip

# The 2022 export's spelled-out headers for the columns it has.
HEADER_2022: Final[tuple[str, ...]] = (
    "CustomerID", "Source of Income", "DateofBirth", "Gender", "Is PEP", "High Net Worth House-wife",
    "Expected Transaction Volume", "Subscribed Account Type", "Subscribed Channels", "Province", "City",
)  # fmt: skip

# Column roles, by canonical name.
ID_COLUMN: Final = "customer_id"
CHANNEL_COLUMN: Final = "subscribed_channels"
DATE_COLUMNS: Final[tuple[str, ...]] = ("date_of_birth", "customer_since", "incorporated_since")
FLAG_COLUMNS: Final[tuple[str, ...]] = ("is_pep", "high_income_hw", "ctr_match", "previously_reported")
# Money columns: heavily right-skewed, log1p-transformed before scaling.
MONEY_COLUMNS: Final[tuple[str, ...]] = ("exp_volume", "actual_volume", "avg_balance", "cash_usage")
COUNT_COLUMNS: Final[tuple[str, ...]] = (
    "num_alerts", "non_face_to_face_usage", "fund_remit_usage", "online_ft_usage",
)  # fmt: skip
# Values that must never be negative (a negative volume is a broken export, not a customer).
NON_NEGATIVE_COLUMNS: Final[tuple[str, ...]] = MONEY_COLUMNS + COUNT_COLUMNS
CATEGORICAL_COLUMNS: Final[tuple[str, ...]] = (
    "occupation", "gender", "account_type", "financing_type", "nationality", "residence", "province", "city",
    "industry", "place_of_birth",
)  # fmt: skip
# The bank's previous risk-assessment bookkeeping: identifiers, not customer behaviour, so never features.
BOOKKEEPING_COLUMNS: Final[tuple[str, ...]] = (
    "segment_id", "focus_type_id", "model_id", "assessment_type", "prev_assessment_id", "account_category",
)  # fmt: skip

CHANNELS: Final[tuple[str, ...]] = ("ATM", "MobileApp", "Internet Banking")

# What a column means, wherever the warehouse shows it (the analyst views' column comments, the README's tables):
# the export's canonical columns (see shared/column-glossary.md), the ones cleaning derives, and the rating columns
# every rated table shares.
COLUMN_DESCRIPTIONS: Final[dict[str, str]] = {
    "customer_id": "the bank's customer id, as exported (text; leading zeros count)",
    "segment_id": "the bank's own segment code (bookkeeping, never a feature)",
    "focus_type_id": "internal focus code (bookkeeping, never a feature)",
    "occupation": "occupation / source of income",
    "date_of_birth": "date of birth",
    "gender": "M / F",
    "is_pep": "politically exposed person (1/0)",
    "high_income_hw": "high-net-worth housewife (1/0)",
    "exp_volume": "declared expected monthly transaction volume (PKR)",
    "account_type": "product held",
    "financing_type": "loan product, if any",
    "subscribed_channels": "delivery channels subscribed (ATM, MobileApp, Internet Banking)",
    "nationality": "nationality (ISO country code)",
    "place_of_birth": "place of birth",
    "residence": "country of residence",
    "province": "province",
    "city": "city",
    "customer_since": "relationship start date",
    "industry": "industry (business customers)",
    "incorporated_since": "incorporation date (business customers)",
    "actual_volume": "observed transaction volume in the period (PKR)",
    "avg_balance": "average balance (PKR)",
    "num_alerts": "transaction-monitoring alerts raised",
    "non_face_to_face_usage": "non-face-to-face transactions",
    "fund_remit_usage": "fund remittances",
    "online_ft_usage": "online funds transfers",
    "cash_usage": "cash transaction volume (PKR)",
    "ctr_match": "matched a currency transaction report (1/0)",
    "previously_reported": "previously reported in a suspicious transaction report (1/0)",
    "model_id": "the bank's previous assessment model (bookkeeping)",
    "assessment_type": "the bank's previous assessment type (bookkeeping)",
    "prev_assessment_id": "the bank's previous assessment id (bookkeeping)",
    "account_category": "the bank's account category (bookkeeping)",
    # derived by cleaning
    "age": "age in years on the data's reference date",
    "tenure_years": "years since customer_since on the data's reference date",
    # the rating (cluster_assignments, rating_history and the views over them)
    "risk_tier": "the rating: High, Medium or Low, after the policy rules",
    "segment_tier": "the tier of the customer's segment (cluster)",
    "tier_before_rules": "the riskier of the segment's tier and the score's tier, before the policy rules",
    "rating_basis": "what decided the rating: segment, score or rule",
    "rule_ids": "the policy rules that apply to the customer (they raised the rating when rating_basis is rule)",
    "risk_score": "the customer's own risk score (weighted sum of indicator z-scores)",
    "cluster": "the customer's segment (0 = the riskiest segment of the first model; stable across runs)",
    "distance_to_centroid": "distance to the segment's centre in the PCA space",
    "model_version": "the model version that made the rating",
    "policy_version": "the version of the policy rules applied",
    "run_id": "the run (Dagster run id) that wrote the row",
    "snapshot_id": "the published snapshot (= the id of the run that published it)",
    "published_at": "when the snapshot was published",
}

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_header(header: object) -> str:
    """Case-, space- and punctuation-insensitive key of a header ("Is PEP" -> "ispep")."""
    return _NON_ALNUM.sub("", str(header).strip().lower())


_ALIAS_INDEX: Final[dict[str, str]] = {
    normalise_header(alias): canonical
    for canonical, aliases in COLUMN_ALIASES.items()
    for alias in (canonical, *aliases)
}


def canonical_name(header: object) -> str | None:
    """The canonical column a header means, or None for a column the alias table does not know."""
    return _ALIAS_INDEX.get(normalise_header(header))
