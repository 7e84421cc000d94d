"""Columns of many text values held in Arrow: found, matched and factorised without a Python object per cell.

A file's raw table keeps every cell as text. Held as Arrow strings (one buffer per column) a million-row export
is a few hundred megabytes instead of tens of millions of Python objects, and the work the parsers of
``stages/fields.py`` need per column (its distinct values, which of them match a pattern) runs in Arrow's C++
kernels. The parsers themselves stay the one definition of how a value reads: these helpers only choose which
values they see.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TEXT = pa.large_string()
TEXT_DTYPE = pd.ArrowDtype(TEXT)
STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' own text columns (cleaned ids and categories)


def text_series(values: pa.Array | pa.ChunkedArray, index: pd.Index | None = None) -> pd.Series:
    """Arrow text as a pandas column (missing is null, no copy per cell), held compactly: a column whose values
    repeat (flags, categories, dates: most of an export) as a dictionary of its distinct texts and one int32 code
    per row, any other as ``large_string``."""
    if isinstance(values, pa.ChunkedArray) and pa.types.is_dictionary(values.type):
        values = values.cast(pa.dictionary(pa.int32(), TEXT)).unify_dictionaries()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    values = compact_dictionary(values) if pa.types.is_dictionary(values.type) else compact_text(values)
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([values])), index=index, copy=False)


def compact_text(values: pa.Array) -> pa.Array:
    """Plain text held compactly: a dictionary of its distinct texts and an int32 code per row when at most half
    the rows hold distinct texts, else ``large_string``."""
    if values.type != TEXT:
        values = values.cast(TEXT)
    encoded = values.dictionary_encode()
    return encoded if len(encoded.dictionary) * 2 <= len(values) else values


def compact_dictionary(values: pa.DictionaryArray) -> pa.Array:
    """A dictionary column whose entries are distinct non-null texts (equal texts may come from different values,
    e.g. 1 and 1.0, or from several row groups); plain text when hardly anything repeats."""
    texts = values.dictionary.cast(TEXT)
    distinct = pc.unique(texts.drop_null())
    indices = pc.take(pc.index_in(texts, value_set=distinct), values.indices)  # null entry or index: null
    compact = pa.DictionaryArray.from_arrays(indices.cast(pa.int32()), distinct)
    return compact if len(distinct) * 2 <= len(values) else compact.cast(TEXT)


def repeated(value: str, n: int) -> pd.Series:
    """One text for ``n`` rows (a lineage column: file, hash, run id), stored once with a code per row."""
    codes = pa.array(np.zeros(n, dtype=np.int32))
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.DictionaryArray.from_arrays(codes, pa.array([value], TEXT))))


def text_array(values: object) -> pa.Array | None:
    """The Arrow text behind a pandas column or an Arrow array (one contiguous array), or None for anything else
    (an object array of Python values: the per-value path reads it)."""
    if isinstance(values, pd.Series):
        if not isinstance(values.dtype, pd.ArrowDtype):
            return None
        values = values.array._pa_array if hasattr(values.array, "_pa_array") else pa.array(values.array)
    elif isinstance(values, pd.arrays.ArrowExtensionArray):
        values = values._pa_array
    if isinstance(values, pa.ChunkedArray):
        if not _is_text(values.type):
            return None
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array) and _is_text(values.type):
        return values
    return None


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def plain(texts: pa.Array) -> pa.Array:
    """Text as plain strings (a dictionary-encoded column decoded)."""
    return texts.cast(TEXT) if pa.types.is_dictionary(texts.type) else texts


def re2(pattern: re.Pattern[str]) -> str:
    """A Python pattern as an anchored RE2 pattern (Arrow's engine): whole-value match; ``\\uXXXX`` escapes, which
    RE2 spells ``\\x{XXXX}``, rewritten. Only for the plain patterns of ``fields`` (classes, groups, repeats)."""
    body = re.sub(r"\\u([0-9a-fA-F]{4})", r"\\x{\1}", pattern.pattern)
    return f"^(?:{body})$"


def fullmatch(texts: pa.Array, pattern: re.Pattern[str]) -> np.ndarray:
    """Which values match ``pattern`` as a whole (as ``pattern.fullmatch`` would); null matches nothing."""
    matched = pc.match_substring_regex(texts, re2(pattern))
    return matched.fill_null(False).to_numpy(zero_copy_only=False)


def factorize(texts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(codes, distinct values): ``codes[i]`` is the position of value ``i`` among the distinct values, -1 for null
    (as ``pd.factorize`` gives them)."""
    encoded = texts if pa.types.is_dictionary(texts.type) else texts.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    return codes, encoded.dictionary


def unique(texts: pa.Array) -> pa.Array:
    """The distinct non-null texts (of a dictionary column: the entries its rows use), as plain strings."""
    if pa.types.is_dictionary(texts.type):
        used = pc.unique(texts.indices.drop_null())
        return plain(texts.dictionary).take(used)
    return pc.unique(texts.drop_null())
