"""Overview figures: customers per tier, the choice of k, and the customers on the PCA map (with its tooltips)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmentation_pipeline.reporting.data import flag_values, format_number, tier_colour
from segmentation_pipeline.reporting.figure_style import GRID, PointsFigure, house_style
from segmentation_pipeline.reporting.population import Population, as_population

MAX_SCATTER_POINTS = 20_000


# --- overview ---------------------------------------------------------------------------------------------------


def tier_sizes_figure(segmented: pd.DataFrame | Population) -> go.Figure:
    """Customers per risk tier (of every customer), with each tier's share."""
    counts = as_population(segmented).tier_counts
    total = max(int(counts.sum()), 1)
    figure = go.Figure(
        go.Bar(
            x=counts.values,
            y=counts.index,
            orientation="h",
            marker_color=[tier_colour(t) for t in counts.index],
            text=[f"{n:,} ({n / total:.1%})" for n in counts.values],
            textposition="auto",
            hovertemplate="%{y}: %{x:,} customers<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title="customers", gridcolor=GRID)
    return house_style(figure, "Customers per risk tier", 260, showlegend=False,
                       margin={"l": 80, "r": 30, "t": 50, "b": 45})  # fmt: skip


# --- choice of k ------------------------------------------------------------------------------------------------


def k_choice_figure(k_search: pd.DataFrame, chosen_k: int, *, k_fixed: bool = False) -> go.Figure:
    """Silhouette (higher is better) and inertia (the elbow) over every k tried, the chosen k marked."""
    search = k_search.sort_values("k")
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    hover = [
        f"k = {row.k}<br>silhouette {row.silhouette:.3f}<br>Davies-Bouldin {row.davies_bouldin:.3f}"
        f"<br>Calinski-Harabasz {row.calinski_harabasz:,.0f}<br>inertia {row.inertia:,.0f}"
        for row in search.itertuples()
    ]
    figure.add_trace(
        go.Scatter(x=search["k"], y=search["silhouette"], name="silhouette (left axis, higher is better)",
                   mode="lines+markers", line={"color": "#1f6fb2", "width": 3}, marker={"size": 9},
                   hovertext=hover, hoverinfo="text"),
        secondary_y=False,
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(x=search["k"], y=search["inertia"], name="inertia (right axis, look for the elbow)",
                   mode="lines+markers", line={"color": "#6b7280", "width": 2, "dash": "dot"}, marker={"size": 7},
                   hovertext=hover, hoverinfo="text"),
        secondary_y=True,
    )  # fmt: skip
    chosen = search[search["k"] == chosen_k]
    if len(chosen):
        figure.add_trace(
            go.Scatter(x=chosen["k"], y=chosen["silhouette"], name=f"chosen k = {chosen_k}", mode="markers",
                       marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "#c62828", "width": 3}},
                       hoverinfo="skip"),
            secondary_y=False,
        )  # fmt: skip
    figure.add_vline(x=chosen_k, line={"color": "#c62828", "width": 1.5, "dash": "dash"})
    note = f"chosen k = {chosen_k}" + (" (fixed by configuration)" if k_fixed or len(search) <= 1 else "")
    figure.add_annotation(text=note, x=chosen_k, y=1.0, yref="paper", xanchor="left", yanchor="top",
                          showarrow=False, font={"color": "#c62828"}, xshift=6)  # fmt: skip
    ks = search["k"].tolist() or [chosen_k]
    figure.update_xaxes(title="number of clusters k", dtick=1, range=[min(ks) - 0.5, max(ks) + 0.5], gridcolor=GRID)
    silhouette_top = max(float(search["silhouette"].max()) + 0.1, 0.5) if len(search) else 1.0
    silhouette_bottom = min(0.0, float(search["silhouette"].min()) - 0.05) if len(search) else 0.0
    figure.update_yaxes(title="silhouette", secondary_y=False, gridcolor=GRID,
                        range=[silhouette_bottom, silhouette_top])
    inertia_top = float(search["inertia"].max()) * 1.1 if len(search) else 1.0
    figure.update_yaxes(title="inertia", secondary_y=True, showgrid=False, tickformat=".3~s", range=[0, inertia_top])
    return house_style(figure, "Choice of k: silhouette and inertia (elbow) over the k range tried", 400,
                       legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})  # fmt: skip


# --- PCA map ----------------------------------------------------------------------------------------------------


