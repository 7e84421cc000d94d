"""API records are read by the same field parsers as a file's cells (stages/fields.py): the same text gives the same
customer whether it arrives as a row of a file or as a record of a request; what a file would count as unreadable
or quarantine, a request gets refused, naming the record and the field."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from segmentation_pipeline.stages import field_columns, fields
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.records import RecordsInvalid, parse_records
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline_tests.api_fixtures import file_records

DAY = date(2026, 6, 30)
NUMERIC_FIELDS = ("ExpVolume", "ActualVolume", "CashUsage", "NumAlerts", "NonFacetoFaceUsage", "onlineFTusage")


def varied_records(directory: Path, n: int = 1_500) -> list[dict[str, object]]:
    """New customers with gaps, unknown categories and the spellings banks use."""
    source = write_export(generate_export(n, seed=99), directory / "new.csv")
    records = file_records(source)
    rng = np.random.default_rng(5)
    for i, record in enumerate(records):
        record["CustomerID"] = str(10_000_000 + i)
        for name in rng.choice(NUMERIC_FIELDS, size=int(rng.integers(0, 4)), replace=False):
            record.pop(str(name), None)  # gaps: imputed
        kind = i % 10
        if kind == 0:
            record.update(City="ATLANTIS", Occupation="Astronaut", Nationality="ZZ")  # unknown levels
        elif kind == 1:
            record.update(isPep=" yes ", CTRMatch="N", ExpVolume="1,250,000")
        elif kind == 2 and "DateofBirth" in record:
            record["DateofBirth"] = date.fromisoformat(str(record["DateofBirth"])[:10]).strftime("%d/%m/%Y")
        elif kind == 3 and "CustomerSince" in record:
            since = date.fromisoformat(str(record["CustomerSince"])[:10])
            record["CustomerSince"] = str((since - date(1899, 12, 30)).days)  # an Excel serial number
        elif kind == 4:
            record.update(AccountType="  First   Pension Account ", SubscribedChannels="ATM,  MobileApp , ATM")
        elif kind == 5:
            record.update(Gender="N/A", PreviouslyReported="")
        elif kind == 6:
            record.update(Province="Pünjab", City="LAHORE\t")
        elif kind == 7:
            for name in NUMERIC_FIELDS:
                record.pop(name, None)
    return records


def _as_file_rows(records: list[dict[str, object]]) -> pd.DataFrame:
    """The records as a file's text cells (what ingestion hands to cleaning)."""
    rows = [{k: (None if v is None else ", ".join(v) if isinstance(v, list) else str(v)) for k, v in r.items()}
            for r in records]  # fmt: skip
    return pd.DataFrame(rows, dtype=object)


def test_a_record_and_a_file_row_of_the_same_text_are_the_same_customer(tmp_path: Path) -> None:
    records = varied_records(tmp_path, n=600)
    from_api = parse_records(records, reference_date=DAY, today=DAY)
    cleaned = clean_customers(_as_file_rows(records), reference_date=DAY, drop_uninformative=False).customers
    from_file = CustomerBatch.from_frame(cleaned)
    assert len(cleaned) == len(records)  # nothing quarantined or merged: every record is compared
    np.testing.assert_array_equal(from_api.customer_ids, from_file.customer_ids)
    for name, values in from_file.numbers.items():
        np.testing.assert_array_equal(from_api.number(name), values, err_msg=name)
    for name, values in from_file.categories.items():
        assert list(from_api.categories[name]) == list(values), name
    assert from_api.channels == from_file.channels
    assert np.isnan(from_api.number("exp_volume")).any()  # the comparison does cover gaps


def test_json_typed_values_read_like_their_text() -> None:
    text = {"CustomerID": "42", "ExpVolume": "41000.5", "ActualVolume": "1e5", "NumAlerts": "3", "isPep": "1",
            "CTRMatch": "TRUE", "HighIncomeHW": "0.0", "SubscribedChannels": "MobileApp, ATM"}  # fmt: skip
    typed = {"CustomerID": 42, "ExpVolume": 41000.5, "ActualVolume": 100000, "NumAlerts": 3, "isPep": 1,
             "CTRMatch": True, "HighIncomeHW": 0.0, "SubscribedChannels": ["MobileApp", "ATM"]}  # fmt: skip
    a, b = (parse_records([r], reference_date=DAY) for r in (text, typed))
    assert a.numbers.keys() == b.numbers.keys()
    for name in a.numbers:
        np.testing.assert_array_equal(a.numbers[name], b.numbers[name])
    assert a.channels == b.channels == [("ATM", "MobileApp")]


def _problems(records: list[object], today: date | None = None) -> list[tuple[int, str, str]]:
    with pytest.raises(RecordsInvalid) as caught:
        parse_records(records, reference_date=DAY, today=today or DAY)
    return [(p.row, p.field, p.message) for p in caught.value.problems]


