"""Low-latency scoring of pushed customer records with the pipeline's own fitted objects.

``SegmentationModel.clean_records`` + ``assign`` go through pandas and cost milliseconds per call, which is fine
for a batch run and far too slow for an API answering one onboarding customer at a time. This module gives the
same answers in microseconds:

* :func:`parse_records` turns records (workbook field names or any alias) into typed columns following exactly
  the rules of ``stages/cleaning.py``. Common values (JSON numbers, plain ASCII text, ISO dates) are parsed by a
  per-value equivalent; anything else goes, column by column, through the cleaning module's own parsers, so an
  unusual spelling is read exactly as a file's cell would be. Where cleaning would count a value as unparseable or
  quarantine the customer (negative volume, future birth date, ...), the record is refused with field-level
  messages instead: an API caller must hear about a broken record, not get a silent default.
* :class:`FastScorer` precomputes, from the SAME fitted objects (scaler ``mean_``/``scale_``, the KNN imputer via
  its public ``transform`` on the numeric block, one-hot ``categories_``, PCA ``components_``/``mean_``, K-means
  centres, the tier model), a plain numpy path whose clusters, tiers, distances, scores and reasons equal those of
  ``SegmentationModel.assign`` and ``RiskTierModel.reasons`` (tests check it on thousands of customers).

No FastAPI here: the API is a thin layer over this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from itertools import chain, repeat
from typing import Any, Final

import numpy as np
import pandas as pd

from segmentation_pipeline import schema
from segmentation_pipeline.stages import cleaning
from segmentation_pipeline.stages.features import LOG_COLUMNS, MISSING_LEVEL
from segmentation_pipeline.stages.scoring import SegmentationModel
from segmentation_pipeline.stages.tiering import round_contributions

__all__ = [
    "DATE_FIELDS",
    "FLAG_FIELDS",
    "NUMBER_FIELDS",
    "FIELD_KINDS",
    "MAX_AMOUNT",
    "MAX_ID",
    "MAX_TEXT_LENGTH",
    "FastScorer",
    "FieldProblem",
    "ParsedRecords",
    "ReasonTable",
    "RecordsInvalid",
    "ScoredBatch",
    "field_name_for",
    "parse_columns",
    "parse_records",
]

# Kinds of field, decided exactly as cleaning's ``_parse_columns`` decides them (same order of precedence).
DATE, FLAG, NUMBER, CHANNELS, CATEGORY = "date", "flag", "number", "channels", "category"


def _kind_of(name: str) -> str:
    if name in schema.DATE_COLUMNS:
        return DATE
    if name in schema.FLAG_COLUMNS:
        return FLAG
    if name in schema.NON_NEGATIVE_COLUMNS or name in schema.BOOKKEEPING_COLUMNS or name == schema.ID_COLUMN:
        return NUMBER
    if name == schema.CHANNEL_COLUMN:
        return CHANNELS
    return CATEGORY


FIELD_KINDS: Final[dict[str, str]] = {name: _kind_of(name) for name in schema.COLUMN_ALIASES}
# The 2023 workbook header of each canonical column: the name errors and the API schema use.
_HEADER_OF: Final[dict[str, str]] = {name: aliases[0] for name, aliases in schema.COLUMN_ALIASES.items()}

MAX_TEXT_LENGTH: Final = 1_000  # longer text in one field is refused (no real export cell is near it)
MAX_ID: Final = 2**53  # ids are read as float64 by cleaning; beyond 2^53 they would silently change
MAX_AMOUNT: Final = 1e15  # volumes and counts above this are not a customer (and would overflow the ratios)
_DAYS_PER_YEAR: Final = 365.25  # as in cleaning
_NS_PER_DAY: Final = 86_400 * 10**9

# Text a bank writes for "no value", and flag spellings: cleaning's own token sets.
_NULL_TOKENS: Final = cleaning._NULL_TOKENS
_FLAG_VALUES: Final[dict[str, float]] = {
    **{token: 1.0 for token in cleaning._TRUE_TOKENS},
    **{token: 0.0 for token in cleaning._FALSE_TOKENS},
}
# A plain decimal number once thousands separators and spaces are removed; anything else that is plain ASCII is
# not a finite number for pandas either (tested against cleaning.parse_numbers).
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PRINTABLE_ASCII = re.compile(r"[ -~]*")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_JSON_NUMBER_TYPES: Final = frozenset({float, int, type(None)})
_BIG: Final = 10**300  # JSON integers beyond this are not numbers a customer record can hold


def field_name_for(canonical: str) -> str:
    """The workbook (2023) header of a canonical column, e.g. ``is_pep`` -> ``isPep``."""
    return _HEADER_OF.get(canonical, canonical)


def _plain(text: str) -> bool:
    """Printable ASCII only: the one space character is the only whitespace, so Python's and pyarrow's
    strip/split agree and the per-value parsers below are exactly cleaning's."""
    return text.isascii() and _PRINTABLE_ASCII.fullmatch(text) is not None


# --- errors -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldProblem:
    """One invalid value: which record (position in the request), which field as the caller wrote it, why."""

    row: int
    field: str
    message: str
    type: str = "value_error"


