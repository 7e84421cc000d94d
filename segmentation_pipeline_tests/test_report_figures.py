"""The report's figure data, narrative, outliers and HTML assembly on hand-made frames (no pipeline, fast)."""

from __future__ import annotations

import json
import re

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from segmentation_pipeline.reporting import build_report, figures, html
from segmentation_pipeline.reporting.data import (
    NO_CHANNEL,
    ReportData,
    channel_combination,
    format_number,
    format_share,
)
from segmentation_pipeline.reporting.html import Section, render_report, write_html
from segmentation_pipeline.reporting.narrative import tier_narratives
from segmentation_pipeline.reporting.outliers import find_outliers
from segmentation_pipeline.reporting.population import RELATION, feature_sql, population_of, stratified_sample

TIER_OF_CLUSTER = {0: "High", 1: "Medium", 2: "Low"}


def make_segmented(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A segmented customer frame shaped like the report's: cleaned columns plus cluster assignments."""
    rng = np.random.default_rng(seed)
    cluster = rng.choice([0, 1, 2], size=n, p=[0.1, 0.3, 0.6])
    scale = np.array([5e6, 6e5, 6e4])[cluster]
    exp_volume = np.round(scale * rng.lognormal(0, 0.5, n), -3)
    actual = exp_volume * rng.lognormal(0, 0.4, n)
    frame = pd.DataFrame(
        {
            "customer_id": rng.choice(np.arange(1_000_000, 9_999_999), size=n, replace=False),
            "exp_volume": exp_volume,
            "actual_volume": actual,
            "cash_usage": actual * rng.beta(2, 3, n),
            "num_alerts": rng.poisson(np.array([3.0, 0.3, 0.01])[cluster]).astype(float),
            "non_face_to_face_usage": rng.poisson(np.array([20, 14, 2])[cluster]).astype(float),
            "online_ft_usage": rng.poisson(np.array([6, 9, 1])[cluster]).astype(float),
            "age": rng.uniform(18, 85, n),
            "tenure_years": rng.uniform(0.5, 25, n),
            "is_pep": (rng.random(n) < np.array([0.3, 0.02, 0.005])[cluster]).astype(float),
            "high_income_hw": (rng.random(n) < np.array([0.08, 0.01, 0.003])[cluster]).astype(float),
            "ctr_match": (rng.random(n) < np.array([0.6, 0.08, 0.01])[cluster]).astype(float),
            "previously_reported": (rng.random(n) < np.array([0.4, 0.02, 0.003])[cluster]).astype(float),
            "gender": rng.choice(["M", "F"], size=n, p=[0.65, 0.35]),
            "occupation": rng.choice(["Pension", "Housewife", "Self Employed in Agriculture"], size=n),
            "account_type": rng.choice(["FIRST Current Account", "Mashal Saving Account", "Repa Account"], size=n),
            "province": rng.choice(["Punjab", "Sindh", "KPK"], size=n, p=[0.5, 0.3, 0.2]),
            "nationality": "PK",
            "cluster": cluster.astype("int32"),
            "risk_tier": [TIER_OF_CLUSTER[c] for c in cluster],
            "risk_score": np.array([10.0, 1.0, -4.0])[cluster] + rng.normal(0, 1, n),
            "pc1": np.array([6.0, 1.5, -2.0])[cluster] + rng.normal(0, 0.5, n),
            "pc2": rng.normal(0, 1, n),
        }
    )
    frame["city"] = frame["province"].map({"Punjab": "LAHORE", "Sindh": "KARACHI", "KPK": "PESHAWAR"})
    frame.loc[frame.index % 7 == 0, "city"] = "OTHER TOWN"
    channel_sets = [[], ["ATM"], ["ATM", "MobileApp"], ["Internet Banking", "MobileApp", "ATM"]]
    frame["subscribed_channels"] = [np.array(channel_sets[i], dtype=object) for i in rng.integers(0, 4, n)]
    frame.loc[::50, "gender"] = None  # gaps are a level of their own, never dropped
    frame.loc[::40, "exp_volume"] = np.nan
    centroid = frame.groupby("cluster")[["pc1", "pc2"]].transform("mean")
    frame["distance_to_centroid"] = np.hypot(frame["pc1"] - centroid["pc1"], frame["pc2"] - centroid["pc2"])
    return frame


@pytest.fixture(scope="module")
def segmented() -> pd.DataFrame:
    return make_segmented()


def tier_sizes(frame: pd.DataFrame) -> dict[str, int]:
    return frame["risk_tier"].value_counts().to_dict()


# --- treemaps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [["subscribed_channels"], ["account_type"], ["occupation"], ["province", "city"]])
def test_treemap_tier_nodes_equal_tier_counts_and_children_sum_to_parents(segmented, path) -> None:
    nodes = figures.treemap_nodes(segmented, path)
    sizes = tier_sizes(segmented)
    assert nodes.loc[nodes["id"] == "all", "value"].item() == len(segmented)
    for tier, count in sizes.items():
        assert nodes.loc[nodes["id"] == tier, "value"].item() == count
    children = nodes[nodes["parent"] != ""].groupby("parent")["value"].sum()
    parents = nodes.set_index("id")["value"]
    for parent, total in children.items():
        assert total == parents[parent], parent  # branchvalues="total": every customer counted exactly once
    figure = figures.treemap_figure(segmented, path, "t")
    trace = figure.data[0]
    assert trace.type == "treemap" and trace.branchvalues == "total"
    assert list(trace.values) == nodes["value"].tolist()


def test_treemap_channels_are_combinations_and_province_holds_its_cities(segmented) -> None:
    nodes = figures.treemap_nodes(segmented, ["subscribed_channels"])
    high_levels = set(nodes.loc[nodes["parent"] == "High", "label"])
    assert {NO_CHANNEL, "ATM", "ATM + MobileApp", "ATM + Internet Banking + MobileApp"} >= high_levels
    expected = (segmented[segmented["risk_tier"] == "High"]["subscribed_channels"].map(channel_combination)
                == "ATM + MobileApp").sum()  # fmt: skip
    assert nodes.loc[nodes["id"] == "High/ATM + MobileApp", "value"].item() == expected
    geo = figures.treemap_nodes(segmented, ["province", "city"])
    lahore = geo.loc[geo["id"] == "Low/Punjab/LAHORE", "value"].item()
    low = segmented[segmented["risk_tier"] == "Low"]
    assert lahore == ((low["province"] == "Punjab") & (low["city"] == "LAHORE")).sum()


def test_treemap_groups_a_long_tail_of_levels() -> None:
    frame = make_segmented(600, seed=2)
    frame["city"] = [f"CITY {i % 80}" for i in range(len(frame))]
    nodes = figures.treemap_nodes(frame, ["city"])
    assert nodes.groupby("parent").size().max() <= figures.MAX_TREEMAP_LEVELS
    assert nodes["label"].str.startswith("other (").any()
    for tier, count in tier_sizes(frame).items():
        assert nodes.loc[nodes["parent"] == tier, "value"].sum() == count


# --- bars, lines, flags, gender ---------------------------------------------------------------------------------


def test_numeric_bars_equal_group_means_with_std_whiskers(segmented) -> None:
    figure = figures.numeric_bars_figure(segmented)
    features = ["exp_volume", "actual_volume", "cash_usage", "num_alerts", "non_face_to_face_usage",
                "online_ft_usage", "age", "tenure_years"]  # fmt: skip
    assert len(figure.data) == len(features)
    for trace, feature in zip(figure.data, features, strict=True):
        means = segmented.groupby("risk_tier")[feature].mean()
        stds = segmented.groupby("risk_tier")[feature].std()
        assert list(trace.x) == ["High", "Medium", "Low"]
        np.testing.assert_allclose(trace.y, means.reindex(trace.x).to_numpy())
        np.testing.assert_allclose(trace.error_y.array, stds.reindex(trace.x).to_numpy())
        assert (np.asarray(trace.y) - np.asarray(trace.error_y.arrayminus) >= -1e-9).all()  # whiskers stop at 0


def test_numeric_lines_are_tier_mean_over_population_mean(segmented) -> None:
    figure = figures.numeric_lines_figure(segmented)
    trace = next(t for t in figure.data if t.name == "Monitoring alerts")
    expected = segmented.groupby("risk_tier")["num_alerts"].mean() / segmented["num_alerts"].mean()
    np.testing.assert_allclose(trace.y, expected.reindex(list(trace.x)).to_numpy())


def test_flag_shares_match_the_data(segmented) -> None:
    shares = figures.flag_shares_by_tier(segmented)
    for row in shares.itertuples():
        group = segmented[segmented["risk_tier"] == row.risk_tier]
        assert row.flagged == int(group[row.flag].sum())
        assert row.share == pytest.approx(group[row.flag].mean())
    figure = figures.flags_figure(segmented)
    high = next(t for t in figure.data if t.name == "High risk")
    pep = segmented[segmented["risk_tier"] == "High"]["is_pep"].mean() * 100
    assert high.y[list(high.x).index("PEP")] == pytest.approx(pep)


def test_gender_shares_sum_to_100_per_tier_and_keep_gaps(segmented) -> None:
    figure = figures.gender_figure(segmented)
    totals = np.sum([np.asarray(t.x, dtype=float) for t in figure.data], axis=0)
    np.testing.assert_allclose(totals, 100.0)
    assert "(not given)" in {t.name for t in figure.data}
    counts = np.sum([np.asarray(t.customdata) for t in figure.data], axis=0)
    assert counts.tolist() == [tier_sizes(segmented)[t] for t in ("High", "Medium", "Low")]


def test_tier_sizes_and_k_choice(segmented) -> None:
    bars = figures.tier_sizes_figure(segmented).data[0]
    assert dict(zip(bars.y, bars.x, strict=True)) == tier_sizes(segmented)
    search = pd.DataFrame({"k": [2, 3, 4], "silhouette": [0.25, 0.31, 0.28], "davies_bouldin": [1.4, 1.2, 1.3],
                           "calinski_harabasz": [900.0, 1400.0, 1200.0], "inertia": [300.0, 200.0, 170.0]})  # fmt: skip
    figure = figures.k_choice_figure(search, 3)
    assert list(figure.data[0].y) == [0.25, 0.31, 0.28] and list(figure.data[1].y) == [300.0, 200.0, 170.0]
    chosen = next(t for t in figure.data if t.name == "chosen k = 3")
    assert list(chosen.x) == [3] and list(chosen.y) == [0.31]


# --- scatter ----------------------------------------------------------------------------------------------------


def test_scatter_downsamples_by_tier_and_says_so() -> None:
    big = make_segmented(25_000, seed=1)
    sample = figures.sample_for_scatter(big, 20_000)
    assert abs(len(sample) - 20_000) <= 3
    shares = big["risk_tier"].value_counts(normalize=True)
    np.testing.assert_allclose(sample["risk_tier"].value_counts(normalize=True)[shares.index], shares, atol=1e-3)
    centroids = pd.DataFrame({"cluster": [0, 1, 2], "pc1": [6.0, 1.5, -2.0], "pc2": [0.0, 0.0, 0.0]})
    points = figures.pca_scatter_figure(big, centroids, outlier_ids=big["customer_id"].head(5).tolist())
    figure, spec = points.figure, points.spec()
    tiers = [t for t in figure.data if t.name.endswith(" risk")]
    assert sum(len(t.x) for t in tiers) == len(sample)
    assert any("random sample of" in a.text for a in figure.layout.annotations)
    first = sample[sample["risk_tier"] == "High"].iloc[0]
    hover = spec["data"][0]["customdata"]  # the written figure's tooltip values, one row per point
    assert len(hover) == len(tiers[0].x)
    assert hover[0][0] == str(first["customer_id"])  # hover shows the customer id ...
    assert hover[0][3] == format_number(first["exp_volume"], money=True)  # ... and key values
    assert "customer %{customdata[0]}" in tiers[0].hovertemplate
    outliers = next(i for i, t in enumerate(figure.data) if t.name.startswith("flagged outliers"))
    assert len(figure.data[outliers].x) == len(spec["data"][outliers]["customdata"]) == 5
    assert "customdata" not in spec["data"][-1]  # the centroids: no tooltip values of their own
    full = figures.pca_scatter_figure(big, centroids, max_points=None).figure
    assert sum(len(t.x) for t in full.data if t.name.endswith(" risk")) == len(big)
    assert not any("random sample" in (a.text or "") for a in full.layout.annotations)


def test_hover_fields_write_each_value_as_format_number_does() -> None:
    points = make_segmented(50, seed=3).head(6).copy()
    points["exp_volume"] = [1500.0, np.nan, 1500.0, 2_100_000.0, np.nan, 7.0]
    fields = figures.hover_fields(points)
    assert fields[:, 3].tolist() == ["1.5K", "n/a", "1.5K", "2.1M", "n/a", "7"]
    assert fields[:, 3].tolist() == [format_number(v, money=True) for v in points["exp_volume"]]


def test_scatter_is_written_as_plotly_would_write_it_with_the_values_inside() -> None:
    segmented = make_segmented(300, seed=2)
    centroids = pd.DataFrame({"cluster": [0, 1, 2], "pc1": [6.0, 1.5, -2.0], "pc2": [0.0, 0.0, 0.0]})
    points = figures.pca_scatter_figure(segmented, centroids, outlier_ids=segmented["customer_id"].head(3).tolist())
    whole = go.Figure(points.figure)  # the same figure with the values inside its traces, as plotly holds them
    for index, rows in points.customdata.items():
        whole.data[index].customdata = rows
    written = html.figure_html(points, "figure-0", with_plotlyjs=False)
    assert _plot_arguments(written) == _plot_arguments(html.figure_html(whole, "figure-0", with_plotlyjs=False))
    assert 'style="height:620px' in written


def _plot_arguments(div: str) -> list[object]:
    """The div id, data, layout and config the div's script plots, as parsed JSON."""
    decoder, position, arguments = json.JSONDecoder(), div.index("segmentationPlot(") + len("segmentationPlot("), []
    for _ in range(4):
        while div[position] in " ,\n":
            position += 1
        value, position = decoder.raw_decode(div, position)
        arguments.append(value)
    return arguments


# --- profiles, heatmap ------------------------------------------------------------------------------------------


def test_heatmap_is_standardised_cluster_means(segmented) -> None:
    means = figures.standardised_cluster_means(segmented)
    alerts = np.log1p(segmented["num_alerts"])
    z = (alerts - alerts.mean()) / alerts.std(ddof=0)
    np.testing.assert_allclose(means["num_alerts"].to_numpy(), z.groupby(segmented["cluster"]).mean().to_numpy())
    age = (segmented["age"] - segmented["age"].mean()) / segmented["age"].std(ddof=0)
    assert means.loc[0, "age"] == pytest.approx(age[segmented["cluster"] == 0].mean())
    heatmap = figures.cluster_heatmap_figure(segmented).data[0]
    assert np.asarray(heatmap.z).shape == (3, len(means.columns))


def test_profile_table_has_mean_std_min_max_per_cluster(segmented) -> None:
    table = figures.cluster_profile_table(segmented)
    labels = figures.cluster_labels(segmented)
    high = segmented[segmented["cluster"] == 0]["actual_volume"]
    row = table.loc["Actual volume (PKR)"]
    assert row[(labels[0], "mean")] == pytest.approx(high.mean())
    assert row[(labels[0], "std")] == pytest.approx(high.std())
    assert row[(labels[0], "min")] == high.min() and row[(labels[0], "max")] == high.max()
    assert [s for _, s in table.columns][:4] == ["mean", "std", "min", "max"]  # in the order the table shows
    assert [c for c, _ in table.columns][::4] == labels.tolist()


# --- narrative --------------------------------------------------------------------------------------------------


def test_narrative_numbers_are_computed_from_the_data(segmented) -> None:
    narratives = tier_narratives(segmented)
    assert [n.tier for n in narratives] == ["High", "Medium", "Low"]
    for narrative in narratives:
        group = segmented[segmented["risk_tier"] == narrative.tier]
        assert narrative.customers == len(group)
        assert narrative.facts["is_pep_share"] == pytest.approx(group["is_pep"].mean())
        assert narrative.facts["median_exp_volume"] == pytest.approx(group["exp_volume"].median())
        assert narrative.facts["ctr_match_share"] == pytest.approx(group["ctr_match"].mean())
        assert narrative.facts["alerted_share"] == pytest.approx((group["num_alerts"] >= 1).mean())
        text = narrative.text
        assert text.startswith(f"{narrative.tier} — {len(group):,} customers")
        assert f"{format_share(group['is_pep'].mean())} PEP" in text
        assert f"median expected volume {format_number(group['exp_volume'].median(), money=True)}" in text
    high = narratives[0]
    assert high.distinctive and high.distinctive[0][1] > 0  # High stands out upwards
    shuffled = segmented.assign(is_pep=segmented["is_pep"].sample(frac=1, random_state=3).to_numpy())
    assert tier_narratives(shuffled)[0].facts["is_pep_share"] != high.facts["is_pep_share"]  # never hard-coded


def test_number_formatting() -> None:
    assert format_number(2_100_000, money=True) == "2.1M"
    assert format_number(59_000, money=True) == "59K"
    assert format_number(622_267.14, money=True) == "622K"
    assert format_number(3) == "3" and format_number(None) == "n/a"
    assert format_share(0.31) == "31%" and format_share(0.004) == "0.4%" and format_share(0.0) == "0%"


# --- outliers ---------------------------------------------------------------------------------------------------


def test_outliers_flag_a_planted_customer_with_reasons() -> None:
    frame = make_segmented(2000, seed=4)
    low = frame.index[frame["risk_tier"] == "Low"][0]
    frame.loc[low, ["num_alerts", "cash_usage", "actual_volume"]] = [9.0, 8e7, 9e7]
    frame.loc[low, "pc2"] = 9.0  # far from its centroid
    frame.loc[low, "distance_to_centroid"] = 9.0
    outliers = find_outliers(frame)
    assert list(outliers.columns[:3]) == ["customer_id", "cluster", "risk_tier"]
    planted = outliers[outliers["customer_id"] == str(frame.loc[low, "customer_id"])]  # ids are text
    assert len(planted) == 1
    row = planted.iloc[0]
    assert row["method"] in ("both", "distance to centroid")
    assert "far from its cluster centre" in row["reasons"]
    assert len(outliers) < len(frame) * 0.05
    assert outliers["reasons"].str.len().gt(0).all()


# --- migration and drift ----------------------------------------------------------------------------------------


def test_migration_matrix_counts_movers_and_stayers() -> None:
    current = pd.DataFrame({"customer_id": range(10), "risk_tier": ["High"] * 3 + ["Medium"] * 3 + ["Low"] * 4})
    migrations = pd.DataFrame({"customer_id": [0, 1, 5], "old_tier": ["Low", "Medium", "High"],
                               "new_tier": ["High", "High", "Medium"]})  # fmt: skip
    matrix = figures.migration_matrix(migrations, current)
    assert matrix.loc["Low", "High"] == 1 and matrix.loc["Medium", "High"] == 1 and matrix.loc["High", "Medium"] == 1
    assert matrix.loc["High", "High"] == 1 and matrix.loc["Medium", "Medium"] == 2 and matrix.loc["Low", "Low"] == 4
    assert matrix.to_numpy().sum() == len(current)
    heatmap = figures.migration_matrix_figure(migrations, current).data[0]
    assert list(heatmap.y) == ["was High", "was Medium", "was Low"]


def test_drift_measures_read_long_and_wide_tables() -> None:
    long = pd.DataFrame({
        "run_id": ["a", "a", "a", "b", "b", "b"], "metric": ["ari", "psi", "psi"] * 2,
        "feature": ["clusters", "tier_mix", "exp_volume"] * 2, "value": [0.5, 0.3, 0.2, 0.9, 0.05, 0.3],
        "created_at": pd.to_datetime(["2026-01-01"] * 3 + ["2026-02-01"] * 3),
    })  # fmt: skip
    measures = figures.drift_measures(long)
    assert measures.to_dict("list") == {"metric": ["ari", "psi", "psi"], "subject": ["clusters", "tier_mix",
                                        "exp_volume"], "value": [0.9, 0.05, 0.3]}  # fmt: skip
    wide = pd.DataFrame({"ari": [0.8], "psi_tier_mix": [0.12], "n": [5]})
    assert figures.drift_measures(wide)["metric"].tolist() == ["ari", "psi"]
    figure = figures.drift_figure(long)
    psi = figure.data[1]
    assert sorted(psi.y, reverse=True) == list(psi.y) and max(psi.y) == 0.3


# --- HTML -------------------------------------------------------------------------------------------------------


def test_html_embeds_plotlyjs_once_and_loads_nothing_external(segmented, tmp_path) -> None:
    side_by_side = [figures.flags_figure(segmented), figures.gender_figure(segmented)]
    sections = [Section("a", "A", "intro", [figures.tier_sizes_figure(segmented), "<p>text &amp; more</p>"]),
                Section("b", "B", "", [side_by_side])]  # fmt: skip
    text = render_report("Title <x>", "sub", sections)
    assert text.count("segmentationPlot(") == 3  # every figure goes through the WebGL/SVG helper
    assert len(re.findall(r"/\*! For license information|plotly\.js v\d", text)) >= 1
    assert text.count("window.PlotlyConfig") == 1  # the library block appears exactly once
    assert 'id="figure-0"' in text and 'id="figure-2"' in text and "Title &lt;x&gt;" in text
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", text)
    assert text.count(get_plotlyjs()) == 1
    ours = text.replace(get_plotlyjs(), "")  # the library mentions its CDN (for geo/MathJax, unused here)
    assert "http://" not in ours and "https://" not in ours
    path = write_html(text, tmp_path / "reports" / "r.html")
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in path.parent.iterdir()] == ["r.html"]  # no temporary file left behind


