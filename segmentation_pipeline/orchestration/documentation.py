"""What the Dagster UI says about every asset, before any run and with every materialisation: owners, tags,
kinds, a link to the code, the DuckDB table it is and its columns (DuckDB type and meaning, from the one column
contract ``schema.TABLE_COLUMNS``); previews with rounded numbers; the k search as a chart.

Owners: ``$SEGMENTATION_OWNER`` (comma-separated team names ``team:NAME`` or e-mail addresses; default
``team:aml-analytics``). Code references point at the local source file and line; with ``$SEGMENTATION_GIT_URL``
(a GitHub or GitLab repository URL) and ``$SEGMENTATION_GIT_BRANCH`` (default ``main``) they link to the hosted
source instead (no network is used: the URL is only written).
"""

from __future__ import annotations

import base64
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pygal

from segmentation_pipeline import schema
from segmentation_pipeline.config import default_warehouse_path

OWNER_ENV, DEFAULT_OWNER = "SEGMENTATION_OWNER", "team:aml-analytics"
GIT_URL_ENV, GIT_BRANCH_ENV = "SEGMENTATION_GIT_URL", "SEGMENTATION_GIT_BRANCH"
DOMAIN = "aml"
PREVIEW_DECIMALS = 4  # floats in markdown previews: 0.9887375290210009 is shown as 0.9887


def owners() -> list[str]:
    """$SEGMENTATION_OWNER (comma-separated), else team:aml-analytics. Raises ValueError naming the variable for an
    owner Dagster would refuse (the code location then fails to load with that one line)."""
    value = os.environ.get(OWNER_ENV) or DEFAULT_OWNER
    found = [owner.strip() for owner in value.split(",") if owner.strip()]
    for owner in found:
        try:  # Dagster's own rule: an e-mail address or team:NAME
            dg.AssetSpec("owner_check", owners=[owner])
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"{OWNER_ENV}={value!r}: {owner!r} is neither an e-mail address nor a team name "
                             f"(e.g. {DEFAULT_OWNER!r})") from None  # fmt: skip
    if not found:
        raise ValueError(f"{OWNER_ENV}={value!r} names no owner (e.g. {DEFAULT_OWNER!r})")
    return found


def asset_tags(*, pii: bool) -> dict[str, str]:
    """The tags every asset carries: its domain, and whether it holds data about identifiable customers."""
    return {"domain": DOMAIN, "pii": "true" if pii else "false"}


def table_name(table: str) -> str:
    """The table's fully qualified DuckDB name in the warehouse file (catalog = the file's name without .duckdb)."""
    return f"{default_warehouse_path().stem}.main.{table}"


def declared_schema(table: str) -> dg.TableSchema:
    """The table's columns as the contract declares them (a pattern column shown in its form, e.g. ``pc<n>``)."""
    columns = []
    for column in schema.TABLE_COLUMNS[table]:
        note = " (absent when the export lacks it or it is empty or constant)" if column.optional else ""
        if column.pattern is not None:
            note = " (one column per match" + (", if any" if column.optional else "") + ")"
        description = column.description.replace("{0}", column.name[column.name.find("<"):] or "")
        columns.append(dg.TableColumn(name=column.name, type=column.type, description=description + note))
    return dg.TableSchema(columns=columns)


def table_definition_metadata(table: str) -> dict[str, object]:
    """What a table-backed asset's definition carries: its table name, declared columns and how to query it."""
    warehouse = default_warehouse_path()
    return {
        "dagster/table_name": table_name(table),
        "dagster/column_schema": declared_schema(table),
        "warehouse": dg.MetadataValue.path(str(warehouse)),
        # The pipeline's own duckdb library reads the file (a separately installed duckdb CLI may be older).
        "query": dg.MetadataValue.md(
            f"```\nsegmentation sql --warehouse {warehouse} 'SELECT * FROM {table} LIMIT 10'\n```"
        ),
    }


