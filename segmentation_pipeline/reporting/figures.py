"""The report's figures: one function per figure, each built from plain DataFrames and returning a plotly Figure.

Where a figure shows computed numbers, the computation is a separate public function (``*_by_tier``,
``standardised_cluster_means``, ...) so tests can check the data without parsing a figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmentation_pipeline.reporting.data import (
    FLAG_FEATURES,
    MONEY_FEATURES,
    categorical,
    channel_combination,
    flag_features,
    flag_values,
    format_number,
    label,
    numeric_features,
    standardise,
    tier_colour,
    tiers_present,
)

MAX_SCATTER_POINTS = 20_000
FONT = '-apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
GRID = "#e6e9ef"
MAX_TREEMAP_LEVELS = 25  # per parent; the rest grouped as "other" so a 500-city export stays legible


def _style(figure: go.Figure, title: str, height: int, **layout: object) -> go.Figure:
    """The house style: white, system font, left-aligned title, compact margins."""
    settings: dict[str, object] = {
        "template": "plotly_white",
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        "font": {"family": FONT, "size": 12, "color": "#1f2937"},
        "height": height,
        "margin": {"l": 60, "r": 30, "t": 70, "b": 50},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
        "hoverlabel": {"font": {"family": FONT}},
    }
    settings.update(layout)  # a figure's own margin/legend replaces the house default
    figure.update_layout(**settings)
    return figure


def _tier_counts(segmented: pd.DataFrame) -> pd.Series:
    tiers = tiers_present(segmented)
    return segmented["risk_tier"].astype(str).value_counts().reindex(tiers).fillna(0).astype(int)


# --- overview ---------------------------------------------------------------------------------------------------


def tier_sizes_figure(segmented: pd.DataFrame) -> go.Figure:
    """Customers per risk tier, with each tier's share."""
    counts = _tier_counts(segmented)
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
    return _style(figure, "Customers per risk tier", 260, showlegend=False, margin={"l": 80, "r": 30, "t": 50, "b": 45})


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
    return _style(figure, "Choice of k: silhouette and inertia (elbow) over the k range tried", 400,
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
        return [format_number(v, money=money) for v in pd.to_numeric(points[column], errors="coerce").tolist()]

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
) -> go.Figure:
    """Customers on the first two principal components coloured by tier, cluster centroids marked, flagged
    outliers ringed. Beyond ``max_points`` customers a stratified random sample is drawn and the chart says so."""
    sample = sample_for_scatter(segmented, max_points, seed)
    figure = go.Figure()
    # WebGL points (one canvas, fast at 20k); the report's plot helper turns them into SVG where WebGL is missing.
    for tier in tiers_present(segmented):
        points = sample[sample["risk_tier"] == tier]
        figure.add_trace(
            go.Scattergl(
                x=points["pc1"].round(4), y=points["pc2"].round(4), mode="markers", name=f"{tier} risk",
                marker={"color": tier_colour(tier), "size": 5, "opacity": 0.55, "line": {"width": 0}},
                customdata=hover_fields(points), hovertemplate=HOVER_TEMPLATE,
            )
        )  # fmt: skip
    outliers = segmented[segmented["customer_id"].isin(list(outlier_ids))]
    if len(outliers):
        figure.add_trace(
            go.Scatter(
                x=outliers["pc1"].round(4), y=outliers["pc2"].round(4), mode="markers",
                name=f"flagged outliers ({len(outliers):,})",
                marker={"size": 10, "color": "rgba(0,0,0,0)", "line": {"color": "#111827", "width": 1.5}},
                customdata=hover_fields(outliers), hovertemplate=HOVER_TEMPLATE,
            )
        )  # fmt: skip
    if len(centroids):
        tiers = segmented.groupby("cluster")["risk_tier"].first()
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
    if len(sample) < len(segmented):
        figure.add_annotation(
            text=f"Showing a random sample of {len(sample):,} of {len(segmented):,} customers, stratified by tier "
            "(each tier keeps its share). Centroids and outliers are exact.",
            xref="paper", yref="paper", x=0, y=1.0, xanchor="left", yanchor="bottom", showarrow=False,
            font={"size": 12, "color": "#92400e"}, bgcolor="#fef3c7", borderpad=4,
        )  # fmt: skip
    figure.update_xaxes(title="PC1", gridcolor=GRID, zerolinecolor="#cbd5e1")
    figure.update_yaxes(title="PC2", gridcolor=GRID, zerolinecolor="#cbd5e1")
    return _style(figure, title, 620, margin={"l": 60, "r": 30, "t": 100, "b": 50},
                  legend={"orientation": "h", "yanchor": "top", "y": -0.1, "x": 0})  # fmt: skip


