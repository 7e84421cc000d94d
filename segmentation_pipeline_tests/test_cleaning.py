"""Cleaning: header aliases, value parsing, channel merge, quarantine, derived columns, dropped columns."""

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from segmentation_pipeline.stages import field_columns, fields
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.fields import Kind
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


def _column(kind: Kind, values: list[object], *, many: bool) -> tuple[list[object], int]:
    """One column through its kind's parser, either as a few values (one by one, as a request's) or repeated
    past the size where distinct values are parsed once (as a file's column): both must read the same."""
    repeat = 40 if many else 1
    parsed = field_columns.parse_column(kind, values * repeat)
    return list(parsed.values[: len(values)]), len(parsed.bad) // repeat


@pytest.mark.parametrize("many", [False, True])
def test_numbers_read_bank_formats_and_count_garbage(many: bool) -> None:
    values, unparseable = _column(Kind.NUMBER, ["1,000", " 2500 ", "N/A", "-", "", None, "12.5", "abc"], many=many)
    assert values[:2] == [1000.0, 2500.0]
    assert np.isnan(values[2]) and np.isnan(values[3]) and np.isnan(values[4]) and np.isnan(values[5])
    assert values[6] == 12.5
    assert unparseable == 1  # only "abc": blanks and N/A are missing values, not errors


