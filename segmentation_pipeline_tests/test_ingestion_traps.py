"""Files that would read as silently wrong values (issue 13): every cell is read right or the file is refused.

Parquet nested types, dates and timestamps (naive, zoned, legacy INT96), numbers under date headers, headers that
differ only in case (DuckDB folds case), and xlsx zips whose directory lies about an entry's size. Every file is
written here, on disk, with pyarrow / openpyxl / zipfile.
"""

from __future__ import annotations

import datetime as dt
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.stages import field_columns, fields
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.ingestion import IngestionError, RawTable, read_customer_file
from segmentation_pipeline.stages.raw_table import unique_labels
from segmentation_pipeline.stages.readers_parquet import _arrow_column_text, _Column, type_refusal
from segmentation_pipeline.stages.readers_workbook import check_zip_entries

IDS = [1000001, 1000002, 1000003]


def _parquet(tmp_path: Path, columns: dict[str, pa.Array], name: str = "customers.parquet", **options) -> Path:
    path = tmp_path / name
    pq.write_table(pa.table({"CustomerID": pa.array(IDS[: len(next(iter(columns.values())))]), **columns}), path,
                   **options)  # fmt: skip
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(IngestionError) as info:
        read_customer_file(path)
    message = str(info.value)
    assert "\n" not in message, message
    for leak in ("Traceback", "BadZipFile", "zlib.error", "ArrowInvalid", "ArrowException", "UnicodeDecodeError"):
        assert leak not in message, message
    return message


# ---------------------------------------------------------------------------------------------------------------
# 1. Parquet nested types: a list of strings is a set of channels; every other nested value is refused
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "arrow_type"),
    [
        ("SubscribedChannels", pa.list_(pa.string())),
        ("Subscribed Channels", pa.large_list(pa.string())),
        ("Channels", pa.list_(pa.dictionary(pa.int32(), pa.string()))),
        ("SubscribedChannels", pa.list_(pa.large_string())),
    ],
)
def test_parquet_channel_lists_read_as_channel_text(tmp_path: Path, header: str, arrow_type: pa.DataType) -> None:
    lists = pa.array([["ATM", "MobileApp"], [], None], arrow_type)
    table = read_customer_file(_parquet(tmp_path, {header: lists}))
    assert table.texts(header) == ["ATM, MobileApp", None, None]
    parsed = field_columns.parse_column(fields.Kind.CHANNELS, table.texts(header))
    assert parsed.values.tolist() == [("ATM", "MobileApp"), (), ()] and not parsed.bad


def test_parquet_channel_lists_clean_to_the_same_customers_as_channel_text(tmp_path: Path) -> None:
    names = [["Internet Banking", "ATM"], ["MobileApp"], []]
    as_lists = read_customer_file(_parquet(tmp_path, {"SubscribedChannels": pa.array(names)}, "lists.parquet"))
    as_text = read_customer_file(
        _parquet(tmp_path, {"SubscribedChannels": pa.array([", ".join(n) or None for n in names])}, "text.parquet")
    )
    cleaned = [
        clean_customers(
            t.frame, reference_date=dt.date(2024, 1, 1), source_rows=t.source_rows, drop_uninformative=False
        )
        for t in (as_lists, as_text)
    ]
    assert cleaned[0].customers.equals(cleaned[1].customers)


