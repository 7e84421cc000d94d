"""Asset checks: data quality gates between the stages.

The checks on ``cleaned_customers`` are blocking: when one fails, clustering does not run on bad data and the run's
snapshot is never published. Each check reads what its own run wrote (``WarehouseResource.run_store``).
"""


import dagster as dg

from segmentation_pipeline.orchestration.resources import SegmentationSettings, WarehouseResource
from segmentation_pipeline.schema import ID_COLUMN, NON_NEGATIVE_COLUMNS
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.fields import MAX_AGE_YEARS
from segmentation_pipeline.stages.policy import floor_violations
from segmentation_pipeline.stages.tiering import TIERS, indicator_matrix
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import load_model

CHECK_CHUNK = 100_000  # customers the policy check reads at a time

REQUIRED_COLUMNS = ("customer_id",)
# Columns whose absence makes the tiers meaningless: at least one volume must be present.
REQUIRED_ANY_OF = ("exp_volume", "actual_volume")


@dg.asset_check(asset="cleaned_customers", blocking=True, description="Every customer id appears exactly once.")
def unique_customer_ids(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    row = warehouse.run_store(context.run.run_id).query(
        "SELECT count(*) AS n, count(DISTINCT customer_id) AS distinct_ids, count(customer_id) AS non_null "
        "FROM cleaned_customers"
    ).iloc[0]
    duplicates = int(row["n"] - row["distinct_ids"])
    missing = int(row["n"] - row["non_null"])
    return dg.AssetCheckResult(
        passed=duplicates == 0 and missing == 0,
        description=f"{duplicates} customer ids appear twice and {missing} are missing in cleaned_customers",
        metadata={"duplicate_ids": duplicates, "missing_ids": missing, "rows": int(row["n"])},
    )


@dg.asset_check(asset="cleaned_customers", blocking=True, description="The columns clustering needs are present.")
def required_columns_present(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    columns = set(warehouse.run_store(context.run.run_id).query("SELECT * FROM cleaned_customers LIMIT 0").columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if not any(c in columns for c in REQUIRED_ANY_OF):
        missing.append(" or ".join(REQUIRED_ANY_OF))
    described = (
        f"cleaned_customers has no {' and no '.join(missing)} column (absent from the export, or dropped as empty "
        "or constant: see ingestion_report.columns_dropped)"
    )
    return dg.AssetCheckResult(
        passed=not missing,
        description=described if missing else "the columns clustering needs are there",
        metadata={"missing": missing, "columns": sorted(columns)},
    )


@dg.asset_check(
    asset="cleaned_customers",
    blocking=True,
    description=f"Volumes and counts are non-negative; ages lie between 0 and {MAX_AGE_YEARS}.",
)
def values_in_range(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.run_store(context.run.run_id)
    columns = set(store.query("SELECT * FROM cleaned_customers LIMIT 0").columns)
    violations: dict[str, int] = {}
    for column in NON_NEGATIVE_COLUMNS:
        if column in columns:
            negative = store.query(f'SELECT count(*) FROM cleaned_customers WHERE "{column}" < 0')
            violations[column] = int(negative.iloc[0, 0])
    if "age" in columns:
        violations["age"] = int(
            store.query(f"SELECT count(*) FROM cleaned_customers WHERE age < 0 OR age > {MAX_AGE_YEARS}").iloc[0, 0]
        )
    bad = {column: n for column, n in violations.items() if n}
    described = ", ".join(f"{n} customers with {column} out of range" for column, n in bad.items())
    return dg.AssetCheckResult(passed=not bad, description=described or "every value in range",
                               metadata={"violations": bad, "columns_checked": sorted(violations)})  # fmt: skip


@dg.asset_check(asset="kmeans_model", description="Warns when the newest model's silhouette is below the floor.")
def silhouette_above_floor(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.AssetCheckResult:
    floor = segmentation.settings().silhouette_floor
    row = warehouse.run_store(context.run.run_id).query(
        "SELECT model_version, silhouette FROM kmeans_model ORDER BY created_at DESC LIMIT 1"
    ).iloc[0]
    silhouette = float(row["silhouette"])
    return dg.AssetCheckResult(
        passed=silhouette >= floor,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"silhouette": silhouette, "floor": floor, "model_version": str(row["model_version"])},
    )


@dg.asset_check(
    asset="cluster_assignments",
    blocking=True,
    description="No customer is rated below the floor of a policy rule it matches (the rules re-evaluated on the "
    "cleaned customers with the rules stored in the model that rated them).",
)
def ratings_meet_policy_floors(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    store = warehouse.run_store(context.run.run_id)
    ratings = store.query("SELECT model_version FROM cluster_assignments LIMIT 1")
    if ratings.empty:
        return dg.AssetCheckResult(passed=True, description="no customer rated", metadata={"customers": 0})
    model = load_model(store, str(ratings["model_version"].iloc[0]))
    below: dict[str, int] = {}
    customers = 0
    rated = ("SELECT c.*, a.risk_tier AS _rated_tier FROM cleaned_customers c "
             f"LEFT JOIN cluster_assignments a USING ({ID_COLUMN})")  # unrated (null): below any floor
    for chunk in store.batches(rated, rows=CHECK_CHUNK):  # a chunk of customers at a time: memory stays bounded
        batch = CustomerBatch.from_arrow(chunk)
        tiers = chunk.column("_rated_tier").to_numpy(zero_copy_only=False)
        indicators = indicator_matrix(batch, model.features.derived(batch))
        for rule, n in floor_violations(model.policy, batch, indicators, tiers).items():
            below[rule] = below.get(rule, 0) + n
        customers += chunk.num_rows
    described = "; ".join(f"{n} customers match rule {rule} but are rated below its floor" for rule, n in below.items())
    return dg.AssetCheckResult(
        passed=not below,
        description=described or f"every customer meets the floors of the {len(model.policy.rules)} policy rules",
        metadata={"below_floor": dg.MetadataValue.json(below), "policy_version": model.policy.version,
                  "customers": customers},  # fmt: skip
    )


EXAMPLES = 5  # ids shown per kind of gap


def assignment_gaps(store: Warehouse) -> dict[str, tuple[int, list[str]]]:
    """How far cluster_assignments is from one row per cleaned customer, in SQL (DuckDB anti-joins: no customer
    is read into Python): ``missing`` (cleaned customers without an assignment), ``extra`` (assignments of no
    cleaned customer) and ``duplicated`` (customers assigned more than once), each as (count, the first ids)."""
    kinds = {
        "missing": f"SELECT c.{ID_COLUMN} FROM cleaned_customers c ANTI JOIN cluster_assignments a USING ({ID_COLUMN})",
        "extra": f"SELECT a.{ID_COLUMN} FROM cluster_assignments a ANTI JOIN cleaned_customers c USING ({ID_COLUMN})",
        "duplicated": f"SELECT {ID_COLUMN} FROM cluster_assignments GROUP BY {ID_COLUMN} HAVING count(*) > 1",
    }
    counts = store.query(" UNION ALL ".join(f"SELECT '{kind}' AS kind, count(*) AS n FROM ({sql})"
                                            for kind, sql in kinds.items()))  # fmt: skip
    gaps = {}
    for kind, n in zip(counts["kind"], counts["n"].astype(int), strict=True):
        examples = store.query(f"SELECT CAST({ID_COLUMN} AS VARCHAR) AS id FROM ({kinds[kind]}) ORDER BY 1 "
                               f"LIMIT {EXAMPLES}")["id"].tolist() if n else []  # fmt: skip
        gaps[kind] = (int(n), examples)
    return gaps


@dg.asset_check(
    asset="cluster_assignments",
    blocking=True,
    description="Every cleaned customer is assigned exactly once: none missing, none extra, none twice.",
)
def every_customer_assigned_once(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    gaps = assignment_gaps(warehouse.run_store(context.run.run_id))
    words = {"missing": "cleaned customers have no assignment", "extra": "assignments belong to no cleaned customer",
             "duplicated": "customers are assigned more than once"}  # fmt: skip
    described = "; ".join(f"{n} {words[kind]} (e.g. {', '.join(ids)})" for kind, (n, ids) in gaps.items() if n)
    return dg.AssetCheckResult(
        passed=not described,
        description=described or "every cleaned customer is assigned exactly once",
        metadata={**{kind: n for kind, (n, _) in gaps.items()},
                  "examples": dg.MetadataValue.json({kind: ids for kind, (_, ids) in gaps.items() if ids})},
    )  # fmt: skip


def tier_shares(store: Warehouse) -> dict[str, float]:
    """The share of assigned customers per rating (every tier, 0.0 when none holds it)."""
    counts = store.query("SELECT risk_tier, count(*) AS n FROM cluster_assignments GROUP BY risk_tier")
    total = int(counts["n"].sum())
    found = dict(zip(counts["risk_tier"], counts["n"].astype(int), strict=True))
    return {tier: (found.get(tier, 0) / total if total else 0.0) for tier in TIERS}


def shares_out_of_bounds(
    shares: dict[str, float], minimum: dict[str, float], maximum: dict[str, float]
) -> dict[str, str]:
    """The ratings whose share lies outside its bounds, each with a few words saying how."""
    out = {}
    for tier, share in shares.items():
        low, high = minimum.get(tier, 0.0), maximum.get(tier, 1.0)
        if share < low:
            out[tier] = f"{share:.1%} is below the minimum {low:.1%}"
        elif share > high:
            out[tier] = f"{share:.1%} is above the maximum {high:.1%}"
    return out


@dg.asset_check(
    asset="cluster_assignments",
    description="Warns when a rating's share of customers lies outside its bounds (settings tier_share_min and "
    "tier_share_max).",
)
def tier_mix_within_bounds(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, segmentation: SegmentationSettings
) -> dg.AssetCheckResult:
    settings = segmentation.settings()
    shares = tier_shares(warehouse.run_store(context.run.run_id))
    out = shares_out_of_bounds(shares, settings.tier_share_min, settings.tier_share_max)
    return dg.AssetCheckResult(
        passed=not out,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(f"{tier}: {words}" for tier, words in out.items()) or "every rating's share in bounds",
        metadata={**{f"share_{tier.lower()}": round(share, 4) for tier, share in shares.items()},
                  "shares": dg.MetadataValue.json({tier: round(share, 4) for tier, share in shares.items()}),
                  "bounds": dg.MetadataValue.json({tier: [settings.tier_share_min.get(tier, 0.0),
                                                          settings.tier_share_max.get(tier, 1.0)] for tier in shares}),
                  "out_of_bounds": dg.MetadataValue.json(out)},
    )  # fmt: skip


SEGMENTATION_CHECKS = [
    unique_customer_ids, required_columns_present, values_in_range, silhouette_above_floor, ratings_meet_policy_floors,
    every_customer_assigned_once, tier_mix_within_bounds,
]  # fmt: skip
