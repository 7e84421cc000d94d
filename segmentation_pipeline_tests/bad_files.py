"""Generators for test input files: good, messy and hostile customer exports, written into a given directory.

Nothing binary is committed: every fixture is produced here, deterministically, in well under a second each
(the 300 MB zip bomb takes ~1.5 s; pass a smaller ``uncompressed_mb`` when that matters). Each ``write_*``
function takes a directory and returns the path it wrote. ``write_all`` writes them all.

The expected cell texts live next to the data (``GOOD_ROWS`` / ``good_rows_as_text``) so tests can compare what
the reader returns with what was written.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from segmentation_pipeline.schema import HEADER_2022, HEADER_2023

# The 2023 export repeats DateofBirth; real files carry the copy at the end.
HEADER_2023_DUP: tuple[str, ...] = (*HEADER_2023, "DateofBirth")


@dataclass(frozen=True)
class Formula:
    """A formula cell with the cached value Excel would have stored."""

    formula: str
    value: object


@dataclass(frozen=True)
class StyledBlank:
    """A formatted but empty cell (what Excel leaves behind after clearing contents)."""


BLANK = StyledBlank()

Cell = object  # str | int | float | bool | dt.date | dt.datetime | Formula | StyledBlank | None


def _good_record(i: int) -> dict[str, Cell]:
    occupations = ["Pension", "Private/NGO Employee", "Housewife", "Casual worker"]
    accounts = ["Aasan Account- Current", "First  Pension Account", "STAFF SALARY ACCOUNT", "Mashal Saving Account"]
    provinces = ["Punjab", "Sindh", "KPK", "Balochistan"]
    cities = ["LAHORE", "KARACHI", "PESHAWAR", "QUETTA"]
    channels = ["ATM", "MobileApp", "Internet Banking", None]
    dob = dt.date(1950, 1, 1) + dt.timedelta(days=1371 * i + 17)
    return {
        "CustomerID": 1000001 + i,
        "SegmentID": 1.0 if i % 4 else None,
        "FocusTypeID": 3,
        "Occupation": occupations[i % 4],
        "DateofBirth": dob,
        "Gender": "MF"[i % 2],
        "isPep": int(i == 2),
        "HighIncomeHW": int(i == 5),
        "ExpVolume": 1234567.0 if i == 1 else 30000 * (i + 1),
        "AccountType": accounts[i % 4],
        "FinancingType": None,
        "SubscribedChannels": channels[i % 4],
        "Nationality": "PK",
        "PlaceofBirth": None,
        "Residence": "PK" if i != 6 else None,
        "Province": provinces[i % 4],
        "City": cities[i % 4],
        "CustomerSince": dt.date(2005, 3, 1) + dt.timedelta(days=400 * i),
        "Industry": None,
        "IncorporatedSince": None,
        "ActualVolume": [2500.5, 0.1, 1e-05, 123456.78, 0.0, 99.99, 7.5, 1e14][i % 8],
        "AvgBalance": None,
        "NumAlerts": i % 3,
        "NonFacetoFaceUsage": 7 * i,
        "fundRemitUsage": None,
        "onlineFTusage": 2 * i,
        "CashUsage": 1500.25 * i,
        "CTRMatch": int(i == 3),
        "PreviouslyReported": 0,
        "ModelID": 12,
        "AssessmentType": 1,
        "PrevAssessmentID": None,
        "AccountCategory": 2,
    }


GOOD_ROW_COUNT = 8


def good_rows(n: int = GOOD_ROW_COUNT) -> list[list[Cell]]:
    """Typed data rows under HEADER_2023_DUP (the duplicate DateofBirth equals the first)."""
    out = []
    for i in range(n):
        rec = _good_record(i)
        out.append([rec[h] for h in HEADER_2023] + [rec["DateofBirth"]])
    return out


def cell_text(v: Cell) -> str | None:
    """The text the reader must produce for a typed cell written by these generators."""
    if isinstance(v, Formula):
        return cell_text(v.value)
    if v is None or isinstance(v, StyledBlank) or v == "":
        return None
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, dt.datetime):
        return v.isoformat(timespec="seconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def good_rows_as_text(n: int = GOOD_ROW_COUNT) -> list[list[str | None]]:
    return [[cell_text(v) for v in row] for row in good_rows(n)]


# ---------------------------------------------------------------------------------------------------------------
# Low-level writers
# ---------------------------------------------------------------------------------------------------------------


def write_xlsx(
    path: Path,
    sheets: dict[str, Sequence[Sequence[Cell]]],
    *,
    first_row: int = 0,
    first_col: int = 0,
    constant_memory: bool = False,
) -> Path:
    """Write sheets of typed cells with xlsxwriter; each sheet's rows start at (first_row, first_col), 0-based.

    Strings are always written as strings (never auto-converted); dates get a date format, datetimes a
    date-time format, so calamine hands them back as date/datetime.
    """
    import xlsxwriter

    path = Path(path)
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": constant_memory})
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    dt_fmt = wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    blank_fmt = wb.add_format({"bg_color": "#FFFFCC"})
    for name, rows in sheets.items():
        ws = wb.add_worksheet(name)
        for r, row in enumerate(rows, start=first_row):
            for c, v in enumerate(row, start=first_col):
                _write_cell(ws, r, c, v, date_fmt, dt_fmt, blank_fmt)
    wb.close()
    return path


def _write_cell(ws, r: int, c: int, v: Cell, date_fmt, dt_fmt, blank_fmt) -> None:
    if v is None:
        return
    if isinstance(v, StyledBlank):
        ws.write_blank(r, c, None, blank_fmt)
    elif isinstance(v, Formula):
        ws.write_formula(r, c, v.formula, None, v.value)
    elif isinstance(v, bool):
        ws.write_boolean(r, c, v)
    elif isinstance(v, int | float):
        ws.write_number(r, c, v)
    elif isinstance(v, dt.datetime):
        ws.write_datetime(r, c, v, dt_fmt)
    elif isinstance(v, dt.date):
        ws.write_datetime(r, c, v, date_fmt)
    else:
        ws.write_string(r, c, str(v))


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Cell]], *, delimiter: str = ",",
              encoding: str = "utf-8", preamble: Sequence[str] = ()) -> Path:  # fmt: skip
    """Rows as CSV text (cells formatted with ``cell_text``), optionally after free-text preamble lines."""
    path = Path(path)
    with open(path, "w", encoding=encoding, newline="") as fh:
        for line in preamble:
            fh.write(line + "\r\n")
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if (t := cell_text(v)) is None else t for v in row])
    return path


def write_parquet(path: Path, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> Path:
    """Rows as Parquet with natural arrow types per column (int64, double, date32, string); dup names kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*rows, strict=True))
    arrays = [pa.array(list(col)) for col in columns]
    arrays = [a.cast(pa.string()) if pa.types.is_null(a.type) else a for a in arrays]
    table = pa.Table.from_arrays(arrays, names=list(header))
    pq.write_table(table, path)
    return Path(path)


