"""The fast scorer gives exactly what the pipeline's own path gives (clean_records + assign + tiers.reasons), and
its per-value parsers read every value exactly as stages/cleaning.py reads a file's cell."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.stages import cleaning
from segmentation_pipeline.stages.fast_scoring import (
    DATE_FIELDS,
    FLAG_FIELDS,
    NUMBER_FIELDS,
    FastScorer,
    RecordsInvalid,
    parse_records,
)
from segmentation_pipeline.stages.tiering import risk_indicators
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline_tests.api_fixtures import file_records, train_warehouse

EXP = NUMBER_FIELDS.index("exp_volume")
PEP = FLAG_FIELDS.index("is_pep")
INCORPORATED, SINCE = DATE_FIELDS.index("incorporated_since"), DATE_FIELDS.index("customer_since")
NUMERIC_FIELDS = ("ExpVolume", "ActualVolume", "CashUsage", "NumAlerts", "NonFacetoFaceUsage", "onlineFTusage")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    directory = tmp_path_factory.mktemp("fast_scoring")
    warehouse = train_warehouse(directory)
    return directory, load_model(Warehouse(warehouse))


def _varied_records(directory: Path, n: int = 1_500) -> list[dict[str, object]]:
    """New customers (not the training ones) with gaps, unknown categories and the spellings banks use."""
    source = write_export(generate_export(n, seed=99), directory / "new.csv")
    records = file_records(source)
    rng = np.random.default_rng(5)
    for i, record in enumerate(records):
        record["CustomerID"] = str(10_000_000 + i)  # no clash with the training ids
        for name in rng.choice(NUMERIC_FIELDS, size=int(rng.integers(0, 4)), replace=False):
            record.pop(str(name), None)  # gaps: imputed
        kind = i % 10
        if kind == 0:
            record["City"] = "ATLANTIS"  # unknown levels: the infrequent group (or nothing)
            record["Occupation"] = "Astronaut"
            record["Nationality"] = "ZZ"
        elif kind == 1:
            record["isPep"] = " yes "
            record["CTRMatch"] = "N"
            record["ExpVolume"] = "1,250,000"
        elif kind == 2 and "DateofBirth" in record:
            born = date.fromisoformat(str(record["DateofBirth"])[:10])
            record["DateofBirth"] = born.strftime("%d/%m/%Y")  # day-first text: cleaning's own parser
        elif kind == 3 and "CustomerSince" in record:
            since = date.fromisoformat(str(record["CustomerSince"])[:10])
            record["CustomerSince"] = str((since - date(1899, 12, 30)).days)  # an Excel serial number
        elif kind == 4:
            record["AccountType"] = "  First   Pension Account "  # spaces folded
            record["SubscribedChannels"] = "ATM,  MobileApp , ATM"
        elif kind == 5:
            record["Gender"] = "N/A"
            record["PreviouslyReported"] = ""
        elif kind == 6:
            record["Province"] = "Pünjab"  # non-ASCII: cleaning's own parser
            record["City"] = "LAHORE\t"
        elif kind == 7:
            for name in NUMERIC_FIELDS:
                record.pop(name, None)  # nothing numeric at all
    return records


def _reference(model: object, records: list[dict[str, object]]) -> tuple[pd.DataFrame, list[list[dict]]]:
    cleaned = model.clean_records(records)  # type: ignore[attr-defined]
    assigned = model.assign(cleaned)  # type: ignore[attr-defined]
    reasons = model.tiers.reasons(risk_indicators(cleaned), assigned["cluster"].to_numpy())  # type: ignore[attr-defined]
    return assigned, reasons


def _assert_same(model: object, records: list[dict[str, object]]) -> None:
    expected, expected_reasons = _reference(model, records)
    assert len(expected) == len(records)  # nothing quarantined or merged: the comparison covers every record
    scorer = FastScorer(model)  # type: ignore[arg-type]
    parsed = parse_records(records, reference_date=model.reference_date)  # type: ignore[attr-defined]
    scored = scorer.score(parsed)
    np.testing.assert_array_equal(scored.customer_id, expected["customer_id"].to_numpy())
    np.testing.assert_array_equal(scored.cluster, expected["cluster"].to_numpy())
    assert scored.risk_tier == list(expected["risk_tier"])
    np.testing.assert_allclose(scored.distance_to_centroid, expected["distance_to_centroid"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(scored.risk_score, expected["risk_score"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(scored.embedding[:, 0], expected["pc1"], rtol=0, atol=1e-9)
    assert scorer.reasons(scored) == expected_reasons
    # One at a time (the API's usual request) gives the same as the whole batch.
    for position in range(0, len(records), max(1, len(records) // 40)):
        single = scorer.score(parse_records([records[position]], reference_date=model.reference_date))  # type: ignore[attr-defined]
        assert int(single.cluster[0]) == int(scored.cluster[position])
        assert abs(float(single.distance_to_centroid[0]) - float(scored.distance_to_centroid[position])) < 1e-9
        assert scorer.reasons(single)[0] == expected_reasons[position]


def test_training_customers_score_exactly_as_the_pipeline(trained: tuple[Path, object]) -> None:
    directory, model = trained
    records = file_records(directory / "train_7.csv")
    _assert_same(model, records)


def test_new_customers_with_gaps_unknown_levels_and_odd_spellings(trained: tuple[Path, object]) -> None:
    directory, model = trained
    records = _varied_records(directory)
    parsed = parse_records(records, reference_date=model.reference_date)  # type: ignore[attr-defined]
    assert np.isnan(parsed.numbers).any()  # the comparison does cover gaps
    _assert_same(model, records)


def test_feature_matrix_equals_the_fitted_transformer(trained: tuple[Path, object]) -> None:
    directory, model = trained
    records = _varied_records(directory, n=400)
    expected = model.features.transform(model.clean_records(records)).to_numpy()  # type: ignore[attr-defined]
    actual = FastScorer(model).features(parse_records(records, reference_date=model.reference_date))  # type: ignore[arg-type, attr-defined]
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)


def test_json_typed_values_read_like_their_text(trained: tuple[Path, object]) -> None:
    """JSON numbers, booleans and channel lists give what the same values written in a cell give."""
    _, model = trained
    text = {"CustomerID": "42", "ExpVolume": "41000.5", "ActualVolume": "1e5", "NumAlerts": "3", "isPep": "1",
            "CTRMatch": "TRUE", "HighIncomeHW": "0.0", "SubscribedChannels": "MobileApp, ATM"}  # fmt: skip
    typed = {"CustomerID": 42, "ExpVolume": 41000.5, "ActualVolume": 100000, "NumAlerts": 3, "isPep": 1,
             "CTRMatch": True, "HighIncomeHW": 0.0, "SubscribedChannels": ["MobileApp", "ATM"]}  # fmt: skip
    scorer = FastScorer(model)  # type: ignore[arg-type]
    a = scorer.score(parse_records([text], reference_date=model.reference_date))  # type: ignore[attr-defined]
    b = scorer.score(parse_records([typed], reference_date=model.reference_date))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a.embedding, b.embedding)
    np.testing.assert_array_equal(a.contributions, b.contributions)


# --- per-value parsing equals cleaning's parsers -----------------------------------------------------------------

_NUMBERS = ["1", " 2500 ", "1,000", "1 000", "-5", "+7", ".5", "5.", "1e5", "1E+05", "2.5e-3", "N/A", "", "-",
            "nan", "NULL", "abc", "1_000", "0x10", "1.2.3", "١٢", "12\u00a0", "1e", "e5", "--5", "5-", "３", "inf",
            "1e999"]  # fmt: skip
_FLAGS = ["1", "0", "1.0", "0.0", "Y", "n", " yes ", "No", "TRUE", "false", "T", "f", "2", "-0.0", "maybe", "",
          "N/A", "ｙｅｓ", "Y\t"]  # fmt: skip
_CATEGORIES = ["Pension", "  First   Pension Account ", "N/A", "", "none", "Pünjab", "LAHORE\t", "a\u00a0b", "x  y  z"]
_CHANNELS = ["ATM", "ATM, MobileApp", " MobileApp ,ATM,ATM ", ",", "N/A", "", "ATM\t,Internet Banking", "ÄTM, ATM"]
_DATES = ["1994-09-25", "25/09/1994", "09/25/1994", "36000", "1994-09-25T10:30:00", "2023-02-30", "0001-01-01",
          "N/A", "", "not a date", "1994-9-25", "19940925"]  # fmt: skip


def _single(field: str, value: object) -> tuple[object, bool]:
    """(parsed value, refused?) of one value through parse_records."""
    try:
        day = date(2026, 6, 30)
        parsed = parse_records([{"CustomerID": 1, field: value}], reference_date=day, today=day)
    except RecordsInvalid as invalid:
        assert all(p.field == field for p in invalid.problems), invalid.problems
        return None, True
    return parsed, False


@pytest.mark.parametrize("text", _NUMBERS)
def test_numbers_parse_like_cleaning(text: str) -> None:
    expected, unparseable = cleaning.parse_numbers(pd.Series([text], dtype=object))
    value = expected.iloc[0]
    parsed, refused = _single("ExpVolume", text)
    if unparseable or (not pd.isna(value) and not np.isfinite(value)) or (not pd.isna(value) and value < 0):
        assert refused  # cleaning would count it unparseable or quarantine the customer: the API refuses it
    else:
        assert not refused
        got = parsed.numbers[0, EXP]  # type: ignore[union-attr]
        assert (np.isnan(got) and pd.isna(value)) or got == value


@pytest.mark.parametrize("text", _FLAGS)
def test_flags_parse_like_cleaning(text: str) -> None:
    expected, unparseable = cleaning.parse_flags(pd.Series([text], dtype=object))
    parsed, refused = _single("isPep", text)
    assert refused == bool(unparseable)
    if not refused:
        got, want = parsed.flags[0, PEP], expected.iloc[0]  # type: ignore[union-attr]
        assert (np.isnan(got) and pd.isna(want)) or got == want


@pytest.mark.parametrize("text", _CATEGORIES)
def test_categories_parse_like_cleaning(text: str) -> None:
    expected = cleaning.parse_categories(pd.Series([text], dtype=object)).iloc[0]
    parsed, refused = _single("City", text)
    assert not refused
    got = parsed.categories["city"][0]  # type: ignore[union-attr]
    assert got == (None if expected is None or pd.isna(expected) else expected)


@pytest.mark.parametrize("text", _CHANNELS)
def test_channels_parse_like_cleaning(text: str) -> None:
    expected = cleaning.split_channels(pd.Series([text], dtype=object)).iloc[0]
    parsed, refused = _single("SubscribedChannels", text)
    assert not refused
    assert parsed.channels[0] == tuple(expected)  # type: ignore[union-attr]


@pytest.mark.parametrize("text", _DATES)
def test_dates_parse_like_cleaning(text: str) -> None:
    reference = date(2026, 6, 30)
    parsed, refused = _single("IncorporatedSince", text)  # not subject to the quarantine rules
    try:
        expected, unparseable = cleaning.parse_dates(pd.Series([text], dtype=object))
    except pd.errors.OutOfBoundsDatetime:  # cleaning itself cannot read it (year 1): the API refuses it
        assert refused
        return
    assert refused == bool(unparseable)
    if not refused:
        want = expected.iloc[0]
        days = parsed.days[0, INCORPORATED]  # type: ignore[union-attr]
        if pd.isna(want):
            assert np.isnan(days)
        else:
            assert days == (pd.Timestamp(reference) - want).days


def test_random_number_spellings_parse_like_cleaning() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("0123456789.,+-eE ") + ["in", "f", "na", "x"]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 8)))) for _ in range(3_000)]
    texts += [repr(float(v)) for v in rng.lognormal(8, 4, 2_000)] + [str(int(v)) for v in rng.integers(0, 10**15, 500)]
    expected, _ = cleaning.parse_numbers(pd.Series(texts, dtype=object))
    texts_seen = cleaning._as_text(pd.Series(texts, dtype=object))
    for text, want, seen in zip(texts, expected, texts_seen, strict=True):
        parsed, refused = _single("ExpVolume", text)
        readable = not pd.isna(want) and np.isfinite(want) and want >= 0 and want <= 1e15
        if readable:
            assert not refused, text
            assert parsed.numbers[0, EXP] == want, text  # type: ignore[union-attr]
        elif pd.isna(want) and pd.isna(seen):
            assert not refused, text  # a 'no value' token: missing, imputed
        else:
            assert refused, text


# --- what the API refuses ------------------------------------------------------------------------------------------


def _problems(records: list[object], today: date | None = None) -> list[tuple[int, str, str]]:
    with pytest.raises(RecordsInvalid) as caught:
        parse_records(records, reference_date=date(2026, 6, 30), today=today or date(2026, 6, 30))
    return [(p.row, p.field, p.message) for p in caught.value.problems]


def test_refusals_name_the_record_and_field() -> None:
    problems = _problems(
        [
            {"CustomerID": 1, "ExpVolume": -5},
            {"CustomerID": 2, "Colour": "red"},
            {"CustomerID": "abc"},
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
    assert (0, "ExpVolume") in fields
    assert (1, "Colour") in fields
    assert (2, "CustomerID") in fields
    assert (3, "CustomerID") in fields
    assert {(4, "isPep"), (4, "Gender"), (4, "SubscribedChannels")} <= fields
    assert {(5, "DateofBirth"), (5, "CustomerSince")} <= fields
    assert (6, "DateofBirth") in fields
    assert (7, "Is PEP") in fields
    assert (8, "CustomerID") in fields
    assert (9, "") in fields
    assert {(10, "NumAlerts"), (10, "City")} <= fields
    messages = dict(((row, field), message) for row, field, message in problems)
    assert messages[(0, "ExpVolume")] == "must not be negative"
    assert messages[(1, "Colour")] == "unknown field"
    assert messages[(6, "DateofBirth")] == "age over 120"


def test_aliases_and_identical_repeats_are_accepted() -> None:
    parsed = parse_records(
        [{"customer id": "7", "Is PEP": "Y", "expected transaction volume": "1,000", "isPep": "Y", "CIF": "7"}],
        reference_date=date(2026, 6, 30),
    )
    assert parsed.customer_ids.tolist() == [7]
    assert parsed.flags[0, PEP] == 1.0
    assert parsed.numbers[0, EXP] == 1000.0


def test_customers_who_joined_after_training_are_ordinary() -> None:
    reference = date(2026, 1, 1)
    today = reference + timedelta(days=100)
    parsed = parse_records([{"CustomerID": 1, "CustomerSince": (today - timedelta(days=3)).isoformat()}],
                           reference_date=reference, today=today)  # fmt: skip
    assert parsed.days[0, SINCE] == -97  # negative tenure at the model's reference date, as the model sees it
    with pytest.raises(RecordsInvalid):
        parse_records([{"CustomerID": 1, "CustomerSince": (today + timedelta(days=1)).isoformat()}],
                      reference_date=reference, today=today)  # fmt: skip


def test_a_batch_of_dates_reads_as_each_date_alone() -> None:
    """Batches of plain ISO dates take a vectorised path; any other spelling sends the column to the per-value
    path. Either way each record's days and refusals equal those of the record sent alone."""
    day = date(2026, 6, 30)
    rng = np.random.default_rng(3)
    iso = [(date(1678, 1, 1) + timedelta(days=int(d))).isoformat() for d in rng.integers(0, 212_000, 60)]
    iso += ["1678-01-01", "2261-12-31", "2026-06-30", "2000-02-29"]
    odd = ["1677-12-31", "2262-01-01", "2023-02-30", "1994-9-25", " 1994-09-25", "25/09/1994", "N/A", "٢٠٢٠-01-01"]
    for extra in [[], [None, None], *([text] for text in odd)]:
        values = [*iso, *extra]
        records = [{"CustomerID": i, "IncorporatedSince": v} for i, v in enumerate(values)]
        singles = [_single("IncorporatedSince", v) for v in values]
        if any(refused for _, refused in singles):
            refused_rows = {row for row, _, _ in _problems(records)}
            assert refused_rows == {i for i, (_, refused) in enumerate(singles) if refused}
            continue
        batch = parse_records(records, reference_date=day, today=day).days[:, INCORPORATED]
        alone = np.array([parsed.days[0, INCORPORATED] for parsed, _ in singles])  # type: ignore[union-attr]
        np.testing.assert_array_equal(batch, alone)
    # The quarantine rules hold in a batch too: a birth date in the future and an age over 120 are refused.
    records = [{"CustomerID": i, "DateofBirth": "1980-01-01"} for i in range(30)]
    records[4]["DateofBirth"], records[9]["DateofBirth"] = "2027-01-01", "1890-01-01"
    assert [(row, message) for row, _, message in _problems(records)] == [(4, "date is in the future"),
                                                                        (9, "age over 120")]  # fmt: skip


def test_numbers_beyond_float_are_refused_in_small_and_big_batches() -> None:
    for size in (3, 200):  # per value below 65 records, one NumPy conversion above
        records: list[dict[str, object]] = [{"CustomerID": i, "ExpVolume": 1_000 + i} for i in range(size)]
        records[1]["ExpVolume"] = 10**400
        assert [(row, field) for row, field, _ in _problems(records)] == [(1, "ExpVolume")]
        records[1]["ExpVolume"] = 2_500  # the rest are read as the numbers they are
        parsed = parse_records(records, reference_date=date(2026, 6, 30), today=date(2026, 6, 30))
        assert parsed.numbers[:, EXP].tolist() == [1_000.0, 2_500.0, *(1_000.0 + i for i in range(2, size))]
