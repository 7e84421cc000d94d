"""The pipeline as Dagster software-defined assets: a thin layer over the core stages.

raw_workbook -> cleaned_customers -> customer_features -> pca_embedding -> kmeans_model -> cluster_assignments
-> segment_report. Each asset reads its inputs from the warehouse and writes its table (and lineage row) in one
transaction, so any asset can be re-materialised on its own from the Dagster UI.
"""


import json
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from segmentation_pipeline import __version__, schema
from segmentation_pipeline.config import default_input_path
from segmentation_pipeline.orchestration.resources import SegmentationSettings, WarehouseResource
from segmentation_pipeline.reporting import build_segment_report, write_report_files
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.embedding import fit_pca
from segmentation_pipeline.stages.ingestion import IngestionError, RawTable, read_customer_file
from segmentation_pipeline.stages.scoring import SegmentationModel, cluster_and_tier, feature_transformer
from segmentation_pipeline.stages.stability import (
    keep_cluster_ids,
    population_profile,
    stability_report,
    tier_migrations,
)
from segmentation_pipeline.warehouse import LineageRecord, Warehouse, registry
from segmentation_pipeline.warehouse.models import load_model, model_table_row

GROUP = "segmentation"
LINEAGE_PREFIX = "_"  # columns added by the pipeline (lineage), never part of the bank's export
FEATURES_OBJECT = "customer_features.transformer"
EMBEDDING_OBJECT = "pca_embedding.fitted"  # (transformer, pca) stored together so they always match
# Every asset writes the one DuckDB file: they share a pool that dagster.yaml limits to one run at a time.
WAREHOUSE_POOL = "segmentation_warehouse"


class RawWorkbookConfig(dg.Config):
    """Which file a run ingests."""

    path: str | None = None  # None: $SEGMENTATION_INPUT or the bundled sample
    sheet: str | None = None  # None: the sheet that holds the customer table


# --- shared helpers ---------------------------------------------------------------------------------------------


def _step_started_at(context: dg.AssetExecutionContext) -> datetime:
    """When Dagster started this asset's step (from the run's event log), so lineage times the whole asset."""
    step_key = context.get_step_execution_context().step.key
    records = context.instance.get_records_for_run(context.run_id, of_type=dg.DagsterEventType.STEP_START).records
    for record in reversed(records):
        if record.event_log_entry.step_key == step_key:
            return datetime.fromtimestamp(record.event_log_entry.timestamp).astimezone()
    return datetime.now().astimezone()


def _lineage(context: dg.AssetExecutionContext, upstream: list[str], file_sha256: str | None) -> LineageRecord:
    return LineageRecord(
        run_id=context.run_id,
        asset_key=context.asset_key.to_user_string(),
        upstream_assets=upstream,
        input_file_sha256=file_sha256,
        code_version=__version__,
        started_at=_step_started_at(context),
    )


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


def _input_sha(store: Warehouse) -> str | None:
    rows = store.query("SELECT any_value(_file_sha256) AS sha FROM raw_workbook")
    return None if rows.empty else rows["sha"].iloc[0]


def _cleaned(store: Warehouse) -> pd.DataFrame:
    return store.query("SELECT * FROM cleaned_customers ORDER BY customer_id")


def _reject(error: IngestionError) -> dg.Failure:
    # The one-line message is the run's failure reason, in the UI and in the CLI.
    return dg.Failure(
        description=str(error),
        metadata={"file": error.file, "sheet": error.sheet or "", "column": error.column or "", "row": error.row or 0},
        allow_retries=False,
    )


def _previous_assignments(store: Warehouse) -> pd.DataFrame | None:
    """The last published assignments (customer_id, cluster, risk_tier, model_version), if there are any."""
    if "cluster_assignments" not in store.table_names():
        return None
    return store.query("SELECT customer_id, cluster, risk_tier, model_version FROM cluster_assignments")


def _reference_date(settings: SegmentationSettings) -> date:
    value = settings.settings().reference_date
    return date.fromisoformat(value) if value else date.today()


# --- assets -----------------------------------------------------------------------------------------------------


