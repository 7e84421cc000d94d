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