def test_figures_are_plain_plotly_figures(segmented) -> None:
    built = [figures.tier_sizes_figure(segmented), figures.numeric_lines_figure(segmented),
             figures.cluster_heatmap_figure(segmented)]  # fmt: skip
    assert all(isinstance(f, go.Figure) and f.layout.title.text for f in built)


# --- the whole report from plain data ---------------------------------------------------------------------------


def report_data(frame: pd.DataFrame, **extra: object) -> ReportData:
    centroids = frame.groupby("cluster")[["pc1", "pc2"]].mean().reset_index()
    search = pd.DataFrame({"k": [2, 3], "silhouette": [0.3, 0.28], "davies_bouldin": [1.2, 1.3],
                           "calinski_harabasz": [1000.0, 900.0], "inertia": [500.0, 420.0]})  # fmt: skip
    return ReportData(segmented=frame, k_search=search, chosen_k=frame["cluster"].nunique(), metrics={
        "silhouette": 0.3, "davies_bouldin": 1.2, "calinski_harabasz": 1000.0}, model_version="v-test",
        centroids=centroids, run_id="run-test", reference_date="2026-06-30", **extra)  # fmt: skip


def test_build_report_with_two_tiers_and_no_previous_model() -> None:
    frame = make_segmented(1200, seed=6)
    frame["cluster"] = (frame["cluster"] > 0).astype("int32")  # k = 2: High and Low only
    frame["risk_tier"] = frame["cluster"].map({0: "High", 1: "Low"})
    artifacts = build_report(report_data(frame))
    sizes = frame["risk_tier"].value_counts()
    assert artifacts.tier_counts == {"High": sizes["High"], "Low": sizes["Low"]}
    assert "drift" not in artifacts.sections and not artifacts.has_migrations
    assert artifacts.sections[:2] == ["overview", "k"] and artifacts.sections[-1] == "about"
    assert "Medium risk" not in artifacts.html and [n.tier for n in artifacts.narratives] == ["High", "Low"]
    assert len(artifacts.figure_ids) == artifacts.html.count("segmentationPlot(")