class RecordsInvalid(ValueError):
    """Some records cannot be scored; ``problems`` names every offending field."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(f"record {first.row}, field {first.field}: {first.message}")


class _Problems:
    """Collects problems; stops collecting (not validating) after a cap so a hostile batch stays cheap."""

    cap = 100

    def __init__(self) -> None:
        self.items: list[FieldProblem] = []

    def add(self, row: int, field_name: str, message: str, kind: str = "value_error") -> None:
        if len(self.items) < self.cap:
            self.items.append(FieldProblem(row, field_name, message, kind))

    def __bool__(self) -> bool:
        return bool(self.items)


# --- parsing ------------------------------------------------------------------------------------------------------

NUMBER_FIELDS: Final[tuple[str, ...]] = tuple(name for name, kind in FIELD_KINDS.items() if kind == NUMBER)
FLAG_FIELDS: Final[tuple[str, ...]] = tuple(name for name, kind in FIELD_KINDS.items() if kind == FLAG)
DATE_FIELDS: Final[tuple[str, ...]] = tuple(name for name, kind in FIELD_KINDS.items() if kind == DATE)
_NON_NEGATIVE_POSITIONS: Final = np.array([NUMBER_FIELDS.index(name) for name in schema.NON_NEGATIVE_COLUMNS])
_ID_POSITION: Final = NUMBER_FIELDS.index(schema.ID_COLUMN)


@dataclass
class ParsedRecords:
    """Records as typed matrices (columns in ``NUMBER_FIELDS``/``FLAG_FIELDS``/``DATE_FIELDS`` order; NaN where
    missing or absent). Dates are held as whole days before the model's reference date (cleaning's
    ``(reference - date).dt.days``), which is all the model uses of a date; categories as cleaned text or None;
    channels as a sorted tuple per record (None when no record gave the field)."""

    n: int
    customer_ids: np.ndarray
    numbers: np.ndarray
    flags: np.ndarray
    days: np.ndarray
    categories: dict[str, list[str | None]] = field(default_factory=dict)
    channels: list[tuple[str, ...]] | None = None


class _KeyCache:
    """Header -> canonical name, memoised: a batch repeats the same few dozen keys thousands of times."""

    def __init__(self, limit: int = 4_096) -> None:
        self._known: dict[str, str | None] = {}
        self._limit = limit

    def __call__(self, key: str) -> str | None:
        try:
            return self._known[key]
        except KeyError:
            name = schema.canonical_name(key)
            if len(self._known) < self._limit:  # bounded: unknown keys from hostile clients must not grow it
                self._known[key] = name
            return name


_canonical = _KeyCache()


_Plan = tuple[list[tuple[str, str]], list[str], list[tuple[str, str]]]  # (key, name)s, unknown keys, repeats
_PLANS: dict[tuple[object, ...], _Plan] = {}  # key tuple -> plan, across requests (clients repeat their shape)


def _plan_of(keys: tuple[object, ...]) -> _Plan:
    plan = _PLANS.get(keys)
    if plan is not None:
        return plan
    taken: dict[str, str] = {}
    unknown: list[str] = []
    repeated: list[tuple[str, str]] = []
    for key in keys:
        name = _canonical(key) if type(key) is str else None
        if name is None:
            unknown.append(str(key))
        elif name in taken:
            repeated.append((key, taken[name]))  # type: ignore[arg-type]  # two spellings: "isPep", "Is PEP"
        else:
            taken[name] = key  # type: ignore[assignment]
    plan = ([(key, name) for name, key in taken.items()], unknown, repeated)
    if len(_PLANS) >= 4_096:  # bounded: a hostile client cannot grow it
        _PLANS.clear()
    _PLANS[keys] = plan
    return plan


def _columns_of(records: Sequence[object], problems: _Problems) -> tuple[dict[str, list[object]], dict[str, str]]:
    """Transpose records into per-canonical-column value lists (None where a record lacks the field).

    Keys are resolved once per distinct key tuple (and remembered across requests); when each field has one
    spelling across the batch (the usual case) each column is one C-level ``map``."""
    n = len(records)
    columns: dict[str, list[object]] = {}
    spelled: dict[str, str] = {}  # canonical -> the spelling the caller used first (for messages)
    if n == 1 and type(records[0]) is dict:  # the single-customer request: the common, latency-bound case
        record = records[0]
        plan, unknown, repeated = _plan_of(tuple(record))
        for key, name in plan:
            columns[name] = [record[key]]
            spelled[name] = key
        if unknown or repeated:
            _plan_problems(records, [0], unknown, repeated, problems)
        return columns, spelled
    if n and set(map(type, records)) == {dict}:
        # The usual batch: every key known and each field spelled one way across the batch (records may omit
        # different fields). One C-level union finds the keys; each column is then one C-level map.
        names = {key: _canonical(key) for key in set().union(*records)}  # type: ignore[arg-type]
        if None not in names.values() and len(set(names.values())) == len(names):
            for key, name in names.items():
                columns[name] = list(map(dict.get, records, repeat(key, n)))  # type: ignore[arg-type]
                spelled[name] = key  # type: ignore[index]
            return columns, spelled
    key_tuples: list[tuple[object, ...] | None] = []
    for row, record in enumerate(records):
        if type(record) is dict:
            key_tuples.append(tuple(record))  # type: ignore[arg-type]
        else:
            key_tuples.append(None)
            problems.add(row, "", f"a customer must be a JSON object, got {_json_type(record)}", "model_type")
    distinct = set(key_tuples)
    distinct.discard(None)
    plans = {keys: _plan_of(keys) for keys in distinct}  # type: ignore[arg-type]
    spellings: dict[str, set[str]] = {}
    for plan, _, _ in plans.values():
        for key, name in plan:
            spellings.setdefault(name, set()).add(key)
            spelled.setdefault(name, key)
    rows_of_plan: dict[tuple[object, ...], list[int]] = {keys: [] for keys in plans}
    for row, keys in enumerate(key_tuples):
        if keys is not None:
            rows_of_plan[keys].append(row)
    if None not in key_tuples and all(len(keys) == 1 for keys in spellings.values()):
        # The usual case, whatever fields each record omits: one spelling per field across the batch.
        for name, (key,) in spellings.items():
            columns[name] = list(map(dict.get, records, repeat(key, n)))  # type: ignore[arg-type]
    else:
        for keys, rows in rows_of_plan.items():
            for key, name in plans[keys][0]:
                column = columns.get(name)
                if column is None:
                    column = columns[name] = [None] * n
                for row in rows:
                    column[row] = records[row][key]  # type: ignore[index]
    for keys, (_, unknown, repeated) in plans.items():
        if unknown or repeated:
            _plan_problems(records, rows_of_plan[keys], unknown, repeated, problems)
    return columns, spelled


def _plan_problems(
    records: Sequence[object], rows: list[int], unknown: list[str], repeated: list[tuple[str, str]], problems: _Problems
) -> None:
    for row in rows:
        for key in unknown:
            problems.add(row, key, "unknown field", "extra_forbidden")
        record = records[row]
        for key, first in repeated:
            if record[key] != record[first]:  # type: ignore[index]
                problems.add(row, key, f"same field as {first!r} with a different value")


def _reference(parser: Callable[[pd.Series], object], texts: list[object]) -> list[object]:
    """Run cleaning's own parser on the values the fast path does not handle (one vectorised call per column;
    per value if the batch call raises, so one odd value cannot take the others down)."""

    def run(values: list[object]) -> list[object]:
        result = parser(pd.Series(values, dtype=object))
        return list(result[0] if isinstance(result, tuple) else result)

    try:
        return run(texts)
    except Exception:  # noqa: BLE001 - pandas raises many types on odd input; the value is simply unreadable
        out: list[object] = []
        for text in texts:
            try:
                out.extend(run([text]))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out


def _is_text(value: object) -> bool:
    """Whether cleaning would see a value here (not blank, not a 'no value' token)."""
    try:
        return bool(cleaning._as_text(pd.Series([value], dtype=object)).notna().iloc[0])
    except Exception:  # noqa: BLE001
        return True


def _text_ok(value: str, row: int, label: str, problems: _Problems) -> bool:
    if len(value) > MAX_TEXT_LENGTH:
        problems.add(row, label, f"longer than {MAX_TEXT_LENGTH} characters", "string_too_long")
        return False
    return True


# Per-text memos: a batch repeats the same few category, flag and channel spellings thousands of times, so each
# distinct text is parsed once. Values are the parsed value, None for "no value", or a marker.
_HARD = object()  # not plain ASCII: cleaning's own parser decides
_BAD = object()  # plain ASCII that cleaning cannot read
_MISS = object()
_MEMO_LIMIT = 65_536
_INT_FLAG_TYPES: Final = frozenset({int, bool, type(None)})
_TEXT_TYPES: Final = frozenset({str, type(None)})
_ORDINAL_TYPES: Final = frozenset({int, type(None)})


class _Memo(dict):  # type: ignore[type-arg]
    """A bounded text -> parsed value dict (cleared when full: simple, and a hostile client cannot grow it)."""

    def __init__(self) -> None:
        super().__init__({None: None})  # a JSON null is "no value" in every kind: lookups need no test for it

    def remember(self, text: str, value: object) -> object:
        if len(self) >= _MEMO_LIMIT:
            self.clear()
            self[None] = None
        self[text] = value
        return value


_FLAG_MEMO, _CATEGORY_MEMO, _CHANNEL_MEMO, _DATE_MEMO = _Memo(), _Memo(), _Memo(), _Memo()


def _all_remembered(values: list[object], memo: _Memo) -> list[object] | None:
    """Each value's memo entry when every value is text (or null) already parsed to a plain result; else None.
    Looked up once per distinct value, into a local dict: another request's thread may clear the memo meanwhile
    (memo keys are only text and None, so a value of any other type is never found)."""
    try:
        found = {value: memo.get(value, _MISS) for value in set(values)}
    except TypeError:  # a list or an object: not for this shortcut
        return None
    parsed = found.values()
    if _MISS in parsed or _HARD in parsed:
        return None
    if all(text == result for text, result in found.items()):  # clean text (the usual case): read as given
        return values
    return list(map(found.__getitem__, values))


def _flag_of(text: str) -> object:
    if not _plain(text):
        return _HARD
    token = text.strip().lower()
    if token in _NULL_TOKENS:
        return None
    return _FLAG_VALUES.get(token, _BAD)


def _category_of(text: str) -> object:
    if not _plain(text):
        return _HARD
    stripped = text.strip()
    if stripped.lower() in _NULL_TOKENS:
        return None
    return " ".join(stripped.split()) if "  " in stripped else stripped  # plain ASCII: only spaces to fold


def _channels_of(text: str) -> object:
    if not _plain(text):
        return _HARD
    stripped = text.strip()
    if stripped.lower() in _NULL_TOKENS:
        return ()
    return tuple(sorted({part.strip() for part in stripped.split(",") if part.strip()}))


def _ordinal_of(text: str) -> object:
    """A plain ISO date in pandas' Timestamp range -> its day ordinal; a 'no value' token -> None; else cleaning's
    parser decides (other formats, Excel serials, out-of-range years)."""
    if not _plain(text):
        return _HARD
    stripped = text.strip()
    if stripped.lower() in _NULL_TOKENS:
        return None
    if len(stripped) == 10 and _ISO_DATE.fullmatch(stripped) and 1678 <= int(stripped[:4]) <= 2261:
        try:
            return date.fromisoformat(stripped).toordinal()
        except ValueError:
            return _HARD
    return _HARD


def _parse_numbers(values: list[object], label: str, problems: _Problems) -> list[object] | np.ndarray:
    """-> floats / ints / None per record (NumPy turns the list into float64, None into NaN); a big batch of
    plain JSON numbers comes back already as a float64 array."""
    kinds = set(map(type, values))
    if kinds <= _JSON_NUMBER_TYPES:  # JSON numbers and nulls: as a cell holding them reads (tested)
        if len(values) <= 64:
            if int not in kinds or all(-_BIG < v < _BIG for v in values if type(v) is int):  # type: ignore[operator]
                return values
        else:
            try:
                return np.fromiter(values, np.float64, len(values))  # type: ignore[arg-type]
            except OverflowError:  # an integer beyond float64: named below
                pass
    out: list[object] = []
    hard: list[int] = []
    for row, value in enumerate(values):
        kind = type(value)
        if value is None or kind is float:
            out.append(value)
        elif kind is int:
            if -_BIG < value < _BIG:
                out.append(value)
            else:
                problems.add(row, label, "number out of range")
                out.append(None)
        elif kind is str:
            out.append(None)
            if not _text_ok(value, row, label, problems):
                continue
            if not _plain(value):
                hard.append(row)
                continue
            text = value.strip()
            if text.lower() in _NULL_TOKENS:
                continue
            compact = text.replace(",", "").replace(" ", "")
            if _PLAIN_NUMBER.fullmatch(compact):
                out[row] = float(compact)
            else:
                problems.add(row, label, f"not a number: {_shown(value)}", "float_parsing")
        else:
            problems.add(row, label, f"expected a number, got {_json_type(value)}", "float_type")
            out.append(None)
    if hard:
        for row, number in zip(hard, _reference(cleaning.parse_numbers, [values[i] for i in hard]), strict=True):
            if number is None or pd.isna(number):
                if _is_text(values[row]):
                    problems.add(row, label, f"not a number: {_shown(values[row])}", "float_parsing")
            else:
                out[row] = float(number)
    return out


_FLAG_OF_INT: Final[dict[object, float | None]] = {True: 1.0, False: 0.0, None: None}  # also 1 and 0, not 2


def _parse_flags(values: list[object], label: str, problems: _Problems) -> list[object]:
    if set(map(type, values)) <= _INT_FLAG_TYPES:  # JSON 0/1/true/false/null: one lookup each
        out = list(map(_FLAG_OF_INT.get, values, repeat(_BAD, len(values))))
        if _BAD not in out:
            return out
    out = []
    hard: list[int] = []
    memo = _FLAG_MEMO
    for row, value in enumerate(values):
        kind = type(value)
        if value is None:
            out.append(None)
            continue
        if kind is bool:
            out.append(1.0 if value else 0.0)
            continue
        if kind is int:  # a cell holding the number reads "1" / "0" / anything else (refused)
            flag = 1.0 if value == 1 else 0.0 if value == 0 else _BAD
        elif kind is float or kind is str:
            text = str(value) if kind is float else value  # 1.0 -> "1.0" (a flag), -0.0 -> "-0.0" (not one)
            if not _text_ok(text, row, label, problems):  # type: ignore[arg-type]
                out.append(None)
                continue
            flag = memo.get(text, _MISS)
            if flag is _MISS:
                flag = memo.remember(text, _flag_of(text))  # type: ignore[arg-type]
        else:
            problems.add(row, label, f"expected a flag (1/0, Y/N, true/false), got {_json_type(value)}", "bool_type")
            out.append(None)
            continue
        if flag is _HARD:
            hard.append(row)
            flag = None
        elif flag is _BAD:
            problems.add(row, label, f"not a flag (1/0, Y/N, Yes/No, TRUE/FALSE): {_shown(value)}", "bool_parsing")
            flag = None
        out.append(flag)
    if hard:
        texts = [str(values[i]) for i in hard]
        for row, flag in zip(hard, _reference(cleaning.parse_flags, texts), strict=True):
            if flag is None or pd.isna(flag):
                if _is_text(values[row]):
                    problems.add(row, label, f"not a flag: {_shown(values[row])}", "bool_parsing")
            else:
                out[row] = float(flag)
    return out


@dataclass(frozen=True)
class _DateLimits:
    reference: date
    reference_dt: datetime
    reference_ts: pd.Timestamp
    latest: date  # later than this is "in the future"
    latest_ts: pd.Timestamp
    oldest: date  # born before this is "over 120"
    oldest_ts: pd.Timestamp

    @property
    def reference_ordinal(self) -> int:
        return self.reference.toordinal()

    @property
    def latest_ordinal(self) -> int:
        return self.latest.toordinal()

    @property
    def oldest_ordinal(self) -> int:
        return self.oldest.toordinal()


@lru_cache(maxsize=16)
def _date_limits(reference: date, today: date) -> _DateLimits:
    reference_ts = pd.Timestamp(reference)
    latest = max(reference, today)
    oldest_ts = reference_ts - pd.DateOffset(years=120)  # as cleaning's quarantine rule
    return _DateLimits(reference, datetime.combine(reference, time()), reference_ts, latest, pd.Timestamp(latest),
                       oldest_ts.date(), oldest_ts)  # fmt: skip


_ISO_DIGITS: Final = np.array([0, 1, 2, 3, 5, 6, 8, 9])
_UNIX_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


def _iso_ordinals(values: list[object]) -> np.ndarray | None:
    """Day ordinals (NaN for None) when every text is exactly a plain ``YYYY-MM-DD`` date of a year in pandas'
    Timestamp range (what ``_ordinal_of`` accepts); None when any is not, so the per-value path decides."""
    if None in values:
        present = np.array([value is not None for value in values])
        texts = np.array([value for value in values if value is not None])
    else:
        present, texts = None, np.array(values)
    if texts.size == 0:
        return np.full(len(values), np.nan)
    if texts.dtype != np.dtype("<U10"):  # something longer than ten characters (or not text)
        return None
    codes = texts.view(np.uint32).reshape(-1, 10)
    digits = codes[:, _ISO_DIGITS] - 48  # unsigned: anything below "0" wraps to a large number
    if (digits > 9).any() or (codes[:, 4] != 45).any() or (codes[:, 7] != 45).any():  # 45 is "-"
        return None
    years = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    months = digits[:, 4] * 10 + digits[:, 5]
    days = digits[:, 6] * 10 + digits[:, 7]
    if (years < 1678).any() or (years > 2261).any() or (months < 1).any() or (months > 12).any():
        return None
    # Day numbers of the first of the month and of the next month, by NumPy's calendar (10x faster than parsing
    # the text as datetime64); a day the month does not have (2023-02-30) sends the column to the slow path.
    month_index = (years.astype(np.int64) - 1970) * 12 + (months.astype(np.int64) - 1)
    first = month_index.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    following = (month_index + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    if (days < 1).any() or (days > following - first).any():
        return None
    ordinals = (first + days - 1 + _UNIX_EPOCH_ORDINAL).astype(np.float64)
    if present is None:
        return ordinals
    out = np.full(len(values), np.nan)
    out[present] = ordinals
    return out


def _date_ordinals(values: list[object], label: str, problems: _Problems) -> tuple[list[object], list[int]]:
    """Per value: its day ordinal, or None (missing, refused, or left to cleaning's parser); and the rows left
    to cleaning's parser (other spellings, Excel serial numbers). Plain ISO dates go through a memo."""
    memo = _DATE_MEMO
    n = len(values)
    if set(map(type, values)) <= _TEXT_TYPES:
        ordinals = list(map(memo.get, values, repeat(_MISS, n)))
    else:
        ordinals = [_MISS if type(value) is str else value for value in values]
    hard: list[int] = []
    if _MISS in ordinals or _HARD in ordinals or not set(map(type, ordinals)) <= _ORDINAL_TYPES:
        for row, value in enumerate(values):
            ordinal = ordinals[row]
            if ordinal is None or type(ordinal) is int and type(value) is str:
                continue
            ordinals[row] = None
            kind = type(value)
            if kind is int or kind is float:
                hard.append(row)  # an Excel serial number: cleaning's parser reads it from its text
                continue
            if kind is not str:
                problems.add(row, label, f"expected a date (YYYY-MM-DD), got {_json_type(value)}", "date_type")
                continue
            if ordinal is _MISS:
                if not _text_ok(value, row, label, problems):  # type: ignore[arg-type]
                    continue
                ordinal = memo.remember(value, _ordinal_of(value))  # type: ignore[arg-type]
            if ordinal is _HARD:
                hard.append(row)
            else:
                ordinals[row] = ordinal
    return ordinals, hard


def _parse_dates(
    values: list[object], name: str, label: str, limits: _DateLimits, problems: _Problems
) -> np.ndarray:
    """-> whole days before the reference date per record (NaN when missing), checking cleaning's quarantine
    rules: the days and the checks are one vectorised subtraction and comparison for a batch."""
    n = len(values)
    known: np.ndarray | None = None
    ordinals: list[object] = []
    hard: list[int] = []
    if n > 16 and values[0] is None and values[-1] is None and values.count(None) == n:
        return np.full(n, np.nan)  # a field no record gave
    if n > 16 and set(map(type, values)) <= _TEXT_TYPES:
        known = _iso_ordinals(values)  # a batch of plain ISO dates: read in NumPy, no per-value Python
    if known is None:
        ordinals, hard = _date_ordinals(values, label, problems)
    days = np.full(n, np.nan)
    checked, born = name in ("date_of_birth", "customer_since"), name == "date_of_birth"
    reference, latest, oldest = limits.reference_ordinal, limits.latest_ordinal, limits.oldest_ordinal
    if known is None and n <= 16:  # a few customers: plain Python beats a dozen NumPy calls
        for row, ordinal in enumerate(ordinals):
            if ordinal is not None:
                days[row] = reference - ordinal  # whole days: cleaning's (reference - date).dt.days
                if checked and ordinal > latest:  # type: ignore[operator]
                    problems.add(row, label, "date is in the future")
                elif born and ordinal < oldest:  # type: ignore[operator]
                    problems.add(row, label, "age over 120")
    else:
        if known is None:
            known = np.array([np.nan if o is None else o for o in ordinals], dtype=np.float64)
        days[:] = reference - known
        if checked:
            for row in np.flatnonzero(known > latest).tolist():
                problems.add(row, label, "date is in the future")
        if born:
            for row in np.flatnonzero(known < oldest).tolist():
                problems.add(row, label, "age over 120")
    if hard:
        texts = [str(values[i]) for i in hard]
        for row, text, stamp in zip(hard, texts, _reference(cleaning.parse_dates, texts), strict=True):
            if stamp is None or pd.isna(stamp):
                if _is_text(text):
                    problems.add(row, label, f"not a date: {_shown(values[row])}", "date_parsing")
                continue
            stamp = pd.Timestamp(stamp)
            # Python datetimes: no nanosecond overflow for dates centuries apart; .days floors like pandas'.
            days[row] = (limits.reference_dt - stamp.to_pydatetime()).days
            if checked and stamp > limits.latest_ts:
                problems.add(row, label, "date is in the future")
            elif born and stamp < limits.oldest_ts:
                problems.add(row, label, "age over 120")
    return days


def _parse_categories(values: list[object], label: str, problems: _Problems) -> list[str | None]:
    memo = _CATEGORY_MEMO
    known = _all_remembered(values, memo)
    if known is not None:
        return known  # type: ignore[return-value]
    out: list[str | None] = [None] * len(values)
    hard: list[int] = []
    for row, value in enumerate(values):
        if value is None:
            continue
        if type(value) is not str:
            problems.add(row, label, f"expected text, got {_json_type(value)}", "string_type")
            continue
        text = memo.get(value, _MISS)
        if text is _MISS:
            if not _text_ok(value, row, label, problems):  # type: ignore[arg-type]
                continue
            text = memo.remember(value, _category_of(value))  # type: ignore[arg-type]
        if text is _HARD:
            hard.append(row)
        else:
            out[row] = text  # type: ignore[assignment]
    if hard:
        for row, text in zip(hard, _reference(cleaning.parse_categories, [values[i] for i in hard]), strict=True):
            out[row] = None if text is None or pd.isna(text) else str(text)
    return out


def _parse_channels(values: list[object], label: str, problems: _Problems) -> list[tuple[str, ...]]:
    memo = _CHANNEL_MEMO
    try:  # a list means the same as the comma-separated cell
        texts: list[object] = [",".join(v) if type(v) is list else v for v in values]  # type: ignore[arg-type]
    except TypeError:  # a list holding something else than text: named below
        texts = list(values)
    known = _all_remembered(texts, memo)
    if known is not None:
        return [() if channels is None else channels for channels in known]  # type: ignore[misc]
    out: list[tuple[str, ...]] = [()] * len(values)
    hard: list[int] = []
    for row, value in enumerate(values):
        if value is None:
            continue
        if type(value) is list:
            if not all(type(part) is str for part in value):
                problems.add(row, label, "expected a list of channel names (text)", "string_type")
                continue
            value = texts[row]
        elif type(value) is not str:
            got = _json_type(value)
            problems.add(row, label, f"expected text or a list of channel names, got {got}", "string_type")
            continue
        channels = memo.get(value, _MISS)
        if channels is _MISS:
            if not _text_ok(value, row, label, problems):  # type: ignore[arg-type]
                continue
            channels = memo.remember(value, _channels_of(value))  # type: ignore[arg-type]
        if channels is _HARD:
            hard.append(row)
        else:
            out[row] = channels  # type: ignore[assignment]
    if hard:
        for row, parts in zip(hard, _reference(cleaning.split_channels, [texts[i] for i in hard]), strict=True):
            out[row] = tuple(parts) if isinstance(parts, tuple) else ()
    return out


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: object) -> str:
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


