"""Shared helpers of the tests that run the real asset graph into a real DuckDB file (pipeline, rejections,
registry, stability, sensor, schedule, concurrency): the code location's segmentation_job, as the CLI runs it; and
`dagster dev` for real (UI, concurrency)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import pytest

from segmentation_pipeline.config import REPO_ROOT
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import execute_segmentation_job

FAST = {"n_init": 3, "reference_date": "2026-06-30"}  # few K-means restarts; a fixed date keeps ages stable


def settings(**overrides: object) -> SegmentationSettings:
    return SegmentationSettings(**{**FAST, **overrides})


def materialize_file(
    path: Path,
    warehouse_path: Path,
    segmentation: SegmentationSettings | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """The whole graph (and its checks) on one file; never raises on a failed run (check ``.success``)."""
    return execute_segmentation_job(path, warehouse_path, settings=segmentation or settings(), instance=instance)


DAGSTER = Path(sys.executable).with_name("dagster")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def dagster_dev(folder: Path, env: Mapping[str, str]) -> Iterator[str]:
    """`dagster dev` (webserver, daemon, code server) on the repository's workspace.yaml, run in ``folder`` with
    ``env`` added to the environment; yields the webserver's URL once it answers. Its output: folder/dagster_dev.log."""
    port = _free_port()
    log_path = folder / "dagster_dev.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=folder, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dagster dev did not come up:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
            yield url
        finally:
            # dagster dev shuts its webserver and daemon down on SIGINT, but waits for its code server's grace
            # period (tens of seconds) before it exits: the tests' temporary instance needs none of that.
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