@pytest.mark.parametrize("many", [False, True])
def test_flags_accept_every_spelling(many: bool) -> None:
    flags, unparseable = _column(Kind.FLAG, ["Y", "n", "Yes", "NO", "TRUE", "false", "1", "0", "1.0", "", "maybe"],
                                 many=many)  # fmt: skip
    assert flags[:9] == [1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert np.isnan(flags[9]) and np.isnan(flags[10])
    assert unparseable == 1


@pytest.mark.parametrize("many", [False, True])
def test_dates_iso_serial_and_day_first(many: bool) -> None:
    days, unparseable = _column(Kind.DATE, ["1990-05-17", "32874", "17/05/1990", "", "not a date",
                                            "1990-05-17T13:45:00", 32874, "30-Jun-1975"], many=many)  # fmt: skip
    assert days[0] == date(1990, 5, 17).toordinal() == days[2] == days[5]  # time of day ignored
    assert days[1] == date(1990, 1, 1).toordinal() == days[6]  # Excel serial 32874, as text or number
    assert days[7] == date(1975, 6, 30).toordinal()
    assert np.isnan(days[3]) and np.isnan(days[4])
    assert unparseable == 1


@pytest.mark.parametrize("many", [False, True])
def test_categories_fold_spaces_and_channels_split(many: bool) -> None:
    categories, _ = _column(Kind.CATEGORY, ["First  Pension Account ", None, "n/a"], many=many)
    assert categories == ["First Pension Account", None, None]
    channels, _ = _column(Kind.CHANNELS, ["MobileApp, ATM", "", None, ["ATM", "MobileApp"]], many=many)
    assert channels == [("ATM", "MobileApp"), (), (), ("ATM", "MobileApp")]


@pytest.mark.parametrize("many", [False, True])
def test_ids_are_text_as_exported(many: bool) -> None:
    values = ["1504161", 1504161.0, " 006908318 ", "1504161.0", "12345678901234567890", "CIF-00012", 9007199254740993,
              "-42", "1e3", "15.5", "a b", -7, 1.5e19, None]  # fmt: skip
    ids, unparseable = _column(Kind.ID, values, many=many)
    assert ids[:8] == ["1504161", "1504161", "006908318", "1504161", "12345678901234567890", "CIF-00012",
                       "9007199254740993", None]  # fmt: skip
    assert ids[8:] == [None] * 6
    assert unparseable == 6


def test_native_numbers_take_the_same_rules_as_text() -> None:
    """A big column of JSON numbers is converted in one call; infinity reads as text 'inf' does (infinite: the
    impossible-value rules refuse it, nothing imputes it)."""
    parsed = field_columns.parse_column(Kind.NUMBER, [1.5, None, 3, float("inf")] * 30)
    assert parsed.values[:3].tolist()[0] == 1.5 and np.isnan(parsed.values[1]) and parsed.values[2] == 3.0
    assert not parsed.bad and np.isinf(parsed.values[3])
    assert [fields.number(v) for v in ("inf", float("inf"), "-Infinity", "1e400")] == [np.inf, np.inf, -np.inf, np.inf]
    assert type(fields.number(True)).__name__ == "Bad"
    found = fields.impossible_values({"exp_volume": np.array([np.inf, -np.inf, 5.0])}, {}, reference=date(2026, 1, 1))
    reasons = [(f.reason, f.rows.tolist()) for f in found]
    assert reasons == [("negative exp_volume", [1]), ("exp_volume above 1e+15", [0])]


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
    assert customers.loc["1000001", "subscribed_channels"] == ["ATM", "Internet Banking", "MobileApp"]
    assert customers.loc["1000002", "subscribed_channels"] == ["ATM", "MobileApp"]
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
    assert sorted(result.customers["customer_id"]) == ["1000001", "1000004"]
    reasons = dict(zip(result.quarantined["customer_id"], result.quarantined["reason"], strict=True))
    assert reasons == {"1000002": "negative exp_volume", "1000003": "date_of_birth in the future"}
    assert result.quarantined.set_index("customer_id").loc["1000002", "source_row"] == 3
    assert result.report.dropped_rows["quarantined: negative exp_volume"] == 1


def test_age_and_tenure_derived_at_reference_date() -> None:
    rows = [_customer(1000001), _customer(1000002, DateofBirth="1990-06-30", CustomerSince="2025-06-30")]
    customers = clean_customers(_raw(rows), reference_date=REFERENCE).customers.set_index("customer_id")
    assert customers.loc["1000002", "age"] == pytest.approx(36.0, abs=0.01)
    assert customers.loc["1000002", "tenure_years"] == pytest.approx(1.0, abs=0.01)
    assert customers.loc["1000001", "tenure_years"] == pytest.approx(10.0, abs=0.01)


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


def test_channels_are_dropped_only_when_no_customer_has_one() -> None:
    empty = clean_customers(_raw([_customer(1, SubscribedChannels=None), _customer(2, SubscribedChannels="")]),
                            reference_date=REFERENCE)  # fmt: skip
    assert empty.report.dropped_columns["subscribed_channels"] == "all values empty"
    assert "subscribed_channels" not in empty.customers.columns
    last = clean_customers(_raw([_customer(1, SubscribedChannels=None), _customer(2, SubscribedChannels="Mobile")]),
                           reference_date=REFERENCE)  # fmt: skip
    assert "subscribed_channels" not in last.report.dropped_columns
    assert [list(v) for v in last.customers["subscribed_channels"]] == [[], ["Mobile"]]


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
    days, unparseable = _column(Kind.DATE, ["0001-01-01", "9999-12-31", "2958465", "1990-01-01"], many=True)
    assert [bool(np.isnan(d)) for d in days] == [True, True, True, False]
    assert unparseable == 3


def test_a_column_is_constant_only_when_every_value_is_the_same_and_present() -> None:
    from segmentation_pipeline.stages.cleaning import CleaningReport, _drop_uninformative_columns

    one_level = pd.arrays.ArrowExtensionArray(pa.array(["Retail", None, "Retail"]).dictionary_encode())
    frame = pd.DataFrame({
        "customer_id": ["1", "2", "3"],
        "constant": [5.0, 5.0, 5.0],
        "constant_but_one_missing": [5.0, np.nan, 5.0],
        "missing_first": [np.nan, 5.0, 5.0],
        "one_level_and_missing": one_level,
        "one_level": pd.arrays.ArrowExtensionArray(pa.array(["Retail"] * 3).dictionary_encode()),
    })  # fmt: skip
    report = CleaningReport()
    kept = _drop_uninformative_columns(frame, report)
    assert list(kept.columns) == ["customer_id", "constant_but_one_missing", "missing_first", "one_level_and_missing"]
    assert set(report.dropped_columns) == {"constant", "one_level"}
