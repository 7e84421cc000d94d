"""Raw export rows -> one typed row per customer.

The raw table holds every cell as text, exactly as exported. Cleaning maps headers to canonical names, parses
numbers, flags and dates the way banks actually write them, merges the rows of customers exported once per
channel, quarantines impossible values, derives age and tenure, and drops columns that carry no information.
Every row or column it drops is counted with its reason in :class:`CleaningReport`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from segmentation_pipeline import schema
from segmentation_pipeline.stages.ingestion import IngestionError

# Text a bank writes for "no value".
_NULL_TOKENS = frozenset({"", "-", "--", "n/a", "na", "nan", "null", "none", "nil", "#n/a", "?"})
_TRUE_TOKENS = frozenset({"1", "1.0", "y", "yes", "true", "t"})
_FALSE_TOKENS = frozenset({"0", "0.0", "n", "no", "false", "f"})
_DUPLICATE_SUFFIX = re.compile(r"__\d+$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")  # Excel's day 0 (it counts 1900 as a leap year)
_DAYS_PER_YEAR = 365.25
_UNPARSEABLE = -1.2345e300  # sentinel for "present but not a number", never a real value in an export
_UNPARSEABLE_DATE = object()
# Dates outside these bounds are treated as unreadable (they also fall outside pandas' nanosecond range).
_FIRST_DATE, _LAST_DATE = pd.Timestamp("1800-01-01"), pd.Timestamp("2199-12-31")
_LAST_SERIAL = 109_574  # Excel serial of 2199-12-31


@dataclass
class CleaningReport:
    """What cleaning did, for the ingestion report and the asset's metadata."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped_rows: dict[str, int] = field(default_factory=dict)
    dropped_columns: dict[str, str] = field(default_factory=dict)
    aliases_applied: dict[str, str] = field(default_factory=dict)
    unparseable_values: dict[str, int] = field(default_factory=dict)
    conflicting_duplicate_columns: dict[str, int] = field(default_factory=dict)

    def count_rows(self, reason: str, n: int) -> None:
        if n:
            self.dropped_rows[reason] = self.dropped_rows.get(reason, 0) + int(n)


@dataclass
class CleaningResult:
    customers: pd.DataFrame
    report: CleaningReport
    quarantined: pd.DataFrame  # customer_id, source_row, column, value, reason


# --- value parsers ---------------------------------------------------------------------------------------------


