"""Cleaning: header aliases, value parsing, channel merge, quarantine, derived columns, dropped columns."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.stages.cleaning import (
    clean_customers,
    parse_categories,
    parse_dates,
    parse_flags,
    parse_numbers,
    split_channels,
)
from segmentation_pipeline.stages.ingestion import IngestionError

REFERENCE = date(2026, 6, 30)


def _raw(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame([{k: (None if v is None else str(v)) for k, v in row.items()} for row in rows], dtype=object)


def _customer(customer_id: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "CustomerID": customer_id,
        "Occupation": "Pension",
        "DateofBirth": "1960-01-15",
        "Gender": "M",
        "isPep": "0",
        "ExpVolume": "30000",
        "ActualVolume": "25000.5",
        "CashUsage": "1000",
        "SubscribedChannels": "ATM",
        "CustomerSince": "2016-06-30",
        "Province": "Punjab",
    }
    row.update(overrides)
    return row


def test_parse_numbers_reads_bank_formats_and_counts_garbage() -> None:
    values, unparseable = parse_numbers(pd.Series(["1,000", " 2500 ", "N/A", "-", "", None, "12.5", "abc"]))
    assert values.tolist()[:2] == [1000.0, 2500.0]
    assert np.isnan(values.iloc[2]) and np.isnan(values.iloc[3]) and np.isnan(values.iloc[4])
    assert values.iloc[6] == 12.5
    assert unparseable == 1  # only "abc": blanks and N/A are missing values, not errors


def test_parse_flags_accepts_every_spelling() -> None:
    flags, unparseable = parse_flags(pd.Series(["Y", "n", "Yes", "NO", "TRUE", "false", "1", "0", "1.0", "", "maybe"]))
    assert flags.tolist()[:9] == [1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert np.isnan(flags.iloc[9]) and np.isnan(flags.iloc[10])
    assert unparseable == 1


def test_parse_dates_iso_serial_and_day_first() -> None:
    dates, unparseable = parse_dates(pd.Series(["1990-05-17", "32874", "17/05/1990", "", "not a date"]))
    assert dates.iloc[0] == pd.Timestamp("1990-05-17")
    assert dates.iloc[1] == pd.Timestamp("1990-01-01")  # Excel serial 32874
    assert dates.iloc[2] == pd.Timestamp("1990-05-17")
    assert pd.isna(dates.iloc[3]) and pd.isna(dates.iloc[4])
    assert unparseable == 1


def test_categories_fold_spaces_and_channels_split() -> None:
    assert parse_categories(pd.Series(["First  Pension Account ", None])).tolist() == ["First Pension Account", None]
    assert split_channels(pd.Series(["MobileApp, ATM", "", None])).tolist() == [("ATM", "MobileApp"), (), ()]


def test_channel_rows_merge_into_one_customer_with_channel_set() -> None:
    rows = [
        _customer(1000001, SubscribedChannels="ATM"),
        _customer(1000001, SubscribedChannels="MobileApp"),
        _customer(1000001, SubscribedChannels="Internet Banking"),
        _customer(1000002, SubscribedChannels="ATM, MobileApp", Gender="F", ExpVolume="90000"),
    ]
    result = clean_customers(_raw(rows), reference_date=REFERENCE)
    customers = result.customers.set_index("customer_id")
    assert len(customers) == 2
    assert customers.loc[1000001, "subscribed_channels"] == ["ATM", "Internet Banking", "MobileApp"]
    assert customers.loc[1000002, "subscribed_channels"] == ["ATM", "MobileApp"]
    assert result.report.dropped_rows == {"merged: one row per subscribed channel": 2}
    assert result.report.rows_read == 4 and result.report.rows_kept == 2


def test_exact_duplicates_removed_and_counted() -> None:
    rows = [_customer(1000001), _customer(1000001), _customer(1000002, Gender="F", ExpVolume="40000")]
    result = clean_customers(_raw(rows), reference_date=REFERENCE)
    assert len(result.customers) == 2
    assert result.report.dropped_rows["exact duplicate row"] == 1


def test_conflicting_rows_of_one_id_are_refused_naming_the_id() -> None:
    rows = [_customer(1000001, ExpVolume="30000"), _customer(1000001, ExpVolume="999999"), _customer(1000002)]
    with pytest.raises(IngestionError) as caught:
        clean_customers(_raw(rows), reference_date=REFERENCE, source_file="x.xlsx", source_rows=np.array([2, 3, 4]))
    message = str(caught.value)
    assert "1000001" in message and "conflicting" in message and "x.xlsx" in message
    assert "row 3" in message


def test_blank_customer_id_is_refused_with_its_row() -> None:
    rows = [_customer(1000001), _customer(1000002, CustomerID=None)]
    with pytest.raises(IngestionError, match=r"row 8.*customer id is blank"):
        clean_customers(_raw(rows), reference_date=REFERENCE, source_file="x.xlsx", source_rows=np.array([7, 8]))


def test_impossible_values_are_quarantined_with_reason() -> None:
    rows = [
        _customer(1000001),
        _customer(1000002, ExpVolume="-5", Gender="F"),
        _customer(1000003, DateofBirth="2030-01-01", Gender="F"),
        _customer(1000004, ActualVolume="70000"),
    ]
    result = clean_customers(_raw(rows), reference_date=REFERENCE, source_rows=np.array([2, 3, 4, 5]))
    assert sorted(result.customers["customer_id"]) == [1000001, 1000004]
    reasons = dict(zip(result.quarantined["customer_id"], result.quarantined["reason"], strict=True))
    assert reasons == {1000002: "negative exp_volume", 1000003: "date_of_birth in the future"}
    assert result.quarantined.set_index("customer_id").loc[1000002, "source_row"] == 3
    assert result.report.dropped_rows["quarantined: negative exp_volume"] == 1


def test_age_and_tenure_derived_at_reference_date() -> None:
    rows = [_customer(1000001), _customer(1000002, DateofBirth="1990-06-30", CustomerSince="2025-06-30")]
    customers = clean_customers(_raw(rows), reference_date=REFERENCE).customers.set_index("customer_id")
    assert customers.loc[1000002, "age"] == pytest.approx(36.0, abs=0.01)
    assert customers.loc[1000002, "tenure_years"] == pytest.approx(1.0, abs=0.01)
    assert customers.loc[1000001, "tenure_years"] == pytest.approx(10.0, abs=0.01)


def test_aliases_duplicate_columns_and_uninformative_columns() -> None:
    raw = _raw(
        [
            {"CustomerID": 1, "Is PEP": "Y", "Expected Transaction Volume": "1,000", "DateofBirth": "1980-01-01",
             "DateofBirth__2": "1980-01-01", "PlaceofBirth": None, "FocusTypeID": "7", "Gender": "M"},
            {"CustomerID": 2, "Is PEP": "N", "Expected Transaction Volume": "2,000", "DateofBirth": "1970-01-01",
             "DateofBirth__2": "1970-01-01", "PlaceofBirth": None, "FocusTypeID": "7", "Gender": "F"},
        ]
    )  # fmt: skip
    result = clean_customers(raw, reference_date=REFERENCE)
    report = result.report
    assert report.aliases_applied["Is PEP"] == "is_pep"
    assert report.aliases_applied["Expected Transaction Volume"] == "exp_volume"
    assert report.dropped_columns["DateofBirth__2"] == "identical copy of date_of_birth"
    assert report.dropped_columns["place_of_birth"] == "all values empty"
    assert report.dropped_columns["focus_type_id"].startswith("constant value")
    assert result.customers["is_pep"].tolist() == [1.0, 0.0]
    assert result.customers["exp_volume"].tolist() == [1000.0, 2000.0]


def test_disagreeing_duplicate_column_reported_first_kept() -> None:
    raw = _raw(
        [
            {"CustomerID": 1, "DateofBirth": "1980-01-01", "DateofBirth__2": "1981-01-01", "Gender": "M"},
            {"CustomerID": 2, "DateofBirth": "1970-01-01", "DateofBirth__2": "1970-01-01", "Gender": "F"},
        ]
    )
    result = clean_customers(raw, reference_date=REFERENCE)
    assert result.report.conflicting_duplicate_columns == {"DateofBirth__2": 1}
    assert result.customers["date_of_birth"].iloc[0] == pd.Timestamp("1980-01-01")


def test_scoring_mode_keeps_constant_columns() -> None:
    raw = _raw([_customer(1000001)])
    customers = clean_customers(raw, reference_date=REFERENCE, drop_uninformative=False).customers
    assert {"is_pep", "exp_volume", "occupation"} <= set(customers.columns)


def test_placeholder_dates_are_unreadable_not_a_crash() -> None:
    dates, unparseable = parse_dates(pd.Series(["0001-01-01", "9999-12-31", "2958465", "1990-01-01"]))
    assert dates.isna().tolist() == [True, True, True, False]
    assert unparseable == 3
