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
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from segmentation_pipeline import __version__, schema
from segmentation_pipeline.config import default_input_path
from segmentation_pipeline.orchestration.partitions import EXPORTS, export_key
from segmentation_pipeline.orchestration.resources import SegmentationSettings, WarehouseResource
from segmentation_pipeline.reporting import build_segment_report, latest_report_path, write_report_files
from segmentation_pipeline.stages.arrow_text import TEXT, repeated, text_series
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.compiled import ScoredBatch
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.ingestion import IngestionError, RawTable, read_customer_file
from segmentation_pipeline.stages.model import ModelContractError, SegmentationModel, fit_model
from segmentation_pipeline.stages.policy import PolicyError, governance, load_policy, rule_id_lists
from segmentation_pipeline.stages.stability import population_profile, stability_report, tier_migrations
from segmentation_pipeline.warehouse import LineageRecord, Warehouse, registry, snapshots
from segmentation_pipeline.warehouse.models import load_model, model_table_row, policy_rules_rows
from segmentation_pipeline.warehouse.store import WarehouseBusy, WarehouseUnavailable

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
    tables: dict[str, pd.DataFrame],
    *,
    lineage: dict[str, tuple[list[str], int]],
    started_at: datetime,
    input_sha256: str | None,
    append: tuple[str, ...] = (),
    also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> None:
    """Write a step's tables into the run's snapshot (``store``) with one lineage row per asset it materialises
    (``lineage``: asset -> (upstream assets, row count)), in ONE transaction."""
    records = [
        LineageRecord(run_id=context.run_id, asset_key=asset, upstream_assets=upstream, input_file_sha256=input_sha256,
                      code_version=__version__, started_at=started_at, row_count=rows)  # fmt: skip
        for asset, (upstream, rows) in lineage.items()
    ]
    try:
        store.write_tables(tables, lineage=records, append=append, also=also)
    except (WarehouseUnavailable, WarehouseBusy) as error:
        raise _failure(str(error)) from None


# --- shared helpers ---------------------------------------------------------------------------------------------


def _markdown_preview(frame: pd.DataFrame, rows: int = 5, max_columns: int = 12) -> str:
    shown = frame.head(rows).iloc[:, :max_columns]
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def table_metadata(frame: pd.DataFrame, **extra: object) -> dict[str, object]:
    """Row count, column schema and a markdown preview: what every asset shows in the UI."""
    schema_columns = [dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": dg.TableSchema(columns=schema_columns),
        "preview": dg.MetadataValue.md(_markdown_preview(frame)),
        **extra,
    }


def _without_lineage(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if not str(c).startswith(LINEAGE_PREFIX)]]


def _cleaned(store: Warehouse) -> pd.DataFrame:
    return store.query("SELECT * FROM cleaned_customers ORDER BY customer_id")


def _input_sha(store: Warehouse) -> str | None:
    rows = store.query("SELECT any_value(_file_sha256) AS sha FROM cleaned_customers")
    return None if rows.empty else rows["sha"].iloc[0]


def _failure(message: str, **metadata: object) -> dg.Failure:
    # The one-line message is the run's failure reason, in the UI, the CLI and the sensor's .reason.txt.
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


def _reject(error: IngestionError) -> dg.Failure:
    return _failure(str(error), file=error.file, sheet=error.sheet or "", column=error.column or "",
                    row=error.row or 0)  # fmt: skip


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


def _spec(name: str, description: str, deps: list[str], kinds: set[str]) -> dg.AssetSpec:
    return dg.AssetSpec(name, description=description, deps=deps, kinds=kinds, group_name=GROUP,
                        code_version=__version__)  # fmt: skip


# --- ingestion: the file read and cleaned once ---------------------------------------------------------------------