@pytest.mark.parametrize(
    ("header", "values", "arrow_type", "words"),
    [
        ("City", [{"name": "LAHORE"}, None], pa.struct([("name", pa.string())]), "struct<name: string>"),
        ("City", [["LAHORE"], None], pa.list_(pa.string()), "list<element: string>"),  # a list, but not channels
        ("SubscribedChannels", [[1, 2], None], pa.list_(pa.int64()), "list<element: int64>"),
        ("SubscribedChannels", [[["ATM"]], None], pa.list_(pa.list_(pa.string())), "list<element: list<element: "),
        ("SubscribedChannels", [[b"ATM"], None], pa.list_(pa.binary()), "list<element: binary>"),
        ("SubscribedChannels", [[("ATM", 1)], None], pa.map_(pa.string(), pa.int64()), "map<string, int64"),
    ],
)
def test_parquet_nested_values_are_refused_naming_column_and_type(
    tmp_path: Path, header: str, values: list, arrow_type: pa.DataType, words: str
) -> None:
    message = _refusal(_parquet(tmp_path, {header: pa.array(values, arrow_type)}))
    assert message.startswith(f"customers.parquet, column '{header}': holds nested values ({words}"), message
    assert message.endswith("); export it as text")


def test_parquet_struct_refusal_is_exactly_one_line(tmp_path: Path) -> None:
    path = _parquet(tmp_path, {"City": pa.array([{"name": "LAHORE"}], pa.struct([("name", pa.string())]))})
    assert (
        _refusal(path)
        == "customers.parquet, column 'City': holds nested values (struct<name: string>); export it as text"
    )


def test_types_parquet_cannot_store_are_refused_too() -> None:
    union = pa.dense_union([pa.field("a", pa.int64()), pa.field("b", pa.string())])
    assert type_refusal(union, "City") == f"holds nested values ({union}); export it as text"
    assert type_refusal(pa.month_day_nano_interval(), "City") == (
        "holds values of type month_day_nano_interval, which are not read; export it as text"
    )
    assert type_refusal(pa.list_(pa.string()), "Channel") is None
    assert type_refusal(pa.string(), "City") is None


def test_parquet_fixed_size_binary_is_refused(tmp_path: Path) -> None:
    path = _parquet(tmp_path, {"City": pa.array([b"0123456789abcdef"], pa.binary(16))})
    assert _refusal(path) == (
        "customers.parquet, column 'City': holds values of type fixed_size_binary[16], which are not read; "
        "export it as text"
    )


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        ([["ATM"], ["Internet, Banking"]], "row 3: channel name 'Internet, Banking' contains a comma"),
        ([["ATM"], ["MobileApp", None]], "row 3: a list of channels holds a null entry"),
    ],
)
def test_parquet_channel_lists_that_text_cannot_hold_are_refused(tmp_path: Path, names: list, fragment: str) -> None:
    message = _refusal(_parquet(tmp_path, {"SubscribedChannels": pa.array(names, pa.list_(pa.string()))}))
    assert message.startswith(f"customers.parquet, column 'SubscribedChannels', {fragment}"), message


def test_parquet_binary_is_utf8_text_or_refused(tmp_path: Path) -> None:
    ok = read_customer_file(_parquet(tmp_path, {"City": pa.array([b"LAHORE", b"", None])}, "ok.parquet"))
    assert ok.texts("City") == ["LAHORE", None, None]
    bad = _parquet(tmp_path, {"City": pa.array([b"LAHORE", b"KAR\xffACHI"])}, "bad.parquet")
    assert _refusal(bad) == "bad.parquet, column 'City', row 3: holds bytes that are not UTF-8 text; export it as text"


