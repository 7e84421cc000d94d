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
from functools import lru_cache, partial
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dateutil import parser as _dateutil

from segmentation_pipeline import schema
from segmentation_pipeline.stages import arrow_text

# --- constants: every rule's numbers live here, nowhere else ------------------------------------------------------

NULL_TOKENS: Final = frozenset({"", "-", "--", "n/a", "na", "nan", "null", "none", "nil", "#n/a", "?"})
TRUE_TOKENS: Final = frozenset({"1", "1.0", "y", "yes", "true", "t"})
FALSE_TOKENS: Final = frozenset({"0", "0.0", "n", "no", "false", "f"})
DAYS_PER_YEAR: Final = 365.25  # ages and tenures in years: days / 365.25
MAX_AGE_YEARS: Final = 120  # a birth date more than 120 years before the reference date is impossible
MAX_EXACT_INTEGER: Final = 2**53  # a number cell holding an id beyond this has already lost digits (float64)
MAX_ID_LENGTH: Final = 64  # characters of a customer id (bank ids are far shorter; longer is not an id)
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

# A plain decimal number (no grouping).
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Numbers as exports write them, for each decimal mark: thousands grouped by comma / dot, space (also no-break and
# narrow no-break) or apostrophe in groups of three, or not grouped at all. "1,234.56" and "1'234.56" read with a
# decimal point; "1.234,56" and "1 234,56" with a decimal comma; "1234" and "1,234" could be either.
DECIMAL_POINT, DECIMAL_COMMA = ".", ","
_GROUP = {DECIMAL_POINT: ",' \u00a0\u202f", DECIMAL_COMMA: ".' \u00a0\u202f"}
# South Asian grouping (lakh, crore: "12,34,567.50") is read with the decimal point too.
_NUMBER_IN = {
    mark: re.compile(rf"[+-]?(?:[0-9]{{1,3}}(?:[{group}][0-9]{{3}})+|[0-9]+"
                     + (r"|[0-9]{1,2}(?:,[0-9]{2})+,[0-9]{3}" if mark == "." else "") + rf")(?:\{mark}[0-9]*)?"
                     + (r"(?:[eE][+-]?[0-9]+)?|[+-]?\.[0-9]+(?:[eE][+-]?[0-9]+)?" if mark == "." else r"|[+-]?,[0-9]+"))
    for mark, group in _GROUP.items()
}  # fmt: skip
_NUMBER_LIKE = re.compile(r"[+-]?[0-9.,' \u00a0\u202f]*[0-9][0-9.,' \u00a0\u202f]*(?:[eE][+-]?[0-9]+)?")
# Number-like text with no space in it: surrounding spaces cannot change its reading (matched in bulk by Arrow).
_PLAIN_NUMBER_LIKE = re.compile(r"[+-]?[0-9.,']*[0-9][0-9.,']*(?:[eE][+-]?[0-9]+)?")
# Text every reader leaves as it is: plain digits with a decimal point (a number under the decimal point; digits
# alone under either mark) and ids of digits alone. A column's distinct values of this form are converted by Arrow
# in one call; ``number`` / ``customer_id`` read them exactly so (float(text), the text itself), as tests prove.
_CANONICAL_NUMBER = {DECIMAL_POINT: re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?"),
                     DECIMAL_COMMA: re.compile(r"[0-9]{1,18}")}  # fmt: skip
_CANONICAL_ID = re.compile(rf"[0-9]{{1,{MAX_ID_LENGTH}}}")
# An ISO date in the years 1800-2199 (``FIRST_DATE`` to ``LAST_DATE``): read by NumPy when it is a real day.
_ISO_DATE = re.compile(r"(?:18|19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}")
_UNGROUP = {mark: str.maketrans({**dict.fromkeys(group, None), ",": "."} if mark == "," else dict.fromkeys(group, None))
            for mark, group in _GROUP.items()}  # fmt: skip


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


def number(value: object, decimal: str = DECIMAL_POINT) -> float | None | Bad:
    """A number as banks export it ("1,000", " 2500 ", 3.5, "N/A") -> float. Text is read with the ``decimal``
    mark (a file's column: the one :func:`decimal_marks` proved; a request: the decimal point), its thousands
    grouped in threes; text that fits no such reading ("1,5" with a decimal point) is not a number. Infinity ("inf",
    1e400) is read as what it is, and :func:`impossible_values` refuses it like any absurd amount: the customer is
    quarantined, never given an imputed value."""
    kind = type(value)
    if value is None:
        return None
    if kind is float:
        return None if value != value else value  # type: ignore[return-value]  # NaN: what pandas means by missing
    if kind is int:
        return float(value) if -_BIG < value < _BIG else Bad("number out of range")  # type: ignore[operator,arg-type]
    if kind is str:
        text = _text(value)  # type: ignore[arg-type]
        if text is None or type(text) is Bad:
            return text
        if _NUMBER_IN[decimal].fullmatch(text):  # type: ignore[arg-type]
            return float(text.translate(_UNGROUP[decimal]))  # type: ignore[union-attr]
        if text.lower().lstrip("+-") in ("inf", "infinity"):  # type: ignore[union-attr]
            return float(text)  # type: ignore[arg-type]
        return Bad(f"not a number: {shown(value)}", "float_parsing")
    if isinstance(value, np.floating | np.integer) and not isinstance(value, bool):
        return number(value.item())
    return Bad(f"expected a number, got {json_type(value)}", "float_type")


_ID_TEXT = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z._/-]*[0-9A-Za-z])?")
_WHOLE_FLOAT_TEXT = re.compile(r"([0-9]+)\.0+")  # "1504161.0": an id that went through a float column
_EXPONENT_TEXT = re.compile(r"[+-]?[0-9]*\.?[0-9]+[eE][+-]?[0-9]+")


