"""One parser per kind of field: how a customer id, a number, a flag, a date, a category or a set of channels is
read, written once and used by file cleaning and API records alike.

Each kind is a per-value function (``value -> parsed``) plus :func:`parse_column`, which applies it to a column:
a file's column is mapped over its distinct values only (exports repeat values heavily), an API request's few
values one by one. Either way the same function decides, so a cell of a file and a field of a request holding
the same text read the same.

Values arrive as text (a file's cells are kept as exported), or as JSON / native types (API records, Parquet):
``None`` is always "no value"; ``bool`` is a flag (never a number); ``int``/``float`` are numbers, flags written
as 1/0, or Excel serial dates; ``datetime.date`` is a date; a ``list`` of text is a set of channels.
A value that cannot be read is :class:`Bad` with the reason: cleaning counts it (the cell becomes missing), the API
refuses the record naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Final

import numpy as np
import pandas as pd
from dateutil import parser as _dateutil

from segmentation_pipeline import schema

# --- constants: every rule's numbers live here, nowhere else ------------------------------------------------------

NULL_TOKENS: Final = frozenset({"", "-", "--", "n/a", "na", "nan", "null", "none", "nil", "#n/a", "?"})
TRUE_TOKENS: Final = frozenset({"1", "1.0", "y", "yes", "true", "t"})
FALSE_TOKENS: Final = frozenset({"0", "0.0", "n", "no", "false", "f"})
DAYS_PER_YEAR: Final = 365.25  # ages and tenures in years: days / 365.25
MAX_AGE_YEARS: Final = 120  # a birth date more than 120 years before the reference date is impossible
MAX_ID: Final = 2**53  # customer ids are whole numbers; beyond 2^53 a float64 would silently change them
MAX_AMOUNT: Final = 1e15  # volumes and counts above this are not a customer (and would overflow the ratios)
MAX_TEXT_LENGTH: Final = 1_000  # text longer than this in one field is refused (no real export cell is near it)
FIRST_DATE: Final = date(1800, 1, 1)  # dates outside these bounds are placeholders (0001-01-01, 9999-12-31)
LAST_DATE: Final = date(2199, 12, 31)
_EXCEL_EPOCH: Final = date(1899, 12, 30).toordinal()  # Excel's day 0 (it counts 1900 as a leap year)
_LAST_SERIAL: Final = LAST_DATE.toordinal() - _EXCEL_EPOCH
_UNIX_EPOCH: Final = date(1970, 1, 1).toordinal()
_FIRST_DAY: Final = FIRST_DATE.toordinal()
_LAST_DAY: Final = LAST_DATE.toordinal()
_BIG: Final = 10**300  # integers beyond this are not numbers a customer record can hold

# A plain decimal number once thousands separators and spaces are removed.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEPARATORS = re.compile(r"[,\s]+")


class Kind(StrEnum):
    ID = "id"
    NUMBER = "number"
    FLAG = "flag"
    DATE = "date"
    CATEGORY = "category"
    CHANNELS = "channels"


# Members as plain module names: an Enum attribute lookup costs ~0.2 us, and a request compares kinds per field.
K_ID, K_NUMBER, K_FLAG, K_DATE, K_CATEGORY, K_CHANNELS = (
    Kind.ID, Kind.NUMBER, Kind.FLAG, Kind.DATE, Kind.CATEGORY, Kind.CHANNELS,
)  # fmt: skip


def kind_of(name: str) -> Kind:
    """The kind of a canonical column (a column the alias table does not know is a category)."""
    if name == schema.ID_COLUMN:
        return Kind.ID
    if name in schema.DATE_COLUMNS:
        return Kind.DATE
    if name in schema.FLAG_COLUMNS:
        return Kind.FLAG
    if name in schema.NON_NEGATIVE_COLUMNS or name in schema.BOOKKEEPING_COLUMNS:
        return Kind.NUMBER
    if name == schema.CHANNEL_COLUMN:
        return Kind.CHANNELS
    return Kind.CATEGORY


FIELD_KINDS: Final[dict[str, Kind]] = {name: kind_of(name) for name in schema.COLUMN_ALIASES}
# The years a date becomes (age at, or years since, the reference date): the only use the model makes of dates.
YEARS_OF_DATE: Final[dict[str, str]] = {"date_of_birth": "age", "customer_since": "tenure_years"}


@dataclass(frozen=True, slots=True)
class Bad:
    """A value that cannot be read, and why (a sentence fragment: "not a number: 'abc'")."""

    reason: str
    type: str = "value_error"  # the API's error type (pydantic's vocabulary)


def shown(value: object) -> str:
    """A value as messages quote it (short)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _text(value: str) -> str | None | Bad:
    """Stripped text; None for a 'no value' token; Bad when absurdly long."""
    if len(value) > MAX_TEXT_LENGTH:
        return Bad(f"longer than {MAX_TEXT_LENGTH} characters", "string_too_long")
    text = value.strip()
    return None if text.lower() in NULL_TOKENS else text


