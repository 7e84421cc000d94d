"""What every reader of the ingestion stage returns or raises, and how a table is built from rows of text.

:class:`RawTable` is a customer table as read from a file; :class:`IngestionError` is the one-line refusal of a file.
Header detection (the first :data:`HEADER_SCAN_ROWS` rows are searched for the customer id header) and table
assembly (:func:`assemble_sheets`) are shared by the xlsx, xls and CSV readers; the Parquet reader, whose header is
its schema, shares the column labelling (:func:`unique_labels`). Rows reach the assembly as :class:`Block` s, a few
thousand rows as Arrow text columns at a time, so blank rows, padding and the columns kept are found per column,
not per cell.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from segmentation_pipeline.schema import COLUMN_ALIASES, ID_COLUMN, canonical_name
from segmentation_pipeline.stages.arrow_text import TEXT, compact_text, plain, text_array, text_series

# How many rows from the top of a sheet may hold title lines before the header.
HEADER_SCAN_ROWS = 30
# A header row is accepted outright when it has the customer id and at least this many known headers.
MIN_KNOWN_HEADERS = 3

NOT_A_TABLE = "not a workbook, CSV or Parquet file"
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

    ``frame``: data rows only; every column Arrow text (null = no value; see ``arrow_text.text_series``: one buffer
    per column, not a Python object per cell; :meth:`texts` gives a column as ``str``/``None``). Column
    labels are unique even ignoring case (DuckDB's column names are case-insensitive): the header text, a repeated
    header suffixed ``__2``, ``__3`` ("City", "CITY" -> "City", "CITY__2"); a column with data under an empty
    header cell is labelled ``column_<letter>`` (e.g. ``column_AH``). ``headers`` are the header cells of those same
    columns in order, duplicates kept, an empty header cell as ``""``.

    A workbook's customer table may continue over several sheets (same header row on each): ``sheet`` and
    ``header_row`` are then those of the first sheet, ``source_rows`` are numbered per sheet (each row's physical
    row in its own sheet) and ``source_sheets`` names each row's sheet. ``source_sheets`` is None for CSV and
    Parquet. ``warnings`` are one-sentence notes about the file the user must see (e.g. a sheet that is full).
    """

    frame: pd.DataFrame
    headers: list[str]
    source_file: str
    sheet: str | None
    header_row: int
    source_rows: np.ndarray
    sha256: str
    file_format: str  # "xlsx" | "xls" | "csv" | "parquet"
    source_sheets: np.ndarray | None = None  # per row: the sheet it was read from (workbooks only)
    warnings: list[str] = field(default_factory=list)

    def texts(self, label: str) -> list[str | None]:
        """One column's cells as Python text (None where the cell is empty)."""
        return plain(text_array(self.frame[label])).to_pylist()

    def rows(self, labels: list[str] | None = None) -> list[list[str | None]]:
        """The table (or the columns ``labels``) as rows of Python text, None where a cell is empty."""
        columns = [self.texts(label) for label in (self.frame.columns if labels is None else labels)]
        return [list(row) for row in zip(*columns, strict=True)]

    @property
    def sheets(self) -> list[str]:
        """The sheets the rows were read from, in workbook order (empty for CSV and Parquet)."""
        if self.source_sheets is None or not len(self.source_sheets):
            return [] if self.sheet is None else [self.sheet]
        return [str(s) for s in pd.unique(self.source_sheets)]


# ---------------------------------------------------------------------------------------------------------------
# Header detection and table assembly (shared by xlsx, xls and csv)
# ---------------------------------------------------------------------------------------------------------------


def score_header(cells: list[str | None]) -> tuple[bool, int]:
    """(has a customer id header, number of distinct known headers) for one candidate header row."""
    known = {canonical_name(c) for c in cells if c is not None and c.strip()}
    known.discard(None)
    return ID_COLUMN in known, len(known)


def find_header(rows: list[list[str | None]]) -> int | None:
    """Index in ``rows`` of the header: the first row with a customer id and >= 3 known headers, else the row
    with a customer id and the most known headers (earliest wins), else None."""
    best: tuple[int, int] | None = None  # (known, -index)
    for i, cells in enumerate(rows):
        has_id, known = score_header(cells)
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


