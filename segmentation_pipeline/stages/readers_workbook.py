"""Workbook readers: xlsx / xlsm (a zip), streamed with python-calamine-plus (a binary .xlsb, which it cannot stream,
loaded whole by it), and legacy .xls (an OLE2 compound file), loaded with python-calamine.

A zip is checked for zip bombs from its central directory first, before any byte is decompressed; then every entry
is inflated once, streamed and counted, to prove the directory told the truth (:func:`check_zip`).
An OLE2 file is a password-protected OOXML workbook (refused) or a legacy ``.xls`` (:func:`classify_ole`). Without a
sheet name, the customer sheet is the worksheet with a customer id header and the most known headers; an export too
long for one sheet continues on further sheets, so every other worksheet with the very same header row (same headers
in the same columns) and the same visibility is read with it as one table, in workbook order. Row numbers are 1-based
physical rows of each row's own sheet, i.e. what Excel shows in its row margin. A sheet whose last used row is the
format's last row (Excel's 1,048,576; 65,536 in a legacy .xls) was probably cut off: the table carries a warning.

An xlsx sheet's rows come straight from the compressed file a row at a time, as Python values (python-calamine loads
a whole sheet into its own memory first: 2.5 GB and twice the time for a full sheet); a sheet without a customer
header is left after its first rows. The rows are taken ``raw_table.BLOCK_ROWS`` at a time and converted column by
column (``cell_text.cell_texts``) to Arrow text, so no Python text is made per cell. The streaming reader gives an
error cell (``#DIV/0!``) as its text and a whole number as an ``int`` where python-calamine gives an empty string
and a ``float``: both read as the same text (``test_workbook_cells.py`` proves the tables equal).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segmentation_pipeline.stages.cell_text import cell_texts
from segmentation_pipeline.stages.raw_table import (
    BLOCK_ROWS,
    HEADER_SCAN_ROWS,
    NO_ID_COLUMN,
    NOT_A_TABLE,
    Block,
    IngestionError,
    RawTable,
    assemble_sheets,
    find_header,
    score_header,
)

# Zip-bomb guard. Real xlsx parts are XML that deflates 8-30x (a 100k-row, 33-column export measures ~8.4x;
# sheets of repeated empty styled cells reach ~60-100x). DEFLATE's own ceiling is ~1032x, which is what a bomb
# built from repeated bytes approaches. 200x leaves a wide margin above any spreadsheet seen while still refusing
# every deflate bomb, and it is checked from the zip's central directory alone, before any byte is inflated.
DEFAULT_MAX_COMPRESSION_RATIO = 200.0
DEFAULT_MAX_UNCOMPRESSED_BYTES = 2_000_000_000
# Small parts ([Content_Types].xml, styles) can have odd ratios; per-entry ratio is only judged above this size.
_PER_ENTRY_RATIO_MIN_BYTES = 1_000_000

PASSWORD_PROTECTED = "workbook is password-protected; remove the password and export again"
NOT_XLSX = "not a valid xlsx workbook"
CORRUPT_XLSX = f"{NOT_XLSX} (corrupt zip)"
CORRUPT_XLS = "not a readable legacy .xls workbook"
UNREADABLE_SHEET = "{what}: the sheet cannot be read ({detail})"
LYING_ZIP = NOT_XLSX + " (an entry is {} than its zip directory says); refused"
_STREAM_CHUNK = 1 << 20  # bytes inflated per read when the entries are checked

# The last row of a sheet: a sheet used down to it was most likely cut off by the program that wrote it.
EXCEL_MAX_ROWS = 1_048_576  # xlsx / xlsm (Excel 2007 and later)
XLS_MAX_ROWS = 65_536  # legacy .xls (BIFF8)
FULL_SHEET = (
    "the sheet is full ({rows:,} rows, {what}'s maximum): the export was probably cut off; "
    "check that every customer is in the file"
)


def check_zip(path: Path, name: str, max_uncompressed_bytes: int, max_compression_ratio: float) -> None:
    """Refuse corrupt zips, zips that are not workbooks and zip bombs.

    The sizes the central directory states are judged first, before any byte is inflated; then
    :func:`check_zip_entries` inflates every entry to prove them true.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise IngestionError(CORRUPT_XLSX, file=name) from None
    names = {i.filename for i in infos}
    if not names & {"xl/workbook.xml", "xl/workbook.bin"}:
        raise IngestionError(f"{NOT_A_TABLE} (a zip archive without xl/workbook.xml)", file=name)
    total = sum(i.file_size for i in infos)
    compressed = max(sum(i.compress_size for i in infos), 1)
    if total > max_uncompressed_bytes:
        raise IngestionError(
            f"workbook would expand to {total / 1e6:,.0f} MB, over the {max_uncompressed_bytes / 1e6:,.0f} MB limit "
            "(possible zip bomb); refused without decompressing",
            file=name,
        )
    worst = total / compressed
    worst_part = None
    for i in infos:
        if i.file_size >= _PER_ENTRY_RATIO_MIN_BYTES:
            ratio = i.file_size / max(i.compress_size, 1)
            if ratio > worst:
                worst, worst_part = ratio, i.filename
    if worst > max_compression_ratio:
        part = f" in {worst_part}" if worst_part else ""
        raise IngestionError(
            f"workbook compression ratio {worst:,.0f}:1{part} exceeds {max_compression_ratio:,.0f}:1 "
            "(possible zip bomb); refused without decompressing",
            file=name,
        )
    check_zip_entries(path, name, max_uncompressed_bytes)