@dg.asset(group_name=GROUP, code_version=__version__, kinds={"duckdb", "python"}, pool=WAREHOUSE_POOL)
def raw_workbook(
    context: dg.AssetExecutionContext,
    config: RawWorkbookConfig,
    warehouse: WarehouseResource,
    segmentation: SegmentationSettings,
) -> dg.MaterializeResult:
    """The bank's export read losslessly: every column with its original header, every cell as exported
    (as text), plus lineage columns: source file, sheet, source row, file SHA-256, ingestion time, run id.

    The whole file is validated (read and cleaned in memory) before anything is written: a rejected file fails
    here with one line naming file, sheet, column and row, and the warehouse keeps the last good run."""
    path = Path(config.path) if config.path else default_input_path()
    try:
        raw: RawTable = read_customer_file(path, sheet=config.sheet)
    except IngestionError as error:
        raise _reject(error) from None
    except FileNotFoundError:
        raise dg.Failure(description=f"{path}: file not found", allow_retries=False) from None
    try:
        # Fail before writing: anything cleaning would refuse is refused now, while the old tables are intact.
        clean_customers(
            raw.frame, reference_date=_reference_date(segmentation), source_rows=raw.source_rows,
            source_file=raw.source_file,
        )  # fmt: skip
    except IngestionError as error:
        error.sheet = error.sheet or raw.sheet
        raise _reject(error) from None
    table = raw.frame.copy()
    table["_source_file"] = raw.source_file
    table["_sheet"] = raw.sheet
    table["_source_row"] = np.asarray(raw.source_rows, dtype="int64")
    table["_file_sha256"] = raw.sha256
    table["_ingested_at"] = pd.Timestamp.now(tz="UTC")
    table["_run_id"] = context.run_id
    lineage = _lineage(context, [], raw.sha256)
    lineage.row_count = len(table)
    warehouse.store().write_tables({"raw_workbook": table}, lineage=lineage)
    return dg.MaterializeResult(
        metadata=table_metadata(
            table,
            source_file=raw.source_file,
            sheet=raw.sheet or "",
            header_row=raw.header_row,
            file_sha256=raw.sha256,
            original_headers=dg.MetadataValue.json(list(raw.headers)),
        )
    )