# ---------------------------------------------------------------------------------------------------------------
# Good and messy exports
# ---------------------------------------------------------------------------------------------------------------


def write_good_xlsx(directory: Path, name: str = "customers_2023.xlsx") -> Path:
    """Clean 2023 export: one sheet 'Customers', header on row 1 (duplicated DateofBirth), 8 typed data rows."""
    return write_xlsx(Path(directory) / name, {"Customers": [list(HEADER_2023_DUP), *good_rows()]})


def write_good_csv(directory: Path, name: str = "customers_2023.csv") -> Path:
    """The good workbook's data as comma-separated utf-8 text."""
    return write_csv(Path(directory) / name, HEADER_2023_DUP, good_rows())


def write_good_parquet(directory: Path, name: str = "customers_2023.parquet") -> Path:
    """The good workbook's data as Parquet with typed columns."""
    return write_parquet(Path(directory) / name, HEADER_2023_DUP, good_rows())


def write_semicolon_cp1252_csv(directory: Path, name: str = "customers_semicolon.csv") -> Path:
    """European-Excel CSV: cp1252, ';'-delimited, two title lines above the header, an accented value."""
    rows = good_rows(3)
    rows[0][HEADER_2023.index("Occupation")] = "Employé"
    return write_csv(
        Path(directory) / name, HEADER_2023_DUP, rows, delimiter=";", encoding="cp1252",
        preamble=["Customer risk summary", "Exported 2024-01-05"],
    )  # fmt: skip