# --- the per-value parsers ----------------------------------------------------------------------------------------


def number(value: object) -> float | None | Bad:
    """A number as banks export it ("1,000", " 2500 ", 3.5, "N/A") -> float; finite only."""
    kind = type(value)
    if value is None:
        return None
    if kind is float:
        if value != value:  # NaN: what pandas and Parquet mean by "missing"
            return None
        return value if value - value == 0 else Bad("must be a finite number")  # type: ignore[return-value,operator]
    if kind is int:
        return float(value) if -_BIG < value < _BIG else Bad("number out of range")  # type: ignore[operator,arg-type]
    if kind is str:
        text = _text(value)  # type: ignore[arg-type]
        if text is None or type(text) is Bad:
            return text
        compact = _SEPARATORS.sub("", text)  # type: ignore[arg-type]
        if _PLAIN_NUMBER.fullmatch(compact):
            parsed = float(compact)
            return parsed if parsed - parsed == 0 else Bad("must be a finite number")
        return Bad(f"not a number: {shown(value)}", "float_parsing")
    if isinstance(value, np.floating | np.integer) and not isinstance(value, bool):
        return number(value.item())
    return Bad(f"expected a number, got {json_type(value)}", "float_type")


def customer_id(value: object) -> int | None | Bad:
    """A customer id: a whole number of at most 2^53 (an Excel float cell 1504161.0 is 1504161)."""
    parsed = number(value)
    if parsed is None or type(parsed) is Bad:
        return parsed  # type: ignore[return-value]
    if parsed != round(parsed) or abs(parsed) > MAX_ID:  # type: ignore[arg-type]
        return Bad(f"customer id {shown(value)} is not a whole number of at most {MAX_ID}")
    return int(parsed)  # type: ignore[arg-type]


_FLAG_OF: Final[dict[object, float]] = {**dict.fromkeys(TRUE_TOKENS, 1.0), **dict.fromkeys(FALSE_TOKENS, 0.0)}


def flag(value: object) -> float | None | Bad:
    """A flag written 1/0, Y/N, Yes/No, TRUE/FALSE (or JSON true/false) -> 1.0 / 0.0."""
    kind = type(value)
    if value is None:
        return None
    if kind is bool:
        return 1.0 if value else 0.0
    if kind is int:
        return 1.0 if value == 1 else 0.0 if value == 0 else Bad(f"not a flag (1/0): {value}", "bool_parsing")
    if kind is float:
        value = str(value)  # 1.0 -> "1.0" (a flag), -0.0 -> "-0.0" (not one)
    elif kind is not str:
        return Bad(f"expected a flag (1/0, Y/N, true/false), got {json_type(value)}", "bool_type")
    text = _text(value)  # type: ignore[arg-type]
    if text is None or type(text) is Bad:
        return text  # type: ignore[return-value]
    parsed = _FLAG_OF.get(text.lower())  # type: ignore[union-attr]
    if parsed is None:
        return Bad(f"not a flag (1/0, Y/N, Yes/No, TRUE/FALSE): {shown(value)}", "bool_parsing")
    return parsed


def date_ordinal(value: object) -> int | None | Bad:
    """A date -> its day number (``date.toordinal``). ISO text (time of day ignored), Excel serial numbers (as
    numbers or text) and day-first text (02/01/1980 is 2 January, 30-Jun-1975); dates outside 1800-2199 are
    placeholders, not dates."""
    kind = type(value)
    if value is None:
        return None
    if kind is str:
        try:  # plain ISO text (the usual spelling) needs no stripping: it is read as it is
            day = datetime.fromisoformat(value).toordinal()  # type: ignore[arg-type]
        except ValueError:
            text = _text(value)  # type: ignore[arg-type]
            if text is None or type(text) is Bad:
                return text  # type: ignore[return-value]
            day = _date_text(text)  # type: ignore[arg-type]
            if day is None:
                return Bad(f"not a date: {shown(value)}", "date_parsing")
    elif isinstance(value, date):  # datetime too (a date subclass): the calendar day
        day = value.toordinal()
    elif kind is int or kind is float:
        day = _serial(value)  # type: ignore[arg-type]
        if day is None:
            return Bad(f"not a date: {shown(value)}", "date_parsing")
    else:
        return Bad(f"expected a date (YYYY-MM-DD), got {json_type(value)}", "date_type")
    if not _FIRST_DAY <= day <= _LAST_DAY:
        return Bad(f"not a plausible date: {shown(value)}", "date_parsing")
    return day


