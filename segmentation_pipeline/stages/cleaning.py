"""Raw export rows -> one typed row per customer.

The raw table holds every cell as text, exactly as exported. Cleaning maps headers to canonical names, parses
numbers, flags and dates the way banks actually write them, merges the rows of customers exported once per
channel, quarantines impossible values, derives age and tenure, and drops columns that carry no information.
Every row or column it drops is counted with its reason in :class:`CleaningReport`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from segmentation_pipeline import schema
from segmentation_pipeline.stages import arrow_text, field_columns, fields
from segmentation_pipeline.stages.fields import Kind
from segmentation_pipeline.stages.ingestion import IngestionError

_DUPLICATE_SUFFIX = re.compile(r"__\d+$")


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
    # How text was read where a file could be written more than one way: decimal marks, day/month order.
    formats: dict[str, str] = field(default_factory=dict)

    def count_rows(self, reason: str, n: int) -> None:
        if n:
            self.dropped_rows[reason] = self.dropped_rows.get(reason, 0) + int(n)


@dataclass
class CleaningResult:
    customers: pd.DataFrame
    report: CleaningReport
    quarantined: pd.DataFrame  # customer_id, source_row, column, value, reason


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


def _number_formats(frame: pd.DataFrame, report: CleaningReport, file: str) -> dict[str, str]:
    """The decimal mark of every number column, proven by its values ("1,5", "1.234,56": comma); a column whose
    values cannot tell takes the mark the file's other columns prove (else the decimal point). A column whose
    values prove both is refused: there is no right reading of it."""
    marks: dict[str, set[str]] = {}
    for name in frame.columns:
        if fields.kind_of(name) is Kind.NUMBER:
            found, examples = fields.decimal_marks(_distinct(frame[name]))
            if not found:
                raise IngestionError(f"numbers written two ways ({examples[0]!r} reads with a decimal point, "
                                     f"{examples[1]!r} with a decimal comma): export one number format",
                                     file=file, column=name)  # fmt: skip
            marks[name] = found
    proven = {next(iter(m)) for m in marks.values() if len(m) == 1}
    default = fields.DECIMAL_COMMA if proven == {fields.DECIMAL_COMMA} else fields.DECIMAL_POINT
    decided = {name: next(iter(m)) if len(m) == 1 else default for name, m in marks.items()}
    for name, mark in decided.items():
        if mark == fields.DECIMAL_COMMA:
            report.formats[name] = "decimal comma (1.234,56)"
    return decided


def _date_formats(frame: pd.DataFrame, report: CleaningReport, file: str, default_order: str) -> dict[str, str]:
    """The day/month order of every date column, proven by a value whose day is above 12; a column that cannot
    tell follows ``default_order`` (said in the report); one that proves both is refused."""
    decided: dict[str, str] = {}
    for name in frame.columns:
        if fields.kind_of(name) is not Kind.DATE:
            continue
        orders, examples, numeric = fields.date_orders(_distinct(frame[name]))
        if not orders:
            raise IngestionError(f"dates written two ways ({examples[0]!r} is day-first, {examples[1]!r} month-first): "
                                 "export one date format", file=file, column=name)  # fmt: skip
        if len(orders) == 1:
            decided[name] = next(iter(orders))
            report.formats[name] = f"{_ORDER_WORDS[decided[name]]} (proven by {examples[0]!r})"
        else:
            decided[name] = default_order
            if numeric:
                report.formats[name] = f"{_ORDER_WORDS[default_order]} (the default: no value tells the order)"
    return decided


def _values(column: pd.Series) -> object:
    """A column as the parsers take it: Arrow text as it is, anything else as Python values (None = missing)."""
    texts = arrow_text.text_array(column)
    return texts if texts is not None else column.to_numpy(dtype=object)


def _distinct(column: pd.Series) -> object:
    """A column's distinct values, for the format decisions: Arrow text (nulls left out) when it is Arrow text."""
    texts = arrow_text.text_array(column)
    if texts is not None:
        return arrow_text.unique(texts)
    return pd.unique(column.to_numpy(dtype=object))


_ORDER_WORDS = {fields.DAY_FIRST: "day-first", fields.MONTH_FIRST: "month-first"}


