"""File-reading stage: every accepted and refused file, with the one-line messages the user sees."""

from __future__ import annotations

import hashlib
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.schema import HEADER_2022, canonical_name
from segmentation_pipeline.stages.ingestion import (
    IngestionError,
    RawTable,
    excel_column_letter,
    file_sha256,
    read_ahead,
    read_customer_file,
    stage_file,
)
from segmentation_pipeline_tests import bad_files as bf


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bf.write_all(tmp_path_factory.mktemp("ingestion_fixtures"))


def _assert_text_frame(table: RawTable) -> None:
    frame = table.frame
    assert all("large_string" in str(dtype) for dtype in frame.dtypes), frame.dtypes  # text, maybe dictionary
    assert frame.columns.is_unique
    for label in frame.columns:
        assert all(value is None or type(value) is str for value in table.texts(label))
    assert len(table.source_rows) == len(frame)
    assert table.source_rows.dtype.kind == "i"
    assert list(frame.index) == list(range(len(frame)))


# ---------------------------------------------------------------------------------------------------------------
# Accepted files
# ---------------------------------------------------------------------------------------------------------------


def test_good_xlsx_round_trips_as_lossless_text(files: dict[str, Path]) -> None:
    path = files["good_xlsx"]
    table = read_customer_file(path)
    _assert_text_frame(table)
    assert table.file_format == "xlsx"
    assert table.source_file == "customers_2023.xlsx"
    assert table.sheet == "Customers"
    assert table.header_row == 1
    assert table.headers == list(bf.HEADER_2023_DUP)
    assert table.headers.count("DateofBirth") == 2
    assert list(table.frame.columns) == [*bf.HEADER_2023, "DateofBirth__2"]
    assert table.rows() == bf.good_rows_as_text()
    assert table.source_rows.tolist() == list(range(2, 2 + bf.GOOD_ROW_COUNT))
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_numbers_dates_and_text_are_lossless(files: dict[str, Path]) -> None:
    frame = read_customer_file(files["good_xlsx"]).frame
    assert frame.loc[0, "CustomerID"] == "1000001"  # integral number, no ".0"
    assert frame.loc[1, "ExpVolume"] == "1234567"  # 1234567.0
    assert pd.isna(frame.loc[0, "SegmentID"]) and frame.loc[1, "SegmentID"] == "1"  # 1.0 and a blank cell
    assert frame.loc[0, "ActualVolume"] == "2500.5"
    assert frame.loc[1, "ActualVolume"] == "0.1"
    assert frame.loc[2, "ActualVolume"] == "1e-05"
    assert frame.loc[3, "ActualVolume"] == "123456.78"
    assert frame.loc[0, "DateofBirth"] == "1950-01-18"  # a date-formatted cell -> ISO date
    assert frame.loc[0, "DateofBirth__2"] == "1950-01-18"
    assert frame.loc[1, "AccountType"] == "First  Pension Account"  # two spaces kept
    assert frame["PlaceofBirth"].isna().all()  # an all-blank column with a header is kept


def test_csv_and_parquet_give_the_same_table_as_xlsx(files: dict[str, Path]) -> None:
    xlsx = read_customer_file(files["good_xlsx"])
    for key, fmt in (("good_csv", "csv"), ("good_parquet", "parquet")):
        other = read_customer_file(files[key])
        _assert_text_frame(other)
        assert other.file_format == fmt
        assert other.sheet is None
        assert other.header_row == 1
        assert other.headers == xlsx.headers
        pd.testing.assert_frame_equal(other.frame, xlsx.frame)
        assert other.source_rows.tolist() == xlsx.source_rows.tolist()  # parquet: as if a sheet, header on row 1
        assert other.sha256 == file_sha256(files[key])


