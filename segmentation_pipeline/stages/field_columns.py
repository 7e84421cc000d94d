"""A column at a time: :func:`parse_column` applies a kind's parser (``stages/fields.py``, the one set of rules) to
a whole column. A file's column (Arrow text) is read over its distinct values only, those of a few plain forms
(canonical numbers and ids, ISO dates of real days) converted by Arrow and NumPy in bulk exactly as the parser reads
them; an API request's many JSON values are converted by Arrow in one pass where their type allows; a few values
are read one by one. Whichever path, the same parser decides what a value means (tests compare the paths).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from segmentation_pipeline.stages import arrow_text
from segmentation_pipeline.stages.fields import (
    DAY_FIRST,
    DECIMAL_COMMA,
    DECIMAL_POINT,
    K_CATEGORY,
    K_CHANNELS,
    K_DATE,
    K_FLAG,
    K_ID,
    K_NUMBER,
    MAX_ID_LENGTH,
    PARSERS,
    UNIX_EPOCH_DAY,
    Bad,
    Kind,
    date_ordinal,
    number,
)

__all__ = ["ParsedColumn", "parse_column"]

# Text every reader leaves as it is: plain digits with a decimal point (a number under the decimal point; digits
# alone under either mark) and ids of digits alone. A column's distinct values of this form are converted by Arrow
# in one call; ``number`` / ``customer_id`` read them exactly so (float(text), the text itself), as tests prove.
_CANONICAL_NUMBER = {DECIMAL_POINT: re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?"),
                     DECIMAL_COMMA: re.compile(r"[0-9]{1,18}")}  # fmt: skip
_CANONICAL_ID = re.compile(rf"[0-9]{{1,{MAX_ID_LENGTH}}}")
# An ISO date in the years 1800-2199 (``FIRST_DATE`` to ``LAST_DATE``): read by NumPy when it is a real day.
_ISO_DATE = re.compile(r"(?:18|19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}")


@dataclass
class ParsedColumn:
    """A column's parsed values and the positions of those that could not be read (with the reasons).

    ``values``: float64 for numbers, flags and dates (day numbers; NaN = missing or unreadable), an object array
    of str/None for ids and categories, of tuples for channels. A column parsed over its distinct values also
    keeps how: ``values == table[codes]`` (``codes`` per row, ``table`` the parsed value of each distinct one, its
    last entry the missing value that code -1 picks), so a caller can build a compact column without a Python
    object per row."""

    values: np.ndarray
    bad_rows: np.ndarray  # int positions
    bad: list[Bad]
    codes: np.ndarray | None = None
    table: np.ndarray | None = None


_NO_ROWS: Final = np.zeros(0, dtype=np.intp)
_SMALL = 64  # up to this many values, one by one beats finding the distinct ones


def parse_column(
    kind: Kind,
    values: Sequence[object] | np.ndarray,
    *,
    decimal: str = DECIMAL_POINT,
    order: str = DAY_FIRST,
    latest_year: int | None = None,
) -> ParsedColumn:
    """Parse one column with its kind's parser: per value for a few values, over the distinct values for many.
    ``decimal`` is the decimal mark of a number column's text, ``order`` the day/month order of a date column and
    ``latest_year`` the latest year a two-digit year may mean (see :func:`number`, :func:`date_ordinal`)."""
    parse = PARSERS[kind]
    if kind is K_NUMBER and decimal != DECIMAL_POINT:
        parse = partial(number, decimal=decimal)
    elif kind is K_DATE and (order != DAY_FIRST or latest_year is not None):
        parse = partial(date_ordinal, order=order, latest_year=latest_year)
    n = len(values)
    texts = arrow_text.text_array(values)
    if texts is not None and n <= _SMALL:
        values, texts = texts.to_pylist(), None
    if texts is None and n > _SMALL:
        if isinstance(values, np.ndarray):
            native = _native_numbers(values) if kind is K_NUMBER else None
        else:
            native = _json_column(kind, values)
        if type(native) is ParsedColumn:
            return native
        texts = native
    if texts is not None:  # a file's column as Arrow text (or many Python texts): distinct values found by Arrow
        codes, uniques = arrow_text.factorize(texts)
        bulk = _bulk_distinct(kind, uniques, decimal)
        if bulk is not None and len(bulk[0]) == len(uniques):  # all read in bulk: no Python object per value
            table = np.empty(len(uniques) + 1, dtype=bulk[1].dtype)
            table[:-1] = bulk[1]
            table[-1] = None if kind is K_ID else np.nan
            return ParsedColumn(table[codes], _NO_ROWS, [], codes, table)
        parsed = _parse_distinct(parse, uniques, bulk)
    elif n <= _SMALL:  # a request's few values: one by one, no hashing
        parsed = [parse(value) for value in values]
        codes = None
    else:
        # np.fromiter: an object array whose items stay as they are (slice assignment would read tuples as rows).
        items = map(_channel_key, values) if kind is K_CHANNELS else map(_apart, values)
        array = np.fromiter(items, dtype=object, count=n)
        codes, uniques = pd.factorize(array, use_na_sentinel=True)  # None -> -1
        parsed = [parse(value.value if type(value) is _Apart else value) for value in uniques]
    missing = () if kind is K_CHANNELS else None
    bad_positions = [i for i, p in enumerate(parsed) if type(p) is Bad]
    clean = [missing if type(p) is Bad else p for p in parsed] if bad_positions else parsed
    if kind in (K_CATEGORY, K_CHANNELS, K_ID):
        table = np.empty(len(clean) + (codes is not None), dtype=object)
        table[: len(clean)] = clean
        if codes is not None:
            table[-1] = missing
    elif codes is None and None not in clean:
        table = np.array(clean, dtype=np.float64)
    else:
        table = np.array([np.nan if p is None else p for p in clean], dtype=np.float64)
        if codes is not None:
            table = np.append(table, np.nan)
    if codes is None:
        if not bad_positions:
            return ParsedColumn(table, _NO_ROWS, [])
        return ParsedColumn(table, np.asarray(bad_positions, dtype=np.intp), [parsed[i] for i in bad_positions])  # type: ignore[misc]
    out = table[codes]  # code -1 picks the last entry: missing
    if not bad_positions:
        return ParsedColumn(out, _NO_ROWS, [], codes, table)
    is_bad = np.zeros(len(parsed), dtype=bool)
    is_bad[bad_positions] = True
    bad_rows = np.flatnonzero((codes >= 0) & is_bad[np.maximum(codes, 0)])
    return ParsedColumn(out, bad_rows, [parsed[codes[row]] for row in bad_rows], codes, table)  # type: ignore[misc]


def _bulk_distinct(kind: Kind, uniques: pa.Array, decimal: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct texts read in a few Arrow and NumPy calls, as (their positions, their values): canonical
    numbers and ids (see ``_CANONICAL_NUMBER``) and ISO dates of real days in the plausible years (``_ISO_DATE``),
    which their kind's parser reads exactly so (tests compare); None when there are none."""
    pattern = (_CANONICAL_NUMBER[decimal] if kind is K_NUMBER else _CANONICAL_ID if kind is K_ID
               else _ISO_DATE if kind is K_DATE else None)  # fmt: skip
    fast = None if pattern is None else arrow_text.fullmatch(uniques, pattern)
    if fast is None or not fast.any():
        return None
    at = np.flatnonzero(fast)
    texts = uniques.take(pa.array(at))
    if kind is K_ID:
        return at, texts.to_numpy(zero_copy_only=False)
    if kind is K_NUMBER:
        return at, pc.cast(texts, pa.float64()).to_numpy(zero_copy_only=False)
    days, real = _iso_days(texts)
    if not real.all():  # 2023-02-30 and the like: the parser says why
        return (at[real], days[real].astype(np.float64)) if real.any() else None
    return at, days.astype(np.float64)


