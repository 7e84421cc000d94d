"""Customer records pushed to the API -> a :class:`CustomerBatch`, with every bad field named.

Records use the workbook's field names or any alias (``schema.canonical_name``). Every value is read by its kind's
parser in ``stages/fields.py`` (the same functions that read a file's cells), and the impossible-value rules are
``fields.impossible_values`` (the ones that quarantine a file's customers). The differences an API needs: a value a
file would count as unreadable is refused instead of becoming a blank; a customer a file would quarantine is
refused; the customer id is required. Records are independent: unlike rows of a file, two records of one customer
id are not merged. No pandas on the one-customer path: a request is parsed in microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from itertools import repeat
from typing import Final

import numpy as np

from segmentation_pipeline import schema
from segmentation_pipeline.stages import field_columns, fields
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.fields import FIELD_KINDS, K_CATEGORY, K_CHANNELS, K_DATE, K_ID

__all__ = ["FieldProblem", "RecordsInvalid", "field_name_for", "parse_columns", "parse_records"]

# The 2023 workbook header of each canonical column: the name errors and the API schema use.
_HEADER_OF: Final[dict[str, str]] = {name: aliases[0] for name, aliases in schema.COLUMN_ALIASES.items()}


def field_name_for(canonical: str) -> str:
    """The workbook (2023) header of a canonical column, e.g. ``is_pep`` -> ``isPep``."""
    return _HEADER_OF.get(canonical, canonical)


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


# --- transposing records into columns ---------------------------------------------------------------------------


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
            problems.add(row, "", f"a customer must be a JSON object, got {fields.json_type(record)}", "model_type")
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


def parse_records(records: Sequence[object], *, reference_date: date, today: date | None = None) -> CustomerBatch:
    """Validate and type pushed customer records; raise :class:`RecordsInvalid` naming every bad field.
    "In the future" means after the later of the model's reference date and ``today``: a customer who joined
    after the model was trained is an ordinary onboarding case."""
    problems = _Problems()
    columns, spelled = _columns_of(records, problems)
    return _parse(columns, spelled, len(records), problems, reference_date=reference_date, today=today)


def parse_columns(
    columns: dict[str, Sequence[object]], spelled: dict[str, str], n: int, *, reference_date: date,
    today: date | None = None,
) -> CustomerBatch:  # fmt: skip
    """:func:`parse_records` for records already transposed by the caller: ``columns`` maps canonical names to
    one value per record (a field no record gave may be absent or all None); ``spelled`` gives the name to use
    for each field in problems."""
    unknown = set(columns) - FIELD_KINDS.keys()
    if unknown:
        raise ValueError(f"not canonical field names: {sorted(unknown)}")
    return _parse(columns, spelled, n, _Problems(), reference_date=reference_date, today=today)


def _parse(
    columns: dict[str, Sequence[object]], spelled: dict[str, str], n: int, problems: _Problems, *, reference_date: date,
    today: date | None,
) -> CustomerBatch:  # fmt: skip
    if n == 1:
        numbers, dates, categories, channels, ids = _parse_one(columns, spelled, problems)
    else:
        numbers, dates, categories, channels, ids = _parse_many(columns, spelled, n, problems)
    latest = max(reference_date, today or date.today())
    for found in fields.impossible_values(numbers, dates, reference=reference_date, latest=latest):
        label = spelled.get(found.column, field_name_for(found.column))
        for row in found.rows.tolist():
            problems.add(row, label, found.reason)
    missing_ids = np.flatnonzero(np.equal(ids, None))
    if missing_ids.size:
        id_label = spelled.get(schema.ID_COLUMN, field_name_for(schema.ID_COLUMN))
        flagged = {p.row for p in problems.items if p.field == id_label}
        for row in missing_ids.tolist():
            if row not in flagged:
                problems.add(row, id_label, "customer id is required", "missing")
    if problems:
        raise RecordsInvalid(problems.items)
    for name, years in fields.YEARS_OF_DATE.items():
        if name in dates:
            numbers[years] = fields.years_before(reference_date, dates[name])
    return CustomerBatch(customer_ids=ids, numbers=numbers, categories=categories, channels=channels)


_Columns = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], list | None, np.ndarray]


def _parse_one(columns: dict[str, Sequence[object]], spelled: dict[str, str], problems: _Problems) -> _Columns:
    """One record (the API's usual request): each value through its kind's parser, arrays built once at the end
    (``field_columns.parse_column`` over one value would build an array per field)."""
    parsers = fields.PARSERS
    numeric_names: list[str] = []
    numeric_values: list[float] = []
    categories: dict[str, np.ndarray] = {}
    channels = None
    day_names: list[str] = []
    day_values: list[float] = []
    customer_id = None
    for name, (value,) in columns.items():
        kind = FIELD_KINDS[name]
        parsed = parsers[kind](value)
        if type(parsed) is fields.Bad:
            problems.add(0, spelled.get(name) or field_name_for(name), parsed.reason, parsed.type)
            parsed = () if kind is K_CHANNELS else None
        if kind is K_CATEGORY:
            categories[name] = np.array([parsed], dtype=object)
        elif kind is K_CHANNELS:
            channels = [parsed]
        elif kind is K_ID:
            customer_id = parsed
        elif kind is K_DATE:
            day_names.append(name)
            day_values.append(np.nan if parsed is None else parsed)  # type: ignore[arg-type]
        else:
            numeric_names.append(name)
            numeric_values.append(np.nan if parsed is None else parsed)  # type: ignore[arg-type]
    numeric = np.array(numeric_values, dtype=np.float64)
    days = np.array(day_values, dtype=np.float64)
    numbers = {name: numeric[i : i + 1] for i, name in enumerate(numeric_names)}
    dates = {name: days[i : i + 1] for i, name in enumerate(day_names)}
    ids = np.empty(1, dtype=object)
    ids[0] = customer_id
    return numbers, dates, categories, channels, ids


def _parse_many(columns: dict[str, Sequence[object]], spelled: dict[str, str], n: int, problems: _Problems) -> _Columns:
    """Records column by column, each through ``field_columns.parse_column`` (over distinct values when many)."""
    numbers: dict[str, np.ndarray] = {}
    dates: dict[str, np.ndarray] = {}
    categories: dict[str, np.ndarray] = {}
    channels = None
    ids = np.full(n, None, dtype=object)
    for name, values in columns.items():
        kind = FIELD_KINDS[name]
        if n > 16 and values[0] is None and values[-1] is None and values.count(None) == n:
            continue  # a field no record gave
        parsed = field_columns.parse_column(kind, values)
        if parsed.bad:
            label = spelled.get(name) or field_name_for(name)
            for row, bad in zip(parsed.bad_rows.tolist(), parsed.bad, strict=True):
                problems.add(row, label, bad.reason, bad.type)
        if kind is K_ID:
            ids = parsed.values
        elif kind is K_DATE:
            dates[name] = parsed.values
        elif kind is K_CATEGORY:
            categories[name] = parsed.values
        elif kind is K_CHANNELS:
            channels = parsed.values.tolist()
        else:
            numbers[name] = parsed.values
    return numbers, dates, categories, channels, ids
