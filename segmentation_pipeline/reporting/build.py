"""Build the segment report from what the warehouse holds (no re-clustering): the one entry point the Dagster
asset and ``segmentation report`` call."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from segmentation_pipeline import __version__
from segmentation_pipeline.reporting import figures
from segmentation_pipeline.reporting.data import ASSIGNMENT_COLUMNS, ReportData, format_number, format_share
from segmentation_pipeline.reporting.html import (
    Section,
    cards_html,
    count_figures,
    escape,
    render_report,
    table_html,
    write_html,
)
from segmentation_pipeline.reporting.narrative import TierNarrative, tier_narratives
from segmentation_pipeline.reporting.outliers import OutlierSettings, find_outliers
from segmentation_pipeline.reporting.population import (
    RELATION,
    Population,
    population_columns,
    population_figures,
    population_of,
    stratified_sample,
)
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline.warehouse.store import Warehouse

MAX_OUTLIERS_LISTED = 50
# Per-customer pictures (the PCA map, the outlier search) read at most about this many customers, drawn within each
# tier and cluster; every count and share of the report is computed over everyone regardless.
REPORT_SAMPLE_SIZE = 50_000
REQUIRED_TABLES = ("cleaned_customers", "cluster_assignments", "kmeans_model")
LATEST_NAME = "latest.html"


def latest_report_path(warehouse_path: Path) -> Path:
    """Where the published snapshot's report is: reports/latest.html beside the warehouse."""
    return Path(warehouse_path).parent / "reports" / LATEST_NAME


@dataclass
class ReportArtifacts:
    """The built report and the key numbers it shows (for Dagster metadata, the CLI and tests)."""

    html: str
    title: str
    model_version: str
    run_id: str | None
    customers: int
    tier_counts: dict[str, int]
    metrics: dict[str, float]
    k: int
    sections: list[str]
    figure_ids: list[str]
    scatter_points: int
    outliers: pd.DataFrame
    narratives: list[TierNarrative]
    has_migrations: bool = False
    generated_at: datetime = field(default_factory=lambda: datetime.now().astimezone())

    @property
    def size_bytes(self) -> int:
        """Size of the HTML as written (UTF-8)."""
        return len(self.html.encode("utf-8"))

    def markdown_summary(self, path: Path | str | None = None) -> str:
        """Key numbers as markdown (Dagster metadata, chat, e-mail)."""
        tiers = " · ".join(
            f"{t} {n:,} ({n / max(self.customers, 1):.1%})" for t, n in self.tier_counts.items()
        )  # fmt: skip
        lines = [
            f"**Segment report** — model `{self.model_version}`",
            "",
            "| | |",
            "|---|---|",
            f"| customers | {self.customers:,} |",
            f"| k | {self.k} |",
            f"| silhouette | {self.metrics.get('silhouette', float('nan')):.3f} |",
            f"| Davies-Bouldin | {self.metrics.get('davies_bouldin', float('nan')):.3f} |",
            f"| Calinski-Harabasz | {self.metrics.get('calinski_harabasz', float('nan')):,.0f} |",
            f"| tiers | {tiers} |",
            f"| outliers flagged | {len(self.outliers):,} |",
            f"| size | {self.size_bytes / 1e6:.1f} MB |",
        ]
        if path is not None:
            lines.append(f"| report | `{path}` |")
        lines += ["", *[f"- {n.text}" for n in self.narratives]]
        return "\n".join(lines)


# --- reading the warehouse --------------------------------------------------------------------------------------


def _scalar(warehouse: Warehouse, sql: str, params: list[object] | None = None) -> object:
    frame = warehouse.query(sql, params or [])
    return None if frame.empty else frame.iloc[0, 0]


