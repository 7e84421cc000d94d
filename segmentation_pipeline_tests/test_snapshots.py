"""Every run writes its own snapshot and publishes it all or nothing: late failures, kill -9, a full disk, a reader
holding the file, concurrent readers and unusable warehouse paths never leave readers with a half-new warehouse;
every published rating can be reconstructed later (``segmentation explain --as-of``)."""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from segmentation_pipeline.cli import main as cli_main
from segmentation_pipeline.definitions import build_resources, defs
from segmentation_pipeline.runner import run_pipeline
from segmentation_pipeline.stages.ingestion import file_sha256
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse, registry, snapshots
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings
from segmentation_pipeline_tests.conftest import TrainedWarehouse
from segmentation_pipeline_tests.snapshot_helpers import REPO, published_state, views_point_at_one_snapshot

FAST = settings(n_init=2)


def test_public_names_read_one_published_snapshot(trained_warehouse: TrainedWarehouse) -> None:
    schemas = views_point_at_one_snapshot(trained_warehouse.path)
    assert len(schemas) == 1 and next(iter(schemas)).startswith("snapshot_")
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        published = connection.execute("SELECT count(*) FROM snapshots WHERE status = 'published'").fetchone()[0]
        customers = connection.execute("SELECT count(*) FROM cluster_assignments").fetchone()[0]
        history = connection.execute("SELECT count(*) FROM rating_history").fetchone()[0]
        reasons = connection.execute("SELECT count(*) FROM rating_reasons").fetchone()[0]
    assert published == 1 and customers == history and reasons == 3 * customers


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
    return write_export(generate_export(50_000, seed=21), tmp_path_factory.mktemp("big") / "big.csv")


# Seconds into the run (reading and cleaning the file), and after a step (the line a step prints when it is done,
# so the kill lands in the next one: the model fit, the scoring and the report, publication).
KILL_POINTS = [4.0, "cleaned_customers + raw_workbook done", "kmeans_model done", "segment_report done"]


