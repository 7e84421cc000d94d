"""Profile figures: what distinguishes the tiers (numeric features, flags, gender, categorical mix as treemaps)
and the clusters (standardised means heatmap, profile table).

Every figure here shows counts, shares and statistics of ALL customers: each reads a :class:`Population` (the
figures computed in SQL over everyone) or, given a frame of every customer, computes that first."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmentation_pipeline.reporting.data import FLAG_FEATURES, MONEY_FEATURES, format_number, label, tier_colour
from segmentation_pipeline.reporting.figure_style import GRID, house_style
from segmentation_pipeline.reporting.population import Population, as_population

Customers = pd.DataFrame | Population  # every customer, as a frame or as its population figures

MAX_TREEMAP_LEVELS = 25  # per parent; the rest grouped as "other" so a 500-city export stays legible


# --- numeric features by tier -----------------------------------------------------------------------------------


def numeric_summary_by_tier(segmented: Customers, features: Sequence[str] | None = None) -> pd.DataFrame:
    """Per tier and feature: count, mean, std, median, 25th and 75th percentile (natural units)."""
    population = as_population(segmented)
    summary = population.numeric_summary
    if features is None:
        return summary
    return summary[summary["feature"].isin(list(features))].reset_index(drop=True)


def numeric_bars_figure(segmented: Customers, features: Sequence[str] | None = None) -> go.Figure:
    """One panel per numeric feature: the mean per tier, whiskers one standard deviation (clipped at zero)."""
    population = as_population(segmented)
    features = list(features) if features is not None else population.numeric_features
    summary = numeric_summary_by_tier(population, features)
    columns = 4 if len(features) > 4 else max(len(features), 1)
    rows = max(1, math.ceil(len(features) / columns))
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[label(f) for f in features],
                           horizontal_spacing=0.07, vertical_spacing=0.16)  # fmt: skip
    for index, feature in enumerate(features):
        part = summary[summary["feature"] == feature]
        row, col = index // columns + 1, index % columns + 1
        money = feature in MONEY_FEATURES
        figure.add_trace(
            go.Bar(
                x=part["risk_tier"], y=part["mean"], marker_color=[tier_colour(t) for t in part["risk_tier"]],
                error_y={"type": "data", "array": part["std"], "arrayminus": np.minimum(part["std"], part["mean"]),
                         "color": "#374151", "thickness": 1.2, "width": 4},
                hovertext=[
                    f"<b>{label(feature)} · {r.risk_tier}</b><br>mean {format_number(r.mean, money=money)}"
                    f"<br>median {format_number(r.median, money=money)}<br>std {format_number(r.std, money=money)}"
                    f"<br>IQR {format_number(r.p25, money=money)} – {format_number(r.p75, money=money)}"
                    f"<br>{r.count:,} customers with a value"
                    for r in part.itertuples()
                ],
                hoverinfo="text", showlegend=False, name=label(feature),
            ),
            row=row, col=col,
        )  # fmt: skip
    figure.update_yaxes(gridcolor=GRID, rangemode="tozero")
    figure.update_annotations(font={"size": 12})
    title = "Numeric features by tier: mean (bar) ± one standard deviation (whisker)"
    return house_style(figure, title, 300 * rows + 80)


def numeric_lines_figure(segmented: Customers, features: Sequence[str] | None = None) -> go.Figure:
    """Every numeric feature across tiers on one chart: the tier mean as a multiple of the population mean
    (1 = average customer), so money, counts and years share an axis."""
    figures = as_population(segmented)
    features = list(features) if features is not None else figures.numeric_features
    summary = numeric_summary_by_tier(figures, features)
    figure = go.Figure()
    palette = ["#1f6fb2", "#c62828", "#ef8f00", "#2e7d32", "#6a1b9a", "#00838f", "#5d4037", "#546e7a"]
    for index, feature in enumerate(features):
        population = figures.numeric_means.get(feature, math.nan)
        part = summary[summary["feature"] == feature]
        if not population or not np.isfinite(population):
            continue
        ratio = part["mean"] / population
        money = feature in MONEY_FEATURES
        figure.add_trace(
            go.Scatter(
                x=part["risk_tier"], y=ratio, mode="lines+markers", name=label(feature),
                line={"width": 2.5, "color": palette[index % len(palette)]}, marker={"size": 8},
                hovertext=[f"<b>{label(feature)} · {t}</b><br>mean {format_number(m, money=money)}"
                           f" = {r:.2f}× the population mean ({format_number(population, money=money)})"
                           for t, m, r in zip(part["risk_tier"], part["mean"], ratio, strict=True)],
                hoverinfo="text",
            )
        )  # fmt: skip
    figure.add_hline(y=1, line={"color": "#9ca3af", "dash": "dash"}, annotation_text="population average",
                     annotation_position="bottom right")  # fmt: skip
    figure.update_yaxes(type="log", title="tier mean ÷ population mean (log scale)", gridcolor=GRID)
    figure.update_xaxes(title="risk tier", gridcolor=GRID)
    return house_style(figure, "Numeric features across tiers, relative to the average customer", 460,
                       legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
                       margin={"l": 70, "r": 30, "t": 60, "b": 50})  # fmt: skip


# --- flags and gender -------------------------------------------------------------------------------------------


def flag_shares_by_tier(segmented: Customers) -> pd.DataFrame:
    """Per tier and flag: customers flagged, tier size and the share flagged (a missing flag counts as 0)."""
    return as_population(segmented).flag_counts


def flags_figure(segmented: Customers) -> go.Figure:
    """Share of each tier carrying each risk flag (PEP, high-net-worth housewife, CTR match, previously reported)."""
    population = as_population(segmented)
    shares = flag_shares_by_tier(population)
    figure = go.Figure()
    for tier in population.tiers:
        part = shares[shares["risk_tier"] == tier]
        figure.add_trace(
            go.Bar(
                x=[FLAG_FEATURES.get(f, f) for f in part["flag"]], y=part["share"] * 100, name=f"{tier} risk",
                marker_color=tier_colour(tier), text=[f"{s:.1%}" for s in part["share"]], textposition="outside",
                customdata=np.column_stack([part["flagged"], part["customers"]]),
                hovertemplate=f"{tier}: %{{customdata[0]:,}} of %{{customdata[1]:,}} (%{{y:.1f}}%)"
                "<extra>%{x}</extra>",
            )
        )  # fmt: skip
    figure.update_yaxes(title="% of the tier's customers", ticksuffix="%", gridcolor=GRID, rangemode="tozero")
    return house_style(figure, "Risk flags by tier", 400, barmode="group")


def category_shares_by_tier(segmented: Customers, column: str) -> pd.DataFrame:
    """Per tier and level of a categorical column: customers and share of the tier."""
    population = as_population(segmented, (column,))
    counts = population.level_counts((column,)).rename(columns={column: "level"})
    counts = counts.groupby(["risk_tier", "level"])["customers"].sum().reset_index()
    counts["share"] = counts["customers"] / counts.groupby("risk_tier")["customers"].transform("sum")
    order = {t: i for i, t in enumerate(population.tiers)}
    return counts.sort_values(["risk_tier", "customers"], key=lambda s: s.map(order) if s.name == "risk_tier" else -s)


def gender_figure(segmented: Customers) -> go.Figure:
    """Gender mix of each tier (100% stacked bars, counts on hover)."""
    population = as_population(segmented)
    shares = category_shares_by_tier(population, "gender")
    names = {"M": "male", "F": "female"}
    colours = {"M": "#455a64", "F": "#9c6ade"}
    figure = go.Figure()
    for level in sorted(shares["level"].unique(), key=lambda v: (v not in names, v)):
        part = shares[shares["level"] == level].set_index("risk_tier").reindex(population.tiers)
        figure.add_trace(
            go.Bar(
                y=part.index, x=part["share"].fillna(0) * 100, orientation="h", name=names.get(level, level),
                marker_color=colours.get(level, "#cbd5e1"), text=[f"{s:.0%}" for s in part["share"].fillna(0)],
                textposition="inside", customdata=part["customers"].fillna(0).astype(int),
                hovertemplate="%{y}: %{customdata:,} customers (%{x:.1f}%)<extra>" + names.get(level, level)
                + "</extra>",
            )
        )  # fmt: skip
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(ticksuffix="%", range=[0, 100], gridcolor=GRID)
    return house_style(figure, "Gender by tier", 260, barmode="stack", margin={"l": 80, "r": 30, "t": 70, "b": 40})


# --- treemaps ---------------------------------------------------------------------------------------------------


def _tint(hex_colour: str, white: float) -> str:
    """The colour mixed with ``white`` (0..1) of white: opaque, so nested treemap boxes stay distinguishable."""
    value = hex_colour.lstrip("#")
    r, g, b = (round(int(value[i : i + 2], 16) * (1 - white) + 255 * white) for i in (0, 2, 4))
    return f"rgb({r},{g},{b})"


def _limit_levels(counts: pd.Series, limit: int) -> pd.Series:
    """The ``limit`` largest levels, the rest summed as "other (n levels)"."""
    counts = counts.sort_values(ascending=False)
    if len(counts) <= limit:
        return counts
    head, tail = counts.iloc[: limit - 1], counts.iloc[limit - 1 :]
    return pd.concat([head, pd.Series({f"other ({len(tail)} levels)": int(tail.sum())})])


def treemap_nodes(segmented: Customers, path: Sequence[str]) -> pd.DataFrame:
    """Treemap nodes (id, parent, label, value, tier, depth) for tier -> path[0] -> path[1] ...: every
    customer counted once, so a tier's node value is its customer count and children sum to their parent."""
    path = list(path)
    population = as_population(segmented, path)
    frame = population.level_counts(path)
    nodes = [{"id": "all", "parent": "", "label": "All customers", "value": population.customers, "tier": "",
              "depth": 0}]  # fmt: skip

    def add_children(group: pd.DataFrame, parent_id: str, tier: str, level: int) -> None:
        if level >= len(path):
            return
        column = path[level]
        counts = _limit_levels(group.groupby(column)["customers"].sum(), MAX_TREEMAP_LEVELS)
        for name, value in counts.items():
            node_id = f"{parent_id}/{name}"
            nodes.append({"id": node_id, "parent": parent_id, "label": str(name), "value": int(value), "tier": tier,
                          "depth": level + 2})  # fmt: skip
            if level + 1 < len(path):
                members = group[group[column] == name] if not str(name).startswith("other (") else group.iloc[0:0]
                add_children(members, node_id, tier, level + 1)

    for tier in population.tiers:
        group = frame[frame["risk_tier"] == tier]
        nodes.append({"id": tier, "parent": "all", "label": f"{tier} risk", "value": int(group["customers"].sum()),
                      "tier": tier, "depth": 1})  # fmt: skip
        add_children(group, tier, tier, 0)
    return pd.DataFrame(nodes)


