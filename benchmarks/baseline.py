"""The previous commit, checked out beside this one, so that a benchmark measures both in the same run.

    with previous_tree("HEAD~1") as tree:          # a detached git worktree of that revision
        subprocess.run([...], env=python_env(tree))   # its package first on sys.path

Each benchmark takes ``--against REV`` (default ``HEAD~1``, the previous commit; ``none`` to skip) and prints its
figures next to that revision's, measured in turn on the same machine in the same run, so a slow spell of a
shared machine hits both columns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def describe(rev: str) -> str:
    """``abc1234 subject`` of a revision (for the column header)."""
    out = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s", rev], capture_output=True, text=True)
    return out.stdout.strip()[:60] or rev


@contextmanager
def previous_tree(rev: str) -> Iterator[Path]:
    """A detached worktree of ``rev`` in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bench_baseline_"))
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def python_env(tree: Path | None, **extra: str) -> dict[str, str]:
    """The environment for a Python child process importing the package from ``tree`` (None: this checkout).
    Start the child with ``cwd=tree`` too: ``-c`` and ``-m`` put the working directory first on sys.path."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(tree or REPO)
    return env
