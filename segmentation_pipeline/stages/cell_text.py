"""Cell -> lossless text: every value a reader gets from a file becomes the text it shows there, or ``None``.

Nothing is interpreted: integral floats lose only the ".0", other floats keep their shortest round-trip text, dates
and times are ISO 8601, booleans are ``TRUE`` / ``FALSE`` and durations ``H:MM:SS``, the way Excel shows them.
:func:`cell_text` is the rule for one value; the readers convert whole columns with its bulk forms, which the tests
prove equal to it value by value: :func:`float_texts` (a float column, shared by the Parquet reader and the
workbook reader) and :func:`cell_texts` (a column of a workbook's cells as calamine gives them, any mix of types).
"""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import infer_dtype

from segmentation_pipeline.stages.arrow_text import TEXT

_date = _dt.date
_datetime = _dt.datetime

# Excel's error values. A cell holding one (a formula that failed: =1/0, a lookup that found nothing) has no value:
# the streaming xlsx reader hands over its text, python-calamine an empty string; both read as an empty cell.
EXCEL_ERRORS = pa.array(
    ["#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA", "#SPILL!", "#CALC!",
     "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!"], type=TEXT)  # fmt: skip


def cell_text(v: object) -> str | None:
    """The text of one non-``str`` cell value (``str`` cells are handled inline by the callers, for speed)."""
    t = type(v)
    if t is float:
        if v != v:  # NaN: only Parquet/pandas produce it, and it means "missing" there
            return None
        if math.isinf(v):
            return "INF" if v > 0 else "-INF"
        return str(int(v)) if v.is_integer() else repr(v)
    if t is bool:
        return "TRUE" if v else "FALSE"
    if v is None:
        return None
    if t is str:
        return v or None
    if t is int:
        return str(v)
    if isinstance(v, _datetime):  # before date: datetime is a date subclass
        if v.microsecond:
            return v.isoformat(timespec="microseconds")
        return v.isoformat(timespec="seconds")
    if isinstance(v, _date):
        return v.isoformat()
    if isinstance(v, _dt.time):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return _timedelta_text(v)
    if isinstance(v, float):  # numpy floats
        return cell_text(float(v))
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace") or None
    return str(v)


def _timedelta_text(v: _dt.timedelta) -> str:
    """A duration cell ([h]:mm:ss) as "H:MM:SS" with the total hours, like Excel shows it."""
    total = v.total_seconds()
    sign = "-" if total < 0 else ""
    seconds = abs(total)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{int(secs):02d}" if float(secs).is_integer() else f"{secs:09.6f}"
    return f"{sign}{int(hours)}:{int(minutes):02d}:{sec_text}"


def float_texts(values: np.ndarray) -> pa.Array:
    """Floats as :func:`cell_text` writes them (NaN: no value), vectorised: whole numbers through int64, other values
    of ordinary size by Arrow's shortest text (which is Python's ``repr`` there, as the tests prove), the rest
    (exponents, infinities) by :func:`cell_text`. A value that repeats is written once."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if len(values) > 64:
        codes, distinct = pd.factorize(values)  # NaN -> -1 (no value); flags, codes and amounts repeat
        if len(distinct) * 2 <= len(values):
            return float_texts(distinct).take(pa.array(codes, mask=codes < 0))
    size = np.abs(values)
    with np.errstate(invalid="ignore"):
        whole = ~missing & np.isfinite(values) & (values == np.floor(values)) & (size < 2.0**63)
        ordinary = ~whole & (size >= 1e-4) & (size < 1e16)
    text = pc.cast(pa.array(values), TEXT)
    text = pc.if_else(pa.array(whole), pc.cast(pa.array(np.where(whole, values, 0).astype(np.int64)), TEXT), text)
    exponent = pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    special = ~missing & ~whole & (~ordinary | exponent)
    if special.any():
        text = pc.replace_with_mask(text, pa.array(special),
                                    pa.array([cell_text(float(v)) for v in values[special]], type=TEXT))  # fmt: skip
    return pc.if_else(pa.array(missing), pa.scalar(None, TEXT), text)


def cell_texts(values: np.ndarray) -> pa.Array:
    """One column of workbook cells (calamine's Python values, an object array) -> Arrow text, null where a cell is
    empty: ``str`` cells as they are (an empty string or an Excel error value is an empty cell), floats by
    :func:`float_texts`, dates by Arrow (ISO, as ``date.isoformat``), every other value (date-times, times,
    durations, booleans) by :func:`cell_text`, once per distinct value.

    Calamine gives NaN or an infinity only for a hand-edited sheet (``<v>NaN</v>``): those read as ``nan``, ``inf``
    and ``-inf``, their Python text, as the workbook reader always read them (unlike :func:`cell_text`)."""
    kind = infer_dtype(values, skipna=False)  # one pass in C; a column of one type (most of them) is done at once
    if kind == "string":
        return _texts_of(str, values)
    if kind == "floating":
        return _texts_of(float, values)
    if kind == "empty":
        return pa.array([], type=TEXT)
    # Cells of several types (a number column with empty cells, a title above the header): each type's cells
    # converted together, then put back in row order. By exact type: True, 1 and 1.0 are one key to a hash table.
    kinds = set(map(type, values))
    if len(kinds) == 1:  # dates, booleans...
        return _texts_of(kinds.pop(), values)
    types = np.fromiter(map(type, values), dtype=object, count=len(values))
    pieces, positions = [], []
    for t in kinds:
        at = np.flatnonzero(types == t)
        pieces.append(_texts_of(t, values[at]))
        positions.append(at)
    order = np.empty(len(values), dtype=np.int64)
    order[np.concatenate(positions)] = np.arange(len(values), dtype=np.int64)
    return pa.concat_arrays(pieces).take(pa.array(order))


def _texts_of(t: type, values: np.ndarray) -> pa.Array:
    """Cells that are all of type ``t``, as text."""
    if t is str:
        text = pa.array(values, type=TEXT)
        no_value = pc.or_(pc.equal(text, ""), pc.is_in(text, value_set=EXCEL_ERRORS))
        return pc.if_else(no_value, pa.scalar(None, TEXT), text)
    if t is float:
        floats = values.astype(np.float64)
        text = float_texts(floats)
        odd = ~np.isfinite(floats)
        if odd.any():  # see cell_texts: NaN and infinities as Python writes them
            python = [repr(v) for v in floats[odd].tolist()]
            text = pc.replace_with_mask(text, pa.array(odd), pa.array(python, type=TEXT))
        return text
    if t is _date:
        return pa.array(values, type=pa.date32()).cast(TEXT)
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    return pa.array([cell_text(v) for v in distinct], type=TEXT).take(pa.array(codes))
