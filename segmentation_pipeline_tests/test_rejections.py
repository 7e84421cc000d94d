"""Real-world exports end to end: honest variants are accepted and cleaned; broken files fail the Dagster run at
the ingestion step with one clear line, the CLI prints that line, and the last good run stays intact."""

import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.runner import failure_reason
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline_tests import bad_files
from segmentation_pipeline_tests.automation_helpers import materialize_file, settings

REFERENCE = date(2026, 6, 30)
# The bad-file fixtures hold eight customers: too few for the data-quality gate's cluster size, which is not what
# these tests are about (tests/test_input_traps.py covers the gate).
SETTINGS = settings(n_init=2, reference_date=REFERENCE.isoformat(), min_cluster_size=1)


def _clean(path: Path) -> pd.DataFrame:
    raw = read_customer_file(path)
    return clean_customers(raw.frame, reference_date=REFERENCE, source_rows=raw.source_rows,
                           source_file=raw.source_file).customers  # fmt: skip


# --- accepted variants, cleaned to the same customers -----------------------------------------------------------


@pytest.mark.parametrize(
    "writer",
    [bad_files.write_good_xlsx, bad_files.write_good_csv, bad_files.write_good_parquet,
     bad_files.write_semicolon_cp1252_csv],
)  # fmt: skip
def test_formats_clean_to_the_same_customers(writer: Callable[[Path], Path], tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    reference = _clean(bad_files.write_good_xlsx(tmp_path / "ref"))
    customers = _clean(writer(tmp_path))
    n = len(customers)  # the cp1252 CSV holds the first three customers, one with an accented occupation
    assert n in (3, bad_files.GOOD_ROW_COUNT)
    assert customers["customer_id"].tolist() == [str(i) for i in range(1000001, 1000001 + n)]
    reference = reference.head(n)
    for column in ("exp_volume", "actual_volume", "num_alerts", "age", "tenure_years"):
        np.testing.assert_allclose(customers[column].to_numpy(float), reference[column].to_numpy(float), rtol=1e-9)
    assert customers["province"].tolist() == reference["province"].tolist()
    if n == 3:
        assert customers["occupation"].iloc[0] == "Employé"


def test_2022_headers_map_to_the_same_columns(tmp_path: Path) -> None:
    raw = read_customer_file(bad_files.write_2022_xlsx(tmp_path))
    result = clean_customers(raw.frame, reference_date=REFERENCE, source_rows=raw.source_rows)
    assert {"is_pep", "exp_volume", "occupation", "subscribed_channels", "account_type"} <= set(
        result.customers.columns
    )
    assert result.report.aliases_applied["High Net Worth House-wife"] == "high_income_hw"
    assert result.report.dropped_columns["high_income_hw"].startswith("constant value")  # all 0 in this file
    assert result.report.aliases_applied["Is PEP"] == "is_pep"
    assert result.report.aliases_applied["Source of Income"] == "occupation"
    assert result.customers["is_pep"].sum() == 1


def test_messy_workbook_values_parsed(tmp_path: Path) -> None:
    customers = _clean(bad_files.write_messy_xlsx(tmp_path)).set_index("customer_id")
    assert customers.loc["1000001", "exp_volume"] == 1000.0  # "1,000"
    assert customers.loc["0001002", "exp_volume"] == 2500.0  # " 2500 " (the id "0001002" keeps its zeros)
    assert np.isnan(customers.loc["1000003", "exp_volume"]) and np.isnan(customers.loc["1000004", "exp_volume"])
    assert customers["is_pep"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    births = customers["date_of_birth"]
    assert births.loc["0001002"] == pd.Timestamp("1980-01-02")  # ISO text
    assert births.loc["1000003"] == pd.Timestamp("1980-01-01")  # Excel serial 29221
    assert births.loc["1000004"] == pd.Timestamp("1980-01-02")  # day-first 02/01/1980
    assert births.loc["1000007"] == pd.Timestamp("1975-06-30")  # 30-Jun-1975
    assert customers.loc["1000005", "subscribed_channels"] == ["ATM", "Internet Banking", "MobileApp"]
    assert customers.loc["1000004", "subscribed_channels"] == []


# --- the Dagster run on bad files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    workbook = write_export(generate_export(600, seed=4), folder / "good.xlsx")
    database = folder / "warehouse.duckdb"
    result = _materialise(workbook, database)
    assert result.success
    return database


def _materialise(path: Path, database: Path) -> dg.ExecuteInProcessResult:
    return materialize_file(path, database, SETTINGS)


def _snapshot(database: Path) -> dict[str, object]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return {
            table: connection.execute(f"SELECT count(*), hash(list(t ORDER BY ALL)) FROM {table} t").fetchone()
            for table in ("raw_workbook", "cleaned_customers", "cluster_assignments", "kmeans_model", "pca_embedding")
        }


REJECTED = {
    "random bytes": (bad_files.write_random_bytes, "not a workbook, CSV or Parquet file"),
    "renamed text": (bad_files.write_renamed_text, "not a workbook, CSV or Parquet file"),
    "empty file": (bad_files.write_empty_file, "file is empty"),
    "password": (bad_files.write_password_protected, "password-protected"),
    "no customer id": (bad_files.write_no_customer_id, "no customer id column"),
    "header only": (bad_files.write_header_only, "no data rows"),
    "zip bomb": (bad_files.write_zip_bomb, "zip bomb"),
    "corrupt zip": (bad_files.write_corrupt_zip, "corrupt zip"),
    "conflicting ids": (bad_files.write_conflicting_ids, "1000002"),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_bad_file_fails_at_ingestion_and_keeps_last_good_run(case: str, good_warehouse: Path, tmp_path: Path) -> None:
    writer, expected = REJECTED[case]
    path = writer(tmp_path)
    before = _snapshot(good_warehouse)
    result = _materialise(path, good_warehouse)
    assert not result.success
    failed_steps = [event.step_key for event in result.all_events if event.is_step_failure]
    assert failed_steps == ["raw_workbook"]
    reason = failure_reason(result)
    assert expected in reason and path.name in reason
    assert "\n" not in reason
    assert _snapshot(good_warehouse) == before


def test_conflicting_ids_message_names_row(tmp_path: Path, good_warehouse: Path) -> None:
    result = _materialise(bad_files.write_conflicting_ids(tmp_path), good_warehouse)
    reason = failure_reason(result)
    assert "sheet 'Customers'" in reason and "column 'customer_id'" in reason and "row 10" in reason


def test_cli_prints_the_same_single_line(tmp_path: Path, good_warehouse: Path) -> None:
    path = bad_files.write_password_protected(tmp_path)
    process = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.cli", "run", "--input", str(path),
         "--warehouse", str(good_warehouse)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == 1
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {failure_reason(_materialise(path, good_warehouse))}"]
    assert "Traceback" not in process.stderr


@pytest.mark.parametrize(
    ("writer", "customer_id", "reason"),
    [(bad_files.write_negative_volume, "1000004", "negative exp_volume"),
     (bad_files.write_future_birth_date, "1000003", "date_of_birth in the future")],
)  # fmt: skip
def test_impossible_values_quarantined_and_counted(writer, customer_id: str, reason: str, tmp_path: Path) -> None:
    database = tmp_path / "q.duckdb"
    path = writer(tmp_path)
    result = _materialise(path, database)
    assert result.success
    with duckdb.connect(str(database), read_only=True) as connection:
        quarantined = connection.execute("SELECT customer_id, reason, source_row FROM quarantined_customers").df()
        kept = connection.execute("SELECT customer_id FROM cleaned_customers").df()["customer_id"].tolist()
        report = connection.execute("SELECT rows_read, rows_kept, rows_dropped FROM ingestion_report").df()
    assert customer_id in quarantined["customer_id"].tolist() and reason in quarantined["reason"].tolist()
    assert customer_id not in kept and len(kept) == bad_files.GOOD_ROW_COUNT - 1
    assert f"quarantined: {reason}" in report["rows_dropped"].iloc[0]
    (materialisation,) = [event.materialization for event in result.get_asset_materialization_events()
                          if event.asset_key == dg.AssetKey("cleaned_customers")]  # fmt: skip
    assert materialisation.metadata["quarantined_customers"].value == 1