def sample_for_scatter(segmented: pd.DataFrame, max_points: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``max_points`` customers, sampled within each tier in proportion to its size (every tier keeps its
    share, and a small High tier is never sampled away). ``None`` keeps everyone."""
    if max_points is None or len(segmented) <= max_points:
        return segmented
    fraction = max_points / len(segmented)
    parts = []
    for _, group in segmented.groupby("risk_tier", sort=False):
        n = max(1, int(round(len(group) * fraction)))
        parts.append(group.sample(min(n, len(group)), random_state=seed))
    return pd.concat(parts).sort_index()


# The layout of a customer's tooltip lives once in the template; each point carries only its short values
# (markup repeated per point would be escaped to \u003cbr\u003e and triple the file for 20k points).
HOVER_TEMPLATE = (
    "<b>customer %{customdata[0]}</b> · cluster %{customdata[1]}<br>risk score %{customdata[2]}"
    "<br>expected %{customdata[3]} · actual %{customdata[4]} · cash %{customdata[5]}"
    "<br>alerts %{customdata[6]} · PEP %{customdata[7]} · CTR %{customdata[8]}<extra>%{fullData.name}</extra>"
)


def hover_fields(points: pd.DataFrame) -> np.ndarray:
    """Per customer the tooltip's values as short strings: id, cluster, risk score, expected / actual / cash
    volume, alerts, PEP, CTR match ("n/a" where unknown)."""
    def value(column: str, money: bool = False) -> list[str]:
        if column not in points.columns:
            return ["n/a"] * len(points)
        codes, distinct = pd.factorize(pd.to_numeric(points[column], errors="coerce"))  # each value written once
        texts = [format_number(v, money=money) for v in distinct.tolist()] + ["n/a"]  # code -1 (missing): n/a
        return [texts[code] for code in codes.tolist()]

    def flag(column: str) -> list[str]:
        if column not in points.columns:
            return ["n/a"] * len(points)
        return ["yes" if v >= 0.5 else "no" for v in flag_values(points[column]).tolist()]

    columns = [
        points["customer_id"].astype(str).tolist(), points["cluster"].astype(str).tolist(),
        [f"{v:.2f}" for v in points["risk_score"].tolist()], value("exp_volume", True), value("actual_volume", True),
        value("cash_usage", True), value("num_alerts"), flag("is_pep"), flag("ctr_match"),
    ]  # fmt: skip
    return np.array(columns, dtype=object).T.reshape(len(points), len(columns))


def pca_scatter_figure(
    segmented: pd.DataFrame,
    centroids: pd.DataFrame,
    *,
    outlier_ids: Sequence[int] = (),
    max_points: int | None = MAX_SCATTER_POINTS,
    seed: int = 0,
    population: Population | None = None,
) -> PointsFigure:
    """Customers on the first two principal components coloured by tier, cluster centroids marked, flagged
    outliers ringed. Beyond ``max_points`` customers a stratified random sample is drawn and the chart says so.
    Each customer's tooltip values (:func:`hover_fields`) are the points' ``customdata``, kept beside the figure.

    ``segmented`` may itself be a sample of the customers: ``population`` then gives the tiers, the cluster tiers
    and the customer count of everyone (by default ``segmented`` is everyone)."""
    population = population or as_population(segmented)
    sample = sample_for_scatter(segmented, max_points, seed)
    figure = go.Figure()
    customdata: dict[int, np.ndarray] = {}
    # WebGL points (one canvas, fast at 20k); the report's plot helper turns them into SVG where WebGL is missing.
    for tier in population.tiers:
        points = sample[sample["risk_tier"] == tier]
        customdata[len(figure.data)] = hover_fields(points)
        figure.add_trace(
            go.Scattergl(
                x=points["pc1"].round(4), y=points["pc2"].round(4), mode="markers", name=f"{tier} risk",
                marker={"color": tier_colour(tier), "size": 5, "opacity": 0.55, "line": {"width": 0}},
                hovertemplate=HOVER_TEMPLATE,
            )
        )  # fmt: skip
    outliers = segmented[segmented["customer_id"].isin(list(outlier_ids))]
    if len(outliers):
        customdata[len(figure.data)] = hover_fields(outliers)
        figure.add_trace(
            go.Scatter(
                x=outliers["pc1"].round(4), y=outliers["pc2"].round(4), mode="markers",
                name=f"flagged outliers ({len(outliers):,})",
                marker={"size": 10, "color": "rgba(0,0,0,0)", "line": {"color": "#111827", "width": 1.5}},
                hovertemplate=HOVER_TEMPLATE,
            )
        )  # fmt: skip
    if len(centroids):
        tiers = population.clusters.set_index("cluster")["risk_tier"]
        text = [f"cluster {int(c)} · {tiers.get(int(c), '')}" for c in centroids["cluster"]]
        figure.add_trace(
            go.Scatter(
                x=centroids["pc1"], y=centroids["pc2"], mode="markers", name="cluster centroids", text=text,
                marker={"symbol": "x-thin", "size": 18, "color": "#111827", "line": {"width": 3, "color": "#111827"}},
                hovertemplate="%{text} centroid<br>PC1 %{x:.2f} · PC2 %{y:.2f}<extra></extra>",
            )
        )  # fmt: skip
        for x, y, name in zip(centroids["pc1"], centroids["pc2"], text, strict=True):
            figure.add_annotation(x=x, y=y, text=name, showarrow=True, arrowhead=0, ax=0, ay=-30,
                                  bgcolor="rgba(255,255,255,0.85)", bordercolor="#111827", borderpad=3,
                                  font={"size": 12, "color": "#111827"})  # fmt: skip
    title = "Customers on the first two principal components, by risk tier"
    if len(sample) < population.customers:
        figure.add_annotation(
            text=f"Showing a random sample of {len(sample):,} of {population.customers:,} customers, stratified by "
            "tier (each tier keeps its share). Centroids and every flagged outlier are shown.",
            xref="paper", yref="paper", x=0, y=1.0, xanchor="left", yanchor="bottom", showarrow=False,
            font={"size": 12, "color": "#92400e"}, bgcolor="#fef3c7", borderpad=4,
        )  # fmt: skip
    figure.update_xaxes(title="PC1", gridcolor=GRID, zerolinecolor="#cbd5e1")
    figure.update_yaxes(title="PC2", gridcolor=GRID, zerolinecolor="#cbd5e1")
    house_style(figure, title, 620, margin={"l": 60, "r": 30, "t": 100, "b": 50},
                legend={"orientation": "h", "yanchor": "top", "y": -0.1, "x": 0})  # fmt: skip
    return PointsFigure(figure, customdata)