def test_build_report_shows_migration_and_drift_when_given() -> None:
    frame = make_segmented(900, seed=7)
    movers = frame.sample(40, random_state=1)
    migrations = pd.DataFrame({"customer_id": movers["customer_id"], "old_tier": "Low",
                               "new_tier": movers["risk_tier"], "old_model_version": "v-old"})  # fmt: skip
    migrations = migrations[migrations["new_tier"] != "Low"]
    stability = pd.DataFrame({"run_id": "run-test", "metric": ["ari", "psi", "psi"],
                              "feature": ["clusters", "tier_mix", "exp_volume"], "value": [0.8, 0.3, 0.02],
                              "n_shared_customers": 900})  # fmt: skip
    artifacts = build_report(report_data(frame, migrations=migrations, stability=stability))
    assert "drift" in artifacts.sections and artifacts.has_migrations
    assert f"{len(migrations):,} of 900 customers changed tier" in artifacts.html
    assert "v-old → v-test" in artifacts.html


# --- population figures in SQL, the stratified sample --------------------------------------------------------------


def test_population_figures_in_sql_equal_pandas(segmented) -> None:
    population = population_of(segmented)
    summary = population.numeric_summary.set_index(["risk_tier", "feature"])
    for feature in ("exp_volume", "num_alerts", "age"):
        groups = segmented.groupby("risk_tier")[feature]
        for tier, values in groups:
            row = summary.loc[(tier, feature)]
            assert row["count"] == values.count()
            assert row["median"] == pytest.approx(values.median())
            assert row["p25"] == pytest.approx(values.quantile(0.25))
            assert row["p75"] == pytest.approx(values.quantile(0.75))
            assert row["std"] == pytest.approx(values.std())
    channels = segmented["subscribed_channels"].map(channel_combination)
    expected = channels.groupby(segmented["risk_tier"]).value_counts().to_dict()
    counted = population.level_counts(["subscribed_channels"])
    assert dict(zip(zip(counted["risk_tier"], counted["subscribed_channels"], strict=True), counted["customers"],
                    strict=True)) == expected  # fmt: skip
    assert population.customers == len(segmented) and population.tier_counts.to_dict() == tier_sizes(segmented)
    high = segmented[segmented["risk_tier"] == "High"]
    ratio = (high["actual_volume"] / high["exp_volume"].where(high["exp_volume"] > 0)).median()
    assert population.tier_facts["High"]["median_actual_to_expected"] == pytest.approx(ratio)