def decimal_marks(texts: Sequence[object] | pa.Array) -> tuple[set[str], list[str]]:
    """The decimal marks under which every number-like text of a column reads as a number: {".", ","} when the
    values cannot tell (plain integers, "1,234"), one mark when they prove it ("1,5" or "1.234,56": comma;
    "1.5" or "1,234.56": point), none when they contradict each other. Also returns up to two example values that
    prove each reading (for the message when they contradict)."""
    fits: dict[str, list[tuple[int, str]]] = {DECIMAL_POINT: [], DECIMAL_COMMA: []}  # (position, value) only
    texts_arrow = arrow_text.text_array(texts)  # that reading accepts
    texts_arrow = None if texts_arrow is None else arrow_text.plain(texts_arrow)
    if texts_arrow is None:
        positions: Sequence[int] = range(len(texts))
        values: Sequence[object] = texts
    else:  # many values: those written plainly (no spaces) are matched by Arrow, the others one by one below
        plain = arrow_text.fullmatch(texts_arrow, _PLAIN_NUMBER_LIKE)
        point = plain & arrow_text.fullmatch(texts_arrow, _NUMBER_IN[DECIMAL_POINT])
        comma = plain & arrow_text.fullmatch(texts_arrow, _NUMBER_IN[DECIMAL_COMMA])
        for mark, only in ((DECIMAL_POINT, point & ~comma), (DECIMAL_COMMA, comma & ~point)):
            first = np.flatnonzero(only)[:1]
            fits[mark] = [(int(i), texts_arrow[int(i)].as_py()) for i in first]
        other = ~plain & texts_arrow.is_valid().to_numpy(zero_copy_only=False)
        positions = np.flatnonzero(other).tolist()
        values = texts_arrow.take(pa.array(positions, type=pa.int64())).to_pylist()
    for position, value in zip(positions, values, strict=True):
        if type(value) is not str:
            continue
        text = value.strip()
        if not text or not _NUMBER_LIKE.fullmatch(text):
            continue
        point_, comma_ = bool(_NUMBER_IN["."].fullmatch(text)), bool(_NUMBER_IN[","].fullmatch(text))
        if point_ and not comma_:
            fits["."].append((position, text))
        elif comma_ and not point_:
            fits[","].append((position, text))
    marks = {mark for mark in fits if not fits[DECIMAL_COMMA if mark == DECIMAL_POINT else DECIMAL_POINT]}
    return marks, [min(fits[mark])[1] for mark in (DECIMAL_POINT, DECIMAL_COMMA) if fits[mark]]


