"""Assemble the report as ONE self-contained HTML file and write it atomically.

plotly.js is embedded once, inline, with the first figure (``include_plotlyjs=True`` for it, ``False`` for the
rest); there is no CDN, web font, image or stylesheet link, so the file opens offline, from an e-mail
attachment or an air-gapped audit laptop.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from segmentation_pipeline.reporting.figure_style import PointsFigure

PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
}

CSS = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f5f6f8;--card:#fff;--accent:#1f6fb2;
--high:#c62828;--medium:#ef8f00;--low:#1f6fb2}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header.top{background:#111827;color:#f9fafb;padding:22px 32px 18px}
header.top h1{margin:0 0 4px;font-size:24px;font-weight:650;letter-spacing:-.01em}
header.top .sub{color:#cbd5e1;font-size:13px}
nav{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid var(--line);padding:0 24px;
white-space:nowrap;overflow-x:auto}
nav a{display:inline-block;padding:10px 10px;color:var(--ink);text-decoration:none;font-size:13px;
border-bottom:2px solid transparent}
nav a:hover{border-bottom-color:var(--accent);color:var(--accent)}
main{max-width:1320px;margin:0 auto;padding:20px 24px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px 14px;
margin:0 0 20px;scroll-margin-top:52px}
section h2{margin:0 0 4px;font-size:19px;font-weight:650}
section p.intro{margin:0 0 12px;color:var(--muted);max-width:980px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin:6px 0 14px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:#fafbfc}
.card .k{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:20px;font-weight:650;margin-top:2px;overflow-wrap:anywhere}
.card .v.small{font-size:14px;font-weight:600}
.card.tier-High{border-left:5px solid var(--high)}.card.tier-Medium{border-left:5px solid var(--medium)}
.card.tier-Low{border-left:5px solid var(--low)}
.narrative{list-style:none;padding:0;margin:6px 0 4px}
.narrative li{border-left:5px solid var(--line);padding:8px 12px;margin:0 0 8px;background:#fafbfc;
border-radius:0 6px 6px 0}
.narrative li.tier-High{border-left-color:var(--high)}.narrative li.tier-Medium{border-left-color:var(--medium)}
.narrative li.tier-Low{border-left-color:var(--low)}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}
@media (max-width:1000px){.grid2{grid-template-columns:1fr}}
.figure{min-height:200px;margin:4px 0 10px}
.table-wrap{overflow-x:auto;margin:6px 0 10px;border:1px solid var(--line);border-radius:8px}
table.data{border-collapse:collapse;font-size:12.5px;width:100%;font-variant-numeric:tabular-nums}
table.data th,table.data td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
table.data th{background:#f3f4f6;font-weight:600;position:sticky;top:0}
table.data td.text,table.data th.text{text-align:left;white-space:normal}
table.data tbody tr:nth-child(even){background:#fafbfc}
table.data tbody tr:hover{background:#eef4fb}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:11.5px;font-weight:600}
.pill.High{background:var(--high)}.pill.Medium{background:var(--medium)}.pill.Low{background:var(--low)}
.note{font-size:12.5px;color:var(--muted)}
dl.meta{display:grid;grid-template-columns:220px 1fr;gap:4px 14px;margin:4px 0;font-size:13px}
dl.meta dt{color:var(--muted)}
dl.meta dd{margin:0;overflow-wrap:anywhere;font-family:ui-monospace,Menlo,Consolas,monospace}
details{margin:4px 0 8px}details summary{cursor:pointer;color:var(--accent);font-size:13px;padding:4px 0}
footer{color:var(--muted);font-size:12px;text-align:center;padding:8px 0 24px}
@media print{nav{display:none}section{break-inside:avoid-page;border:none}body{background:#fff}}
"""


Figure = go.Figure | PointsFigure
Block = Figure | str | list[Figure | str]  # a list: figures side by side (two per row on wide screens)


@dataclass
class Section:
    """One report section: an anchor id, a heading, an introduction and its blocks (figures or HTML)."""

    id: str
    title: str
    intro: str = ""
    blocks: list[Block] = field(default_factory=list)


def count_figures(sections: Sequence[Section]) -> int:
    """How many figure divs the sections render (ids figure-0 ... figure-(n-1))."""
    blocks = [block for section in sections for block in section.blocks]
    return sum(sum(isinstance(item, Figure) for item in block) if isinstance(block, list)
               else isinstance(block, Figure) for block in blocks)  # fmt: skip


