"""Stability figures: tier migration since the previous assignments, and drift (ARI, PSI) against the previous
model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmentation_pipeline.reporting.data import label
from segmentation_pipeline.reporting.figure_style import GRID, house_style

PSI_WARN, PSI_ALERT = 0.1, 0.25  # the usual PSI reading: < 0.1 stable, 0.1-0.25 watch, > 0.25 shifted


def migration_matrix(migrations: pd.DataFrame, current: pd.DataFrame | pd.Series | None = None) -> pd.DataFrame:
    """Customers by previous tier (rows) and current tier (columns).

    ``migrations`` lists the customers whose tier changed (old_tier, new_tier: a mover's current tier); with
    ``current`` (customer_id, risk_tier of every current customer, or the current customers per tier) the diagonal
    is filled with the customers who did not move."""
    moved = migrations[migrations["old_tier"].astype(str) != migrations["new_tier"].astype(str)]
    matrix = pd.crosstab(moved["old_tier"].astype(str), moved["new_tier"].astype(str))
    tiers = [t for t in ("High", "Medium", "Low") if t in set(matrix.index) | set(matrix.columns)]
    if current is not None:
        counts = current if isinstance(current, pd.Series) else current["risk_tier"].astype(str).value_counts()
        stayed = counts.sub(moved["new_tier"].astype(str).value_counts(), fill_value=0).astype(int)
        tiers = [t for t in ("High", "Medium", "Low") if t in set(tiers) | set(stayed.index)]
    extra = sorted((set(matrix.index) | set(matrix.columns)) - set(tiers))
    order = tiers + extra
    matrix = matrix.reindex(index=order, columns=order, fill_value=0)
    if current is not None:
        for tier in order:
            matrix.loc[tier, tier] = int(stayed.get(tier, 0))
    return matrix.astype(int).rename_axis(index="previous", columns="current")


def migration_matrix_figure(migrations: pd.DataFrame, current: pd.DataFrame | pd.Series | None = None, *,
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
    return house_style(figure, f"Tier migration since the previous assignments{versions}", 200 + 70 * len(matrix),
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
    return house_style(figure, "Drift against the previous model", 420)