def customer_id(value: object) -> str | None | Bad:
    """A customer id is text, exactly as exported: trimmed, leading zeros kept, any digits (no number limit).
    A number cell (Excel, Parquet, JSON) holding a whole number is that number's digits (1504161.0 -> "1504161").
    Refused: negative numbers, exponent notation (a spreadsheet that turned a long id into 1.23E+19 has already
    lost its digits), fractions, a number beyond 2^53 (digits already lost), and text with spaces or symbols."""
    kind = type(value)
    if kind is str:
        text = _text(value)  # type: ignore[arg-type]
        if text is None or type(text) is Bad:
            return text
        if text.isdigit() and len(text) <= MAX_ID_LENGTH:  # type: ignore[union-attr]
            return text  # type: ignore[return-value]
        return _id_text(text)  # type: ignore[arg-type]
    if value is None:
        return None
    if kind is bool:
        return Bad("expected a customer id (text or a whole number), got a boolean", "string_type")
    if kind is int:
        if value < 0:  # type: ignore[operator]
            return Bad(f"customer id {value} is negative")
        if value >= 2**63:  # type: ignore[operator]  # JSON decoders disagree beyond int64: text is exact everywhere
            return Bad(f"customer id {value} is too large to send as a number: send it as text")
        digits = str(value)
        return digits if len(digits) <= MAX_ID_LENGTH else Bad(f"customer id longer than {MAX_ID_LENGTH} digits")
    if kind is float:
        if value != value:  # NaN: missing
            return None
        if value < 0:  # type: ignore[operator]
            return Bad(f"customer id {value:g} is negative")
        if value != round(value) or value - value != 0:  # type: ignore[arg-type, operator]
            return Bad(f"customer id {value!r} is not a whole number")
        if value > MAX_EXACT_INTEGER:  # type: ignore[operator]
            return Bad(f"customer id {value:.17g} was stored as a number too large to be exact: export ids as text")
        return str(int(value))  # type: ignore[arg-type]
    if isinstance(value, np.floating | np.integer):
        return customer_id(value.item())
    return Bad(f"expected a customer id (text or a whole number), got {json_type(value)}", "string_type")


def _id_text(text: str) -> str | Bad:
    whole = _WHOLE_FLOAT_TEXT.fullmatch(text)
    if whole:
        return whole.group(1)
    if text.startswith("-") and text[1:].replace(".", "", 1).isdigit():
        return Bad(f"customer id {shown(text)} is negative")
    if _EXPONENT_TEXT.fullmatch(text):
        return Bad(f"customer id {shown(text)} is in exponent notation (a spreadsheet turned it into a number and "
                   "lost digits): export the id column as text")  # fmt: skip
    if len(text) > MAX_ID_LENGTH:
        return Bad(f"customer id longer than {MAX_ID_LENGTH} characters")
    if text.replace(".", "", 1).isdigit():
        return Bad(f"customer id {shown(text)} is not a whole number")
    if not _ID_TEXT.fullmatch(text):
        return Bad(f"customer id {shown(text)} holds spaces or symbols (letters, digits and . _ / - only)")
    return text


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


DAY_FIRST, MONTH_FIRST = "DMY", "MDY"
DATE_ORDERS: Final = (DAY_FIRST, MONTH_FIRST)
# dd/mm/yyyy, mm-dd-yy, dd.mm.yyyy ... (a time of day may follow)
_NUMERIC_DATE = re.compile(r"([0-9]{1,2})[/.-]([0-9]{1,2})[/.-]([0-9]{4}|[0-9]{2})(?:[ T].*)?")


