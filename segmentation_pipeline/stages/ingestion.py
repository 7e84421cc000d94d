"""File-reading stage: turn a customer export (xlsx / legacy xls / CSV / Parquet) into a lossless table of text.

Nothing here interprets values. Every cell becomes the text it shows in the file (or ``None`` when empty) so the
cleaning stage decides, with full provenance (file, sheet, row), what "1,000", " 2500 " or "N/A" mean. A file the
pipeline cannot read raises :class:`IngestionError` whose ``str()`` is one line naming the file and, where they
apply, the sheet, column and row.

Format is decided by the file's bytes, not its name:

* ``PK\\x03\\x04`` -> zip -> xlsx/xlsm (checked for zip bombs before anything is decompressed, then streamed with
  python-calamine-plus);
* ``D0 CF 11 E0`` -> OLE2 -> a password-protected OOXML workbook (refused) or a legacy ``.xls`` (read with
  calamine, ``file_format="xls"``);
* ``PAR1`` -> Parquet (pyarrow);
* anything else that decodes as text -> CSV (utf-8 / utf-8 BOM / utf-16 BOM / cp1252; delimiter , ; or tab).

Row numbers (``header_row``, ``source_rows``) are 1-based physical rows of the sheet, i.e. what Excel shows in its
row margin. For CSV they are physical line numbers (a record with an embedded newline is numbered by the line it
starts on). Parquet has no rows on paper: the table is numbered as if it were a sheet with the header on row 1, so
the first data row is row 2.

This module sniffs the format and dispatches; the readers live in ``readers_workbook``, ``readers_csv`` and
``readers_parquet``. What they share is in ``raw_table`` (:class:`RawTable`, :class:`IngestionError`, header
detection, table assembly) and ``cell_text`` (cell -> text).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from segmentation_pipeline.stages.raw_table import HEADER_SCAN_ROWS as HEADER_SCAN_ROWS
from segmentation_pipeline.stages.raw_table import MIN_KNOWN_HEADERS as MIN_KNOWN_HEADERS
from segmentation_pipeline.stages.raw_table import NO_ID_COLUMN as NO_ID_COLUMN
from segmentation_pipeline.stages.raw_table import NOT_A_TABLE, IngestionError, RawTable
from segmentation_pipeline.stages.raw_table import excel_column_letter as excel_column_letter
from segmentation_pipeline.stages.readers_csv import read_csv
from segmentation_pipeline.stages.readers_parquet import read_parquet
from segmentation_pipeline.stages.readers_workbook import CORRUPT_XLSX as CORRUPT_XLSX
from segmentation_pipeline.stages.readers_workbook import (
    DEFAULT_MAX_COMPRESSION_RATIO,
    DEFAULT_MAX_UNCOMPRESSED_BYTES,
    check_zip,
    classify_ole,
    read_workbook,
)
from segmentation_pipeline.stages.readers_workbook import PASSWORD_PROTECTED as PASSWORD_PROTECTED

# The ``name as name`` imports above are re-exports: importable from here, as before the readers moved out.
__all__ = ["IngestionError", "RawTable", "ReadAhead", "file_sha256", "read_ahead", "read_customer_file"]

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PARQUET_MAGIC = b"PAR1"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StagingError(OSError):
    """The staged copy could not be written (a full disk, a read-only folder): one line saying so."""


def stage_file(path: str | Path, staging: str | Path) -> tuple[Path, str]:
    """Copy a file into the content-addressed folder ``staging`` as ``<sha256><suffix>``, hashing exactly the bytes
    copied: whoever reads the staged copy reads what was hashed, even if the original changes afterwards. A content
    already staged is not copied twice, and a file this process staged unchanged (same size, modification time and
    inode) is not even hashed twice: ``segmentation run`` stages its input before its libraries load, to read it
    meanwhile, and the run stages it again (2 s of hashing for ten million customers). Returns (staged path,
    sha256)."""
    source, folder = Path(path), Path(staging)
    seen = _identity(source)
    key = None if seen is None else (*seen, str(folder.resolve()))
    done = _STAGED.get(key) if key is not None else None
    if done is not None and done[0].is_file() and done[0].stat().st_size == seen[1]:
        return done
    with open(source, "rb") as fh:  # a missing or unreadable file is the caller's error, raised as it is
        try:
            folder.mkdir(parents=True, exist_ok=True)
            sink = tempfile.NamedTemporaryFile(dir=folder, prefix=".staging-", suffix=".part", delete=False)  # noqa: SIM115 - closed by the `with sink` below
        except OSError as error:
            raise StagingError(f"cannot copy {source.name} into {folder}: {error.strerror or error}") from None
        digest = hashlib.sha256()
        partial = Path(sink.name)
        with sink:
            try:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
                    sink.write(chunk)
                sink.flush()
            except OSError as error:
                partial.unlink(missing_ok=True)
                raise StagingError(f"cannot copy {source.name} into {folder}: {error.strerror or error}") from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    sha = digest.hexdigest()
    staged = folder / f"{sha}{source.suffix.lower()}"
    if staged.exists():
        partial.unlink(missing_ok=True)
    else:
        partial.replace(staged)  # atomic: a staged name always holds a whole file
    if key is not None:
        _STAGED[key] = staged, sha
    return staged, sha


_STAGED: dict[tuple, tuple[Path, str]] = {}  # what this process staged: stage_file's memory


def _identity(path: Path) -> tuple[str, int, int, int] | None:
    """A file as it is now: (resolved path, size, modification time in ns, inode); None for a file that cannot be
    looked at (it is then read, or refused, the usual way)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def read_customer_file(
    path: str | Path,
    sheet: str | None = None,
    *,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    name: str | None = None,
) -> RawTable:
    """Read a customer export into a :class:`RawTable` of lossless text, or raise :class:`IngestionError`.

    ``sheet`` picks a workbook sheet by name; when None the sheet with a customer id header and the most known
    headers is used. ``sheet`` is ignored for CSV and Parquet. The zip limits apply to xlsx only. ``name`` is the
    file's name in messages and lineage (default: its own; a staged copy passes the name it was dropped under).
    """
    p = Path(path)
    name = name or p.name
    if _AHEAD and (ahead := _take_ahead(_ahead_key(p, sheet, name, max_uncompressed_bytes, max_compression_ratio))):
        return ahead.take()  # the table read ahead, or the same IngestionError / OSError the read raised
    return _read(p, sheet, name, max_uncompressed_bytes, max_compression_ratio)


