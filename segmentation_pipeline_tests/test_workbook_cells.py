"""The workbook reader converts cells column by column (``cell_text.cell_texts``, ``raw_table.assemble_sheets``):
every table it builds is the one the per-cell conversion built, cell for cell, row number for row number.

The reference is the reader as it was before (issue 14), kept here only: each calamine cell converted on its own
(:func:`_old_cell`, the former ``convert_rows``) and the rows assembled one by one (:func:`_reference`).
"""

from __future__ import annotations

import datetime as dt
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import python_calamine as pc
import xlsxwriter

from segmentation_pipeline.stages import readers_workbook
from segmentation_pipeline.stages.cell_text import cell_text, cell_texts
from segmentation_pipeline.stages.raw_table import find_header, unique_labels
from segmentation_pipeline.stages.readers_workbook import read_workbook

# Placeholders rewritten in the sheet XML afterwards: a workbook writer refuses NaN and infinities (a hand-edited
# sheet can hold them) and xlsxwriter writes 16 significant digits (Excel writes 17 where a value needs them).
EDITED = {4321.0625: "NaN", 8765.0625: "inf", -8765.0625: "-inf", 1111.0625: "0.30000000000000004",
          2222.0625: "33.333333333333336", 3333.0625: "1.0000000000000002"}  # fmt: skip

FLOATS = [
    0.1 + 0.2, 1e16, 1e16 + 2, -0.0, 0.0, 1e-7, 1e-4, 9.99e-5, 123456789.123, 2.0**53 + 2, 1e300, 5e-324, -1.5,
    2.0**63, -(2.0**63), 12345678901234567890.0, 1.0, 7.0, 2500.5, 0.1, 1e-05, 1e15 + 0.5, 33.333333333333336,
]  # fmt: skip
TEXTS = ["", "Zürich", "東京", "🙂 smile", " padded ", "007", "1e5", "1,234.5", "TRUE", "N/A", "x" * 300, "a\nb"]
DATES = [dt.date(1900, 3, 1), dt.date(1950, 1, 18), dt.date(2024, 2, 29), dt.date(9999, 12, 31)]
DATETIMES = [dt.datetime(2020, 5, 17, 13, 45, 30), dt.datetime(2020, 5, 17), dt.datetime(1999, 12, 31, 23, 59, 59)]
TIMES = [dt.time(7, 30), dt.time(23, 59, 59), dt.time(0, 0, 1)]
DURATIONS = [dt.timedelta(hours=30, minutes=5), dt.timedelta(days=3, seconds=7)]


def _old_cell(v: object) -> str | None:
    """One calamine cell as the workbook reader converted it before, cell by cell (the former ``convert_rows``)."""
    t = type(v)
    if t is str:
        return v or None
    if t is float:
        return str(int(v)) if v.is_integer() else repr(v)
    if t is dt.date:
        return v.isoformat()
    return cell_text(v)


def _reference(path: Path, sheets: list[str]) -> dict:
    """The table the per-cell reader built from ``sheets`` of ``path``: header searched in each sheet's first 30
    rows, blank rows dropped, rows padded to the widest, columns kept when they have a header or data."""
    wb = pc.CalamineWorkbook.from_path(str(path))
    header: list | None = None
    header_row = 0
    data, numbers, names = [], [], []
    for name in sheets:
        rows = [[_old_cell(v) for v in row] for row in wb.get_sheet_by_name(name).iter_rows()]
        h = find_header(rows[:30])
        if header is None:
            header, header_row = rows[h], h + 1
        for number, cells in enumerate(rows[h + 1 :], start=h + 2):
            if any(c is not None for c in cells):
                data.append(cells)
                numbers.append(number)
                names.append(name)
    wb.close()
    width = max(len(header), *map(len, data))
    header = header + [None] * (width - len(header))
    data = [cells + [None] * (width - len(cells)) for cells in data]
    keep = [j for j in range(width) if (header[j] or "").strip() or any(cells[j] is not None for cells in data)]
    headers = [header[j] or "" for j in keep]
    return {
        "headers": headers,
        "labels": unique_labels(headers, keep),
        "rows": [[cells[j] for j in keep] for cells in data],
        "numbers": numbers,
        "sheets": names,
        "header_row": header_row,
    }