def parse_records(records: Sequence[object], *, reference_date: date, today: date | None = None) -> ParsedRecords:
    """Validate and type pushed customer records; raise :class:`RecordsInvalid` naming every bad field.

    Same rules as cleaning a file's rows (``stages/cleaning.py``), with the differences an API needs: values
    cleaning would count as unparseable are refused instead of becoming blanks; customers cleaning would quarantine
    (negative volumes or counts, birth or relationship dates in the future, ages over 120) are refused instead of
    being dropped; the customer id is required. "In the future" means after the later of the model's reference
    date and ``today``: a customer who joined after the model was trained is an ordinary onboarding case.
    Records are independent: unlike rows of a file, two records of one customer id are not merged.
    """
    problems = _Problems()
    columns, spelled = _columns_of(records, problems)
    return _parse_columns(columns, spelled, len(records), problems, reference_date=reference_date, today=today)


def parse_columns(
    columns: dict[str, list[object]], spelled: dict[str, str], n: int, *, reference_date: date,
    today: date | None = None,
) -> ParsedRecords:  # fmt: skip
    """:func:`parse_records` for records already transposed by the caller: ``columns`` maps canonical names
    (every key of ``FIELD_KINDS`` is one; a field no record gave may be absent or all None) to one value per
    record, as JSON decoding gives them; ``spelled`` gives the name to use for each field in problems."""
    unknown = set(columns) - FIELD_KINDS.keys()
    if unknown:
        raise ValueError(f"not canonical field names: {sorted(unknown)}")
    return _parse_columns(columns, spelled, n, _Problems(), reference_date=reference_date, today=today)


