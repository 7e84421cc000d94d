"""Dagster resources: thin wrappers that hand the core its warehouse and settings."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field, create_model
from pydantic.fields import FieldInfo

from segmentation_pipeline.config import PipelineSettings, SettingsError
from segmentation_pipeline.warehouse import Warehouse, snapshots


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse file. ``get_connection()`` (from dagster-duckdb) is there for ad-hoc assets; the
    pipeline's own assets go through :meth:`store`, which adds atomic multi-table writes and lineage."""

    def store(self) -> Warehouse:
        """The warehouse as readers see it: the published snapshot under the public names."""
        return Warehouse(Path(self.database))

    def run_store(self, run_id: str) -> Warehouse:
        """The warehouse as a run sees it while it works: its own snapshot first, then what is published (for
        asset checks, which read what their run wrote)."""
        return Warehouse(Path(self.database), search_path=(snapshots.schema_for(run_id), "main"))


def _launchpad_field(field: FieldInfo) -> tuple[object, FieldInfo]:
    """A PipelineSettings field as a resource field: same type, default and description. A default factory is
    called once, so that the launchpad shows the value (pydantic copies a mutable default for each instance).
    The range checks are left to PipelineSettings (see :meth:`SegmentationSettings.settings`)."""
    return field.annotation, Field(field.get_default(call_default_factory=True), description=field.description)


# Every field of the core settings, generated: a field added to PipelineSettings shows up in the launchpad with
# its default and description, and nothing here changes.
_PipelineSettingsResource = create_model(
    "_PipelineSettingsResource",
    __base__=dg.ConfigurableResource,
    __module__=__name__,
    **{name: _launchpad_field(field) for name, field in PipelineSettings.model_fields.items()},
)


class SegmentationSettings(_PipelineSettingsResource):
    """Tunables of a run, editable in the Dagster launchpad: the fields of config.PipelineSettings."""

    def settings(self) -> PipelineSettings:
        """Validated core settings. The range checks run here, inside the step that reads the settings, so a bad
        launchpad value fails that step with one line naming the setting (the run's failure reason)."""
        try:
            return PipelineSettings.checked(**{name: getattr(self, name) for name in PipelineSettings.model_fields})
        except SettingsError as error:
            raise dg.Failure(description=str(error)) from None
