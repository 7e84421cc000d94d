"""File-reading stage: turn a customer export (xlsx / legacy xls / CSV / Parquet) into a lossless table of text.

Nothing here interprets values. Every cell becomes the text it shows in the file (or ``None`` when empty) so the
cleaning stage decides, with full provenance (file, sheet, row), what "1,000", " 2500 " or "N/A" mean. A file the
pipeline cannot read raises :class:`IngestionError` whose ``str()`` is one line naming the file and, where they
apply, the sheet, column and row.

Format is decided by the file's bytes, not its name:

* ``PK\\x03\\x04`` -> zip -> xlsx/xlsm (checked for zip bombs before anything is decompressed, then read with
  python-calamine);
* ``D0 CF 11 E0`` -> OLE2 -> a password-protected OOXML workbook (refused) or a legacy ``.xls`` (read with
  calamine, ``file_format="xls"``);
* ``PAR1`` -> Parquet (pyarrow);
* anything else that decodes as text -> CSV (utf-8 / utf-8 BOM / utf-16 BOM / cp1252; delimiter , ; or tab).

Row numbers (``header_row``, ``source_rows``) are 1-based physical rows of the sheet, i.e. what Excel shows in its
row margin. For CSV they are physical line numbers (a record with an embedded newline is numbered by the line it
starts on). Parquet has no rows on paper: the table is numbered as if it were a sheet with the header on row 1, so
the first data row is row 2.
"""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import hashlib
import itertools
import math
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segmentation_pipeline.schema import COLUMN_ALIASES, ID_COLUMN, canonical_name

__all__ = ["IngestionError", "RawTable", "file_sha256", "read_customer_file"]

# How many rows from the top of a sheet may hold title lines before the header.
HEADER_SCAN_ROWS = 30
# A header row is accepted outright when it has the customer id and at least this many known headers.
MIN_KNOWN_HEADERS = 3

# Zip-bomb guard. Real xlsx parts are XML that deflates 8-30x (a 100k-row, 33-column export measures ~8.4x;
# sheets of repeated empty styled cells reach ~60-100x). DEFLATE's own ceiling is ~1032x, which is what a bomb
# built from repeated bytes approaches. 200x leaves a wide margin above any spreadsheet seen while still refusing
# every deflate bomb, and it is checked from the zip's central directory alone, before any byte is inflated.
DEFAULT_MAX_COMPRESSION_RATIO = 200.0
DEFAULT_MAX_UNCOMPRESSED_BYTES = 2_000_000_000
# Small parts ([Content_Types].xml, styles) can have odd ratios; per-entry ratio is only judged above this size.
_PER_ENTRY_RATIO_MIN_BYTES = 1_000_000

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PARQUET_MAGIC = b"PAR1"
_TEXT_SAMPLE_BYTES = 64 * 1024
_CSV_DELIMITERS = (",", ";", "\t")

NOT_A_TABLE = "not a workbook, CSV or Parquet file"
PASSWORD_PROTECTED = "workbook is password-protected; remove the password and export again"
CORRUPT_XLSX = "not a valid xlsx workbook (corrupt zip)"
_ID_ALIASES = ", ".join(COLUMN_ALIASES[ID_COLUMN])
NO_ID_COLUMN = f"no customer id column (looked for {_ID_ALIASES})"


