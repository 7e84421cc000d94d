"""The pipeline as Dagster software-defined assets: a thin layer over the core stages.

    raw_workbook + cleaned_customers    one step: read the file, clean it once, write both (or nothing)
      -> kmeans_model                   ``fit_model``: features, PCA, K-means, tiers; the new version a candidate
      -> customer_features + pca_embedding + cluster_assignments + rating_reasons + segment_profiles
                                        one scoring pass of the compiled scorer (the candidate if it passed the
                                        quality gate, else the active model)
      -> segment_report                 the report of this snapshot, built before it is published
      -> published_snapshot             ONE transaction: public names, logs, registry and history switch to it

Every step writes into the run's own snapshot (``warehouse/snapshots.py``) through :func:`write_assets` (one
transaction per step, lineage included); nothing any reader sees changes until ``published_snapshot``. A run that
fails or dies at any point leaves the published snapshot exactly as it was.
"""

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from segmentation_pipeline import __version__, schema
from segmentation_pipeline.config import PipelineSettings, default_input_path
from segmentation_pipeline.orchestration.documentation import (
    asset_tags,
    k_search_markdown,
    materialised_schema,
    owners,
    table_definition_metadata,
)
from segmentation_pipeline.orchestration.documentation import markdown_preview as _markdown_preview
from segmentation_pipeline.orchestration.partitions import EXPORTS, export_key
from segmentation_pipeline.orchestration.resources import SegmentationSettings, WarehouseResource
from segmentation_pipeline.reporting import build_segment_report, latest_report_path, write_report_files
from segmentation_pipeline.stages.arrow_text import TEXT, repeated, text_series
from segmentation_pipeline.stages.cleaning import CleaningReport, clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.ingestion import IngestionError, RawTable, read_customer_file
from segmentation_pipeline.stages.model import (
    FIT_PLAN_COLUMNS,
    FitPlan,
    ModelContractError,
    fit_model,
    plan_fit,
)
from segmentation_pipeline.stages.policy import PolicyError, load_policy
from segmentation_pipeline.stages.stability import drift_columns, population_profile, stability_report
from segmentation_pipeline.warehouse import LineageRecord, Warehouse, registry, snapshots
from segmentation_pipeline.warehouse.models import load_model, model_table_row, policy_rules_rows
from segmentation_pipeline.warehouse.scoring_pass import ScoringPass, scored_parts
from segmentation_pipeline.warehouse.store import TablePart, WarehouseBusy, WarehouseUnavailable

GROUP = "segmentation"
LINEAGE_PREFIX = "_"  # columns added by the pipeline (lineage), never part of the bank's export
# Every asset writes the one DuckDB file: they share a pool that dagster.yaml limits to one run at a time.
WAREHOUSE_POOL = "segmentation_warehouse"


class RawWorkbookConfig(dg.Config):
    """Which file a run ingests."""

    path: str | None = None  # None: $SEGMENTATION_INPUT or the bundled sample
    sheet: str | None = None  # None: the sheet that holds the customer table
    name: str | None = None  # the file's name in messages and lineage (a staged copy: the name it was dropped under)


# --- the one place assets write the warehouse ---------------------------------------------------------------------


def run_snapshot(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, *, rebuild: bool = False,
    source_path: Path | None = None,
) -> tuple[snapshots.Snapshot, Warehouse]:
    """The run's snapshot and the warehouse as the run sees it (its own tables first, then its base's, then the
    published ones). The first step of a run creates it: ``rebuild`` when that step ingests a file."""
    key = context.partition_key if context.has_partition_key else None
    try:
        snapshot = snapshots.begin(warehouse.store(), context.run_id, rebuild=rebuild, export_key=key,
                                   source_path=source_path)  # fmt: skip
    except (WarehouseUnavailable, WarehouseBusy) as error:
        raise _failure(str(error)) from None
    return snapshot, snapshot.store(Path(warehouse.database))


