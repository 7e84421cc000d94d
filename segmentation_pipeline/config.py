"""Run settings: one typed object, read by the core, the Dagster layer, the CLI and the API alike."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
DEFAULT_SAMPLE = REPO_ROOT / "data" / "sample_customers.xlsx"
DEFAULT_WAREHOUSE = Path("data") / "warehouse.duckdb"

WAREHOUSE_ENV = "SEGMENTATION_WAREHOUSE"
INPUT_ENV = "SEGMENTATION_INPUT"
RULES_ENV = "SEGMENTATION_RULES"
DEFAULT_RULES = PACKAGE_ROOT / "policy_rules.toml"

# Weights of the interpretable risk indicators (see stages/tiering.py). They follow the FATF risk-based approach
# for customers: who they are (PEP, high-net-worth housewife), what they move (volumes, and above all volumes
# beyond what they declared), how (cash, non-face-to-face) and what monitoring already said (alerts, CTR
# matches, previous reports). Behavioural red flags weigh more than size alone.
DEFAULT_RISK_WEIGHTS: dict[str, float] = {
    "is_pep": 2.0,
    "high_income_hw": 1.5,
    "exp_volume": 0.5,
    "actual_volume": 1.0,
    "actual_to_expected": 1.5,
    "cash_share": 1.5,
    "non_face_to_face_usage": 0.5,
    "online_ft_usage": 0.5,
    "num_alerts": 2.0,
    "ctr_match": 2.0,
    "previously_reported": 2.5,
}


def default_warehouse_path() -> Path:
    """The warehouse file: $SEGMENTATION_WAREHOUSE, else data/warehouse.duckdb (relative to the working dir)."""
    return Path(os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE)


def staging_dir(warehouse: Path) -> Path:
    """Where a run copies its input before reading it (content-addressed, see ``ingestion.stage_file``): beside the
    warehouse."""
    return Path(warehouse).parent / "staging"


def default_input_path() -> Path:
    """The workbook a run reads when none is named: $SEGMENTATION_INPUT, else the bundled sample."""
    return Path(os.environ.get(INPUT_ENV) or DEFAULT_SAMPLE)


def default_rules_path() -> Path:
    """The policy rules file a run applies when none is named: $SEGMENTATION_RULES, else the bundled one."""
    return Path(os.environ.get(RULES_ENV) or DEFAULT_RULES)


# The share of customers each rating may hold before the tier_mix_within_bounds check warns (min and max): a
# segmentation that rates more than a third of the bank High, or fewer than a fifth Low, is more likely
# miscalibrated (or fed a broken export) than right.
DEFAULT_TIER_SHARE_MIN: dict[str, float] = {"High": 0.0, "Medium": 0.0, "Low": 0.2}
DEFAULT_TIER_SHARE_MAX: dict[str, float] = {"High": 0.35, "Medium": 0.7, "Low": 1.0}


class SettingsError(ValueError):
    """Settings that cannot be used: one line naming the setting and the problem."""


class PipelineSettings(BaseModel):
    """Every tunable of a segmentation run, with its default."""

    @classmethod
    def checked(cls, **values: object) -> PipelineSettings:
        """The settings, or :class:`SettingsError` naming the first bad one in a sentence."""
        try:
            return cls(**values)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            raise SettingsError(f"setting {where}: {first['msg']} (got {first.get('input')!r})") from None

    knn_neighbors: int = Field(5, ge=1, le=100, description="k of the K-nearest-neighbour imputer")
    knn_max_donors: int | None = Field(
        25_000, ge=100,
        description="complete customers (a seeded sample of those the model is fitted on) the K-nearest-neighbour "
        "imputer takes its neighbours from; None = all. Each customer with a gap searches them: on 1M customers, "
        "25,000 donors rather than 92,000 made the search 3x faster and the held-out error 0.5% larger",
    )  # fmt: skip
    pca_variance: float = Field(0.9, gt=0.0, le=1.0, description="share of variance the PCA embedding keeps")
    n_clusters: int | None = Field(3, ge=2, le=20, description="k of K-means; None chooses k by silhouette")
    k_min: int = Field(2, ge=2, le=20, description="smallest k tried when choosing automatically")
    k_max: int = Field(8, ge=2, le=30, description="largest k tried when choosing automatically")
    random_state: int = Field(0, description="seed of every randomised step")
    n_init: int = Field(10, ge=1, le=50, description="K-means restarts")
    silhouette_sample_size: int = Field(
        10_000, ge=100, description="silhouette is O(n^2): computed on a seeded sample of this many customers"
    )
    rare_level_share: float = Field(
        0.01, ge=0.0, lt=0.5, description="categorical levels rarer than this share are grouped as 'infrequent'"
    )
    risk_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RISK_WEIGHTS))
    silhouette_floor: float = Field(0.1, description="a model whose silhouette is below this is flagged (warn)")
    max_imputed_share: float = Field(
        0.5, ge=0.0, le=1.0,
        description="data quality gate: largest share of customers with more than half their behaviour blank",
    )  # fmt: skip
    min_complete_share: float = Field(
        0.05, ge=0.0, le=1.0, description="data quality gate: smallest share of customers with all behaviour filled"
    )
    min_cluster_size: int = Field(10, ge=1, description="data quality gate: fewest customers a cluster may hold")
    fit_sample_size: int | None = Field(
        250_000, ge=1_000,
        description="customers a model is fitted on when there are more (a seeded sample stratified by flags and "
        "volume; every customer is still scored); None = fit on all",
    )  # fmt: skip
    score_chunk_size: int = Field(
        100_000, ge=1,
        description="customers the batch run reads, scores and writes at a time: bounds the scoring step's memory",
    )  # fmt: skip
    reference_date: str | None = Field(
        None, description="ISO date ages and tenures are computed at; None = the day of the run"
    )
    date_order: str = Field(
        "DMY", pattern="^(DMY|MDY)$",
        description="day/month order of a date column whose values do not prove one (DMY: 02/01/1980 is 2 January)",
    )  # fmt: skip
    rules_file: str | None = Field(
        None, description="policy rules file (TOML); None = $SEGMENTATION_RULES, else the bundled policy_rules.toml"
    )
    tier_share_min: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_SHARE_MIN),
        description="smallest share of customers per rating (High/Medium/Low) before the tier mix check warns",
    )  # fmt: skip
    tier_share_max: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_SHARE_MAX),
        description="largest share of customers per rating (High/Medium/Low) before the tier mix check warns",
    )  # fmt: skip

    @field_validator("tier_share_min", "tier_share_max")
    @classmethod
    def _shares(cls, shares: dict[str, float]) -> dict[str, float]:
        from segmentation_pipeline.stages.tiering import TIERS  # (the stages import config: not at module load)

        for tier, share in shares.items():
            if tier not in TIERS:
                raise ValueError(f"{tier!r} is not a rating ({', '.join(TIERS)})")
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"the share of {tier} must lie between 0 and 1 (got {share})")
        return shares

    @model_validator(mode="after")
    def _share_range(self) -> PipelineSettings:
        for tier, low in self.tier_share_min.items():
            if low > self.tier_share_max.get(tier, 1.0):
                raise ValueError(f"tier_share_min of {tier} ({low}) is above its tier_share_max "
                                 f"({self.tier_share_max.get(tier, 1.0)})")  # fmt: skip
        return self

    @field_validator("k_max")
    @classmethod
    def _k_range(cls, k_max: int, info) -> int:  # noqa: ANN001 - pydantic's ValidationInfo
        k_min = info.data.get("k_min", 2)
        if k_max < k_min:
            raise ValueError(f"k_max ({k_max}) must be >= k_min ({k_min})")
        return k_max