def test_2022_headers_are_kept_as_written(files: dict[str, Path]) -> None:
    table = read_customer_file(files["xlsx_2022"])
    _assert_text_frame(table)
    assert table.sheet == "Sheet1"
    assert table.headers == list(HEADER_2022)
    assert list(table.frame.columns) == list(HEADER_2022)
    assert {canonical_name(h) for h in table.headers} >= {"is_pep", "high_income_hw", "exp_volume", "occupation"}
    assert table.texts("Is PEP") == ["0", "0", "1", "0", "0"]
    assert table.frame.loc[1, "Expected Transaction Volume"] == "1234567"


def test_messy_workbook_skips_helper_sheet_and_title_rows(files: dict[str, Path]) -> None:
    table = read_customer_file(files["messy_xlsx"])
    _assert_text_frame(table)
    assert table.sheet == bf.MESSY_SHEET  # not the helper sheet of =CONCATENATE() formulas that comes first
    assert table.header_row == bf.MESSY_HEADER_ROW
    assert table.source_rows.tolist() == list(bf.MESSY_SOURCE_ROWS)  # blank row 8 dropped, numbering kept
    notes = f"column_{excel_column_letter(bf.MESSY_NOTES_COLUMN)}"
    assert notes == "column_AI"
    # formatted-but-blank trailing columns are gone; the unlabeled column with data is kept
    assert list(table.frame.columns) == [*bf.HEADER_2023, "DateofBirth__2", notes]
    assert table.headers == [*bf.HEADER_2023_DUP, ""]
    assert table.texts(notes) == [None, None, "check KYC", None, None, None, None, None]
    assert len(table.frame) == len(bf.MESSY_EXPECTED)  # formatted-but-blank trailing rows are gone
    for i, expected in enumerate(bf.MESSY_EXPECTED):
        assert dict(zip(expected, table.rows(list(expected))[i], strict=True)) == expected, i


@pytest.mark.parametrize(
    ("column", "row", "text"),
    [
        ("ExpVolume", 0, "1,000"),
        ("ExpVolume", 1, " 2500 "),
        ("ExpVolume", 2, "N/A"),
        ("ExpVolume", 3, "-"),
        ("ExpVolume", 4, None),
        ("ExpVolume", 5, "1234567"),
        ("CustomerID", 1, "0001002"),
        ("DateofBirth", 0, "1980-01-02"),
        ("DateofBirth", 2, "29221"),  # an unformatted serial stays the number it is
        ("DateofBirth", 4, "1980-01-02T13:45:30"),
        ("isPep", 4, "TRUE"),
        ("isPep", 5, "FALSE"),
        ("SubscribedChannels", 0, "ATM, MobileApp"),
    ],
)
def test_messy_values_stay_exactly_as_in_the_file(files: dict[str, Path], column: str, row: int, text: str) -> None:
    assert read_customer_file(files["messy_xlsx"]).texts(column)[row] == text


def test_explicit_sheet_is_read_even_if_it_is_not_the_best(files: dict[str, Path]) -> None:
    table = read_customer_file(files["messy_xlsx"], sheet=bf.MESSY_HELPER_SHEET)
    assert table.sheet == bf.MESSY_HELPER_SHEET
    assert table.headers == ["CustomerID", "IdList"]
    assert table.texts("IdList")[:2] == ["1000001,", "1000002,"]  # cached formula results


def test_semicolon_cp1252_csv_with_title_lines(files: dict[str, Path]) -> None:
    table = read_customer_file(files["semicolon_csv"])
    assert table.file_format == "csv"
    assert table.header_row == 3
    assert table.source_rows.tolist() == [4, 5, 6]
    assert table.frame.loc[0, "Occupation"] == "Employé"
    assert table.headers == list(bf.HEADER_2023_DUP)


def test_cleaning_fixtures_are_readable(files: dict[str, Path]) -> None:
    dup = read_customer_file(files["conflicting_ids"])
    rows = dup.frame.index[dup.frame["CustomerID"] == "1000002"]
    assert dup.source_rows[rows].tolist() == [3, 10]
    assert dup.frame.loc[rows, "DateofBirth"].nunique() == 2
    neg = read_customer_file(files["negative_volume"])
    assert neg.frame.loc[3, "ExpVolume"] == "-5000" and neg.frame.loc[3, "ActualVolume"] == "-1.5"
    future = read_customer_file(files["future_birth_date"])
    assert future.frame.loc[2, "DateofBirth"] == "2090-01-01"