def _matching(frame: pd.DataFrame, candidates: list[tuple[str, object]]) -> pd.DataFrame | None:
    """Rows of a run/model-keyed table that belong to the current model (first key column that matches);
    ``None`` when the table has key columns but none matches (stale: not this model's)."""
    keyed = False
    for column, value in candidates:
        if column in frame.columns and value is not None:
            keyed = True
            rows = frame[frame[column].astype(str) == str(value)]
            if len(rows):
                return rows
    return None if keyed else frame


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_customers(warehouse: Warehouse, tables: set[str], sample_size: int | None, seed: int
                    ) -> tuple[pd.DataFrame, Population, pd.DataFrame | None, object]:  # fmt: skip
    """The exact population figures (SQL over every customer), the customers the per-customer pictures show (all
    of them, or a stratified sample beyond ``sample_size``), their embedding, and the data's reference date."""
    with warehouse.connect(read_only=True) as connection:
        connection.execute("SET enable_progress_bar = false")
        cleaned = [str(c) for c in connection.execute("SELECT * FROM cleaned_customers LIMIT 0").df().columns]
        customer_columns = [c for c in cleaned if not c.startswith("_")]
        join = "FROM cleaned_customers c JOIN cluster_assignments a USING (customer_id)"
        # The columns the population figures read, joined ONCE (each figure then scans a plain table).
        counted = [c for c in population_columns() if c in customer_columns]
        connection.execute(f"CREATE OR REPLACE TEMP TABLE {RELATION} AS SELECT customer_id, a.cluster, a.risk_tier, "
                           f"{', '.join(f'c.{_quoted(c)}' for c in counted)} {join}")  # fmt: skip
        reference = None
        if "_reference_date" in cleaned:
            row = connection.execute("SELECT _reference_date FROM cleaned_customers ORDER BY customer_id LIMIT 1")
            first = row.fetchone()
            reference = first[0] if first else None
        population = population_figures(connection)
        chosen = ""
        if sample_size is not None and population.customers > sample_size:
            chosen = f"WHERE customer_id IN ({stratified_sample(connection, sample_size, seed)})"
        columns = [f"c.{_quoted(c)}" for c in customer_columns] + [f"a.{_quoted(c)}" for c in ASSIGNMENT_COLUMNS]
        connection.execute(f"CREATE OR REPLACE TEMP TABLE report_sample AS SELECT {', '.join(columns)} {join} {chosen}")
        connection.execute(f"DROP TABLE {RELATION}")
        segmented = connection.execute("SELECT * FROM report_sample ORDER BY customer_id").df()
        embedding = None
        if "pca_embedding" in tables:
            embedding = connection.execute("SELECT e.* FROM report_sample s LEFT JOIN pca_embedding e USING "
                                           "(customer_id) ORDER BY s.customer_id").df()  # fmt: skip
        connection.execute("DROP TABLE report_sample")
    return segmented, population, embedding, reference


