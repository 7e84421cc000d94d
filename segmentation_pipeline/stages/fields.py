"""One parser per kind of field: how a customer id, a number, a flag, a date, a category or a set of channels is
read, written once and used by file cleaning and API records alike.

Each kind is a per-value function (``value -> parsed``); ``field_columns.parse_column`` applies it to a column:
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
import pyarrow as pa
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
UNIX_EPOCH_DAY: Final = date(1970, 1, 1).toordinal()
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
    out[present] = (days[present].astype(np.int64) - UNIX_EPOCH_DAY).astype("datetime64[D]")
    return out


def datetime64_to_ordinals(stamps: np.ndarray) -> np.ndarray:
    """datetime64 values (NaT = missing) -> day numbers (NaN = missing)."""
    stamps = np.asarray(stamps).astype("datetime64[D]")
    out = np.full(stamps.shape, np.nan)
    present = ~np.isnat(stamps)
    out[present] = stamps[present].astype(np.int64) + UNIX_EPOCH_DAY
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
