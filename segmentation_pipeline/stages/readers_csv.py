"""CSV reader: any file that is neither a workbook nor Parquet and decodes as text.

Encodings tried: utf-8, utf-8 with BOM, utf-16 with BOM (Excel's "Unicode text" export) and cp1252; the delimiter
(``,`` ``;`` or tab) is the one under which the first rows hold the best header. Row numbers are physical line
numbers (a record with an embedded newline is numbered by the line it starts on).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path

from segmentation_pipeline.stages.raw_table import (
    HEADER_SCAN_ROWS,
    NO_ID_COLUMN,
    NOT_A_TABLE,
    IngestionError,
    RawTable,
    assemble_table,
    find_header,
    score_header,
)

_TEXT_SAMPLE_BYTES = 64 * 1024
_CSV_DELIMITERS = (",", ";", "\t")


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


def read_csv(path: Path, name: str, sha: str) -> RawTable:
    """A text file as a table: encoding sniffed from its first 64 KiB, cp1252 when a later byte is not utf-8."""
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
        h = find_header(head)
        if h is None:
            continue
        score = (score_header(head[h])[1], len(head[h]))
        if best is None or score > best[0]:
            best = (score, delim)
    if best is None:
        if path.suffix.lower() not in {".csv", ".txt", ".tsv", ".tab"}:
            raise IngestionError(f"{NOT_A_TABLE} (text without a customer id header)", file=name)
        raise IngestionError(f"{NO_ID_COLUMN} in the first {HEADER_SCAN_ROWS} rows", file=name)
    records = _csv_records(path, encoding, best[1])
    return assemble_table(records, file=name, sheet=None, file_format="csv", sha256=sha)