def _parse_columns(frame: pd.DataFrame, report: CleaningReport, source_rows: np.ndarray, file: str, *,
                   reference_date: date, date_order: str, source_sheets: np.ndarray | None = None,
                   consume: bool = False) -> pd.DataFrame:  # fmt: skip
    """Every column through its kind's parser (``stages/fields.py``), over its distinct values, with the number
    and date formats its values prove; dates become datetime64 (NaT where missing or unreadable). ``consume``:
    each text column is removed from ``frame`` once parsed."""
    parsed: dict[str, object] = {}
    decimals = _number_formats(frame, report, file)
    orders = _date_formats(frame, report, file, date_order)
    index = frame.index
    for name in list(frame.columns):
        parsed[name] = _parse_one(frame, name, report, source_rows, file, decimals=decimals, orders=orders,
                                  reference_date=reference_date, date_order=date_order,
                                  source_sheets=source_sheets)  # fmt: skip
        if consume:
            frame.pop(name)  # its text is no longer needed
    if not parsed:
        return pd.DataFrame(index=index)
    # Side by side as they are: DataFrame(dict) would copy every number column into one 2-D block (about 1.5 s
    # and as much memory again for a million rows).
    return pd.concat([pd.Series(values, index=index, name=name, copy=False) for name, values in parsed.items()],
                     axis=1)  # fmt: skip


def _parse_one(frame: pd.DataFrame, name: str, report: CleaningReport, source_rows: np.ndarray, file: str, *,
               decimals: dict[str, str], orders: dict[str, str], reference_date: date, date_order: str,
               source_sheets: np.ndarray | None) -> object:  # fmt: skip
    """One column parsed (see :func:`_parse_columns`)."""
    kind = fields.kind_of(name)
    column = field_columns.parse_column(kind, _values(frame[name]), decimal=decimals.get(name, "."),
                                 order=orders.get(name, date_order), latest_year=reference_date.year)  # fmt: skip
    if kind is Kind.ID:
        _check_customer_ids(column, frame[name], source_rows, file, source_sheets)
        return _compact(kind, column)
    if len(column.bad):
        report.unparseable_values[name] = len(column.bad)
        if kind is Kind.DATE and np.isnan(column.values).all():  # not one date: a format, not a typo
            example = frame[name].iloc[int(column.bad_rows[0])]
            raise IngestionError(f"no value reads as a date (e.g. {fields.shown(example)}; numbers are not "
                                 "guessed as epochs): export dates as dates or as text (YYYY-MM-DD)",
                                 file=file, column=name)  # fmt: skip
    return fields.ordinals_to_datetime64(column.values) if kind is Kind.DATE else _compact(kind, column)


def _compact(kind: Kind, column: field_columns.ParsedColumn) -> object:
    """A parsed column as the cleaned table holds it. Parsed over distinct values (``codes``/``table``), text is
    built as Arrow strings and channel sets as a categorical of the distinct sets, without a Python object per row;
    otherwise the values as they are."""
    if column.codes is None or column.table is None or kind not in (Kind.ID, Kind.CATEGORY, Kind.CHANNELS):
        return column.values
    if kind is Kind.CHANNELS:  # distinct texts may read as the same set ("ATM, Web", "Web,ATM"): one category
        remap, sets = pd.factorize(column.table)  # an object array of tuples
        codes = remap[column.codes]  # code -1 picks the last entry: the empty set
        return pd.Categorical.from_codes(codes, categories=pd.Index(sets, dtype=object, tupleize_cols=False))
    codes = pa.array(column.codes.astype(np.int32), mask=column.codes < 0)
    texts = pa.DictionaryArray.from_arrays(codes, pa.array(column.table[:-1].tolist(), arrow_text.TEXT))
    if kind is Kind.CATEGORY and len(column.table) * 2 <= len(column.codes):  # repeating levels: kept encoded
        return pd.arrays.ArrowExtensionArray(pa.chunked_array([arrow_text.compact_dictionary(texts)]))
    return pd.array(texts.cast(arrow_text.TEXT), dtype=arrow_text.STR_DTYPE)