def _parse_columns(
    columns: dict[str, list[object]], spelled: dict[str, str], n: int, problems: _Problems, *, reference_date: date,
    today: date | None,
) -> ParsedRecords:  # fmt: skip
    blank: list[object] = [None] * n
    limits = _date_limits(reference_date, today or date.today())
    number_columns = [
        _parse_numbers(columns[name], spelled[name], problems) if name in columns else blank for name in NUMBER_FIELDS
    ]
    flag_columns = [
        _parse_flags(columns[name], spelled[name], problems) if name in columns else blank for name in FLAG_FIELDS
    ]
    date_columns = [
        _parse_dates(columns[name], name, spelled[name], limits, problems) if name in columns else blank
        for name in DATE_FIELDS
    ]
    categories = {
        name: _parse_categories(values, spelled[name], problems)
        for name, values in columns.items()
        if FIELD_KINDS[name] == CATEGORY
    }
    channels = None
    if schema.CHANNEL_COLUMN in columns:
        channels = _parse_channels(columns[schema.CHANNEL_COLUMN], spelled[schema.CHANNEL_COLUMN], problems)

    numbers = _matrix(number_columns, n)
    _check_numbers(numbers, spelled, problems)
    ids = numbers[:, _ID_POSITION]
    id_label = spelled.get(schema.ID_COLUMN, field_name_for(schema.ID_COLUMN))
    bad_ids = np.isnan(ids) | (ids != np.round(ids)) | (np.abs(ids) > MAX_ID)
    if bad_ids.any():
        given = columns.get(schema.ID_COLUMN, blank)
        flagged = {p.row for p in problems.items if p.field == id_label}
        for row in np.flatnonzero(bad_ids).tolist():
            if row in flagged:
                continue
            if np.isnan(ids[row]) and (given[row] is None or not _is_text(given[row])):
                problems.add(row, id_label, "customer id is required", "missing")
            else:
                problems.add(row, id_label, f"customer id must be a whole number of at most {MAX_ID}")
    if problems:
        raise RecordsInvalid(problems.items)
    return ParsedRecords(
        n=n,
        customer_ids=ids.astype(np.int64),
        numbers=numbers,
        flags=_matrix(flag_columns, n),
        days=_matrix(date_columns, n),
        categories=categories,
        channels=channels,
    )


