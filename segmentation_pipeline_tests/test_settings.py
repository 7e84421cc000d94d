"""The run settings are declared once (config.PipelineSettings): the Dagster resource is generated from them."""

import dagster as dg
import pytest

from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.orchestration.resources import SegmentationSettings


def test_every_pipeline_setting_is_a_resource_field_with_the_same_default_and_description() -> None:
    core, resource = PipelineSettings.model_fields, SegmentationSettings.model_fields
    assert set(resource) == set(core)
    for name, field in core.items():
        assert resource[name].annotation == field.annotation, name
        assert resource[name].description == field.description, name
        assert resource[name].get_default(call_default_factory=True) == field.get_default(call_default_factory=True)
    assert SegmentationSettings().settings() == PipelineSettings()


def test_launchpad_defaults_are_the_core_defaults() -> None:
    # What a run launched from the UI with an empty resources section gets: the validated run config.
    run_config = {"ops": {"raw_workbook": {"config": {"path": "x.csv"}}}}
    for job in ("segmentation_job", "reclustering_job"):
        validated = dg.validate_run_config(defs.resolve_job_def(job), run_config if job == "segmentation_job" else {})
        assert validated["resources"]["segmentation"]["config"] == PipelineSettings().model_dump()


def test_keyword_construction_and_core_range_checks() -> None:
    settings = SegmentationSettings(n_init=3, reference_date="2026-06-30").settings()
    assert (settings.n_init, settings.reference_date, settings.k_max) == (3, "2026-06-30", 8)
    with pytest.raises(dg.Failure) as caught:  # the step's failure: one sentence naming the setting
        SegmentationSettings(n_init=0).settings()
    assert caught.value.description == "setting n_init: Input should be greater than or equal to 1 (got 0)"
    with pytest.raises(dg.Failure, match="setting k_max: Value error, k_max \\(4\\) must be >= k_min \\(6\\)"):
        SegmentationSettings(k_min=6, k_max=4).settings()
