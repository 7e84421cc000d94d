"""Exports longer than one Excel sheet: the generator continues on further sheets and says what it wrote;
ingestion reads a customer table that continues over several sheets as one table (each row keeping its own sheet
and row) and warns when a sheet is full, i.e. probably cut off at Excel's last row.

Nothing here writes a million rows: the sheet limits are module constants, lowered for the tests."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import xlsxwriter
from python_calamine import CalamineWorkbook

from segmentation_pipeline import synthetic
from segmentation_pipeline.cli import main as cli_main
from segmentation_pipeline.definitions import build_resources
from segmentation_pipeline.orchestration.assets import ingest_export
from segmentation_pipeline.orchestration.partitions import EXPORTS, export_key
from segmentation_pipeline.stages import readers_workbook
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.ingestion import IngestionError, read_customer_file, stage_file
from segmentation_pipeline.warehouse import snapshots
from segmentation_pipeline_tests import bad_files as bf
from segmentation_pipeline_tests.automation_helpers import settings

REFERENCE = date(2026, 6, 30)
SMALL_SHEET = 50  # rows per sheet, header included, in place of Excel's 1,048,576


def _clean(path: Path, sheet: str | None = None):
    raw = read_customer_file(path, sheet=sheet)
    result = clean_customers(raw.frame, reference_date=REFERENCE, source_rows=raw.source_rows,
                             source_sheets=raw.source_sheets, source_file=raw.source_file)  # fmt: skip
    return raw, result


def _by_id(customers: pd.DataFrame) -> pd.DataFrame:
    return customers.sort_values("customer_id", ignore_index=True)


def _full_warning(file: str, sheet: str, rows: int) -> str:
    return (f"{file}, sheet {sheet!r}: the sheet is full ({rows:,} rows, Excel's maximum): the export was probably "
            "cut off; check that every customer is in the file")  # fmt: skip


# --- the generator ----------------------------------------------------------------------------------------------


def test_real_limits() -> None:
    assert synthetic.SHEET_MAX_ROWS == 1_048_576 == 2**20  # header row included
    assert readers_workbook.EXCEL_MAX_ROWS == 1_048_576
    assert readers_workbook.XLS_MAX_ROWS == 65_536


def test_generator_continues_on_further_sheets_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(synthetic, "SHEET_MAX_ROWS", SMALL_SHEET)
    out = tmp_path / "long.xlsx"
    assert cli_main(["generate", "--rows", "120", "--out", str(out), "--seed", "5"]) == 0
    message = capsys.readouterr().out.strip()

    export = synthetic.generate_export(120, seed=5)
    workbook = CalamineWorkbook.from_path(str(out))
    names = workbook.sheet_names
    assert names[:3] == ["Customers", "Customers (2)", "Customers (3)"]
    sheets = {name: workbook.get_sheet_by_name(name).to_python() for name in names}
    ids_by_sheet = {}
    for name, data in sheets.items():
        assert data[0] == export.header  # every sheet starts with the header row
        assert 2 <= len(data) <= SMALL_SHEET
        ids_by_sheet[name] = {str(int(row[0])) for row in data[1:]}
    # No customer's channel rows are split over two sheets, and every customer and row is written.
    assert sum(len(ids) for ids in ids_by_sheet.values()) == len(set().union(*ids_by_sheet.values())) == 120
    assert set().union(*ids_by_sheet.values()) == set(export.labels["customer_id"])
    rows = sum(len(data) - 1 for data in sheets.values())
    assert rows == len(export.rows) > 120
    # A sheet is closed only when the next customer's rows would not fit.
    for data in list(sheets.values())[:-1]:
        assert len(data) > SMALL_SHEET - 3

    each = ", ".join(f"{name!r} {len(data) - 1} rows" for name, data in sheets.items())
    labels = out.with_name("long.labels.csv")
    assert message == (f"wrote 120 customers in {rows} rows to {out} on {len(names)} sheets: {each} "
                       f"(plus a header row each) (planted groups: {labels})")  # fmt: skip


def test_generator_message_for_one_sheet_and_csv(tmp_path: Path) -> None:
    export = synthetic.generate_export(30, seed=1)
    xlsx = synthetic.save_export(export, tmp_path / "one.xlsx")
    assert xlsx.sheets == (("Customers", len(export.rows)),)
    assert xlsx.describe() == (f"wrote 30 customers in {len(export.rows)} rows to {tmp_path / 'one.xlsx'} on 1 sheet: "
                               f"'Customers' {len(export.rows)} rows (plus the header row)")  # fmt: skip
    csv = synthetic.save_export(export, tmp_path / "one.csv")
    assert csv.describe() == f"wrote 30 customers in {len(export.rows)} rows to {tmp_path / 'one.csv'}"


def test_sheet_rows_keep_customers_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "SHEET_MAX_ROWS", 4)  # 3 data rows: exactly the most one customer has
    export = synthetic.generate_export(60, seed=3)
    parts = synthetic.sheet_rows(export)
    ids = export.rows[0].to_numpy()
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(export.rows)))
    seen: set[int] = set()
    for part in parts:
        assert 1 <= len(part) <= 3 and (np.diff(part) > 0).all()  # rows keep their order
        assert seen.isdisjoint(ids[part])
        seen.update(ids[part])
    monkeypatch.setattr(synthetic, "SHEET_MAX_ROWS", 3)
    with pytest.raises(ValueError, match="more than a sheet"):
        synthetic.sheet_rows(export)


# --- reading a table that continues over several sheets -------------------------------------------------------------


def test_generated_multi_sheet_workbook_reads_every_customer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    export = synthetic.generate_export(150, seed=11)
    monkeypatch.setattr(synthetic, "SHEET_MAX_ROWS", SMALL_SHEET)
    written = synthetic.save_export(export, tmp_path / "long.xlsx")
    monkeypatch.undo()
    csv = synthetic.write_export(export, tmp_path / "long.csv")
    names = [name for name, _ in written.sheets]
    assert len(names) >= 4

    raw, from_xlsx = _clean(written.path)
    _, from_csv = _clean(csv)
    assert raw.sheet == "Customers" and raw.sheets == names and raw.warnings == []
    assert len(raw.frame) == len(export.rows)
    # Rows are numbered per sheet: each sheet's data starts on its row 2.
    for name, count in written.sheets:
        assert raw.source_rows[raw.source_sheets == name].tolist() == list(range(2, 2 + count))
    # Each row's sheet and row point at its cells in the workbook.
    workbook = CalamineWorkbook.from_path(str(written.path))
    cells = {name: workbook.get_sheet_by_name(name).to_python() for name in names}
    for i in range(0, len(raw.frame), 7):
        row = cells[raw.source_sheets[i]][raw.source_rows[i] - 1]
        assert raw.frame["CustomerID"].iloc[i] == str(int(row[0]))
        assert raw.frame["City"].iloc[i] == row[export.header.index("City")]

    # The same customers with the same values as the same export written as CSV.
    assert from_xlsx.report.rows_read == from_csv.report.rows_read == len(export.rows)
    assert from_xlsx.report.rows_kept == from_csv.report.rows_kept == 150
    assert from_xlsx.report.dropped_columns == from_csv.report.dropped_columns
    pd.testing.assert_frame_equal(_by_id(from_xlsx.customers), _by_id(from_csv.customers))
    assert sorted(from_xlsx.customers["customer_id"]) == sorted(export.labels["customer_id"])


def _two_sheet_workbook(path: Path, second_header: list[str] | None = None) -> Path:
    """The good fixture's eight customers: five on 'Customers', three on 'Customers (2)' (its own header row)."""
    rows = bf.good_rows()
    header = list(bf.HEADER_2023_DUP)
    return bf.write_xlsx(path, {"Customers": [header, *rows[:5]],
                                "Customers (2)": [second_header or header, *rows[5:]]})  # fmt: skip