def write_assets(
    context: dg.AssetExecutionContext,
    store: Warehouse,
    tables: Mapping[str, TablePart] | Iterable[Mapping[str, TablePart]],
    *,
    lineage: dict[str, tuple[list[str], int | None]],
    started_at: datetime,
    input_sha256: str | None,
    append: tuple[str, ...] = (),
    also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> dict[str, int]:
    """Write a step's tables into the run's snapshot (``store``) with one lineage row per asset it materialises
    (``lineage``: asset -> (upstream assets, row count; None: the rows written to the asset's table)), in ONE
    transaction. ``tables``: the tables, or an iterable of {table: part} that yields them a part at a time
    (``Warehouse.write_parts``). Returns the rows written per table."""
    records = [
        LineageRecord(run_id=context.run_id, asset_key=asset, upstream_assets=upstream, input_file_sha256=input_sha256,
                      code_version=__version__, started_at=started_at, row_count=rows)  # fmt: skip
        for asset, (upstream, rows) in lineage.items()
    ]
    try:
        if isinstance(tables, Mapping):
            store.write_tables(tables, lineage=records, append=append, also=also)
            return {name: len(frame) for name, frame in tables.items()}
        return store.write_parts(tables, lineage=records, append=append, also=also)
    except (WarehouseUnavailable, WarehouseBusy) as error:
        raise _failure(str(error)) from None


# --- shared helpers ---------------------------------------------------------------------------------------------


def table_metadata(
    frame: pd.DataFrame | pa.Table, *, table: str, rows: int | None = None, **extra: object
) -> dict[str, object]:
    """Row count, column schema (DuckDB types, the contract's descriptions) and a markdown preview (numbers
    rounded): what every table-backed asset shows in the UI. ``frame``: the rows written to ``table``, or its first
    part (or first rows), the table having ``rows`` rows."""
    preview = frame.slice(0, 5).to_pandas() if isinstance(frame, pa.Table) else frame
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame) if rows is None else rows),
        "dagster/column_schema": materialised_schema(table, frame),
        "preview": dg.MetadataValue.md(_markdown_preview(preview)),
        **extra,
    }




def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def plan_and_training_customers(store: Warehouse, settings: PipelineSettings) -> tuple[FitPlan, pa.Table]:
    """The fit's plan (``plan_fit``: quality gate and sample) made on every cleaned customer's few columns it needs,
    and the whole rows of the customers it fits on (in customer_id order, as ``fit_model(..., plan=...)`` takes
    them), as Arrow. The same customers, model and labels as fitting on the whole table, without reading it whole."""
    present = set(store.query("SELECT * FROM cleaned_customers LIMIT 0").columns)
    needed = [schema.ID_COLUMN, *(c for c in FIT_PLAN_COLUMNS if c in present)]
    everyone = CustomerBatch.from_arrow(store.arrow(
        f"SELECT {_quoted(needed)} FROM cleaned_customers ORDER BY {schema.ID_COLUMN}"))  # fmt: skip
    plan = plan_fit(everyone, settings)
    if plan.rows is None:
        return plan, store.arrow(f"SELECT * FROM cleaned_customers ORDER BY {schema.ID_COLUMN}")
    with store.connect(read_only=True) as connection:  # the sampled customers' whole rows, by their ids
        connection.register("_sampled", pa.table({"id": pa.array(everyone.customer_ids[plan.rows], pa.string())}))
        try:
            training = connection.sql(
                f"SELECT * FROM cleaned_customers WHERE {schema.ID_COLUMN} IN (SELECT id FROM _sampled) "
                f"ORDER BY {schema.ID_COLUMN}"
            ).to_arrow_table()  # fmt: skip
        finally:
            connection.unregister("_sampled")
    if training.num_rows != len(plan.rows):
        raise ValueError(f"cleaned_customers: customer ids are not unique ({training.num_rows} rows hold the "
                         f"{len(plan.rows)} sampled ids)")  # fmt: skip
    return plan, training


def _input_sha(store: Warehouse) -> str | None:
    rows = store.query("SELECT any_value(_file_sha256) AS sha FROM cleaned_customers")
    return None if rows.empty else rows["sha"].iloc[0]


def _failure(message: str, **metadata: object) -> dg.Failure:
    # The one-line message is the run's failure reason, in the UI, the CLI and the sensor's .reason.txt.
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


def _reject(error: IngestionError) -> dg.Failure:
    return _failure(str(error), file=error.file, sheet=error.sheet or "", column=error.column or "",
                    row=error.row or 0)  # fmt: skip


def _raw_table(raw: RawTable, run_id: str) -> pd.DataFrame:
    """The raw table as the warehouse keeps it: the file's text plus each row's file, sheet, row, hash, ingestion
    time and run (a text that repeats is stored once)."""
    n = len(raw.frame)
    if raw.source_sheets is not None:  # each row's own sheet
        sheets = text_series(pa.array(raw.source_sheets, type=TEXT))
    else:
        sheets = repeated(raw.sheet, n) if raw.sheet is not None else text_series(pa.nulls(n, TEXT))
    return raw.frame.assign(
        _source_file=repeated(raw.source_file, n), _sheet=sheets, _source_row=np.asarray(raw.source_rows, "int64"),
        _file_sha256=repeated(raw.sha256, n), _ingested_at=pd.Timestamp.now(tz="UTC"), _run_id=repeated(run_id, n),
    )  # fmt: skip