def escape(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape("" if value is None else str(value))


def cards_html(cards: Sequence[tuple[str, str]] | Sequence[tuple[str, str, str]]) -> str:
    """Key-number cards: (label, value[, css class])."""
    parts = []
    for card in cards:
        key, value, css = (*card, "")[:3]
        small = " small" if len(str(value)) > 14 else ""
        parts.append(f'<div class="card {escape(css)}"><div class="k">{escape(key)}</div>'
                     f'<div class="v{small}">{escape(value)}</div></div>')  # fmt: skip
    return f'<div class="cards">{"".join(parts)}</div>'


def table_html(frame: pd.DataFrame, *, text_columns: Sequence[str] = (), index: bool = False,
               html_columns: Sequence[str] = ()) -> str:  # fmt: skip
    """A tidy data table. Values are escaped except in ``html_columns`` (caller-built markup)."""
    frame = frame.reset_index() if index else frame
    if isinstance(frame.columns, pd.MultiIndex):
        top = [c[0] for c in frame.columns]
        header_top = []
        for name in dict.fromkeys(top):
            span = top.count(name)
            header_top.append(f'<th colspan="{span}" class="{"text" if not name else ""}">{escape(name)}</th>')
        header = "<tr>" + "".join(header_top) + "</tr><tr>" + "".join(
            f"<th>{escape(c[1])}</th>" for c in frame.columns) + "</tr>"  # fmt: skip
        names = [c for c in frame.columns]
    else:
        names = list(frame.columns)
        header = "<tr>" + "".join(
            f'<th class="{"text" if c in text_columns or c in html_columns else ""}">{escape(c)}</th>' for c in names
        ) + "</tr>"  # fmt: skip
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for name, value in zip(names, row, strict=True):
            css = "text" if name in text_columns or name in html_columns or isinstance(value, str) else ""
            content = str(value) if name in html_columns else escape(value)
            cells.append(f'<td class="{css}">{content}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="data"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="table-wrap">{table}</div>'


# Big scatters are WebGL (scattergl: fast, one canvas) where the browser has WebGL, and fall back to SVG where it
# has not (locked-down VDI desktops, browsers with WebGL disabled): the chart is never blank.
PLOT_HELPER = """
window.segmentationHasWebGL = function () {
  if (window.segmentationWebGL === undefined) {
    try {
      var gl = document.createElement('canvas').getContext('webgl');
      window.segmentationWebGL = !!gl;
      var lose = gl && gl.getExtension('WEBGL_lose_context');
      if (lose) { lose.loseContext(); }  // only a probe: give the context back
    } catch (e) { window.segmentationWebGL = false; }
  }
  return window.segmentationWebGL;
};
window.segmentationPlot = function (id, data, layout, config) {
  var gl = data.some(function (trace) { return trace.type === 'scattergl'; });
  if (gl && !window.segmentationHasWebGL()) {
    data.forEach(function (trace) { if (trace.type === 'scattergl') { trace.type = 'scatter'; } });
  }
  return Plotly.newPlot(id, data, layout, config);
};
"""


def plotlyjs_block() -> str:
    """plotly.js inline (no CDN) plus the report's plot helper: emitted once, before the first figure."""
    from plotly.offline import get_plotlyjs

    return (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script charset="utf-8">{get_plotlyjs()}</script><script>{PLOT_HELPER}</script>'
    )


def figure_html(figure: Figure, div_id: str, *, with_plotlyjs: bool) -> str:
    """A figure's div and script; plotly.js inline only when ``with_plotlyjs`` (the first figure)."""
    plotted = figure.figure if isinstance(figure, PointsFigure) else figure
    div = pio.to_html(
        figure.spec() if isinstance(figure, PointsFigure) else figure, validate=plotted is figure,
        full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id, config=PLOTLY_CONFIG,
        default_width="100%", default_height=f"{plotted.layout.height or 450}px",
    )  # fmt: skip
    div = div.replace("Plotly.newPlot(", "segmentationPlot(", 1)
    return (plotlyjs_block() if with_plotlyjs else "") + div


def render_report(title: str, subtitle: str, sections: Sequence[Section], footer: str = "") -> str:
    """The whole report page. Figures are numbered in document order; the first carries plotly.js."""
    figure_count = 0
    nav = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections)
    body = []
    for section in sections:
        blocks = []
        for block in section.blocks:
            if isinstance(block, str):
                blocks.append(block)
                continue
            row = block if isinstance(block, list) else [block]
            divs = []
            for figure in row:
                if isinstance(figure, str):  # a note standing in for a chart the data cannot draw
                    divs.append(f'<div class="figure">{figure}</div>')
                    continue
                div = figure_html(figure, f"figure-{figure_count}", with_plotlyjs=figure_count == 0)
                divs.append(f'<div class="figure">{div}</div>')
                figure_count += 1
            blocks.append(f'<div class="grid2">{"".join(divs)}</div>' if isinstance(block, list) else divs[0])
        intro = f'<p class="intro">{section.intro}</p>' if section.intro else ""
        heading = f'<h2>{escape(section.title)}</h2>'
        body.append(f'<section id="{escape(section.id)}">{heading}{intro}{"".join(blocks)}</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{escape(title)}</h1><div class="sub">{subtitle}</div></header>'
        f"<nav>{nav}</nav><main>{''.join(body)}</main><footer>{footer}</footer></body></html>\n"
    )


def write_html(text: str, path: Path) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, flushed, then renamed over the
    target, so a reader (or a browser refreshing latest.html) never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