def _check_customer_ids(column: field_columns.ParsedColumn, raw_ids: pd.Series, source_rows: np.ndarray, file: str,
                        source_sheets: np.ndarray | None = None) -> None:  # fmt: skip
    """Every row needs a readable customer id: the first row without one refuses the file."""
    missing = np.equal(column.values, None)
    if not missing.any():
        return
    position = int(np.flatnonzero(missing)[0])
    value = raw_ids.iloc[position]
    reason = next((bad.reason for row, bad in zip(column.bad_rows, column.bad, strict=True) if row == position), None)
    what = "customer id is blank" if reason is None else reason
    if reason is not None and reason.startswith("not a number"):
        what = f"customer id {fields.shown(value)} is not a number"
    sheet = None if source_sheets is None else source_sheets[position]
    raise IngestionError(f"{what} ({int(missing.sum())} rows in all)", file=file, sheet=sheet, column="customer_id",
                         row=int(source_rows[position]))  # fmt: skip


def _merge_channel_rows(
    frame: pd.DataFrame, customer: np.ndarray, others_key: np.ndarray, source_rows: pd.Series,
    report: CleaningReport, file: str, source_sheets: pd.Series | None,
) -> tuple[pd.DataFrame, pd.Series]:
    """One row per customer: rows that differ only in their channel become one row with the set of channels.
    Rows of one customer id that differ in anything else are a broken export: refused, naming the ids.
    ``customer``: each row's customer number (0, 1, ... in order of first appearance); ``others_key``: each row's
    :func:`_row_keys` over every column but the channels (rows of customers on several rows; others: any)."""
    has_channels = schema.CHANNEL_COLUMN in frame.columns
    others = frame.drop(columns=[schema.CHANNEL_COLUMN]) if has_channels else frame
    repeated = np.bincount(customer)[customer] > 1  # only customers on several rows can conflict or merge
    pairs = pd.DataFrame({"customer": customer[repeated], "row": others_key[repeated]}).drop_duplicates()
    conflicting_numbers = pairs["customer"][pairs["customer"].duplicated()].unique()  # two different rows
    if len(conflicting_numbers):
        first_of = pd.Series(np.arange(len(customer))).groupby(customer).first()  # a row of each customer
        ids = frame[schema.ID_COLUMN]
        conflicting = [ids.iloc[int(first_of[c])] for c in np.sort(conflicting_numbers)]
        shown = ", ".join(str(i) for i in conflicting[:10])
        more = f" and {len(conflicting) - 10} more" if len(conflicting) > 10 else ""
        second = (ids == conflicting[0]).to_numpy()
        first_row = int(source_rows[second].iloc[1])
        raise IngestionError(
            f"{len(conflicting)} customer ids appear on several rows with conflicting values: {shown}{more}",
            file=file,
            sheet=None if source_sheets is None else source_sheets[second].iloc[1],
            column="customer_id",
            row=first_row,
        )
    first = np.zeros(len(customer), dtype=bool)
    first[np.unique(customer, return_index=True)[1]] = True  # each customer's first row
    report.count_rows("merged: one row per subscribed channel", int((~first).sum()))
    merged = others[first] if not first.all() else others
    if has_channels:
        merged = merged.assign(**{schema.CHANNEL_COLUMN: _channel_union(customer, frame[schema.CHANNEL_COLUMN])})
    return merged, source_rows[first]


def _row_keys(frame: pd.DataFrame, rows: np.ndarray, key: np.ndarray | None = None) -> np.ndarray:
    """A number for each row selected by the mask ``rows``, equal exactly when two rows hold equal values in every
    column (missing equal to missing, as ``DataFrame.duplicated`` compares them). Built a column at a time, so it
    needs memory for a few numbers per row rather than one per cell. ``key``: the rows' keys over other columns,
    extended here by ``frame``'s."""
    key = np.zeros(int(rows.sum()), dtype=np.int64) if key is None else key
    bound = int(key.max(initial=0)) + 1  # every key is below it
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()[rows].astype(np.int64) + 1  # -1 (missing) becomes 0
        else:
            codes = pd.factorize(column[rows], use_na_sentinel=False)[0].astype(np.int64)
        size = int(codes.max(initial=0)) + 1
        if bound * size > _KEY_LIMIT:  # the next column would not fit: the keys renumbered 0, 1, 2... first
            key = pd.factorize(key)[0]
            bound = int(key.max(initial=0)) + 1  # <= rows: rows^2 fits below 3e9 rows
        key = key * size + codes  # columns packed until they fill 62 bits (flags and categories: many at a time)
        bound *= size
    return pd.factorize(key)[0]


