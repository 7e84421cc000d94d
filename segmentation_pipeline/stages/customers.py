"""Typed customers as the model sees them: the one shape between parsing and scoring.

A cleaned file (``cleaned_customers``) and a request's records (``stages/records.py``) both become a
:class:`CustomerBatch`; fitting, the compiled scorer and the reasons only ever read this shape. A row of a file and
a record of a request holding the same values are the same customer by the time they get here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from segmentation_pipeline import schema
from segmentation_pipeline.stages import arrow_text, fields
from segmentation_pipeline.stages.fields import Kind


@dataclass
class CustomerBatch:
    """``n`` customers, column by column (canonical names).

    - ``numbers``: float64 arrays (NaN = unknown) of every numeric column: money, counts, flags (0/1) and the
      years derived from dates (``age``, ``tenure_years``); a column absent from the dict is unknown for all;
    - ``categories``: object arrays of text or None;
    - ``channels``: one sorted tuple of channel names per customer, or None when the field was not given.
    """

    customer_ids: np.ndarray
    numbers: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, np.ndarray] = field(default_factory=dict)
    channels: list[tuple[str, ...]] | None = None

    @property
    def n(self) -> int:
        return len(self.customer_ids)

    def number(self, name: str) -> np.ndarray:
        """A numeric column (all NaN when the batch does not have it)."""
        values = self.numbers.get(name)
        return np.full(self.n, np.nan) if values is None else values

    def category(self, name: str) -> np.ndarray | None:
        return self.categories.get(name)

    def take(self, rows: np.ndarray | slice) -> CustomerBatch:
        """The customers at ``rows`` (a slice or positions)."""
        channels = None
        if self.channels is not None:
            channels = self.channels[rows] if isinstance(rows, slice) else [self.channels[i] for i in rows]
        return CustomerBatch(
            customer_ids=self.customer_ids[rows],
            numbers={name: values[rows] for name, values in self.numbers.items()},
            categories={name: values[rows] for name, values in self.categories.items()},
            channels=channels,
        )

    def chunks(self, size: int) -> Iterator[CustomerBatch]:
        """Consecutive slices of at most ``size`` customers (the whole batch when it is small)."""
        if self.n <= size:
            yield self
            return
        for start in range(0, self.n, size):
            yield self.take(slice(start, start + size))

    @classmethod
    def from_frame(cls, customers: pd.DataFrame) -> CustomerBatch:
        """Cleaned customers (``clean_customers`` output or the ``cleaned_customers`` table) as a batch: columns
        are taken as they are, nothing is parsed again. Lineage columns (``_...``) and unknown ones are ignored."""
        return cls._of_columns(
            customers.columns, customers[schema.ID_COLUMN].astype(str).to_numpy(dtype=object),
            number=lambda name: customers[name].to_numpy(dtype=np.float64, na_value=np.nan),
            category=lambda name: _none_for_missing(customers[name].astype(object).to_numpy()),
            channels=lambda name: [_channel_tuple(cell) for cell in customers[name]],
        )  # fmt: skip

    @classmethod
    def from_arrow(cls, customers: pa.Table | pa.RecordBatch) -> CustomerBatch:
        """The same as :meth:`from_frame` for cleaned customers read as Arrow (a chunk streamed out of DuckDB):
        the same columns become the same numbers, categories and channels, without a pandas frame."""
        def column(name: str) -> pa.Array | pa.ChunkedArray:
            values = customers.column(name)
            return pc.dictionary_decode(values) if pa.types.is_dictionary(values.type) else values

        return cls._of_columns(
            customers.column_names, column(schema.ID_COLUMN).cast(pa.string()).to_numpy(zero_copy_only=False),
            number=lambda name: column(name).cast(pa.float64()).to_numpy(zero_copy_only=False),
            category=lambda name: _category_objects(customers.column(name)),
            channels=lambda name: _channel_tuples(column(name)),
        )  # fmt: skip

    @classmethod
    def _of_columns(
        cls, names: Iterable[object], ids: np.ndarray, *, number: Callable[[str], np.ndarray],
        category: Callable[[str], np.ndarray], channels: Callable[[str], list[tuple[str, ...]]],
    ) -> CustomerBatch:  # fmt: skip
        """A batch of the columns ``names`` (each converted by the reader for its :func:`column_role`)."""
        numbers: dict[str, np.ndarray] = {}
        categories: dict[str, np.ndarray] = {}
        channel_tuples = None
        for name in map(str, names):
            role = column_role(name)
            if role is Role.NUMBER:
                numbers[name] = number(name)
            elif role is Role.CATEGORY:
                categories[name] = category(name)
            elif role is Role.CHANNELS:
                channel_tuples = channels(name)
        return cls(customer_ids=ids, numbers=numbers, categories=categories, channels=channel_tuples)

    def to_columns(self) -> dict[str, list[object]]:
        """Plain JSON-able columns (NaN -> None): how a model stores its verification sample."""
        out: dict[str, list[object]] = {schema.ID_COLUMN: self.customer_ids.tolist()}
        for name, values in self.numbers.items():
            out[name] = [None if np.isnan(v) else v for v in values.tolist()]
        for name, values in self.categories.items():
            out[name] = list(values)
        if self.channels is not None:
            out[schema.CHANNEL_COLUMN] = [list(c) for c in self.channels]
        return out

    @classmethod
    def from_columns(cls, columns: Mapping[str, list[object]]) -> CustomerBatch:
        """Inverse of :meth:`to_columns`."""
        numbers, categories, channels = {}, {}, None
        for name, values in columns.items():
            if name == schema.ID_COLUMN:
                continue
            if name == schema.CHANNEL_COLUMN:
                channels = [tuple(v) for v in values]
            elif name in schema.CATEGORICAL_COLUMNS:
                categories[name] = np.array(values, dtype=object)
            else:
                numbers[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        ids = np.array([str(i) for i in columns[schema.ID_COLUMN]], dtype=object)
        return cls(customer_ids=ids, numbers=numbers, categories=categories, channels=channels)


class Role(Enum):
    """What a cleaned column is to a batch."""

    NUMBER = "number"
    CATEGORY = "category"
    CHANNELS = "channels"


def column_role(name: str) -> Role | None:
    """The one definition of which cleaned column a batch holds as a number (money, counts, flags, the years
    derived from dates), a category or the channels; None: the id, lineage columns (``_...``) and unknown ones."""
    if name == schema.ID_COLUMN or name.startswith("_"):
        return None
    kind = fields.kind_of(name)
    if kind in (Kind.NUMBER, Kind.FLAG) or name in fields.YEARS_OF_DATE.values():
        return Role.NUMBER
    if kind is Kind.CATEGORY and name in schema.CATEGORICAL_COLUMNS:
        return Role.CATEGORY
    if kind is Kind.CHANNELS:
        return Role.CHANNELS
    return None


def as_batch(customers: CustomerBatch | pd.DataFrame) -> CustomerBatch:
    return customers if isinstance(customers, CustomerBatch) else CustomerBatch.from_frame(customers)


def _none_for_missing(values: np.ndarray) -> np.ndarray:
    return np.where(pd.isna(values), None, values)


def _category_objects(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow text column as the object array :meth:`CustomerBatch.from_frame` makes (None where missing), with
    one Python text per distinct value rather than one per customer: codes index a table of the distinct texts."""
    texts = arrow_text.text_array(values)
    if texts is None:  # not text (a column of nulls only, say): one object per customer, as before
        return _none_for_missing(values.to_numpy(zero_copy_only=False))
    codes, distinct = arrow_text.factorize(texts)
    table = np.empty(len(distinct) + 1, dtype=object)
    table[:-1] = arrow_text.plain(distinct).to_pylist()  # code -1 (missing) picks the last entry: None
    return table[codes]