# ---------------------------------------------------------------------------------------------------------------
# 2. Parquet dates and timestamps: ISO text in the column's own zone; numbers under date headers refused
# ---------------------------------------------------------------------------------------------------------------


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("arrow_type", "values", "expected"),
    [
        (pa.date32(), [dt.date(2020, 5, 17), None], ["2020-05-17", None]),
        (pa.timestamp("s"), [dt.datetime(1990, 1, 1), dt.datetime(2021, 3, 4, 5, 6, 7)],
         ["1990-01-01T00:00:00", "2021-03-04T05:06:07"]),
        (pa.timestamp("ms"), [dt.datetime(2021, 3, 4, 5, 6, 7, 123000), None], ["2021-03-04T05:06:07.123000", None]),
        (pa.timestamp("us"), [dt.datetime(1969, 12, 31, 23, 59, 59, 999999)], ["1969-12-31T23:59:59.999999"]),
        # the instant 1989-12-31T19:00Z is 1 January 1990 in Karachi: the date is the zone's calendar date
        (pa.timestamp("us", tz="Asia/Karachi"), [_utc(1989, 12, 31, 19)], ["1990-01-01T00:00:00+05:00"]),
        (pa.timestamp("ms", tz="UTC"), [_utc(1990, 1, 1, 23, 30)], ["1990-01-01T23:30:00+00:00"]),
        (pa.timestamp("s", tz="+05:30"), [_utc(1990, 1, 1, 20)], ["1990-01-02T01:30:00+05:30"]),
        (pa.timestamp("s", tz="-03:00"), [_utc(1990, 1, 1, 2)], ["1989-12-31T23:00:00-03:00"]),
        # daylight saving: the offset of that moment
        (pa.timestamp("s", tz="America/New_York"), [_utc(2021, 1, 15, 3), _utc(2021, 7, 15, 3)],
         ["2021-01-14T22:00:00-05:00", "2021-07-14T23:00:00-04:00"]),
    ],
)  # fmt: skip
def test_parquet_dates_and_timestamps_are_iso_text_that_reads_back(
    tmp_path: Path, arrow_type: pa.DataType, values: list, expected: list
) -> None:
    table = read_customer_file(_parquet(tmp_path, {"CustomerSince": pa.array(values, arrow_type)}))
    assert table.texts("CustomerSince") == expected
    for text in expected:
        if text is not None:
            assert fields.date_ordinal(text) == dt.date.fromisoformat(text[:10]).toordinal()


