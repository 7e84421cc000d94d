"""Request and response models of the scoring API (what ``/docs`` shows).

Requests are validated by ``stages/records.parse_records`` (the cleaning rules of a file's cells, plus
aliases matched case-, space- and punctuation-insensitively), not by these models: pydantic aliases are exact
strings, and "Is PEP", "is_pep" and "isPep" must all be accepted. :data:`CustomerRecord` documents the workbook's
2023 field names and the JSON types each accepts; responses are produced with these models' shapes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, create_model

from segmentation_pipeline import schema
from segmentation_pipeline.stages.fields import FIELD_KINDS, MAX_AMOUNT, MAX_ID_LENGTH, MAX_TEXT_LENGTH, Kind
from segmentation_pipeline.stages.records import field_name_for

MAX_BATCH = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024  # ~1.5 KB per customer at the batch limit, with room to spare

Text = Annotated[str, Field(max_length=MAX_TEXT_LENGTH)]

EXAMPLE_CUSTOMER: dict[str, object] = {
    "CustomerID": 1504161,
    "Occupation": "Private/NGO Employee",
    "DateofBirth": "1994-09-25",
    "Gender": "F",
    "isPep": 0,
    "HighIncomeHW": 0,
    "ExpVolume": 41000,
    "AccountType": "First Pension Account",
    "SubscribedChannels": ["MobileApp", "ATM"],
    "Nationality": "PK",
    "Residence": "PK",
    "Province": "KPK",
    "City": "ABBOTTABAD",
    "CustomerSince": "2018-08-10",
    "ActualVolume": 36360.81,
    "NumAlerts": 0,
    "NonFacetoFaceUsage": 3,
    "onlineFTusage": 1,
    "CashUsage": 13156.57,
    "CTRMatch": 0,
    "PreviouslyReported": 0,
}


def _field(canonical: str) -> tuple[Any, Any]:
    """Documented JSON type of one workbook field."""
    kind = FIELD_KINDS[canonical]
    aliases = ", ".join(f'"{a}"' for a in schema.COLUMN_ALIASES[canonical][1:]) or "none"
    note = f"Also accepted as: {aliases} (any case, spacing or punctuation)."
    if canonical == schema.ID_COLUMN:
        whole = Annotated[int, Field(ge=0, lt=2**63)]
        text = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
        return (text | whole, Field(description="Customer id (required): text as exported (leading zeros kept), or a "
                                    f"whole number; answered as text. {note}"))
    if kind is Kind.FLAG:
        return (
            bool | Literal[0, 1] | Text | None,
            Field(None, description=f"Flag: true/false, 1/0, Y/N, Yes/No; missing = not flagged. {note}"),
        )
    if kind is Kind.DATE:
        return (
            date | Text | int | None,
            Field(None, description=f"Date: YYYY-MM-DD (also dd/mm/yyyy or an Excel serial number). {note}"),
        )
    if kind is Kind.CHANNELS:
        return (
            Text | list[Text] | None,
            Field(None, description=f'Channels: a list or a comma-separated text ("ATM, MobileApp"). {note}'),
        )
    if kind is Kind.CATEGORY:
        return (Text | None, Field(None, description=f"Text; unknown values are handled, not errors. {note}"))
    if canonical in schema.NON_NEGATIVE_COLUMNS:
        amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT)]
        return (
            amount | Text | None,
            Field(None, description=f'Non-negative number (text like "1,000" accepted); missing = imputed. {note}'),
        )
    return (float | Text | None, Field(None, description=f"Number (bookkeeping, not used by the model). {note}"))


CustomerRecord = create_model(  # type: ignore[call-overload]
    "CustomerRecord",
    __config__=ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": (
                "One customer in the workbook's own field names (2023 export headers). Any alias the ingestion "
                "accepts is accepted too (case, spaces and punctuation ignored: \"Is PEP\", \"is_pep\"). Only "
                "CustomerID is required; missing values are imputed exactly as in training, unknown category "
                "values are grouped as infrequent. Unknown fields, unreadable values, negative volumes or counts, "
                "future dates and ages over 120 are refused with 422."
            ),
            "examples": [EXAMPLE_CUSTOMER],
        },
    ),
    **{field_name_for(name): _field(name) for name in schema.COLUMN_ALIASES},
)


class ScoreBatchRequest(BaseModel):
    """Several customers in one request (each scored independently)."""

    model_config = ConfigDict(extra="forbid")
    customers: list[CustomerRecord] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} customers; more is refused with 413."
    )


class Reason(BaseModel):
    """An indicator that put the customer in its tier, with its value against the typical ones."""

    indicator: str = Field(description="risk indicator (see config.DEFAULT_RISK_WEIGHTS)")
    value: float | None = Field(description="the customer's value in natural units (None: unknown)")
    segment_typical: float | None = Field(description="median of the customer's segment")
    population_typical: float | None = Field(description="median of all training customers")
    contribution: float = Field(description="weight x z-score: the indicator's share of the customer's risk score")


class ScoreResult(BaseModel):
    customer_id: str = Field(description="the customer id as text, exactly as sent (trimmed)")
    cluster: int = Field(description="the behaviour segment (K-means cluster)")
    risk_tier: Literal["High", "Medium", "Low"] = Field(
        description="the customer's rating: its segment's tier, raised by its own score and by policy rules")
    segment_tier: Literal["High", "Medium", "Low"] = Field(description="the tier of the customer's segment")
    tier_before_rules: Literal["High", "Medium", "Low"] = Field(
        description="the rating from segment and score alone: the riskier of the segment's tier and the score's")
    rating_basis: Literal["segment", "score", "rule"] = Field(
        description="what decided the rating: the segment's tier, the customer's score, or a policy rule")
    rule_ids: list[str] = Field(description="the policy rules that apply to the customer; they raised the rating "
                                "when rating_basis is 'rule' (their text: /v1/model)")
    distance_to_centroid: float
    risk_score: float = Field(description="the customer's own weighted indicator score (higher = riskier)")
    model_version: str
    reasons: list[Reason] = Field(description="top 3 indicators behind the rating")


class ScoreBatchResponse(BaseModel):
    model_version: str
    count: int
    results: list[ScoreResult]


class PolicyRuleInfo(BaseModel):
    id: str
    condition: str
    min_tier: Literal["High", "Medium"]
    rationale: str


class PolicyInfo(BaseModel):
    version: str
    source: str = Field(description="the rules file the model was fitted with")
    sha256: str = Field(description="SHA-256 of the rules (canonical JSON)")
    rules: list[PolicyRuleInfo]


class ModelInfo(BaseModel):
    model_version: str
    k: int
    metrics: dict[str, float | None]
    trained_at: datetime
    input_sha256: str | None
    n_customers: int
    reference_date: date = Field(description="the date ages and tenures are computed at")
    run_id: str | None
    cluster_tiers: dict[str, str]
    score_boundaries: dict[str, float | None] = Field(
        description="a customer scoring at or above a tier's boundary is rated at least that tier")
    policy: PolicyInfo = Field(description="the policy rules this model applies")
    loaded_at: datetime = Field(description="when this service loaded the version")


class SegmentProfile(BaseModel):
    cluster: int
    risk_tier: Literal["High", "Medium", "Low"]
    risk_score: float | None
    contributions: dict[str, float | None] = Field(description="the segment score's terms: weight x mean z-score")
    typical: dict[str, float | None] = Field(description="median of each indicator in the segment")
    population_typical: dict[str, float | None]


class SegmentsResponse(BaseModel):
    model_version: str
    segments: list[SegmentProfile]


class CustomerAssignment(BaseModel):
    customer_id: str
    cluster: int
    risk_tier: str
    segment_tier: str | None
    tier_before_rules: str | None
    rating_basis: str | None
    rule_ids: list[str]
    risk_score: float | None
    distance_to_centroid: float | None
    pc1: float | None
    pc2: float | None
    model_version: str | None
    policy_version: str | None
    run_id: str | None


class DecisionLogHealth(BaseModel):
    status: Literal["ok", "degraded", "off"] = Field(description="degraded: the log cannot be written right now")
    mode: Literal["full", "hash-only", "off"]
    fail_closed: bool = Field(description="true: scoring is refused (503) while the log cannot be written")
    error: str | None
    pending: int = Field(description="records waiting to be written")
    written: int = Field(description="records written since the service started")
    dropped: int = Field(description="records lost because too many waited while the log could not be written")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: the decision log cannot be written")
    model_version: str
    seconds_since_model_check: float | None
    decision_log: DecisionLogHealth | None = Field(None, description="null when the app runs without a log")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: str | list[FieldError]


# --- what /v1/score sends ---------------------------------------------------------------------------------------
# The same shapes as Reason / ScoreResult / ScoreBatchResponse above (those document the API; a test keeps the
# fields equal), as msgspec structs: a 10,000-customer batch makes 40,000 of these, and structs are built ~5x
# faster than dicts and are not tracked by the cyclic garbage collector.


class ReasonOut(msgspec.Struct, gc=False):
    indicator: str
    value: float | None
    segment_typical: float | None
    population_typical: float | None
    contribution: float


class ScoreResultOut(msgspec.Struct, gc=False):
    customer_id: str
    cluster: int
    risk_tier: str
    segment_tier: str
    tier_before_rules: str
    rating_basis: str
    rule_ids: list[str]
    distance_to_centroid: float
    risk_score: float
    model_version: str
    reasons: list[ReasonOut]


class ScoreBatchResponseOut(msgspec.Struct, gc=False):
    model_version: str
    count: int
    results: list[ScoreResultOut]