def treemap_figure(segmented: Customers, path: Sequence[str], title: str) -> go.Figure:
    """Distribution of one categorical (or a hierarchy, e.g. province -> city) within each tier."""
    nodes = treemap_nodes(segmented, path)
    colours = []
    for node in nodes.itertuples():
        if node.depth == 0:
            colours.append("#f3f4f6")
        else:
            white = {1: 0.0, 2: 0.55}.get(node.depth, 0.78)  # deeper levels lighter, dark text stays legible
            colours.append(_tint(tier_colour(node.tier), white))
    figure = go.Figure(
        go.Treemap(
            ids=nodes["id"], parents=nodes["parent"], labels=nodes["label"], values=nodes["value"],
            branchvalues="total", marker={"colors": colours, "line": {"color": "white", "width": 1}},
            texttemplate="<b>%{label}</b><br>%{value:,} · %{percentParent:.1%}",
            hovertemplate="<b>%{label}</b><br>%{value:,} customers<br>%{percentParent:.1%} of %{parent}"
            "<br>%{percentRoot:.1%} of all customers<extra></extra>",
            maxdepth=len(path) + 2, pathbar={"visible": True}, tiling={"pad": 2},
        )
    )  # fmt: skip
    return house_style(figure, title, 560, margin={"l": 10, "r": 10, "t": 50, "b": 10})