def test_parquet_nanosecond_timestamps_and_pandas_zones(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "pandas.parquet"
    pd.DataFrame(
        {
            "CustomerID": [1, 2, 3],
            "CustomerSince": pd.to_datetime(
                ["1990-01-01 00:00", "2021-03-04 05:06:07.000000123", None], format="ISO8601"
            ).tz_localize("Asia/Karachi"),
            "DateofBirth": pd.to_datetime(
                ["1980-02-29 00:00:00.5", "1980-02-29", "1980-02-29 12:00:00.000001"], format="ISO8601"
            ),
        }
    ).to_parquet(path)
    table = read_customer_file(path)
    assert table.texts("CustomerSince") == [
        "1990-01-01T00:00:00+05:00", "2021-03-04T05:06:07.000000123+05:00", None,
    ]  # fmt: skip
    assert table.texts("DateofBirth") == [
        "1980-02-29T00:00:00.500000", "1980-02-29T00:00:00", "1980-02-29T12:00:00.000001",
    ]  # fmt: skip


def test_date64_is_a_date() -> None:
    # Parquet stores date64 as date32; an Arrow date64 column (e.g. from IPC) reads the same.
    column = pa.chunked_array(
        [pa.array([dt.date(2020, 5, 17), None], pa.date64()), pa.array([dt.date(1, 1, 1)], pa.date64())]
    )
    text = _arrow_column_text(column, _Column("c.parquet", "CustomerSince"), 2)
    assert [value for chunk in text for value in chunk.to_pylist()] == ["2020-05-17", None, "0001-01-01"]


def test_legacy_int96_placeholder_dates_do_not_wrap_around(tmp_path: Path) -> None:
    # At nanoseconds (pyarrow's default for INT96) 9999-12-31 silently becomes 1816-03-29, a plausible birth date.
    values = pa.array([dt.datetime(9999, 12, 31), dt.datetime(1990, 1, 1, 8, 30)], pa.timestamp("us"))
    path = _parquet(tmp_path, {"DateofBirth": values}, use_deprecated_int96_timestamps=True)
    assert pq.ParquetFile(path).metadata.schema.column(1).physical_type == "INT96"
    assert read_customer_file(path).texts("DateofBirth") == ["9999-12-31T00:00:00", "1990-01-01T08:30:00"]


@pytest.mark.parametrize(
    ("header", "array", "words"),
    [
        ("DateofBirth", pa.array([19000, 19001], pa.int64()), "numbers (int64)"),
        ("Customer Since", pa.array([20200517, 20210101], pa.int32()), "numbers (int32)"),
        ("IncorporatedSince", pa.array([43831.0, 43832.0]), "numbers (double)"),
        ("DOB", pa.array([19000, 19001], pa.int32()).cast(pa.decimal128(10, 0)), "numbers (decimal128(10, 0))"),
        ("DateofBirth", pa.array([19000, 19001]).dictionary_encode(), "numbers (int64)"),
        ("DateofBirth", pa.array([dt.time(1, 2), None], pa.time64("us")), "times of day (time64[us])"),
        ("DateofBirth", pa.array([dt.timedelta(days=1), None], pa.duration("s")), "durations (duration[s])"),
    ],
)
def test_numbers_under_date_headers_are_not_guessed_as_dates(
    tmp_path: Path, header: str, array: pa.Array, words: str
) -> None:
    assert _refusal(_parquet(tmp_path, {header: array})) == (
        f"customers.parquet, column '{header}': holds {words}, not dates; export dates as dates or as text (YYYY-MM-DD)"
    )


def test_numbers_under_other_headers_are_still_numbers(tmp_path: Path) -> None:
    table = read_customer_file(_parquet(tmp_path, {"ExpVolume": pa.array([19000, None]), "Age": pa.array([1.5, 2.0])}))
    assert table.rows(["ExpVolume", "Age"]) == [["19000", "1.5"], [None, "2"]]


def test_dates_before_year_one_are_refused_not_misread(tmp_path: Path) -> None:
    # "-1968-01-02" would be read by a date parser as 1 February 1968.
    days = (np.datetime64("-1968-01-02") - np.datetime64("1970-01-01")).astype(int)
    path = _parquet(tmp_path, {"DateofBirth": pa.array([0, int(days)], pa.date32())})
    assert (
        _refusal(path)
        == "customers.parquet, column 'DateofBirth', row 3: holds a date before year 1 (-1968-01-02); refused"
    )


def test_timestamps_past_the_zone_range_are_refused(tmp_path: Path) -> None:
    # 2262-04-11T23:47Z plus 14 hours overflows nanoseconds: Arrow would wrap it to 1677 without a word.
    stamps = pa.array([0, 2**63 - 1], pa.timestamp("ns", tz="Pacific/Kiritimati"))
    message = _refusal(_parquet(tmp_path, {"CustomerSince": stamps}))
    assert message.startswith("customers.parquet, column 'CustomerSince', row 3: holds a timestamp its time zone")


def test_far_future_placeholders_stay_text_the_date_parser_refuses(tmp_path: Path) -> None:
    # 9999-12-31T23:00Z is already year 10000 in Karachi: kept as written; cleaning counts it as not a date.
    stamps = pa.array([_utc(9999, 12, 31, 23)], pa.timestamp("s", tz="Asia/Karachi"))
    text = read_customer_file(_parquet(tmp_path, {"CustomerSince": stamps})).texts("CustomerSince")
    assert text == ["10000-01-01T04:00:00+05:00"]
    assert isinstance(fields.date_ordinal(text[0]), fields.Bad)


# ---------------------------------------------------------------------------------------------------------------
# 3. Headers that differ only in case survive into DuckDB
# ---------------------------------------------------------------------------------------------------------------


def test_unique_labels_ignore_case() -> None:
    headers = ["City", "CITY", "city", "City__2", "isPep", "ISPEP", "", "COLUMN_G", "Straße", "STRASSE"]
    labels = unique_labels(headers, list(range(len(headers))))
    assert labels == [
        "City", "CITY__2", "city__3", "City__2__2", "isPep", "ISPEP__2", "column_G", "COLUMN_G__2", "Straße",
        "STRASSE__2",
    ]  # fmt: skip
    assert len({label.lower() for label in labels}) == len({label.casefold() for label in labels}) == len(labels)


def _assert_case_colliding_columns_survive(table: RawTable) -> None:
    assert table.headers == ["CustomerID", "City", "CITY", "isPep", "ISPEP"]
    labels = list(table.frame.columns)
    assert labels == ["CustomerID", "City", "CITY__2", "isPep", "ISPEP__2"]
    assert len({label.lower() for label in labels}) == len(labels)
    frame = table.frame  # noqa: F841 - read by DuckDB's replacement scan below
    with duckdb.connect() as con:
        con.execute("CREATE TABLE t AS SELECT * FROM frame")
        assert [row[0] for row in con.execute("DESCRIBE t").fetchall()] == labels
        assert con.execute("SELECT * FROM t").fetchall() == [
            ("1000001", "LAHORE", "Lahore", "1", "Y"),
            ("1000002", "KARACHI", None, "0", "N"),
        ]


def test_case_colliding_csv_headers_survive_into_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("CustomerID,City,CITY,isPep,ISPEP\n1000001,LAHORE,Lahore,1,Y\n1000002,KARACHI,,0,N\n")
    _assert_case_colliding_columns_survive(read_customer_file(path))


def test_case_colliding_parquet_headers_survive_into_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "customers.parquet"
    pq.write_table(
        pa.table(
            [pa.array(IDS[:2]), pa.array(["LAHORE", "KARACHI"]), pa.array(["Lahore", None]), pa.array([1, 0]),
             pa.array(["Y", "N"])],
            names=["CustomerID", "City", "CITY", "isPep", "ISPEP"],
        ),
        path,
    )  # fmt: skip
    _assert_case_colliding_columns_survive(read_customer_file(path))


# ---------------------------------------------------------------------------------------------------------------
# 4. An xlsx zip whose directory lies about an entry's size
# ---------------------------------------------------------------------------------------------------------------

SHEET = "xl/worksheets/sheet1.xml"
LYING_LARGER = "not a valid xlsx workbook (an entry is larger than its zip directory says); refused"


def _workbook(path: Path, *, padding: int = 0) -> Path:
    """A small valid workbook; ``padding`` bytes of spaces inside the sheet XML (deflates ~1000:1, like a bomb)."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Customers"
    ws.append(["CustomerID", "City", "Gender"])
    for i in range(50):
        ws.append([1_000_001 + i, "LAHORE", "MF"[i % 2]])
    wb.save(path)
    if padding:
        with zipfile.ZipFile(path) as src:
            parts = [(info, src.read(info)) for info in src.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
            for info, data in parts:
                if info.filename == SHEET:
                    data = data.replace(b"</worksheet>", b" " * padding + b"</worksheet>")
                dst.writestr(info.filename, data)
    return path


def _patch_entry(path: Path, entry: str, *, size: int | None = None, crc: int | None = None) -> None:
    """Rewrite an entry's uncompressed size and/or CRC-32 in both the central directory and its local header."""
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", data, eocd + 12)
    pos, found = cd_offset, False
    while pos < cd_offset + cd_size:
        assert data[pos : pos + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + n].decode() == entry:
            local = struct.unpack_from("<I", data, pos + 42)[0]
            assert data[local : local + 4] == b"PK\x03\x04"
            if size is not None:
                struct.pack_into("<I", data, pos + 24, size)
                struct.pack_into("<I", data, local + 22, size)
            if crc is not None:
                struct.pack_into("<I", data, pos + 16, crc)
                struct.pack_into("<I", data, local + 14, crc)
            found = True
        pos += 46 + n + m + k
    assert found
    path.write_bytes(bytes(data))


def _entry_sizes(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: info.file_size for info in zf.infolist()}


def test_zip_directory_understating_an_entry_is_refused_before_inflating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _workbook(tmp_path / "customers.xlsx", padding=30_000_000)  # 30 MB of sheet XML in ~30 KB
    real = _entry_sizes(path)
    assert real[SHEET] > 30_000_000
    _patch_entry(path, SHEET, size=20_000)  # the directory now says 20 KB: within every limit
    stated = _entry_sizes(path)
    assert sum(stated.values()) < 100_000

    inflated = 0
    read = zipfile.ZipExtFile.read

    def counting_read(self, n=-1):
        nonlocal inflated
        data = read(self, n)
        inflated += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    assert _refusal(path) == f"customers.xlsx: {LYING_LARGER}"
    assert inflated <= sum(stated.values()) + len(stated)  # never more than the directory owned up to


def test_zip_directory_understating_the_total_cannot_pass_the_limit(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "customers.xlsx", padding=3_000_000)
    _patch_entry(path, SHEET, size=50_000)
    with pytest.raises(IngestionError) as info:
        read_customer_file(path, max_uncompressed_bytes=1_000_000)  # the stated total is within it; the real one not
    assert str(info.value) == f"customers.xlsx: {LYING_LARGER}"


def test_zip_directory_overstating_an_entry_is_refused(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "customers.xlsx")
    _patch_entry(path, SHEET, size=_entry_sizes(path)[SHEET] + 1)
    assert _refusal(path) == (
        "customers.xlsx: not a valid xlsx workbook (an entry is smaller than its zip directory says); refused"
    )


def test_zip_entry_with_a_wrong_crc_is_one_line(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "customers.xlsx")
    _patch_entry(path, SHEET, crc=0x12345678)
    assert _refusal(path) == (
        f"customers.xlsx: not a valid xlsx workbook (corrupt zip): {SHEET} fails its CRC-32 check"
    )


def test_zip_entry_with_broken_deflate_data_is_one_line(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "customers.xlsx")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(SHEET)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start : start + 64] = b"\xff" * 64  # garbage where the deflate stream begins
    path.write_bytes(bytes(data))
    message = _refusal(path)
    assert message.startswith("customers.xlsx: not a valid xlsx workbook (corrupt zip): "), message
    assert "zlib" not in message and "BadZipFile" not in message


