"""Dagster resources: thin wrappers that hand the core its warehouse and settings."""


from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from segmentation_pipeline.config import DEFAULT_RISK_WEIGHTS, PipelineSettings
from segmentation_pipeline.warehouse import Warehouse

_FIELDS = PipelineSettings.model_fields


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse file. ``get_connection()`` (from dagster-duckdb) is there for ad-hoc assets; the
    pipeline's own assets go through :meth:`store`, which adds atomic multi-table writes and lineage."""

    def store(self) -> Warehouse:
        return Warehouse(Path(self.database))


class SegmentationSettings(dg.ConfigurableResource):
    """Tunables of a run, editable in the Dagster launchpad. Defaults and meaning: config.PipelineSettings."""

    knn_neighbors: int = Field(5, description=_FIELDS["knn_neighbors"].description)
    pca_variance: float = Field(0.9, description=_FIELDS["pca_variance"].description)
    n_clusters: int | None = Field(3, description=_FIELDS["n_clusters"].description)
    k_min: int = Field(2, description=_FIELDS["k_min"].description)
    k_max: int = Field(8, description=_FIELDS["k_max"].description)
    random_state: int = Field(0, description=_FIELDS["random_state"].description)
    n_init: int = Field(10, description=_FIELDS["n_init"].description)
    silhouette_sample_size: int = Field(10_000, description=_FIELDS["silhouette_sample_size"].description)
    rare_level_share: float = Field(0.01, description=_FIELDS["rare_level_share"].description)
    risk_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RISK_WEIGHTS))
    silhouette_floor: float = Field(0.1, description=_FIELDS["silhouette_floor"].description)
    reference_date: str | None = Field(None, description=_FIELDS["reference_date"].description)

    def settings(self) -> PipelineSettings:
        """Validated core settings (pydantic range checks apply)."""
        return PipelineSettings(**{name: getattr(self, name) for name in _FIELDS})