def _matrix(columns: list[Any], n: int) -> np.ndarray:
    """Per-field value lists (floats, ints, None) or arrays -> an (n, fields) float64 matrix, None -> NaN.
    ``np.fromiter`` per column for batches: half the time of ``np.array`` on the list of lists."""
    if n <= 64:  # a few customers: one call beats one per field
        return np.array(columns, dtype=np.float64).T.copy() if n else np.zeros((0, len(columns)))
    matrix = np.empty((n, len(columns)))
    for position, values in enumerate(columns):
        if isinstance(values, np.ndarray):
            matrix[:, position] = values
        elif values[0] is None and values[-1] is None and values.count(None) == n:  # a field no record gave
            matrix[:, position] = np.nan
        else:
            matrix[:, position] = np.fromiter(values, np.float64, n)
    return matrix


def _check_numbers(numbers: np.ndarray, spelled: dict[str, str], problems: _Problems) -> None:
    """Finite everywhere; never negative where cleaning would quarantine the customer."""
    infinite = np.isinf(numbers)
    amounts = numbers[:, _NON_NEGATIVE_POSITIONS]
    negative = amounts < 0
    huge = (amounts > MAX_AMOUNT) & ~np.isinf(amounts)
    if infinite.any():
        for row, column in zip(*np.nonzero(infinite), strict=True):
            name = NUMBER_FIELDS[int(column)]
            problems.add(int(row), spelled.get(name, field_name_for(name)), "must be a finite number")
    if negative.any():
        for row, column in zip(*np.nonzero(negative), strict=True):
            name = NUMBER_FIELDS[int(_NON_NEGATIVE_POSITIONS[int(column)])]
            problems.add(int(row), spelled.get(name, field_name_for(name)), "must not be negative",
                         "greater_than_equal")  # fmt: skip
    if huge.any():
        for row, column in zip(*np.nonzero(huge), strict=True):
            name = NUMBER_FIELDS[int(_NON_NEGATIVE_POSITIONS[int(column)])]
            problems.add(int(row), spelled.get(name, field_name_for(name)), f"must be at most {MAX_AMOUNT:.0e}",
                         "less_than_equal")  # fmt: skip