def _parse_distinct(parse: Callable[[object], object], uniques: pa.Array,
                    bulk: tuple[np.ndarray, np.ndarray] | None) -> list[object]:  # fmt: skip
    """The parsed value of each distinct text: those ``bulk`` read (see :func:`_bulk_distinct`) as it read them,
    every other by its kind's parser."""
    if bulk is None:
        return [parse(value) for value in uniques.to_pylist()]
    at, converted = bulk
    parsed: list[object] = [None] * len(uniques)
    for position, value in zip(at.tolist(), converted.tolist(), strict=True):
        parsed[position] = value
    rest = np.ones(len(uniques), dtype=bool)
    rest[at] = False
    rest_at = np.flatnonzero(rest)
    for position, value in zip(rest_at.tolist(), uniques.take(pa.array(rest_at)).to_pylist(), strict=True):
        parsed[position] = parse(value)
    return parsed


@dataclass(frozen=True, slots=True, eq=False)  # equal to itself alone: one instance per value
class _Apart:
    """A value's stand-in when a column's distinct values are found, for values equal to others that the parsers
    read differently: True == 1 == 1.0 and -0.0 == 0 (``true`` is no customer id, 1 is; -0.0 is no flag, 0 is)."""

    value: object


_APART: Final = {True: _Apart(True), False: _Apart(False)}
_NEGATIVE_ZERO: Final = _Apart(-0.0)