_JOIN = "\x1f"  # a separator no channel name holds (checked): a list cell's text key


def _channel_tuples(cells: pa.Array | pa.ChunkedArray) -> list[tuple[str, ...]]:
    """:func:`_channel_tuple` of every cell of an Arrow column, computed once per distinct cell (customers hold one
    of a few channel combinations): no Python object per customer until the result."""
    cells = cells.combine_chunks() if isinstance(cells, pa.ChunkedArray) else cells
    keys = cells
    if pa.types.is_list(cells.type) or pa.types.is_large_list(cells.type):
        names = pc.list_flatten(cells)
        if names.null_count or not pa.types.is_string(names.type) or pc.any(pc.match_substring(names, _JOIN)).as_py():
            return [_channel_tuple(cell) for cell in cells.to_pylist()]
        keys = pc.binary_join(cells, _JOIN)
    elif not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
        return [_channel_tuple(cell) for cell in cells.to_pylist()]
    encoded = keys.dictionary_encode(null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)  # one cell of each distinct key, in code order
    distinct = np.fromiter((_channel_tuple(cell) for cell in cells.take(first).to_pylist()), dtype=object,
                           count=len(first))  # fmt: skip
    return distinct[codes].tolist()


def _channel_tuple(cell: object) -> tuple[str, ...]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return ()
    if isinstance(cell, str):
        parsed = fields.channels(cell)
        return parsed if isinstance(parsed, tuple) else ()
    return tuple(str(c) for c in cell)
