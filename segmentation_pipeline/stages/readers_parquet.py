"""Parquet reader (pyarrow): every column to lossless text by the same rules as workbook cells.

Parquet has no rows on paper: the table is numbered as if it were a sheet with the header on row 1, so the first
data row is row 2. An index saved by pandas is not data and is left out.

Arrow types are read as a workbook would show them: dates as ``YYYY-MM-DD``; timestamps as ISO date-times, those
with a time zone as the wall-clock time in that zone with its offset (``1990-01-01T00:00:00+05:00``), so the date
is the calendar date in the column's own zone. A list of strings is a set of channels, read as the names joined
with ", ", and only under the channels header. Every other nested type, a number under a date header (epoch days?
milliseconds? YYYYMMDD? Excel serials?) and any type without a text reading are refused with one line naming the
column and its type, before any row is read. A cell that would otherwise be read wrong (a channel name holding a
comma, bytes that are not UTF-8, a date before year 1) refuses the file too, naming its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segmentation_pipeline.schema import CHANNEL_COLUMN, DATE_COLUMNS, ID_COLUMN, canonical_name
from segmentation_pipeline.stages.arrow_text import TEXT, text_series
from segmentation_pipeline.stages.cell_text import cell_text, float_texts
from segmentation_pipeline.stages.raw_table import NO_ID_COLUMN, IngestionError, RawTable, unique_labels

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DAY_ONE = -719_162  # 0001-01-01 as days since 1970-01-01: the first day ISO text (and Python) can write
_AS_DATES = "export dates as dates or as text (YYYY-MM-DD)"
# Legacy INT96 timestamps (Impala, old Spark) read at microseconds: at pyarrow's default (nanoseconds) a placeholder
# such as 9999-12-31 silently wraps around to 1816-03-29. Their writers store microseconds, so nothing is lost.
_INT96_UNIT = "us"


@dataclass(frozen=True)
class _Column:
    """Where a column's values come from, for refusals."""

    file: str
    header: str

    def refuse(self, message: str, row: int | None = None) -> IngestionError:
        return IngestionError(message, file=self.file, column=self.header, row=row)


