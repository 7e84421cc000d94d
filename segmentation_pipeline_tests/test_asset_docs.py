"""What the Dagster UI says about every asset, read through Dagster's public API: owners, tags, kinds, a
description, a code reference, and for every table-backed asset its DuckDB table name and a column schema whose
every column has a DuckDB type and a description; that schema is compared with the tables a real run wrote (the
session's trained warehouse), so the contract in ``schema.py`` cannot drift from the warehouse."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline import schema
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.orchestration.documentation import (
    DEFAULT_OWNER,
    OWNER_ENV,
    k_search_markdown,
    markdown_preview,
    owners,
)

TABLES = set(schema.TABLE_COLUMNS)  # the table-backed assets
CUSTOMER_DATA = {"raw_workbook", "cleaned_customers", "customer_features", "pca_embedding", "cluster_assignments",
                 "rating_reasons", "kmeans_model", "segment_report"}  # fmt: skip


def _specs() -> dict[str, dg.AssetSpec]:
    return {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}


def test_every_asset_has_owners_tags_kinds_description_and_code_reference() -> None:
    specs = _specs()
    assert TABLES | {"published_snapshot"} == set(specs)
    for name, spec in specs.items():
        assert spec.owners == [DEFAULT_OWNER], name
        assert spec.tags["domain"] == "aml", name
        assert spec.tags["pii"] == ("true" if name in CUSTOMER_DATA else "false"), name
        assert spec.kinds and spec.kinds <= {"duckdb", "python", "pandas", "scikitlearn", "numpy", "plotly", "html"}
        assert spec.description and len(spec.description) > 40, name
        (reference,) = spec.metadata["dagster/code_references"].code_references
        assert isinstance(reference, dg.LocalFileCodeReference), name
        assert reference.file_path.endswith("orchestration/assets.py") and reference.line_number > 0, name


def test_every_table_backed_asset_declares_its_table_and_described_columns() -> None:
    specs = _specs()
    assert "dagster/table_name" not in specs["published_snapshot"].metadata  # it has no table of its own
    for name in TABLES:
        metadata = specs[name].metadata
        assert metadata["dagster/table_name"] == f"warehouse.main.{name}"
        columns = metadata["dagster/column_schema"].columns
        assert [c.name for c in columns] == [c.name for c in schema.TABLE_COLUMNS[name]]
        for column in columns:
            assert re.fullmatch(r"[A-Z_ ]+(\[\])?", column.type), (name, column)  # a DuckDB type, not a dtype
            assert column.description and "{0}" not in column.description, (name, column)


def test_declared_columns_are_the_columns_a_real_run_wrote(trained_warehouse) -> None:
    """Every column of every asset table the trained warehouse holds is in the contract with its DuckDB type (a
    pattern such as pc<n> may stand for several; none may fall to a catch-all), and every column the contract
    requires is there."""
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        for table in TABLES:
            real = connection.execute(f"DESCRIBE {table}").fetchall()
            for name, kind, *_ in real:
                column = schema.table_column(table, name)
                assert column is not None and column.type == kind, (table, name, kind, column)
                assert column.pattern is None or not column.name.startswith("<other"), (table, name)
            present = {row[0] for row in real}
            required = [c.name for c in schema.TABLE_COLUMNS[table] if c.pattern is None and not c.optional]
            assert set(required) <= present, (table, set(required) - present)
            patterns = [c for c in schema.TABLE_COLUMNS[table] if c.pattern and not c.optional]
            for pattern in patterns:
                assert any(pattern.matches(name) for name in present), (table, pattern.name)


def test_previews_round_floats_and_blank_missing_values() -> None:
    frame = pd.DataFrame({"score": [0.9887375290210009, np.nan, -0.00001], "tier": pd.array(["High", None, "Low"]),
                          "rules": [np.array(["R1", "R2"]), np.array([], dtype=object), None],
                          "born": [pd.Timestamp("1980-01-02"), pd.NaT, pd.Timestamp("1990-05-06 10:30")]})  # fmt: skip
    assert markdown_preview(frame).splitlines()[2:] == [
        "| 0.9887 | High | R1, R2 | 1980-01-02 |", "|  |  |  |  |", "| 0 | Low |  | 1990-05-06 10:30:00 |"]


def test_k_search_is_drawn_when_several_k_were_tried() -> None:
    search = pd.DataFrame({"k": [2, 3, 4], "silhouette": [0.41, 0.52, 0.3], "davies_bouldin": [1.1, 0.9, 1.4]})
    markdown = k_search_markdown(search, chosen=3)
    image = re.match(r"!\[[^]]+\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert image is not None and "| 3 | 0.52 | 0.9 |" in markdown
    svg = ET.fromstring(base64.b64decode(image.group(1)))
    assert svg.tag.endswith("svg") and "silhouette (higher is better)" in base64.b64decode(image.group(1)).decode()
    assert k_search_markdown(search.head(1), chosen=2).startswith("k fixed at 2")


def test_owners_come_from_the_environment_and_a_bad_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OWNER_ENV, "team:fiu, jane.doe@bank.example")
    assert owners() == ["team:fiu", "jane.doe@bank.example"]
    monkeypatch.setenv(OWNER_ENV, "the fiu")
    with pytest.raises(ValueError, match=r"SEGMENTATION_OWNER='the fiu': 'the fiu' is neither an e-mail"):
        owners()