@dataclass
class ScoredBatch:
    """What ``SegmentationModel.assign`` returns, as arrays, plus what reasons need."""

    customer_id: np.ndarray
    cluster: np.ndarray
    risk_tier: list[str]
    risk_score: np.ndarray
    distance_to_centroid: np.ndarray
    embedding: np.ndarray
    indicators: np.ndarray  # (n, len(INDICATORS)) natural units, NaN where unknown
    contributions: np.ndarray  # (n, len(INDICATORS)) weight * z


class FastScorer:
    """A numpy scorer compiled from a :class:`SegmentationModel`'s fitted objects (not a copy of its logic:
    every parameter is read from the fitted scaler, imputer, encoder, PCA, K-means and tier model)."""

    def __init__(self, model: SegmentationModel) -> None:
        self.model = model
        self.version = model.version
        self.reference_date: date = model.reference_date
        features = model.features
        self._numeric = list(features.numeric_columns_)
        self._scale_mean = np.asarray(features.scaler_.mean_, dtype=np.float64)
        self._scale = np.asarray(features.scaler_.scale_, dtype=np.float64)
        self._imputer = features.imputer_
        self._imputer.warm_cache()  # build the KD-trees of the common gap patterns now, not on first requests
        self._flags = list(features.flag_columns_)
        self._numeric_from_pool = [_pool_column(name, "feature") for name in self._numeric]
        self._flags_from_pool = [_pool_column(name, "feature") for name in self._flags]
        self._categorical = list(features.categorical_columns_)
        self._channels = list(features.channels_)
        self._n_features = len(features.feature_names_)
        offset = len(self._numeric) + len(self._flags)
        self._category_index: list[dict[str, int]] = []
        self._unknown_index: list[int] = []
        if features.encoder_ is not None:
            width = 0
            for lookup, unknown, block in self._encoder_lookups(features):
                index = {k: v + offset + width for k, v in lookup.items()}
                index[None] = index.get(MISSING_LEVEL, unknown + offset + width if unknown >= 0 else -1)  # type: ignore[index]
                self._category_index.append(index)
                self._unknown_index.append(unknown + offset + width if unknown >= 0 else -1)
                width += block
            offset += width
        self._channel_index = {channel: offset + i for i, channel in enumerate(self._channels)}
        self._channel_columns: dict[tuple[str, ...], list[int]] = {}  # memo: channel set -> output columns
        if offset + len(self._channels) != self._n_features:
            raise ValueError("fitted transformer layout not understood: feature count differs")
        pca = model.pca
        self._components_t = np.ascontiguousarray(pca.components_.T, dtype=np.float64)
        self._pca_offset = np.reshape(pca.mean_, (1, -1)) @ pca.components_.T  # as PCA._transform does
        self._centers = np.asarray(model.kmeans.cluster_centers_, dtype=np.float64)
        self._centers_t = np.ascontiguousarray(self._centers.T)
        self._centers_sq = (self._centers**2).sum(axis=1)
        tiers = model.tiers
        self._tier_of = [tiers.cluster_tiers[c] for c in range(len(self._centers))]
        self._tier_rank = {"High": 0, "Medium": 1, "Low": 2}
        self._indicator_names = names = list(tiers.means)
        self._indicators_from_pool = [_pool_column(name, "indicator") for name in names]
        self._scaled_from_pool = [_pool_column(name, "scaled") for name in names]
        self._ind_means = np.array([tiers.means[n] for n in self._indicator_names])
        self._ind_stds = np.array([tiers.stds[n] for n in self._indicator_names])
        self._ind_weights = np.array([tiers.weights.get(n, 0.0) for n in self._indicator_names])
        # What reasons show, as object arrays (floats and None) to gather the reasons of a batch at once.
        typical = [
            [_or_none(tiers.typical.loc[c, n]) if c in tiers.typical.index else None for n in names]
            for c in range(len(self._centers))
        ]
        self._typical_matrix = np.array(typical, dtype=object).reshape(len(self._centers), len(names))
        self._population_array = np.array([_or_none(tiers.population_typical.get(n)) for n in names], dtype=object)
        self._names_array = np.array(names, dtype=object)

    @staticmethod
    def _encoder_lookups(features: Any) -> list[tuple[dict[str, int], int, int]]:
        """Per categorical column: level -> output column (within its block), the column unknown levels go to
        (-1: none, all zeros) and the block width — read off the fitted encoder by transforming each level."""
        encoder = features.encoder_
        names = list(features.categorical_columns_)
        infrequent = getattr(encoder, "infrequent_categories_", [None] * len(names))
        # One output column per kept level, plus one for the infrequent group where there is one (drop=None).
        widths = [
            len(levels) if rare is None else len(levels) - len(rare) + 1
            for levels, rare in zip(encoder.categories_, infrequent, strict=True)
        ]
        base = {name: str(levels[0]) for name, levels in zip(names, encoder.categories_, strict=True)}
        unknown_level = "\x00unknown level\x00"
        out = []
        start = 0
        for position, name in enumerate(names):
            levels = [str(level) for level in encoder.categories_[position]] + [unknown_level]
            matrix = encoder.transform(pd.DataFrame([{**base, name: level} for level in levels]))
            if matrix.shape[1] != sum(widths):
                raise ValueError("fitted one-hot encoder layout not understood")
            block = matrix[:, start : start + widths[position]]
            lookup: dict[str, int] = {}
            unknown = -1
            for level, row in zip(levels, block, strict=True):
                hot = np.flatnonzero(row)
                index = int(hot[0]) if hot.size else -1
                if level == unknown_level:
                    unknown = index
                elif index >= 0:
                    lookup[level] = index
            out.append((lookup, unknown, widths[position]))
            start += widths[position]
        return out

    # -- the numeric path --
    # Everything is computed once per batch into a "pool" of columns (log volumes, derived behaviour, years,
    # flags, raw numbers), and the feature block and the indicators are fancy-indexed out of it: a handful of
    # NumPy calls per request whatever the number of customers, which is what makes one-customer requests cheap.
    def _pool(self, parsed: ParsedRecords) -> tuple[np.ndarray, np.ndarray]:
        numbers = parsed.numbers
        logs = np.log1p(np.maximum(numbers[:, _LOG_SOURCES], 0.0))  # money and counts: log1p(clip(x, 0))
        ratio = (logs[:, _LOG_ACTUAL] - logs[:, _LOG_EXPECTED])[:, None]  # derive_behaviour.actual_to_expected
        cash = np.maximum(numbers[:, _CASH_COLUMNS], 0.0)  # derive_behaviour.cash_share
        cash_share = np.minimum(cash[:, :1] / (cash[:, 1:] + 1.0), 1.0)
        flags = parsed.flags.copy()
        flags[np.isnan(flags)] = 0.0  # a missing flag is "not flagged", in features and indicators alike
        years = parsed.days / _DAYS_PER_YEAR
        ratio_natural = np.expm1(ratio) + 1.0  # tiering: "x times expected"
        nan = np.full((parsed.n, 1), np.nan)
        pool = np.hstack([logs, ratio, cash_share, years, flags, numbers, ratio_natural,
                          np.log(np.maximum(ratio_natural, 1e-9)), nan])  # fmt: skip
        return pool, flags

    def features(self, parsed: ParsedRecords) -> np.ndarray:
        """The feature matrix ``CustomerFeatureTransformer.transform`` gives for these records."""
        return self._features(parsed, self._pool(parsed)[0])

    def _features(self, parsed: ParsedRecords, pool: np.ndarray) -> np.ndarray:
        n = parsed.n
        matrix = np.zeros((n, self._n_features))
        width = len(self._numeric)
        if width:
            block = pool[:, self._numeric_from_pool]  # a numeric the records cannot carry comes out NaN: a gap
            block -= self._scale_mean  # StandardScaler.transform, in place as it does it
            block /= self._scale
            # The imputer returns complete rows unchanged: only rows with gaps need it (most requests have none).
            gaps = np.isnan(block).any(axis=1)
            if gaps.any():
                block[gaps] = self._imputer.transform(block[gaps])
            matrix[:, :width] = block
        if self._flags:
            matrix[:, width : width + len(self._flags)] = pool[:, self._flags_from_pool]
        if self._categorical:
            # One output column per categorical (or -1: an unknown level with no infrequent group -> all zeros);
            # a None (missing) value maps to the "(missing)" level's column through the lookup itself.
            hot_lists = []
            for name, lookup, unknown in zip(self._categorical, self._category_index, self._unknown_index, strict=True):
                values = parsed.categories.get(name)
                if values is None:
                    hot_lists.append([lookup[None]] * n)  # type: ignore[index]
                else:
                    hot_lists.append(list(map(lookup.get, values, repeat(unknown, n))))  # type: ignore[arg-type]
            hot = np.fromiter(chain.from_iterable(hot_lists), np.intp, n * len(hot_lists))  # category-major
            rows = np.tile(np.arange(n), len(hot_lists)) if n > 1 else np.zeros(len(hot_lists), dtype=np.intp)
            known = hot >= 0
            matrix[rows[known], hot[known]] = 1.0
        if parsed.channels is not None and self._channels:
            # A batch holds a few distinct channel sets: each is mapped to its output columns once (memo).
            columns_of = self._channel_columns
            distinct = {channels: columns_of.get(channels) for channels in set(parsed.channels)}
            for channels, columns in distinct.items():
                if columns is None:
                    index = self._channel_index
                    distinct[channels] = columns = [index[c] for c in channels if c in index]
                    if len(columns_of) < 4_096:  # bounded: odd channel names from clients must not grow it
                        columns_of[channels] = columns
            hot = list(map(distinct.__getitem__, parsed.channels))
            counts = list(map(len, hot))
            if any(counts):
                matrix[np.repeat(np.arange(n), counts), list(chain.from_iterable(hot))] = 1.0
        return matrix

    def indicators(self, parsed: ParsedRecords) -> np.ndarray:
        """``tiering.risk_indicators`` in natural units, columns in the tier model's order."""
        return self._pool(parsed)[0][:, self._indicators_from_pool]

    def score(self, parsed: ParsedRecords) -> ScoredBatch:
        """Cluster, tier, risk score, distance and reason terms of parsed records."""
        pool, _ = self._pool(parsed)
        embedding = self._features(parsed, pool) @ self._components_t
        embedding -= self._pca_offset  # PCA._transform: X @ C.T - mean @ C.T
        # K-means' own criterion: ||c||^2 - 2 x.c (the ||x||^2 term is the same for every centre).
        distances_sq = self._centers_sq - 2.0 * (embedding @ self._centers_t)
        clusters = np.argmin(distances_sq, axis=1)
        distances = np.linalg.norm(embedding - self._centers[clusters], axis=1)
        indicators = pool[:, self._indicators_from_pool]
        # tiering._scaled (log1p for money and counts, log for the ratio), then RiskTierModel.z_scores.
        z = (pool[:, self._scaled_from_pool] - self._ind_means) / self._ind_stds
        z[np.isnan(z)] = 0.0  # unknown -> population average
        contributions = z * self._ind_weights
        return ScoredBatch(
            customer_id=parsed.customer_ids,
            cluster=clusters.astype(np.int32),
            risk_tier=[self._tier_of[c] for c in clusters.tolist()],
            risk_score=contributions.sum(axis=1),
            distance_to_centroid=distances,
            embedding=embedding,
            indicators=indicators,
            contributions=contributions,
        )

    def reasons(self, scored: ScoredBatch, top: int = 3) -> list[list[dict[str, object]]]:
        """``RiskTierModel.reasons``: the same indicators in the same order (pandas' sort emulated exactly:
        the same quicksort on the same values, row by row), with the same values."""
        table = self.reason_table(scored, top)
        flat = [
            {"indicator": name, "value": value, "segment_typical": typical, "population_typical": population,
             "contribution": term}
            for name, value, typical, population, term in zip(
                table.indicator, table.value, table.segment_typical, table.population_typical, table.contribution,
                strict=True,
            )
        ]  # fmt: skip
        return table.per_customer_lists(flat)

    def reason_table(self, scored: ScoredBatch, top: int = 3) -> ReasonTable:
        """The reasons of a batch as flat columns (what :meth:`reasons` returns, before it is made into dicts):
        gathered and rounded as arrays, so a caller can build any representation in one pass."""
        n = scored.contributions.shape[0]
        chosen = self._reason_order(scored.contributions, scored.risk_tier)[:, :top]
        per_customer = chosen.shape[1]
        columns = chosen.ravel()
        rows = np.repeat(np.arange(n), per_customer)
        gathered = scored.indicators[rows, columns]
        values = gathered.astype(object)
        values[np.isnan(gathered)] = None  # NaN -> unknown
        return ReasonTable(
            n=n,
            per_customer=per_customer,
            indicator=self._names_array[columns].tolist(),
            value=values.tolist(),
            segment_typical=self._typical_matrix[scored.cluster[rows], columns].tolist(),
            population_typical=self._population_array[columns].tolist(),
            contribution=round_contributions(scored.contributions[rows, columns]).tolist(),
        )

    def _reason_order(self, contributions: np.ndarray, risk_tiers: list[str]) -> np.ndarray:
        """Per row, the indicator columns from the most to the least telling for the row's tier: High by
        contribution descending, Low ascending, Medium by |contribution| descending (pandas' sort_values)."""
        n, width = contributions.shape
        if n == 1:  # one customer (the API's usual request): the same sorts without the batch bookkeeping
            row, tier = contributions[0], self._tier_rank[risk_tiers[0]]
            if tier == 2:
                return row.argsort(kind="quicksort")[None, :]
            key = row if tier == 0 else np.abs(row)
            return (width - 1 - key[::-1].argsort(kind="quicksort"))[None, ::-1]
        tiers = np.array([self._tier_rank[t] for t in risk_tiers])
        order = np.empty((n, width), dtype=np.intp)
        reverse = np.arange(width)[::-1]
        for rank, keys in ((0, contributions), (1, np.abs(contributions))):  # High, Medium: descending
            rows = np.flatnonzero(tiers == rank)
            if rows.size:
                # nargsort(ascending=False): sort the reversed row, map back, reverse the result.
                order[rows] = reverse[keys[rows][:, ::-1].argsort(axis=1, kind="quicksort")][:, ::-1]
        rows = np.flatnonzero(tiers == 2)  # Low: ascending
        if rows.size:
            order[rows] = contributions[rows].argsort(axis=1, kind="quicksort")
        return order


