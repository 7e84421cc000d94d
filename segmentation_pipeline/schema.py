"""The customer export's columns: canonical names, header aliases and column roles.

Every export generation spells its headers differently (see ``shared/column-glossary.md``). All code downstream
of ingestion speaks the canonical snake_case names defined here, and this module is the one documented place
where a header is mapped to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


# --- what every column of the warehouse's asset tables holds --------------------------------------------------------
# The one column contract: each asset table's columns with their DuckDB type (as `DESCRIBE` shows it) and meaning.
# The Dagster UI shows it on every asset before any run (``orchestration/documentation.py``) and with each
# materialisation; a test compares it with the tables a real run writes, so it cannot drift.

# What a customer column means (its export header: ``COLUMN_ALIASES``; see ``shared/column-glossary.md``).
CUSTOMER_COLUMNS: Final[dict[str, str]] = {
    "customer_id": "the bank's customer number, the key (text: leading zeros count)",
    "segment_id": "the bank's own segment code (bookkeeping, never a feature)",
    "focus_type_id": "the bank's internal focus code (bookkeeping, never a feature)",
    "occupation": "occupation or source of income",
    "date_of_birth": "date of birth",
    "gender": "gender (M / F)",
    "is_pep": "politically exposed person (1 = yes, 0 = no)",
    "high_income_hw": "high-net-worth housewife (1 = yes, 0 = no)",
    "exp_volume": "declared expected monthly transaction volume (PKR)",
    "account_type": "account product held",
    "financing_type": "loan product, if any",
    "subscribed_channels": "delivery channels subscribed (ATM, MobileApp, Internet Banking)",
    "nationality": "nationality (ISO country code)",
    "place_of_birth": "place of birth",
    "residence": "country of residence (ISO country code)",
    "province": "province",
    "city": "city",
    "customer_since": "relationship start date",
    "industry": "industry (business customers)",
    "incorporated_since": "incorporation date (business customers)",
    "actual_volume": "observed transaction volume in the period (PKR)",
    "avg_balance": "average balance (PKR)",
    "num_alerts": "transaction-monitoring alerts raised",
    "non_face_to_face_usage": "non-face-to-face transactions",
    "fund_remit_usage": "fund remittance usage",
    "online_ft_usage": "online funds transfers",
    "cash_usage": "cash transaction volume (PKR)",
    "ctr_match": "matched a currency transaction report (1 = yes, 0 = no)",
    "previously_reported": "previously reported in a suspicious transaction report (1 = yes, 0 = no)",
    "model_id": "the bank's previous risk-assessment model id (bookkeeping, never a feature)",
    "assessment_type": "the bank's previous assessment type (bookkeeping, never a feature)",
    "prev_assessment_id": "the bank's previous assessment id (bookkeeping, never a feature)",
    "account_category": "the bank's account category code (bookkeeping, never a feature)",
}


@dataclass(frozen=True)
class Column:
    """A column of an asset table: its name, DuckDB type and meaning. With ``pattern`` it stands for every column
    whose name matches that regular expression (e.g. ``pc1`` ... ``pcN``; ``name`` then shows the form, ``pc<n>``),
    and ``{0}`` in the description is the pattern's group. ``optional``: absent from some runs' tables (a column the
    export lacks, or that cleaning dropped as empty or constant)."""

    name: str
    type: str
    description: str
    pattern: str | None = None
    optional: bool = False

    def matches(self, name: str) -> re.Match[str] | None:
        return re.fullmatch(self.pattern, name) if self.pattern is not None else None

    def described(self, name: str) -> str:
        """The description of the column ``name`` (a member of this column's pattern, or the column itself)."""
        match = self.matches(name)
        return self.description.format(*match.groups()) if match is not None else self.description


def _cleaned_type(name: str) -> str:
    """The DuckDB type of a cleaned customer column (its kind: ``stages/fields.py::kind_of``)."""
    if name == ID_COLUMN:
        return "VARCHAR"
    if name in DATE_COLUMNS:
        return "TIMESTAMP_NS"
    if name in FLAG_COLUMNS or name in NON_NEGATIVE_COLUMNS or name in BOOKKEEPING_COLUMNS:
        return "DOUBLE"
    return "VARCHAR[]" if name == CHANNEL_COLUMN else "VARCHAR"


def _raw_columns() -> tuple[Column, ...]:
    return (
        *(Column(header, "VARCHAR", f"as exported (text): {CUSTOMER_COLUMNS[canonical_name(header)]}",
                 optional=True) for header in HEADER_2023),
        Column("DateofBirth__2", "VARCHAR", "the 2023 export's second DateofBirth column, as exported (text; a "
               "repeated header gets __2, __3, ...; cleaning keeps one copy)", optional=True),
        Column("<other header>", "VARCHAR", "a column of the export under its own header, as exported (text)",
               pattern=r"(.+)", optional=True),  # fmt: skip
        Column("_source_file", "VARCHAR", "the file the row was read from (its name as dropped)"),
        Column("_sheet", "VARCHAR", "the sheet the row was read from (empty for CSV and Parquet)"),
        Column("_source_row", "BIGINT", "the row's number in its file or sheet, as a spreadsheet numbers it"),
        Column("_file_sha256", "VARCHAR", "SHA-256 of the file's bytes"),
        Column("_ingested_at", "TIMESTAMP WITH TIME ZONE", "when the file was read"),
        Column("_run_id", "VARCHAR", "the Dagster run that read it"),
    )


_CLEANED: Final[tuple[Column, ...]] = (
    *(Column(name, _cleaned_type(name), description, optional=name != ID_COLUMN)
      for name, description in CUSTOMER_COLUMNS.items()),
    Column("age", "DOUBLE", "age in years at the reference date (from date_of_birth)", optional=True),
    Column("tenure_years", "DOUBLE", "years as a customer at the reference date (from customer_since)",
           optional=True),
    Column("<other column>", "VARCHAR", "a column the alias table does not know, under its normalised header "
           "(text)", pattern=r"([a-z0-9]+)", optional=True),
    Column("_reference_date", "TIMESTAMP_S", "the date ages and tenures were computed at"),
    Column("_file_sha256", "VARCHAR", "SHA-256 of the file the customer was read from"),
    Column("_run_id", "VARCHAR", "the Dagster run that cleaned it"),
)  # fmt: skip

_MODEL_VERSION = Column("model_version", "VARCHAR", "the model version (registry id: fit time and run)")
_RUN_ID = Column("run_id", "VARCHAR", "the Dagster run that wrote the row")
_CUSTOMER = Column("customer_id", "VARCHAR", CUSTOMER_COLUMNS["customer_id"])

TABLE_COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "raw_workbook": _raw_columns(),
    "cleaned_customers": _CLEANED,
    "kmeans_model": (
        _MODEL_VERSION,
        Column("run_id", "VARCHAR", "the Dagster run that fitted it"),
        Column("created_at", "TIMESTAMP WITH TIME ZONE", "when it was fitted"),
        Column("k", "BIGINT", "number of clusters (segments)"),
        Column("seed", "BIGINT", "random_state of the fit"),
        Column("silhouette", "DOUBLE", "silhouette of the clustering (-1 to 1, higher is better separated)"),
        Column("davies_bouldin", "DOUBLE", "Davies-Bouldin index (0 and up, lower is better separated)"),
        Column("calinski_harabasz", "DOUBLE", "Calinski-Harabasz index (higher is better separated)"),
        Column("inertia", "DOUBLE", "K-means inertia: sum of squared distances to the centroids"),
        Column("n_customers", "BIGINT", "customers fitted on (a stratified sample when there are more)"),
        Column("input_file_sha256", "VARCHAR", "SHA-256 of the export it was fitted on"),
        Column("config", "VARCHAR", "the run's settings (JSON)"),
        Column("cluster_tiers", "VARCHAR", "each cluster's tier (JSON: cluster -> High/Medium/Low)"),
        Column("feature_contract", "VARCHAR", "every input and derived feature, in order, and the contract version "
               "(JSON)"),
        Column("high_score_boundary", "DOUBLE", "a customer scoring at or above it is rated High"),
        Column("medium_score_boundary", "DOUBLE", "a customer scoring at or above it is rated at least Medium"),
        Column("policy_version", "VARCHAR", "version of the policy rules the model applies"),
        Column("policy_sha256", "VARCHAR", "SHA-256 of the policy rules file"),
        Column("code_version", "VARCHAR", "version of this code that fitted it"),
        Column("model_blob", "BLOB", "the fitted model with its policy rules: a zip of model.json and arrays.npz "
               "(no pickle), with a verification sample of 256 training customers"),
    ),
    "customer_features": (
        _CUSTOMER,
        Column("num__<column>", "DOUBLE", "numeric feature {0}: log1p for money and counts, standardised, gaps "
               "filled by k-nearest-neighbour imputation", pattern=r"num__(.+)"),
        Column("flag__<column>", "DOUBLE", "flag {0} (1 = yes, 0 = no; imputed when unknown)", pattern=r"flag__(.+)"),
        Column("cat__<column>_<level>", "DOUBLE", "one-hot category level {0} (1 = the customer's level; rare "
               "levels grouped as infrequent)", pattern=r"cat__(.+)"),
        Column("channel__<channel>", "DOUBLE", "subscribes to channel {0} (1 = yes, 0 = no)",
               pattern=r"channel__(.+)"),
    ),
    "pca_embedding": (
        _CUSTOMER,
        Column("pc<n>", "DOUBLE", "coordinate on principal component {0} (pc1 explains the most variance)",
               pattern=r"pc([0-9]+)"),
    ),
    "cluster_assignments": (
        _CUSTOMER,
        Column("cluster", "INTEGER", "the customer's segment (cluster 0 is the model's riskiest)"),
        Column("risk_tier", "VARCHAR", "the rating: High, Medium or Low (tier_before_rules raised to the floors of "
               "the policy rules the customer matches)"),
        Column("segment_tier", "VARCHAR", "the tier of the customer's segment"),
        Column("tier_before_rules", "VARCHAR", "the riskier of the segment's tier and the tier the customer's own "
               "risk_score reaches"),
        Column("rating_basis", "VARCHAR", "what decided the rating: segment, score or rule"),
        Column("rule_ids", "VARCHAR[]", "the policy rules that apply to the customer (they raised the rating when "
               "rating_basis is rule)"),
        Column("risk_score", "DOUBLE", "the customer's own risk score: sum of weight x indicator z-score"),
        Column("distance_to_centroid", "DOUBLE", "distance to its segment's centroid in PCA space (large: the "
               "segment describes the customer badly)"),
        Column("pc1", "DOUBLE", "coordinate on the first principal component (the report's map)"),
        Column("pc2", "DOUBLE", "coordinate on the second principal component (the report's map)"),
        Column("model_version", "VARCHAR", "the model that rated the customer"),
        Column("policy_version", "VARCHAR", "the policy rules version applied"),
        _RUN_ID,
    ),
    "rating_reasons": (
        _CUSTOMER,
        Column("rank", "INTEGER", "1 = the reason that tells most about the customer's tier"),
        Column("indicator", "VARCHAR", "the risk indicator (e.g. num_alerts, cash_share)"),
        Column("value", "DOUBLE", "the customer's value of the indicator"),
        Column("segment_typical", "DOUBLE", "the typical (median) value in the customer's segment"),
        Column("population_typical", "DOUBLE", "the typical (median) value over all customers"),
        Column("contribution", "DOUBLE", "the indicator's term in the customer's risk_score"),
    ),
    "segment_profiles": (
        Column("cluster", "BIGINT", "the segment (cluster 0 is the riskiest)"),
        Column("risk_tier", "VARCHAR", "the segment's tier: High, Medium or Low"),
        Column("risk_score", "DOUBLE", "the segment score: sum of weight x the segment's mean indicator z-score"),
        Column("tier_score_boundary", "DOUBLE", "a customer of any segment scoring at or above it is rated at least "
               "this tier (empty for Low)"),
        Column("contribution_<indicator>", "DOUBLE", "the term of indicator {0} in the segment score",
               pattern=r"contribution_(.+)"),
        Column("median_<indicator>", "DOUBLE", "the typical (median) value of indicator {0} in the segment",
               pattern=r"median_(.+)"),
    ),
    "segment_report": (
        _RUN_ID,
        Column("model_version", "VARCHAR", "the model whose assignments the report shows"),
        Column("path", "VARCHAR", "the report file of this run (reports/segment_report_<run_id>.html)"),
        Column("latest_path", "VARCHAR", "reports/latest.html: this report once its snapshot is published"),
        Column("size_bytes", "BIGINT", "size of the report file"),
        Column("created_at", "TIMESTAMP WITH TIME ZONE", "when the report was written"),
    ),
}


def table_column(table: str, name: str) -> Column | None:
    """The contract's column that ``name`` of ``table`` is: the column of that name, else the first pattern it
    matches; None when the contract does not know it."""
    columns = TABLE_COLUMNS[table]
    exact = next((c for c in columns if c.pattern is None and c.name == name), None)
    return exact or next((c for c in columns if c.matches(name)), None)


def _column_descriptions() -> dict[str, str]:
    """Each column name's meaning, from the tables' contract above: cleaned_customers' and cluster_assignments'
    first, then the other tables' (a pattern column describes no single name), and the publication's own columns."""
    described: dict[str, str] = {}
    for table in ("cleaned_customers", "cluster_assignments", *TABLE_COLUMNS):
        for column in TABLE_COLUMNS[table]:
            if column.pattern is None:
                described.setdefault(column.name, column.description)
    described["snapshot_id"] = "the published snapshot (= the id of the run that published it)"
    described["published_at"] = "when the snapshot was published"
    return described


# What a column means wherever the warehouse shows it by name alone (the analyst views' column comments).
COLUMN_DESCRIPTIONS: Final[dict[str, str]] = _column_descriptions()