def test_csv_line_numbers_ragged_rows_duplicates_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text(
        "Report,,\n"
        "CustomerID,Gender,City,City\n"
        '1,M,"LAHORE\nCANTT",X\n'  # a record spanning two lines (2 physical lines: 3-4)
        ",,,\n"  # blank record, dropped
        "2,F,KARACHI,Y,extra\n"  # longer than the header
        "3\n",  # shorter than the header
        encoding="utf-8",
    )
    table = read_customer_file(path)
    assert table.header_row == 2
    assert table.source_rows.tolist() == [3, 6, 7]
    assert table.headers == ["CustomerID", "Gender", "City", "City", ""]
    assert list(table.frame.columns) == ["CustomerID", "Gender", "City", "City__2", "column_E"]
    assert table.frame.loc[0, "City"] == "LAHORE\nCANTT"
    assert table.rows()[1] == ["2", "F", "KARACHI", "Y", "extra"]
    assert table.rows()[2] == ["3", None, None, None, None]


def test_csv_keeps_text_untouched_and_accepts_bom_and_utf16(tmp_path: Path) -> None:
    body = "CustomerID\tGender\tExpVolume\tDateofBirth\n0012\t M \t1,000\t01/02/1980\n"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(body.replace("\t", ",").replace("1,000", '"1,000"').encode("utf-8-sig"))
    utf16 = tmp_path / "unicode_text.txt"
    utf16.write_bytes(body.encode("utf-16"))
    for path in (bom, utf16):
        table = read_customer_file(path)
        assert table.headers == ["CustomerID", "Gender", "ExpVolume", "DateofBirth"], path
        assert table.rows()[0] == ["0012", " M ", "1,000", "01/02/1980"]


def test_csv_named_xlsx_is_read_by_content(tmp_path: Path, files: dict[str, Path]) -> None:
    renamed = tmp_path / "export.xlsx"
    renamed.write_bytes(files["good_csv"].read_bytes())
    table = read_customer_file(renamed)
    assert table.file_format == "csv"
    assert table.source_file == "export.xlsx"
    assert len(table.frame) == bf.GOOD_ROW_COUNT


def test_xlsx_named_csv_is_read_by_content(tmp_path: Path, files: dict[str, Path]) -> None:
    renamed = tmp_path / "export.csv"
    renamed.write_bytes(files["good_xlsx"].read_bytes())
    table = read_customer_file(renamed)
    assert table.file_format == "xlsx"
    assert table.rows() == bf.good_rows_as_text()


def test_header_row_needs_three_known_headers_to_win_early(tmp_path: Path) -> None:
    path = tmp_path / "title.csv"
    path.write_text("Customer ID,report\n\nCustomerID,Gender,City\n7,M,LAHORE\n", encoding="utf-8")
    table = read_customer_file(path)
    assert table.header_row == 3
    assert table.rows() == [["7", "M", "LAHORE"]]


def test_parquet_from_pandas_index_nan_bool_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "pandas.parquet"
    pd.DataFrame(
        {
            "CustomerID": [1000001, 1000002],
            "isPep": [True, False],
            "ExpVolume": [1234567.0, np.nan],
            "CustomerSince": pd.to_datetime(["2020-01-02", "2021-03-04 05:06:07"], format="ISO8601"),
            "City": ["LAHORE", None],
        },
        index=pd.Index([10, 11]),  # stored as "__index_level_0__": not data
    ).to_parquet(path)
    table = read_customer_file(path)
    assert table.headers == ["CustomerID", "isPep", "ExpVolume", "CustomerSince", "City"]
    assert table.rows() == [
        ["1000001", "TRUE", "1234567", "2020-01-02T00:00:00", "LAHORE"],
        ["1000002", "FALSE", None, "2021-03-04T05:06:07", None],
    ]
    assert table.source_rows.tolist() == [2, 3]
    # a named index is data (e.g. CustomerID set as the index) and is kept as a column
    named = tmp_path / "named.parquet"
    pd.DataFrame({"City": ["LAHORE"]}, index=pd.Index([1000001], name="CustomerID")).to_parquet(named)
    assert read_customer_file(named).frame.to_dict("records") == [{"City": "LAHORE", "CustomerID": "1000001"}]


