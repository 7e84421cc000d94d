"""Cell -> lossless text: every value a reader gets from a file becomes the text it shows there, or ``None``.

Nothing is interpreted: integral floats lose only the ".0", other floats keep their shortest round-trip text, dates
and times are ISO 8601, booleans are ``TRUE`` / ``FALSE`` and durations ``H:MM:SS``, the way Excel shows them. Used by
the workbook reader (:func:`convert_rows`, the hot loop over calamine rows) and the Parquet reader (:func:`cell_text`
for values pyarrow does not turn into text itself).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Iterator

_date = _dt.date
_datetime = _dt.datetime


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


def convert_rows(rows: Iterable[list]) -> Iterator[list[str | None]]:
    """Calamine rows -> rows of text/None. The hot loop: str, float and date cells are converted inline.

    Calamine never yields NaN/inf (a workbook cannot hold them), so floats need no finiteness check here.
    """
    _str, _float, _int, _repr, _d, conv = str, float, int, repr, _date, cell_text
    for r in rows:
        yield [
            (v or None)
            if (t := type(v)) is _str
            else (
                (_str(_int(v)) if v.is_integer() else _repr(v))
                if t is _float
                else (v.isoformat() if t is _d else conv(v))
            )
            for v in r
        ]