def load_report_data(warehouse: Warehouse, run_id: str | None = None, *,
                     sample_size: int | None = REPORT_SAMPLE_SIZE, seed: int = 0) -> ReportData:  # fmt: skip
    """Everything the report shows, read from the warehouse tables of the current (or given) run: the figures
    of every customer computed in SQL, and the customers themselves up to ``sample_size`` (beyond it a sample
    stratified by tier and cluster, drawn reproducibly from ``seed``; ``None`` reads everyone)."""
    tables = warehouse.table_names()
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise LookupError(f"{warehouse.path} has no {', '.join(missing)}: run the pipeline first (segmentation run)")
    assignments = warehouse.query("SELECT * FROM cluster_assignments ORDER BY customer_id LIMIT 1")
    if assignments.empty:
        raise LookupError(f"{warehouse.path}: cluster_assignments is empty: run the pipeline first")
    version = str(assignments["model_version"].iloc[0]) if "model_version" in assignments.columns else None
    model = load_model(warehouse, version)
    run_id = run_id or (str(assignments["run_id"].iloc[0]) if "run_id" in assignments.columns else model.run_id)
    segmented, population, embedding, reference = _read_customers(warehouse, tables, sample_size, seed)

    k_search = model.k_search.copy()
    if "kmeans_k_search" in tables:
        stored = warehouse.query("SELECT * FROM kmeans_k_search WHERE model_version = ? ORDER BY k", [model.version])
        if len(stored):
            k_search = stored
    centres = np.asarray(model.centers)
    centroids = pd.DataFrame({"cluster": np.arange(len(centres)), "pc1": centres[:, 0],
                              "pc2": centres[:, 1] if centres.shape[1] > 1 else 0.0})  # fmt: skip
    data = ReportData(
        segmented=segmented, population=population, k_search=k_search, chosen_k=model.k, metrics=dict(model.metrics),
        model_version=model.version, centroids=centroids, run_id=run_id,
        reference_date=str(pd.Timestamp(reference).date()) if reference is not None else str(model.reference_date),
        model_trained_at=model.trained_at.strftime("%Y-%m-%d %H:%M %Z").strip(),
        k_fixed=model.settings.get("n_clusters") is not None,
        k_range=(int(model.settings.get("k_min", 0) or 0), int(model.settings.get("k_max", 0) or 0)),
    )  # fmt: skip
    data.extra["settings"] = model.settings
    data.extra["code_version"] = __version__
    data.extra["policy"] = model.policy
    data.extra["score_boundaries"] = {tier: model.tiers.boundary_of(tier) for tier in ("High", "Medium")}
    if "rating_governance" in tables:
        governance = warehouse.read_table("rating_governance")
        data.extra["governance"] = _matching(governance, [("run_id", run_id), ("model_version", model.version)])
    if "segment_profiles" in tables:
        data.profiles = warehouse.read_table("segment_profiles")
    if embedding is not None:
        aligned = embedding.assign(customer_id=segmented["customer_id"].to_numpy())
        if not aligned.drop(columns="customer_id").isna().any().any():
            data.embedding = aligned
    if "raw_workbook" in tables:
        data.rows_in_file = int(_scalar(warehouse, "SELECT count(*) FROM raw_workbook") or 0)
    if "ingestion_report" in tables:
        report = warehouse.query("SELECT * FROM ingestion_report ORDER BY created_at DESC")
        mine = report[report["run_id"] == run_id] if "run_id" in report.columns else report.iloc[0:0]
        row = (mine if len(mine) else report).iloc[0] if len(report) else None
        if row is not None:
            data.rows_read, data.rows_kept = int(row["rows_read"]), int(row["rows_kept"])
            data.source_file, data.file_sha256 = row.get("source_file"), row.get("file_sha256")
            data.ingested_at = pd.Timestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M UTC")
            data.extra["rows_dropped"] = json.loads(row.get("rows_dropped") or "{}")
            data.extra["columns_dropped"] = json.loads(row.get("columns_dropped") or "{}")
    if "quarantined_customers" in tables:
        data.quarantined = int(_scalar(warehouse, "SELECT count(DISTINCT customer_id) FROM quarantined_customers") or 0)
    # Migration and drift rows of THIS run (the same model can stay active over several runs).
    keys = [("run_id", run_id), ("new_model_version", model.version), ("model_version", model.version)]
    if "model_stability" in tables:
        stability = _matching(warehouse.read_table("model_stability"), keys)
        if stability is not None and len(stability):
            data.stability = stability
    if "tier_migrations" in tables:
        migrations = warehouse.read_table("tier_migrations")
        if {"old_tier", "new_tier", "customer_id"} <= set(migrations.columns):
            mine = _matching(migrations, keys[:1]) if "run_id" in migrations.columns else migrations
            if mine is not None and len(mine):
                data.migrations = mine
            elif data.stability is not None:  # compared with a previous model and nobody moved: an empty matrix
                data.migrations = migrations.iloc[0:0]
    return data


# --- the report -------------------------------------------------------------------------------------------------