def _serial(number_: float) -> int | None:
    """An Excel serial day number (1 = 1900-01-01) -> day number; None when it cannot be one."""
    if number_ - number_ != 0 or not 1 <= number_ <= _LAST_SERIAL:
        return None
    return _EXCEL_EPOCH + int(round(number_))


def _date_text(text: str) -> int | None:
    try:
        return datetime.fromisoformat(text).toordinal()
    except ValueError:
        pass
    if _PLAIN_NUMBER.fullmatch(text):
        return _serial(float(text))
    try:
        return _dateutil.parse(text, dayfirst=True).toordinal()
    except (ValueError, OverflowError):
        return None


def category(value: object) -> str | None | Bad:
    """Category text with surrounding and repeated inner spaces folded ("First  Pension Account")."""
    if value is None:
        return None
    if type(value) is not str:
        return Bad(f"expected text, got {json_type(value)}", "string_type")
    text = _text(value)
    if text is None or type(text) is Bad:
        return text
    return " ".join(text.split())  # type: ignore[union-attr]


def channels(value: object) -> tuple[str, ...] | Bad:
    """Subscribed channels: "ATM, MobileApp" or ["ATM", "MobileApp"] -> a sorted tuple; blank -> ()."""
    if value is None:
        return ()
    if type(value) is list or type(value) is tuple:
        if not all(type(part) is str for part in value):  # type: ignore[union-attr]
            return Bad("expected a list of channel names (text)", "string_type")
        value = ",".join(value)  # type: ignore[arg-type]
    elif type(value) is not str:
        return Bad(f"expected text or a list of channel names, got {json_type(value)}", "string_type")
    text = _text(value)  # type: ignore[arg-type]
    if text is None:
        return ()
    if type(text) is Bad:
        return text  # type: ignore[return-value]
    return tuple(sorted({part.strip() for part in text.split(",") if part.strip()}))  # type: ignore[union-attr]


PARSERS: Final[dict[Kind, Callable[[object], object]]] = {
    K_ID: customer_id,
    K_NUMBER: number,
    K_FLAG: flag,
    K_DATE: date_ordinal,
    K_CATEGORY: category,
    K_CHANNELS: channels,
}


# --- a column at a time -------------------------------------------------------------------------------------------


@dataclass
class ParsedColumn:
    """A column's parsed values and the positions of those that could not be read (with the reasons).

    ``values``: float64 for ids, numbers, flags and dates (day numbers; NaN = missing or unreadable), an object
    array of str/None for categories, of tuples for channels."""

    values: np.ndarray
    bad_rows: np.ndarray  # int positions
    bad: list[Bad]


_NO_ROWS: Final = np.zeros(0, dtype=np.intp)
_SMALL = 64  # up to this many values, one by one beats finding the distinct ones


def parse_column(kind: Kind, values: Sequence[object] | np.ndarray) -> ParsedColumn:
    """Parse one column with its kind's parser: per value for a few values, over the distinct values for many."""
    parse = PARSERS[kind]
    n = len(values)
    if n <= _SMALL:  # a request's few values: one by one, no hashing
        parsed = [parse(value) for value in values]
        codes = None
    else:
        if kind in (K_NUMBER, K_ID):
            fast = _native_numbers(values)
            if fast is not None:
                return fast if kind is K_NUMBER else _ids_from_numbers(fast, values)
        # np.fromiter: an object array whose items stay as they are (slice assignment would read tuples as rows).
        items = map(_channel_key, values) if kind is K_CHANNELS else values
        array = np.fromiter(items, dtype=object, count=n)
        codes, uniques = pd.factorize(array, use_na_sentinel=True)  # None -> -1
        parsed = [parse(value) for value in uniques]
    missing = () if kind is K_CHANNELS else None
    bad_positions = [i for i, p in enumerate(parsed) if type(p) is Bad]
    clean = [missing if type(p) is Bad else p for p in parsed] if bad_positions else parsed
    if kind in (K_CATEGORY, K_CHANNELS):
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
        return ParsedColumn(out, _NO_ROWS, [])
    is_bad = np.zeros(len(parsed), dtype=bool)
    is_bad[bad_positions] = True
    bad_rows = np.flatnonzero((codes >= 0) & is_bad[np.maximum(codes, 0)])
    return ParsedColumn(out, bad_rows, [parsed[codes[row]] for row in bad_rows])  # type: ignore[misc]


def _channel_key(value: object) -> object:
    """A hashable stand-in of a channels value with the same reading: a list of names reads as their text joined
    by commas (see :func:`channels`); a list holding anything else stays a (refused) tuple."""
    if type(value) is list:
        return ",".join(value) if all(type(part) is str for part in value) else tuple(value)
    return value


_NATIVE_NUMBER_TYPES: Final = frozenset({float, int, type(None)})