def write_2022_xlsx(directory: Path, name: str = "customers_2022.xlsx") -> Path:
    """2022 export: spelled-out headers ("Is PEP", "Expected Transaction Volume", ...), sheet 'Sheet1'."""
    rows = []
    for i in range(5):
        rec = _good_record(i)
        rows.append([
            rec["CustomerID"], rec["Occupation"], rec["DateofBirth"], rec["Gender"], rec["isPep"],
            rec["HighIncomeHW"], rec["ExpVolume"], rec["AccountType"], rec["SubscribedChannels"], rec["Province"],
            rec["City"],
        ])  # fmt: skip
    return write_xlsx(Path(directory) / name, {"Sheet1": [list(HEADER_2022), *rows]})


# The messy workbook: header on row 4 of the second sheet, data from row 5, a blank row 8, unlabeled notes column.
MESSY_SHEET = "Customers"
MESSY_HELPER_SHEET = "Helper"
MESSY_HEADER_ROW = 4
MESSY_SOURCE_ROWS = (5, 6, 7, 9, 10, 11, 12, 13)  # row 8 is blank inside the data and is dropped
MESSY_NOTES_COLUMN = len(HEADER_2023_DUP)  # 0-based: the column right after the duplicate DateofBirth (AI)

# (CustomerID, ExpVolume, DateofBirth, isPep, SubscribedChannels) per data row, and the texts expected back.
_MESSY_VALUES: list[tuple[Cell, Cell, Cell, Cell, Cell]] = [
    (1000001, "1,000", dt.date(1980, 1, 2), "Y", "ATM, MobileApp"),
    ("0001002", " 2500 ", "1980-01-02", "N", "Internet Banking,ATM"),
    (1000003.0, "N/A", 29221, "Yes", "ATM"),
    (1000004, "-", "02/01/1980", "No", ""),
    (1000005, "", dt.datetime(1980, 1, 2, 13, 45, 30), True, "MobileApp, Internet Banking, ATM"),
    (1000006, 1234567.0, dt.date(1975, 6, 30), False, None),
    (1000007, 2500.5, "30-Jun-1975", 1, "ATM"),
    (1000008, 30000, 27210.0, 0, "MobileApp"),
]
MESSY_EXPECTED: list[dict[str, str | None]] = [
    {"CustomerID": "1000001", "ExpVolume": "1,000", "DateofBirth": "1980-01-02", "isPep": "Y",
     "SubscribedChannels": "ATM, MobileApp"},
    {"CustomerID": "0001002", "ExpVolume": " 2500 ", "DateofBirth": "1980-01-02", "isPep": "N",
     "SubscribedChannels": "Internet Banking,ATM"},
    {"CustomerID": "1000003", "ExpVolume": "N/A", "DateofBirth": "29221", "isPep": "Yes", "SubscribedChannels": "ATM"},
    {"CustomerID": "1000004", "ExpVolume": "-", "DateofBirth": "02/01/1980", "isPep": "No",
     "SubscribedChannels": None},
    {"CustomerID": "1000005", "ExpVolume": None, "DateofBirth": "1980-01-02T13:45:30", "isPep": "TRUE",
     "SubscribedChannels": "MobileApp, Internet Banking, ATM"},
    {"CustomerID": "1000006", "ExpVolume": "1234567", "DateofBirth": "1975-06-30", "isPep": "FALSE",
     "SubscribedChannels": None},
    {"CustomerID": "1000007", "ExpVolume": "2500.5", "DateofBirth": "30-Jun-1975", "isPep": "1",
     "SubscribedChannels": "ATM"},
    {"CustomerID": "1000008", "ExpVolume": "30000", "DateofBirth": "27210", "isPep": "0",
     "SubscribedChannels": "MobileApp"},
]  # fmt: skip