def _overview(data: ReportData, population: Population, narratives: list[TierNarrative]) -> Section:
    counts = population.tier_counts
    m = data.metrics
    cards: list[tuple[str, ...]] = [
        ("data as of", data.reference_date or "n/a"),
        ("rows in file", f"{data.rows_in_file:,}" if data.rows_in_file is not None else "n/a"),
    ]
    if data.rows_read is not None and data.rows_read != data.rows_in_file:
        cards.append(("rows read", f"{data.rows_read:,}"))
    cards.append(("customers kept", f"{population.customers:,}"))
    if data.quarantined:
        cards.append(("quarantined", f"{data.quarantined:,}"))
    cards += [
        ("model version", data.model_version),
        ("k (clusters)", str(data.chosen_k)),
        ("silhouette", f"{m.get('silhouette', float('nan')):.3f}"),
        ("Davies-Bouldin", f"{m.get('davies_bouldin', float('nan')):.3f}"),
        ("Calinski-Harabasz", f"{m.get('calinski_harabasz', float('nan')):,.0f}"),
    ]
    for tier in population.tiers:
        n = int(counts.get(tier, 0))
        cards.append((f"{tier} risk", f"{n:,} ({format_share(n / max(population.customers, 1))})", f"tier-{tier}"))
    items = "".join(
        f'<li class="tier-{escape(n.tier)}"><b>{escape(n.tier)}</b>{escape(n.text.removeprefix(n.tier))}</li>'
        for n in narratives
    )
    return Section(
        "overview", "Overview",
        "What was segmented and how well the segments separate. Silhouette runs from −1 to 1 (higher: better "
        "separated); Davies-Bouldin is lower-is-better; Calinski-Harabasz higher-is-better.",
        [cards_html(cards), '<h3 style="margin:10px 0 2px;font-size:15px">Tiers at a glance</h3>'
         '<p class="note">Generated from the data of this run; medians unless stated.</p>'
         f'<ul class="narrative">{items}</ul>', figures.tier_sizes_figure(population)],
    )  # fmt: skip


def _k_section(data: ReportData) -> Section:
    k_min, k_max = data.k_range or (0, 0)
    how = (f"k was fixed at {data.chosen_k} by configuration." if data.k_fixed
           else f"k was chosen by the best silhouette over k = {k_min}…{k_max}.")  # fmt: skip
    figure = figures.k_choice_figure(data.k_search, data.chosen_k, k_fixed=data.k_fixed)
    return Section("k", "Choice of k", f"{how} The elbow of the inertia curve is a second opinion: past it, more "
                   "clusters buy little.", [figure])


def _profile_scores_table(profiles: pd.DataFrame) -> str:
    """Cluster, tier, risk score and the three largest terms of the score: why a cluster got its tier."""
    if profiles.empty or "risk_score" not in profiles.columns:
        return ""
    terms = [c for c in profiles.columns if c.startswith("contribution_")]
    rows = []
    for row in profiles.sort_values("risk_score", ascending=False).itertuples(index=False):
        record = row._asdict()
        top = sorted(terms, key=lambda c: -abs(record[c]))[:3]
        rows.append({
            "cluster": int(record["cluster"]),
            "tier": f'<span class="pill {escape(record["risk_tier"])}">{escape(record["risk_tier"])}</span>',
            "risk score": f"{record['risk_score']:+.2f}",
            "tier from score ≥": (f"{record['tier_score_boundary']:+.2f}" if pd.notna(record.get("tier_score_boundary"))
                                  else "any score"),
            "largest terms of the score": escape(", ".join(
                f"{c.removeprefix('contribution_').replace('_', ' ')} {record[c]:+.2f}" for c in top)),
        })  # fmt: skip
    return ('<h3 style="margin:14px 0 2px;font-size:15px">Why each cluster got its tier</h3><p class="note">Risk '
            "score = Σ weight × cluster mean of the standardised indicator; clusters ranked by score into tiers. A "
            "customer of any cluster scoring at or above a tier's boundary is rated at least that tier.</p>"
            + table_html(pd.DataFrame(rows), html_columns=["tier", "largest terms of the score"]))  # fmt: skip