def test_refusals_name_the_record_and_field() -> None:
    problems = _problems(
        [
            {"CustomerID": 1, "ExpVolume": -5},
            {"CustomerID": 2, "Colour": "red"},
            {"CustomerID": "1e3"},
            {"ExpVolume": 10},
            {"CustomerID": 3, "isPep": "maybe", "Gender": 5, "SubscribedChannels": [1, 2]},
            {"CustomerID": 4, "DateofBirth": "2030-01-01", "CustomerSince": "2027-01-01"},
            {"CustomerID": 5, "DateofBirth": "1890-01-01"},
            {"CustomerID": 6, "isPep": 1, "Is PEP": 0},
            {"CustomerID": 7.5},
            "not an object",
            {"CustomerID": 8, "NumAlerts": 1e16, "City": "x" * 1_001},
        ]
    )
    fields = {(row, field) for row, field, _ in problems}
    assert {(0, "ExpVolume"), (1, "Colour"), (2, "CustomerID"), (3, "CustomerID")} <= fields
    assert {(4, "isPep"), (4, "Gender"), (4, "SubscribedChannels")} <= fields
    assert {(5, "DateofBirth"), (5, "CustomerSince"), (6, "DateofBirth"), (7, "Is PEP"), (8, "CustomerID")} <= fields
    assert {(9, ""), (10, "NumAlerts"), (10, "City")} <= fields
    messages = {(row, field): message for row, field, message in problems}
    # The same rule, the same words as a file's quarantine reasons.
    assert messages[(0, "ExpVolume")] == "negative exp_volume"
    assert messages[(1, "Colour")] == "unknown field"
    assert messages[(5, "DateofBirth")] == "date_of_birth in the future"
    assert messages[(6, "DateofBirth")] == "age over 120"
    assert messages[(10, "NumAlerts")] == "num_alerts above 1e+15"
    assert "exponent notation" in messages[(2, "CustomerID")] and "not a whole number" in messages[(8, "CustomerID")]


def test_aliases_and_identical_repeats_are_accepted() -> None:
    parsed = parse_records(
        [{"customer id": "7", "Is PEP": "Y", "expected transaction volume": "1,000", "isPep": "Y", "CIF": "7"}],
        reference_date=DAY,
    )
    assert parsed.customer_ids.tolist() == ["7"]
    assert parsed.number("is_pep")[0] == 1.0 and parsed.number("exp_volume")[0] == 1000.0


def test_customers_who_joined_after_training_are_ordinary() -> None:
    reference = date(2026, 1, 1)
    today = reference + timedelta(days=100)
    parsed = parse_records([{"CustomerID": 1, "CustomerSince": (today - timedelta(days=3)).isoformat()}],
                           reference_date=reference, today=today)  # fmt: skip
    assert parsed.number("tenure_years")[0] == pytest.approx(-97 / 365.25)  # negative tenure at the reference date
    with pytest.raises(RecordsInvalid):
        parse_records([{"CustomerID": 1, "CustomerSince": (today + timedelta(days=1)).isoformat()}],
                      reference_date=reference, today=today)  # fmt: skip


def test_a_batch_reads_as_each_record_alone() -> None:
    """Few records are parsed one by one, many over their distinct values: the same values and refusals."""
    rng = np.random.default_rng(3)
    values = [(date(1801, 1, 1) + timedelta(days=int(d))).isoformat() for d in rng.integers(0, 140_000, 60)]
    values += ["25/09/1994", "N/A", "٢٠٢٠-01-01", "2023-02-30", None, "36000", "1994-09-25T10:30:00"]
    records = [{"CustomerID": i, "IncorporatedSince": v, "ExpVolume": f"{i},000", "City": f" C{i % 3} "}
               for i, v in enumerate(values)]  # fmt: skip
    singles = []
    for record in records:
        try:
            singles.append(parse_records([record], reference_date=DAY, today=DAY))
        except RecordsInvalid:
            singles.append(None)
    refused = {i for i, single in enumerate(singles) if single is None}
    assert refused  # some of these are unreadable
    assert {row for row, _, _ in _problems(records)} == refused
    kept = [r for i, r in enumerate(records) if i not in refused]
    batch = parse_records(kept, reference_date=DAY, today=DAY)
    alone = [s for s in singles if s is not None]
    for name in ("exp_volume",):
        np.testing.assert_array_equal(batch.number(name), [s.number(name)[0] for s in alone])
    assert list(batch.categories["city"]) == [s.categories["city"][0] for s in alone]