def duckdb_types(frame: pd.DataFrame | pa.Table) -> dict[str, str]:
    """Each column's DuckDB type as DuckDB reads this frame (the reading that writes it to the warehouse)."""
    with duckdb.connect() as connection:
        connection.register("_frame", frame)
        return {row[0]: row[1] for row in connection.execute("DESCRIBE SELECT * FROM _frame").fetchall()}


def materialised_schema(table: str, frame: pd.DataFrame | pa.Table) -> dg.TableSchema:
    """The columns a materialisation wrote (``frame``: the table or its first part), each with its DuckDB type and
    the contract's description (every one of a pattern's columns named)."""
    columns = []
    for name, kind in duckdb_types(frame).items():
        column = schema.table_column(table, name)
        description = column.described(name) if column is not None else "not in the column contract (schema.py)"
        columns.append(dg.TableColumn(name=name, type=kind, description=description))
    return dg.TableSchema(columns=columns)


def _cell(value: object) -> str:
    """A preview cell: floats to 4 decimals (trailing zeros dropped), missing values blank, a date without its
    midnight, a list joined."""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(_cell(v) for v in value)
    if pd.isna(value):
        return ""
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return str(value)
        shown = f"{value:.{PREVIEW_DECIMALS}f}".rstrip("0").rstrip(".")
        return "0" if shown == "-0" else shown
    if isinstance(value, pd.Timestamp) and value.tz is None and value == value.normalize():
        return value.date().isoformat()
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_preview(frame: pd.DataFrame, rows: int = 5, max_columns: int = 12) -> str:
    """The first rows as a markdown table: floats rounded to 4 decimals, missing values blank, lists joined."""
    shown = frame.head(rows).iloc[:, :max_columns]
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def k_search_markdown(k_search: pd.DataFrame, chosen: int) -> str:
    """Every k tried as a table, and, when more than one k was tried, a chart of silhouette (higher is better) and
    Davies-Bouldin (lower is better) per k: an SVG inline in the markdown (the UI renders data: images)."""
    table = markdown_preview(k_search, rows=len(k_search), max_columns=len(k_search.columns))
    if len(k_search) < 2:
        return f"k fixed at {chosen} (n_clusters): no search.\n\n{table}"
    chart = pygal.Line(js=[], width=560, height=360, dots_size=4, legend_at_bottom=True, legend_at_bottom_columns=1,
                       truncate_legend=-1, x_title=f"k (chosen: {chosen})", show_minor_y_labels=False,
                       y_labels_major_count=5)  # fmt: skip
    chart.x_labels = [str(k) for k in k_search["k"]]
    chart.add("silhouette (higher is better)", [round(float(v), 4) for v in k_search["silhouette"]])
    chart.add("Davies-Bouldin (lower is better)", [round(float(v), 4) for v in k_search["davies_bouldin"]],
              secondary=True)  # fmt: skip
    svg = base64.b64encode(chart.render()).decode("ascii")
    return f"![silhouette and Davies-Bouldin per k](data:image/svg+xml;base64,{svg})\n\n{table}"


def document_assets(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with a reference to the code that defines them (file and line; a link to the hosted source when
    $SEGMENTATION_GIT_URL is set)."""
    with warnings.catch_warnings():  # Dagster marks code references beta: said once here, not at every load
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _with_code_references(assets)


def _with_code_references(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    documented = dg.with_source_code_references(list(assets))
    url = os.environ.get(GIT_URL_ENV)
    if not url:
        return list(documented)
    anchor = Path(__file__).resolve()  # the same file in the repository: segmentation_pipeline/orchestration/...
    mapping = dg.AnchorBasedFilePathMapping(local_file_anchor=anchor,
                                            file_anchor_path_in_repository=str(anchor.relative_to(anchor.parents[2])))
    try:
        return list(dg.link_code_references_to_git(documented, git_url=url.rstrip("/"), file_path_mapping=mapping,
                                                   git_branch=os.environ.get(GIT_BRANCH_ENV) or "main"))
    except ValueError:  # neither GitHub nor GitLab
        raise ValueError(f"{GIT_URL_ENV}={url!r}: only GitHub and GitLab repository URLs can be linked") from None