def _profile_table(population: Population) -> str:
    table = figures.cluster_profile_table(population)
    formatted = table.copy().astype(object)
    for index in range(len(table)):
        feature = table.index[index]
        money = "PKR" in feature
        formatted.iloc[index] = [format_number(v, money=money, digits=2) for v in table.iloc[index]]
    formatted.insert(0, ("", "feature"), table.index)
    return table_html(formatted.reset_index(drop=True))


def _outlier_section(outliers: pd.DataFrame, searched: int, customers: int, settings: OutlierSettings) -> Section:
    sampled = (f"The search reads a random sample of {searched:,} of the {customers:,} customers, stratified by tier "
               "and cluster; the medians and shares its reasons quote are measured on that sample. "
               if searched < customers else "")  # fmt: skip
    intro = sampled + (
        f"{len(outliers):,} of {searched:,} customers ({format_share(len(outliers) / max(searched, 1))}) are "
        f"flagged: the {format_share(settings.contamination)} most isolated by an IsolationForest on the PCA "
        f"embedding, and those more than {settings.distance_z:g} robust standard deviations farther from their "
        "cluster's centroid than its typical member. Reasons compare the customer with its cluster's medians. "
        "Flagged customers are candidates for review, not findings."
    )
    if outliers.empty:
        return Section("outliers", "Outliers", intro, ['<p class="note">No customer was flagged.</p>'])
    def table(rows: pd.DataFrame) -> str:
        frame = pd.DataFrame({
            "customer": rows["customer_id"].astype(str),
            "tier": [f'<span class="pill {escape(t)}">{escape(t)}</span>' for t in rows["risk_tier"]],
            "cluster": rows["cluster"],
            "flagged by": rows["method"],
            "isolation score": rows["isolation_score"].map(lambda v: f"{v:.3f}"),
            "distance z": rows["distance_z"].map(lambda v: f"{v:.1f}"),
            "reasons": rows["reasons"],
        })  # fmt: skip
        return table_html(frame, text_columns=["reasons", "flagged by"], html_columns=["tier"])

    blocks = [table(outliers.head(MAX_OUTLIERS_LISTED))]
    rest = outliers.iloc[MAX_OUTLIERS_LISTED:]
    if len(rest):
        # Everyone flagged is in the file (an auditor may ask), the tail folded away so the page stays readable.
        blocks = [f'<p class="note">The {MAX_OUTLIERS_LISTED} most anomalous first (flagged by both methods, then '
                  "by isolation score).</p>", blocks[0],
                  f"<details><summary>Show the other {len(rest):,} flagged customers</summary>{table(rest)}</details>"]
    return Section("outliers", "Outliers", intro, blocks)


