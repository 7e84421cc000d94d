"""A real small file system for fault tests (a full disk, a read-only mount): a tmpfs mounted for the test and
unmounted after it, or the test skipped where this machine cannot mount one (not root, no VM)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """``folder`` (created) with a tmpfs mounted on it (``-o options``, e.g. ``size=1m`` or ``ro,size=1m``) for
    the ``with`` block; the test is skipped when no file system can be mounted here."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"cannot mount a file system here ({options}; needs root in a VM)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False, capture_output=True)
