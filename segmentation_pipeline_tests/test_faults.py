"""Faults never leave readers with a half-new warehouse: late failures, kill -9 at many points of a 50k run, a full
disk, a reader holding the file, a reader loop during a run and unusable warehouse paths each leave the published
snapshot byte for byte as it was, or fail at once with one line."""

from __future__ import annotations

import os
import queue
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from segmentation_pipeline.cli import main as cli_main
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline_tests.automation_helpers import settings
from segmentation_pipeline_tests.mounts import tmpfs
from segmentation_pipeline_tests.snapshot_helpers import REPO, published_state, views_point_at_one_snapshot

FAST = settings(n_init=2)
def _identical_customers(folder: Path) -> Path:
    frame = generate_export(120, seed=3, channel_rows=False).to_frame()
    frame = frame.loc[:, ~frame.columns.duplicated()]
    for column in frame.columns:
        if column != "CustomerID":
            frame[column] = frame[column].iloc[0]
    path = folder / "identical.csv"
    frame.to_csv(path, index=False)
    return path


LATE_FAILURES = {
    "two customers": lambda folder: _text(folder, "two.csv",
                                          "CustomerID,ExpVolume,ActualVolume\n1,100,200\n2,300,90\n"),
    "identical customers": _identical_customers,
    "no volume column": lambda folder: _text(folder, "novolume.csv", "CustomerID,Gender,City\n1,F,LAHORE\n2,M,KARACHI\n"
                                             "3,F,QUETTA\n"),
    "non-finite volumes only": lambda folder: _text(folder, "inf.csv", "CustomerID,ExpVolume\n1,inf\n2,-inf\n3,nan\n"),
}  # fmt: skip