def write_messy_xlsx(directory: Path, name: str = "customers_messy.xlsx") -> Path:
    """Helper sheet of formulas FIRST, then 'Customers' with three title rows above the header (row 4),
    numbers/dates/flags in every spelling, a blank row inside the data, an unlabeled notes column, and
    formatted-but-blank trailing rows and columns."""
    header = list(HEADER_2023_DUP)
    width = len(header)
    idx = {h: header.index(h) for h in ("CustomerID", "ExpVolume", "DateofBirth", "isPep", "SubscribedChannels")}
    base = good_rows()
    data: list[list[Cell]] = []
    for k, (cid, exp, dob, pep, chan) in enumerate(_MESSY_VALUES):
        row = list(base[k])
        row[idx["CustomerID"]] = cid
        row[idx["ExpVolume"]] = exp
        row[idx["DateofBirth"]] = dob
        row[idx["isPep"]] = pep
        row[idx["SubscribedChannels"]] = chan
        row.append("check KYC" if k == 2 else None)  # data in a column whose header cell is empty
        row.extend([BLANK, BLANK])  # formatted blank trailing columns
        data.append(row)
    blank_row: list[Cell] = [None] * (width + 3)
    trailing = [[BLANK] * (width + 3) for _ in range(3)]
    sheet = [
        ["Customer Risk Summary - Q4 2023"],
        ["Generated 2024-01-05 by the AML unit", None, None, "CONFIDENTIAL"],
        [],
        header,
        *data[:3],
        blank_row,
        *data[3:],
        *trailing,
    ]
    helper = [["CustomerID", "IdList"]] + [
        [1000001 + k, Formula(f'=CONCATENATE(A{k + 2},",")', f"{1000001 + k},")] for k in range(len(data))
    ]
    return write_xlsx(Path(directory) / name, {MESSY_HELPER_SHEET: helper, MESSY_SHEET: sheet})


# ---------------------------------------------------------------------------------------------------------------
# Cleaning-level fixtures (readable; the problems are for the cleaning stage to find)
# ---------------------------------------------------------------------------------------------------------------


def _good_with(directory: Path, name: str, edit: Callable[[list[list[Cell]]], None]) -> Path:
    rows = good_rows()
    edit(rows)
    return write_xlsx(Path(directory) / name, {"Customers": [list(HEADER_2023_DUP), *rows]})


def write_conflicting_ids(directory: Path, name: str = "conflicting_ids.xlsx") -> Path:
    """Customer 1000002 appears twice (sheet rows 3 and 10) with a different DateofBirth and Gender."""

    def edit(rows: list[list[Cell]]) -> None:
        dup = list(rows[1])
        dup[HEADER_2023.index("DateofBirth")] = dt.date(1991, 7, 7)
        dup[len(HEADER_2023)] = dt.date(1991, 7, 7)
        dup[HEADER_2023.index("Gender")] = "F" if dup[HEADER_2023.index("Gender")] == "M" else "M"
        rows.append(dup)

    return _good_with(directory, name, edit)


def write_negative_volume(directory: Path, name: str = "negative_volume.xlsx") -> Path:
    """Customer 1000004 (sheet row 5) has ExpVolume -5000 and ActualVolume -1.5."""

    def edit(rows: list[list[Cell]]) -> None:
        rows[3][HEADER_2023.index("ExpVolume")] = -5000
        rows[3][HEADER_2023.index("ActualVolume")] = -1.5

    return _good_with(directory, name, edit)


def write_future_birth_date(directory: Path, name: str = "future_birth_date.xlsx") -> Path:
    """Customer 1000003 (sheet row 4) was born on 2090-01-01."""

    def edit(rows: list[list[Cell]]) -> None:
        rows[2][HEADER_2023.index("DateofBirth")] = dt.date(2090, 1, 1)
        rows[2][len(HEADER_2023)] = dt.date(2090, 1, 1)

    return _good_with(directory, name, edit)


# ---------------------------------------------------------------------------------------------------------------
# Files the reader must refuse
# ---------------------------------------------------------------------------------------------------------------


def write_random_bytes(directory: Path, name: str = "random_bytes.xlsx") -> Path:
    """4 KiB of (seeded) random bytes under an .xlsx name."""
    path = Path(directory) / name
    path.write_bytes(random.Random(20240105).randbytes(4096))
    return path


def write_renamed_text(directory: Path, name: str = "meeting_notes.xlsx") -> Path:
    """A plain prose text file renamed to .xlsx."""
    path = Path(directory) / name
    path.write_text(
        "Meeting notes, 5 January\n\nAgenda: review the risk model; agree on thresholds.\n"
        "Action: Ali to send the customer export by Friday.\n",
        encoding="utf-8",
    )
    return path


