"""The segment report through the real asset graph: files written, table row, sections, migration and drift
after a second run, and `segmentation report` regenerating it from the warehouse without re-clustering."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from segmentation_pipeline.cli import main
from segmentation_pipeline.orchestration.resources import SegmentationSettings
from segmentation_pipeline.reporting import build_report, build_segment_report, load_report_data
from segmentation_pipeline.runner import RunSummary, run_pipeline
from segmentation_pipeline.synthetic import generate_export, write_export
from segmentation_pipeline.warehouse import Warehouse

N_CUSTOMERS = 800
SETTINGS = {"n_init": 3, "reference_date": "2026-06-30"}  # few restarts; a fixed date keeps ages stable
MOVED = 60  # customers made riskier between the two runs


@dataclass
class TwoRuns:
    """A warehouse after two pipeline runs on the same customers, some of them riskier the second time."""

    warehouse: Path
    first: RunSummary
    second: RunSummary
    first_report: str  # latest.html as written by the first run


def build_two_run_warehouse(folder: Path) -> TwoRuns:
    """Run the whole graph twice: the second export makes ``MOVED`` customers riskier (alerts, CTR, reports),
    so there are tier migrations and drift figures to show."""
    export = generate_export(N_CUSTOMERS, seed=5)
    first_file = write_export(export, folder / "first.parquet")
    frame = export.to_frame()
    frame = frame.loc[:, ~frame.columns.duplicated()]
    ids = frame["CustomerID"].drop_duplicates().sort_values().head(MOVED * 3).iloc[::3]
    riskier = frame["CustomerID"].isin(ids)
    frame.loc[riskier, ["NumAlerts", "CTRMatch", "PreviouslyReported"]] = [6, 1, 1]
    frame.loc[riskier, "CashUsage"] = frame.loc[riskier, "ActualVolume"] * 0.95
    second_file = folder / "second.parquet"
    frame.to_parquet(second_file, index=False)
    warehouse = folder / "warehouse.duckdb"
    settings = SegmentationSettings(**SETTINGS)
    first = run_pipeline(first_file, warehouse, settings=settings)
    assert first.success, first.error
    first_report = (folder / "reports" / "latest.html").read_text(encoding="utf-8")
    second = run_pipeline(second_file, warehouse, settings=settings)
    assert second.success, second.error
    return TwoRuns(warehouse, first, second, first_report)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    return build_two_run_warehouse(tmp_path_factory.mktemp("report_pipeline"))


SECTION_TITLES = ["Overview", "Choice of k", "Customer map (PCA)", "Numeric features by tier",
                  "Risk flags and gender by tier", "Categorical profiles by tier", "Cluster profiles", "Outliers",
                  "About this report"]  # fmt: skip


def test_asset_writes_run_file_latest_and_table_row(runs: TwoRuns) -> None:
    reports = runs.warehouse.parent / "reports"
    run_file = reports / f"segment_report_{runs.second.run_id}.html"
    assert run_file.exists() and (reports / f"segment_report_{runs.first.run_id}.html").exists()
    latest = reports / "latest.html"
    assert latest.read_bytes() == run_file.read_bytes()
    assert not list(reports.glob("*.tmp")) and not list(reports.glob(".*"))  # atomic writes leave nothing behind
    rows = Warehouse(runs.warehouse).read_table("segment_report").sort_values("created_at")
    assert list(rows.columns[:6]) == ["run_id", "model_version", "path", "latest_path", "size_bytes", "created_at"]
    last = rows.iloc[-1]
    assert last["run_id"] == runs.second.run_id and Path(last["path"]) == run_file.resolve()
    assert last["size_bytes"] == run_file.stat().st_size
    assert Path(runs.second.report_path) == latest.resolve()


def test_report_has_every_section_and_offline_plotly(runs: TwoRuns) -> None:
    text = (runs.warehouse.parent / "reports" / "latest.html").read_text(encoding="utf-8")
    headings = re.findall(r"<section id=\"[^\"]+\"><h2>([^<]+)</h2>", text)
    for title in SECTION_TITLES:
        assert title in headings
    assert "Migration and drift" in headings  # a previous model exists after the second run
    assert text.count("window.PlotlyConfig") == 1
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", text)
    assert f"{N_CUSTOMERS:,} customers" in text


def test_first_run_has_no_migration_section(runs: TwoRuns) -> None:
    assert "Migration and drift" not in runs.first_report
    assert "Customer map (PCA)" in runs.first_report


def test_migrations_and_drift_come_from_the_warehouse(runs: TwoRuns) -> None:
    store = Warehouse(runs.warehouse)
    report = build_segment_report(store)
    assert report.has_migrations and "drift" in report.sections
    migrations = store.query("SELECT * FROM tier_migrations WHERE run_id = ?", [runs.second.run_id])
    moved = len(migrations)
    assert moved > 0
    assert f"{moved:,} of {N_CUSTOMERS:,} customers changed tier" in report.html


def test_report_numbers_match_the_warehouse(runs: TwoRuns) -> None:
    store = Warehouse(runs.warehouse)
    report = build_segment_report(store)
    tiers = store.query("SELECT risk_tier, count(*) AS n FROM cluster_assignments GROUP BY risk_tier")
    assert report.tier_counts == dict(zip(tiers["risk_tier"], tiers["n"].astype(int), strict=True))
    assert report.customers == N_CUSTOMERS == runs.second.customers
    model = store.query("SELECT * FROM kmeans_model WHERE model_version = ?", [report.model_version]).iloc[0]
    assert report.metrics["silhouette"] == pytest.approx(model["silhouette"])
    assert f"{model['silhouette']:.3f}" in report.html
    summary = report.markdown_summary("x.html")
    assert f"| customers | {N_CUSTOMERS:,} |" in summary and "`x.html`" in summary
    high = next(n for n in report.narratives if n.tier == "High")
    cleaned = store.query("SELECT c.is_pep FROM cleaned_customers c JOIN cluster_assignments a USING (customer_id) "
                          "WHERE a.risk_tier = 'High'")  # fmt: skip
    assert high.facts["is_pep_share"] == pytest.approx(cleaned["is_pep"].fillna(0).mean())


def test_cli_report_regenerates_latest_without_reclustering(runs: TwoRuns, capsys: pytest.CaptureFixture) -> None:
    store = Warehouse(runs.warehouse)
    models_before = len(store.read_table("kmeans_model"))
    latest = runs.warehouse.parent / "reports" / "latest.html"
    latest.unlink()
    assert main(["report", "--warehouse", str(runs.warehouse)]) == 0
    out = capsys.readouterr().out
    assert str(latest.resolve()) in out and "model version:" in out
    assert latest.exists() and "Customer risk segmentation report" in latest.read_text(encoding="utf-8")
    assert len(store.read_table("kmeans_model")) == models_before


def test_cli_report_opens_browser(runs: TwoRuns, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    assert main(["report", "--warehouse", str(runs.warehouse), "--open"]) == 0
    assert opened == [(runs.warehouse.parent / "reports" / "latest.html").resolve().as_uri()]


def test_cli_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "--warehouse", str(tmp_path / "missing.duckdb")]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0
    empty = Warehouse(tmp_path / "empty.duckdb")
    empty.write_tables({"unrelated": pd.DataFrame({"a": [1]})})
    assert main(["report", "--warehouse", str(empty.path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run the pipeline first" in err and "Traceback" not in err


def test_sampled_report_keeps_every_count_exact(runs: TwoRuns) -> None:
    store = Warehouse(runs.warehouse)
    full = load_report_data(store)  # a small run is not sampled: every customer, as before
    assert len(full.segmented) == N_CUSTOMERS
    with store.reading():
        sampled = load_report_data(store, sample_size=200)
    assert 200 - 12 <= len(sampled.segmented) <= 200 + 12
    assert (sampled.embedding["customer_id"] == sampled.segmented["customer_id"]).all()
    strata = full.segmented.groupby(["risk_tier", "cluster"]).size()
    assert set(sampled.segmented.groupby(["risk_tier", "cluster"]).size().index) == set(strata.index)
    assert sampled.population.tier_facts == full.population.tier_facts  # figures of everyone, not of the sample
    report = build_report(sampled)
    assert report.customers == N_CUSTOMERS
    assert report.tier_counts == full.segmented["risk_tier"].value_counts().to_dict()
    assert f"a random sample of {len(sampled.segmented):,} of the {N_CUSTOMERS:,} customers" in report.html