@pytest.mark.slow
def test_kill_9_at_many_points_of_a_50k_run_never_shows_half_a_run(
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
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)], check=True,
                       capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a read-only file system here (needs root in a VM)")
    try:
        assert cli_main(["run", "--input", str(source), "--warehouse", str(readonly / "w.duckdb")]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "read-only" in errors[0] or "not writable" in errors[0], errors
    finally:
        subprocess.run(["umount", str(readonly)], check=False)


def test_explain_reconstructs_the_rating_at_any_moment(
    warehouse_copy: Path, trained_warehouse: TrainedWarehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Warehouse(warehouse_copy)
    low = store.query("SELECT min(customer_id) FROM cluster_assignments WHERE risk_tier = 'Low'")
    customer = int(low.iloc[0, 0])
    first = snapshots.explain(store, customer)
    assert first is not None and first["risk_tier"] == "Low" and len(first["reasons"]) == 3
    between = datetime.now().astimezone()
    time.sleep(0.05)
    # The next export: the same customers, this one now previously reported with alerts and a CTR match.
    frame = pd.read_csv(trained_warehouse.source, dtype=str, keep_default_na=False)
    rows = frame["CustomerID"] == str(customer)
    frame.loc[rows, ["PreviouslyReported", "CTRMatch", "NumAlerts", "isPep"]] = ["1", "1", "9", "1"]
    second_file = tmp_path / "second.csv"
    frame.to_csv(second_file, index=False)
    assert run_pipeline(second_file, warehouse_copy, settings=FAST).success
    now = snapshots.explain(store, customer)
    assert now is not None and now["snapshot"] != first["snapshot"] and now["risk_score"] > first["risk_score"]
    assert snapshots.explain(store, customer, between) == first  # as it was published then, reasons included
    assert cli_main(["explain", str(customer), "--as-of", between.isoformat(), "--warehouse", str(warehouse_copy),
                     "--json"]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert {"customer_id", "risk_tier", "risk_score", "cluster", "model_version", "snapshot", "published_at",
            "reasons"} <= set(answer) and answer["snapshot"] == first["snapshot"]  # fmt: skip
    assert cli_main(["explain", str(customer), "--warehouse", str(warehouse_copy)]) == 0
    text = capsys.readouterr().out
    assert f"customer {customer}:" in text and "reasons:" in text and now["snapshot"] in text
    assert cli_main(["explain", str(customer), "--as-of", "2001-01-01", "--warehouse", str(warehouse_copy)]) == 1
    assert "no published rating at 2001-01-01" in capsys.readouterr().err


def test_retention_drops_superseded_snapshots_but_keeps_their_history(
    warehouse_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(snapshots.KEEP_SNAPSHOTS_ENV, "2")
    for seed in (41, 42, 43):
        assert run_pipeline(write_export(generate_export(300, seed=seed), tmp_path / f"{seed}.csv"), warehouse_copy,
                            settings=FAST).success  # fmt: skip
    with duckdb.connect(str(warehouse_copy), read_only=True) as connection:
        rows = connection.execute("SELECT status, schema_name FROM snapshots WHERE status <> 'failed' "
                                  "ORDER BY published_at").fetchall()  # fmt: skip
        schemas = {r[0] for r in connection.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        history = dict(connection.execute("SELECT snapshot_id, count(*) FROM rating_history GROUP BY ALL").fetchall())
    assert [status for status, _ in rows] == ["superseded"] * 3 + ["published"]
    kept = [schema for _, schema in rows if schema in schemas]
    assert kept == [schema for _, schema in rows[-2:]]
    assert len(history) == 4  # every published rating stays reconstructable
    monkeypatch.setenv(snapshots.HISTORY_DAYS_ENV, "ten years")
    summary = run_pipeline(write_export(generate_export(300, seed=44), tmp_path / "44.csv"), warehouse_copy,
                           settings=FAST)  # fmt: skip
    assert not summary.success
    assert summary.error == "SEGMENTATION_HISTORY_DAYS='ten years' is not a positive whole number"


def test_the_report_cannot_fail_a_good_run(warehouse_copy: Path, tmp_path: Path) -> None:
    """No Gender column and one City for everyone: the run publishes, the report says which charts it left out."""
    frame = generate_export(400, seed=12).to_frame()
    frame = frame.loc[:, ~frame.columns.duplicated()].drop(columns=["Gender"]).assign(City="LAHORE")
    path = tmp_path / "no_gender_one_city.csv"
    frame.to_csv(path, index=False)
    summary = run_pipeline(path, warehouse_copy, settings=FAST)
    assert summary.success, summary.error
    html = (warehouse_copy.parent / "reports" / "latest.html").read_text(encoding="utf-8")
    assert "Gender: gender is not in this export" in html and "city is not in this export" in html


def test_latest_report_follows_publication_after_a_kill_between(warehouse_copy: Path) -> None:
    """A kill after the publishing transaction but before latest.html was replaced: the next `segmentation report`
    or run puts it right (latest.html.snapshot names the snapshot it shows)."""
    latest = warehouse_copy.parent / "reports" / "latest.html"
    shutil.rmtree(latest.parent, ignore_errors=True)
    store = Warehouse(warehouse_copy)
    with store.connect(read_only=True) as connection:
        row = snapshots.published(connection)
    report = Path(str(row["report_path"]))
    latest.parent.mkdir(parents=True)
    shutil.copy(report, latest.parent / report.name)
    with store.connect() as connection:
        connection.execute("UPDATE snapshots SET report_path = ? WHERE status = 'published'",
                           [str(latest.parent / report.name)])  # fmt: skip
    assert snapshots.sync_latest_report(store, latest) is True
    assert latest.read_bytes() == report.read_bytes()
    assert snapshots.sync_latest_report(store, latest) is False  # already right


def test_each_export_is_a_partition_and_rebuilding_one_reads_its_staged_copy(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        good = write_export(generate_export(300, seed=51), tmp_path / "good.csv")
        assert materialize_file(good, warehouse, instance=instance).success
        key = file_sha256(good)[:16]
        assert instance.get_dynamic_partitions("exports") == [key]
        # A bad drop is a partition of its own that fails; the good export stays published.
        bad = tmp_path / "bad.csv"
        bad.write_text("CustomerID,ExpVolume\n1,10\n2,20\n")
        assert not run_pipeline(bad, warehouse, settings=FAST, instance=instance).success
        bad_key = file_sha256(bad)[:16]
        assert set(instance.get_dynamic_partitions("exports")) == {key, bad_key}
        assert snapshots.published_export(Warehouse(warehouse)) == key
        # Re-materialising the good partition as the UI does (no file named): its staged copy is read again and
        # a new snapshot of it is published.
        good.unlink()  # the dropped file is gone (archived); the staged copy is what counts
        resources = build_resources(str(warehouse))
        resources["segmentation"] = FAST
        result = defs.resolve_job_def("segmentation_job").execute_in_process(
            partition_key=key, resources=resources, instance=instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )  # fmt: skip
        assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute("SELECT export_key, status, source_path FROM snapshots WHERE status <> 'failed' "
                                  "ORDER BY created_at").fetchall()  # fmt: skip
    assert [(k, status) for k, status, _ in rows] == [(key, "superseded"), (key, "published")]
    assert Path(rows[-1][2]).parent == tmp_path / "staging" and Path(rows[-1][2]).name.startswith(key)


def test_after_a_rollback_rescoring_the_published_export_republishes_with_the_active_model(tmp_path: Path) -> None:
    """What the README says to do after promote or rollback: materialise cluster_assignments and what follows it
    for the published export. The run builds on the export's snapshot (not on the model its run fitted)."""
    warehouse = tmp_path / "warehouse.duckdb"
    store = Warehouse(warehouse)
    with dg.instance_for_test() as instance:
        for seed in (1, 2):
            path = write_export(generate_export(400, seed=seed), tmp_path / f"{seed}.csv")
            assert materialize_file(path, warehouse, instance=instance).success
        assert len(store.query("SELECT * FROM model_versions")) == 2
        _, restored = registry.rollback(store)
        resources = build_resources(str(warehouse))
        resources["segmentation"] = FAST
        result = defs.resolve_job_def("segmentation_job").execute_in_process(
            partition_key=snapshots.published_export(store), resources=resources, instance=instance,
            op_selection=["cluster_assignments", "segment_report", "published_snapshot"], raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )  # fmt: skip
        assert result.success
    assert set(store.query("SELECT model_version FROM cluster_assignments")["model_version"]) == {restored}
    assert len(store.query("SELECT * FROM model_versions")) == 2  # nothing refitted