def _ingestion_report(raw: RawTable, report: CleaningReport, run_id: str) -> pd.DataFrame:
    """The run's row of ``ingestion_report``: what was read, kept and dropped, and how the text was read."""
    return pd.DataFrame([{
        "run_id": run_id, "source_file": raw.source_file, "sheet": raw.sheet, "file_sha256": raw.sha256,
        "rows_read": report.rows_read, "rows_kept": report.rows_kept, "rows_dropped": json.dumps(report.dropped_rows),
        "columns_dropped": json.dumps(report.dropped_columns), "aliases_applied": json.dumps(report.aliases_applied),
        "unparseable_values": json.dumps(report.unparseable_values), "formats": json.dumps(report.formats),
        "created_at": pd.Timestamp.now(tz="UTC"),
    }])  # fmt: skip


def _export_file(config: RawWorkbookConfig, warehouse: WarehouseResource, key: str | None) -> Path:
    """The file a run ingests: the configured path; else, for an export partition re-materialised from the UI,
    the staged copy its first run read; else $SEGMENTATION_INPUT or the bundled sample."""
    if config.path:
        return Path(config.path)
    if key is not None:
        staged = snapshots.source_of(warehouse.store(), key)
        if staged is None:
            raise _failure(f"export {key}: no staged file is known for it (drop the file in the incoming folder or "
                           "run `segmentation run --input FILE`)")  # fmt: skip
        return staged
    return default_input_path()


def _previous_assignments(warehouse: WarehouseResource) -> pd.DataFrame | None:
    """The published assignments (customer_id, cluster, risk_tier, model_version), if there are any."""
    store = warehouse.store()
    if "cluster_assignments" not in store.table_names():
        return None
    return store.query("SELECT customer_id, cluster, risk_tier, model_version FROM main.cluster_assignments")


def _reference_date(settings: SegmentationSettings) -> date:
    value = settings.settings().reference_date
    return date.fromisoformat(value) if value else date.today()


def _documented(table: str | None, *, pii: bool) -> dict[str, object]:
    """What every asset's definition says besides its description: owners, tags, and for a table-backed asset
    its DuckDB table and declared columns (``documentation.py``)."""
    return {"owners": owners(), "tags": asset_tags(pii=pii),
            "metadata": table_definition_metadata(table) if table else {}}  # fmt: skip


def _spec(name: str, description: str, deps: list[str], kinds: set[str], *, pii: bool) -> dg.AssetSpec:
    return dg.AssetSpec(name, description=description, deps=deps, kinds=kinds, group_name=GROUP,
                        code_version=__version__, **_documented(name, pii=pii))  # fmt: skip


# --- ingestion: the file read and cleaned once ---------------------------------------------------------------------