def _is_text(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list(t) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def _is_binary(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def type_refusal(t, header: str) -> str | None:
    """Why a column of Arrow type ``t`` under ``header`` cannot be read as text, or None when it can."""
    import pyarrow as pa

    name = canonical_name(header)
    if isinstance(t, pa.BaseExtensionType):
        return f"holds values of type {t}, which are not read; export it as text"
    if _is_list(t) and name == CHANNEL_COLUMN and _is_text(t.value_type):
        return None  # a set of channels
    if pa.types.is_nested(t):
        return f"holds nested values ({t}); export it as text"
    if pa.types.is_dictionary(t):
        return type_refusal(t.value_type, header)
    if name in DATE_COLUMNS:
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return f"holds numbers ({t}), not dates; {_AS_DATES}"
        if pa.types.is_time(t):
            return f"holds times of day ({t}), not dates; {_AS_DATES}"
        if pa.types.is_duration(t):
            return f"holds durations ({t}), not dates; {_AS_DATES}"
    if (
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or _is_text(t)
        or _is_binary(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_time(t)
        or pa.types.is_duration(t)
    ):
        return None
    return f"holds values of type {t}, which are not read; export it as text"


def _arrow_column_text(col, where: _Column, first_row: int) -> list:
    """One pyarrow ChunkedArray (of a type :func:`type_refusal` accepts) -> its lossless text, one Arrow string
    array per chunk (null: no value). ``first_row`` is the row number of its first value (for refusals)."""
    out = []
    row = first_row
    for chunk in col.chunks:
        out.append(_chunk_text(chunk, where, row))
        row += len(chunk)
    return out


def _chunk_text(chunk, where: _Column, first_row: int):
    import pyarrow as pa

    t = chunk.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or _is_text(t):
        # Values that repeat (flags, codes, categories) are written once each: a dictionary of their text. These
        # types refuse no value, so no row number is needed.
        encoded = chunk.dictionary_encode() if not pa.types.is_dictionary(t) else chunk
        if len(encoded.dictionary) * 2 <= len(chunk):
            return pa.DictionaryArray.from_arrays(encoded.indices, _value_text(encoded.dictionary, where, first_row))
    return _value_text(chunk, where, first_row)


def _value_text(chunk, where: _Column, first_row: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = chunk.type
    if pa.types.is_dictionary(t):
        return _value_text(pc.cast(chunk, t.value_type), where, first_row)
    if _is_text(t):  # an empty string is no value, as an empty cell
        text = chunk.cast(TEXT)
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, TEXT), text)
    if pa.types.is_integer(t) or pa.types.is_decimal(t):
        return chunk.cast(TEXT)
    if pa.types.is_floating(t):  # null -> NaN: no value either way
        return float_texts(chunk.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if pa.types.is_boolean(t):
        return pc.if_else(chunk, pa.scalar("TRUE", TEXT), pa.scalar("FALSE", TEXT))
    if pa.types.is_date(t):
        return _date_text(chunk, where, first_row)
    if pa.types.is_timestamp(t):
        return _timestamp_text(chunk, where, first_row)
    if _is_list(t):
        return pa.array(_channels_text(chunk, where, first_row), type=TEXT)
    if _is_binary(t):
        return pa.array(_binary_text(chunk, where, first_row), type=TEXT)
    return pa.array([cell_text(v) for v in chunk.to_pylist()], type=TEXT)


def _one_type(chunks: list):
    """A column's chunks as one chunked array: all dictionaries, or (when its row groups differ) all plain text."""
    import pyarrow as pa

    if len({chunk.type for chunk in chunks}) > 1:
        chunks = [chunk.cast(TEXT) for chunk in chunks]
    return pa.chunked_array(chunks, type=chunks[0].type if chunks else TEXT)


def _date_text(chunk, where: _Column, first_row: int):
    """date32 / date64 -> "YYYY-MM-DD"."""
    import pyarrow as pa

    valid = ~chunk.is_null().to_numpy(zero_copy_only=False)
    days = chunk.cast(pa.int64() if pa.types.is_date64(chunk.type) else pa.int32()).fill_null(0).to_numpy()
    days = days.astype(np.int64)
    if pa.types.is_date64(chunk.type):
        days = days // 86_400_000  # milliseconds -> days (a date64 is a whole day; floor keeps it one)
    text = np.datetime_as_string(days.astype("datetime64[D]"), unit="D")
    _refuse_before_year_one(days < _DAY_ONE, valid, text, where, first_row)
    return pa.array(text, type=TEXT, mask=~valid)


def _timestamp_text(chunk, where: _Column, first_row: int):
    """timestamp[unit] -> "YYYY-MM-DDTHH:MM:SS[.ffffff|.fffffffff]", with "+HH:MM" when the type has a time zone.

    A zoned value is written as the wall-clock time in its zone with that moment's offset (daylight saving
    included), so its date is the calendar date in the zone, and the text names the same instant."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = chunk.type
    per = _PER_SECOND[t.unit]
    valid = ~chunk.is_null().to_numpy(zero_copy_only=False)
    utc = chunk.cast(pa.int64()).fill_null(0).to_numpy()
    if t.tz is None:
        local = utc
    else:
        try:
            local = pc.local_timestamp(chunk).cast(pa.int64()).fill_null(0).to_numpy()
        except pa.ArrowException:
            message = f"holds timestamps in time zone {t.tz!r}, which is not known here; export it as text"
            raise where.refuse(message) from None
        offset = local - utc
        # Near the ends of the unit's range the wall-clock time overflows and wraps around without an error (and
        # the subtraction wraps back, so the offset looks right): then it lies on the wrong side of the instant.
        wrapped = valid & (
            ((offset > 0) & (local < utc)) | ((offset < 0) & (local > utc)) | (np.abs(offset) >= 86_400 * per)
        )
        if wrapped.any():
            raise where.refuse(
                f"holds a timestamp its time zone {t.tz!r} cannot show (out of range); refused",
                row=first_row + int(np.flatnonzero(wrapped)[0]),
            )
    seconds, fraction = np.divmod(local, per)
    moments, at = np.unique(seconds, return_inverse=True)  # customers' dates repeat: each written once
    text = np.datetime_as_string(moments.astype("datetime64[s]"), unit="s")
    early = (moments < _DAY_ONE * 86_400)[at]
    if (early & valid).any():
        _refuse_before_year_one(early, valid, text[at], where, first_row)
    fractional = valid & (fraction != 0) if per > 1 else np.zeros(len(valid), dtype=bool)
    if not fractional.any() and t.tz is None:  # the usual case: whole seconds, no zone
        return pc.if_else(pa.array(valid), pa.array(text, type=TEXT).take(pa.array(at)), pa.scalar(None, TEXT))
    out = text[at].astype(object)
    for i in np.flatnonzero(fractional):
        f = int(fraction[i])
        if per <= 1_000_000:
            out[i] += f".{f * (1_000_000 // per):06d}"
        else:  # nanoseconds: microseconds when they suffice, like pandas shows them
            out[i] += f".{f // 1_000:06d}" if f % 1_000 == 0 else f".{f:09d}"
    if t.tz is not None:
        shown: dict[int, str] = {}
        offset_seconds = offset // per
        for i in np.flatnonzero(valid):
            s = int(offset_seconds[i])
            suffix = shown.get(s)
            if suffix is None:
                suffix = shown[s] = _offset_text(s)
            out[i] += suffix
    return pa.array(out, type=TEXT, mask=~valid)


def _offset_text(seconds: int) -> str:
    """A UTC offset as ISO text: 18000 -> "+05:00", -14400 -> "-04:00", 0 -> "+00:00" (seconds only when any)."""
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def _refuse_before_year_one(early: np.ndarray, valid: np.ndarray, text: np.ndarray, where: _Column, first: int) -> None:
    # ISO text has no year 0 or earlier, and a date parser reads "-1968-01-02" as a 1968 date: refused, not guessed.
    bad = np.flatnonzero(early & valid)
    if bad.size:
        i = int(bad[0])
        raise where.refuse(f"holds a date before year 1 ({text[i]}); refused", row=first + i)


def _channels_text(chunk, where: _Column, first_row: int) -> list[str | None]:
    """A list of channel names -> the names joined with ", " (the channels text every export uses); [] -> None."""
    out: list[str | None] = []
    for i, names in enumerate(chunk.to_pylist()):
        if not names:
            out.append(None)
            continue
        for part in names:
            if part is None:
                raise where.refuse("a list of channels holds a null entry; export channel names only", first_row + i)
            if "," in part:
                raise where.refuse(
                    f"channel name {part!r} contains a comma, which separates channels; refused", first_row + i
                )
        out.append(", ".join(names))
    return out


def _binary_text(chunk, where: _Column, first_row: int) -> list[str | None]:
    """Binary cells as UTF-8 text (how older writers store strings); bytes that are not UTF-8 are refused."""
    import pyarrow as pa

    try:
        return [v or None for v in chunk.cast(pa.string()).to_pylist()]
    except pa.ArrowInvalid:
        pass
    for i, v in enumerate(chunk.to_pylist()):
        try:
            if v is not None:
                v.decode("utf-8")
        except UnicodeDecodeError:
            raise where.refuse("holds bytes that are not UTF-8 text; export it as text", row=first_row + i) from None
    raise where.refuse("holds bytes that are not UTF-8 text; export it as text")  # pragma: no cover - cast agrees


def read_parquet(path: Path, name: str, sha: str) -> RawTable:
    """A Parquet file as a table, read one row group at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, coerce_int96_timestamp_unit=_INT96_UNIT)
        schema = pf.schema_arrow
        all_names = schema.names
        # pandas' saved index is not data; columns are taken by position because names may repeat.
        positions = [k for k, n in enumerate(all_names) if not str(n).startswith("__index_level_")]
        names = [all_names[k] for k in positions]
    except Exception as exc:
        raise IngestionError(f"not a valid Parquet file: {exc}", file=name) from None
    headers = [str(n) for n in names]
    if ID_COLUMN not in {canonical_name(h) for h in headers}:
        raise IngestionError(NO_ID_COLUMN, file=name)
    columns = [_Column(name, h) for h in headers]
    for k, where in zip(positions, columns, strict=True):
        refusal = type_refusal(schema.field(k).type, where.header)
        if refusal is not None:
            raise where.refuse(refusal)
    nrows = pf.metadata.num_rows
    if nrows == 0:
        raise IngestionError("file has a header but no data rows", file=name, row=1)
    parts: list[list] = [[] for _ in headers]  # per column: Arrow text, one array per row group chunk
    offset = 0
    try:
        for rg in range(pf.num_row_groups):  # one row group at a time keeps arrow's copy bounded
            table = pf.read_row_group(rg)
            for j, k in enumerate(positions):
                parts[j].extend(_arrow_column_text(table.column(k), columns[j], offset + 2))
            offset += table.num_rows
            del table
    except IngestionError:
        raise
    except Exception as exc:
        raise IngestionError(f"not a valid Parquet file: {exc}", file=name) from None
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = [_one_type(chunks) for chunks in parts]
    nonblank = np.zeros(nrows, dtype=bool)
    for text in texts:
        nonblank |= text.is_valid().to_numpy(zero_copy_only=False)
    source = np.arange(2, nrows + 2, dtype=np.int64)
    if not nonblank.all():
        keep = pa.array(nonblank)
        texts = [pc.filter(text, keep) for text in texts]
        source = source[nonblank]
    if len(source) == 0:
        raise IngestionError("file has a header but no data rows", file=name, row=1)
    labels = unique_labels(headers, list(range(len(headers))))
    frame = pd.DataFrame({label: text_series(text) for label, text in zip(labels, texts, strict=True)})
    return RawTable(
        frame=frame,
        headers=headers,
        source_file=name,
        sheet=None,
        header_row=1,
        source_rows=np.asarray(source, dtype=np.int64),
        sha256=sha,
        file_format="parquet",
    )