def test_continued_table_is_the_single_sheet_table(tmp_path: Path) -> None:
    one = read_customer_file(bf.write_good_xlsx(tmp_path))
    two = read_customer_file(_two_sheet_workbook(tmp_path / "two.xlsx"))
    pd.testing.assert_frame_equal(two.frame, one.frame)
    assert two.headers == one.headers and two.header_row == one.header_row == 1
    assert two.sheet == "Customers" and two.sheets == ["Customers", "Customers (2)"]
    assert two.source_rows.tolist() == [2, 3, 4, 5, 6, 2, 3, 4]
    assert two.source_sheets.tolist() == ["Customers"] * 5 + ["Customers (2)"] * 3
    # A single sheet keeps its fields as before, and names its sheet on every row.
    assert one.sheet == "Customers" and one.sheets == ["Customers"]
    assert one.source_sheets.tolist() == ["Customers"] * 8 and one.warnings == []
    assert read_customer_file(bf.write_good_csv(tmp_path)).source_sheets is None


def test_explicit_sheet_reads_that_sheet_only(tmp_path: Path) -> None:
    path = _two_sheet_workbook(tmp_path / "two.xlsx")
    first = read_customer_file(path, sheet="Customers")
    second = read_customer_file(path, sheet="Customers (2)")
    assert (first.sheet, first.sheets, len(first.frame)) == ("Customers", ["Customers"], 5)
    assert (second.sheet, second.sheets, second.source_rows.tolist()) == ("Customers (2)", ["Customers (2)"], [2, 3, 4])
    assert second.texts("CustomerID") == ["1000006", "1000007", "1000008"]