def _policy_section(data: ReportData) -> Section | None:
    """How ratings were reached: score boundaries, tier mix before and after the policy rules, each rule's reach."""
    policy, governance = data.extra.get("policy"), data.extra.get("governance")
    if policy is None or governance is None or governance.empty:
        return None
    figures_ = {(m, i): int(n) for m, i, n in zip(governance["measure"], governance["item"].fillna(""),
                                                   governance["customers"], strict=True)}  # fmt: skip
    boundaries = data.extra.get("score_boundaries", {})
    inversions = figures_.get(("rank_inversions", ""), 0)
    cards = [
        ("policy version", str(policy.version)), ("rules", str(len(policy.rules))),
        *[(f"{tier} from score ≥", f"{value:+.2f}" if np.isfinite(value) else "none")
          for tier, value in boundaries.items()],
        ("rank inversions", f"{inversions:,}", "" if inversions == 0 else "tier-High"),
    ]  # fmt: skip
    stages = (("segment tier alone", "tier_mix_segment"), ("segment and score", "tier_mix_before_rules"),
              ("after policy rules", "tier_mix_after_rules"))  # fmt: skip
    mix = pd.DataFrame([{"rating": label, **{t: f"{figures_.get((m, t), 0):,}" for t in ("High", "Medium", "Low")}}
                        for label, m in stages])  # fmt: skip
    rules = pd.DataFrame([{
        "rule": rule.id, "condition": rule.condition, "at least": rule.min_tier,
        "customers matching": f"{figures_.get(('rule_matched', rule.id), 0):,}",
        "customers raised": f"{figures_.get(('rule_raised', rule.id), 0):,}", "rationale": rule.rationale,
    } for rule in policy.rules], columns=["rule", "condition", "at least", "customers matching", "customers raised",
                                          "rationale"])  # fmt: skip
    segment_inversions = figures_.get(("rank_inversions_segment_only", ""), 0)
    intro = (
        "A customer's rating is its segment's tier, raised by its own risk score (a score at or above a tier's "
        "boundary reaches that tier: the boundary is the lowest score of any training customer whose segment has "
        "that tier or a riskier one), then raised to the floor of every policy rule it matches. Rank inversions "
        f"count customers rated below someone with a lower score before rules (target 0; the segment tier alone "
        f"would have {segment_inversions:,}). Rules raise ratings regardless of score, by design."
    )
    return Section("policy", "Policy and overrides", intro, [
        cards_html(cards), '<h3 style="margin:10px 0 2px;font-size:15px">Tier mix at each step</h3>',
        table_html(mix, text_columns=["rating"]),
        f'<h3 style="margin:14px 0 2px;font-size:15px">Rules in force ({escape(policy.source)}, version '
        f"{escape(policy.version)})</h3>",
        table_html(rules, text_columns=["rule", "condition", "at least", "rationale"]) if len(rules)
        else '<p class="note">The rules file has no rules: ratings come from segments and scores alone.</p>',
    ])  # fmt: skip


def _shared_customers(stability: pd.DataFrame | None) -> int | None:
    """Customers in both the previous and the current assignments, when the stability table records it."""
    if stability is None or "n_shared_customers" not in stability.columns or stability.empty:
        return None
    value = pd.to_numeric(stability["n_shared_customers"], errors="coerce").dropna()
    return int(value.iloc[-1]) if len(value) else None


def _drift_section(data: ReportData, population: Population) -> Section | None:
    blocks: list[go.Figure | str] = []
    if data.migrations is not None:
        migrations = data.migrations
        old = ""
        if "old_model_version" in migrations.columns and migrations["old_model_version"].notna().any():
            old = str(migrations["old_model_version"].dropna().iloc[0])
        elif data.stability is not None and "previous_model_version" in data.stability.columns:
            old = str(data.stability["previous_model_version"].dropna().iloc[0])
        current, customers = population.tier_counts, population.customers
        moved = migrations[migrations["old_tier"].astype(str) != migrations["new_tier"].astype(str)]
        note = (f"{len(moved):,} of {customers:,} customers changed tier "
                f"({format_share(len(moved) / max(customers, 1))}).")  # fmt: skip
        shared = _shared_customers(data.stability)
        if shared is not None and shared < customers:
            note += (f" {customers - shared:,} customers are new to this export; the diagonal counts them as "
                     "staying in their tier.")  # fmt: skip
        blocks.append(f'<p class="note">{escape(note)}</p>')
        blocks.append(figures.migration_matrix_figure(migrations, current, old_version=old,
                                                      new_version=data.model_version))  # fmt: skip
    if data.stability is not None:
        measures = figures.drift_measures(data.stability)
        if len(measures):
            blocks.append(figures.drift_figure(data.stability))
            flags = measures["value"].map(
                lambda v: "" if v != v else "shifted" if v >= figures.PSI_ALERT else "watch" if v >= figures.PSI_WARN
                else "stable")  # fmt: skip
            shown = pd.DataFrame({"metric": measures["metric"].str.upper(), "subject": measures["subject"],
                                  "value": measures["value"].map(lambda v: f"{v:.4f}"),
                                  "reading": flags.where(measures["metric"] == "psi", "")})  # fmt: skip
            blocks.append(table_html(shown, text_columns=["metric", "subject", "reading"]))
    if not blocks:
        return None
    return Section("drift", "Migration and drift", "How customers moved between tiers since the previous model, and "
                   "how stable the clustering and its inputs are (ARI: agreement of the two clusterings, 1 = "
                   "identical; PSI: < 0.1 stable, 0.1–0.25 watch, > 0.25 shifted).", blocks)  # fmt: skip