def write_empty_file(directory: Path, name: str = "empty.xlsx") -> Path:
    path = Path(directory) / name
    path.write_bytes(b"")
    return path


PASSWORD = "Secret123"


def write_password_protected(directory: Path, name: str = "protected.xlsx") -> Path:
    """The good workbook, encrypted with msoffcrypto-tool (ECMA-376 agile) -> an OLE2 file."""
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = write_good_xlsx(directory, name=f".plain_{name}")
    path = Path(directory) / name
    with open(plain, "rb") as src, open(path, "wb") as out:
        OOXMLFile(src).encrypt(PASSWORD, out)
    plain.unlink()
    return path


def write_no_customer_id(directory: Path, name: str = "no_customer_id.xlsx") -> Path:
    """The good data without its CustomerID column (sheet 'Customers')."""
    header = list(HEADER_2023_DUP)[1:]
    rows = [row[1:] for row in good_rows()]
    return write_xlsx(Path(directory) / name, {"Customers": [header, *rows]})


def write_header_only(directory: Path, name: str = "header_only.xlsx") -> Path:
    """The 2023 header on row 1 of 'Customers' and nothing else."""
    return write_xlsx(Path(directory) / name, {"Customers": [list(HEADER_2023_DUP)]})


def write_zip_bomb(directory: Path, name: str = "zip_bomb.xlsx", uncompressed_mb: int = 300) -> Path:
    """A structurally valid xlsx whose sheet XML is ``uncompressed_mb`` MB (mostly spaces, ~1000:1 deflated).

    Written by streaming 1 MiB chunks through ``zipfile`` (ZIP_DEFLATED, level 9), so memory stays small.
    """
    template = write_xlsx(Path(directory) / f".template_{name}", {"Customers": [["CustomerID"], [1]]})
    path = Path(directory) / name
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if info.filename != "xl/worksheets/sheet1.xml":
                dst.writestr(info.filename, src.read(info.filename))
        with dst.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(
                b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            )
            chunk = b" " * (1 << 20)
            for _ in range(uncompressed_mb):
                sheet.write(chunk)
            sheet.write(b"</sheetData></worksheet>")
    template.unlink()
    return path


def write_corrupt_zip(directory: Path, name: str = "truncated.xlsx") -> Path:
    """The good workbook cut to its first 60% (the zip's central directory is lost)."""
    data = write_good_xlsx(directory, name=f".whole_{name}").read_bytes()
    Path(directory, f".whole_{name}").unlink()
    path = Path(directory) / name
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def write_html_as_xls(directory: Path, name: str = "report.xls") -> Path:
    """An HTML table saved under an .xls name (a common 'Excel export' from web banking systems)."""
    path = Path(directory) / name
    buf = io.StringIO()
    buf.write("<html><body><table><tr><th>CustomerID</th><th>Gender</th><th>City</th></tr>")
    buf.write("<tr><td>1000001</td><td>M</td><td>LAHORE</td></tr></table></body></html>\n")
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


GOOD_WRITERS: dict[str, Callable[[Path], Path]] = {
    "good_xlsx": write_good_xlsx,
    "good_csv": write_good_csv,
    "good_parquet": write_good_parquet,
    "semicolon_csv": write_semicolon_cp1252_csv,
    "xlsx_2022": write_2022_xlsx,
    "messy_xlsx": write_messy_xlsx,
    "conflicting_ids": write_conflicting_ids,
    "negative_volume": write_negative_volume,
    "future_birth_date": write_future_birth_date,
}
BAD_WRITERS: dict[str, Callable[[Path], Path]] = {
    "random_bytes": write_random_bytes,
    "renamed_text": write_renamed_text,
    "empty": write_empty_file,
    "password_protected": write_password_protected,
    "no_customer_id": write_no_customer_id,
    "header_only": write_header_only,
    "zip_bomb": write_zip_bomb,
    "corrupt_zip": write_corrupt_zip,
    "html_as_xls": write_html_as_xls,
}


def write_all(directory: Path) -> dict[str, Path]:
    """Write every fixture into ``directory``; returns {fixture name: path}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {key: writer(directory) for key, writer in {**GOOD_WRITERS, **BAD_WRITERS}.items()}