def test_sheets_with_different_headers_are_not_merged(tmp_path: Path) -> None:
    header = list(bf.HEADER_2023_DUP)
    swapped = [header[0], header[2], header[1], *header[3:]]  # the same headers in another order
    table = read_customer_file(_two_sheet_workbook(tmp_path / "swapped.xlsx", swapped))
    assert table.sheets == ["Customers"] and len(table.frame) == 5  # the usual choice: more rows
    shorter = read_customer_file(_two_sheet_workbook(tmp_path / "shorter.xlsx", header[:-1]))
    assert shorter.sheets == ["Customers"] and len(shorter.frame) == 5
    # The same header in other columns is another table too.
    rows = bf.good_rows()
    moved = _write_sheets(tmp_path / "moved.xlsx", [("Customers", 0, [header, *rows[:5]], False),
                                                    ("Customers (2)", 1, [header, *rows[5:]], False)])  # fmt: skip
    assert read_customer_file(moved).sheets == ["Customers"]


def _write_sheets(path: Path, sheets: list[tuple[str, int, list[list[object]], bool]]) -> Path:
    """(name, first column, rows, hidden) per sheet; dates written as text."""
    workbook = xlsxwriter.Workbook(str(path))
    for name, first_col, rows, hidden in sheets:
        sheet = workbook.add_worksheet(name)
        for r, cells in enumerate(rows):
            for c, value in enumerate(cells):
                if value is not None:
                    sheet.write(r, c + first_col, str(value) if isinstance(value, date) else value)
        if hidden:
            sheet.hide()
    workbook.close()
    return path


def test_a_hidden_sheet_with_the_same_header_is_not_merged(tmp_path: Path) -> None:
    header, rows = list(bf.HEADER_2023_DUP), bf.good_rows()
    path = _write_sheets(tmp_path / "hidden.xlsx", [("Customers", 0, [header, *rows[:5]], False),
                                                    ("Backup", 0, [header, *rows[5:]], True)])  # fmt: skip
    table = read_customer_file(path)
    assert table.sheets == ["Customers"] and len(table.frame) == 5


