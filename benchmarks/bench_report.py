"""Benchmark: the segment report for a large generated export — file size and render time in headless Chromium.

Generates an N-customer workbook, runs the whole pipeline, builds the report, and renders it in Debian's
Chromium (driven by Playwright, no browser download), compared in the same run with:

- the same report in a browser without WebGL (``--disable-3d-apis``): the map's SVG fallback;
- the same report WITHOUT scatter downsampling (every customer the report reads on the PCA map: all of them up to
  ``--sample-size``, beyond it that stratified sample): what downsampling buys;
- a page holding only plotly.js and one trivial chart: the fixed cost of parsing the embedded library.

Render time = from navigation start until every chart div holds its SVG (``performance.now()`` in the page),
each load in a fresh browser context (no cache) after the browser itself has started. Targets (issue 6):
≤ 15 MB and < 5 s for 100k customers.

    .venv/bin/python benchmarks/bench_report.py --rows 100000
    .venv/bin/python benchmarks/bench_report.py --warehouse /tmp/wh.duckdb   # reuse a warehouse, skip the run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = Path(os.environ.get("SEGMENTATION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ALL_DRAWN = "() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))"
SIZE_TARGET_MB = 15.0
RENDER_TARGET_S = 5.0


def build_warehouse(rows: int, folder: Path, fmt: str) -> Path:
    """Generate the export, run the pipeline; returns the warehouse path."""
    from segmentation_pipeline.orchestration.resources import SegmentationSettings
    from segmentation_pipeline.runner import run_pipeline
    from segmentation_pipeline.synthetic import generate_export, write_export

    started = time.perf_counter()
    source = write_export(generate_export(rows, seed=0), folder / f"customers.{fmt}")
    print(f"generated {rows:,} customers -> {source.name} in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    warehouse = folder / "warehouse.duckdb"
    summary = run_pipeline(source, warehouse, settings=SegmentationSettings(n_init=3))
    if not summary.success:
        sys.exit(f"pipeline failed: {summary.error}")
    print(f"pipeline (all assets, incl. the asset's own report) in {time.perf_counter() - started:.1f} s", flush=True)
    return warehouse


def render_times(pages: dict[str, tuple[Path, tuple[str, ...]]], repeats: int) -> dict[str, list[float]]:
    """Seconds from navigation start to every chart drawn, per page and repeat (fresh context each load).
    ``pages``: name -> (file, extra Chromium flags)."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {name: [] for name in pages}
    with sync_playwright() as playwright:
        browsers = {}
        for _, flags in pages.values():
            if flags not in browsers:
                browsers[flags] = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *flags], headless=True
                )
                browsers[flags].new_page().goto("about:blank")  # browser start-up is not the report's cost
        for _ in range(repeats):
            for name, (path, flags) in pages.items():  # interleaved: background load affects every variant alike
                context = browsers[flags].new_context(viewport={"width": 1400, "height": 900}, offline=True)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.resolve().as_uri(), wait_until="load", timeout=180_000)
                page.wait_for_function(ALL_DRAWN, timeout=180_000)
                elapsed = page.evaluate("performance.now()") / 1000
                if errors:
                    print(f"  {name}: page errors: {errors[:3]}", file=sys.stderr)
                times[name].append(elapsed)
                context.close()
        for browser in browsers.values():
            browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--format", choices=["xlsx", "parquet", "csv"], default="xlsx", help="generated file type")
    parser.add_argument("--warehouse", help="reuse this warehouse (skip generation and the pipeline run)")
    parser.add_argument("--repeats", type=int, default=3, help="loads per page")
    parser.add_argument("--out", help="folder for the reports (default: a temporary folder)")
    parser.add_argument("--sample-size", type=int, default=None,
                        help="customers the map and outlier search read (default: the report's REPORT_SAMPLE_SIZE)")
    args = parser.parse_args(argv)

    from plotly.offline import get_plotlyjs

    from segmentation_pipeline.reporting import build_segment_report, write_html
    from segmentation_pipeline.reporting.build import REPORT_SAMPLE_SIZE
    from segmentation_pipeline.warehouse import Warehouse

    folder = Path(args.out or tempfile.mkdtemp(prefix="bench_report_"))
    folder.mkdir(parents=True, exist_ok=True)
    warehouse = Path(args.warehouse) if args.warehouse else build_warehouse(args.rows, folder, args.format)
    store = Warehouse(warehouse)

    started = time.perf_counter()
    sample_size = args.sample_size or REPORT_SAMPLE_SIZE
    report = build_segment_report(store, sample_size=sample_size)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    baseline = build_segment_report(store, max_scatter_points=None, sample_size=sample_size)
    baseline_build_s = time.perf_counter() - started
    paths = {
        "report (downsampled map)": write_html(report.html, folder / "report.html"),
        "baseline: no downsampling": write_html(baseline.html, folder / "report_full_scatter.html"),
        "floor: plotly.js + 1 chart": write_html(
            "<!DOCTYPE html><html><body><script>" + get_plotlyjs() + "</script><div id='a' class='plotly-graph-div'>"
            "</div><script>Plotly.newPlot('a', [{y: [1, 3, 2]}])</script></body></html>",
            folder / "plotlyjs_only.html",
        ),
    }
    print(f"\ncustomers: {report.customers:,}   map points: {report.scatter_points:,} "
          f"(baseline {baseline.scatter_points:,})   charts: {len(report.figure_ids)}   "
          f"outliers: {len(report.outliers):,}")  # fmt: skip
    print(f"build (read warehouse + figures + HTML): {build_s:.1f} s (baseline {baseline_build_s:.1f} s)")
    pages = {name: (path, ()) for name, path in paths.items()}
    # The same report where WebGL is unavailable (locked-down desktop): the map falls back to SVG points.
    no_webgl = "report, no WebGL (SVG map)"
    pages = {**dict(list(pages.items())[:1]), no_webgl: (paths["report (downsampled map)"], ("--disable-3d-apis",)),
             **dict(list(pages.items())[1:])}  # fmt: skip
    sizes = {name: path.stat().st_size / 1e6 for name, (path, _) in pages.items()}

    times: dict[str, list[float]] = {}
    if not CHROMIUM.exists():
        print(f"\nno Chromium at {CHROMIUM}: render times not measured (scripts/ensure-chromium.sh)")
    else:
        try:
            times = render_times(pages, args.repeats)
        except ImportError:
            print("\nplaywright not installed: render times not measured (pip install -e '.[test]')")
    load = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"{'page':<28} {'size MB':>8} {'render s (median)':>18} {'min':>6} {'max':>6}")
    for name in pages:
        runs = times.get(name, [])
        render = f"{statistics.median(runs):>18.2f} {min(runs):>6.2f} {max(runs):>6.2f}" if runs else f"{'-':>18}"
        print(f"{name:<28} {sizes[name]:>8.1f} {render}")
    main_name = "report (downsampled map)"
    ok_size = sizes[main_name] <= SIZE_TARGET_MB
    print(f"\nsize   {sizes[main_name]:.1f} MB  (target ≤ {SIZE_TARGET_MB:g} MB): {'PASS' if ok_size else 'FAIL'}")
    if times:
        median = statistics.median(times[main_name])
        verdict = "PASS" if median < RENDER_TARGET_S else "FAIL"
        print(f"render {median:.2f} s  (target < {RENDER_TARGET_S:g} s): {verdict}")
    print(f"reports in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