def date_orders(texts: Sequence[object] | pa.Array) -> tuple[set[str], list[str], bool]:
    """The orders (``DAY_FIRST``, ``MONTH_FIRST``) under which every numeric date of a column is a real date: a
    first number above 12 proves day-first, a second above 12 month-first; both kinds of value: no order fits.
    Returns the orders, up to one example value proving each, and whether the column has numeric dates at all."""
    proof: dict[str, str] = {}
    numeric = False
    arrow = arrow_text.text_array(texts)
    for value in texts if arrow is None else arrow_text.plain(arrow).to_pylist():
        if type(value) is not str:
            continue
        match = _NUMERIC_DATE.fullmatch(value.strip())
        if match is None:
            continue
        numeric = True
        first, second = int(match.group(1)), int(match.group(2))
        if first > 12 >= second:
            proof.setdefault(DAY_FIRST, value.strip())
        elif second > 12 >= first:
            proof.setdefault(MONTH_FIRST, value.strip())
        if len(proof) == 2:
            break
    if len(proof) == 2:
        return set(), [proof[DAY_FIRST], proof[MONTH_FIRST]], numeric
    return (set(proof) or set(DATE_ORDERS)), list(proof.values()), numeric


def past_year(two_digits: int, latest_year: int) -> int:
    """A two-digit year as the latest year ending in those digits that is not after ``latest_year`` (customer
    dates lie in the past: "60" is 1960 in 2026, "23" is 2023)."""
    year = latest_year - (latest_year - two_digits) % 100
    return year


def date_ordinal(value: object, order: str = DAY_FIRST, latest_year: int | None = None) -> int | None | Bad:
    """A date -> its day number (``date.toordinal``). ISO text (time of day ignored), Excel serial numbers (as
    numbers or text) and numeric text in ``order`` (day-first by default: 02/01/1980 is 2 January; a file's column
    uses the order its values prove, see :func:`date_orders`) or with a month name (30-Jun-1975). A two-digit
    year is the latest such year not after ``latest_year`` (default: this year). Dates outside 1800-2199 are
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
            day = _date_text(text, order, latest_year or date.today().year)  # type: ignore[arg-type]
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


def _date_text(text: str, order: str, latest_year: int) -> int | None:
    try:
        return datetime.fromisoformat(text).toordinal()
    except ValueError:
        pass
    if _PLAIN_NUMBER.fullmatch(text):
        return _serial(float(text))
    numeric = _NUMERIC_DATE.fullmatch(text)
    if numeric is not None:
        first, second, year_text = numeric.groups()
        day, month = (first, second) if order == DAY_FIRST else (second, first)
        year = int(year_text) if len(year_text) == 4 else past_year(int(year_text), latest_year)
        try:
            return date(year, int(month), int(day)).toordinal()
        except ValueError:
            return None
    if text[0] in "+-":  # "-1968-01-02" is no date (dateutil would read it as 1 February 1968)
        return None
    try:
        # A text missing its day, month or year ("05:06:07", "July 1960") takes them from year 1: out of range,
        # refused, instead of today's date.
        parsed = _dateutil.parse(text, dayfirst=order == DAY_FIRST, default=_NO_DATE)
    except (ValueError, OverflowError):
        return None
    if parsed.year == 1 or parsed.day == 1 and not re.search(r"(?<![0-9])0?1(?![0-9])", text):
        return None
    if not _FOUR_DIGITS.search(text):  # a two-digit year ("30-Jun-75"): in the past, not dateutil's guess
        parsed = parsed.replace(year=past_year(parsed.year % 100, latest_year))
    return parsed.toordinal()


_FOUR_DIGITS = re.compile(r"[0-9]{4}")
_NO_DATE = datetime(1, 1, 1)


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
    return start + day - 1 + _UNIX_EPOCH, real


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
