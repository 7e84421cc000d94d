"""The report's figures: one function per figure, each built from plain DataFrames and returning a plotly Figure.

Where a figure shows computed numbers, the computation is a separate public function (``*_by_tier``,
``standardised_cluster_means``, ...) so tests can check the data without parsing a figure.

This module is the one import point; the figures live in ``figures_overview`` (tier sizes, choice of k, PCA map),
``figures_profiles`` (tier and cluster profiles: numeric features, flags, gender, treemaps, heatmap, profile table)
and ``figures_stability`` (tier migration, drift), all drawn in the house style of ``figure_style``.
"""

from __future__ import annotations

from segmentation_pipeline.reporting.figure_style import FONT, GRID
from segmentation_pipeline.reporting.figures_overview import (
    HOVER_TEMPLATE,
    MAX_SCATTER_POINTS,
    hover_fields,
    k_choice_figure,
    pca_scatter_figure,
    sample_for_scatter,
    tier_sizes_figure,
)
from segmentation_pipeline.reporting.figures_profiles import (
    MAX_TREEMAP_LEVELS,
    category_shares_by_tier,
    cluster_heatmap_figure,
    cluster_labels,
    cluster_profile_table,
    flag_shares_by_tier,
    flags_figure,
    gender_figure,
    numeric_bars_figure,
    numeric_lines_figure,
    numeric_summary_by_tier,
    profile_features,
    standardised_cluster_means,
    treemap_figure,
    treemap_nodes,
)
from segmentation_pipeline.reporting.figures_stability import (
    PSI_ALERT,
    PSI_WARN,
    drift_figure,
    drift_measures,
    migration_matrix,
    migration_matrix_figure,
)

__all__ = [
    "FONT",
    "GRID",
    "HOVER_TEMPLATE",
    "MAX_SCATTER_POINTS",
    "MAX_TREEMAP_LEVELS",
    "PSI_ALERT",
    "PSI_WARN",
    "category_shares_by_tier",
    "cluster_heatmap_figure",
    "cluster_labels",
    "cluster_profile_table",
    "drift_figure",
    "drift_measures",
    "flag_shares_by_tier",
    "flags_figure",
    "gender_figure",
    "hover_fields",
    "k_choice_figure",
    "migration_matrix",
    "migration_matrix_figure",
    "numeric_bars_figure",
    "numeric_lines_figure",
    "numeric_summary_by_tier",
    "pca_scatter_figure",
    "profile_features",
    "sample_for_scatter",
    "standardised_cluster_means",
    "tier_sizes_figure",
    "treemap_figure",
    "treemap_nodes",
]