# --- cluster profiles -------------------------------------------------------------------------------------------


def cluster_labels(segmented: Customers) -> pd.Series:
    """"cluster 0 · High (306)" per cluster, indexed by cluster (its tier: that of its first customer by id)."""
    clusters = as_population(segmented).clusters
    return pd.Series({int(c): f"cluster {int(c)} · {t} ({n:,})"
                      for c, t, n in zip(clusters["cluster"], clusters["risk_tier"], clusters["customers"],
                                         strict=True)})  # fmt: skip


def profile_features(segmented: Customers) -> list[str]:
    """Numeric features then flags: what the heatmap and the profile table show."""
    population = as_population(segmented)
    return population.numeric_features + population.flag_features


def standardised_cluster_means(segmented: Customers) -> pd.DataFrame:
    """Cluster x feature: mean of the population z-score (money and counts on log1p) — how many standard
    deviations a cluster's typical customer sits above (+) or below (−) the average customer."""
    return as_population(segmented).standardised_cluster_means.rename_axis("cluster")


def cluster_heatmap_figure(segmented: Customers) -> go.Figure:
    """Heatmap of standardised cluster means (red above average, blue below)."""
    population = as_population(segmented)
    means = standardised_cluster_means(population)
    labels = cluster_labels(population).reindex(means.index)
    limit = float(np.nanmax(np.abs(means.to_numpy()))) if means.size else 1.0
    limit = max(min(limit, 3.0), 0.5)
    figure = go.Figure(
        go.Heatmap(
            z=means.to_numpy().round(3), x=[label(c) for c in means.columns], y=labels.tolist(),
            colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit, text=means.round(2).to_numpy(),
            texttemplate="%{text:+.2f}", textfont={"size": 11}, xgap=2, ygap=2,
            colorbar={"title": {"text": "std. dev.<br>from mean"}, "thickness": 14},
            hovertemplate="%{y}<br>%{x}: %{z:+.2f} std. dev. from the population mean<extra></extra>",
        )
    )  # fmt: skip
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(tickangle=-30)
    return house_style(figure, "Standardised cluster means (money and counts on a log scale)", 160 + 48 * len(means),
                       margin={"l": 170, "r": 30, "t": 60, "b": 120})  # fmt: skip


def cluster_profile_table(segmented: Customers) -> pd.DataFrame:
    """Per feature (rows) and cluster (column groups): mean, std, min, max in natural units."""
    population = as_population(segmented)
    features = profile_features(population)
    stats = population.cluster_stats
    labels = cluster_labels(population)
    table = stats.T.unstack(level=1)  # rows: feature; columns: (cluster, stat)
    table = table.reindex(features)
    table.columns = pd.MultiIndex.from_tuples([(labels[int(c)], s) for c, s in table.columns])
    table.index = [label(f) for f in features]
    return table