def _read(p: Path, sheet: str | None, name: str, max_uncompressed_bytes: int, max_compression_ratio: float) -> RawTable:
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise IngestionError("file not found", file=name) from None
    if not p.is_file():
        raise IngestionError("not a file", file=name)
    if size == 0:
        raise IngestionError("file is empty", file=name)
    with open(p, "rb") as fh:
        magic = fh.read(8)
    sha = file_sha256(p)

    if magic.startswith(_ZIP_MAGIC):
        check_zip(p, name, max_uncompressed_bytes, max_compression_ratio)
        return read_workbook(p, name, sheet, sha, "xlsx")
    if magic.startswith(_EMPTY_ZIP_MAGIC):
        raise IngestionError(f"{NOT_A_TABLE} (an empty zip archive)", file=name)
    if magic.startswith(_OLE_MAGIC):
        kind = classify_ole(p, name)
        return read_workbook(p, name, sheet, sha, kind)
    if magic.startswith(_PARQUET_MAGIC):
        return read_parquet(p, name, sha)
    return read_csv(p, name, sha)


# --- reading ahead ------------------------------------------------------------------------------------------------


class ReadAhead:
    """One read of a file started ahead (:func:`read_ahead`). :meth:`take` hands its table over once and keeps no
    reference to it: cleaning lets go of each text column as it parses it, which nothing here may hold on to."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._outcome: tuple[RawTable | None, BaseException | None] | None = None

    def _run(self, read: Callable[[], RawTable]) -> None:
        try:
            self._outcome = read(), None
        except BaseException as error:  # noqa: BLE001 - handed to whoever takes the read, raised as its own
            self._outcome = None, error
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the read has finished (with a table or an error)."""
        return self._done.wait(timeout)

    def take(self) -> RawTable:
        """The table read (waiting for it), or the IngestionError / OSError the read raised."""
        self._done.wait()
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            raise RuntimeError("a read-ahead serves one read")
        table, error = outcome
        if error is not None:
            raise error
        return table


_AHEAD: dict[tuple, ReadAhead] = {}
_AHEAD_LOCK = threading.Lock()


def _ahead_key(p: Path, sheet: str | None, name: str, *limits: float) -> tuple | None:
    """Which read a read-ahead stands for: the file as it is now (:func:`_identity`), sheet, name and zip limits."""
    seen = _identity(p)
    return None if seen is None else (*seen, sheet, name, *limits)


def _take_ahead(key: tuple | None) -> ReadAhead | None:
    """The read started ahead for ``key``, removed: it serves one read."""
    with _AHEAD_LOCK:
        return _AHEAD.pop(key, None)


@contextmanager
def read_ahead(
    path: str | Path,
    sheet: str | None = None,
    *,
    name: str | None = None,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
) -> Iterator[ReadAhead | None]:
    """Start :func:`read_customer_file` of ``path`` on a background thread and yield it (None when an outer block
    already reads the file, or it cannot be looked at); within the block, the first call with the same arguments on
    an unchanged file takes that read's result (the table, or the error it raised) instead of reading again. On
    leaving the block a result nobody took is dropped.

    What it is for: a ``segmentation run`` spends its first seconds importing its libraries and setting up Dagster
    (about 4 s), all of it Python holding the GIL; pyarrow's and zlib's work and the hashing release it, so much of
    the file is read on the other core meanwhile (the xlsx stream holds the GIL most of the time, so an xlsx
    overlaps less). Meant for a file nothing rewrites (a staged copy); a file whose size, modification time or
    inode changed since is read again, from scratch. Nested blocks of one file read it once."""
    p = Path(path)
    name = name or p.name
    key = _ahead_key(p, sheet, name, max_uncompressed_bytes, max_compression_ratio)
    ahead: ReadAhead | None = None
    with _AHEAD_LOCK:
        if key is not None and key not in _AHEAD:
            ahead = _AHEAD[key] = ReadAhead()
    if ahead is not None:
        read = functools.partial(_read, p, sheet, name, max_uncompressed_bytes, max_compression_ratio)
        threading.Thread(target=ahead._run, args=(read,), name="read-ahead", daemon=True).start()
    try:
        yield ahead
    finally:
        if ahead is not None:
            with _AHEAD_LOCK:
                if _AHEAD.get(key) is ahead:
                    del _AHEAD[key]