@dg.multi_asset(
    name="raw_workbook",
    partitions_def=EXPORTS,  # the op keeps the asset's name: run config stays ops.raw_workbook.config.path
    specs=[
        _spec("raw_workbook", "The bank's export read losslessly: every column with its original header, every cell "
              "as exported (as text), plus lineage columns: source file, sheet, source row, file SHA-256, ingestion "
              "time, run id.", [], {"duckdb", "python"}),
        _spec("cleaned_customers", "One row per customer with canonical column names and types: duplicates removed, "
              "per-channel rows merged into one row with the set of channels, impossible values quarantined, age "
              "and tenure derived, empty and constant columns dropped. Every dropped row and column is counted "
              "with its reason.", ["raw_workbook"], {"duckdb", "pandas"}),
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
    try:
        result = clean_customers(raw.frame, reference_date=reference, source_rows=raw.source_rows,
                                 source_sheets=raw.source_sheets, source_file=raw.source_file,
                                 date_order=date_order)  # fmt: skip
    except IngestionError as error:
        error.sheet = error.sheet or (raw.sheet if len(raw.sheets) <= 1 else None)  # several sheets: not a guess
        raise _reject(error) from None
    if key is not None and export_key(raw.sha256) != key:
        raise _failure(f"{raw.source_file}: its content is not export {key} (its SHA-256 starts {raw.sha256[:16]}); "
                       "stage it with `segmentation run` or the drop folder")  # fmt: skip
    _, store = run_snapshot(context, warehouse, rebuild=True, source_path=path)
    n = len(raw.frame)
    if raw.source_sheets is not None:  # each row's own sheet
        sheets = text_series(pa.array(raw.source_sheets, type=TEXT))
    else:
        sheets = repeated(raw.sheet, n) if raw.sheet is not None else text_series(pa.nulls(n, TEXT))
    table = raw.frame.assign(  # lineage: each row's file, sheet, row, hash, time and run (one text stored once)
        _source_file=repeated(raw.source_file, n), _sheet=sheets, _source_row=np.asarray(raw.source_rows, "int64"),
        _file_sha256=repeated(raw.sha256, n), _ingested_at=pd.Timestamp.now(tz="UTC"),
        _run_id=repeated(context.run_id, n),
    )  # fmt: skip
    report = result.report
    kept = len(result.customers)
    customers = result.customers.assign(
        _reference_date=pd.Timestamp(reference), _file_sha256=repeated(raw.sha256, kept),
        _run_id=repeated(context.run_id, kept),
    )  # fmt: skip
    ingestion_report = pd.DataFrame([{
        "run_id": context.run_id, "source_file": raw.source_file, "sheet": raw.sheet, "file_sha256": raw.sha256,
        "rows_read": report.rows_read, "rows_kept": report.rows_kept, "rows_dropped": json.dumps(report.dropped_rows),
        "columns_dropped": json.dumps(report.dropped_columns), "aliases_applied": json.dumps(report.aliases_applied),
        "unparseable_values": json.dumps(report.unparseable_values), "formats": json.dumps(report.formats),
        "created_at": pd.Timestamp.now(tz="UTC"),
    }])  # fmt: skip
    write_assets(
        context, store,
        {"raw_workbook": table, "cleaned_customers": customers,
         "quarantined_customers": result.quarantined.assign(run_id=context.run_id),
         "ingestion_report": ingestion_report},
        lineage={"raw_workbook": ([], len(table)), "cleaned_customers": (["raw_workbook"], len(customers))},
        started_at=started, input_sha256=raw.sha256, append=("ingestion_report",),
    )  # fmt: skip
    quarantined = int(result.quarantined["customer_id"].nunique()) if len(result.quarantined) else 0
    if quarantined:
        context.log.warning(f"{quarantined} customers quarantined for impossible values (table quarantined_customers)")
    yield dg.MaterializeResult(
        asset_key="raw_workbook",
        metadata=table_metadata(table, source_file=raw.source_file, sheet=", ".join(raw.sheets),
                                header_row=raw.header_row, file_sha256=raw.sha256,
                                original_headers=dg.MetadataValue.json(list(raw.headers))),
    )  # fmt: skip
    yield dg.MaterializeResult(
        asset_key="cleaned_customers",
        metadata=table_metadata(
            customers, rows_read=report.rows_read, rows_kept=report.rows_kept, quarantined_customers=quarantined,
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
    cleaned = _cleaned(store)
    customers = CustomerBatch.from_frame(cleaned)
    version = f"{started.strftime('%Y%m%dT%H%M%S')}-{context.run_id[:8]}"
    input_sha = str(cleaned["_file_sha256"].iloc[0]) if len(cleaned) else None
    reference = pd.Timestamp(cleaned["_reference_date"].iloc[0]).date() if len(cleaned) else _reference_date(
        segmentation)  # fmt: skip
    try:
        policy = load_policy(settings.rules_file)
    except PolicyError as error:
        raise _failure(str(error)) from None
    try:
        fitted = fit_model(customers, settings, _previous_assignments(warehouse), reference_date=reference,
                           version=version, input_sha256=input_sha, run_id=context.run_id, policy=policy)  # fmt: skip
    except ValueError as error:  # too few customers to cluster, and the like: one line
        raise _failure(f"kmeans_model: {error}") from None
    model, labels = fitted.model, fitted.labels
    if fitted.rows is not None:  # fitted on a sample: profiles and drift are measured on it
        cleaned = cleaned.iloc[fitted.rows].reset_index(drop=True)
    new_tiers = np.asarray(model.tiers.cluster_tiers, dtype=object)[labels]
    active_before = registry.active_entry(warehouse.store())
    quality = registry.quality_check(model.metrics, labels, model.k, settings.silhouette_floor)
    entry = registry.ModelVersion.of(
        model, quality, population_profile(_without_lineage(cleaned), new_tiers),
        previous_version=str(active_before["model_version"]) if active_before else None,
    )  # fmt: skip
    stability = stability_report(
        previous_model_version=fitted.previous_model_version or entry.previous_version,
        previous_labels=fitted.previous_labels, new_labels=fitted.new_labels,
        previous_profile=active_before["population_profile"] if active_before else None,
        customers=_without_lineage(cleaned), new_tiers=new_tiers,
    )  # fmt: skip
    k_search = model.k_search.assign(model_version=version, chosen=lambda f: f["k"] == model.k)
    # The registry entry is staged: it enters model_versions (active if it passed) when the snapshot is published.
    candidate = pd.DataFrame([{"model_version": version, "entry": entry.to_json(), "activate": quality.passed}])
    tables = {"kmeans_model": model_table_row(model), "kmeans_k_search": k_search, snapshots.CANDIDATE_TABLE: candidate,
              "policy_rules": policy_rules_rows(model)}  # fmt: skip
    if stability.previous_model_version is not None:
        tables["model_stability"] = stability.to_frame(run_id=context.run_id, model_version=version,
                                                       created_at=pd.Timestamp(model.trained_at))  # fmt: skip
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
            "k_search": dg.MetadataValue.md(_markdown_preview(model.k_search.round(4), rows=50)),
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


def _rule_id_column(model: SegmentationModel, scored: ScoredBatch) -> pd.api.extensions.ExtensionArray:
    """The policy rules that apply to each customer, as a list column (DuckDB ``VARCHAR[]``), built without a loop."""
    offsets, ids = rule_id_lists(scored.rules_matched, model.policy)
    values = pa.array(ids.tolist(), type=pa.string())
    return pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values))


def _governance_rows(model: SegmentationModel, scored: ScoredBatch, run_id: str) -> pd.DataFrame:
    rows = pd.DataFrame(governance(scored.rating, scored.risk_score, model.policy))
    return rows.assign(run_id=run_id, model_version=model.version, policy_version=model.policy.version)


def _reason_rows(model: object, scored: object) -> pd.DataFrame:
    """Every customer's reasons, long format (customer_id, rank, indicator, value, typical values, contribution)."""
    table = model.scorer.reason_table(scored)  # type: ignore[attr-defined]
    ids = np.repeat(scored.customer_id, table.per_customer)  # type: ignore[attr-defined]
    return pd.DataFrame({
        "customer_id": ids, "rank": np.tile(np.arange(1, table.per_customer + 1), table.n).astype("int32"),
        "indicator": table.indicator, "value": pd.array(table.value, dtype="Float64"),
        "segment_typical": pd.array(table.segment_typical, dtype="Float64"),
        "population_typical": pd.array(table.population_typical, dtype="Float64"),
        "contribution": table.contribution,
    })  # fmt: skip


@dg.multi_asset(
    name="cluster_assignments",
    partitions_def=EXPORTS,
    specs=[
        _spec("customer_features", "The feature matrix of every cleaned customer, as the served model computes it "
              "(log, standardise, K-nearest-neighbour imputation, flags, one-hot, channels).",
              ["kmeans_model", "cleaned_customers"], {"duckdb", "scikitlearn"}),
        _spec("pca_embedding", "Every customer's PCA coordinates under the served model (pc1 and pc2 are the plot "
              "coordinates).", ["kmeans_model", "cleaned_customers"], {"duckdb", "scikitlearn"}),
        _spec("cluster_assignments", "One row per customer: cluster (behaviour segment) and its tier, the customer's "
              "rating (risk_tier: the segment's tier raised by the customer's own risk score and by policy rules), "
              "the rating before rules, what decided it (rating_basis), the policy rules that apply to the customer "
              "(rule_ids; they raised it when rating_basis is 'rule'), risk score, distance to its "
              "centroid, pc1/pc2, model and policy version and run id, computed with the ACTIVE model of the "
              "registry by the same compiled scorer the API uses. Customers whose rating changed are appended to "
              "tier_migrations; the run's governance figures go to rating_governance.",
              ["kmeans_model", "cleaned_customers"], {"duckdb"}),
        _spec("rating_reasons", "Every customer's top reasons (indicator, the customer's value, the segment's and "
              "the population's typical value, contribution to the score), rank 1 the most telling for its tier.",
              ["kmeans_model", "cleaned_customers"], {"duckdb"}),
        _spec("segment_profiles", "Per cluster of the model that made the assignments: tier, risk score, the score "
              "boundary of its tier (any customer scoring at or above it is rated at least that tier), every term of "
              "the score and the typical (median) value of every indicator.", ["kmeans_model"], {"duckdb"}),
    ],  # fmt: skip
    pool=WAREHOUSE_POOL,
)
def score_customers(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult]:
    """Score every cleaned customer with the active model's compiled scorer, in chunks."""
    started = datetime.now().astimezone()
    _, store = run_snapshot(context, warehouse)
    version = _scoring_version(store)  # None: the active model
    try:
        model = load_model(store, version)
    except (LookupError, ModelContractError) as error:
        raise _failure(f"{error}{_candidate_note(store)}") from None
    cleaned = _cleaned(store)
    scored = model.scorer.score(CustomerBatch.from_frame(cleaned), keep_features=True)
    ids = cleaned[schema.ID_COLUMN].to_numpy()
    features = pd.DataFrame(scored.features, columns=model.features.feature_names_)
    features.insert(0, "customer_id", ids)
    embedding = pd.DataFrame(scored.embedding, columns=[f"pc{i + 1}" for i in range(scored.embedding.shape[1])])
    embedding.insert(0, "customer_id", ids)
    assignments = pd.DataFrame({
        "customer_id": ids, "cluster": scored.cluster, "risk_tier": scored.risk_tier.astype(str),
        "segment_tier": scored.segment_tier.astype(str), "tier_before_rules": scored.tier_before_rules.astype(str),
        "rating_basis": scored.rating.basis.astype(str),
        "rule_ids": _rule_id_column(model, scored), "risk_score": scored.risk_score,
        "distance_to_centroid": scored.distance_to_centroid, "pc1": scored.embedding[:, 0],
        "pc2": scored.embedding[:, 1], "model_version": model.version, "policy_version": model.policy.version,
        "run_id": context.run_id,
    })  # fmt: skip
    reasons = _reason_rows(model, scored)
    figures = _governance_rows(model, scored, context.run_id)
    previous = _previous_assignments(warehouse)
    tables = {"customer_features": features, "pca_embedding": embedding, "cluster_assignments": assignments,
              "rating_reasons": reasons, "segment_profiles": model.profiles(),
              "rating_governance": figures}  # fmt: skip
    if previous is not None:
        tables["tier_migrations"] = tier_migrations(previous, assignments, run_id=context.run_id)
    upstream = ["kmeans_model", "cleaned_customers"]
    lineage = {name: (upstream, len(tables[name])) for name in SCORED_ASSETS}
    write_assets(context, store, tables, lineage=lineage, started_at=started, input_sha256=model.input_sha256,
                 append=("tier_migrations",))  # fmt: skip
    note = _candidate_note(store) if version is None else ""
    if note:
        context.log.warning(f"assignments use the active model {model.version}{note}")
    migrations = tables.get("tier_migrations")
    moves = {} if migrations is None else (migrations["old_tier"] + " -> " + migrations["new_tier"]).value_counts()
    yield dg.MaterializeResult(asset_key="customer_features", metadata=table_metadata(
        features, model_version=model.version, n_features=len(model.features.feature_names_),
        numeric_features=dg.MetadataValue.json(model.features.numeric_columns_),
        categorical_features=dg.MetadataValue.json(model.features.categorical_columns_)))  # fmt: skip
    ratios = [round(float(r), 5) for r in model.explained_variance_ratio]
    yield dg.MaterializeResult(asset_key="pca_embedding", metadata=table_metadata(
        embedding, model_version=model.version, n_components=len(ratios), explained_variance_total=sum(ratios),
        explained_variance_ratio=dg.MetadataValue.json(ratios)))  # fmt: skip
    tier_counts = assignments["risk_tier"].value_counts().to_dict()
    measures = {m: dict(zip(g["item"], g["customers"].astype(int), strict=True)) for m, g in figures.groupby("measure")}
    yield dg.MaterializeResult(asset_key="cluster_assignments", metadata=table_metadata(
        assignments, model_version=model.version, policy_version=model.policy.version,
        tier_counts=dg.MetadataValue.json({k: int(v) for k, v in tier_counts.items()}),
        tier_mix_segment=dg.MetadataValue.json(measures["tier_mix_segment"]),
        tier_mix_before_rules=dg.MetadataValue.json(measures["tier_mix_before_rules"]),
        tier_mix_after_rules=dg.MetadataValue.json(measures["tier_mix_after_rules"]),
        raised_by_rule=dg.MetadataValue.json(measures.get("rule_raised", {})),
        rank_inversions=int(measures["rank_inversions"][""]),
        tier_migrations=0 if migrations is None else len(migrations),
        tier_moves=dg.MetadataValue.json({str(k): int(v) for k, v in dict(moves).items()})))  # fmt: skip
    yield dg.MaterializeResult(asset_key="rating_reasons",
                               metadata=table_metadata(reasons, model_version=model.version))  # fmt: skip
    yield dg.MaterializeResult(asset_key="segment_profiles", metadata=table_metadata(
        tables["segment_profiles"], model_version=model.version))  # fmt: skip


@dg.asset(
    group_name=GROUP, code_version=__version__, deps=["cluster_assignments"], kinds={"plotly", "html"},
    pool=WAREHOUSE_POOL, partitions_def=EXPORTS,
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
        }
    )


@dg.asset(
    group_name=GROUP, code_version=__version__, deps=["segment_report"], kinds={"duckdb"}, pool=WAREHOUSE_POOL,
    partitions_def=EXPORTS,
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
