"""Shared set-up of the scoring-API tests: a trained warehouse, the training file's customers as API records,
and the real server as a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd

from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.synthetic import generate_export, write_export

API_KEY = "test-key-0123456789abcdef"
OTHER_KEY = "second-key-abcdefghijklmnop"
TRAIN_CUSTOMERS = 5_000
TRAIN_SEED = 7
REPO = Path(__file__).resolve().parents[1]


def train_warehouse(
    directory: Path, *, customers: int = TRAIN_CUSTOMERS, seed: int = TRAIN_SEED, random_state: int = 0
) -> Path:
    """Run the whole pipeline on a synthetic export; returns the warehouse file. Also leaves ``train.csv``."""
    source = write_export(generate_export(customers, seed=seed), directory / f"train_{seed}.csv")
    warehouse = directory / "warehouse.duckdb"
    summary = run_pipeline(source, warehouse, settings=SegmentationSettings(n_init=3, random_state=random_state))
    assert summary.success, summary.error
    return warehouse


def file_records(path: Path) -> list[dict[str, object]]:
    """Every customer of an export as the API receives it: the file's own text under its own headers, one
    record per customer (rows exported once per channel joined into one channel list), blank cells omitted."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame.loc[:, [not str(c).endswith(".1") for c in frame.columns]]  # the repeated DateofBirth copy
    records: dict[str, dict[str, object]] = {}
    for row in frame.to_dict("records"):
        customer = records.get(row["CustomerID"])
        if customer is None:
            records[row["CustomerID"]] = {k: v for k, v in row.items() if v != ""}
        elif row["SubscribedChannels"]:
            joined = ", ".join(filter(None, [str(customer.get("SubscribedChannels", "")), row["SubscribedChannels"]]))
            customer["SubscribedChannels"] = joined
    return list(records.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    warehouse: Path, *, keys: str | None = API_KEY, extra_args: tuple[str, ...] = (), wait: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """`segmentation serve` on a free 127.0.0.1 port; returns the process and its base URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_API_KEYS")}
    if keys is not None:
        env["SEGMENTATION_API_KEYS"] = keys
    command = [sys.executable, "-m", "segmentation_pipeline.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--warehouse", str(warehouse), *extra_args]  # fmt: skip
    log = warehouse.parent / f"server-{port}.log"  # a file, not a pipe: a chatty server can never block on it
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    process.log_path = log  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    if wait:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(f"server exited: {server_log(process)}") from None
                if time.monotonic() > deadline:
                    process.kill()
                    raise AssertionError("server did not start within 60 s") from None
                time.sleep(0.1)
    return process, base


def server_log(process: subprocess.Popen[bytes]) -> str:
    """Everything the server wrote so far (stdout and stderr)."""
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def stop_server(process: subprocess.Popen[bytes]) -> str:
    """Stop the server (SIGTERM, then kill); returns its log."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return server_log(process)
