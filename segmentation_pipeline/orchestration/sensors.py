"""File-drop automation: a sensor that runs the pipeline on every new export dropped in a folder, and two run
status sensors that move the file away once its run has finished.

Life of a file dropped in ``$SEGMENTATION_INCOMING`` (default ``data/incoming/``):

1. ``new_workbook_sensor`` sees it (``.xlsx``, ``.csv`` or ``.parquet``; temp names such as ``~$book.xlsx``,
   ``.hidden``, ``*.tmp``, ``*.part``, ``*.crdownload`` are ignored) and remembers its size and mtime in the cursor.
2. On a later evaluation with the same size and mtime the file is complete: the sensor copies it into the
   content-addressed ``staging/`` folder (``<sha256><suffix>``, hashing exactly the bytes it copies) and requests a
   ``segmentation_job`` run on that copy with ``run_key`` = the hash: the run reads what was hashed, its tags,
   lineage and the archive agree on one hash, and the same bytes never run twice, whatever the file is called.
   A byte-identical copy of content already processed is moved to ``rejected/`` with the reason ``duplicate``.
3. ``archive_accepted_workbook`` moves the file to ``archive/`` when its run succeeds;
   ``reject_failed_workbook`` moves it to ``rejected/`` with ``<name>.reason.txt`` (the run's failure reason)
   when it fails. Both check the hash first: a file replaced by new content meanwhile is left for its own run.

``archive/`` and ``rejected/`` sit beside the incoming folder (``data/archive``, ``data/rejected`` by default).
All three are created when the code location loads (:func:`ensure_folders`) and again by the sensor if they went
missing; a location where they cannot be created does not stop the code location from loading (the UI and runs
by hand work without them): the load logs one line, and the sensor's skip message says it at every evaluation.

The cursor is JSON: ``{"files": {path: [size, mtime_ns] | [size, mtime_ns, sha256]}, "processed": [sha256, ...]}``
- observations, never wall-clock time, so a clock or mtime going backwards cannot make it skip a file. Entries
with a hash are files already submitted (not hashed again); ``processed`` keeps the last
:data:`MAX_PROCESSED` hashes, and the run key makes Dagster itself refuse a repeated hash beyond that.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg

from segmentation_pipeline.orchestration.failures import step_failure_reason
from segmentation_pipeline.orchestration.jobs import segmentation_job
from segmentation_pipeline.orchestration.partitions import EXPORTS, export_key
from segmentation_pipeline.stages.ingestion import file_sha256, stage_file

INCOMING_ENV = "SEGMENTATION_INCOMING"
DEFAULT_INCOMING = Path("data") / "incoming"
ACCEPTED_SUFFIXES = frozenset({".xlsx", ".csv", ".parquet"})
TEMP_PREFIXES = ("~$", ".")  # Excel lock files, hidden/partial files of sync tools
TEMP_SUFFIXES = (".tmp", ".part", ".crdownload")
MAX_PROCESSED = 1000
TAG_FILE, TAG_SHA, TAG_PATH = "segmentation/file", "segmentation/sha256", "segmentation/path"
ARCHIVE_DIR, REJECTED_DIR, STAGING_DIR = "archive", "rejected", "staging"
TAG_STAGED = "segmentation/staged"


def incoming_dir() -> Path:
    """The drop folder: $SEGMENTATION_INCOMING, else data/incoming (relative to the working directory)."""
    return Path(os.environ.get(INCOMING_ENV) or DEFAULT_INCOMING)


def archive_dir(incoming: Path) -> Path:
    return incoming.parent / ARCHIVE_DIR


def rejected_dir(incoming: Path) -> Path:
    return incoming.parent / REJECTED_DIR


def staging_dir(incoming: Path) -> Path:
    return incoming.parent / STAGING_DIR


def ensure_folders(incoming: Path) -> str | None:
    """Create the drop, archive and rejected folders if they are missing (idempotent). Returns None, or one line
    saying why they cannot be created."""
    for folder in (incoming, archive_dir(incoming), rejected_dir(incoming)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            what = "drop folder" if folder == incoming else f"{folder.name} folder"
            return (f"{what} {folder.absolute()} cannot be created ({error.strerror or error}): set {INCOMING_ENV} "
                    "to a folder in a writable place")  # fmt: skip
    return None


IGNORED_TEMPORARY, IGNORED_NOT_EXPORT, IGNORED_FOLDER = "temporary or hidden", "not an export", "a folder"


def ignore_reason(path: Path) -> str | None:
    """Why the sensor leaves an entry of the drop folder alone (None: a file it may run)."""
    name = path.name.lower()
    if name.startswith(TEMP_PREFIXES) or name.endswith(TEMP_SUFFIXES):
        return IGNORED_TEMPORARY
    if path.is_dir():
        return IGNORED_FOLDER
    if path.suffix.lower() not in ACCEPTED_SUFFIXES or not path.is_file():
        return IGNORED_NOT_EXPORT
    return None


def is_candidate(path: Path) -> bool:
    """A regular file with an export suffix and not a temporary name."""
    return ignore_reason(path) is None


@dataclass
class SensorCursor:
    """What the sensor remembers between evaluations (see the module docstring for the JSON form)."""

    files: dict[str, list[object]] = field(default_factory=dict)
    processed: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str | None) -> SensorCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(files=dict(data.get("files", {})), processed=list(data.get("processed", [])))
        except (ValueError, AttributeError, TypeError):
            return cls()  # an unreadable cursor only costs a re-observation; run keys still prevent repeats

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "processed": self.processed[-MAX_PROCESSED:]}, sort_keys=True)


@dataclass(frozen=True)
class ReadyFile:
    path: Path  # the dropped file (archived or rejected when its run ends)
    sha256: str
    staged: Path | None = None  # the copy the run reads (None for a duplicate: nothing to run)


WAITING_NEW, WAITING_WRITTEN, WAITING_RUN = "just dropped", "still being written", "waiting for its run"


@dataclass
class FolderScan:
    """One evaluation's outcome: files to run, byte-identical copies of processed content, the new cursor, and
    the entries not run now by reason (``WAITING_*``, ``IGNORED_*``: their names)."""

    ready: list[ReadyFile]
    duplicates: list[ReadyFile]
    cursor: SensorCursor
    waiting: int = 0  # files seen for the first time or still changing
    ignored: dict[str, list[str]] = field(default_factory=dict)

    def skip_message(self, folder: Path) -> str:
        """Why no run was requested, naming the folder and every entry left alone, e.g. ``no new complete file in
        /data/incoming (2 ignored: 1 still being written, 1 not an export: notes.txt)``."""
        message = f"no new complete file in {folder.absolute()}"
        if not self.ignored:
            return message
        total = sum(len(names) for names in self.ignored.values())
        parts = []
        for reason, names in self.ignored.items():
            named = "" if reason.startswith(("just", "still", "waiting")) else ": " + ", ".join(names[:3]) + (
                ", ..." if len(names) > 3 else "")  # fmt: skip
            parts.append(f"{len(names)} {reason}{named}")
        return f"{message} ({total} ignored: {', '.join(parts)})"


def scan_folder(folder: Path, cursor: SensorCursor) -> FolderScan:
    """Compare the folder with the cursor: a file is ready once its size and mtime are the same as at the
    previous evaluation (and stay so while it is hashed)."""
    files: dict[str, list[object]] = {}
    processed = list(cursor.processed)
    ready: list[ReadyFile] = []
    duplicates: list[ReadyFile] = []
    waiting = 0
    ignored: dict[str, list[str]] = {}
    candidates = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        reason = ignore_reason(path)
        if reason is None:
            candidates.append(path)
        else:
            ignored.setdefault(reason, []).append(path.name)
    for path in candidates:
        key = str(path.resolve())
        try:
            stat = path.stat()
        except FileNotFoundError:  # moved away between listing and stat
            continue
        observed: list[object] = [stat.st_size, stat.st_mtime_ns]
        previous = cursor.files.get(key)
        if previous is None or list(previous[:2]) != observed:
            files[key] = observed  # first sight, or still being written
            waiting += 1
            ignored.setdefault(WAITING_NEW if previous is None else WAITING_WRITTEN, []).append(path.name)
            continue
        if len(previous) > 2:
            files[key] = previous  # already submitted: its run will move it
            ignored.setdefault(WAITING_RUN, []).append(path.name)
            continue
        staged, sha = stage_file(path, staging_dir(folder))
        after = path.stat()
        if [after.st_size, after.st_mtime_ns] != observed:
            files[key] = [after.st_size, after.st_mtime_ns]  # written to while copying: wait, copy again later
            waiting += 1
            ignored.setdefault(WAITING_WRITTEN, []).append(path.name)
            continue
        if sha in processed:
            duplicates.append(ReadyFile(path, sha))
            continue
        processed.append(sha)
        files[key] = [*observed, sha]
        ready.append(ReadyFile(path, sha, staged))
    # Files that left the folder drop out of the cursor, which so stays as small as the folder.
    order = (WAITING_NEW, WAITING_WRITTEN, WAITING_RUN, IGNORED_NOT_EXPORT, IGNORED_TEMPORARY, IGNORED_FOLDER)
    return FolderScan(ready, duplicates, SensorCursor(files=files, processed=processed[-MAX_PROCESSED:]), waiting,
                      ignored={reason: ignored[reason] for reason in order if reason in ignored})  # fmt: skip


def run_request_for(ready: ReadyFile) -> dg.RunRequest:
    """A segmentation_job run on the staged copy of that file, keyed by its content hash."""
    staged = ready.staged or ready.path
    return dg.RunRequest(
        run_key=ready.sha256,
        partition_key=export_key(ready.sha256),
        run_config={"ops": {"raw_workbook": {"config": {"path": str(staged.resolve()), "name": ready.path.name}}}},
        tags={TAG_FILE: ready.path.name, TAG_SHA: ready.sha256, TAG_PATH: str(ready.path.resolve()),
              TAG_STAGED: str(staged.resolve())},  # fmt: skip
    )


def _free_name(folder: Path, name: str, sha256: str | None) -> Path:
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    tag = (sha256 or datetime.now().strftime("%Y%m%dT%H%M%S%f"))[:12]
    return folder / f"{stem}.{tag}{suffix}"


def move_file(path: Path, destination: Path, *, sha256: str | None = None, reason: str | None = None) -> Path | None:
    """Move ``path`` into the folder ``destination`` (a free name is chosen if the name is taken), with a
    ``<name>.reason.txt`` beside it when ``reason`` is given. When ``sha256`` is given and the file no longer has
    that content (replaced meanwhile), or the file is gone, nothing is moved and None is returned."""
    if not path.is_file():
        return None
    if sha256 is not None and file_sha256(path) != sha256:
        return None
    destination.mkdir(parents=True, exist_ok=True)
    target = _free_name(destination, path.name, sha256)
    shutil.move(str(path), str(target))
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason.rstrip() + "\n", encoding="utf-8")
    return target


def _reason_text(headline: str, *, file: str, sha256: str | None, run_id: str | None) -> str:
    lines = [headline, "", f"file: {file}", f"sha256: {sha256 or 'unknown'}"]
    if run_id:
        lines.append(f"run id: {run_id}")
    lines.append(f"moved at: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    return "\n".join(lines)


@dg.sensor(
    job=segmentation_job,
    minimum_interval_seconds=30,
    # `dagster dev` starts the daemon, so drops are picked up out of the box (turn it off under Automation).
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs segmentation_job on every new .xlsx/.csv/.parquet dropped in $SEGMENTATION_INCOMING "
    "(default data/incoming), once per distinct content, when the file has stopped changing.",
)
def new_workbook_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """See the module docstring."""
    folder = incoming_dir()
    unusable = ensure_folders(folder)  # a folder removed since the code location loaded comes back
    if unusable is not None:
        return dg.SensorResult(cursor=context.cursor, skip_reason=unusable)
    scan = scan_folder(folder, SensorCursor.from_json(context.cursor))
    for duplicate in scan.duplicates:
        reason = _reason_text(
            "duplicate: a file with exactly these bytes was already processed (same SHA-256); not run again. "
            "To re-run it on purpose, launch segmentation_job from the launchpad with this path.",
            file=duplicate.path.name, sha256=duplicate.sha256, run_id=None,
        )  # fmt: skip
        moved = move_file(duplicate.path, rejected_dir(folder), sha256=duplicate.sha256, reason=reason)
        context.log.info(f"{duplicate.path.name}: duplicate of processed content, moved to {moved}")
    requests = [run_request_for(ready) for ready in scan.ready]
    for ready in scan.ready:
        context.log.info(f"{ready.path.name}: complete (sha256 {ready.sha256[:12]}...), requesting a run")
    partitions = [EXPORTS.build_add_request([export_key(ready.sha256) for ready in scan.ready])] if requests else []
    skip = None if requests else scan.skip_message(folder)
    return dg.SensorResult(run_requests=requests, cursor=scan.cursor.to_json(), skip_reason=skip,
                           dynamic_partitions_requests=partitions)  # fmt: skip


def _file_of(run: dg.DagsterRun) -> tuple[Path, str] | None:
    path, sha = run.tags.get(TAG_PATH), run.tags.get(TAG_SHA)
    return (Path(path), sha) if path and sha else None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[segmentation_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Moves a dropped file to archive/ once its segmentation_job run has succeeded.",
)
def archive_accepted_workbook(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
    """Archive the file a sensor-launched run read (runs launched by hand carry no file tags: left alone)."""
    found = _file_of(context.dagster_run)
    if found is None:
        return dg.SkipReason("run was not launched by new_workbook_sensor")
    path, sha = found
    moved = move_file(path, archive_dir(path.parent), sha256=sha)
    if moved is None:
        return dg.SkipReason(f"{path} is gone or has new content: left in place")
    context.log.info(f"archived {path.name} -> {moved}")
    return None


@dg.run_failure_sensor(
    monitored_jobs=[segmentation_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Moves a dropped file to rejected/ with <name>.reason.txt when its segmentation_job run failed.",
)
def reject_failed_workbook(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    """Reject the file a sensor-launched run failed on, with the run's failure reason beside it."""
    found = _file_of(context.dagster_run)
    if found is None:
        return dg.SkipReason("run was not launched by new_workbook_sensor")
    path, sha = found
    headline = step_failure_reason(context.get_step_failure_events(), context.failure_event.message)
    reason = _reason_text(headline, file=path.name, sha256=sha, run_id=context.dagster_run.run_id)
    moved = move_file(path, rejected_dir(path.parent), sha256=sha, reason=reason)
    if moved is None:
        return dg.SkipReason(f"{path} is gone or has new content: left in place")
    context.log.info(f"rejected {path.name} -> {moved}: {headline}")
    return None


SEGMENTATION_SENSORS = [new_workbook_sensor, archive_accepted_workbook, reject_failed_workbook]
