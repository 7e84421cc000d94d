"""What readers see of a warehouse, as one comparable value: the published snapshot byte for byte."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from segmentation_pipeline.warehouse.snapshots import LOG_TABLES, PUBLIC_TABLES

REPO = Path(__file__).resolve().parents[1]


def published_state(warehouse: Path) -> dict[str, str]:
    """A digest of everything a reader sees: every public name's rows, every log, the registry, the history and
    reports/latest.html. Two equal states are the same published snapshot, byte for byte."""
    state: dict[str, str] = {}
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        names = {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}  # fmt: skip
        for name in (*PUBLIC_TABLES, *LOG_TABLES, "model_versions", "model_activations", "rating_history",
                     "reason_history"):  # fmt: skip
            if name not in names:
                state[name] = "absent"
                continue
            row = connection.execute(
                f"SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), chr(10) ORDER BY CAST(t AS VARCHAR)), "
                f"'')) FROM main.{name} t"
            ).fetchone()
            state[name] = f"{row[0]}:{row[1]}"
        published = []
        if "snapshots" in names:
            published = connection.execute(
                "SELECT snapshot_id FROM main.snapshots WHERE status = 'published'").fetchall()  # fmt: skip
        state["published"] = ",".join(sorted(r[0] for r in published))
    latest = warehouse.parent / "reports" / "latest.html"
    state["latest.html"] = hashlib.sha256(latest.read_bytes()).hexdigest() if latest.exists() else "absent"
    return state


def views_point_at_one_snapshot(warehouse: Path) -> set[str]:
    """The schemas the public views read (one published snapshot, plus its base for a re-clustering)."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute(
            "SELECT view_name, sql FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal"
        ).fetchall()
    return {re.search(r'FROM "?(snapshot_[0-9a-z]+)"?\.', sql).group(1) for name, sql in rows if name in PUBLIC_TABLES}


def cli(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen[str]:
    """`segmentation ARGS` as a child process (text pipes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "segmentation_pipeline.cli", *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, **popen,
    )  # fmt: skip
