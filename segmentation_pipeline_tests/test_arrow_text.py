"""Arrow text columns: the bulk paths read every value exactly as the per-value rules of ``stages/fields.py`` and
``stages/cell_text.py`` do (those rules stay the one definition; Arrow only does the repetitive part)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from segmentation_pipeline.stages import field_columns, fields
from segmentation_pipeline.stages.cell_text import cell_text, float_texts
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.fields import Kind

RNG = np.random.default_rng(20261130)

TRICKY_NUMBERS = [
    "0", "007", "1", "1.5", "1.50", "1,5", "1.234", "1,234", "1.234,56", "1,234.56", "12,34,567.50", "1'234.5",
    " 42 ", "4 2", "1\u00a0234,5", "-3", "+3", "1e5", "1E-3", ".5", "5.", "1..2", "N/A", "-", "", "inf", "-Infinity",
    "999999999999999999", "1" * 19, "0.000000000000000001", "123456789012345678.123456789012345678", "12a", "١٢",
]  # fmt: skip


def _corpus() -> list[str | None]:
    plain = [str(v) for v in RNG.integers(0, 10**12, 300)]
    decimals = [f"{v:.{RNG.integers(1, 8)}f}" for v in RNG.lognormal(8, 5, 300)]
    grouped = [f"{int(v):,}" for v in RNG.integers(1000, 10**9, 100)]
    return [*TRICKY_NUMBERS, *plain, *decimals, *grouped, None] * 2  # repeated: more than parse_column's few


def _same(a: field_columns.ParsedColumn, b: field_columns.ParsedColumn) -> None:
    if a.values.dtype.kind == "f":
        np.testing.assert_array_equal(a.values, b.values)  # NaN where NaN, bit-equal floats elsewhere
    else:
        assert a.values.tolist() == b.values.tolist()
    assert a.bad_rows.tolist() == b.bad_rows.tolist()
    assert [bad.reason for bad in a.bad] == [bad.reason for bad in b.bad]


@pytest.mark.parametrize("decimal", [fields.DECIMAL_POINT, fields.DECIMAL_COMMA])
def test_numbers_read_from_arrow_text_exactly_as_one_by_one(decimal: str) -> None:
    values = _corpus()
    arrow = field_columns.parse_column(Kind.NUMBER, pa.array(values, pa.large_string()), decimal=decimal)
    python = field_columns.parse_column(Kind.NUMBER, np.array(values, dtype=object), decimal=decimal)
    _same(arrow, python)
    for value, parsed in zip(values, arrow.values.tolist(), strict=True):  # and each as the per-value rule says
        expected = fields.number(value, decimal)
        if type(expected) is fields.Bad or expected is None:
            assert np.isnan(parsed)
        else:
            assert parsed == expected, value


def test_ids_read_from_arrow_text_exactly_as_one_by_one() -> None:
    values = [*_corpus(), "000123", "C-1/2", "A1", "1504161.0", "-5", "1.2e3", " 77 ", "x" * 70, "9" * 64, "9" * 65]
    arrow = field_columns.parse_column(Kind.ID, pa.array(values, pa.large_string()))
    python = field_columns.parse_column(Kind.ID, np.array(values, dtype=object))
    _same(arrow, python)


def test_decimal_marks_of_arrow_text_match_the_per_value_reading() -> None:
    cases = [
        ["1", "22", "1,234"],  # cannot tell
        ["1.5", "2", "3.25"],  # point
        ["1,5", "2", "1.234,56"],  # comma
        ["1.5", "1,5"],  # both: refused
        ["1 234,5", "7"],  # a space-grouped value: read one by one
        ["abc", None, "", " 1.5 "],
        _corpus(),
    ]
    for texts in cases:
        assert fields.decimal_marks(pa.array(texts, pa.large_string())) == fields.decimal_marks(texts), texts


def test_float_cells_are_written_as_cell_text_writes_them() -> None:
    values = np.concatenate([
        RNG.lognormal(8, 4, 2000).round(2), RNG.lognormal(0, 12, 2000), RNG.normal(0, 1e6, 2000),
        RNG.integers(-(10**12), 10**12, 500).astype(float),
        [0.0, -0.0, 0.1, 1e-4, 9.99e-5, 1e15, 1e16, 1e16 + 2, 2.0**63, -(2.0**63), 1e300, 5e-324],
        [np.inf, -np.inf, np.nan],
    ])  # fmt: skip
    with np.errstate(over="ignore"):  # 1e300 is infinite as a float32: written "INF", as cell_text writes it
        singles = values.astype(np.float32)
    for array in (pa.array(values), pa.array(singles), pa.array(np.tile(values[::7], 3))):  # last: repeats
        expected = [cell_text(float(v)) for v in array.to_numpy(zero_copy_only=False)]
        assert float_texts(array.to_numpy(zero_copy_only=False)).to_pylist() == expected
    with_nulls = pa.array([1.5, None, 2.0])
    assert float_texts(with_nulls.to_numpy(zero_copy_only=False)).to_pylist() == ["1.5", None, "2"]


def test_channels_of_a_customer_are_united_beyond_sixty_four_names() -> None:
    # The union is a bit mask over the file's channel names; more names than an int64 has bits still unite.
    names = [f"Channel {i:03d}" for i in range(70)]
    raw = pd.DataFrame({
        "CustomerID": ["1"] * 70 + ["2", "2", "3"],
        "SubscribedChannels": [*names, "ATM", "Channel 069", None],
        "Gender": ["M"] * 70 + ["F", "F", "M"],
    })  # fmt: skip
    customers = clean_customers(raw, reference_date=date(2026, 6, 30), drop_uninformative=False).customers
    channels = dict(zip(customers["customer_id"], customers["subscribed_channels"], strict=True))
    assert channels == {"1": sorted(names), "2": ["ATM", "Channel 069"], "3": []}