def test_feature_sql_is_the_log_scale_of_money_and_counts() -> None:
    frame = pd.DataFrame({"cash_usage": [-5.0, 0.0, 12.5, None], "age": [30.0, -1.0, None, 40.0]})
    with duckdb.connect() as connection:
        connection.register("f", frame)
        got = connection.execute(f"SELECT {feature_sql('cash_usage')}, {feature_sql('age')} FROM f").df()
    np.testing.assert_allclose(got.iloc[:, 0], np.log1p(frame["cash_usage"].clip(lower=0)))
    np.testing.assert_allclose(got.iloc[:, 1], frame["age"])


def test_sample_is_bounded_stratified_and_seeded() -> None:
    frame = make_segmented(6000, seed=8)
    frame["risk_tier"] = frame["risk_tier"].where(frame.index != 17, "High")  # a stratum of one: High in cluster 2
    def draw(seed: int) -> pd.Series:
        with duckdb.connect() as connection:
            connection.register("customers", frame)
            connection.execute(f"CREATE TABLE {RELATION} AS SELECT * FROM customers")
            ids = connection.execute(stratified_sample(connection, 600, seed)).df()["customer_id"]
        return frame[frame["customer_id"].isin(ids)]
    sample = draw(0)
    strata = frame.groupby(["risk_tier", "cluster"]).size()
    assert 600 - len(strata) <= len(sample) <= 600 + len(strata)
    drawn = sample.groupby(["risk_tier", "cluster"]).size().reindex(strata.index, fill_value=0)
    assert (drawn >= 1).all() and drawn.loc[("High", 2)] == 1  # every stratum present, the singleton kept
    np.testing.assert_allclose(drawn / len(sample), strata / len(frame), atol=0.01)  # in proportion
    assert set(draw(0)["customer_id"]) == set(sample["customer_id"])
    assert set(draw(1)["customer_id"]) != set(sample["customer_id"])
