"""The file-drop sensor and the run status sensors, evaluated with ``build_sensor_context`` /
``build_run_status_sensor_context`` on real files in a temporary drop folder, with real runs of segmentation_job."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.definitions import build_resources, defs
from segmentation_pipeline.orchestration.partitions import EXPORTS
from segmentation_pipeline.orchestration.sensors import (
    INCOMING_ENV,
    MAX_PROCESSED,
    TAG_FILE,
    TAG_PATH,
    TAG_SHA,
    TAG_STAGED,
    SensorCursor,
    archive_accepted_workbook,
    ensure_folders,
    new_workbook_sensor,
    reject_failed_workbook,
)
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline_tests.automation_helpers import settings


@pytest.fixture
def incoming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data" / "incoming"
    folder.mkdir(parents=True)
    monkeypatch.setenv(INCOMING_ENV, str(folder))
    return folder


class Ticker:
    """Evaluates the sensor like the daemon does: each tick gets the cursor the previous tick returned."""

    def __init__(self) -> None:
        self.cursor: str | None = None

    def __call__(self) -> dg.SensorResult:
        result = new_workbook_sensor(dg.build_sensor_context(cursor=self.cursor))
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small_export(path: Path, seed: int = 0, n: int = 60) -> Path:
    return write_export(generate_export(n, seed=seed), path)


def test_new_file_runs_once_after_it_settles(incoming: Path) -> None:
    path = _small_export(incoming / "week 1.csv")
    tick = Ticker()
    first = tick()
    assert first.run_requests == []  # seen once: maybe half-written
    assert first.skip_reason.skip_message == f"no new complete file in {incoming} (1 ignored: 1 just dropped)"
    second = tick()
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.run_key == _sha(path)
    # The run reads the content-addressed copy the sensor hashed, not the dropped file (which may change later).
    staged = (incoming.parent / "staging" / f"{_sha(path)}.csv").resolve()
    assert staged.read_bytes() == path.read_bytes()
    assert request.run_config == {"ops": {"raw_workbook": {"config": {"path": str(staged), "name": "week 1.csv"}}}}
    assert request.tags == {TAG_FILE: "week 1.csv", TAG_SHA: _sha(path), TAG_PATH: str(path.resolve()),
                            TAG_STAGED: str(staged)}  # fmt: skip
    assert request.job_name in (None, "segmentation_job")
    # Until its run moves it, the file is not requested again (nor hashed again).
    assert tick().run_requests == [] and tick().run_requests == []
    cursor = json.loads(tick.cursor)
    assert cursor["processed"] == [_sha(path)]
    assert cursor["files"][str(path.resolve())][2] == _sha(path)


def test_the_run_reads_what_was_hashed_even_if_the_drop_changes_after(incoming: Path) -> None:
    """A copy that stalled long enough to look complete, then went on: the first run reads exactly the bytes its
    tags name, and the completed file is new content with its own run."""
    path = _small_export(incoming / "stalled.csv", n=80)
    tick = Ticker()
    tick()
    (first,) = tick().run_requests
    first_bytes = path.read_bytes()
    with path.open("a") as more:  # the copy resumes after the sensor took the file as complete
        more.write("9999999,,,,,\n")
    staged = Path(first.run_config["ops"]["raw_workbook"]["config"]["path"])
    assert staged.read_bytes() == first_bytes and staged.name.startswith(first.tags[TAG_SHA])
    tick()
    (second,) = tick().run_requests
    assert second.run_key != first.run_key == first.tags[TAG_SHA]
    assert Path(second.run_config["ops"]["raw_workbook"]["config"]["path"]).read_bytes() == path.read_bytes()


def test_half_written_file_waits_until_size_and_mtime_settle(incoming: Path) -> None:
    full = _small_export(incoming.parent / "full.csv").read_bytes()
    path = incoming / "growing.csv"
    tick = Ticker()
    path.write_bytes(full[: len(full) // 3])
    assert tick().run_requests == []
    path.write_bytes(full[: 2 * len(full) // 3])  # still being copied: size changed
    assert tick().run_requests == []
    path.write_bytes(full)
    assert tick().run_requests == []
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same size, touched again
    assert tick().run_requests == []
    requests = tick().run_requests  # unchanged across two evaluations: complete
    assert [r.run_key for r in requests] == [hashlib.sha256(full).hexdigest()]


def test_temporary_and_foreign_names_are_ignored(incoming: Path) -> None:
    content = _small_export(incoming.parent / "x.csv").read_bytes()
    names = ["~$book.xlsx", ".hidden.csv", "upload.csv.part", "copy.tmp", "file.csv.crdownload", "notes.txt"]
    for name in names:
        (incoming / name).write_bytes(content)
    (incoming / "subfolder.csv").mkdir()  # a directory with an export suffix is not a file
    tick = Ticker()
    for _ in range(3):
        result = tick()
        assert result.run_requests == []
    assert sorted(p.name for p in incoming.iterdir()) == sorted([*names, "subfolder.csv"])
    # The skip message names the folder watched and every entry left alone, with why.
    assert result.skip_reason.skip_message == (
        f"no new complete file in {incoming} (7 ignored: 1 not an export: notes.txt, 5 temporary or hidden: "
        ".hidden.csv, copy.tmp, file.csv.crdownload, ..., 1 a folder: subfolder.csv)")  # fmt: skip


def test_skip_message_counts_files_still_being_written_and_waiting_for_their_run(incoming: Path) -> None:
    tick = Ticker()
    growing = _small_export(incoming / "growing.csv")
    assert tick().skip_reason.skip_message.endswith("(1 ignored: 1 just dropped)")
    (requested,) = tick().run_requests  # settled: requested; its run has not moved it yet
    with growing.open("a") as more:  # (a new drop beside it)
        more.write("")
    late = _small_export(incoming / "late.csv", seed=4)
    assert tick().skip_reason.skip_message.endswith("(2 ignored: 1 just dropped, 1 waiting for its run)")
    with late.open("a") as more:
        more.write("8888888,,,,,\n")
    (incoming / "notes.txt").write_text("not an export")
    assert tick().skip_reason.skip_message == (f"no new complete file in {incoming} (3 ignored: 1 still being written, "
                                               "1 waiting for its run, 1 not an export: notes.txt)")  # fmt: skip
    assert requested.tags[TAG_FILE] == "growing.csv"


def test_folders_are_created_at_load_and_an_unwritable_place_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "fresh" / "data" / "incoming"
    assert ensure_folders(incoming) is None and ensure_folders(incoming) is None  # idempotent
    assert {p.name for p in incoming.parent.iterdir()} == {"incoming", "archive", "rejected"}
    # (`dagster dev` loading the code location creates them: test_dagster_ui starts it on a folder without them.)
    # Where they cannot be created (a file stands in the way), the sensor says so instead of failing.
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setenv(INCOMING_ENV, str(tmp_path / "blocked" / "incoming"))
    result = new_workbook_sensor(dg.build_sensor_context())
    assert result.run_requests == [] and result.skip_reason.skip_message == (
        f"drop folder {tmp_path / 'blocked' / 'incoming'} cannot be created (Not a directory): set "
        f"{INCOMING_ENV} to a folder in a writable place")  # fmt: skip


def test_mtime_going_backwards_never_skips_a_file(incoming: Path) -> None:
    tick = Ticker()
    newer = _small_export(incoming / "newer.csv", seed=1)
    tick(), tick()
    older = _small_export(incoming / "older.csv", seed=2)
    os.utime(older, (946_684_800, 946_684_800))  # 2000-01-01: far older than anything processed before
    tick()
    requests = tick().run_requests
    assert [r.tags[TAG_FILE] for r in requests] == ["older.csv"]
    assert newer.exists()


def test_cursor_keeps_a_bounded_set_of_hashes_and_survives_garbage() -> None:
    cursor = SensorCursor(processed=[f"{i:064x}" for i in range(MAX_PROCESSED + 50)])
    assert len(json.loads(cursor.to_json())["processed"]) == MAX_PROCESSED
    assert SensorCursor.from_json("not json").files == {}
    assert SensorCursor.from_json(None).processed == []


def _run(warehouse: Path, request: dg.RunRequest, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """What the daemon launches for the request: the code location's segmentation_job, on ``warehouse``."""
    resources = build_resources(str(warehouse))
    resources["segmentation"] = settings()
    if request.partition_key:  # what the sensor's dynamic_partitions_requests did first
        instance.add_dynamic_partitions(EXPORTS.name, [request.partition_key])
    return defs.resolve_job_def("segmentation_job").execute_in_process(
        run_config=request.run_config, tags=request.tags, resources=resources, instance=instance,
        partition_key=request.partition_key, raise_on_error=False,
    )  # fmt: skip