def _apart(value: object) -> object:
    kind = type(value)
    if kind is bool:
        return _APART[value]  # type: ignore[index]
    if kind is float and value == 0 and str(value)[0] == "-":
        return _NEGATIVE_ZERO
    return value


def _channel_key(value: object) -> object:
    """A hashable stand-in of a channels value with the same reading: a list of names reads as their text joined
    by commas (see :func:`channels`); a list holding anything else stays a (refused) tuple."""
    if type(value) is list:
        return ",".join(value) if all(type(part) is str for part in value) else tuple(value)
    return _apart(value)


def _iso_days(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Texts matching ``_ISO_DATE`` (ten ASCII characters each, none missing) -> (their day numbers, whether each
    is a real day): what ``datetime.fromisoformat(text).toordinal()`` gives for a real one (tests compare every
    day of the plausible years). The digits are read straight from Arrow's buffer."""
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    _, offsets, data = texts.buffers()
    first = int(np.frombuffer(offsets, dtype=offset_type)[texts.offset])
    chars = np.frombuffer(data, dtype=np.uint8, count=10 * len(texts), offset=first).reshape(-1, 10)
    digits = chars.astype(np.int64) - ord("0")
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 5] * 10 + digits[:, 6]
    day = digits[:, 8] * 10 + digits[:, 9]
    months = (year - 1970) * 12 + np.clip(month, 1, 12) - 1
    start = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    following = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    real = (month >= 1) & (month <= 12) & (day >= 1) & (day <= following - start)
    return start + day - 1 + UNIX_EPOCH_DAY, real


_NATIVE_NUMBER_TYPES: Final = frozenset({float, int, type(None)})


def _native_numbers(values: np.ndarray) -> ParsedColumn | None:
    """Many numbers in a NumPy array (no text): converted in one call (infinity stays infinite, as :func:`number`
    reads it)."""
    if values.dtype.kind == "f":
        array = values.astype(np.float64)
    else:
        if not set(map(type, values)) <= _NATIVE_NUMBER_TYPES:
            return None
        try:
            array = np.array(values, dtype=np.float64)  # None -> NaN
        except OverflowError:
            return None  # an integer beyond float64: the per-value path names it
    return ParsedColumn(array, _NO_ROWS, [])


def _json_column(kind: Kind, values: Sequence[object]) -> ParsedColumn | pa.Array | None:
    """Many values as a JSON decoder gives them, converted by Arrow in one pass where every value is of one JSON
    type that the kind's parser reads alike: numbers (infinity stays infinite, as :func:`number` reads it), flags
    when all are 1, 0 or missing, ids when all are whole numbers from 0 to 2^63 (their digits, as
    :func:`customer_id` writes them): the parsed column. All text (or missing), or for channels all lists of text:
    one Arrow text array (lists joined by commas, as :func:`channels` joins them), whose distinct values are then
    found by Arrow as a file's are. None for any other column (booleans, mixed types: value by value)."""
    try:
        array = pa.array(values)  # infers one type, or raises for a mix (a boolean among numbers, text and numbers)
    except (pa.ArrowException, OverflowError, UnicodeError, TypeError, ValueError):
        return None  # an int beyond 64 bits, a lone surrogate, a mix: the parser reads each and names what it refuses
    kind_of_array = array.type
    if pa.types.is_string(kind_of_array):
        return array
    if pa.types.is_int64(kind_of_array) or pa.types.is_floating(kind_of_array):
        if kind is K_NUMBER:
            return ParsedColumn(array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False), _NO_ROWS, [])
        whole = pa.types.is_int64(kind_of_array)
        if kind is K_FLAG and whole and pc.all(pc.is_in(array.drop_null(), pa.array([0, 1]))).as_py() is not False:
            return ParsedColumn(array.to_numpy(zero_copy_only=False).astype(np.float64), _NO_ROWS, [])
        if kind is K_ID and whole and array.null_count == 0 and pc.min(array).as_py() >= 0:
            return ParsedColumn(pc.cast(array, pa.string()).to_numpy(zero_copy_only=False), _NO_ROWS, [])
        return None
    listed = pa.types.is_list(kind_of_array) and pa.types.is_string(kind_of_array.value_type)
    if kind is K_CHANNELS and listed and pc.list_flatten(array).null_count == 0:  # a null in a list is refused
        return pc.binary_join(array, ",")
    return None
