"""The model registry: exactly one active version, the automatic quality gate, promote and rollback (library and
CLI), and ``load_model`` following the active version — on real warehouses written by real runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from segmentation_pipeline import cli
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse, registry
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings


def _entry(version: str, minutes: int, *, passed: bool = True) -> registry.ModelVersion:
    return registry.ModelVersion(
        model_version=version,
        run_id=f"run-{version}",
        created_at=datetime(2026, 1, 1).astimezone() + timedelta(minutes=minutes),
        k=3,
        seed=0,
        metrics={"silhouette": 0.3 if passed else 0.01},
        n_customers=100,
        input_file_sha256="ab" * 32,
        config={"n_clusters": 3},
        library_versions=registry.library_versions(),
        quality=registry.QualityResult(passed, [] if passed else ["silhouette 0.010 below the floor 0.100"]),
    )


def _statuses(warehouse: Warehouse) -> dict[str, str]:
    versions = registry.list_versions(warehouse)
    return dict(zip(versions["model_version"], versions["status"], strict=True))


def test_quality_check_gate() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    assert registry.quality_check({"silhouette": 0.3}, labels, 3, 0.1).passed
    low = registry.quality_check({"silhouette": 0.05}, labels, 3, 0.1)
    assert not low.passed and "silhouette" in low.notes
    empty = registry.quality_check({"silhouette": 0.3}, labels, 4, 0.1)  # cluster 3 has no customer
    assert not empty.passed and "empty cluster(s) [3]" in empty.notes
    assert not registry.quality_check({"silhouette": float("nan")}, labels, 3, 0.1).passed


def test_exactly_one_active_promote_and_rollback(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    assert registry.register_version(warehouse, _entry("v1", 1)) == "active"
    assert registry.register_version(warehouse, _entry("v2", 2)) == "active"
    assert registry.register_version(warehouse, _entry("v3", 3, passed=False)) == "rejected"
    assert registry.register_version(warehouse, _entry("v4", 4)) == "active"
    assert _statuses(warehouse) == {"v1": "inactive", "v2": "inactive", "v3": "rejected", "v4": "active"}
    with pytest.raises(registry.RegistryError):
        registry.register_version(warehouse, _entry("v4", 5))  # ids are unique

    # A person may overrule the gate; exactly one version stays active throughout.
    assert registry.promote(warehouse, "v3") == "v4"
    assert registry.active_version(warehouse) == "v3"
    assert list(_statuses(warehouse).values()).count("active") == 1

    # Rollback walks back through the activations (v3 <- v4 <- v2 <- v1) instead of toggling between two.
    assert registry.rollback(warehouse) == ("v3", "v4")
    assert registry.rollback(warehouse) == ("v4", "v2")
    assert registry.rollback(warehouse) == ("v2", "v1")
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(warehouse)
    assert _statuses(warehouse) == {"v1": "active", "v2": "inactive", "v3": "inactive", "v4": "inactive"}
    with pytest.raises(registry.RegistryError, match="no model version 'nope'"):
        registry.promote(warehouse, "nope")
    assert registry.active_version(warehouse) == "v1"  # the failed promote changed nothing


def test_pipeline_registers_gates_and_load_model_follows_the_active_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_export(generate_export(1500, seed=2), tmp_path / "export.csv")
    db = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(db)

    assert materialize_file(path, db).success
    first = registry.active_version(warehouse)
    entry = registry.active_entry(warehouse)
    assert entry is not None and entry["model_version"] == first
    assert entry["k"] == 3 and entry["seed"] == 0 and entry["n_customers"] > 1000
    assert entry["metrics"]["silhouette"] > 0.1 and len(entry["input_file_sha256"]) == 64
    assert entry["config"]["n_init"] == 3 and "scikit-learn" in entry["library_versions"]
    assert set(entry["population_profile"]["features"]) >= {"exp_volume", "num_alerts"}

    # A model that fails the gate (floor above any silhouette) is registered as rejected and not used.
    assert materialize_file(path, db, settings(silhouette_floor=0.99)).success
    versions = registry.list_versions(warehouse)
    rejected = str(versions["model_version"].iloc[0])
    assert versions["status"].iloc[0] == "rejected" and "below the floor" in versions["quality_notes"].iloc[0]
    assert registry.active_version(warehouse) == first
    assert load_model(warehouse).version == first
    assert set(warehouse.read_table("cluster_assignments")["model_version"]) == {first}

    # The CLI: list, promote the rejected one by hand, roll back.
    assert cli.main(["models", "list", "--warehouse", str(db)]) == 0
    listing = capsys.readouterr().out
    assert first in listing and rejected in listing and "rejected" in listing
    assert cli.main(["models", "promote", rejected, "--warehouse", str(db)]) == 0
    assert load_model(warehouse).version == rejected
    assert cli.main(["models", "rollback", "--warehouse", str(db)]) == 0
    assert load_model(warehouse).version == first
    assert f"active model: {first}" in capsys.readouterr().out
    # Errors are one line on stderr, never a traceback.
    assert cli.main(["models", "promote", "no-such-version", "--warehouse", str(db)]) == 1
    assert cli.main(["models", "rollback", "--warehouse", str(db)]) == 1
    assert cli.main(["models", "promote", "--warehouse", str(db)]) == 2
    err = capsys.readouterr().err
    assert "no model version 'no-such-version'" in err and "Traceback" not in err


def test_no_active_model_fails_the_run_with_a_clear_reason(tmp_path: Path) -> None:
    path = write_export(generate_export(1500, seed=4), tmp_path / "export.csv")
    db = tmp_path / "warehouse.duckdb"
    result = materialize_file(path, db, settings(silhouette_floor=0.99))
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["cluster_assignments"]
    reason = failures[0].step_failure_data.user_failure_data.description
    assert "no active model" in reason and "did not pass the quality gate" in reason and "silhouette" in reason
    # The run failed, so nothing of it was published: not even the rejected version enters the registry.
    assert registry.list_versions(Warehouse(db)).empty
    with pytest.raises(LookupError, match="no model"):
        load_model(Warehouse(db))