def _status_context(
    name: str, result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance
) -> dg.RunStatusSensorContext:
    event = result.get_run_success_event() if result.success else result.get_run_failure_event()
    run = instance.get_run_by_id(result.run_id)
    return dg.build_run_status_sensor_context(
        sensor_name=name, dagster_event=event, dagster_instance=instance, dagster_run=run
    )


def test_accepted_file_is_archived_duplicates_and_bad_files_rejected(incoming: Path, tmp_path: Path) -> None:
    archive, rejected = incoming.parent / "archive", incoming.parent / "rejected"
    warehouse = tmp_path / "warehouse.duckdb"
    tick = Ticker()
    with dg.instance_for_test() as instance:
        # A good file: requested, run, archived after the run succeeded.
        good = write_export(generate_export(1500, seed=8), incoming / "export.csv")
        good_sha = _sha(good)
        tick()
        second_tick = tick()
        (request,) = second_tick.run_requests
        # One dynamic partition of `exports` per accepted export, keyed by the start of its content hash.
        (added,) = second_tick.dynamic_partitions_requests
        assert added.partitions_def_name == EXPORTS.name and list(added.partition_keys) == [good_sha[:16]]
        assert request.partition_key == good_sha[:16]
        result = _run(warehouse, request, instance)
        assert result.success
        assert good.exists()  # nothing moves before the run status sensor says so
        success = _status_context("archive_accepted_workbook", result, instance)
        assert archive_accepted_workbook(success) is None
        assert not good.exists() and _sha(archive / "export.csv") == good_sha

        # The same bytes again, under another name: never run twice, moved to rejected/ with the reason.
        shutil.copy(archive / "export.csv", incoming / "copy of export.csv")
        assert tick().run_requests == [] and tick().run_requests == []
        assert not (incoming / "copy of export.csv").exists()
        reason = (rejected / "copy of export.csv.reason.txt").read_text()
        assert reason.startswith("duplicate") and good_sha in reason

        # New content under the old name does run (a new run key) ...
        changed = write_export(generate_export(1500, seed=9), incoming / "export.csv")
        tick()
        (again,) = tick().run_requests
        assert again.run_key == _sha(changed) != good_sha
        # ... and a late success event of the old run does not archive the new content.
        assert isinstance(archive_accepted_workbook(success), dg.SkipReason)
        assert changed.exists()
        changed.unlink()

        # A bad file: its run fails, the failure sensor rejects it with the run's failure reason beside it.
        bad = incoming / "broken.csv"
        bad.write_text("Name,Balance\nalice,10\nbob,20\n", encoding="utf-8")
        tick()
        (bad_request,) = tick().run_requests
        failed = _run(warehouse, bad_request, instance)
        assert not failed.success
        failure = _status_context("reject_failed_workbook", failed, instance).for_run_failure()
        assert reject_failed_workbook(failure) is None
        assert not bad.exists() and (rejected / "broken.csv").exists()
        text = (rejected / "broken.csv.reason.txt").read_text()
        headline = text.splitlines()[0]
        description = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.user_failure_data
        assert headline == description.description and "broken.csv" in headline
        assert failed.run_id in text

        # Runs launched by hand (no file tags) are left alone by both sensors.
        missing = str(bad.parent / "missing.csv")
        by_hand = dg.RunRequest(run_config={"ops": {"raw_workbook": {"config": {"path": missing}}}},
                                partition_key="0123456789abcdef")  # fmt: skip
        manual = _run(warehouse, by_hand, instance)
        manual_context = _status_context("reject_failed_workbook", manual, instance).for_run_failure()
        assert isinstance(reject_failed_workbook(manual_context), dg.SkipReason)