def unique_labels(headers: list[str], column_indices: list[int]) -> list[str]:
    """Column labels: header text, "column_<letter>" for an empty header, repeats suffixed "__2", "__3".

    A repeat is judged ignoring case: DuckDB column names are case-insensitive, so "City" and "CITY" (or "isPep"
    and "ISPEP") would collide in the warehouse; the second becomes "CITY__2". Labels are distinct under both
    ``str.lower`` and ``str.casefold``; the header text itself is kept in :attr:`RawTable.headers`.
    """
    labels: list[str] = []
    seen: set[str] = set()  # every label taken, lower-cased and case-folded
    counts: dict[str, int] = {}  # last suffix used per case-folded base
    for header, idx in zip(headers, column_indices, strict=True):
        base = header if header.strip() else f"column_{excel_column_letter(idx)}"
        label = base
        if _taken(label, seen):
            key = base.casefold()
            k = counts.get(key, 1)
            while _taken(label, seen):
                k += 1
                label = f"{base}__{k}"
            counts[key] = k
        seen.add(label.lower())
        seen.add(label.casefold())
        labels.append(label)
    return labels


def _taken(label: str, seen: set[str]) -> bool:
    return label.lower() in seen or label.casefold() in seen


@dataclass(frozen=True)
class Block:
    """Consecutive rows of one sheet (or file) as text columns: ``numbers`` are their 1-based physical row numbers,
    ``columns`` one Arrow text array each (null: an empty cell), all as long as ``numbers``. The blocks of one sheet
    may differ in width (CSV lines do); a row is as wide as the widest row of its block, padded with empty cells.
    Build one with :meth:`of`, which holds a column whose values repeat as a dictionary (``compact_text``)."""

    numbers: np.ndarray
    columns: list[pa.Array]

    @classmethod
    def of(cls, numbers: np.ndarray, columns: list[pa.Array]) -> Block:
        return cls(numbers, [compact_text(c) for c in columns])

    def __len__(self) -> int:
        return len(self.numbers)

    def head(self, n: int) -> list[list[str | None]]:
        """The first ``n`` rows as Python text (None: empty)."""
        n = min(n, len(self))
        if not self.columns:
            return [[] for _ in range(n)]
        return [list(row) for row in zip(*(c.slice(0, n).to_pylist() for c in self.columns), strict=True)]

    def tail(self, start: int) -> Block:
        return Block(self.numbers[start:], [c.slice(start) for c in self.columns])

    def non_blank(self) -> Block:
        """The rows with at least one cell."""
        filled = np.zeros(len(self), dtype=bool)
        for c in self.columns:
            if c.null_count < len(c):
                filled |= c.is_valid().to_numpy(zero_copy_only=False)
        if filled.all():
            return self
        keep = pa.array(filled)
        return Block(self.numbers[filled], [c.filter(keep) for c in self.columns])


# Rows converted to text columns at a time: enough for Arrow's bulk work, few enough Python objects at once.
BLOCK_ROWS = 32_768


def text_blocks(rows: Iterable[tuple[int, list[str | None]]], size: int = BLOCK_ROWS) -> Iterator[Block]:
    """(row number, cells) rows of text -> blocks of ``size`` rows (a CSV file's records)."""
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, size)):
        numbers = np.fromiter((n for n, _ in chunk), dtype=np.int64, count=len(chunk))
        lengths = {len(c) for _, c in chunk}
        cells = np.empty((len(chunk), max(lengths)), dtype=object)
        if len(lengths) > 1:  # lines of differing length: padded with empty cells
            for i, (_, c) in enumerate(chunk):
                cells[i, : len(c)] = c
        else:
            cells[:] = [c for _, c in chunk]
        yield Block.of(numbers, [pa.array(cells[:, j], type=TEXT) for j in range(cells.shape[1])])


def assemble_table(
    rows: Iterator[tuple[int, list[str | None]]],
    *,
    file: str,
    sheet: str | None,
    file_format: str,
    sha256: str,
    col_offset: int = 0,
) -> RawTable:
    """Find the header in the first rows, collect the non-blank data rows and build the RawTable.

    ``rows`` yields (1-based physical row number, cells of text or None). ``col_offset`` is the 0-based sheet column
    of each row's first cell (for "column_<letter>" labels).
    """
    parts = [(sheet, text_blocks(rows))]
    return assemble_sheets(parts, file=file, file_format=file_format, sha256=sha256, col_offset=col_offset)