def test_workbook_data_starting_in_column_b(tmp_path: Path) -> None:
    path = bf.write_xlsx(
        tmp_path / "offset.xlsx",
        {"S": [["CustomerID", "Gender", None, "City"], [1, "M", None, "LAHORE"], [2, None, "x", None]]},
        first_row=2,
        first_col=1,
    )
    table = read_customer_file(path)
    assert table.header_row == 3
    assert table.source_rows.tolist() == [4, 5]
    assert list(table.frame.columns) == ["CustomerID", "Gender", "column_D", "City"]


# ---------------------------------------------------------------------------------------------------------------
# Refused files
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fragments", "sheet"),
    [
        ("random_bytes", ["random_bytes.xlsx: ", "not a workbook, CSV or Parquet file"], None),
        ("renamed_text", ["meeting_notes.xlsx: ", "not a workbook, CSV or Parquet file"], None),
        ("empty", ["empty.xlsx: file is empty"], None),
        ("password_protected", ["protected.xlsx: workbook is password-protected; remove the password"], None),
        (
            "no_customer_id",
            ["no_customer_id.xlsx, sheet 'Customers'", "no customer id column (looked for CustomerID, Customer ID"],
            "Customers",
        ),  # fmt: skip
        (
            "header_only",
            ["header_only.xlsx, sheet 'Customers', row 1", "sheet 'Customers' has a header but no data rows"],
            "Customers",
        ),  # fmt: skip
        ("zip_bomb", ["zip_bomb.xlsx: ", "compression ratio", "zip bomb"], None),
        ("corrupt_zip", ["truncated.xlsx: not a valid xlsx workbook (corrupt zip)"], None),
        ("html_as_xls", ["report.xls: ", "not a workbook, CSV or Parquet file", "HTML"], None),
    ],
)
def test_refused_files_have_one_line_messages(
    files: dict[str, Path], key: str, fragments: list[str], sheet: str | None
) -> None:
    with pytest.raises(IngestionError) as info:
        read_customer_file(files[key])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(files[key].name)
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.file == files[key].name
    assert info.value.sheet == sheet


def test_zip_bomb_is_refused_quickly_without_decompressing(files: dict[str, Path]) -> None:
    bomb = files["zip_bomb"]
    with zipfile.ZipFile(bomb) as zf:
        declared = sum(i.file_size for i in zf.infolist())
    assert declared > 300e6 and bomb.stat().st_size < 2e6
    t0 = time.perf_counter()
    with pytest.raises(IngestionError, match=r"compression ratio 1,0\d\d:1 .* exceeds 200:1"):
        read_customer_file(bomb)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(IngestionError, match=r"would expand to 315 MB, over the 100 MB limit"):
        read_customer_file(bomb, max_uncompressed_bytes=100_000_000, max_compression_ratio=5000)


def test_normal_workbooks_pass_the_zip_bomb_guard(files: dict[str, Path], tmp_path: Path) -> None:
    import xlsxwriter

    # a tall, repetitive 100k-row sheet: the most compressible kind of real export
    path = tmp_path / "tall.xlsx"
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = wb.add_worksheet("Customers")
    ws.write_row(0, 0, ["CustomerID", "Gender", "Nationality", "SegmentID"])
    for r in range(1, 100_001):
        ws.write_number(r, 0, 1_000_000 + r)
        ws.write_string(r, 1, "M")
        ws.write_string(r, 2, "PK")
        ws.write_number(r, 3, 1.0)
    wb.close()
    with zipfile.ZipFile(path) as zf:
        ratio = sum(i.file_size for i in zf.infolist()) / sum(i.compress_size for i in zf.infolist())
    assert ratio < 200 / 2, ratio  # at least 2x headroom under the default limit
    table = read_customer_file(path)
    assert len(table.frame) == 100_000 and table.source_rows[-1] == 100_001
    for key in ("good_xlsx", "xlsx_2022", "messy_xlsx"):
        read_customer_file(files[key])


