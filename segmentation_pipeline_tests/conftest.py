"""Fixtures shared by the whole suite: ONE trained warehouse per test session.

Training a warehouse (the whole asset graph on a synthetic export) is the suite's most expensive step; every module
that only reads a trained warehouse uses :func:`trained_warehouse`. A module that changes the warehouse (promotes a
version, runs again) takes :func:`warehouse_copy`, a private copy of the same file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from segmentation_pipeline_tests.api_fixtures import TRAIN_SEED, train_warehouse


@dataclass(frozen=True)
class TrainedWarehouse:
    directory: Path
    path: Path  # the DuckDB file
    source: Path  # the export it was trained on (CSV, TRAIN_CUSTOMERS customers)


@pytest.fixture(scope="session", autouse=True)
def dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite's Dagster instance. `segmentation run` records its runs in $DAGSTER_HOME, else in the working
    directory's dagster.yaml: from the repository root, the team's .dagster_home/, which tests must never write.
    The suite's CLI runs record nothing ($SEGMENTATION_RUN_HISTORY=off: no SQLite instance set up for each run; the
    run-history test turns it back on); `dg` commands use this worker's own folder (telemetry off)."""
    folder = tmp_path_factory.mktemp("dagster_home")
    (folder / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    settings = {"DAGSTER_HOME": str(folder), "SEGMENTATION_RUN_HISTORY": "off"}  # CLI runs: no instance on disk
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield folder
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def trained_warehouse(tmp_path_factory: pytest.TempPathFactory) -> TrainedWarehouse:
    """A warehouse trained by a real run of the asset graph; read-only for the tests that share it."""
    directory = tmp_path_factory.mktemp("trained")
    path = train_warehouse(directory)
    return TrainedWarehouse(directory=directory, path=path, source=directory / f"train_{TRAIN_SEED}.csv")


@pytest.fixture
def warehouse_copy(trained_warehouse: TrainedWarehouse, tmp_path: Path) -> Path:
    """A private copy of the shared trained warehouse, for a test that writes to it."""
    target = tmp_path / "warehouse.duckdb"
    shutil.copy(trained_warehouse.path, target)
    return target


# Seconds each slow module takes on the 2-core CI machine (measured 2026-11-30). `make test` hands whole modules
# to two workers (`--dist loadfile --no-loadscope-reorder`) in collection order: the longest go first, so the
# short ones fill the gaps at the end instead of one worker finishing a long module alone.
MODULE_SECONDS = {
    "test_faults.py": 95, "test_dagster_ui.py": 58, "test_snapshots.py": 50, "test_rejections.py": 36,
    "test_report_browser.py": 33, "test_stability.py": 32, "test_api_server.py": 30, "test_concurrency.py": 25,
    "test_pipeline.py": 22, "test_report_pipeline.py": 21, "test_policy.py": 20, "test_registry.py": 19,
    "test_schedule.py": 16, "test_api.py": 15, "test_api_fuzz.py": 13, "test_decision_log.py": 12,
    "test_sensor.py": 10, "test_dg_project.py": 10, "test_sql.py": 8,
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0))  # stable: order within a module kept