@dataclass(frozen=True)
class ReasonTable:
    """Reasons of ``n`` customers, flat and customer-major: entries ``[i * per_customer, (i + 1) * per_customer)``
    are customer ``i``'s, most telling first."""

    n: int
    per_customer: int
    indicator: list[str]
    value: list[float | None]
    segment_typical: list[float | None]
    population_typical: list[float | None]
    contribution: list[float]

    def per_customer_lists(self, flat: list[Any]) -> list[list[Any]]:
        """Cut one object per entry (``flat``, in this table's order) into one list per customer."""
        size = self.per_customer
        if size == 0:
            return [[] for _ in range(self.n)]
        return [flat[start : start + size] for start in range(0, len(flat), size)]


_NUMBER_POSITION: Final = {name: i for i, name in enumerate(NUMBER_FIELDS)}
_FLAG_POSITION: Final = {name: i for i, name in enumerate(FLAG_FIELDS)}
_DATE_POSITION: Final = {name: i for i, name in enumerate(DATE_FIELDS)}


_LOG_NAMES: Final = tuple(name for name in NUMBER_FIELDS if name in LOG_COLUMNS)
_LOG_SOURCES: Final = [_NUMBER_POSITION[name] for name in _LOG_NAMES]
_LOG_ACTUAL: Final = _LOG_NAMES.index("actual_volume")
_LOG_EXPECTED: Final = _LOG_NAMES.index("exp_volume")
_CASH_COLUMNS: Final = [_NUMBER_POSITION["cash_usage"], _NUMBER_POSITION["actual_volume"]]
# Layout of FastScorer._pool's columns.
_POOL: Final[dict[str, int]] = {}
for _name in (*(f"log:{n}" for n in _LOG_NAMES), "actual_to_expected", "cash_share", *(f"years:{n}" for n in
              DATE_FIELDS), *FLAG_FIELDS, *NUMBER_FIELDS, "natural:actual_to_expected", "log:actual_to_expected",
              "(absent)"):  # fmt: skip
    _POOL[_name] = len(_POOL)


def _pool_column(name: str, role: str) -> int:
    """Where a value is in the pool: ``role`` "feature" (a transformer numeric or flag column), "indicator" (a
    tier indicator in natural units) or "scaled" (an indicator on the scale ``tiering._scaled`` puts it)."""
    if name in FLAG_FIELDS:
        return _POOL[name]  # missing -> 0 in every role
    if name == "actual_to_expected":
        return _POOL[{"feature": name, "indicator": f"natural:{name}", "scaled": f"log:{name}"}[role]]
    if name == "cash_share":
        return _POOL[name]
    if name in ("age", "tenure_years"):
        return _POOL["years:date_of_birth" if name == "age" else "years:customer_since"]
    if name in LOG_COLUMNS and role != "indicator":
        return _POOL[f"log:{name}"]
    return _POOL.get(name, _POOL["(absent)"])


def _or_none(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