def test_honest_workbooks_pass_the_entry_check(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "customers.xlsx", padding=1_000)
    check_zip_entries(path, path.name, max_uncompressed_bytes=10_000_000)
    table = read_customer_file(path)
    assert len(table.frame) == 50 and table.frame["City"].eq("LAHORE").all()


def _with_sheet_xml(path: Path, edit: Callable[[bytes], bytes]) -> Path:
    """The workbook with its sheet XML edited; a well-formed zip (sizes and CRC-32 right), so only the XML is bad."""
    edited = path.with_name(f"edited_{path.name}")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(edited, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, edit(data) if info.filename == SHEET else data)
    return edited


@pytest.mark.parametrize(
    ("how", "edit"),
    [
        # Cut just after a row: every row before the cut is well-formed, so a reader that stopped at the end of the
        # text would hand over half the customers without a word. The sheet's data never closes: refused.
        ("cut after a row", lambda xml: xml[: xml.index(b"</row>", len(xml) // 2) + len(b"</row>")]),
        ("cut inside a cell", lambda xml: xml[: len(xml) // 2]),
        ("garbage in a row", lambda xml: xml.replace(b"</row>", b'</row><row r="x"><c r="?" t="q"><v>&x;</v></c>', 1)),
    ],
)
def test_a_sheet_whose_xml_is_broken_is_refused_in_one_line(tmp_path: Path, how: str, edit: Callable) -> None:
    path = _with_sheet_xml(_workbook(tmp_path / "customers.xlsx"), edit)
    message = _refusal(path)
    assert message.startswith("edited_customers.xlsx, sheet 'Customers': not a valid xlsx workbook: the sheet cannot "
                              "be read ("), message  # fmt: skip
    assert "Error" not in message, message  # calamine's words, not its exception's name
