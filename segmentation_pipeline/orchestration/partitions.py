"""One dynamic partition per accepted export: the UI lists every export with its status, a bad drop fails only
its own partition, and re-materialising a partition rebuilds that export's snapshot.

An export's key is the start of its content hash (``export_key``), so the same bytes are the same partition
whatever the file is called; the file itself is the content-addressed copy in the staging folder.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

EXPORTS = dg.DynamicPartitionsDefinition(name="exports")
KEY_LENGTH = 16  # hex characters of the SHA-256: 64 bits, unique among a bank's exports


def export_key(sha256: str) -> str:
    """The partition key of an export with that content hash."""
    return sha256[:KEY_LENGTH]


def staged_file(staging: Path, key: str) -> Path | None:
    """The staged copy of export ``key`` (``<sha256><suffix>`` in ``staging``), or None."""
    matches = sorted(staging.glob(f"{key}*")) if staging.is_dir() else []
    return next((m for m in matches if not m.name.endswith(".part")), None)