def test_cleaning_errors_name_the_rows_own_sheet(tmp_path: Path) -> None:
    rows = bf.good_rows()
    rows[6][0] = None  # customer id blank on 'Customers (2)', row 3
    header = list(bf.HEADER_2023_DUP)
    path = bf.write_xlsx(tmp_path / "blank_id.xlsx", {"Customers": [header, *rows[:5]],
                                                      "Customers (2)": [header, *rows[5:]]})  # fmt: skip
    with pytest.raises(IngestionError) as info:
        _clean(path)
    assert (info.value.sheet, info.value.row, info.value.column) == ("Customers (2)", 3, "customer_id")

    rows = bf.good_rows()
    conflict = list(rows[1])
    conflict[bf.HEADER_2023.index("Gender")] = "X"  # customer 1000002 again, with another gender
    path = bf.write_xlsx(tmp_path / "conflict.xlsx", {"Customers": [header, *rows[:5]],
                                                      "Customers (2)": [header, *rows[5:], conflict]})  # fmt: skip
    with pytest.raises(IngestionError) as info:
        _clean(path)
    assert (info.value.sheet, info.value.row) == ("Customers (2)", 5)
    assert "1000002" in info.value.message


# --- full sheets --------------------------------------------------------------------------------------------------


def test_full_sheet_is_warned_about(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = bf.write_good_xlsx(tmp_path, "customers.xlsx")  # header + 8 rows: the last used row is 9
    monkeypatch.setattr(readers_workbook, "EXCEL_MAX_ROWS", 10)
    assert read_customer_file(path).warnings == []
    monkeypatch.setattr(readers_workbook, "EXCEL_MAX_ROWS", 9)
    table = read_customer_file(path)
    assert table.warnings == [_full_warning("customers.xlsx", "Customers", 9)]
    assert len(table.frame) == 8  # a warning, not a refusal
    assert read_customer_file(path, sheet="Customers").warnings == table.warnings
    assert _full_warning("customers.xlsx", "Customers", 1_048_576) == (
        "customers.xlsx, sheet 'Customers': the sheet is full (1,048,576 rows, Excel's maximum): the export was "
        "probably cut off; check that every customer is in the file"
    )


def test_full_sheet_followed_by_its_continuation_is_not_warned_about(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _two_sheet_workbook(tmp_path / "two.xlsx")  # last used rows: 6 on 'Customers', 4 on 'Customers (2)'
    monkeypatch.setattr(readers_workbook, "EXCEL_MAX_ROWS", 6)
    assert read_customer_file(path).warnings == []  # the export went on: the first sheet was not cut off
    assert read_customer_file(path, sheet="Customers").warnings == [_full_warning("two.xlsx", "Customers", 6)]
    monkeypatch.setattr(readers_workbook, "EXCEL_MAX_ROWS", 4)
    assert read_customer_file(path).warnings == [_full_warning("two.xlsx", "Customers (2)", 4)]


def test_ingestion_step_logs_the_warning_and_keeps_each_rows_sheet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(readers_workbook, "EXCEL_MAX_ROWS", 4)
    path = _two_sheet_workbook(tmp_path / "two.xlsx")
    database = tmp_path / "warehouse.duckdb"
    staged, sha = stage_file(path, tmp_path / "staging")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPORTS.name, [export_key(sha)])
    result = dg.materialize(
        [ingest_export], partition_key=export_key(sha), instance=instance,
        resources={**build_resources(str(database)), "segmentation": settings(min_cluster_size=1)},
        run_config={"ops": {"raw_workbook": {"config": {"path": str(staged), "name": path.name}}}},
    )  # fmt: skip
    assert result.success
    expected = _full_warning("two.xlsx", "Customers (2)", 4)
    logged = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert expected in logged
    (cleaned,) = [e.materialization for e in result.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey("cleaned_customers")]  # fmt: skip
    assert cleaned.metadata["warnings"].value == [expected]
    assert cleaned.metadata["rows_kept"].value == 8
    with duckdb.connect(str(database), read_only=True) as connection:
        lineage = connection.execute(
            f'SELECT "_sheet", "_source_row" FROM {snapshots.schema_for(result.run_id)}.raw_workbook'
        ).fetchall()
    expected_rows = [("Customers", r) for r in range(2, 7)] + [("Customers (2)", r) for r in (2, 3, 4)]
    assert sorted(lineage) == sorted(expected_rows)