@dg.multi_asset(
    name="raw_workbook",
    partitions_def=EXPORTS,  # the op keeps the asset's name: run config stays ops.raw_workbook.config.path
    specs=[
        _spec("raw_workbook", "The bank's export read losslessly: every column with its original header, every cell "
              "as exported (as text), plus lineage columns: source file, sheet, source row, file SHA-256, ingestion "
              "time, run id.", [], {"duckdb", "python"}, pii=True),
        _spec("cleaned_customers", "One row per customer with canonical column names and types: duplicates removed, "
              "per-channel rows merged into one row with the set of channels, impossible values quarantined, age "
              "and tenure derived, empty and constant columns dropped. Every dropped row and column is counted "
              "with its reason.", ["raw_workbook"], {"duckdb", "pandas"}, pii=True),
    ],  # fmt: skip
    pool=WAREHOUSE_POOL,
)
def ingest_export(
    context: dg.AssetExecutionContext,
    config: RawWorkbookConfig,
    warehouse: WarehouseResource,
    segmentation: SegmentationSettings,
) -> Iterator[dg.MaterializeResult]:
    """Read the file and clean it (once); a refused file fails here, with one line naming file, sheet, column and
    row, before anything is written: the warehouse keeps the last good run. A bad policy rules file stops the run
    here too, before the file is read."""
    started = datetime.now().astimezone()
    try:
        load_policy(segmentation.settings().rules_file)
    except PolicyError as error:
        raise _failure(str(error)) from None
    key = context.partition_key if context.has_partition_key else None
    path = _export_file(config, warehouse, key)
    reference = _reference_date(segmentation)
    date_order = segmentation.settings().date_order
    try:
        warehouse.store().check_usable()  # a directory or a read-only folder: said now, not after the whole file
        raw: RawTable = read_customer_file(path, sheet=config.sheet, name=config.name)
    except IngestionError as error:
        raise _reject(error) from None
    except FileNotFoundError:
        raise _failure(f"{path}: file not found") from None
    except WarehouseUnavailable as error:
        raise _failure(str(error)) from None
    for warning in raw.warnings:  # e.g. a full sheet: the export was probably cut off
        context.log.warning(warning)
    if key is not None and export_key(raw.sha256) != key:
        raise _failure(f"{raw.source_file}: its content is not export {key} (its SHA-256 starts {raw.sha256[:16]}); "
                       "stage it with `segmentation run` or the drop folder")  # fmt: skip
    _, store = run_snapshot(context, warehouse, rebuild=True, source_path=path)
    # The raw table is written first and then handed to cleaning, which lets go of each text column once it is
    # parsed: the file's text and its typed customers are never both whole in memory. Both, and the cleaning's
    # tables, are written in ONE transaction; a file cleaning refuses writes nothing.
    raw_table, raw = _raw_table(raw, context.run_id), replace(raw, frame=raw.frame.iloc[:0])
    raw_metadata = table_metadata(raw_table.head(5), table="raw_workbook", source_file=raw.source_file,
                                  sheet=", ".join(raw.sheets), header_row=raw.header_row, file_sha256=raw.sha256,
                                  original_headers=dg.MetadataValue.json(list(raw.headers)))  # fmt: skip
    raw_metadata["dagster/row_count"] = dg.MetadataValue.int(len(raw_table))
    cleaned: dict[str, object] = {}

    def parts() -> Iterator[dict[str, object]]:
        nonlocal raw_table
        text = [raw_table.drop(columns=[c for c in raw_table.columns if str(c).startswith(LINEAGE_PREFIX)])]
        yield {"raw_workbook": raw_table}
        raw_table = None
        result = clean_customers(text.pop(), reference_date=reference, source_rows=raw.source_rows,
                                 source_sheets=raw.source_sheets, source_file=raw.source_file, date_order=date_order,
                                 consume=True)  # fmt: skip
        report = result.report
        kept = len(result.customers)
        customers = result.customers.assign(
            _reference_date=pd.Timestamp(reference), _file_sha256=repeated(raw.sha256, kept),
            _run_id=repeated(context.run_id, kept),
        )  # fmt: skip
        cleaned.update(result=result, customers=customers)
        quarantined = result.quarantined.assign(run_id=context.run_id)
        # As Arrow (the same DuckDB types): DuckDB stores it in 2 s instead of 3 s for a million customers, the one
        # write of the step that nothing runs beside.
        yield {"cleaned_customers": pa.Table.from_pandas(customers, preserve_index=False),
               "quarantined_customers": quarantined,
               "ingestion_report": _ingestion_report(raw, report, context.run_id)}  # fmt: skip

    records = [
        LineageRecord(run_id=context.run_id, asset_key=asset, upstream_assets=upstream, input_file_sha256=raw.sha256,
                      code_version=__version__, started_at=started, row_count=None)  # rows: as written
        for asset, upstream in (("raw_workbook", []), ("cleaned_customers", ["raw_workbook"]))
    ]  # fmt: skip
    try:
        store.write_parts(parts(), lineage=records, append=("ingestion_report",))
    except IngestionError as error:
        error.sheet = error.sheet or (raw.sheet if len(raw.sheets) <= 1 else None)  # several sheets: not a guess
        raise _reject(error) from None
    except (WarehouseUnavailable, WarehouseBusy) as error:
        raise _failure(str(error)) from None
    result, customers = cleaned["result"], cleaned["customers"]
    report = result.report
    quarantined = int(result.quarantined["customer_id"].nunique()) if len(result.quarantined) else 0
    if quarantined:
        context.log.warning(f"{quarantined} customers quarantined for impossible values (table quarantined_customers)")
    yield dg.MaterializeResult(asset_key="raw_workbook", metadata=raw_metadata)
    yield dg.MaterializeResult(
        asset_key="cleaned_customers",
        metadata=table_metadata(
            customers, table="cleaned_customers", rows_read=report.rows_read, rows_kept=report.rows_kept,
            quarantined_customers=quarantined,
            dropped_rows=dg.MetadataValue.json(report.dropped_rows),
            dropped_columns=dg.MetadataValue.json(report.dropped_columns),
            aliases_applied=dg.MetadataValue.json(report.aliases_applied),
            unparseable_values=dg.MetadataValue.json(report.unparseable_values),
            formats=dg.MetadataValue.json(report.formats),
            warnings=dg.MetadataValue.json(list(raw.warnings)),
        ),
    )  # fmt: skip


