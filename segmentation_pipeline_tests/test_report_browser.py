"""The segment report in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

Asserts no console errors, every chart drawn (SVG or canvas marks present), and that the page works with the
network off: the context is offline and every non-file request is aborted and recorded (there must be none).
A full-page screenshot is saved to test-artifacts/segment_report.png.

When Chromium or Playwright is missing the tests are SKIPPED with the reason (``make test`` installs Chromium
through scripts/ensure-chromium.sh when it runs as root).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from segmentation_pipeline.reporting import ReportArtifacts, build_segment_report
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline_tests.test_report_pipeline import build_two_run_warehouse

CHROMIUM = Path(os.environ.get("SEGMENTATION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
RENDER_TIMEOUT_MS = 60_000
ALL_DRAWN = """() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))"""
MAP_KIND = """() => {
  const gd = document.querySelector('#map .plotly-graph-div');
  return gd._fullData[0].type === 'scattergl' ? 'webgl' : (gd.querySelector('path.point') ? 'svg' : 'none');
}"""
MARKS = """() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')].map(d => [d.id,
    d.querySelectorAll('g.trace path, g.hm image, g.slice, canvas').length]))"""  # data marks, not axes or grid


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: run scripts/ensure-chromium.sh as root (apt-get install chromium)"
    return None


SKIP = _skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@dataclass
class Rendered:
    """What a page load produced: console errors, uncaught errors, non-file requests, marks per chart."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    chart_ids: list[str] = field(default_factory=list)
    hover_text: str = ""
    map_kind: str = ""  # "webgl" (canvas) or "svg": how the PCA map's points were drawn


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportArtifacts, Path]:
    runs = build_two_run_warehouse(tmp_path_factory.mktemp("report_browser"))
    artifacts = build_segment_report(Warehouse(runs.warehouse))
    return artifacts, runs.warehouse.parent / "reports" / "latest.html"


FIRST_POINT = """() => {
  const gd = document.querySelector('#map .plotly-graph-div');
  gd.scrollIntoView();
  const trace = gd._fullData[0], layout = gd._fullLayout, box = gd.getBoundingClientRect();
  return [box.left + layout._size.l + layout.xaxis.l2p(trace.x[0]),
          box.top + layout._size.t + layout.yaxis.l2p(trace.y[0])];
}"""


def render(path: Path, profile: Path, *, extra_args: tuple[str, ...] = (), screenshot: Path | None = None) -> Rendered:
    """Load the report in a fresh offline Chromium profile and collect what happened."""
    from playwright.sync_api import sync_playwright

    result = Rendered()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args], headless=True,
            offline=True, viewport={"width": 1400, "height": 900},
        )  # fmt: skip
        try:
            def route(handle_route, request) -> None:  # noqa: ANN001 - Playwright's Route / Request
                if request.url.startswith(("file:", "data:", "blob:", "about:")):
                    handle_route.continue_()
                else:
                    result.external_requests.append(request.url)
                    handle_route.abort("internetdisconnected")

            context.route("**/*", route)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: result.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: result.page_errors.append(str(e)))
            page.goto(path.resolve().as_uri(), wait_until="load")
            page.wait_for_function(ALL_DRAWN, timeout=RENDER_TIMEOUT_MS)
            result.marks = page.evaluate(MARKS)
            result.chart_ids = page.evaluate("() => [...document.querySelectorAll('.plotly-graph-div')].map(d => d.id)")
            result.map_kind = page.evaluate(MAP_KIND)
            # Hover the PCA map's first High-risk point (WebGL points are not DOM nodes: go by coordinates).
            x, y = page.evaluate(FIRST_POINT)
            page.mouse.move(x, y)
            page.wait_for_timeout(400)
            result.hover_text = page.locator("#map .hoverlayer").text_content() or ""  # SVG: no innerText
            if screenshot is not None:
                screenshot.parent.mkdir(exist_ok=True)
                page.mouse.move(0, 0)
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)
    return result


@pytest.fixture(scope="module")
def rendered(report: tuple[ReportArtifacts, Path], tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(report[1], tmp_path_factory.mktemp("chromium-profile"), screenshot=ARTIFACTS / "segment_report.png")


@pytest.fixture(scope="module")
def rendered_without_webgl(report: tuple[ReportArtifacts, Path], tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    # --disable-3d-apis: no WebGL at all, as on a locked-down desktop: the map must fall back to SVG.
    return render(report[1], tmp_path_factory.mktemp("chromium-profile-nogl"), extra_args=("--disable-3d-apis",))


def test_no_console_errors(rendered: Rendered) -> None:
    assert rendered.console_errors == []
    assert rendered.page_errors == []


def test_every_chart_is_drawn(rendered: Rendered, report: tuple[ReportArtifacts, Path]) -> None:
    artifacts, _ = report
    assert rendered.chart_ids == artifacts.figure_ids
    assert len(rendered.chart_ids) >= 14  # overview ... treemaps, heatmap, migration matrix and drift
    empty = [chart for chart, marks in rendered.marks.items() if marks == 0]
    assert empty == [], f"charts without rendered marks: {empty}"


def test_works_offline_without_any_external_request(rendered: Rendered) -> None:
    assert rendered.external_requests == []


def test_hover_shows_customer_id(rendered: Rendered) -> None:
    assert "customer" in rendered.hover_text


def test_screenshot_saved(rendered: Rendered) -> None:
    screenshot = ARTIFACTS / "segment_report.png"
    assert screenshot.exists() and screenshot.stat().st_size > 50_000


def test_map_falls_back_to_svg_without_webgl(rendered: Rendered, rendered_without_webgl: Rendered) -> None:
    assert rendered.map_kind in ("webgl", "svg")
    fallback = rendered_without_webgl
    assert fallback.map_kind == "svg"
    assert fallback.console_errors == [] and fallback.page_errors == []
    assert [c for c, marks in fallback.marks.items() if marks == 0] == []
    assert "customer" in fallback.hover_text
