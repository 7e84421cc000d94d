"""The Dagster project as `dg` reads it (pyproject.toml's [tool.dg]): `dg check defs` loads the code location that
`dg dev` (make dagster-ui) serves, with no warning, and workspace.yaml names the same code location."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from segmentation_pipeline.config import REPO_ROOT

DG = Path(sys.executable).with_name("dg")


def test_dg_check_defs_loads_the_code_location_without_warnings(dagster_home: Path) -> None:
    # DAGSTER_HOME: the suite's instance (telemetry off), so nothing is written in the repository.
    process = subprocess.run([str(DG), "check", "defs"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "DAGSTER_HOME": str(dagster_home)})  # fmt: skip
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert "All definitions loaded successfully." in process.stdout
    assert "warning" not in output.lower() and "deprecat" not in output.lower(), output


def test_workspace_yaml_names_the_code_location_of_tool_dg() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dg"]["project"]
    (entry,) = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text(encoding="utf-8"))["load_from"]
    assert entry["python_module"] == {
        "module_name": project["code_location_target_module"],
        "location_name": project["code_location_name"],
    }
    assert (REPO_ROOT / Path(*project["code_location_target_module"].split("."))).with_suffix(".py").is_file()