def _write(ws, r: int, c: int, v: object, formats: dict) -> None:
    if isinstance(v, bool):
        ws.write_boolean(r, c, v)
    elif isinstance(v, dt.datetime):
        ws.write_datetime(r, c, v, formats["datetime"])
    elif isinstance(v, dt.date):
        ws.write_datetime(r, c, v, formats["date"])
    elif isinstance(v, dt.time):
        ws.write_datetime(r, c, v, formats["time"])
    elif isinstance(v, dt.timedelta):
        ws.write_number(r, c, v / dt.timedelta(days=1), formats["duration"])
    elif isinstance(v, str):
        ws.write_string(r, c, v) if v else ws.write_formula(r, c, '=""', None, "")  # a formula's empty text
    elif v is not None:
        ws.write_number(r, c, v)


def _tricky_workbook(path: Path, rows: int) -> Path:
    """Two sheets continuing one customer table (header on row 3 of the first, row 1 of the second, the second
    wider), a title and blank rows, columns of one type and columns of every type, NaN and infinities."""
    rng = random.Random(14)
    wb = xlsxwriter.Workbook(str(path))
    formats = {
        "date": wb.add_format({"num_format": "yyyy-mm-dd"}),
        "datetime": wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss.000"}),
        "time": wb.add_format({"num_format": "hh:mm:ss"}),
        "duration": wb.add_format({"num_format": "[h]:mm:ss"}),
    }
    header = ["CustomerID", "Gender", "DateofBirth", "ActualVolume", "Occupation", "isPep", "Mixed", "", "Notes"]
    anything = [*FLOATS, *TEXTS, *DATES, *DATETIMES, *TIMES, *DURATIONS, True, False, None]

    def row(i: int) -> list:
        return [
            1_000_000 + i,  # numbers only
            rng.choice(["M", "F", ""]),  # text with empty cells
            rng.choice(DATES),  # dates only
            rng.choice(FLOATS + [None, ""]),  # numbers with empty cells
            rng.choice(TEXTS[1:]),  # text only
            rng.choice([True, False, 1.0, 0.0, "1", None]),  # booleans and the numbers equal to them
            rng.choice(anything),  # every type
            rng.choice([None] * 9 + [42.0]),  # data under an empty header cell
            rng.choice(DATETIMES + TIMES + DURATIONS + [None]),
        ]

    first = wb.add_worksheet("Customers")
    first.write_string(0, 0, "Customer export, all branches")  # a title above the header; row 2 blank
    first.write_row(2, 0, header)
    r = 3
    for i in range(rows):
        if i % 17 == 5:
            r += 1  # a blank row
        for c, v in enumerate(row(i)):
            _write(first, r, c, v, formats)
        r += 1
    for c, placeholder in zip((0, 3, 6, 1, 4, 5), EDITED, strict=True):  # rewritten below
        first.write_number(r, c, placeholder)
    first.write_string(r + 2, 3, "")  # a row of nothing but an empty string: blank
    second = wb.add_worksheet("Customers (2)")
    second.write_row(0, 0, header)
    for r in range(1, rows // 3):
        for c, v in enumerate(row(rows + r)):
            _write(second, r, c, v, formats)
    second.write_string(5, 12, "beyond the header")  # wider than the first sheet
    wb.add_worksheet("Notes").write_string(0, 0, "no customers here")
    wb.close()
    return _rewrite_placeholders(path)


def _rewrite_placeholders(path: Path) -> Path:
    edited = path.with_name(f"edited_{path.name}")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(edited, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                for value, text in EDITED.items():
                    placeholder = f"<v>{value!r}</v>".encode()
                    assert placeholder in data
                    data = data.replace(placeholder, f"<v>{text}</v>".encode())
            zout.writestr(info, data)
    return edited


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tricky_workbook(tmp_path_factory.mktemp("workbook_cells") / "tricky.xlsx", rows=400)


@pytest.mark.parametrize("block_rows", [7, readers_workbook.BLOCK_ROWS])
def test_the_table_is_the_one_the_per_cell_reader_built(
    tricky: Path, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers_workbook, "BLOCK_ROWS", block_rows)  # 7: many blocks, cut anywhere
    raw = read_workbook(tricky, "tricky.xlsx", None, "0" * 64, "xlsx")
    expected = _reference(tricky, ["Customers", "Customers (2)"])
    assert raw.sheet == "Customers" and raw.sheets == ["Customers", "Customers (2)"]
    assert raw.header_row == expected["header_row"] == 3
    assert raw.headers == expected["headers"]
    assert list(raw.frame.columns) == expected["labels"]
    assert raw.source_rows.tolist() == expected["numbers"]
    assert raw.source_sheets.tolist() == expected["sheets"]
    assert raw.rows() == expected["rows"]
    assert raw.warnings == []
    # The reference itself reads what the workbook holds.
    assert expected["labels"] == [
        "CustomerID", "Gender", "DateofBirth", "ActualVolume", "Occupation", "isPep", "Mixed", "column_H", "Notes",
        "column_M",
    ]  # fmt: skip
    assert expected["numbers"][:6] == [4, 5, 6, 7, 8, 10]  # row 9 of the first sheet: blank
    texts = {cell for cells in expected["rows"] for cell in cells}
    assert {"0.30000000000000004", "10000000000000000", "1e-07", "0", "TRUE", "FALSE", "", "Zürich"} - texts == {""}
    assert {"nan", "inf", "-inf", "2024-02-29", "2020-05-17T13:45:30", "23:59:59", "30:05:00"} <= texts
    nan_row = [cells for cells, s in zip(expected["rows"], expected["sheets"], strict=True) if s == "Customers"][-1]
    edited = ["nan", "0.30000000000000004", None, "inf", "33.333333333333336", "1.0000000000000002", "-inf"]
    assert nan_row[:7] == edited


def test_a_workbook_the_stream_cannot_read_is_loaded_whole_and_reads_the_same(
    tricky: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A binary .xlsb is a zip the streaming reader refuses (StreamingNotSupported): its sheets are loaded whole, as
    every workbook was before the stream. Here an xlsx whose stream is refused in the same way: same table."""
    from python_calamine_plus import StreamingNotSupported

    class Unstreamable:
        def __init__(self, wb: object) -> None:
            self._wb = wb

        def __getattr__(self, attribute: str) -> object:
            return getattr(self._wb, attribute)

        def stream_sheet_by_name(self, name: str, **_: object) -> None:
            raise StreamingNotSupported("streaming is only supported for xlsx / xlsm (and xltx / xltm) workbooks")

    opened = readers_workbook._open_workbook
    monkeypatch.setattr(readers_workbook, "_open_workbook", lambda *args: Unstreamable(opened(*args)))
    raw = read_workbook(tricky, "tricky.xlsb", None, "0" * 64, "xlsx")
    expected = _reference(tricky, ["Customers", "Customers (2)"])
    assert raw.sheets == ["Customers", "Customers (2)"] and list(raw.frame.columns) == expected["labels"]
    assert raw.source_rows.tolist() == expected["numbers"] and raw.rows() == expected["rows"]


def test_a_header_alone_in_its_block_and_a_sheet_that_adds_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "short.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    one = wb.add_worksheet("Customers")
    one.write_row(0, 0, ["CustomerID", "Gender", "City"])
    for r in range(1, 30):
        one.write_row(r, 0, [r, "F", "LAHORE"])
    one.write_row(29, 0, [29, "M", "KARACHI"])  # the last row of the first block (the first 30 rows)
    one.write_row(30, 0, [30, "M", 12.5])
    two = wb.add_worksheet("Customers (2)")
    two.write_row(0, 0, ["CustomerID", "Gender", "City"])
    two.write_string(3, 1, "")  # only an empty string: no data rows
    wb.close()
    raw = read_workbook(path, "short.xlsx", None, "0" * 64, "xlsx")
    expected = _reference(path, ["Customers", "Customers (2)"])
    assert raw.rows() == expected["rows"] and raw.source_rows.tolist() == expected["numbers"] == list(range(2, 32))
    assert raw.sheets == ["Customers"] and raw.rows()[-1] == ["30", "M", "12.5"]


def test_cell_texts_reads_each_cell_as_the_per_cell_rule() -> None:
    columns = [
        FLOATS * 5,  # one type, more than 64 values, repeats
        [*TEXTS, *TEXTS],
        DATES + [dt.date(1, 1, 1), dt.date(999, 12, 31)],
        [True, 1.0, 1, False, 0.0, 0, "", True],  # equal keys to a hash table, different texts
        [dt.date(2020, 1, 1), dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, 0, 0, 0, 5), *TIMES, *DURATIONS],
        [float("nan"), float("inf"), float("-inf"), 2.5, "", 10**20, -(2**70)],
        [1.5, "x", dt.date(2020, 1, 1), None, True, dt.timedelta(seconds=-90)],
        [],
    ]
    for values in columns:
        column = np.empty(len(values), dtype=object)
        column[:] = values
        assert cell_texts(column).to_pylist() == [_old_cell(v) for v in values], values


ERROR_FORMULAS = {"#DIV/0!": "=1/0", "#N/A": "=NA()", "#VALUE!": '="a"+1', "#REF!": "=#REF!", "#NAME?": "=nosuch()",
                  "#NUM!": "=SQRT(-1)", "#NULL!": "=A1 B1"}  # fmt: skip


def test_a_table_away_from_column_a_with_error_cells_is_the_table_python_calamine_reads(tmp_path: Path) -> None:
    """An xlsx is streamed from column A (python-calamine-plus), which hands over an error cell's text; python-calamine
    loads the used range (here from column C) and gives an error cell as an empty string. The table is the same:
    the same rows and row numbers, an unnamed column keeps its own letter, and every error cell is an empty cell."""
    path = tmp_path / "offset.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Customers")
    ws.write_string(0, 3, "Export of 2026-11-30")  # a title in D1, row 2 blank
    ws.write_row(2, 2, ["CustomerID", "ExpVolume", "", "City"])  # C3:F3, E3 without a header
    for i, (error, formula) in enumerate(ERROR_FORMULAS.items()):
        ws.write_number(3 + i, 2, 100 + i)
        ws.write_formula(3 + i, 3, formula, None, error)
        if i % 2:
            ws.write_number(3 + i, 4, i)
        ws.write_string(3 + i, 5, "LAHORE")
    ws.write_row(3 + len(ERROR_FORMULAS), 2, [200, 12.5, None, "#DIV/0! is not a city"])
    wb.close()
    upstream = pc.CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Customers")
    assert upstream.start == (0, 2)  # the used range starts at column C
    raw = read_workbook(path, "offset.xlsx", None, "0" * 64, "xlsx")
    expected = _reference(path, ["Customers"])
    assert raw.header_row == expected["header_row"] == 3
    assert list(raw.frame.columns) == ["CustomerID", "ExpVolume", "column_E", "City"]
    assert raw.source_rows.tolist() == expected["numbers"] == list(range(4, 12))
    assert raw.rows() == expected["rows"]
    assert [row[1] for row in raw.rows()] == [None] * len(ERROR_FORMULAS) + ["12.5"]
    assert raw.rows()[-1][3] == "#DIV/0! is not a city"


def test_an_excel_error_value_is_an_empty_cell_and_nothing_else_is() -> None:
    values = [*ERROR_FORMULAS, "#GETTING_DATA", "#SPILL!", "#REF", "# N/A", "#n/a!", "N/A", "#DIV/0! x", "", "ok"]
    column = np.empty(len(values), dtype=object)
    column[:] = values
    assert cell_texts(column).to_pylist() == [None] * 9 + ["#REF", "# N/A", "#n/a!", "N/A", "#DIV/0! x", None, "ok"]


@pytest.mark.parametrize("options", [{"date_1904": True}, {"constant_memory": True}], ids=["1904-dates", "inline-text"])
def test_workbooks_written_other_ways_read_as_python_calamine_reads_them(tmp_path: Path, options: dict) -> None:
    """Dates counted from 1904 (old Mac Excel) and text written inline in the cells rather than in the shared
    strings table (streaming writers): the stream reads what python-calamine reads."""
    path = tmp_path / "other.xlsx"
    wb = xlsxwriter.Workbook(str(path), options)
    formats = {"date": wb.add_format({"num_format": "yyyy-mm-dd"}),
               "datetime": wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss.000"})}  # fmt: skip
    ws = wb.add_worksheet("Customers")
    ws.write_row(0, 0, ["CustomerID", "DateofBirth", "CustomerSince", "City"])
    for r in range(1, 40):
        for c, v in enumerate([r, DATES[r % len(DATES)], DATETIMES[r % len(DATETIMES)], TEXTS[r % len(TEXTS)]]):
            _write(ws, r, c, v, formats)
    wb.close()
    raw = read_workbook(path, "other.xlsx", None, "0" * 64, "xlsx")
    expected = _reference(path, ["Customers"])
    assert raw.rows() == expected["rows"] and raw.source_rows.tolist() == expected["numbers"]
    assert raw.rows()[2][1:3] == [DATES[3].isoformat(), "2020-05-17T13:45:30"]  # row 4: 9999-12-31, a time of day