def _native_numbers(values: Sequence[object] | np.ndarray) -> ParsedColumn | None:
    """Many JSON numbers (no text): converted in one call, then checked with :func:`number`'s rules."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        array = values.astype(np.float64)
    else:
        if not set(map(type, values)) <= _NATIVE_NUMBER_TYPES:
            return None
        try:
            array = np.array(values, dtype=np.float64)  # None -> NaN
        except OverflowError:
            return None  # an integer beyond float64: the per-value path names it
    infinite = np.flatnonzero(np.isinf(array))
    if infinite.size == 0:
        return ParsedColumn(array, infinite, [])
    reasons = [number(float(array[row])) for row in infinite]
    array[infinite] = np.nan
    return ParsedColumn(array, infinite, reasons)  # type: ignore[arg-type]


def _ids_from_numbers(column: ParsedColumn, values: Sequence[object] | np.ndarray) -> ParsedColumn:
    ids = column.values
    wrong = np.flatnonzero(~np.isnan(ids) & ((ids != np.round(ids)) | (np.abs(ids) > MAX_ID)))
    if wrong.size == 0:
        return column
    rows = np.union1d(column.bad_rows, wrong)
    reasons = [customer_id(values[row]) for row in rows]
    ids = ids.copy()
    ids[rows] = np.nan
    return ParsedColumn(ids, rows, reasons)  # type: ignore[arg-type]


# --- what dates mean ----------------------------------------------------------------------------------------------


def years_before(reference: date, days: np.ndarray) -> np.ndarray:
    """Years from each day number to the reference date (age, tenure): whole days / 365.25."""
    return (reference.toordinal() - np.asarray(days, dtype=np.float64)) / DAYS_PER_YEAR


@lru_cache(maxsize=64)
def oldest_birth_date(reference: date) -> date:
    """The earliest possible birth date: MAX_AGE_YEARS before the reference date (29 February -> 28th)."""
    year = reference.year - MAX_AGE_YEARS
    try:
        return reference.replace(year=year)
    except ValueError:
        return reference.replace(year=year, day=28)


def ordinals_to_datetime64(days: np.ndarray) -> np.ndarray:
    """Day numbers (NaN = missing) -> datetime64[ns] (NaT = missing), as cleaned tables store dates."""
    days = np.asarray(days, dtype=np.float64)
    out = np.full(days.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    present = ~np.isnan(days)
    out[present] = (days[present].astype(np.int64) - _UNIX_EPOCH).astype("datetime64[D]")
    return out


def datetime64_to_ordinals(stamps: np.ndarray) -> np.ndarray:
    """datetime64 values (NaT = missing) -> day numbers (NaN = missing)."""
    stamps = np.asarray(stamps).astype("datetime64[D]")
    out = np.full(stamps.shape, np.nan)
    present = ~np.isnat(stamps)
    out[present] = stamps[present].astype(np.int64) + _UNIX_EPOCH
    return out


@dataclass(frozen=True)
class Impossible:
    """Values no real customer has: the customer is quarantined (a file) or refused (the API)."""

    column: str
    rows: np.ndarray
    reason: str


def impossible_values(
    numbers: dict[str, np.ndarray], dates: dict[str, np.ndarray], *, reference: date, latest: date | None = None
) -> list[Impossible]:
    """Negative volumes or counts, amounts above MAX_AMOUNT, birth or relationship dates after ``latest`` (default
    the reference date), births more than MAX_AGE_YEARS before the reference date. ``numbers`` by canonical name;
    ``dates`` as day numbers by canonical name."""
    found: list[Impossible] = []
    amounts = [(name, numbers[name]) for name in schema.NON_NEGATIVE_COLUMNS if name in numbers]
    if amounts:
        every = np.concatenate([values for _, values in amounts])  # NaN compares False, with no warning
        suspicious = bool(((every < 0) | (every > MAX_AMOUNT)).any())
        for name, values in amounts if suspicious else ():
            negative, huge = values < 0, values > MAX_AMOUNT
            if negative.any():
                found.append(Impossible(name, np.flatnonzero(negative), f"negative {name}"))
            if huge.any():
                found.append(Impossible(name, np.flatnonzero(huge), f"{name} above {MAX_AMOUNT:.0e}"))
    last = (latest or reference).toordinal()
    oldest = oldest_birth_date(reference).toordinal()
    for name in ("date_of_birth", "customer_since"):
        days = dates.get(name)
        if days is None:
            continue
        future = days > last
        if future.any():
            found.append(Impossible(name, np.flatnonzero(future), f"{name} in the future"))
        if name == "date_of_birth":
            old = days < oldest
            if old.any():
                found.append(Impossible(name, np.flatnonzero(old), f"age over {MAX_AGE_YEARS}"))
    return found