def test_numbers_beyond_float_are_refused_in_small_and_big_batches() -> None:
    for size in (3, 200):  # one by one below 65 records, one NumPy conversion above
        records: list[dict[str, object]] = [{"CustomerID": i, "ExpVolume": 1_000 + i} for i in range(size)]
        records[1]["ExpVolume"] = 10**400
        assert [(row, field) for row, field, _ in _problems(records)] == [(1, "ExpVolume")]
        records[1]["ExpVolume"] = 2_500
        parsed = parse_records(records, reference_date=DAY, today=DAY)
        assert parsed.number("exp_volume").tolist() == [1_000.0, 2_500.0, *(1_000.0 + i for i in range(2, size))]


def _one_by_one(kind: fields.Kind, values: list[object]) -> ParsedColumnLike:
    """What the kind's parser gives each value alone: (parsed values, {row: Bad})."""
    parsed = [fields.PARSERS[kind](value) for value in values]
    return parsed, {row: p for row, p in enumerate(parsed) if type(p) is fields.Bad}


ParsedColumnLike = tuple[list[object], dict[int, object]]


def _assert_column_reads_as_each_value(kind: fields.Kind, values: list[object]) -> None:
    column = field_columns.parse_column(kind, values)
    expected, refused = _one_by_one(kind, values)
    assert dict(zip(column.bad_rows.tolist(), column.bad, strict=True)) == refused, kind
    for row, value in enumerate(expected):
        if row in refused:
            continue
        got = column.values[row]
        if kind in (fields.Kind.NUMBER, fields.Kind.FLAG, fields.Kind.DATE):
            assert (value is None and np.isnan(got)) or got == value, (kind, values[row], got, value)
        else:
            assert got == value and type(got) is type(value), (kind, values[row], got, value)


_NOT_ISO_DAYS = ["2023-02-29", "2023-04-31", "2023-13-01", "2023-00-10", "2023-04-00", "0000-01-01", "1799-12-31",
                 "2200-01-01", "9999-12-31", " 2023-01-01", "2023-1-01", "02/01/1980", "N/A", "", True, 1, 40000.0,
                 "2020-01-01"]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        # ids: whole JSON numbers at once (their digits); anything else through the parser
        (fields.Kind.ID, list(range(90)) + [2**63 - 1]),
        (fields.Kind.ID, list(range(90)) + [2**63, -1, None, True, 1.0, "0012", " 77 ", "1e5"]),
        # flags: 1 / 0 / missing at once; a 2, a boolean or text through the parser
        (fields.Kind.FLAG, [0, 1, None] * 30),
        (fields.Kind.FLAG, [0, 1, None, 2, True, False, "Y", 1.0, -0.0] * 10),
        # dates: ISO texts of real days in 1800-2199 read by NumPy; the others by the parser
        (fields.Kind.DATE, ["2023-02-28", "2024-02-29", None, "1800-01-01", "2199-12-31"] * 20),
        (fields.Kind.DATE, _NOT_ISO_DAYS * 5),
        # channels: lists of text joined as the parser joins them; a list holding anything else refused
        (fields.Kind.CHANNELS, [["ATM", "MobileApp"], None, [], ["MobileApp", "ATM", "ATM"]] * 20),
        (fields.Kind.CHANNELS, [["ATM"], None, ["A", None], "ATM,, x", ["a" * 600, "b" * 600], ["x", 1], 1, True] * 10),
        # text columns: distinct values found by Arrow, a lone surrogate (Arrow cannot hold it) by the parser
        (fields.Kind.CATEGORY, ["a", " b  c", None, "n/a", "x" * 1001] * 20),
        (fields.Kind.CATEGORY, ["a", 1, True, 0, False, 1.0, "\ud800"] * 20),
        (fields.Kind.NUMBER, ["1,000", "2.5", None, "abc", 3, 4.5, True] * 20),
    ],
)
def test_a_column_at_once_reads_as_each_value_alone(kind: fields.Kind, values: list[object]) -> None:
    """Many values of a request are read a column at a time (JSON numbers converted at once, texts matched and
    factorised by Arrow): the same values and the same refusals as the parser one value at a time, a boolean
    never taken for 1 or 0."""
    assert len(values) > 64  # the column path, not the per-value one
    _assert_column_reads_as_each_value(kind, values)


def test_every_iso_day_of_the_plausible_years_reads_as_the_parser_reads_it() -> None:
    first, last = date(1799, 12, 1).toordinal(), date(2200, 1, 31).toordinal()
    days = [date.fromordinal(day).isoformat() for day in range(first, last + 1)]
    _assert_column_reads_as_each_value(fields.Kind.DATE, days)
    as_arrow = field_columns.parse_column(fields.Kind.DATE, pa.array(days, pa.large_string()))  # a file's column
    np.testing.assert_array_equal(as_arrow.values, field_columns.parse_column(fields.Kind.DATE, days).values)
