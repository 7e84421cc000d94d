"""Parquet reader (pyarrow): every column to lossless text by the same rules as workbook cells.

Parquet has no rows on paper: the table is numbered as if it were a sheet with the header on row 1, so the first
data row is row 2. An index saved by pandas is not data and is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segmentation_pipeline.schema import ID_COLUMN, canonical_name
from segmentation_pipeline.stages.cell_text import cell_text
from segmentation_pipeline.stages.raw_table import NO_ID_COLUMN, IngestionError, RawTable, unique_labels


def _arrow_column_text(col) -> list[str | None]:
    """One pyarrow ChunkedArray -> list of lossless text/None (same rules as workbook cells)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [v or None for v in col.to_pylist()]
    if pa.types.is_integer(t) or pa.types.is_date(t) or pa.types.is_decimal(t):
        return col.cast(pa.string()).to_pylist()
    if pa.types.is_dictionary(t):
        return _arrow_column_text(pc.cast(col, t.value_type))
    if pa.types.is_timestamp(t):
        out = []
        for v in col.to_pylist():
            if v is None:
                out.append(None)
            elif hasattr(v, "to_pydatetime") and getattr(v, "nanosecond", 0):
                out.append(v.isoformat())
            else:
                out.append(cell_text(v.to_pydatetime() if hasattr(v, "to_pydatetime") else v))
        return out
    return [cell_text(v) for v in col.to_pylist()]


def read_parquet(path: Path, name: str, sha: str) -> RawTable:
    """A Parquet file as a table, read one row group at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        all_names = pf.schema_arrow.names
        # pandas' saved index is not data; columns are taken by position because names may repeat.
        positions = [k for k, n in enumerate(all_names) if not str(n).startswith("__index_level_")]
        names = [all_names[k] for k in positions]
    except Exception as exc:
        raise IngestionError(f"not a valid Parquet file: {exc}", file=name) from None
    headers = [str(n) for n in names]
    if ID_COLUMN not in {canonical_name(h) for h in headers}:
        raise IngestionError(NO_ID_COLUMN, file=name)
    nrows = pf.metadata.num_rows
    if nrows == 0:
        raise IngestionError("file has a header but no data rows", file=name, row=1)
    arr = np.empty((nrows, len(headers)), dtype=object)
    offset = 0
    try:
        for rg in range(pf.num_row_groups):  # one row group at a time keeps arrow's copy bounded
            table = pf.read_row_group(rg)
            n = table.num_rows
            for j, k in enumerate(positions):
                arr[offset : offset + n, j] = _arrow_column_text(table.column(k))
            offset += n
            del table
    except Exception as exc:
        raise IngestionError(f"not a valid Parquet file: {exc}", file=name) from None
    nonblank = pd.notna(arr).any(axis=1)
    source = np.arange(2, nrows + 2, dtype=np.int64)
    if not nonblank.all():
        arr, source = arr[nonblank], source[nonblank]
    if len(arr) == 0:
        raise IngestionError("file has a header but no data rows", file=name, row=1)
    labels = unique_labels(headers, list(range(len(headers))))
    frame = pd.DataFrame(arr, columns=pd.Index(labels, dtype=object), dtype=object, copy=False)
    return RawTable(
        frame=frame,
        headers=headers,
        source_file=name,
        sheet=None,
        header_row=1,
        source_rows=source,
        sha256=sha,
        file_format="parquet",
    )