_KEY_LIMIT = 2**62


def _channel_union(customer: np.ndarray, cells: pd.Series) -> list[list[str]]:
    """Each customer's channels (the union over its rows), sorted, by customer number (the order of first rows).
    A set of channels is a bit mask over the file's channel names, so the union is one OR per customer."""
    if isinstance(cells.dtype, pd.CategoricalDtype):  # the distinct sets, as cleaning parsed them
        cell_codes, cell_values = cells.cat.codes.to_numpy(), list(cells.cat.categories)
    else:
        cell_codes, cell_values = pd.factorize(cells.to_numpy(dtype=object), use_na_sentinel=True)  # sorted tuples
    names = sorted({name for cell in cell_values for name in cell})
    bit = {name: 1 << i for i, name in enumerate(names)}
    wide = len(names) > 62  # beyond int64: the same ORs on Python integers
    cell_masks = np.array([sum(bit[name] for name in cell) for cell in cell_values] + [0],
                          dtype=object if wide else np.int64)  # fmt: skip
    masks = cell_masks[cell_codes]  # code -1 (no channels) picks the trailing 0
    order = np.argsort(customer, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(customer[order]) != 0])
    union = np.bitwise_or.reduceat(masks[order], starts)  # per customer code 0, 1, 2, ... (first-seen order)
    mask_codes, mask_values = pd.factorize(union)
    lists = [[name for i, name in enumerate(names) if int(mask) >> i & 1] for mask in mask_values]
    return [lists[code] for code in mask_codes]  # customers with the same channels share one (read-only) list


