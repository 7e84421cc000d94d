"""Views for analysts: the questions people ask of the warehouse, each answered by one view in ``main``.

:func:`create_views` (re)creates every view of :data:`VIEWS` inside :func:`snapshots.publish`'s transaction, after
the public names point at the new snapshot, so every published warehouse has them and they always describe the
published snapshot. Each view's columns carry a comment (``duckdb_columns().comment``): the view's own description
of the column, else the one column contract, :data:`schema.COLUMN_DESCRIPTIONS`.

Adding a view is adding a :class:`View` to :data:`VIEWS` (and a row to the README's "Assets and tables"): its
``select`` gets the :class:`Publication` (the snapshot just published, the columns of main's tables) and returns
the SELECT the view is made of. A view whose ``requires`` are not all in ``main`` yet is left out (a view must
never stop a publication); the next publication that has them creates it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from segmentation_pipeline import schema


@dataclass(frozen=True)
class Publication:
    """What the views are created for: the snapshot being published and what ``main`` holds."""

    warehouse: Path
    snapshot_id: str
    run_id: str
    published_at: datetime
    model_version: str | None  # the model the published ratings were made with
    columns: Mapping[str, tuple[str, ...]]  # every table and view in main -> its columns


@dataclass(frozen=True)
class View:
    name: str
    description: str
    requires: tuple[str, ...]  # tables and views in main it reads
    select: Callable[[Publication], str]
    columns: Mapping[str, str] = field(default_factory=dict)  # descriptions of columns schema.py does not describe


def literal(value: object) -> str:
    """A SQL literal of a text, a timestamp or None (the views are bound to the published snapshot's values)."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


# --- current_customer_risk ----------------------------------------------------------------------------------------

# What an analyst needs to see next to a rating, from cleaned_customers (NULL where the export lacked the column).
CUSTOMER_VALUES: tuple[str, ...] = (
    "is_pep", "high_income_hw", "previously_reported", "ctr_match", "num_alerts", "exp_volume", "actual_volume",
    "cash_usage", "non_face_to_face_usage", "online_ft_usage", "occupation", "account_type", "subscribed_channels",
    "province", "city", "age", "tenure_years",
)  # fmt: skip
TOP_REASONS = 3


def _value_type(column: str) -> str:
    """The type a cleaned column has (for the NULL standing in for a column the export lacked)."""
    if column == schema.CHANNEL_COLUMN:
        return "VARCHAR[]"
    return "VARCHAR" if column in schema.CATEGORICAL_COLUMNS else "DOUBLE"


def _current_customer_risk(publication: Publication) -> str:
    cleaned = set(publication.columns.get("cleaned_customers", ()))
    values = ", ".join(
        f"c.{name}" if name in cleaned else f"CAST(NULL AS {_value_type(name)}) AS {name}" for name in CUSTOMER_VALUES
    )
    return f"""
WITH reasons AS (
    SELECT customer_id, list(indicator ORDER BY rank) AS top_reasons,
           string_agg(format('{{}} {{:+.2f}}', indicator, coalesce(contribution, 0)), ', ' ORDER BY rank)
               AS top_reasons_text
    FROM main.rating_reasons WHERE rank <= {TOP_REASONS} GROUP BY customer_id
)
SELECT a.customer_id, a.risk_tier, a.tier_before_rules, a.segment_tier, a.rating_basis, a.risk_score, a.cluster,
       coalesce(a.rule_ids, []) AS rule_ids, coalesce(r.top_reasons, []) AS top_reasons, r.top_reasons_text,
       {values},
       a.model_version, a.policy_version, {literal(publication.snapshot_id)} AS snapshot_id,
       {literal(publication.published_at)} AS published_at
FROM main.cluster_assignments a
LEFT JOIN reasons r ON r.customer_id = a.customer_id
LEFT JOIN main.cleaned_customers c ON c.customer_id = a.customer_id
"""


# --- latest_tier_changes ------------------------------------------------------------------------------------------


def _latest_tier_changes(publication: Publication) -> str:
    return f"""
SELECT customer_id, old_tier, new_tier, old_cluster, new_cluster, old_model_version, new_model_version,
       {literal(publication.snapshot_id)} AS snapshot_id, {literal(publication.published_at)} AS published_at
FROM main.tier_migrations WHERE run_id = {literal(publication.run_id)}
"""


# --- models -------------------------------------------------------------------------------------------------------

# Metrics only the registry's JSON holds (the clustering metrics are columns of kmeans_model).
REGISTRY_METRICS: tuple[str, ...] = ("imputed_behaviour_share", "complete_rows_share", "smallest_cluster")


def _models(publication: Publication) -> str:
    metrics = ", ".join(f"TRY_CAST(v.metrics::JSON ->> '{m}' AS DOUBLE) AS {m}" for m in REGISTRY_METRICS)
    return f"""
WITH activations AS (
    SELECT model_version, max(activated_at) AS activated_at, arg_max(reason, activated_at) AS activation_reason
    FROM main.model_activations GROUP BY model_version
)
SELECT k.model_version, v.status, k.model_version IS NOT DISTINCT FROM {literal(publication.model_version)}
           AS rates_published_snapshot,
       k.created_at, k.k, k.silhouette, k.davies_bouldin, k.calinski_harabasz, k.inertia, {metrics},
       k.n_customers AS customers, v.quality_passed, v.quality_notes, a.activated_at, a.activation_reason,
       v.status_changed_at, v.previous_version, k.run_id, k.seed, k.policy_version, k.code_version,
       k.high_score_boundary, k.medium_score_boundary, k.cluster_tiers, k.input_file_sha256
FROM main.kmeans_model k
LEFT JOIN main.model_versions v ON v.model_version = k.model_version
LEFT JOIN activations a ON a.model_version = k.model_version
"""


VIEWS: tuple[View, ...] = (
    View(
        name="current_customer_risk",
        description="One row per customer of the published snapshot: the rating, what decided it, its top reasons "
        "and the customer's key values.",
        requires=("cluster_assignments", "rating_reasons", "cleaned_customers"),
        select=_current_customer_risk,
        columns={
            "top_reasons": f"the customer's {TOP_REASONS} most telling indicators, most telling first "
            "(rating_reasons' order)",
            "top_reasons_text": "the same with each indicator's contribution to the risk score, e.g. "
            "'cash_share +1.97, num_alerts +0.83, ctr_match -0.62'",
        },
    ),
    View(
        name="latest_tier_changes",
        description="Customers whose tier the latest published run changed (no rows when it changed none).",
        requires=("tier_migrations",),
        select=_latest_tier_changes,
        columns={
            "old_tier": "the rating in the snapshot published before", "new_tier": "the rating now",
            "old_cluster": "the segment before", "new_cluster": "the segment now",
            "old_model_version": "the model that made the old rating",
            "new_model_version": "the model that made the new rating",
        },  # fmt: skip
    ),
    View(
        name="models",
        description="Every model version: registry status, quality, metrics and activation. The one place to look "
        "for models (kmeans_model holds the fitted models, model_versions the registry).",
        requires=("kmeans_model", "model_versions", "model_activations"),
        select=_models,
        columns={
            "model_version": "the version's id (fitted at, run)",
            "status": "active (the one the API and the next run use), inactive or rejected (failed the quality "
            "gate); NULL for a model fitted before the registry existed",
            "rates_published_snapshot": "whether the published ratings were made with this version",
            "created_at": "when the model was fitted",
            "k": "number of segments (clusters)",
            "silhouette": "silhouette score of the clustering (higher is better; quality gate floor 0.1 by default)",
            "davies_bouldin": "Davies-Bouldin index (lower is better)",
            "calinski_harabasz": "Calinski-Harabasz index (higher is better)",
            "inertia": "K-means inertia (within-cluster sum of squares)",
            "imputed_behaviour_share": "share of customers with more than half of their behaviour columns blank",
            "complete_rows_share": "share of customers with every behaviour column known",
            "smallest_cluster": "customers in the smallest segment",
            "customers": "customers the model was fitted on",
            "quality_passed": "whether the version passed the automatic quality gate",
            "quality_notes": "why it did not, or 'passed'",
            "activated_at": "when the version last became active (NULL: never)",
            "activation_reason": "why it did: automatic, promoted by hand, or a rollback",
            "status_changed_at": "when its status last changed",
            "previous_version": "the version that was active when it was fitted",
            "run_id": "the run that fitted it",
            "seed": "K-means random seed",
            "code_version": "the pipeline's version that fitted it",
            "high_score_boundary": "lowest risk score rated High whatever the segment",
            "medium_score_boundary": "lowest risk score rated at least Medium whatever the segment",
            "cluster_tiers": "each cluster's tier (JSON)",
            "input_file_sha256": "SHA-256 of the export it was fitted on",
        },
    ),
)


def description(view: View, column: str) -> str | None:
    """A view column's description: the view's own, else the column contract's."""
    return view.columns.get(column) or schema.COLUMN_DESCRIPTIONS.get(column)


def relations(connection: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, ...]]:
    """main's tables and views -> their columns, in order."""
    rows = connection.execute(
        "SELECT table_name, list(column_name ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_schema = 'main' GROUP BY table_name"
    ).fetchall()
    return {name: tuple(columns) for name, columns in rows}


def create_views(connection: duckdb.DuckDBPyConnection, publication: Publication) -> list[str]:
    """Create or replace every view of :data:`VIEWS` whose sources exist, with its comments (inside the caller's
    transaction). Returns the names of the views created."""
    created = []
    for view in VIEWS:
        if not all(name in publication.columns for name in view.requires):
            continue
        connection.execute(f"CREATE OR REPLACE VIEW main.{view.name} AS {view.select(publication)}")
        connection.execute(f"COMMENT ON VIEW main.{view.name} IS {literal(view.description)}")
        for (column,) in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
            "ORDER BY ordinal_position", [view.name],
        ).fetchall():  # fmt: skip
            text = description(view, column)
            if text:
                connection.execute(f'COMMENT ON COLUMN main.{view.name}."{column}" IS {literal(text)}')
        created.append(view.name)
    return created