def test_missing_sheet_lists_available_sheets(files: dict[str, Path]) -> None:
    with pytest.raises(IngestionError) as info:
        read_customer_file(files["messy_xlsx"], sheet="Data")
    assert str(info.value) == ("customers_messy.xlsx: sheet 'Data' not found; available sheets: 'Helper', 'Customers'")


def test_no_sheet_with_customer_id_names_checked_sheets(tmp_path: Path) -> None:
    path = bf.write_xlsx(tmp_path / "two.xlsx", {"A": [["Gender"], ["M"]], "B": [["City"], ["LAHORE"]]})
    with pytest.raises(IngestionError) as info:
        read_customer_file(path)
    assert str(info.value).startswith("two.xlsx: no customer id column (looked for CustomerID")
    assert "in any sheet (checked 'A', 'B')" in str(info.value)


def test_header_only_csv_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("CustomerID,Gender,City\n\n,,\n", encoding="utf-8")
    with pytest.raises(IngestionError, match=r"^h\.csv, row 1: file has a header but no data rows$"):
        read_customer_file(path)
    with pytest.raises(IngestionError, match=r"^nope\.xlsx: file not found$"):
        read_customer_file(tmp_path / "nope.xlsx")


def test_csv_without_customer_id(tmp_path: Path) -> None:
    path = tmp_path / "no_id.csv"
    path.write_text("Gender,City\nM,LAHORE\n", encoding="utf-8")
    with pytest.raises(IngestionError, match=r"^no_id\.csv: no customer id column \(looked for CustomerID, "):
        read_customer_file(path)


def test_binary_without_known_magic_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "image.xlsx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(IngestionError, match="not a workbook, CSV or Parquet file"):
        read_customer_file(path)


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("customers.csv", "CustomerID\n1\n")
    with pytest.raises(IngestionError, match=r"not a workbook, CSV or Parquet file \(a zip archive"):
        read_customer_file(path)


def test_zip_with_broken_workbook_xml_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "this is not xml <<<")
    with pytest.raises(IngestionError) as info:
        read_customer_file(path)
    assert str(info.value).startswith("broken.xlsx: not a valid xlsx workbook (corrupt zip)")
    assert "\n" not in str(info.value)


def test_csv_with_a_giant_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "giant.csv"
    path.write_text('CustomerID,Gender,City\n1,M,"' + "x" * 200_000 + '"\n', encoding="utf-8")
    with pytest.raises(IngestionError, match=r"^giant\.csv: not a readable CSV file: field larger than field limit"):
        read_customer_file(path)