def check_zip_entries(path: Path, name: str, max_uncompressed_bytes: int) -> None:
    """Inflate every entry, streamed in 1 MiB chunks and counted, and refuse the workbook unless each entry holds
    exactly the bytes (and the CRC-32) its central directory states, before calamine reads it.

    The limits in :func:`check_zip` judge the sizes the directory states; a directory that understates them would
    let a bomb through. No entry is inflated beyond one byte more than its stated size, so a lying directory is
    caught having inflated at most ``max_uncompressed_bytes`` plus one byte per entry. The actual total is held to
    ``max_uncompressed_bytes`` as it grows too, so the check is safe on its own.
    """
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                # zipfile stops at the size the directory states and then checks the CRC, so a larger entry would
                # look merely corrupt: it is asked for one byte more, and the CRC is checked here instead.
                probe = copy.copy(info)
                probe.file_size = info.file_size + 1
                del probe.CRC
                size, crc = 0, 0
                with zf.open(probe) as entry:
                    while chunk := entry.read(_STREAM_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if size > info.file_size:
                            raise IngestionError(LYING_ZIP.format("larger"), file=name)
                        if total > max_uncompressed_bytes:  # only when the stated total was not judged first
                            raise IngestionError(
                                f"workbook expands to more than the {max_uncompressed_bytes / 1e6:,.0f} MB limit "
                                "(possible zip bomb); refused",
                                file=name,
                            )
                        crc = zlib.crc32(chunk, crc)
                if size < info.file_size:
                    raise IngestionError(LYING_ZIP.format("smaller"), file=name)
                if crc != info.CRC:
                    raise IngestionError(f"{CORRUPT_XLSX}: {info.filename} fails its CRC-32 check", file=name)
    except IngestionError:
        raise
    except Exception as exc:  # whatever zipfile or zlib raise (bad header, bad data, encryption): the one line
        raise IngestionError(f"{CORRUPT_XLSX}: {_zip_error_text(exc)}", file=name) from None


def _zip_error_text(exc: BaseException) -> str:
    """zipfile's and zlib's complaint as words, without the exception class."""
    text = " ".join(str(exc).split())
    return text or "unreadable entry"


def classify_ole(path: Path, name: str) -> str:
    """Return "xls" for a legacy workbook; raise for an encrypted workbook or another OLE2 document."""
    try:
        import msoffcrypto  # optional: a test dependency; the byte scan below is the fallback
    except ImportError:  # pragma: no cover - msoffcrypto-tool is installed in dev/test
        msoffcrypto = None
    if msoffcrypto is not None:
        try:
            with open(path, "rb") as fh:
                office = msoffcrypto.OfficeFile(fh)
                encrypted = office.is_encrypted()
                kind = getattr(office, "format", None)
        except Exception:  # unknown OLE2 document (msoffcrypto raises FileFormatError) or a broken one
            encrypted, kind = None, None
        if encrypted:
            raise IngestionError(PASSWORD_PROTECTED, file=name)
        if kind == "xls97":
            return "xls"
        if kind == "ooxml":  # an OLE2 OOXML container is always the encrypted form
            raise IngestionError(PASSWORD_PROTECTED, file=name)
        if kind is not None:
            raise IngestionError(f"{NOT_A_TABLE} (an Office {kind} document)", file=name)
    raw = path.read_bytes()
    if "EncryptedPackage".encode("utf-16-le") in raw or "EncryptionInfo".encode("utf-16-le") in raw:
        raise IngestionError(PASSWORD_PROTECTED, file=name)
    if "Workbook".encode("utf-16-le") in raw or "Book".encode("utf-16-le") in raw:
        return "xls"
    raise IngestionError(f"{NOT_A_TABLE} (an OLE2 document without a workbook stream)", file=name)


def _open_workbook(path: Path, name: str, file_format: str):
    """The workbook, opened with the streaming reader (python-calamine-plus) for xlsx / xlsm, python-calamine for a
    legacy .xls; a misnamed file is sniffed by its content instead of its suffix."""
    if file_format == "xls":
        import python_calamine as pc
    else:
        import python_calamine_plus as pc

    try:
        suffix_ok = path.suffix.lower() in ({".xls"} if file_format == "xls" else {".xlsx", ".xlsm", ".xltx", ".xltm"})
        if suffix_ok:
            return pc.CalamineWorkbook.from_path(str(path))
        with open(path, "rb") as fh:
            return pc.CalamineWorkbook.from_filelike(fh)
    except pc.PasswordError:
        raise IngestionError(PASSWORD_PROTECTED, file=name) from None
    except Exception as exc:
        raise IngestionError(f"{_corrupt(file_format)}: {type(exc).__name__}: {exc}", file=name) from None


def _name(member: object) -> str:
    """An enum member's name (python-calamine and its streaming fork each have their own enum classes)."""
    return str(member).rpartition(".")[2]


def _corrupt(file_format: str) -> str:
    return CORRUPT_XLSX if file_format == "xlsx" else CORRUPT_XLS


def _sheet_rows(wb, sheet: str, name: str, file_format: str) -> tuple[Iterator[list], int]:
    """A worksheet's rows from physical row 1 down, as lists of calamine's Python values, and the column the first
    value of a row is in (0 = column A).

    xlsx / xlsm: streamed from the file a row at a time, from column A (the workbook's cells are never all in
    memory, and a sheet without a customer header is left after its first rows). Legacy .xls, and a binary .xlsb
    (a zip the stream cannot read): the sheet loaded whole, its rows starting at the used range's first column
    (iter_rows pads the rows above the used range with empty rows, so row i is physical row i + 1). A sheet
    calamine cannot read is one line naming file and sheet, whenever the fault is met."""
    from python_calamine_plus import StreamingNotSupported

    try:
        if file_format != "xls":
            try:
                return _reading(iter(wb.stream_sheet_by_name(sheet)), name, sheet, file_format), 0
            except StreamingNotSupported:
                pass
        loaded = wb.get_sheet_by_name(sheet)
    except Exception as exc:
        raise _unreadable_sheet(exc, name, sheet, file_format) from None
    if loaded.start is None:  # no cell at all
        return iter(()), 0
    return _reading(loaded.iter_rows(), name, sheet, file_format), loaded.start[1]


def _reading(rows: Iterator[list], name: str, sheet: str, file_format: str) -> Iterator[list]:
    try:
        yield from rows
    except Exception as exc:
        raise _unreadable_sheet(exc, name, sheet, file_format) from None


def _unreadable_sheet(exc: Exception, name: str, sheet: str, file_format: str) -> IngestionError:
    """A sheet calamine cannot read (its XML broken or cut short: the stream refuses a sheet that ends before its
    data closes, so no row after the fault is silently missing), in one line with calamine's own words."""
    what = NOT_XLSX if file_format == "xlsx" else CORRUPT_XLS
    detail = " ".join(str(exc).split()) or "no reason given"
    return IngestionError(UNREADABLE_SHEET.format(what=what, detail=detail), file=name, sheet=sheet)


def _header_key(col_offset: int, head: list[list[str | None]], h: int) -> tuple:
    """What makes two sheets one table: the header cells at the same columns (trailing empty cells ignored)."""
    cells = list(head[h])
    while cells and cells[-1] is None:
        cells.pop()
    return col_offset, tuple(cells)


def _sheet_blocks(rows: Iterator[list], head: Block | None) -> Iterator[Block]:
    """A sheet's rows as blocks of text columns: ``head`` (its first rows, already taken from ``rows`` and converted;
    None when the sheet has none), then the rest :data:`BLOCK_ROWS` at a time. Each block's cells are converted
    column by column (:func:`cell_texts`): no Python text is made per cell, only the values calamine hands over.
    The rows down to the header are a block of their own: their text cells would make every column a mix of
    types."""
    first = 1
    if head is not None:
        yield head
        first += len(head)
    while window := list(itertools.islice(rows, BLOCK_ROWS)):
        yield _block(window, first)
        first += len(window)


def _block(rows: list[list], first: int) -> Block:
    """Calamine rows (physical rows ``first``, ``first + 1``...) as a block of text columns."""
    width = max(map(len, rows), default=0)
    cells = np.empty((len(rows), width), dtype=object)
    if any(len(r) != width for r in rows):  # rows are as wide as the sheet's used range; a hand-made file may not be
        cells[:] = ""
        for i, r in enumerate(rows):
            cells[i, : len(r)] = r
    else:
        cells[:] = rows
    numbers = np.arange(first, first + len(rows), dtype=np.int64)
    return Block.of(numbers, [cell_texts(column) for column in np.ascontiguousarray(cells.T)])


def _read_if_header(wb, sheet: str, name: str, file_format: str) -> tuple[tuple, int, int, list[Block]] | None:
    """A worksheet with a customer id header in its first rows: (header key, known headers, rows read, its rows as
    blocks); None for one without, which is left after its first rows."""
    rows, col_offset = _sheet_rows(wb, sheet, name, file_format)
    head_rows = list(itertools.islice(rows, HEADER_SCAN_ROWS))
    head_block = _block(head_rows, 1) if head_rows else None
    head = head_block.head(HEADER_SCAN_ROWS) if head_block is not None else []
    h = find_header(head)
    if h is None:
        return None
    _, known = score_header(head[h])
    blocks = list(_sheet_blocks(rows, head_block))
    height = int(blocks[-1].numbers[-1]) if blocks else 0
    return _header_key(col_offset, head, h), known, height, blocks


def read_workbook(path: Path, name: str, sheet: str | None, sha: str, file_format: str) -> RawTable:
    """The customer table of an xlsx/xls workbook: ``sheet`` by name (that sheet only), else the best-scoring
    worksheet together with the worksheets that continue it (same header row, same visibility), in workbook order."""
    wb = _open_workbook(path, name, file_format)
    try:
        worksheets = [m.name for m in wb.sheets_metadata if _name(m.typ) in ("WorkSheet", "MacroSheet")] or list(
            wb.sheet_names
        )
        if sheet is not None:
            if sheet not in wb.sheet_names:
                available = ", ".join(repr(s) for s in wb.sheet_names)
                raise IngestionError(f"sheet {sheet!r} not found; available sheets: {available}", file=name)
            chosen = sheet
            rows, col_offset = _sheet_rows(wb, chosen, name, file_format)
            head = list(itertools.islice(rows, HEADER_SCAN_ROWS))
            if len(head) < HEADER_SCAN_ROWS and not any(v != "" and v is not None for row in head for v in row):
                raise IngestionError("sheet is empty", file=name, sheet=chosen)
            parts = [(chosen, _sheet_blocks(rows, _block(head, 1) if head else None))]
        else:
            # Score every worksheet's header; the customer sheet is the one with a customer id header and the most
            # known headers (ties: visible before hidden, then more rows, then workbook order). A sheet with a
            # header is read (converted to text) as its first rows are scanned, so the sheets that continue the
            # customer sheet are read once; a sheet without one is left after its first rows.
            visible = {m.name: _name(m.visible) == "Visible" for m in wb.sheets_metadata}
            best_key: tuple | None = None
            chosen = None
            header_keys: dict[str, tuple] = {}
            offsets: dict[str, int] = {}
            read: dict[str, list[Block]] = {}
            for pos, candidate in enumerate(worksheets):
                found = _read_if_header(wb, candidate, name, file_format)
                if found is None:
                    continue
                header_key, known, height, read[candidate] = found
                header_keys[candidate] = (header_key, visible.get(candidate, True))
                offsets[candidate] = header_key[0]
                key = (known, visible.get(candidate, True), height, -pos)
                if best_key is None or key > best_key:
                    best_key, chosen = key, candidate
            if chosen is None:
                checked = ", ".join(repr(s) for s in worksheets)
                if len(worksheets) == 1:
                    raise IngestionError(
                        f"{NO_ID_COLUMN} in the first {HEADER_SCAN_ROWS} rows", file=name, sheet=worksheets[0]
                    )
                raise IngestionError(f"{NO_ID_COLUMN} in any sheet (checked {checked})", file=name)
            col_offset = offsets[chosen]
            group = [c for c in worksheets if header_keys.get(c) == header_keys[chosen]]
            read = {c: read[c] for c in group}  # a sheet with another header is not part of the table
            parts = ((c, read.pop(c)) for c in group)

        table = assemble_sheets(parts, file=name, file_format=file_format, sha256=sha, col_offset=col_offset)
        warnings = _full_sheet_warnings(table, file_format)
        return dataclasses.replace(table, warnings=warnings) if warnings else table
    finally:
        wb.close()


def _full_sheet_warnings(table: RawTable, file_format: str) -> list[str]:
    """A warning for the last sheet of the table when its last used row is the format's last row: the rows that
    did not fit were probably dropped. (A full sheet that the table continues after is not warned about.)"""
    max_rows, what = (XLS_MAX_ROWS, "Excel 97-2003") if file_format == "xls" else (EXCEL_MAX_ROWS, "Excel")
    if table.source_sheets is None or not len(table.source_rows):
        return []
    last_sheet = table.source_sheets[-1]
    if int(table.source_rows[-1]) < max_rows:
        return []
    message = FULL_SHEET.format(rows=max_rows, what=what)
    return [f"{table.source_file}, sheet {last_sheet!r}: {message}"]