def _on_distinct(values: pd.Series, parse: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """Apply a vectorised parser to the distinct values only, then spread the result back.

    Exports repeat values heavily (a few occupations, provinces, flags over a million rows), so parsing the
    distinct values is many times faster than parsing every cell, and never slower by more than a hash pass."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    parsed = parse(pd.Series(uniques, dtype=object))
    result = parsed.take(np.where(codes < 0, 0, codes)) if len(parsed) else pd.Series([None] * len(values))
    result = result.reset_index(drop=True)
    result.index = values.index
    missing = codes < 0
    if missing.any():
        result = result.mask(pd.Series(missing, index=values.index))
    return result


def _as_text(values: pd.Series) -> pd.Series:
    """Stripped text, with every 'no value' token as NA."""
    text = values.astype("string").str.strip()
    return text.mask(text.str.lower().isin(_NULL_TOKENS))


def parse_numbers(values: pd.Series) -> tuple[pd.Series, int]:
    """Numbers as banks export them ("1,000", " 2500 ", "N/A") -> float. Returns the values and how many
    non-empty cells could not be read as a number (they become NaN)."""

    def _parse(distinct: pd.Series) -> pd.Series:
        text = _as_text(distinct)
        numbers = pd.to_numeric(text.str.replace(r"[,\s]", "", regex=True), errors="coerce").astype("float64")
        return numbers.mask(text.notna() & numbers.isna(), _UNPARSEABLE)

    numbers = _on_distinct(values, _parse).astype("float64")
    unparseable = numbers == _UNPARSEABLE
    return numbers.mask(unparseable), int(unparseable.sum())


def parse_flags(values: pd.Series) -> tuple[pd.Series, int]:
    """Flags written 1/0, Y/N, Yes/No, TRUE/FALSE -> 1.0 / 0.0 / NaN."""

    def _parse(distinct: pd.Series) -> pd.Series:
        text = _as_text(distinct).str.lower()
        flags = pd.Series(np.nan, index=distinct.index, dtype="float64")
        flags[text.isin(_TRUE_TOKENS).fillna(False).astype(bool)] = 1.0
        flags[text.isin(_FALSE_TOKENS).fillna(False).astype(bool)] = 0.0
        return flags.mask(text.notna() & flags.isna(), _UNPARSEABLE)

    flags = _on_distinct(values, _parse).astype("float64")
    unparseable = flags == _UNPARSEABLE
    return flags.mask(unparseable), int(unparseable.sum())


def parse_dates(values: pd.Series) -> tuple[pd.Series, int]:
    """Dates as ISO text, Excel serial numbers or day-first text (dd/mm/yyyy) -> datetime64 (NaT if empty)."""
    parsed = _on_distinct(values, _parse_distinct_dates)
    unparseable = parsed.map(lambda v: v is _UNPARSEABLE_DATE) if len(parsed) else parsed.astype(bool)
    dates = pd.to_datetime(parsed.mask(unparseable), errors="coerce").astype("datetime64[ns]")
    return dates, int(unparseable.sum())


def _parse_distinct_dates(values: pd.Series) -> pd.Series:
    text = _as_text(values)
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    rest = text.notna() & parsed.isna()
    if rest.any():
        serial = pd.to_numeric(text[rest], errors="coerce")
        plausible = serial.between(1, _LAST_SERIAL)
        if plausible.any():
            days = pd.to_timedelta(serial[plausible].round(), unit="D")
            parsed.loc[days.index] = _EXCEL_EPOCH + days
        rest = text.notna() & parsed.isna()
    if rest.any():
        parsed.loc[rest] = pd.to_datetime(text[rest], dayfirst=True, format="mixed", errors="coerce")
    # Placeholders such as 0001-01-01 or 9999-12-31 are not dates a customer record can hold: unparseable.
    parsed = parsed.astype("datetime64[us]")
    parsed = parsed.where(parsed.between(_FIRST_DATE, _LAST_DATE))
    parsed = parsed.astype("datetime64[ns]").astype(object)
    return parsed.mask(text.notna().to_numpy() & pd.isna(parsed).to_numpy(), _UNPARSEABLE_DATE)


def parse_categories(values: pd.Series) -> pd.Series:
    """Category text with surrounding and repeated inner spaces folded ("First  Pension Account" is the same
    product as "First Pension Account")."""

    def _parse(distinct: pd.Series) -> pd.Series:
        text = _as_text(distinct)
        return text.str.replace(r"\s+", " ", regex=True).astype(object).where(text.notna(), None)

    return _on_distinct(values, _parse).astype(object).where(lambda v: v.notna(), None)


def split_channels(values: pd.Series) -> pd.Series:
    """A cell of channels ("ATM, MobileApp") -> a sorted tuple of channel names; blank -> empty tuple."""

    def _split(cell: object) -> tuple[str, ...]:
        if cell is None or cell is pd.NA:
            return ()
        return tuple(sorted({part.strip() for part in str(cell).split(",") if part.strip()}))

    split = _on_distinct(values, lambda distinct: _as_text(distinct).astype(object).map(_split))
    return split.map(lambda cell: cell if isinstance(cell, tuple) else ())


# --- cleaning --------------------------------------------------------------------------------------------------


def canonicalise_columns(raw: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    """Rename headers to canonical names through the alias table; resolve repeated columns.

    Identical copies of a column (the 2023 export repeats DateofBirth) collapse to one; copies that disagree
    are reported with the number of rows where they differ, and the first is kept.
    """
    by_name: dict[str, pd.Series] = {}
    for label in raw.columns:
        header = _DUPLICATE_SUFFIX.sub("", str(label))
        name = schema.canonical_name(header)
        if name is None:
            name = schema.normalise_header(header) or str(label)
        elif header != name:
            report.aliases_applied[str(label)] = name
        column = raw[label]
        if name in by_name:
            first = by_name[name]
            differ = int((first.fillna("\0") != column.fillna("\0")).sum())
            if differ:
                report.conflicting_duplicate_columns[str(label)] = differ
                report.dropped_columns[str(label)] = f"repeats {name} but differs in {differ} rows; first kept"
            else:
                report.dropped_columns[str(label)] = f"identical copy of {name}"
            continue
        by_name[name] = column
    return pd.DataFrame(by_name, index=raw.index)


def _parse_columns(frame: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    parsed: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        unparseable = 0
        if name in schema.DATE_COLUMNS:
            parsed[name], unparseable = parse_dates(column)
        elif name in schema.FLAG_COLUMNS:
            parsed[name], unparseable = parse_flags(column)
        elif name in schema.NON_NEGATIVE_COLUMNS or name in schema.BOOKKEEPING_COLUMNS or name == schema.ID_COLUMN:
            parsed[name], unparseable = parse_numbers(column)
        elif name == schema.CHANNEL_COLUMN:
            parsed[name] = column
        else:
            parsed[name] = parse_categories(column)
        if unparseable and name != schema.ID_COLUMN:
            report.unparseable_values[name] = unparseable
    return pd.DataFrame(parsed, index=frame.index)


def _check_customer_ids(frame: pd.DataFrame, raw_ids: pd.Series, source_rows: np.ndarray, file: str) -> None:
    ids = frame[schema.ID_COLUMN]
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        value = raw_ids.iloc[position]
        blank = value is None or str(value).strip() == ""
        what = "customer id is blank" if blank else f"customer id {value!r} is not a number"
        raise IngestionError(
            f"{what} ({int(bad.sum())} rows in all)", file=file, column="customer_id", row=int(source_rows[position])
        )


def _merge_channel_rows(
    frame: pd.DataFrame, source_rows: pd.Series, report: CleaningReport, file: str
) -> tuple[pd.DataFrame, pd.Series]:
    """One row per customer: rows that differ only in their channel become one row with the set of channels.
    Rows of one customer id that differ in anything else are a broken export: refused, naming the ids."""
    has_channels = schema.CHANNEL_COLUMN in frame.columns
    channels = split_channels(frame[schema.CHANNEL_COLUMN]) if has_channels else pd.Series([()] * len(frame))
    others = frame.drop(columns=[schema.CHANNEL_COLUMN]) if has_channels else frame
    distinct = others.drop_duplicates()
    conflicting = distinct[schema.ID_COLUMN][distinct[schema.ID_COLUMN].duplicated(keep=False)].unique()
    if len(conflicting):
        shown = ", ".join(str(int(i)) for i in conflicting[:10])
        more = f" and {len(conflicting) - 10} more" if len(conflicting) > 10 else ""
        first_row = int(source_rows[frame[schema.ID_COLUMN] == conflicting[0]].iloc[1])
        raise IngestionError(
            f"{len(conflicting)} customer ids appear on several rows with conflicting values: {shown}{more}",
            file=file,
            column="customer_id",
            row=first_row,
        )
    first = ~others[schema.ID_COLUMN].duplicated()
    report.count_rows("merged: one row per subscribed channel", int((~first).sum()))
    merged = others[first].copy()
    if has_channels:
        # Union of each customer's channels: a plain dict pass is O(rows) and beats a groupby over ~n groups.
        channel_sets: dict[int, set[str]] = {}
        for customer_id, cell in zip(frame[schema.ID_COLUMN].to_numpy(), channels.to_numpy(), strict=True):
            if cell:
                channel_sets.setdefault(int(customer_id), set()).update(cell)
        merged[schema.CHANNEL_COLUMN] = [
            sorted(channel_sets.get(int(customer_id), ())) for customer_id in merged[schema.ID_COLUMN].to_numpy()
        ]
    return merged, source_rows[first]


def _quarantine(
    frame: pd.DataFrame, source_rows: pd.Series, reference: pd.Timestamp, report: CleaningReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Impossible values (negative volumes or counts, birth or relationship dates in the future, ages over 120)
    are not guessed at: the customer's row is set aside with the reason, and the run says how many."""
    problems: list[pd.DataFrame] = []

    def flag(mask: pd.Series, column: str, reason: str) -> None:
        if mask.any():
            problems.append(
                pd.DataFrame(
                    {
                        "customer_id": frame.loc[mask, schema.ID_COLUMN].astype("int64"),
                        "source_row": source_rows[mask].astype("int64"),
                        "column": column,
                        "value": frame.loc[mask, column].astype(str),
                        "reason": reason,
                    }
                )
            )

    for column in schema.NON_NEGATIVE_COLUMNS:
        if column in frame.columns:
            flag(frame[column] < 0, column, f"negative {column}")
    for column in ("date_of_birth", "customer_since"):
        if column in frame.columns:
            flag(frame[column] > reference, column, f"{column} in the future")
    if "date_of_birth" in frame.columns:
        flag(frame["date_of_birth"] < reference - pd.DateOffset(years=120), "date_of_birth", "age over 120")
    if not problems:
        empty = pd.DataFrame(columns=["customer_id", "source_row", "column", "value", "reason"])
        return frame, empty
    quarantined = pd.concat(problems, ignore_index=True)
    bad_ids = set(quarantined["customer_id"])
    keep = ~frame[schema.ID_COLUMN].isin(bad_ids)
    for reason, n in Counter(quarantined.drop_duplicates("customer_id")["reason"]).items():
        report.count_rows(f"quarantined: {reason}", n)
    return frame[keep], quarantined


def _drop_uninformative_columns(frame: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    keep = []
    for name in frame.columns:
        column = frame[name]
        if name == schema.ID_COLUMN:
            keep.append(name)
            continue
        if name == schema.CHANNEL_COLUMN:
            values = column.map(tuple)
            if values.map(len).sum() == 0:
                report.dropped_columns[name] = "all values empty"
            else:
                keep.append(name)
            continue
        if column.isna().all():
            report.dropped_columns[name] = "all values empty"
        elif column.nunique(dropna=False) == 1:
            report.dropped_columns[name] = f"constant value {column.iloc[0]!r}"
        else:
            keep.append(name)
    return frame[keep]


def clean_customers(
    raw: pd.DataFrame,
    *,
    reference_date: date,
    source_rows: np.ndarray | None = None,
    source_file: str = "input",
    drop_uninformative: bool = True,
) -> CleaningResult:
    """Clean a raw export (text cells, original headers) into one typed row per customer.

    ``source_rows`` are the rows' numbers in the file, used to name rows in errors and quarantine records.
    ``drop_uninformative=False`` keeps empty and constant columns: scoring a handful of customers must not drop
    a column just because the handful agree on it.
    """
    report = CleaningReport(rows_read=len(raw))
    rows = pd.Series(
        np.asarray(source_rows, dtype="int64") if source_rows is not None else np.arange(2, len(raw) + 2),
        index=raw.index,
    )
    canonical = canonicalise_columns(raw, report)
    if schema.ID_COLUMN not in canonical.columns:
        looked_for = ", ".join(schema.COLUMN_ALIASES[schema.ID_COLUMN][:3])
        raise IngestionError(f"no customer id column (looked for {looked_for}, ...)", file=source_file)
    typed = _parse_columns(canonical, report)
    _check_customer_ids(typed, canonical[schema.ID_COLUMN], rows.to_numpy(), source_file)
    typed[schema.ID_COLUMN] = typed[schema.ID_COLUMN].astype("int64")

    duplicated = typed.duplicated()
    report.count_rows("exact duplicate row", int(duplicated.sum()))
    typed, rows = typed[~duplicated], rows[~duplicated]

    customers, rows = _merge_channel_rows(typed, rows, report, source_file)
    reference = pd.Timestamp(reference_date)
    customers, quarantined = _quarantine(customers, rows, reference, report)

    if "date_of_birth" in customers.columns:
        customers["age"] = (reference - customers["date_of_birth"]).dt.days / _DAYS_PER_YEAR
    if "customer_since" in customers.columns:
        customers["tenure_years"] = (reference - customers["customer_since"]).dt.days / _DAYS_PER_YEAR
    if drop_uninformative:
        customers = _drop_uninformative_columns(customers, report)
    report.rows_kept = len(customers)
    return CleaningResult(customers=customers.reset_index(drop=True), report=report, quarantined=quarantined)