def _text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(LATE_FAILURES))
def test_a_run_that_fails_late_changes_nothing_readers_see(case: str, warehouse_copy: Path, tmp_path: Path) -> None:
    before = published_state(warehouse_copy)
    summary = run_pipeline(LATE_FAILURES[case](tmp_path), warehouse_copy, settings=FAST)
    assert not summary.success
    assert summary.error and "\n" not in summary.error and "Traceback" not in summary.error
    assert published_state(warehouse_copy) == before
    if case != "two customers":
        return
    # The next run drops what the failed one staged, and publishes normally.
    assert run_pipeline(write_export(generate_export(400, seed=9), tmp_path / "ok.csv"), warehouse_copy,
                        settings=FAST).success  # fmt: skip
    with duckdb.connect(str(warehouse_copy), read_only=True) as connection:
        staged = connection.execute("SELECT count(*) FROM snapshots WHERE status = 'staging'").fetchone()[0]
        schemas = {r[0] for r in connection.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        failed = connection.execute("SELECT schema_name FROM snapshots WHERE status = 'failed'").fetchall()
    assert staged == 0 and not {r[0] for r in failed} & schemas


RUN_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from segmentation_pipeline.orchestration.resources import SegmentationSettings
    from segmentation_pipeline.runner import run_pipeline
    summary = run_pipeline(Path(sys.argv[1]), Path(sys.argv[2]), show_progress=True,
                           settings=SegmentationSettings(n_init=1, reference_date="2026-06-30"))
    print("error: " + summary.error if not summary.success else "ok", file=sys.stderr, flush=True)
    sys.exit(0 if summary.success else 1)
""")


def _start_run(source: Path, warehouse: Path, **popen: object) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    process = subprocess.Popen([sys.executable, "-c", RUN_CHILD, str(source), str(warehouse)], cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.put(line.rstrip("\n"))
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def _wait_for(lines: queue.Queue[str], needle: str, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line == "":
            return False  # the run ended
        if needle in " ".join(line.split()):  # the step column is padded
            return True
    return False


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_export(generate_export(20_000, seed=21), tmp_path_factory.mktemp("big") / "big.csv")


# Seconds into the run (reading and cleaning the file), and after a step (the line a step prints when it is done,
# so the kill lands in the next one: the model fit; publication).
KILL_POINTS = [3.5, "cleaned_customers + raw_workbook done", "segment_report done"]


@pytest.mark.slow
def test_kill_9_at_many_points_of_a_20k_run_never_shows_half_a_run(
    big_export: Path, warehouse_copy: Path
) -> None:
    before = published_state(warehouse_copy)
    killed_at = []
    for point in KILL_POINTS:
        process, lines = _start_run(big_export, warehouse_copy)
        if isinstance(point, float):
            time.sleep(point)
            reached = process.poll() is None
        else:
            reached = _wait_for(lines, point)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        killed_at.append((point, reached))
        assert published_state(warehouse_copy) == before, f"killed at {point!r}"
    assert all(reached for _, reached in killed_at), killed_at
    # The file is sound after all that: a reader opens it and the published snapshot is whole.
    assert len(views_point_at_one_snapshot(warehouse_copy)) == 1


READER = textwrap.dedent("""
    import sys, time, duckdb
    path, stop = sys.argv[1], sys.argv[2]
    reads = mixed = 0
    while True:
        try:
            with duckdb.connect(path, read_only=True) as c:
                runs = c.execute("SELECT (SELECT any_value(_run_id) FROM cleaned_customers), "
                                 "(SELECT any_value(run_id) FROM cluster_assignments), "
                                 "(SELECT count(*) FROM cleaned_customers), "
                                 "(SELECT count(*) FROM cluster_assignments)").fetchone()
            reads += 1
            mixed += runs[0] != runs[1] or runs[2] != runs[3]
        except duckdb.Error:
            pass  # the run holds the file for a moment: try again
        import os
        if os.path.exists(stop):
            break
        time.sleep(0.005)
    print(reads, mixed)
""")


@pytest.mark.slow
def test_a_reader_during_a_run_never_sees_two_snapshots_at_once(warehouse_copy: Path, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(warehouse_copy), str(stop)], text=True,
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        source = write_export(generate_export(3_000, seed=31), tmp_path / "new.csv")
        summary = run_pipeline(source, warehouse_copy, settings=FAST)
        assert summary.success, summary.error
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    reads, mixed = (int(v) for v in out.split())
    assert reads > 20 and mixed == 0


def test_a_reader_holding_the_file_makes_the_run_wait_then_fail_cleanly(warehouse_copy: Path, tmp_path: Path) -> None:
    before = published_state(warehouse_copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
         "print('open', flush=True); time.sleep(60)", str(warehouse_copy)], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"  # type: ignore[union-attr]
        source = write_export(generate_export(300, seed=5), tmp_path / "x.csv")
        started = time.monotonic()
        process = subprocess.run([sys.executable, "-m", "segmentation_pipeline.cli", "run", "--input", str(source),
                                  "--warehouse", str(warehouse_copy)], cwd=REPO, capture_output=True, text=True,
                                 env={**os.environ, "SEGMENTATION_LOCK_WAIT": "3"}, timeout=120)  # fmt: skip
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert process.returncode == 1 and len(errors) == 1 and "locked by another process" in errors[0], process.stderr
    assert "Traceback" not in process.stderr and waited >= 3
    assert published_state(warehouse_copy) == before


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_fails_the_run_in_one_line_and_changes_nothing(warehouse_copy: Path, tmp_path: Path) -> None:
    before = published_state(warehouse_copy)
    source = write_export(generate_export(20_000, seed=6), tmp_path / "x.csv")
    limit = max(warehouse_copy.stat().st_size, source.stat().st_size) + 1_000_000  # the staged copy fits
    process, lines = _start_run(source, warehouse_copy, preexec_fn=lambda: _limit_file_size(limit))
    assert process.wait(timeout=300) == 1
    output = []
    while not lines.empty():
        output.append(lines.get())
    errors = [line for line in output if line.startswith("error:")]
    assert len(errors) == 1 and "file-size limit" in errors[0] or "no space" in errors[0], output
    assert published_state(warehouse_copy) == before
    with duckdb.connect(str(warehouse_copy)) as connection:  # the file is sound and writable again
        assert connection.execute("SELECT count(*) FROM cluster_assignments").fetchone()[0] > 0


def test_an_unusable_warehouse_path_is_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_export(generate_export(200, seed=2), tmp_path / "x.csv")
    folder_as_path = tmp_path / "a_folder.duckdb"
    folder_as_path.mkdir()
    started = time.monotonic()
    assert cli_main(["run", "--input", str(source), "--warehouse", str(folder_as_path)]) == 1
    assert time.monotonic() - started < 25  # no 30 s of lock retries (the run itself starts Dagster)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: warehouse {folder_as_path} is a directory, not a DuckDB file"]
    with tmpfs(tmp_path / "readonly", "ro,size=1m") as readonly:
        assert cli_main(["run", "--input", str(source), "--warehouse", str(readonly / "w.duckdb")]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and ("read-only" in errors[0] or "not writable" in errors[0]), errors
