"""The segment report: one self-contained HTML file (plotly.js embedded, opens offline)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from segmentation_pipeline.stages.scoring import SegmentationModel
from segmentation_pipeline.stages.tiering import TIERS

TIER_COLOURS = {"High": "#d62728", "Medium": "#ff7f0e", "Low": "#2ca02c"}
PROFILE_FEATURES = (
    "exp_volume", "actual_volume", "cash_usage", "num_alerts", "non_face_to_face_usage", "online_ft_usage",
    "is_pep", "high_income_hw", "ctr_match", "previously_reported", "age", "tenure_years",
)  # fmt: skip
MAX_SCATTER_POINTS = 20_000


def cluster_profile(customers: pd.DataFrame, assignments: pd.DataFrame) -> pd.DataFrame:
    """Per cluster and key feature: mean, std, min, max (natural units)."""
    columns = [c for c in PROFILE_FEATURES if c in customers.columns]
    joined = customers[["customer_id", *columns]].merge(assignments[["customer_id", "cluster", "risk_tier"]])
    stats = joined.groupby(["cluster", "risk_tier"])[columns].agg(["mean", "std", "min", "max"])
    return stats


def _scatter(model: SegmentationModel, assignments: pd.DataFrame) -> go.Figure:
    sample = assignments
    note = ""
    if len(assignments) > MAX_SCATTER_POINTS:
        sample = assignments.sample(MAX_SCATTER_POINTS, random_state=0)
        note = f" (random sample of {MAX_SCATTER_POINTS:,} of {len(assignments):,} customers)"
    figure = go.Figure()
    for tier in TIERS:
        points = sample[sample["risk_tier"] == tier]
        figure.add_trace(
            go.Scattergl(
                x=points["pc1"],
                y=points["pc2"],
                mode="markers",
                name=tier,
                marker={"color": TIER_COLOURS[tier], "size": 5, "opacity": 0.6},
                customdata=np.column_stack([points["customer_id"], points["cluster"]]),
                hovertemplate="customer %{customdata[0]}<br>cluster %{customdata[1]}<extra>" + tier + "</extra>",
            )
        )
    centres = model.kmeans.cluster_centers_
    figure.add_trace(
        go.Scatter(
            x=centres[:, 0],
            y=centres[:, 1],
            mode="markers+text",
            name="centroids",
            text=[f"cluster {i}" for i in range(len(centres))],
            textposition="top center",
            marker={"symbol": "x", "size": 14, "color": "black"},
        )
    )
    figure.update_layout(title="Customers on the first two principal components" + note, xaxis_title="PC1",
                         yaxis_title="PC2", height=560)
    return figure


def _tier_sizes(assignments: pd.DataFrame) -> go.Figure:
    counts = assignments["risk_tier"].value_counts().reindex(list(TIERS)).fillna(0)
    figure = go.Figure(go.Bar(x=counts.index, y=counts.values, marker_color=[TIER_COLOURS[t] for t in counts.index]))
    figure.update_layout(title="Customers per risk tier", yaxis_title="customers", height=400)
    return figure


def build_segment_report(
    model: SegmentationModel, customers: pd.DataFrame, assignments: pd.DataFrame, *, title: str
) -> str:
    """The report as one HTML string; the first figure carries plotly.js inline so the file opens offline."""
    metrics = model.metrics
    profile = cluster_profile(customers, assignments)
    figures = [_scatter(model, assignments), _tier_sizes(assignments)]
    parts = []
    for index, figure in enumerate(figures):
        parts.append(pio.to_html(figure, full_html=False, include_plotlyjs=(index == 0), div_id=f"figure-{index}"))
    summary = pd.DataFrame(
        {
            "model version": [model.version],
            "customers": [len(assignments)],
            "k": [model.k],
            "silhouette": [round(metrics["silhouette"], 4)],
            "Davies-Bouldin": [round(metrics["davies_bouldin"], 4)],
            "Calinski-Harabasz": [round(metrics["calinski_harabasz"], 1)],
        }
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse;font-size:.85rem}}
td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Overview</h2>{summary.to_html(index=False)}
{''.join(parts)}
<h2>Cluster profiles (mean / std / min / max)</h2>{profile.round(3).to_html()}
</body></html>"""


def write_report(html_text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(html_text, encoding="utf-8")
    temporary.replace(path)  # atomic: a reader never opens half a report
    return path
