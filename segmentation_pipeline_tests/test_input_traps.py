"""Issue 13's traps, each in a file generated here: every cell is read right or refused in one line, never read
wrong with exit 0 (customer ids as text, number formats, day/month order, two-digit years, the data-quality gate)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline import cli
from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.ingestion import IngestionError, read_customer_file
from segmentation_pipeline.stages.model import fit_model
from segmentation_pipeline.stages.quality import DataQualityError
from segmentation_pipeline.synthetic import generate_export, write_export

REFERENCE = date(2026, 11, 30)
BEHAVIOUR = ("ExpVolume", "ActualVolume", "CashUsage", "NumAlerts", "NonFacetoFaceUsage", "onlineFTusage")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A 300-customer synthetic export as text (one row per customer and channel), its DateofBirth once."""
    path = write_export(generate_export(300, seed=21), tmp_path_factory.mktemp("traps") / "base.csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.loc[:, [not c.endswith(".1") for c in frame.columns]]


def _clean(frame: pd.DataFrame, path: Path, *, sep: str = ",", **options: object) -> pd.DataFrame:
    frame.to_csv(path, index=False, sep=sep)
    raw = read_customer_file(path)
    result = clean_customers(raw.frame, reference_date=REFERENCE, source_rows=raw.source_rows,
                             source_file=raw.source_file, **options)  # fmt: skip
    return result


def _refusal(frame: pd.DataFrame, path: Path, capsys: pytest.CaptureFixture[str], *, sep: str = ",") -> str:
    """What `segmentation run` says about the file: exit 1 and exactly one line."""
    frame.to_csv(path, index=False, sep=sep)
    code = cli.main(["run", "--input", str(path), "--warehouse", str(path.with_suffix(".duckdb"))])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- customer ids are text ----------------------------------------------------------------------------------------


def test_customer_ids_are_kept_as_exported(export: pd.DataFrame, tmp_path: Path) -> None:
    frame = export.copy()
    ids = frame["CustomerID"].unique()
    renamed = {ids[0]: "12345678901234567890", ids[1]: "006908318", ids[2]: "6908318", ids[3]: "CIF-0001",
               ids[4]: "9007199254740993", ids[5]: "9007199254740992"}  # fmt: skip
    frame["CustomerID"] = frame["CustomerID"].map(lambda v: renamed.get(v, v))
    customers = _clean(frame, tmp_path / "ids.csv").customers
    kept = set(customers["customer_id"])
    assert set(renamed.values()) <= kept and len(kept) == len(ids)  # zeros kept, no collision, no rounding
    assert customers["customer_id"].map(type).eq(str).all()


IMPLAUSIBLE = [("-42", "is negative"), ("1.2E+19", "is in exponent notation"), ("15.5", "is not a whole number"),
               ("12 34", "holds spaces or symbols")]  # fmt: skip


@pytest.mark.parametrize(("bad", "words"), IMPLAUSIBLE)
def test_implausible_ids_are_refused_in_one_line(export: pd.DataFrame, tmp_path: Path, bad: str, words: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    frame = export.copy()
    frame.loc[frame["CustomerID"] == frame["CustomerID"].iloc[3], "CustomerID"] = bad
    expected = f"ids.csv, column 'customer_id', row 5: customer id {bad!r} {words}"
    if bad == "-42":  # once through the CLI (the same IngestionError line reaches every surface)
        assert expected in _refusal(frame, tmp_path / "ids.csv", capsys)
        return
    with pytest.raises(IngestionError) as caught:
        _clean(frame, tmp_path / "ids.csv")
    assert str(caught.value).startswith(expected), caught.value


# --- number formats ------------------------------------------------------------------------------------------------


def _with_format(values: pd.Series, group: str, decimal: str) -> pd.Series:
    def write(text: str) -> str:
        if not text:
            return text
        whole, _, cents = f"{float(text) * 30:,.2f}".partition(".")
        return whole.replace(",", group) + decimal + cents

    return values.map(write)


@pytest.mark.parametrize(("group", "decimal", "sep"), [(".", ",", ";"), (" ", ",", ";"), ("'", ".", ","),
                                                       (",", ".", ",")])  # fmt: skip
def test_number_formats_are_inferred_per_column(export: pd.DataFrame, tmp_path: Path, group: str, decimal: str,
                                                sep: str) -> None:  # fmt: skip
    plain, written = export.copy(), export.copy()
    for column in ("ExpVolume", "ActualVolume", "CashUsage"):
        plain[column] = plain[column].map(lambda t: f"{float(t) * 30:.2f}" if t else t)
        written[column] = _with_format(written[column], group, decimal)
    expected = _clean(plain, tmp_path / "plain.csv").customers
    result = _clean(written, tmp_path / "written.csv", sep=sep)
    for column in ("exp_volume", "actual_volume", "cash_usage"):
        assert np.allclose(result.customers[column], expected[column], equal_nan=True), column
    assert expected["exp_volume"].max() > 1e6  # values of a million and more, read whole
    if decimal == ",":
        assert result.report.formats["exp_volume"].startswith("decimal comma")


def test_a_column_written_two_ways_is_refused(export: pd.DataFrame, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    frame = export.copy()
    frame["ExpVolume"] = frame["ExpVolume"].astype(object)
    frame.loc[0, "ExpVolume"], frame.loc[1, "ExpVolume"] = "1.234,50", "2,345.75"
    line = _refusal(frame, tmp_path / "mixed.csv", capsys)
    assert "mixed.csv, column 'exp_volume'" in line and "'2,345.75'" in line and "'1.234,50'" in line, line


# --- dates ---------------------------------------------------------------------------------------------------------


def test_two_digit_years_put_birth_dates_in_the_past(export: pd.DataFrame, tmp_path: Path) -> None:
    frame = export.copy()
    births = pd.to_datetime(frame["DateofBirth"], errors="coerce")
    frame["DateofBirth"] = births.dt.strftime("%d-%m-%y").fillna("")
    result = _clean(frame, tmp_path / "yy.csv")
    assert result.quarantined.empty
    expected = _clean(export.copy(), tmp_path / "iso.csv").customers
    assert (result.customers["date_of_birth"] == expected["date_of_birth"]).all()


def test_month_first_dates_are_read_month_first_when_values_prove_it(export: pd.DataFrame, tmp_path: Path) -> None:
    frame = export.copy()
    births = pd.to_datetime(frame["DateofBirth"], errors="coerce")
    frame["DateofBirth"] = births.dt.strftime("%m/%d/%Y").fillna("")
    result = _clean(frame, tmp_path / "mdy.csv")
    expected = _clean(export.copy(), tmp_path / "iso.csv").customers
    assert (result.customers["date_of_birth"] == expected["date_of_birth"]).all()
    assert result.report.formats["date_of_birth"].startswith("month-first (proven by")


def test_dates_that_cannot_tell_follow_the_configured_order_and_say_so(tmp_path: Path) -> None:
    frame = pd.DataFrame({"CustomerID": ["1", "2"], "DateofBirth": ["02/01/1980", "03/04/1975"],
                          "ExpVolume": ["10", "20"]})  # fmt: skip
    day_first = _clean(frame, tmp_path / "a.csv", drop_uninformative=False)
    month_first = _clean(frame, tmp_path / "b.csv", drop_uninformative=False, date_order="MDY")
    assert day_first.customers["date_of_birth"].dt.strftime("%Y-%m-%d").tolist() == ["1980-01-02", "1975-04-03"]
    assert month_first.customers["date_of_birth"].dt.strftime("%Y-%m-%d").tolist() == ["1980-02-01", "1975-03-04"]
    assert day_first.report.formats["date_of_birth"] == "day-first (the default: no value tells the order)"


def test_a_date_column_written_both_ways_is_refused(export: pd.DataFrame, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    frame = export.copy()
    frame.loc[0, "DateofBirth"], frame.loc[1, "DateofBirth"] = "23/07/1960", "07/23/1960"
    line = _refusal(frame, tmp_path / "dates.csv", capsys)
    assert "dates.csv, column 'date_of_birth'" in line and "'23/07/1960' is day-first" in line, line


def test_a_date_column_of_epoch_numbers_is_refused_not_dropped(export: pd.DataFrame, tmp_path: Path) -> None:
    frame = export.copy()
    births = pd.to_datetime(frame["DateofBirth"], errors="coerce")
    frame["DateofBirth"] = (births.astype("int64") // 10**6).astype(str)  # epoch milliseconds
    with pytest.raises(IngestionError) as caught:
        _clean(frame, tmp_path / "epoch.csv")
    assert str(caught.value).startswith("epoch.csv, column 'date_of_birth': no value reads as a date (e.g. '")


def test_the_api_reads_dates_day_first_and_refuses_a_month_first_one() -> None:
    from segmentation_pipeline.stages.records import RecordsInvalid, parse_records

    batch = parse_records([{"CustomerID": "7", "DateofBirth": "02/01/1980"}], reference_date=REFERENCE)
    assert batch.numbers["age"][0] == pytest.approx((REFERENCE - date(1980, 1, 2)).days / 365.25)
    with pytest.raises(RecordsInvalid) as caught:
        parse_records([{"CustomerID": "7", "DateofBirth": "07/23/1960"}], reference_date=REFERENCE)
    assert caught.value.problems[0].message == "not a date: '07/23/1960'"


# --- the data-quality gate ----------------------------------------------------------------------------------------


def test_mostly_blank_behaviour_is_refused_before_clustering(export: pd.DataFrame, tmp_path: Path) -> None:
    frame = export.copy()
    ids = frame["CustomerID"].unique()
    kept = set(np.random.default_rng(0).choice(ids, size=3, replace=False))
    for column in BEHAVIOUR:
        frame.loc[~frame["CustomerID"].isin(kept), column] = ""
    customers = _clean(frame, tmp_path / "blank.csv").customers
    with pytest.raises(DataQualityError) as caught:
        fit_model(CustomerBatch.from_frame(customers), PipelineSettings(n_init=2), reference_date=REFERENCE,
                  version="v")  # fmt: skip
    message = str(caught.value)
    assert message.startswith("data quality gate: 9") and "at most 50% may (max_imputed_share)" in message, message
    relaxed = PipelineSettings(n_init=2, max_imputed_share=1.0, min_complete_share=0.0, min_cluster_size=1)
    assert fit_model(CustomerBatch.from_frame(customers), relaxed, reference_date=REFERENCE, version="v").model


def test_a_cluster_below_the_minimum_size_is_refused(export: pd.DataFrame, tmp_path: Path) -> None:
    customers = CustomerBatch.from_frame(_clean(export.copy(), tmp_path / "ok.csv").customers)
    fitted = fit_model(customers, PipelineSettings(n_init=2), reference_date=REFERENCE, version="v")
    smallest = int(fitted.model.metrics["smallest_cluster"])
    assert smallest == np.bincount(fitted.labels).min() >= 10
    with pytest.raises(DataQualityError, match=rf"holds {smallest} customers; every cluster needs at least "
                       rf"{smallest + 1} \(min_cluster_size\)"):  # fmt: skip
        fit_model(customers, PipelineSettings(n_init=2, min_cluster_size=smallest + 1), reference_date=REFERENCE,
                  version="v")  # fmt: skip


def test_ingestion_errors_name_file_column_and_row() -> None:
    error = IngestionError("customer id '-42' is negative", file="x.csv", column="customer_id", row=5)
    assert str(error) == "x.csv, column 'customer_id', row 5: customer id '-42' is negative"


# --- plausibility and messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e300", "inf", "2e15"])
def test_absurd_amounts_quarantine_the_customer(export: pd.DataFrame, tmp_path: Path, value: str) -> None:
    frame = export.copy()
    customer = frame["CustomerID"].iloc[0]
    frame.loc[frame["CustomerID"] == customer, "ExpVolume"] = value
    result = _clean(frame, tmp_path / "huge.csv")
    assert customer not in set(result.customers["customer_id"])
    reasons = result.quarantined.set_index("customer_id").loc[[customer], "reason"]
    assert set(reasons) == {"exp_volume above 1e+15"}


def test_api_ids_are_exact_text() -> None:
    from segmentation_pipeline.stages.records import parse_records

    batch = parse_records([{"CustomerID": 9007199254740993}, {"CustomerID": "006908318"}, {"CustomerID": " 77 "}],
                          reference_date=REFERENCE)  # fmt: skip
    assert batch.customer_ids.tolist() == ["9007199254740993", "006908318", "77"]


def test_unexpected_errors_and_bad_settings_read_as_sentences() -> None:
    from segmentation_pipeline.config import SettingsError
    from segmentation_pipeline.orchestration.failures import plain_error

    assert plain_error("KeyError", "KeyError: 'gender'") == (
        "an internal step found no 'gender' where it expected one (a bug: please report it)")
    assert plain_error("ValueError", "ValueError: Input X contains infinity") == "Input X contains infinity"
    with pytest.raises(SettingsError) as caught:
        PipelineSettings.checked(n_clusters=1)
    assert str(caught.value) == "setting n_clusters: Input should be greater than or equal to 2 (got 1)"


def test_the_report_keeps_text_ids_as_they_are(trained_warehouse) -> None:  # noqa: ANN001 - the conftest fixture
    from segmentation_pipeline.reporting.build import load_report_data
    from segmentation_pipeline.reporting.outliers import find_outliers
    from segmentation_pipeline.warehouse import Warehouse

    data = load_report_data(Warehouse(trained_warehouse.path))
    segmented = data.segmented.assign(customer_id="CIF-00" + data.segmented["customer_id"].astype(str))
    outliers = find_outliers(segmented, data.embedding.drop(columns="customer_id").to_numpy())
    assert len(outliers) and outliers["customer_id"].str.startswith("CIF-00").all()