def test_utf8_sample_then_cp1252_bytes_later(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    lines = ["CustomerID,Gender,City"] + [f"{i},M,LAHORE" for i in range(10_000)]
    path.write_bytes(("\n".join(lines) + "\n").encode() + "10001,F,Multān\n".encode("cp1252", errors="replace"))
    path.write_bytes(path.read_bytes().replace(b"Mult?n", b"Mult\xe9n"))
    table = read_customer_file(path)
    assert table.rows()[-1] == ["10001", "F", "Multén"]
    assert table.source_rows[-1] == 10_002


# ---------------------------------------------------------------------------------------------------------------
# IngestionError
# ---------------------------------------------------------------------------------------------------------------


def test_ingestion_error_is_one_line_with_location() -> None:
    err = IngestionError("customer id\nis blank", file="customers.xlsx", sheet="Customers", column="CustomerID", row=17)
    assert str(err) == "customers.xlsx, sheet 'Customers', column 'CustomerID', row 17: customer id is blank"
    assert (err.message, err.file, err.sheet, err.column, err.row) == (
        "customer id is blank", "customers.xlsx", "Customers", "CustomerID", 17,
    )  # fmt: skip
    assert str(IngestionError("file is empty", file="a.csv")) == "a.csv: file is empty"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.row == 17


def test_excel_column_letters() -> None:
    assert [excel_column_letter(i) for i in (0, 25, 26, 33, 701, 702)] == ["A", "Z", "AA", "AH", "ZZ", "AAA"]


# ---------------------------------------------------------------------------------------------------------------
# Reading ahead (a run reads its staged copy while its libraries load)
# ---------------------------------------------------------------------------------------------------------------


def test_read_ahead_serves_one_read_of_the_unchanged_file(tmp_path: Path, files: dict[str, Path]) -> None:
    path = tmp_path / "customers.xlsx"
    path.write_bytes(files["good_xlsx"].read_bytes())
    plain = read_customer_file(path, name="drop.xlsx")
    with read_ahead(path, name="drop.xlsx") as ahead:
        assert ahead is not None
        with read_ahead(path, name="drop.xlsx") as inner:
            assert inner is None  # nested: one read
        assert ahead.wait(timeout=60)
        # The bytes change but size, modification time and inode do not: only the read done ahead can still see
        # the old content (a staged copy is never rewritten; this only shows which read answered).
        stat = path.stat()
        with open(path, "r+b") as fh:
            fh.write(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        taken = read_customer_file(path, name="drop.xlsx")
        assert ahead._outcome is None  # handed over, not kept: cleaning frees the text as it goes
        with pytest.raises(IngestionError):  # the read-ahead served one read: this one reads the file as it is now
            read_customer_file(path, name="drop.xlsx")
    assert taken.rows() == plain.rows() and taken.source_file == "drop.xlsx" and taken.sha256 == plain.sha256


def test_read_ahead_is_not_taken_for_another_sheet_or_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("CustomerID,Gender,City\n1,M,LAHORE\n", encoding="utf-8")
    with read_ahead(path) as ahead:
        assert ahead.wait(timeout=60)
        read_customer_file(path, sheet="Other")  # another sheet (ignored by CSV, but another read): read on its own
        assert ahead._outcome is not None
        path.write_text("CustomerID,Gender,City\n1,M,LAHORE\n2,F,KARACHI\n", encoding="utf-8")
        assert read_customer_file(path).rows() == [["1", "M", "LAHORE"], ["2", "F", "KARACHI"]]
        assert ahead._outcome is not None  # the changed file was read again; the read done ahead is dropped on exit


def test_read_ahead_hands_over_the_refusal_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("just,some\ntext,here\n", encoding="utf-8")
    with pytest.raises(IngestionError) as plain:
        read_customer_file(path)
    with read_ahead(path) as ahead:
        assert ahead.wait(timeout=60)
        with pytest.raises(IngestionError) as taken:
            read_customer_file(path)
    assert str(taken.value) == str(plain.value)


def test_staging_twice_gives_the_same_copy_and_a_changed_file_a_new_one(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("CustomerID,Gender\n1,M\n", encoding="utf-8")
    first = stage_file(source, tmp_path / "staging")
    assert stage_file(source, tmp_path / "staging") == first
    assert first == (tmp_path / "staging" / f"{file_sha256(source)}.csv", file_sha256(source))
    source.write_text("CustomerID,Gender\n1,M\n2,F\n", encoding="utf-8")
    again = stage_file(source, tmp_path / "staging")
    assert again != first and again[1] == file_sha256(source) and again[0].read_bytes() == source.read_bytes()
    first[0].unlink()  # a staged copy removed (retention): staged anew
    source.write_text("CustomerID,Gender\n1,M\n", encoding="utf-8")
    assert stage_file(source, tmp_path / "staging") == first and first[0].is_file()