@dg.asset(
    group_name=GROUP,
    code_version=__version__,
    deps=[raw_workbook],
    kinds={"duckdb", "pandas"},
    pool=WAREHOUSE_POOL,
)
def cleaned_customers(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.MaterializeResult:
    """One row per customer with canonical column names and types: duplicates removed, per-channel rows merged
    into one row with the set of channels, impossible values quarantined, age and tenure derived, empty and
    constant columns dropped. Every dropped row and column is counted with its reason."""
    store = warehouse.store()
    raw = store.query("SELECT * FROM raw_workbook ORDER BY _source_row")
    source_file = str(raw["_source_file"].iloc[0]) if len(raw) else "raw_workbook"
    file_sha256 = str(raw["_file_sha256"].iloc[0]) if len(raw) else None
    reference = _reference_date(segmentation)
    try:
        result = clean_customers(
            _without_lineage(raw), reference_date=reference, source_rows=raw["_source_row"].to_numpy(),
            source_file=source_file,
        )  # fmt: skip
    except IngestionError as error:
        raise _reject(error) from None
    report = result.report
    customers = result.customers.copy()
    customers["_reference_date"] = pd.Timestamp(reference)
    customers["_file_sha256"] = file_sha256
    customers["_run_id"] = context.run_id
    ingestion_report = pd.DataFrame(
        [
            {
                "run_id": context.run_id,
                "source_file": source_file,
                "sheet": str(raw["_sheet"].iloc[0]) if len(raw) else None,
                "file_sha256": file_sha256,
                "rows_read": report.rows_read,
                "rows_kept": report.rows_kept,
                "rows_dropped": json.dumps(report.dropped_rows),
                "columns_dropped": json.dumps(report.dropped_columns),
                "aliases_applied": json.dumps(report.aliases_applied),
                "unparseable_values": json.dumps(report.unparseable_values),
                "created_at": pd.Timestamp.now(tz="UTC"),
            }
        ]
    )
    lineage = _lineage(context, ["raw_workbook"], file_sha256)
    lineage.row_count = len(customers)
    store.write_tables(
        {
            "cleaned_customers": customers,
            "quarantined_customers": result.quarantined.assign(run_id=context.run_id),
            "ingestion_report": ingestion_report,
        },
        append=["ingestion_report"],
        lineage=lineage,
    )
    quarantined = int(result.quarantined["customer_id"].nunique()) if len(result.quarantined) else 0
    if quarantined:
        context.log.warning(f"{quarantined} customers quarantined for impossible values (table quarantined_customers)")
    return dg.MaterializeResult(
        metadata=table_metadata(
            customers,
            rows_read=report.rows_read,
            rows_kept=report.rows_kept,
            quarantined_customers=quarantined,
            dropped_rows=dg.MetadataValue.json(report.dropped_rows),
            dropped_columns=dg.MetadataValue.json(report.dropped_columns),
            aliases_applied=dg.MetadataValue.json(report.aliases_applied),
            unparseable_values=dg.MetadataValue.json(report.unparseable_values),
        )
    )


@dg.asset(
    group_name=GROUP,
    code_version=__version__,
    deps=[cleaned_customers],
    kinds={"duckdb", "scikitlearn"},
    pool=WAREHOUSE_POOL,
)
def customer_features(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.MaterializeResult:
    """Numeric feature matrix: money and counts log-transformed, all numerics standardised, gaps filled by
    K-nearest-neighbour imputation, flags 0/1, categoricals one-hot (rare levels grouped), channels multi-hot.
    The fitted transformer is stored so that new customers are scored identically."""
    store = warehouse.store()
    settings = segmentation.settings()
    customers = _without_lineage(_cleaned(store))
    transformer = feature_transformer(settings).fit(customers)
    features = transformer.transform(customers)
    features.insert(0, "customer_id", customers[schema.ID_COLUMN].to_numpy())
    lineage = _lineage(context, ["cleaned_customers"], _input_sha(store))
    lineage.row_count = len(features)
    store.write_tables({"customer_features": features}, lineage=lineage, objects={FEATURES_OBJECT: transformer})
    return dg.MaterializeResult(
        metadata=table_metadata(
            features,
            n_features=len(transformer.feature_names_),
            knn_neighbors=settings.knn_neighbors,
            numeric_features=dg.MetadataValue.json(transformer.numeric_columns_),
            categorical_features=dg.MetadataValue.json(transformer.categorical_columns_),
        )
    )


@dg.asset(
    group_name=GROUP,
    code_version=__version__,
    deps=[customer_features],
    kinds={"duckdb", "scikitlearn"},
    pool=WAREHOUSE_POOL,
)
def pca_embedding(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.MaterializeResult:
    """PCA of the features keeping the configured share of variance (default 90%); pc1 and pc2 are the plot
    coordinates. Explained variance per component is in the metadata."""
    store = warehouse.store()
    settings = segmentation.settings()
    features = store.query("SELECT * FROM customer_features ORDER BY customer_id")
    transformer = store.load_object(FEATURES_OBJECT)
    matrix = features[list(transformer.feature_names_)].to_numpy()
    embedding = fit_pca(matrix, settings.pca_variance, settings.random_state)
    table = pd.DataFrame(embedding.components, columns=[f"pc{i + 1}" for i in range(embedding.n_components)])
    table.insert(0, "customer_id", features["customer_id"].to_numpy())
    lineage = _lineage(context, ["customer_features"], _input_sha(store))
    lineage.row_count = len(table)
    store.write_tables(
        {"pca_embedding": table}, lineage=lineage, objects={EMBEDDING_OBJECT: (transformer, embedding.pca)}
    )
    ratios = embedding.explained_variance_ratio
    return dg.MaterializeResult(
        metadata=table_metadata(
            table,
            n_components=embedding.n_components,
            explained_variance_total=float(sum(ratios)),
            explained_variance_ratio=dg.MetadataValue.json([round(r, 5) for r in ratios]),
        )
    )


@dg.asset(
    group_name=GROUP,
    code_version=__version__,
    deps=[pca_embedding, cleaned_customers],
    kinds={"duckdb", "scikitlearn"},
    pool=WAREHOUSE_POOL,
)
def kmeans_model(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.MaterializeResult:
    """K-means on the embedding (k fixed, or chosen by silhouette over a range) with every k's silhouette,
    Davies-Bouldin and Calinski-Harabasz; clusters scored into High/Medium/Low tiers. The whole fitted model
    (transformer, PCA, K-means, tiers) is stored with a version id: the scoring API uses exactly it."""
    store = warehouse.store()
    settings = segmentation.settings()
    embedding = store.query("SELECT * FROM pca_embedding ORDER BY customer_id")
    cleaned = _cleaned(store)
    customers = _without_lineage(cleaned)
    if not np.array_equal(embedding["customer_id"].to_numpy(), customers[schema.ID_COLUMN].to_numpy()):
        raise dg.Failure("pca_embedding and cleaned_customers hold different customers: materialise them together")
    transformer, pca = store.load_object(EMBEDDING_OBJECT)
    components = embedding.drop(columns=["customer_id"]).to_numpy()
    clustering, tiers = cluster_and_tier(components, customers, settings)
    # Stable ids: renumber to the last published assignments by customer overlap, then refit the tiers.
    previous = _previous_assignments(store)
    continuity = keep_cluster_ids(clustering, tiers, customers, previous, settings.risk_weights)
    clustering, tiers = continuity.clustering, continuity.tiers
    created = datetime.now().astimezone()
    version = f"{created.strftime('%Y%m%dT%H%M%S')}-{context.run_id[:8]}"
    input_sha = str(cleaned["_file_sha256"].iloc[0]) if len(cleaned) else None
    model = SegmentationModel(
        version=version,
        features=transformer,
        pca=pca,
        kmeans=clustering.model,
        tiers=tiers,
        reference_date=pd.Timestamp(cleaned["_reference_date"].iloc[0]).date(),
        metrics=clustering.metrics,
        k_search=clustering.k_search,
        trained_at=created,
        n_customers=len(customers),
        settings=settings.model_dump(),
        input_sha256=input_sha,
        run_id=context.run_id,
    )
    metrics = clustering.metrics
    k_search = clustering.k_search.assign(model_version=version, chosen=lambda f: f["k"] == clustering.k)
    # Registry: the new version becomes active only if it passes the quality gate; drift is measured against the
    # population of the version active until now.
    active_before = registry.active_entry(store)
    new_tiers = tiers.tier_of(clustering.labels)
    quality = registry.quality_check(metrics, clustering.labels, clustering.k, settings.silhouette_floor)
    entry = registry.ModelVersion.of(
        model,
        quality,
        population_profile(customers, new_tiers),
        previous_version=str(active_before["model_version"]) if active_before else None,
    )
    stability = stability_report(
        previous_model_version=continuity.previous_model_version or entry.previous_version,
        previous_labels=continuity.previous_labels,
        new_labels=continuity.new_labels,
        previous_profile=active_before["population_profile"] if active_before else None,
        customers=customers,
        new_tiers=new_tiers,
    )
    tables = {"kmeans_model": model_table_row(model), "kmeans_k_search": k_search}
    if quality.passed:
        tables["segment_profiles"] = model.profiles()  # published profiles follow the active model
    if stability.previous_model_version is not None:
        tables["model_stability"] = stability.to_frame(
            run_id=context.run_id, model_version=version, created_at=pd.Timestamp(created)
        )
    lineage = _lineage(context, ["pca_embedding", "cleaned_customers"], input_sha)
    lineage.row_count = 1
    statuses: list[str] = []
    store.write_tables(
        tables,
        append=["kmeans_model", "kmeans_k_search", "model_stability"],
        lineage=lineage,
        also=lambda connection: statuses.append(registry.record_version(connection, entry, activate=quality.passed)),
    )
    if not quality.passed:
        context.log.warning(f"model {version} not activated ({quality.notes}); the active model stays in use")
    if stability.flags:
        context.log.warning(f"population drift since {stability.previous_model_version}: {stability.flags}")
    summary = stability.summary()
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "status": statuses[0] if statuses else "unknown",
            "quality": quality.notes,
            "k": clustering.k,
            "silhouette": metrics["silhouette"],
            "davies_bouldin": metrics["davies_bouldin"],
            "calinski_harabasz": metrics["calinski_harabasz"],
            "cluster_tiers": dg.MetadataValue.json({str(c): t for c, t in tiers.cluster_tiers.items()}),
            "cluster_scores": dg.MetadataValue.json({str(c): round(s, 4) for c, s in tiers.cluster_scores.items()}),
            "cluster_order": dg.MetadataValue.json(continuity.order),
            "previous_model_version": stability.previous_model_version or "",
            "ari_vs_previous": summary["ari"],
            "tier_mix_psi": summary["tier_mix_psi"],
            "feature_psi": dg.MetadataValue.json(summary["feature_psi"]),
            "drift_flags": dg.MetadataValue.json(summary["flags"]),
            "k_search": dg.MetadataValue.md(_markdown_preview(clustering.k_search.round(4), rows=50)),
        }
    )


@dg.asset(
    group_name=GROUP,
    code_version=__version__,
    deps=[kmeans_model, cleaned_customers],
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
)
def cluster_assignments(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per customer: cluster, risk tier, risk score, distance to its centroid, pc1/pc2, model version
    and run id — computed with the ACTIVE model of the registry, exactly as the scoring API computes them.
    Customers whose tier changed since the previous assignments are appended to ``tier_migrations``."""
    store = warehouse.store()
    try:
        model = load_model(store)
    except LookupError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    customers = _without_lineage(_cleaned(store))
    assignments = model.assign(customers)
    assignments["model_version"] = model.version
    assignments["run_id"] = context.run_id
    previous = _previous_assignments(store)
    tables = {"cluster_assignments": assignments}
    if previous is not None:
        tables["tier_migrations"] = tier_migrations(previous, assignments, run_id=context.run_id)
    lineage = _lineage(context, ["kmeans_model", "cleaned_customers"], model.input_sha256)
    lineage.row_count = len(assignments)
    store.write_tables(tables, append=["tier_migrations"], lineage=lineage)
    newest = registry.list_versions(store).head(1)
    if len(newest) and str(newest["model_version"].iloc[0]) != model.version:
        context.log.warning(
            f"newest model {newest['model_version'].iloc[0]} is {newest['status'].iloc[0]}: "
            f"assignments use the active model {model.version}"
        )
    tier_counts = assignments["risk_tier"].value_counts().to_dict()
    migrations = tables.get("tier_migrations")
    moves = {} if migrations is None else (migrations["old_tier"] + " -> " + migrations["new_tier"]).value_counts()
    return dg.MaterializeResult(
        metadata=table_metadata(
            assignments,
            model_version=model.version,
            tier_counts=dg.MetadataValue.json({k: int(v) for k, v in tier_counts.items()}),
            tier_migrations=0 if migrations is None else len(migrations),
            tier_moves=dg.MetadataValue.json({str(k): int(v) for k, v in dict(moves).items()}),
        )
    )


@dg.asset(
    group_name=GROUP,
    code_version=__version__,
    deps=[cluster_assignments],
    kinds={"plotly", "html"},
    pool=WAREHOUSE_POOL,
)
def segment_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The interactive HTML report analysts read (one self-contained file, plotly.js embedded, opens offline):
    overview, choice of k, PCA map, features / flags / categories by tier, cluster profiles, outliers, a
    generated narrative, and migration / drift when a previous model exists. Written to reports/ beside the
    warehouse as segment_report_<run_id>.html and latest.html."""
    store = warehouse.store()
    try:
        report = build_segment_report(store, context.run_id)
    except LookupError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    run_file, latest = write_report_files(report, store.path.parent / "reports", context.run_id)
    row = pd.DataFrame(
        [
            {
                "run_id": context.run_id,
                "model_version": report.model_version,
                "path": str(run_file.resolve()),
                "latest_path": str(latest.resolve()),
                "size_bytes": run_file.stat().st_size,
                "created_at": pd.Timestamp.now(tz="UTC"),
            }
        ]
    )
    lineage = _lineage(context, ["cluster_assignments"], _input_sha(store))
    lineage.row_count = 1
    store.write_tables({"segment_report": row}, append=["segment_report"], lineage=lineage)
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(report.markdown_summary(run_file.resolve())),
            "path": dg.MetadataValue.path(str(run_file.resolve())),
            "latest": dg.MetadataValue.path(str(latest.resolve())),
            "size_bytes": run_file.stat().st_size,
            "model_version": report.model_version,
            "customers": report.customers,
            "tier_counts": dg.MetadataValue.json(report.tier_counts),
            "outliers_flagged": len(report.outliers),
            "sections": dg.MetadataValue.json(report.sections),
        }
    )


SEGMENTATION_ASSETS = [
    raw_workbook,
    cleaned_customers,
    customer_features,
    pca_embedding,
    kmeans_model,
    cluster_assignments,
    segment_report,
]