# --- the model: fit once -------------------------------------------------------------------------------------------


@dg.asset(
    group_name=GROUP, code_version=__version__, deps=["cleaned_customers"], kinds={"duckdb", "scikitlearn"},
    pool=WAREHOUSE_POOL, partitions_def=EXPORTS,
    **_documented("kmeans_model", pii=True),  # the stored model keeps a verification sample of 256 customers
)  # fmt: skip
def kmeans_model(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.MaterializeResult:
    """The fitted segmentation model (``fit_model``): features (log, scale, K-nearest-neighbour imputation,
    one-hot, channels), PCA, K-means with every k's silhouette, Davies-Bouldin and Calinski-Harabasz, and the
    clusters scored into High/Medium/Low tiers. Cluster ids continue the last published assignments. The model
    is stored as plain arrays with a version id, its feature contract and a verification sample; it becomes the
    active (served) version only if it passes the quality gate."""
    started = datetime.now().astimezone()
    settings = segmentation.settings()
    _, store = run_snapshot(context, warehouse)
    version = f"{started.strftime('%Y%m%dT%H%M%S')}-{context.run_id[:8]}"
    try:
        policy = load_policy(settings.rules_file)
    except PolicyError as error:
        raise _failure(str(error)) from None
    try:
        # Everyone is read only for the gate and the sample (a few columns); the fit reads whole rows of the sample.
        plan, cleaned = plan_and_training_customers(store, settings)
        input_sha = str(cleaned["_file_sha256"][0]) if cleaned.num_rows else None
        reference = pd.Timestamp(cleaned["_reference_date"][0].as_py()).date() if cleaned.num_rows else (
            _reference_date(segmentation))  # fmt: skip
        fitted = fit_model(CustomerBatch.from_arrow(cleaned), settings, _previous_assignments(warehouse),
                           reference_date=reference, version=version, input_sha256=input_sha, run_id=context.run_id,
                           policy=policy, plan=plan)  # fmt: skip
    except ValueError as error:  # too few customers to cluster, and the like: one line
        raise _failure(f"kmeans_model: {error}") from None
    model, labels = fitted.model, fitted.labels
    # ``cleaned`` holds the customers fitted on (the sample, if any): profiles and drift are measured on them, on
    # the columns drift tracks
    tracked = cleaned.select(drift_columns(cleaned.column_names)).to_pandas()
    new_tiers = np.asarray(model.tiers.cluster_tiers, dtype=object)[labels]
    active_before = registry.active_entry(warehouse.store())
    quality = registry.quality_check(model.metrics, labels, model.k, settings.silhouette_floor)
    entry = registry.ModelVersion.of(
        model, quality, population_profile(tracked, new_tiers),
        previous_version=str(active_before["model_version"]) if active_before else None,
    )  # fmt: skip
    stability = stability_report(
        previous_model_version=fitted.previous_model_version or entry.previous_version,
        previous_labels=fitted.previous_labels, new_labels=fitted.new_labels,
        previous_profile=active_before["population_profile"] if active_before else None,
        customers=tracked, new_tiers=new_tiers,
    )  # fmt: skip
    k_search = model.k_search.assign(model_version=version, chosen=lambda f: f["k"] == model.k)
    # The registry entry is staged: it enters model_versions (active if it passed) when the snapshot is published.
    candidate = pd.DataFrame([{"model_version": version, "entry": entry.to_json(), "activate": quality.passed}])
    tables = {"kmeans_model": model_table_row(model), "kmeans_k_search": k_search, snapshots.CANDIDATE_TABLE: candidate,
              "policy_rules": policy_rules_rows(model)}  # fmt: skip
    drift = stability.to_frame(run_id=context.run_id, model_version=version, created_at=pd.Timestamp(model.trained_at))
    # The first model has nothing to compare with: no rows, but the table exists from the first run on.
    tables["model_stability"] = drift if stability.previous_model_version is not None else drift.iloc[0:0]
    write_assets(
        context, store, tables, lineage={"kmeans_model": (["cleaned_customers"], 1)}, started_at=started,
        input_sha256=input_sha, append=("kmeans_model", "kmeans_k_search", "model_stability", "policy_rules"),
    )  # fmt: skip
    status = registry.ACTIVE if quality.passed else registry.REJECTED
    if not quality.passed:
        context.log.warning(f"model {version} will not be activated ({quality.notes}); the active model stays in use")
    if stability.flags:
        context.log.warning(f"population drift since {stability.previous_model_version}: {stability.flags}")
    summary = stability.summary()
    tiers = model.tiers
    return dg.MaterializeResult(
        metadata={
            "model_version": version, "status": f"{status} once published", "quality": quality.notes,
            "k": model.k, "silhouette": model.metrics["silhouette"], "davies_bouldin": model.metrics["davies_bouldin"],
            "calinski_harabasz": model.metrics["calinski_harabasz"],
            "n_features": len(model.features.feature_names_), "n_components": int(model.pca_components.shape[0]),
            "explained_variance_total": float(model.explained_variance_ratio.sum()),
            "cluster_tiers": dg.MetadataValue.json(dict(enumerate(tiers.cluster_tiers))),
            "cluster_scores": dg.MetadataValue.json({str(c): round(float(s), 4)
                                                     for c, s in enumerate(tiers.cluster_scores)}),
            "cluster_order": dg.MetadataValue.json(fitted.order),
            "score_boundaries": dg.MetadataValue.json({t: round(tiers.boundary_of(t), 4) for t in ("High", "Medium")}),
            "policy_version": policy.version, "policy_source": policy.source,
            "policy_rules": dg.MetadataValue.md(_markdown_preview(policy_rules_rows(model)[
                ["rule_id", "condition", "min_tier", "rationale"]], rows=50, max_columns=4)),
            "previous_model_version": stability.previous_model_version or "",
            "ari_vs_previous": summary["ari"], "tier_mix_psi": summary["tier_mix_psi"],
            "feature_psi": dg.MetadataValue.json(summary["feature_psi"]),
            "drift_flags": dg.MetadataValue.json(summary["flags"]),
            "k_search": dg.MetadataValue.md(k_search_markdown(model.k_search, model.k)),
            "dagster/column_schema": materialised_schema("kmeans_model", tables["kmeans_model"]),
        }
    )  # fmt: skip


# --- scoring: one pass of the compiled scorer ----------------------------------------------------------------------


SCORED_ASSETS = ("customer_features", "pca_embedding", "cluster_assignments", "rating_reasons", "segment_profiles")


def _own_candidate(store: Warehouse) -> pd.DataFrame:
    """The model this run fitted (its own snapshot's ``model_candidate``; a base snapshot's does not count)."""
    try:
        return store.query(f"SELECT model_version, entry, activate FROM {store.qualified(snapshots.CANDIDATE_TABLE)}")
    except duckdb.CatalogException:
        return pd.DataFrame(columns=["model_version", "entry", "activate"])


def _scoring_version(store: Warehouse) -> str | None:
    """The model this run scores with: its own candidate when it passed the quality gate, else the active one."""
    row = _own_candidate(store)
    if len(row) and bool(row["activate"].iloc[0]):
        return str(row["model_version"].iloc[0])
    return None  # load_model: the registry's active version


def _candidate_note(store: Warehouse) -> str:
    """Why this run's own model is not used, for a failure message."""
    row = _own_candidate(store)
    if row.empty:
        return ""
    entry = registry.ModelVersion.from_json(str(row["entry"].iloc[0]))
    return (f" (the model this run fitted, {row['model_version'].iloc[0]}, did not pass the quality gate: "
            f"{entry.quality.notes})")  # fmt: skip


@dg.multi_asset(
    name="cluster_assignments",
    partitions_def=EXPORTS,
    specs=[
        _spec("customer_features", "The feature matrix of every cleaned customer, as the served model computes it "
              "(log, standardise, K-nearest-neighbour imputation, flags, one-hot, channels).",
              ["kmeans_model", "cleaned_customers"], {"duckdb", "scikitlearn"}, pii=True),
        _spec("pca_embedding", "Every customer's PCA coordinates under the served model (pc1 and pc2 are the plot "
              "coordinates).", ["kmeans_model", "cleaned_customers"], {"duckdb", "scikitlearn"}, pii=True),
        _spec("cluster_assignments", "One row per customer: cluster (behaviour segment) and its tier, the customer's "
              "rating (risk_tier: the segment's tier raised by the customer's own risk score and by policy rules), "
              "the rating before rules, what decided it (rating_basis), the policy rules that apply to the customer "
              "(rule_ids; they raised it when rating_basis is 'rule'), risk score, distance to its "
              "centroid, pc1/pc2, model and policy version and run id, computed with the ACTIVE model of the "
              "registry by the same compiled scorer the API uses. Customers whose rating changed are appended to "
              "tier_migrations; the run's governance figures go to rating_governance.",
              ["kmeans_model", "cleaned_customers"], {"duckdb", "numpy"}, pii=True),
        _spec("rating_reasons", "Every customer's top reasons (indicator, the customer's value, the segment's and "
              "the population's typical value, contribution to the score), rank 1 the most telling for its tier.",
              ["kmeans_model", "cleaned_customers"], {"duckdb", "numpy"}, pii=True),
        _spec("segment_profiles", "Per cluster of the model that made the assignments: tier, risk score, the score "
              "boundary of its tier (any customer scoring at or above it is rated at least that tier), every term of "
              "the score and the typical (median) value of every indicator.", ["kmeans_model"], {"duckdb"}, pii=False),
    ],  # fmt: skip
    pool=WAREHOUSE_POOL,
)
def score_customers(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> Iterator[dg.MaterializeResult]:
    """Score every cleaned customer with the active model's compiled scorer, a chunk at a time (read, scored and
    written: ``score_chunk_size`` customers in memory), every table and lineage in ONE transaction."""
    started = datetime.now().astimezone()
    _, store = run_snapshot(context, warehouse)
    version = _scoring_version(store)  # None: the active model
    try:
        model = load_model(store, version)
    except (LookupError, ModelContractError) as error:
        raise _failure(f"{error}{_candidate_note(store)}") from None
    previous = "cluster_assignments" in warehouse.store().table_names()
    scoring = ScoringPass()
    parts = scored_parts(store, model, context.run_id, chunk_size=segmentation.settings().score_chunk_size,
                          previous=previous, scoring=scoring)  # fmt: skip
    upstream = ["kmeans_model", "cleaned_customers"]
    rows = write_assets(context, store, parts, lineage={name: (upstream, None) for name in SCORED_ASSETS},
                        started_at=started, input_sha256=model.input_sha256, append=("tier_migrations",))  # fmt: skip
    note = _candidate_note(store) if version is None else ""
    if note:
        context.log.warning(f"assignments use the active model {model.version}{note}")
    first, figures = scoring.first, scoring.figures
    yield dg.MaterializeResult(asset_key="customer_features", metadata=table_metadata(
        first["customer_features"], table="customer_features", rows=rows["customer_features"],
        model_version=model.version,
        n_features=len(model.features.feature_names_),
        numeric_features=dg.MetadataValue.json(model.features.numeric_columns_),
        categorical_features=dg.MetadataValue.json(model.features.categorical_columns_)))  # fmt: skip
    ratios = [round(float(r), 5) for r in model.explained_variance_ratio]
    yield dg.MaterializeResult(asset_key="pca_embedding", metadata=table_metadata(
        first["pca_embedding"], table="pca_embedding", rows=rows["pca_embedding"], model_version=model.version,
        n_components=len(ratios),
        explained_variance_total=sum(ratios), explained_variance_ratio=dg.MetadataValue.json(ratios)))  # fmt: skip
    measures = {m: dict(zip(g["item"], g["customers"].astype(int), strict=True)) for m, g in figures.groupby("measure")}
    yield dg.MaterializeResult(asset_key="cluster_assignments", metadata=table_metadata(
        first["cluster_assignments"], table="cluster_assignments", rows=rows["cluster_assignments"],
        model_version=model.version,
        policy_version=model.policy.version, tier_counts=dg.MetadataValue.json(scoring.tier_counts()),
        tier_mix_segment=dg.MetadataValue.json(measures["tier_mix_segment"]),
        tier_mix_before_rules=dg.MetadataValue.json(measures["tier_mix_before_rules"]),
        tier_mix_after_rules=dg.MetadataValue.json(measures["tier_mix_after_rules"]),
        raised_by_rule=dg.MetadataValue.json(measures.get("rule_raised", {})),
        rank_inversions=int(measures["rank_inversions"][""]), tier_migrations=scoring.migrations,
        tier_moves=dg.MetadataValue.json(dict(scoring.moves.most_common()))))  # fmt: skip
    yield dg.MaterializeResult(asset_key="rating_reasons", metadata=table_metadata(
        first["rating_reasons"], table="rating_reasons", rows=rows["rating_reasons"],
        model_version=model.version))  # fmt: skip
    yield dg.MaterializeResult(asset_key="segment_profiles", metadata=table_metadata(
        model.profiles(), table="segment_profiles", model_version=model.version))  # fmt: skip


@dg.asset(
    group_name=GROUP, code_version=__version__, deps=["cluster_assignments"], kinds={"plotly", "html", "duckdb"},
    pool=WAREHOUSE_POOL, partitions_def=EXPORTS,
    **_documented("segment_report", pii=True),  # the report lists outlying customers by id
)  # fmt: skip
def segment_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The interactive HTML report analysts read (one self-contained file, plotly.js embedded, opens offline):
    overview, choice of k, PCA map, features / flags / categories by tier, cluster profiles, outliers, a
    generated narrative, and migration / drift when a previous model exists. Written to reports/ beside the
    warehouse as segment_report_<run_id>.html; it becomes reports/latest.html when the snapshot is published."""
    started = datetime.now().astimezone()
    _, store = run_snapshot(context, warehouse)
    try:
        report = build_segment_report(store, context.run_id)
    except (LookupError, ModelContractError) as error:
        raise _failure(str(error)) from None
    run_file = write_report_files(report, store.path.parent / "reports", context.run_id)
    latest = latest_report_path(store.path)  # becomes this report when the snapshot is published
    row = pd.DataFrame([{
        "run_id": context.run_id, "model_version": report.model_version, "path": str(run_file.resolve()),
        "latest_path": str(latest.resolve()), "size_bytes": run_file.stat().st_size,
        "created_at": pd.Timestamp.now(tz="UTC"),
    }])  # fmt: skip
    write_assets(context, store, {"segment_report": row}, lineage={"segment_report": (["cluster_assignments"], 1)},
                 started_at=started, input_sha256=_input_sha(store), append=("segment_report",))  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(report.markdown_summary(run_file.resolve())),
            "path": dg.MetadataValue.path(str(run_file.resolve())),
            "latest": dg.MetadataValue.path(str(latest.resolve())),  # once published
            "size_bytes": run_file.stat().st_size,
            "model_version": report.model_version,
            "customers": report.customers,
            "tier_counts": dg.MetadataValue.json(report.tier_counts),
            "outliers_flagged": len(report.outliers),
            "sections": dg.MetadataValue.json(report.sections),
            "dagster/column_schema": materialised_schema("segment_report", row),
        }
    )


@dg.asset(
    group_name=GROUP, code_version=__version__, deps=["segment_report"], kinds={"duckdb"}, pool=WAREHOUSE_POOL,
    partitions_def=EXPORTS, **_documented(None, pii=False),  # no table of its own: a row of `snapshots`
)  # fmt: skip
def published_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Publishes the run's snapshot in ONE DuckDB transaction, once every asset before it and every blocking check
    succeeded: the public names (raw_workbook ... segment_profiles) switch to it, its logs are appended, its model
    enters the registry (active if it passed the quality gate), its ratings and reasons join the history. Then
    reports/latest.html becomes its report, and snapshots beyond retention are dropped."""
    snapshot, _ = run_snapshot(context, warehouse)
    try:
        keep, days = snapshots.retention_from_environment()
        row = snapshots.publish(warehouse.store(), snapshot, keep_snapshots=keep, history_days=days)
    except (snapshots.PublicationError, WarehouseUnavailable, WarehouseBusy, ValueError) as error:
        raise _failure(str(error)) from None
    snapshots.sync_latest_report(warehouse.store(), latest_report_path(Path(warehouse.database)))
    return dg.MaterializeResult(metadata={
        "snapshot": snapshot.snapshot_id, "schema": snapshot.schema, "model_version": str(row.get("model_version")),
        "customers": int(row.get("customers") or 0), "published_at": str(row.get("published_at")),
        "base_snapshot": str(row.get("base_snapshot") or ""),
    })  # fmt: skip


SEGMENTATION_ASSETS = [ingest_export, kmeans_model, score_customers, segment_report, published_snapshot]