def _about_section(data: ReportData) -> Section:
    settings = data.extra.get("settings", {})
    rows = [
        ("source file", data.source_file), ("file SHA-256", data.file_sha256), ("run id", data.run_id),
        ("model version", data.model_version), ("model trained", data.model_trained_at),
        ("ingested", data.ingested_at), ("code version", data.extra.get("code_version")),
        ("rows dropped", json.dumps(data.extra.get("rows_dropped", {}))),
        ("columns dropped", ", ".join(data.extra.get("columns_dropped", {})) or "none"),
        ("settings", json.dumps({k: v for k, v in settings.items() if k != "risk_weights"})),
        ("risk weights", json.dumps(settings.get("risk_weights", {}))),
    ]  # fmt: skip
    meta = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v if v is not None else 'n/a')}</dd>" for k, v in rows)
    return Section("about", "About this report", "Where the numbers come from, to reproduce them.",
                   [f'<dl class="meta">{meta}</dl>'])


def _left_out(population: Population, columns: list[str]) -> str | None:
    """Why a chart of ``columns`` cannot be drawn from this export (absent or carrying one value), else None."""
    for column in columns:
        if column not in population.columns:
            return f"{column} is not in this export's cleaned data (absent, or dropped as empty or constant)."
        distinct, value = population.distinct.get(column, (0, None))
        if distinct <= 1:
            shown = "no value" if distinct == 0 else f"the same value ({escape(str(value))})"
            return f"Every customer has {shown} in {column}: there is nothing to compare, the chart is left out."
    return None


def _chart(population: Population, columns: list[str], label: str, build: Callable[[Population], object]) -> object:
    """A figure, or a note saying why it is left out: a column the export lacks never fails the report."""
    note = _left_out(population, columns)
    return build(population) if note is None else f'<p class="note">{escape(label.capitalize())}: {note}</p>'


def _treemap(population: Population, columns: list[str], title: str) -> object:
    return _chart(population, columns, title, lambda figures_of: figures.treemap_figure(figures_of, columns, title))