# --- numeric features by tier -----------------------------------------------------------------------------------


def numeric_summary_by_tier(segmented: pd.DataFrame, features: Sequence[str] | None = None) -> pd.DataFrame:
    """Per tier and feature: count, mean, std, median, 25th and 75th percentile (natural units)."""
    features = list(features) if features is not None else numeric_features(segmented)
    rows = []
    tiers = segmented["risk_tier"].astype(str)
    for tier in tiers_present(segmented):
        group = segmented[tiers == tier]
        for feature in features:
            values = pd.to_numeric(group[feature], errors="coerce").dropna()
            rows.append(
                {
                    "risk_tier": tier, "feature": feature, "count": int(len(values)),
                    "mean": float(values.mean()) if len(values) else math.nan,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "median": float(values.median()) if len(values) else math.nan,
                    "p25": float(values.quantile(0.25)) if len(values) else math.nan,
                    "p75": float(values.quantile(0.75)) if len(values) else math.nan,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def numeric_bars_figure(segmented: pd.DataFrame, features: Sequence[str] | None = None) -> go.Figure:
    """One panel per numeric feature: the mean per tier, whiskers one standard deviation (clipped at zero)."""
    features = list(features) if features is not None else numeric_features(segmented)
    summary = numeric_summary_by_tier(segmented, features)
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
    return _style(figure, "Numeric features by tier: mean (bar) ± one standard deviation (whisker)", 300 * rows + 80)


def numeric_lines_figure(segmented: pd.DataFrame, features: Sequence[str] | None = None) -> go.Figure:
    """Every numeric feature across tiers on one chart: the tier mean as a multiple of the population mean
    (1 = average customer), so money, counts and years share an axis."""
    features = list(features) if features is not None else numeric_features(segmented)
    summary = numeric_summary_by_tier(segmented, features)
    figure = go.Figure()
    palette = ["#1f6fb2", "#c62828", "#ef8f00", "#2e7d32", "#6a1b9a", "#00838f", "#5d4037", "#546e7a"]
    for index, feature in enumerate(features):
        population = pd.to_numeric(segmented[feature], errors="coerce").mean()
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
    return _style(figure, "Numeric features across tiers, relative to the average customer", 460,
                  legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
                  margin={"l": 70, "r": 30, "t": 60, "b": 50})  # fmt: skip


# --- flags and gender -------------------------------------------------------------------------------------------


def flag_shares_by_tier(segmented: pd.DataFrame) -> pd.DataFrame:
    """Per tier and flag: customers flagged, tier size and the share flagged (a missing flag counts as 0)."""
    rows = []
    tiers = segmented["risk_tier"].astype(str)
    for tier in tiers_present(segmented):
        group = segmented[tiers == tier]
        for flag in flag_features(segmented):
            flagged = int((flag_values(group[flag]) >= 0.5).sum())
            rows.append({"risk_tier": tier, "flag": flag, "flagged": flagged, "customers": len(group),
                         "share": flagged / len(group) if len(group) else math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=["risk_tier", "flag", "flagged", "customers", "share"])


def flags_figure(segmented: pd.DataFrame) -> go.Figure:
    """Share of each tier carrying each risk flag (PEP, high-net-worth housewife, CTR match, previously reported)."""
    shares = flag_shares_by_tier(segmented)
    figure = go.Figure()
    for tier in tiers_present(segmented):
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
    return _style(figure, "Risk flags by tier", 400, barmode="group")


def category_shares_by_tier(segmented: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per tier and level of a categorical column: customers and share of the tier."""
    frame = pd.DataFrame({"risk_tier": segmented["risk_tier"].astype(str), "level": categorical(segmented[column])})
    counts = frame.groupby(["risk_tier", "level"]).size().rename("customers").reset_index()
    counts["share"] = counts["customers"] / counts.groupby("risk_tier")["customers"].transform("sum")
    order = {t: i for i, t in enumerate(tiers_present(segmented))}
    return counts.sort_values(["risk_tier", "customers"], key=lambda s: s.map(order) if s.name == "risk_tier" else -s)


def gender_figure(segmented: pd.DataFrame) -> go.Figure:
    """Gender mix of each tier (100% stacked bars, counts on hover)."""
    shares = category_shares_by_tier(segmented, "gender")
    names = {"M": "male", "F": "female"}
    colours = {"M": "#455a64", "F": "#9c6ade"}
    figure = go.Figure()
    for level in sorted(shares["level"].unique(), key=lambda v: (v not in names, v)):
        part = shares[shares["level"] == level].set_index("risk_tier").reindex(tiers_present(segmented))
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
    return _style(figure, "Gender by tier", 260, barmode="stack", margin={"l": 80, "r": 30, "t": 70, "b": 40})


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


def treemap_nodes(segmented: pd.DataFrame, path: Sequence[str]) -> pd.DataFrame:
    """Treemap nodes (id, parent, label, value, tier, depth) for tier -> path[0] -> path[1] ...: every
    customer counted once, so a tier's node value is its customer count and children sum to their parent."""
    frame = pd.DataFrame({"risk_tier": segmented["risk_tier"].astype(str)})
    for column in path:
        if column == "subscribed_channels":
            frame[column] = segmented[column].map(channel_combination)
        else:
            frame[column] = categorical(segmented[column])
    total = len(frame)
    nodes = [{"id": "all", "parent": "", "label": "All customers", "value": total, "tier": "", "depth": 0}]

    def add_children(group: pd.DataFrame, parent_id: str, tier: str, level: int) -> None:
        if level >= len(path):
            return
        column = path[level]
        counts = _limit_levels(group[column].value_counts(), MAX_TREEMAP_LEVELS)
        for name, value in counts.items():
            node_id = f"{parent_id}/{name}"
            nodes.append({"id": node_id, "parent": parent_id, "label": str(name), "value": int(value), "tier": tier,
                          "depth": level + 2})  # fmt: skip
            if level + 1 < len(path):
                members = group[group[column] == name] if not str(name).startswith("other (") else group.iloc[0:0]
                add_children(members, node_id, tier, level + 1)

    for tier in tiers_present(segmented):
        group = frame[frame["risk_tier"] == tier]
        nodes.append({"id": tier, "parent": "all", "label": f"{tier} risk", "value": len(group), "tier": tier,
                      "depth": 1})  # fmt: skip
        add_children(group, tier, tier, 0)
    return pd.DataFrame(nodes)


def treemap_figure(segmented: pd.DataFrame, path: Sequence[str], title: str) -> go.Figure:
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
    return _style(figure, title, 560, margin={"l": 10, "r": 10, "t": 50, "b": 10})


# --- cluster profiles -------------------------------------------------------------------------------------------


def cluster_labels(segmented: pd.DataFrame) -> pd.Series:
    """"cluster 0 · High (306)" per cluster, indexed by cluster."""
    groups = segmented.groupby("cluster")
    tiers = groups["risk_tier"].first()
    sizes = groups.size()
    return pd.Series({int(c): f"cluster {int(c)} · {tiers[c]} ({sizes[c]:,})" for c in tiers.index})


def profile_features(segmented: pd.DataFrame) -> list[str]:
    """Numeric features then flags: what the heatmap and the profile table show."""
    return numeric_features(segmented) + flag_features(segmented)


def standardised_cluster_means(segmented: pd.DataFrame) -> pd.DataFrame:
    """Cluster x feature: mean of the population z-score (money and counts on log1p) — how many standard
    deviations a cluster's typical customer sits above (+) or below (−) the average customer."""
    features = profile_features(segmented)
    z = pd.DataFrame({f: standardise(segmented[f], f) for f in features}, index=segmented.index)
    return z.groupby(segmented["cluster"].to_numpy()).mean().rename_axis("cluster")


def cluster_heatmap_figure(segmented: pd.DataFrame) -> go.Figure:
    """Heatmap of standardised cluster means (red above average, blue below)."""
    means = standardised_cluster_means(segmented)
    labels = cluster_labels(segmented).reindex(means.index)
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
    return _style(figure, "Standardised cluster means (money and counts on a log scale)", 160 + 48 * len(means),
                  margin={"l": 170, "r": 30, "t": 60, "b": 120})  # fmt: skip


def cluster_profile_table(segmented: pd.DataFrame) -> pd.DataFrame:
    """Per feature (rows) and cluster (column groups): mean, std, min, max in natural units."""
    features = profile_features(segmented)
    values = segmented[features].apply(pd.to_numeric, errors="coerce")
    stats = values.groupby(segmented["cluster"].to_numpy()).agg(["mean", "std", "min", "max"])
    labels = cluster_labels(segmented)
    table = stats.T.unstack(level=1)  # rows: feature; columns: (cluster, stat)
    table = table.reindex(features)
    table.columns = pd.MultiIndex.from_tuples([(labels[int(c)], s) for c, s in table.columns])
    table.index = [label(f) for f in features]
    return table


# --- migration and drift ----------------------------------------------------------------------------------------

PSI_WARN, PSI_ALERT = 0.1, 0.25  # the usual PSI reading: < 0.1 stable, 0.1-0.25 watch, > 0.25 shifted


def migration_matrix(migrations: pd.DataFrame, current: pd.DataFrame | None = None) -> pd.DataFrame:
    """Customers by previous tier (rows) and current tier (columns).

    ``migrations`` lists the customers whose tier changed (old_tier, new_tier); with ``current`` (customer_id,
    risk_tier of every current customer) the diagonal is filled with the customers who did not move."""
    moved = migrations[migrations["old_tier"].astype(str) != migrations["new_tier"].astype(str)]
    matrix = pd.crosstab(moved["old_tier"].astype(str), moved["new_tier"].astype(str))
    tiers = [t for t in ("High", "Medium", "Low") if t in set(matrix.index) | set(matrix.columns)]
    if current is not None:
        stayed = current[~current["customer_id"].isin(moved["customer_id"])]["risk_tier"].astype(str).value_counts()
        tiers = [t for t in ("High", "Medium", "Low") if t in set(tiers) | set(stayed.index)]
    extra = sorted((set(matrix.index) | set(matrix.columns)) - set(tiers))
    order = tiers + extra
    matrix = matrix.reindex(index=order, columns=order, fill_value=0)
    if current is not None:
        for tier in order:
            matrix.loc[tier, tier] = int(stayed.get(tier, 0))
    return matrix.astype(int).rename_axis(index="previous", columns="current")


def migration_matrix_figure(migrations: pd.DataFrame, current: pd.DataFrame | None = None, *,
                            old_version: str = "", new_version: str = "") -> go.Figure:  # fmt: skip
    """Tier migration matrix: counts and share of the previous tier, colour by share."""
    matrix = migration_matrix(migrations, current)
    shares = matrix.div(matrix.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    text = [[f"{matrix.iat[i, j]:,}<br>({shares.iat[i, j]:.1%})" for j in range(matrix.shape[1])]
            for i in range(matrix.shape[0])]  # fmt: skip
    figure = go.Figure(
        go.Heatmap(
            z=shares.to_numpy(), x=[f"now {c}" for c in matrix.columns], y=[f"was {r}" for r in matrix.index],
            text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, xgap=2, ygap=2,
            colorbar={"title": {"text": "share of<br>previous tier"}, "tickformat": ".0%", "thickness": 14},
            hovertemplate="%{y} → %{x}<br>%{text}<extra></extra>",
        )
    )  # fmt: skip
    figure.update_yaxes(autorange="reversed")
    versions = f"<br><sup>{old_version} → {new_version}</sup>" if old_version and new_version else ""
    return _style(figure, f"Tier migration since the previous assignments{versions}", 200 + 70 * len(matrix),
                  margin={"l": 110, "r": 30, "t": 80, "b": 50})  # fmt: skip


def drift_measures(stability: pd.DataFrame) -> pd.DataFrame:
    """The newest stability figures as rows (metric "ari" / "psi", subject, value).

    Reads the long format (metric, feature, value: one row per figure) as it is, and a wide table (one numeric
    column per ARI / PSI figure) from its newest row."""
    frame = stability.copy()
    for column in ("created_at", "computed_at", "evaluated_at"):
        if column in frame.columns:
            frame = frame.sort_values(column, kind="stable")
            break
    columns = ["metric", "subject", "value"]
    if not len(frame):
        return pd.DataFrame(columns=columns)
    if "metric" in frame.columns and "value" in frame.columns:
        run_column = next((c for c in ("run_id", "model_version") if c in frame.columns), None)
        if run_column is not None:
            frame = frame[frame[run_column] == frame[run_column].iloc[-1]]
        subject = frame["feature"] if "feature" in frame.columns else frame["metric"]
        out = pd.DataFrame({"metric": frame["metric"].astype(str).str.lower().to_numpy(),
                            "subject": subject.astype(str).to_numpy(),
                            "value": pd.to_numeric(frame["value"], errors="coerce").to_numpy()})  # fmt: skip
        return out.dropna(subset=["value"]).reset_index(drop=True)
    latest = frame.iloc[-1]
    rows = []
    for column in frame.columns:
        name = str(column).lower()
        metric = "ari" if "ari" in name else "psi" if "psi" in name else None
        if metric and pd.api.types.is_numeric_dtype(frame[column]) and pd.notna(latest[column]):
            rows.append({"metric": metric, "subject": str(column), "value": float(latest[column])})
    return pd.DataFrame(rows, columns=columns)


def drift_figure(stability: pd.DataFrame) -> go.Figure:
    """ARI between the previous and the current clustering, and PSI of the tier mix and each tracked input
    against the previous model's population, with the PSI thresholds drawn."""
    measures = drift_measures(stability)
    psi = measures[measures["metric"] == "psi"].sort_values("value", ascending=False)
    other = measures[measures["metric"] != "psi"]
    titles = ["Agreement with previous clustering (ARI, 1 = identical)", "Population stability index (PSI)"]
    figure = make_subplots(rows=1, cols=2, column_widths=[0.25, 0.75], horizontal_spacing=0.1, subplot_titles=titles)
    if len(other):
        figure.add_trace(
            go.Bar(x=[f"{m.upper()} · {s}" for m, s in zip(other["metric"], other["subject"], strict=True)],
                   y=other["value"], marker_color="#1f6fb2", text=other["value"].round(3), textposition="outside",
                   showlegend=False, hovertemplate="%{x}: %{y:.3f}<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
        figure.update_yaxes(range=[min(0.0, float(other["value"].min())), 1.15], row=1, col=1, gridcolor=GRID)
    if len(psi):
        colours = ["#2e7d32" if v < PSI_WARN else "#ef8f00" if v < PSI_ALERT else "#c62828" for v in psi["value"]]
        figure.add_trace(
            go.Bar(x=[label(s) for s in psi["subject"]], y=psi["value"], marker_color=colours,
                   text=psi["value"].round(3), textposition="outside", showlegend=False,
                   hovertemplate="%{x}: PSI %{y:.3f}<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
        for threshold, colour, text in ((PSI_WARN, "#ef8f00", "watch"), (PSI_ALERT, "#c62828", "shifted")):
            figure.add_hline(y=threshold, line={"color": colour, "dash": "dash", "width": 1}, row=1, col=2,
                             annotation_text=text, annotation_position="top right")  # fmt: skip
        top = max(float(psi["value"].max()) * 1.2, PSI_ALERT * 1.3)
        figure.update_yaxes(gridcolor=GRID, range=[0, top], row=1, col=2)
    figure.update_annotations(font={"size": 12})
    return _style(figure, "Drift against the previous model", 420)
