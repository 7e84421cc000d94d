"""Files that would read as silently wrong values (issue 13): every cell is read right or the file is refused.

Headers that differ only in case (DuckDB folds case). Every file is written here, on disk.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.stages.ingestion import IngestionError, RawTable, read_customer_file
from segmentation_pipeline.stages.raw_table import unique_labels

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