class IngestionError(Exception):
    """A file the pipeline refuses. ``str(err)`` is ONE line naming file, sheet, column and row where they apply.

    >>> str(IngestionError("customer id is blank", file="c.xlsx", sheet="Customers", column="CustomerID", row=17))
    "c.xlsx, sheet 'Customers', column 'CustomerID', row 17: customer id is blank"
    """

    def __init__(
        self,
        message: str,
        *,
        file: str,
        sheet: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.message = " ".join(str(message).split())  # one line, whatever the caller passed
        self.file = file
        self.sheet = sheet
        self.column = column
        self.row = row
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = [self.file]
        if self.sheet is not None:
            where.append(f"sheet {self.sheet!r}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.row is not None:
            where.append(f"row {self.row}")
        return " ".join(f"{', '.join(where)}: {self.message}".split())

    def __reduce__(self):  # keep keyword-only attributes through pickling (multiprocessing, Dagster)
        return (_rebuild_error, (self.message, self.file, self.sheet, self.column, self.row))


def _rebuild_error(message: str, file: str, sheet: str | None, column: str | None, row: int | None) -> IngestionError:
    return IngestionError(message, file=file, sheet=sheet, column=column, row=row)


@dataclass(frozen=True, eq=False)
class RawTable:
    """One customer table as read from a file: text cells plus where each row came from.

    ``frame``: data rows only; every column dtype object holding ``str`` or ``None``. Column labels are unique:
    the header text, a repeated header suffixed ``__2``, ``__3``; a column with data under an empty header cell is
    labelled ``column_<letter>`` (e.g. ``column_AH``). ``headers`` are the header cells of those same columns in
    order, duplicates kept, an empty header cell as ``""``.
    """

    frame: pd.DataFrame
    headers: list[str]
    source_file: str
    sheet: str | None
    header_row: int
    source_rows: np.ndarray
    sha256: str
    file_format: str  # "xlsx" | "xls" | "csv" | "parquet"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Cell -> lossless text
# ---------------------------------------------------------------------------------------------------------------

_date = _dt.date
_datetime = _dt.datetime


def _cell_text(v: object) -> str | None:
    """The text of one non-``str`` cell value (``str`` cells are handled inline by the callers, for speed)."""
    t = type(v)
    if t is float:
        if v != v:  # NaN: only Parquet/pandas produce it, and it means "missing" there
            return None
        if math.isinf(v):
            return "INF" if v > 0 else "-INF"
        return str(int(v)) if v.is_integer() else repr(v)
    if t is bool:
        return "TRUE" if v else "FALSE"
    if v is None:
        return None
    if t is str:
        return v or None
    if t is int:
        return str(v)
    if isinstance(v, _datetime):  # before date: datetime is a date subclass
        if v.microsecond:
            return v.isoformat(timespec="microseconds")
        return v.isoformat(timespec="seconds")
    if isinstance(v, _date):
        return v.isoformat()
    if isinstance(v, _dt.time):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return _timedelta_text(v)
    if isinstance(v, float):  # numpy floats
        return _cell_text(float(v))
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace") or None
    return str(v)


def _timedelta_text(v: _dt.timedelta) -> str:
    """A duration cell ([h]:mm:ss) as "H:MM:SS" with the total hours, like Excel shows it."""
    total = v.total_seconds()
    sign = "-" if total < 0 else ""
    seconds = abs(total)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{int(secs):02d}" if float(secs).is_integer() else f"{secs:09.6f}"
    return f"{sign}{int(hours)}:{int(minutes):02d}:{sec_text}"


def _convert_rows(rows: Iterable[list]) -> Iterator[list[str | None]]:
    """Calamine rows -> rows of text/None. The hot loop: str, float and date cells are converted inline.

    Calamine never yields NaN/inf (a workbook cannot hold them), so floats need no finiteness check here.
    """
    _str, _float, _int, _repr, _d, conv = str, float, int, repr, _date, _cell_text
    for r in rows:
        yield [
            (v or None)
            if (t := type(v)) is _str
            else (
                (_str(_int(v)) if v.is_integer() else _repr(v))
                if t is _float
                else (v.isoformat() if t is _d else conv(v))
            )
            for v in r
        ]


# ---------------------------------------------------------------------------------------------------------------
# Header detection and table assembly (shared by xlsx, xls and csv)
# ---------------------------------------------------------------------------------------------------------------


def _score_header(cells: list[str | None]) -> tuple[bool, int]:
    """(has a customer id header, number of distinct known headers) for one candidate header row."""
    known = {canonical_name(c) for c in cells if c is not None and c.strip()}
    known.discard(None)
    return ID_COLUMN in known, len(known)


def _find_header(rows: list[list[str | None]]) -> int | None:
    """Index in ``rows`` of the header: the first row with a customer id and >= 3 known headers, else the row
    with a customer id and the most known headers (earliest wins), else None."""
    best: tuple[int, int] | None = None  # (known, -index)
    for i, cells in enumerate(rows):
        has_id, known = _score_header(cells)
        if not has_id:
            continue
        if known >= MIN_KNOWN_HEADERS:
            return i
        if best is None or known > best[0]:
            best = (known, i)
    return None if best is None else best[1]


def excel_column_letter(index: int) -> str:
    """0-based column index -> Excel letters (0 -> "A", 33 -> "AH")."""
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _unique_labels(headers: list[str], column_indices: list[int]) -> list[str]:
    """Column labels: header text, "column_<letter>" for an empty header, repeats suffixed "__2", "__3"."""
    labels: list[str] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for header, idx in zip(headers, column_indices, strict=True):
        base = header if header.strip() else f"column_{excel_column_letter(idx)}"
        label = base
        if label in seen:
            k = counts.get(base, 1)
            while label in seen:
                k += 1
                label = f"{base}__{k}"
            counts[base] = k
        seen.add(label)
        labels.append(label)
    return labels


def _assemble(
    rows: Iterator[tuple[int, list[str | None]]],
    *,
    file: str,
    sheet: str | None,
    file_format: str,
    sha256: str,
    col_offset: int = 0,
) -> RawTable:
    """Find the header in the first rows, collect the non-blank data rows and build the RawTable.

    ``rows`` yields (1-based physical row number, converted cells). ``col_offset`` is the 0-based sheet column
    of each row's first cell (for "column_<letter>" labels).
    """
    head: list[tuple[int, list[str | None]]] = []
    for item in rows:
        head.append(item)
        if len(head) >= HEADER_SCAN_ROWS:
            break

    h = _find_header([cells for _, cells in head])
    if h is None:
        if not any(any(c is not None for c in cells) for _, cells in head):
            raise IngestionError("sheet is empty" if sheet is not None else "file has no rows", file=file, sheet=sheet)
        raise IngestionError(f"{NO_ID_COLUMN} in the first {HEADER_SCAN_ROWS} rows", file=file, sheet=sheet)
    header_row, header_cells = head[h]

    data: list[list[str | None]] = []
    source: list[int] = []
    width = len(header_cells)
    ragged = False
    for number, cells in itertools.chain(head[h + 1 :], rows):
        for c in cells:
            if c is not None:
                break
        else:
            continue  # fully blank row: dropped
        data.append(cells)
        source.append(number)
        if len(cells) != width:
            ragged = True
            width = max(width, len(cells))
    del head

    where = f"sheet {sheet!r}" if sheet is not None else "file"
    if not data:
        raise IngestionError(f"{where} has a header but no data rows", file=file, sheet=sheet, row=header_row)

    if ragged:  # CSV lines of differing length: pad with None
        arr = np.full((len(data), width), None, dtype=object)
        for i, cells in enumerate(data):
            arr[i, : len(cells)] = cells
    else:
        arr = np.empty((len(data), width), dtype=object)
        arr[:] = data
    del data
    header_cells = list(header_cells) + [None] * (width - len(header_cells))

    # Keep a column when it has a header, or when a header-less column holds data (labelled "column_<letter>").
    keep = [
        j
        for j in range(width)
        if (header_cells[j] is not None and header_cells[j].strip()) or any(v is not None for v in arr[:, j])
    ]
    headers = [header_cells[j] or "" for j in keep]
    labels = _unique_labels(headers, [j + col_offset for j in keep])
    if len(keep) != width:
        arr = arr[:, keep]
    frame = pd.DataFrame(arr, columns=pd.Index(labels, dtype=object), dtype=object, copy=False)
    return RawTable(
        frame=frame,
        headers=headers,
        source_file=file,
        sheet=sheet,
        header_row=header_row,
        source_rows=np.asarray(source, dtype=np.int64),
        sha256=sha256,
        file_format=file_format,
    )


# ---------------------------------------------------------------------------------------------------------------
# Workbooks (xlsx via zip, legacy xls via OLE2)
# ---------------------------------------------------------------------------------------------------------------


def _check_zip(path: Path, name: str, max_uncompressed_bytes: int, max_compression_ratio: float) -> None:
    """Refuse corrupt zips, zips that are not workbooks and zip bombs, from the central directory alone."""
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


def _classify_ole(path: Path, name: str) -> str:
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
    import python_calamine as pc

    try:
        suffix_ok = path.suffix.lower() in ({".xls"} if file_format == "xls" else {".xlsx", ".xlsm", ".xltx", ".xltm"})
        if suffix_ok:
            return pc.CalamineWorkbook.from_path(str(path))
        with open(path, "rb") as fh:  # misnamed file: let calamine sniff the content instead of the suffix
            return pc.CalamineWorkbook.from_filelike(fh)
    except pc.PasswordError:
        raise IngestionError(PASSWORD_PROTECTED, file=name) from None
    except Exception as exc:
        what = CORRUPT_XLSX if file_format == "xlsx" else "not a readable legacy .xls workbook"
        raise IngestionError(f"{what}: {type(exc).__name__}: {exc}", file=name) from None


def _load_sheet(wb, sheet: str, name: str, file_format: str):
    try:
        return wb.get_sheet_by_name(sheet)
    except Exception as exc:
        what = CORRUPT_XLSX if file_format == "xlsx" else "not a readable legacy .xls workbook"
        raise IngestionError(f"{what}: {type(exc).__name__}: {exc}", file=name, sheet=sheet) from None


def _sheet_head(sh) -> list[list[str | None]]:
    """The first HEADER_SCAN_ROWS physical rows of a loaded sheet, converted to text."""
    if sh.start is None:
        return []
    return list(_convert_rows(sh.to_python(skip_empty_area=False, nrows=HEADER_SCAN_ROWS)))


def _read_workbook(path: Path, name: str, sheet: str | None, sha: str, file_format: str) -> RawTable:
    import python_calamine as pc

    wb = _open_workbook(path, name, file_format)
    try:
        worksheets = [
            m.name for m in wb.sheets_metadata if m.typ in (pc.SheetTypeEnum.WorkSheet, pc.SheetTypeEnum.MacroSheet)
        ] or list(wb.sheet_names)
        if sheet is not None:
            if sheet not in wb.sheet_names:
                available = ", ".join(repr(s) for s in wb.sheet_names)
                raise IngestionError(f"sheet {sheet!r} not found; available sheets: {available}", file=name)
            chosen = sheet
            sh = cand_sh = _load_sheet(wb, chosen, name, file_format)
        else:
            # Score every worksheet's header; the customer sheet is the one with a customer id header and the most
            # known headers (ties: visible before hidden, then more rows, then workbook order).
            visible = {m.name: m.visible == pc.SheetVisibleEnum.Visible for m in wb.sheets_metadata}
            best_key: tuple | None = None
            chosen, sh, cand_sh = None, None, None
            for pos, candidate in enumerate(worksheets):
                cand_sh = _load_sheet(wb, candidate, name, file_format)
                head = _sheet_head(cand_sh)
                h = _find_header(head)
                if h is None:
                    continue
                _, known = _score_header(head[h])
                key = (known, visible.get(candidate, True), cand_sh.height, -pos)
                if best_key is None or key > best_key:
                    best_key, chosen, sh = key, candidate, cand_sh
            if sh is None:
                checked = ", ".join(repr(s) for s in worksheets)
                if len(worksheets) == 1:
                    raise IngestionError(
                        f"{NO_ID_COLUMN} in the first {HEADER_SCAN_ROWS} rows", file=name, sheet=worksheets[0]
                    )
                raise IngestionError(f"{NO_ID_COLUMN} in any sheet (checked {checked})", file=name)
        if sh.start is None:
            raise IngestionError("sheet is empty", file=name, sheet=chosen)
        col_offset = sh.start[1]
        # iter_rows pads the rows above the used range with empty rows, so row i is physical row i + 1; columns
        # start at the used range's first column (col_offset).
        rows = enumerate(_convert_rows(sh.iter_rows()), start=1)
        # Only the iterator keeps calamine's in-memory sheet alive now, so it is freed as soon as the last row is
        # converted, before the DataFrame is built: peak memory is one copy of the cells, not two.
        sh = cand_sh = None  # noqa: F841
        return _assemble(rows, file=name, sheet=chosen, file_format=file_format, sha256=sha, col_offset=col_offset)
    finally:
        wb.close()


# ---------------------------------------------------------------------------------------------------------------
# CSV / text
# ---------------------------------------------------------------------------------------------------------------


def _sniff_text(path: Path, name: str) -> str:
    """The encoding to read a text file with, or raise "not a workbook, CSV or Parquet file"."""
    with open(path, "rb") as fh:
        sample = fh.read(_TEXT_SAMPLE_BYTES)
    if sample.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # Excel's "Unicode text" export: UTF-16 with BOM, tab-separated
    elif b"\x00" in sample:
        raise IngestionError(NOT_A_TABLE, file=name)
    else:
        encoding = "utf-8"
    text = None
    for enc in (encoding, "cp1252") if encoding == "utf-8" else (encoding,):
        try:
            text = codecs.getincrementaldecoder(enc)().decode(sample, final=False)
            encoding = enc
            break
        except UnicodeDecodeError:
            continue
    if text is None:
        raise IngestionError(NOT_A_TABLE, file=name)
    if text and sum(1 for ch in text if ch < " " and ch not in "\t\r\n\f") > max(1, len(text) // 100):
        raise IngestionError(NOT_A_TABLE, file=name)
    start = text.lstrip()[:2048].lower()
    if start.startswith("<") and ("<html" in start or "<table" in start or "<?xml" in start or "<!doctype" in start):
        raise IngestionError(
            f"{NOT_A_TABLE} (HTML/XML saved under a spreadsheet name); open it in Excel and save as .xlsx", file=name
        )
    return encoding


def _csv_records(path: Path, encoding: str, delimiter: str) -> Iterator[tuple[int, list[str | None]]]:
    """(physical line number, cells) for each CSV record; empty fields -> None, text otherwise untouched."""
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        last = 0
        for record in reader:
            yield last + 1, [f or None for f in record]
            last = reader.line_num


def _read_csv(path: Path, name: str, sha: str) -> RawTable:
    encoding = _sniff_text(path, name)
    try:
        try:
            return _read_csv_with(path, name, sha, encoding)
        except UnicodeDecodeError:
            if encoding != "utf-8":
                raise
        return _read_csv_with(path, name, sha, "cp1252")  # utf-8 sample, but a later byte is not utf-8
    except UnicodeDecodeError:
        raise IngestionError(f"{NOT_A_TABLE} (text in an unknown encoding)", file=name) from None
    except csv.Error as exc:
        raise IngestionError(f"not a readable CSV file: {exc}", file=name) from None


def _read_csv_with(path: Path, name: str, sha: str, encoding: str) -> RawTable:
    # Delimiter: the one under which the first rows contain the best header.
    best: tuple[tuple[int, int], str] | None = None
    for delim in _CSV_DELIMITERS:
        head = []
        for _, cells in _csv_records(path, encoding, delim):
            head.append(cells)
            if len(head) >= HEADER_SCAN_ROWS:
                break
        h = _find_header(head)
        if h is None:
            continue
        score = (_score_header(head[h])[1], len(head[h]))
        if best is None or score > best[0]:
            best = (score, delim)
    if best is None:
        if path.suffix.lower() not in {".csv", ".txt", ".tsv", ".tab"}:
            raise IngestionError(f"{NOT_A_TABLE} (text without a customer id header)", file=name)
        raise IngestionError(f"{NO_ID_COLUMN} in the first {HEADER_SCAN_ROWS} rows", file=name)
    records = _csv_records(path, encoding, best[1])
    return _assemble(records, file=name, sheet=None, file_format="csv", sha256=sha)


# ---------------------------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------------------------


def _arrow_column_text(col) -> list[str | None]:
    """One pyarrow ChunkedArray -> list of lossless text/None (same rules as workbook cells)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [v or None for v in col.to_pylist()]
    if pa.types.is_integer(t) or pa.types.is_date(t) or pa.types.is_decimal(t):
        return col.cast(pa.string()).to_pylist()
    if pa.types.is_dictionary(t):
        return _arrow_column_text(pc.cast(col, t.value_type))
    if pa.types.is_timestamp(t):
        out = []
        for v in col.to_pylist():
            if v is None:
                out.append(None)
            elif hasattr(v, "to_pydatetime") and getattr(v, "nanosecond", 0):
                out.append(v.isoformat())
            else:
                out.append(_cell_text(v.to_pydatetime() if hasattr(v, "to_pydatetime") else v))
        return out
    return [_cell_text(v) for v in col.to_pylist()]


def _read_parquet(path: Path, name: str, sha: str) -> RawTable:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        all_names = pf.schema_arrow.names
        # pandas' saved index is not data; columns are taken by position because names may repeat.
        positions = [k for k, n in enumerate(all_names) if not str(n).startswith("__index_level_")]
        names = [all_names[k] for k in positions]
    except Exception as exc:
        raise IngestionError(f"not a valid Parquet file: {exc}", file=name) from None
    headers = [str(n) for n in names]
    if ID_COLUMN not in {canonical_name(h) for h in headers}:
        raise IngestionError(NO_ID_COLUMN, file=name)
    nrows = pf.metadata.num_rows
    if nrows == 0:
        raise IngestionError("file has a header but no data rows", file=name, row=1)
    arr = np.empty((nrows, len(headers)), dtype=object)
    offset = 0
    try:
        for rg in range(pf.num_row_groups):  # one row group at a time keeps arrow's copy bounded
            table = pf.read_row_group(rg)
            n = table.num_rows
            for j, k in enumerate(positions):
                arr[offset : offset + n, j] = _arrow_column_text(table.column(k))
            offset += n
            del table
    except Exception as exc:
        raise IngestionError(f"not a valid Parquet file: {exc}", file=name) from None
    nonblank = pd.notna(arr).any(axis=1)
    source = np.arange(2, nrows + 2, dtype=np.int64)
    if not nonblank.all():
        arr, source = arr[nonblank], source[nonblank]
    if len(arr) == 0:
        raise IngestionError("file has a header but no data rows", file=name, row=1)
    labels = _unique_labels(headers, list(range(len(headers))))
    frame = pd.DataFrame(arr, columns=pd.Index(labels, dtype=object), dtype=object, copy=False)
    return RawTable(
        frame=frame,
        headers=headers,
        source_file=name,
        sheet=None,
        header_row=1,
        source_rows=source,
        sha256=sha,
        file_format="parquet",
    )


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------


def read_customer_file(
    path: str | Path,
    sheet: str | None = None,
    *,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
) -> RawTable:
    """Read a customer export into a :class:`RawTable` of lossless text, or raise :class:`IngestionError`.

    ``sheet`` picks a workbook sheet by name; when None the sheet with a customer id header and the most known
    headers is used. ``sheet`` is ignored for CSV and Parquet. The zip limits apply to xlsx only.
    """
    p = Path(path)
    name = p.name
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
        _check_zip(p, name, max_uncompressed_bytes, max_compression_ratio)
        return _read_workbook(p, name, sheet, sha, "xlsx")
    if magic.startswith(_EMPTY_ZIP_MAGIC):
        raise IngestionError(f"{NOT_A_TABLE} (an empty zip archive)", file=name)
    if magic.startswith(_OLE_MAGIC):
        kind = _classify_ole(p, name)
        return _read_workbook(p, name, sheet, sha, kind)
    if magic.startswith(_PARQUET_MAGIC):
        return _read_parquet(p, name, sha)
    return _read_csv(p, name, sha)