def build_report(data: ReportData, *, max_scatter_points: int | None = figures.MAX_SCATTER_POINTS,
                 outlier_settings: OutlierSettings | None = None) -> ReportArtifacts:  # fmt: skip
    """The report from already-loaded data (what :func:`build_segment_report` does after reading). Counts and
    shares come from ``data.population`` (computed from ``data.segmented`` when absent); the map and the outlier
    search read ``data.segmented``."""
    segmented = data.segmented
    population = data.population if data.population is not None else population_of(segmented)
    outlier_settings = outlier_settings or OutlierSettings()
    embedding = data.embedding.drop(columns="customer_id").to_numpy() if data.embedding is not None else None
    outliers = find_outliers(segmented, embedding, outlier_settings)
    narratives = tier_narratives(population)
    scatter_sample = len(figures.sample_for_scatter(segmented, max_scatter_points))

    sections = [
        _overview(data, population, narratives),
        _k_section(data),
        Section("map", "Customer map (PCA)", "Each dot is a customer on the first two principal components of the "
                "features; crosses are cluster centroids, rings are flagged outliers. Hover for the customer's id "
                "and key values; click legend entries to hide a tier.",
                [figures.pca_scatter_figure(segmented, data.centroids, outlier_ids=outliers["customer_id"].tolist(),
                                            max_points=max_scatter_points, population=population)]),
        Section("numeric", "Numeric features by tier", "Means per tier with one standard deviation; hover for "
                "median and interquartile range (money is skewed: a few large customers pull the mean up).",
                [figures.numeric_bars_figure(population), figures.numeric_lines_figure(population)]),
        Section("flags", "Risk flags and gender by tier", "Share of each tier carrying each AML flag, and the gender "
                "mix of each tier.", [figures.flags_figure(population),
                                      _chart(population, ["gender"], "gender", figures.gender_figure)]),
        Section("categories", "Categorical profiles by tier", "Each rectangle is a group of customers sized by "
                "count; click a tier to zoom in. Channels are the customer's combination of subscribed channels, so "
                "each customer counts once.",
                [[_treemap(population, ["subscribed_channels"], "Subscribed channels by tier"),
                  _treemap(population, ["account_type"], "Account type by tier")],
                 [_treemap(population, ["occupation"], "Occupation / source of income by tier"),
                  _treemap(population, ["province", "city"], "Province → city by tier")]]),
        Section("profiles", "Cluster profiles", "How each cluster differs from the average customer, in standard "
                "deviations (money and counts on a log scale), then each cluster's mean / std / min / max in natural "
                "units.", [figures.cluster_heatmap_figure(population), _profile_scores_table(data.profiles),
                           _profile_table(population)]),
        _outlier_section(outliers, len(segmented), population.customers, outlier_settings),
    ]  # fmt: skip
    policy = _policy_section(data)
    if policy is not None:
        sections.insert(1, policy)
    drift = _drift_section(data, population)
    if drift is not None:
        sections.append(drift)
    sections.append(_about_section(data))

    title = "Customer risk segmentation report"
    generated = datetime.now().astimezone()
    subtitle = (f"Model {escape(data.model_version)} · data as of {escape(data.reference_date or 'n/a')} · "
                f"{population.customers:,} customers · generated {generated:%Y-%m-%d %H:%M %Z}")  # fmt: skip
    footer = f"segmentation-pipeline {escape(__version__)} · run {escape(data.run_id or 'n/a')}"
    html_text = render_report(title, subtitle, sections, footer)
    figure_ids = [f"figure-{i}" for i in range(count_figures(sections))]
    return ReportArtifacts(
        html=html_text, title=title, model_version=data.model_version, run_id=data.run_id,
        customers=population.customers, tier_counts={t: int(n) for t, n in population.tier_counts.items()},
        metrics=data.metrics, k=data.chosen_k, sections=[s.id for s in sections], figure_ids=figure_ids,
        scatter_points=scatter_sample, outliers=outliers, narratives=narratives,
        has_migrations=drift is not None, generated_at=generated,
    )  # fmt: skip


def build_segment_report(
    warehouse: Warehouse, run_id: str | None = None, *, max_scatter_points: int | None = figures.MAX_SCATTER_POINTS,
    sample_size: int | None = REPORT_SAMPLE_SIZE,
) -> ReportArtifacts:
    """Read the current run's tables from ``warehouse`` and build the report (nothing is re-fitted, nothing is
    written). Raises LookupError when the pipeline has not run yet."""
    with warehouse.reading():  # one connection for every query of the report
        data = load_report_data(warehouse, run_id, sample_size=sample_size)
    return build_report(data, max_scatter_points=max_scatter_points)


def write_report_files(artifacts: ReportArtifacts, reports_dir: Path, run_id: str | None = None) -> Path:
    """Write ``segment_report_<run_id>.html`` into ``reports_dir`` (atomically). ``latest.html`` becomes it only
    when the run's snapshot is published (``warehouse.snapshots.sync_latest_report``)."""
    name = f"segment_report_{run_id or artifacts.run_id or artifacts.model_version}.html"
    return write_html(artifacts.html, Path(reports_dir) / name)