def _quarantine(
    frame: pd.DataFrame, source_rows: pd.Series, reference: date, report: CleaningReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Impossible values (``fields.impossible_values``: negative or absurd volumes and counts, birth or
    relationship dates in the future, ages over 120) are not guessed at: the customer's row is set aside with the
    reason, and the run says how many."""
    numbers = {name: frame[name].to_numpy(dtype=np.float64) for name in schema.NON_NEGATIVE_COLUMNS if name in frame}
    dates = {
        name: fields.datetime64_to_ordinals(frame[name].to_numpy()) for name in fields.YEARS_OF_DATE if name in frame
    }
    problems = [
        pd.DataFrame(
            {
                "customer_id": frame[schema.ID_COLUMN].to_numpy(dtype=object)[found.rows],
                "source_row": source_rows.to_numpy(dtype="int64")[found.rows],
                "column": found.column,
                "value": _shown_values(frame[found.column].iloc[found.rows]),
                "reason": found.reason,
            }
        )
        for found in fields.impossible_values(numbers, dates, reference=reference)
    ]
    if not problems:
        empty = pd.DataFrame(columns=["customer_id", "source_row", "column", "value", "reason"])
        return frame, empty
    quarantined = pd.concat(problems, ignore_index=True)
    bad_ids = set(quarantined["customer_id"])
    keep = ~frame[schema.ID_COLUMN].isin(bad_ids)
    for reason, n in Counter(quarantined.drop_duplicates("customer_id")["reason"]).items():
        report.count_rows(f"quarantined: {reason}", n)
    return frame[keep], quarantined


def _shown_values(values: pd.Series) -> list[str]:
    """Values as an analyst reads them: dates as dates, numbers without a trailing .0."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return [str(v.date()) for v in values]
    return [_plain(v) for v in values]


def _plain(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def _drop_uninformative_columns(frame: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    keep = []
    for name in frame.columns:
        column = frame[name]
        if name == schema.ID_COLUMN:
            keep.append(name)
            continue
        if name == schema.CHANNEL_COLUMN:
            if not any(map(len, column)):  # stops at the first customer with a channel (not 1M tuples made)
                report.dropped_columns[name] = "all values empty"
            else:
                keep.append(name)
            continue
        if column.isna().all():
            report.dropped_columns[name] = "all values empty"
        elif column.eq(column.iloc[0]).fillna(False).all():  # every value the first (a missing one equals nothing)
            report.dropped_columns[name] = f"constant value {_plain(column.iloc[0])}"
        else:
            keep.append(name)
    return frame[keep]


def clean_customers(
    raw: pd.DataFrame,
    *,
    reference_date: date,
    source_rows: np.ndarray | None = None,
    source_sheets: np.ndarray | None = None,
    source_file: str = "input",
    drop_uninformative: bool = True,
    date_order: str = fields.DAY_FIRST,
    consume: bool = False,
) -> CleaningResult:
    """Clean a raw export (text cells, original headers) into one typed row per customer.

    ``source_rows`` are the rows' numbers in the file, used to name rows in errors and quarantine records;
    ``source_sheets`` the sheet of each row when a workbook's table spans several sheets (rows are numbered per
    sheet), used to name the sheet in those errors.
    ``drop_uninformative=False`` keeps empty and constant columns: scoring a handful of customers must not drop
    a column just because the handful agree on it. ``date_order``: the day/month order of a date column whose
    values do not prove one. ``consume=True``: ``raw`` is cleaning's alone (the caller holds no other reference),
    and each text column is let go of once it is parsed, so a large file's text and its typed table are never both
    whole in memory.
    """
    report = CleaningReport(rows_read=len(raw))
    rows = pd.Series(
        np.asarray(source_rows, dtype="int64") if source_rows is not None else np.arange(2, len(raw) + 2),
        index=raw.index,
    )
    sheets = None if source_sheets is None else pd.Series(np.asarray(source_sheets, dtype=object), index=raw.index)
    canonical = canonicalise_columns(raw, report)
    if consume:
        del raw  # canonical holds the columns now; parsing releases them one by one
    if schema.ID_COLUMN not in canonical.columns:
        looked_for = ", ".join(schema.COLUMN_ALIASES[schema.ID_COLUMN][:3])
        raise IngestionError(f"no customer id column (looked for {looked_for}, ...)", file=source_file)
    typed = _parse_columns(canonical, report, rows.to_numpy(), source_file, reference_date=reference_date,
                           date_order=date_order, source_sheets=source_sheets, consume=consume)  # fmt: skip

    # Customers numbered once, in order of first appearance: rows of one customer share a number. A row can only
    # repeat another row of its own customer: only those rows are compared whole.
    # Each such row's key over every column but the channels (to tell rows that differ only in their channel),
    # then extended by the channels (to find exact duplicates).
    customer = pd.factorize(typed[schema.ID_COLUMN])[0]
    repeated = np.bincount(customer)[customer] > 1
    channels = [schema.CHANNEL_COLUMN] if schema.CHANNEL_COLUMN in typed.columns else []
    others_key = np.full(len(typed), -1, dtype=np.int64)
    others_key[repeated] = _row_keys(typed.drop(columns=[schema.ID_COLUMN, *channels]), repeated, customer[repeated])
    duplicated = np.zeros(len(typed), dtype=bool)
    duplicated[repeated] = pd.Series(_row_keys(typed[channels], repeated, others_key[repeated])).duplicated().to_numpy()
    report.count_rows("exact duplicate row", int(duplicated.sum()))
    if duplicated.any():  # (no copy of a large table that has none; a first appearance is never a duplicate)
        typed, rows, customer = typed[~duplicated], rows[~duplicated], customer[~duplicated]
        others_key = others_key[~duplicated]
        sheets = None if sheets is None else sheets[~duplicated]

    customers, rows = _merge_channel_rows(typed, customer, others_key, rows, report, source_file, sheets)
    del typed  # (its rows are in customers now: a large file's two tables are not kept side by side)
    customers, quarantined = _quarantine(customers, rows, reference_date, report)

    for column, years in fields.YEARS_OF_DATE.items():
        if column in customers.columns:
            days = fields.datetime64_to_ordinals(customers[column].to_numpy())
            customers[years] = fields.years_before(reference_date, days)
    if drop_uninformative:
        customers = _drop_uninformative_columns(customers, report)
    report.rows_kept = len(customers)
    return CleaningResult(customers=customers.reset_index(drop=True), report=report, quarantined=quarantined)