def assemble_sheets(
    parts: Iterable[tuple[str | None, Iterable[Block]]],
    *,
    file: str,
    file_format: str,
    sha256: str,
    col_offset: int = 0,
) -> RawTable:
    """One table from one or more sheets that each hold the same header row: (sheet, blocks) per sheet, in order.

    Each sheet's blocks are its rows from the top, blank rows included (the header is searched in the first
    :data:`HEADER_SCAN_ROWS` rows); the table's header is the first sheet's, every row keeps its own sheet and row
    number, and blank rows are dropped. A later sheet without data rows adds nothing; the table as a whole needs
    at least one data row. ``parts`` is consumed lazily, one sheet (and one block) at a time.
    """
    data: list[Block] = []
    counts: list[tuple[str | None, int]] = []  # rows taken from each sheet, in order
    first: tuple[str | None, int, list[str | None]] | None = None  # (sheet, header row, header cells)
    for sheet, blocks in parts:
        before = len(data)
        header_row, header_cells = _collect_rows(iter(blocks), file=file, sheet=sheet, data=data)
        counts.append((sheet, sum(len(b) for b in data[before:])))
        if first is None:
            first = (sheet, header_row, header_cells)
    if first is None:
        raise ValueError("assemble_sheets needs at least one sheet")
    sheet, header_row, header_cells = first

    where = f"sheet {sheet!r}" if sheet is not None else "file"
    if not data:
        raise IngestionError(f"{where} has a header but no data rows", file=file, sheet=sheet, row=header_row)

    # Rows shorter than the widest (CSV lines, sheets of different widths) are padded with empty cells.
    width = max(len(header_cells), *(len(b.columns) for b in data))
    header_cells = list(header_cells) + [None] * (width - len(header_cells))
    source = np.concatenate([b.numbers for b in data])
    n = len(source)

    # Keep a column when it has a header, or when a header-less column holds data (labelled "column_<letter>").
    filled = [any(j < len(b.columns) and b.columns[j].null_count < len(b) for b in data) for j in range(width)]
    keep = [j for j in range(width) if (header_cells[j] is not None and header_cells[j].strip()) or filled[j]]
    headers = [header_cells[j] or "" for j in keep]
    labels = unique_labels(headers, [j + col_offset for j in keep])
    columns = {}
    for label, j in zip(labels, keep, strict=True):
        chunks = [b.columns[j] if j < len(b.columns) else pa.nulls(len(b), TEXT) for b in data]
        if len({c.type for c in chunks}) > 1:  # dictionaries in some blocks, plain text in others
            chunks = [c.cast(TEXT) for c in chunks]
        columns[label] = text_series(pa.chunked_array(chunks))
        for b in data:  # each column's blocks are let go once it is one array: peak is the text plus one column
            if j < len(b.columns):
                b.columns[j] = None
    del data
    frame = pd.DataFrame(columns)
    source_sheets = None
    if sheet is not None:
        source_sheets = np.empty(n, dtype=object)
        start = 0
        for name, count in counts:
            source_sheets[start : start + count] = name
            start += count
    return RawTable(
        frame=frame,
        headers=headers,
        source_file=file,
        sheet=sheet,
        header_row=header_row,
        source_rows=np.asarray(source, dtype=np.int64),
        sha256=sha256,
        file_format=file_format,
        source_sheets=source_sheets,
    )


def _collect_rows(
    blocks: Iterator[Block], *, file: str, sheet: str | None, data: list[Block]
) -> tuple[int, list[str | None]]:
    """Find the header in the first rows of one sheet and append its non-blank data rows to ``data``, as blocks.
    Returns (header row, header cells)."""
    taken: list[Block] = []  # the blocks that hold the first HEADER_SCAN_ROWS rows
    head: list[list[str | None]] = []
    numbers: list[int] = []
    for block in blocks:
        taken.append(block)
        head.extend(block.head(HEADER_SCAN_ROWS - len(head)))
        numbers.extend(block.numbers[: HEADER_SCAN_ROWS - len(numbers)].tolist())
        if len(head) >= HEADER_SCAN_ROWS:
            break

    h = find_header(head)
    if h is None:
        if not any(any(c is not None for c in cells) for cells in head):
            raise IngestionError("sheet is empty" if sheet is not None else "file has no rows", file=file, sheet=sheet)
        raise IngestionError(f"{NO_ID_COLUMN} in the first {HEADER_SCAN_ROWS} rows", file=file, sheet=sheet)
    header_row, header_cells = numbers[h], head[h]

    skip = h + 1  # the rows down to the header are not data
    for block in itertools.chain(taken, blocks):
        if skip >= len(block):
            skip -= len(block)
            continue
        if skip:
            block, skip = block.tail(skip), 0
        block = block.non_blank()
        if len(block):
            data.append(block)
    return header_row, header_cells
