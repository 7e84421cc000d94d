"""Time every step of the graph and the whole run, with peak memory per step, next to the previous commit in the
same run; the time/memory curve over sizes; the whole process against the original method.

    python benchmarks/bench_pipeline.py --rows 100000 [--format xlsx|parquet] [--against HEAD~1] [--repeat 2]
    python benchmarks/bench_pipeline.py --curve 10000,100000,1000000[,10000000] [--against none] [--out DIR]
    python benchmarks/bench_pipeline.py --versus-original 50000

``--rows``: the real Dagster job (``run_pipeline``) on an N-customer export, in a child process per run so that
peak memory is the run's own. The child samples its own resident memory every 0.1 s in a thread and maps the
samples onto each step's window (the lineage table's started_at .. ended_at; steps that write several assets in
one transaction are listed together), plus the windows around them: imports, set-up before the first step,
between steps (Dagster, checks) and after the last lineage row (publication). This checkout and ``--against`` (a
git revision checked out beside it) alternate, ``--repeat`` times each, and the medians are printed side by side.
Then the textbook approach (openpyxl reader, scikit-learn KNNImputer, exact silhouette) on a subset small enough
to finish, next to ours on the same subset, so those two columns compare like with like.

``--curve``: the same child run at each size (Parquet input by default, generated once per size with
``segmentation generate`` into ``--cache``), a table (customers, seconds, peak MB, customers/s, beside
``--against``), and the curve saved as a self-contained Plotly HTML chart and a JSON of the figures in ``--out``
(a PNG too when a static image exporter, kaleido, is installed).

``--versus-original N``: the whole process from an N-customer xlsx, side by side, wall time from outside, start-up
included: ours is the ``segmentation run`` command; the original method is a script doing what the textbook
notebook does (openpyxl read, the same cleaning and features but scikit-learn's exact KNNImputer, PCA, K-means,
exact silhouette, results to CSV). Prints both times and the ratio.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.impute import KNNImputer
from sklearn.metrics import silhouette_score

from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import CustomerBatch, as_batch
from segmentation_pipeline.stages.features import CustomerFeatureTransformer
from segmentation_pipeline.stages.imputation import PatternKNNImputer
from segmentation_pipeline.stages.ingestion import read_customer_file
from segmentation_pipeline.synthetic import generate_export, write_export

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import REPO, describe, previous_tree, python_env  # noqa: E402  (the benchmarks' own helper)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


GRAPH_CHILD = """
import time
BORN = time.time()
import os, threading
SAMPLES = []  # (wall time, resident MB, process CPU seconds) every 0.1 s, from the first line to the end of the run
def _sample(stop):
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    with open("/proc/self/statm") as statm:
        while True:
            statm.seek(0)
            SAMPLES.append((time.time(), int(statm.read().split()[1]) * page_mb, time.process_time()))
            if stop.wait(0.1):
                return
STOP = threading.Event()
SAMPLER = threading.Thread(target=_sample, args=(STOP,), daemon=True)
SAMPLER.start()
import contextlib, gc, json, resource, sys
from pathlib import Path
source, database = Path(sys.argv[1]), Path(sys.argv[2])
# As `segmentation run` does (cli.cmd_run), for both checkouts alike: the collector of a one-shot process, start-up's
# objects frozen, and (where the checkout has it) the input read while the libraries load.
gc.set_threshold(50_000, 20, 20)
try:
    from segmentation_pipeline.cli import reading_input_ahead
except ImportError:
    reading_input_ahead = lambda *args: contextlib.nullcontext()
with reading_input_ahead(source, database, None):
    from segmentation_pipeline.orchestration.resources import SegmentationSettings
    from segmentation_pipeline.runner import run_pipeline
    from segmentation_pipeline.warehouse import Warehouse
    IMPORTED = time.time()
    gc.freeze()
    restarts = {"n_init": int(os.environ["BENCH_N_INIT"])} if os.environ.get("BENCH_N_INIT") else {}
    summary = run_pipeline(source, database, settings=SegmentationSettings(reference_date="2026-06-30", **restarts))
ENDED = time.time()
STOP.set()
SAMPLER.join()
if not summary.success:
    sys.exit(f"run failed: {summary.error}")
steps = Warehouse(database).query(  # assets written by one step (one transaction) share a start time
    "SELECT string_agg(asset_key, ' + ' ORDER BY asset_key) AS step, max(row_count) AS row_count, "
    "min(epoch(started_at)) AS started, max(epoch(ended_at)) AS ended FROM lineage GROUP BY started_at "
    "ORDER BY started_at").to_dict("records")
def peak(start, end):
    inside = [mb for t, mb, _ in SAMPLES if start <= t <= end]
    before = [mb for t, mb, _ in SAMPLES if t < start]
    return max(inside or before[-1:] or [float("nan")])
def cpu_at(moment):  # process CPU seconds (all threads) at the last sample not after ``moment``
    return max((cpu for t, _, cpu in SAMPLES if t <= moment), default=0.0)
def cpu(start, end):
    return cpu_at(end) - cpu_at(start)
windows = [("(imports)", 0, BORN, IMPORTED), ("(set-up before the first step)", 0, IMPORTED, steps[0]["started"])]
gaps = []
for position, step in enumerate(steps):
    windows.append((step["step"], step["row_count"], step["started"], step["ended"]))
    if position + 1 < len(steps):
        gaps.append((step["ended"], steps[position + 1]["started"]))
windows.append(("(after the last step: publication)", 0, steps[-1]["ended"], ENDED))
out = [{"step": name, "row_count": int(rows), "seconds": end - start, "cpu_s": cpu(start, end),
        "peak_mb": peak(start, end)} for name, rows, start, end in windows]
out.insert(-1, {"step": "(between steps: Dagster, checks)", "row_count": 0,
                "seconds": sum(end - start for start, end in gaps), "cpu_s": sum(cpu(a, b) for a, b in gaps),
                "peak_mb": max((peak(start, end) for start, end in gaps), default=float("nan"))})
print(json.dumps({"total": ENDED - BORN, "cpu_s": time.process_time(),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "steps": out}))
"""


def time_graph(source: Path, work: Path, tree: Path | None) -> dict:
    """One whole run of the graph in a child process importing the package from ``tree`` (None: this checkout),
    on a warehouse of its own that is removed afterwards. Adds ``process`` (the child's wall time from outside)."""
    folder = work / f"graph_{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    try:
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-c", GRAPH_CHILD, str(source), str(folder / "w.duckdb")],
                                   env=python_env(tree), cwd=tree or REPO, capture_output=True, text=True)  # fmt: skip
        process = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a million customers' warehouse is gigabytes
    if completed.returncode:
        sys.exit(f"graph run failed ({tree or 'this checkout'}): {completed.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "process": process}


def _median_steps(results: list[dict]) -> dict[str, dict[str, float]]:
    """Step name -> median seconds, median peak MB and rows over the runs (steps matched by name)."""
    names = [step["step"] for step in results[0]["steps"]]
    out = {}
    for name in names:
        found = [next(s for s in r["steps"] if s["step"] == name) for r in results if any(s["step"] == name
                                                                                        for s in r["steps"])]
        out[name] = {"seconds": statistics.median(s["seconds"] for s in found),
                     "cpu_s": statistics.median(s.get("cpu_s", float("nan")) for s in found),
                     "peak_mb": statistics.median(s["peak_mb"] for s in found), "row_count": found[0]["row_count"]}
    return out


def _summary(results: list[dict]) -> dict[str, float]:
    return {key: statistics.median(r.get(key, float("nan")) for r in results)
            for key in ("process", "total", "cpu_s", "peak_mb")}


def measure_graph(source: Path, work: Path, tree: Path | None, repeat: int, others: list[dict] | None = None,
                  other_tree: Path | None = None) -> list[dict]:  # fmt: skip
    """``repeat`` runs of this checkout; with ``other_tree``, a run of that checkout after each (appended to
    ``others``): in turn, so that a slow spell of the machine hits both columns."""
    runs = []
    for _ in range(repeat):
        runs.append(time_graph(source, work, tree))
        if other_tree is not None and others is not None:
            others.append(time_graph(source, work, other_tree))
    return runs


def graph_side_by_side(source: Path, work: Path, against: str, repeat: int, rows: int) -> None:
    previous: list[dict] = []
    with previous_tree(against) if against != "none" else _no_tree() as tree:
        this = measure_graph(source, work, None, repeat, previous, tree)
    print(f"\nwhole graph on {rows:,} customers from {source.suffix[1:]}, median of {repeat} run(s) each "
          "(child process per run)")  # fmt: skip
    header = f"{'':<44}{'this checkout':>16}"
    if previous:
        header += f"{'previous':>14}   previous = {describe(against)}"
    print(header)
    mine, theirs = _summary(this), _summary(previous) if previous else None
    for label, key, fmt in (("process wall seconds (from outside)", "process", "{:.1f}"),
                            ("run seconds (first line to end)", "total", "{:.1f}"),
                            ("run CPU seconds (all threads)", "cpu_s", "{:.1f}"),
                            ("peak RSS, MB", "peak_mb", "{:,.0f}")):  # fmt: skip
        line = f"{label:<44}{fmt.format(mine[key]):>16}"
        if theirs:
            line += f"{fmt.format(theirs[key]):>14}"
        print(line)
    print_steps(this, previous, against)


def print_steps(this: list[dict], previous: list[dict], against: str) -> None:
    """Per step: rows, median seconds and peak MB (sampled every 0.1 s), this checkout beside the previous one."""
    mine = _median_steps(this)
    theirs = _median_steps(previous) if previous else {}
    title = "\nsteps: rows, median wall s, CPU s and peak RSS MB in the step's window (sampled every 0.1 s)"
    print(title + (f"; right: {describe(against)}" if theirs else ""))
    for name in [*mine, *(n for n in theirs if n not in mine)]:
        line = f"  {name[:60]:<60}"
        for column in (mine, theirs) if theirs else (mine,):
            step = column.get(name)
            if step is None:
                line += f"{'-':>40}"
            else:
                rows = f"{step['row_count']:,}" if step["row_count"] else ""
                line += f"{rows:>12}{step['seconds']:>9.2f}{step['cpu_s']:>8.2f}{step['peak_mb']:>11,.0f}"
        print(line)


class _no_tree:  # noqa: N801 - a context manager standing in for previous_tree
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def ours_on_subset(workbook: Path) -> dict[str, float]:
    """Our core stages, without Dagster, on the subset: the like-for-like comparison with the baseline."""
    timings = {}
    t = time.perf_counter()
    raw = read_customer_file(workbook)
    timings["read"] = time.perf_counter() - t
    customers = clean_customers(raw.frame, reference_date=date(2026, 6, 30), source_rows=raw.source_rows).customers
    numeric = scaled_numeric(customers)
    t = time.perf_counter()
    PatternKNNImputer().fit_transform(numeric)
    timings["impute"] = time.perf_counter() - t
    return timings


def scaled_numeric(customers: pd.DataFrame | CustomerBatch) -> np.ndarray:
    """The standardised numeric block with its gaps: what the feature transformer hands its imputer."""
    batch = as_batch(customers)
    transformer = CustomerFeatureTransformer().fit(batch)
    numeric = transformer._numeric_matrix(batch, transformer.derived(batch))
    return (numeric - transformer.scale_mean_) / transformer.scale_


def baseline_on_subset(workbook: Path) -> dict[str, float]:
    timings = {}
    t = time.perf_counter()
    frame = pd.read_excel(workbook, engine="openpyxl")
    timings["read"] = time.perf_counter() - t
    customers = clean_customers(
        frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v)),
        reference_date=date(2026, 6, 30),
    ).customers
    numeric = scaled_numeric(customers)
    t = time.perf_counter()
    KNNImputer(n_neighbors=5).fit_transform(numeric)
    timings["impute"] = time.perf_counter() - t
    return timings


def silhouette_timings(rows: int) -> dict[str, float]:
    """Exact silhouette (baseline) vs the pipeline's seeded 10,000-customer sample, on a real embedding."""
    customers = clean_customers(
        read_customer_file(write_export(generate_export(rows, seed=3), Path(tempfile.mkdtemp()) / "s.parquet")).frame,
        reference_date=date(2026, 6, 30),
    ).customers
    embedding = PCA(n_components=0.9).fit_transform(CustomerFeatureTransformer().fit_transform(customers))
    labels = KMeans(3, n_init=3, random_state=0).fit_predict(embedding)
    t = time.perf_counter()
    exact = silhouette_score(embedding, labels)
    exact_seconds = time.perf_counter() - t
    t = time.perf_counter()
    sampled = silhouette_score(embedding, labels, sample_size=10_000, random_state=0)
    return {"baseline": exact_seconds, "ours": time.perf_counter() - t, "difference": abs(exact - sampled)}


def cached_input(rows: int, fmt: str, cache: Path) -> Path:
    """An N-customer export (seed 1) generated once with ``segmentation generate`` (bounded memory: written in
    parts past a million customers) and kept in ``cache``, keyed by the generator's source so that a changed
    generator makes a new file."""
    generator = hashlib.sha256((REPO / "segmentation_pipeline" / "synthetic.py").read_bytes()).hexdigest()[:8]
    path = cache / f"customers_{rows}_seed1_{generator}.{fmt}"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"partial_{path.name}")
    started = time.perf_counter()
    command = [sys.executable, "-m", "segmentation_pipeline.cli", "generate", "--rows", str(rows), "--seed", "1",
               "--out", str(partial)]  # fmt: skip
    subprocess.run(command, env=python_env(None), cwd=REPO, check=True, capture_output=True)
    partial.rename(path)
    partial.with_name(partial.stem + ".labels.csv").unlink(missing_ok=True)
    print(f"generated {rows:,} customers as {fmt} in {time.perf_counter() - started:.1f} s "
          f"({path.stat().st_size / 1e6:,.1f} MB): {path}", flush=True)  # fmt: skip
    return path


TARGETS = {1_000_000: (60.0, 3_000.0), 10_000_000: (900.0, 12_000.0)}  # issue 14: customers -> (seconds, MB)


def curve(sizes: list[int], fmt: str, cache: Path, work: Path, against: str, repeat: int, out: Path) -> None:
    """The whole graph at each size (beside ``against``), a table, and the curve as a chart and JSON in ``out``."""
    points: dict[str, list[dict]] = {"this": [], "previous": []}
    with previous_tree(against) if against != "none" else _no_tree() as tree:
        for rows in sizes:
            source = cached_input(rows, fmt, cache)
            previous: list[dict] = []
            this = measure_graph(source, work, None, repeat, previous, tree)
            for column, runs in (("this", this), ("previous", previous)):
                if runs:
                    summary = _summary(runs)
                    points[column].append({"customers": rows, "seconds": summary["process"],
                                           "run_seconds": summary["total"], "cpu_seconds": summary["cpu_s"],
                                           "peak_mb": summary["peak_mb"],
                                           "customers_per_second": rows / summary["process"],
                                           "steps": _median_steps(runs)})  # fmt: skip
            print(f"{rows:>12,} customers: {points['this'][-1]['seconds']:.1f} s, "
                  f"{points['this'][-1]['peak_mb']:,.0f} MB", flush=True)  # fmt: skip
            print_steps(this, previous, against)
    print_curve(points, fmt, repeat, against)
    save_curve(points, fmt, against, out)


def print_curve(points: dict[str, list[dict]], fmt: str, repeat: int, against: str) -> None:
    """The curve's table: customers, seconds, CPU seconds, peak MB, customers/s, beside the previous column."""
    print(f"\nthe curve: whole graph from {fmt} (process wall time from outside and the run's CPU time, start-up "
          f"included; peak RSS), median of {repeat} run(s)")  # fmt: skip
    header = f"{'customers':>12}{'seconds':>10}{'CPU s':>8}{'peak MB':>10}{'customers/s':>13}"
    if points["previous"]:
        header += f"{'prev s':>10}{'prev CPU':>10}{'prev MB':>10}{'prev c/s':>11}   previous = {describe(against)}"
    print(header)
    for position, point in enumerate(points["this"]):
        line = f"{point['customers']:>12,}{point['seconds']:>10.1f}{point['cpu_seconds']:>8.1f}"
        line += f"{point['peak_mb']:>10,.0f}"
        line += f"{point['customers_per_second']:>13,.0f}"
        if points["previous"]:
            old = points["previous"][position]
            line += f"{old['seconds']:>10.1f}{old['cpu_seconds']:>10.1f}{old['peak_mb']:>10,.0f}"
            line += f"{old['customers_per_second']:>11,.0f}"
        target = TARGETS.get(point["customers"])
        print(line + (f"   target <= {target[0]:.0f} s, <= {target[1]:,.0f} MB" if target else ""))


def save_curve(points: dict[str, list[dict]], fmt: str, against: str, out: Path) -> None:
    """``pipeline_curve.json`` (the figures) and ``pipeline_curve.html`` (Plotly, self-contained) in ``out``; a
    PNG too when kaleido is installed (no download here)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out.mkdir(parents=True, exist_ok=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    labels = {"this": describe("HEAD") + (" + uncommitted changes" if dirty else ""),
              "previous": describe(against) if against != "none" else ""}  # fmt: skip
    record = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "input_format": fmt,
              "machine": {"cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE")
                          * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
              "columns": {column: {"revision": labels[column], "points": found}
                          for column, found in points.items() if found}}  # fmt: skip
    (out / "pipeline_curve.json").write_text(json.dumps(record, indent=1))
    figure = make_subplots(rows=1, cols=2, subplot_titles=("whole run, seconds", "peak resident memory, MB"))
    for column, style in (("this", "solid"), ("previous", "dot")):
        found = points[column]
        if not found:
            continue
        x = [p["customers"] for p in found]
        for col, key in ((1, "seconds"), (2, "peak_mb")):
            trace = go.Scatter(x=x, y=[p[key] for p in found], mode="lines+markers", name=labels[column],
                               line={"dash": style}, legendgroup=column, showlegend=col == 1)
            figure.add_trace(trace, 1, col)
    targets = sorted(TARGETS.items())
    for col, index in ((1, 0), (2, 1)):
        figure.add_trace(go.Scatter(x=[n for n, _ in targets], y=[t[index] for _, t in targets], mode="markers",
                                    marker={"symbol": "x", "size": 11, "color": "crimson"}, name="target (issue 14)",
                                    legendgroup="target", showlegend=col == 1), 1, col)  # fmt: skip
    figure.update_xaxes(type="log", title_text="customers")
    figure.update_yaxes(type="log")
    figure.update_layout(title=f"segmentation pipeline from {fmt}: time and memory by customers", height=520,
                         width=1100, legend={"orientation": "h", "y": -0.2})  # fmt: skip
    figure.write_html(out / "pipeline_curve.html", include_plotlyjs=True)
    saved = ["pipeline_curve.json", "pipeline_curve.html"]
    if importlib.util.find_spec("kaleido") is not None:
        figure.write_image(out / "pipeline_curve.png")
        saved.append("pipeline_curve.png")
    print(f"saved {', '.join(saved)} in {out}")


ORIGINAL_CHILD = """
import json, sys
from datetime import date
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.impute import KNNImputer
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
import segmentation_pipeline.stages.features as features
from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.stages.cleaning import clean_customers
from segmentation_pipeline.stages.customers import as_batch
from segmentation_pipeline.stages.embedding import fit_pca
settings = PipelineSettings()
# The textbook imputer: scikit-learn's exact KNNImputer where the pipeline has PatternKNNImputer (same k, same
# standardised inputs: the feature transformer hands it the same matrix). Every donor, so the pipeline's donor cap
# (max_donors) and seed do not apply.
features.PatternKNNImputer = lambda n_neighbors, **_: KNNImputer(n_neighbors=n_neighbors)
source, out = sys.argv[1], sys.argv[2]
frame = pd.read_excel(source, engine="openpyxl")  # the textbook reader
text = frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v))
batch = as_batch(clean_customers(text, reference_date=date(2026, 6, 30)).customers)
transformer = features.CustomerFeatureTransformer(knn_neighbors=settings.knn_neighbors,
                                                  rare_level_share=settings.rare_level_share,
                                                  random_state=settings.random_state).fit(batch)
embedding = fit_pca(transformer.transform(batch), settings.pca_variance, settings.random_state).components
model = KMeans(n_clusters=settings.n_clusters, n_init=settings.n_init, random_state=settings.random_state)
labels = model.fit_predict(embedding)
metrics = {"silhouette": float(silhouette_score(embedding, labels)),  # exact: every pair of customers
           "davies_bouldin": float(davies_bouldin_score(embedding, labels)),
           "calinski_harabasz": float(calinski_harabasz_score(embedding, labels))}
pd.DataFrame({"customer_id": batch.customer_ids, "cluster": labels}).to_csv(out, index=False)
print(json.dumps({"customers": batch.n, **metrics}))
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@functools.cache
def _dagster_home() -> str:
    """The timed runs' Dagster instance: one folder for the whole benchmark (telemetry off, removed at exit), not
    the repository's .dagster_home/ that `segmentation run` records in when started from the repository root."""
    folder = tempfile.mkdtemp(prefix="bench_dagster_home_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    Path(folder, "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    return folder


def _wall(command: list[str], tree: Path | None) -> tuple[float, float, str]:
    """Wall seconds of a whole child process (start-up included), its CPU seconds (user + system, its own children
    included: a figure a busy shared machine disturbs less than wall time) and its standard output."""
    env = python_env(tree)
    env["DAGSTER_HOME"] = _dagster_home()  # a persistent instance, as `make run` has, outside the repository
    cpu = _children_cpu()
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, cwd=tree or REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode:
        sys.exit(f"{' '.join(command[:4])} failed: {completed.stderr.strip().splitlines()[-1:]}")
    return seconds, _children_cpu() - cpu, completed.stdout


def versus_original(rows: int, work: Path, against: str, repeat: int) -> None:
    """The whole process from an xlsx of ``rows`` customers: ``segmentation run`` (this checkout, and ``against``)
    next to the original method, wall time from outside, start-up included."""
    workbook = write_export(generate_export(rows, seed=1), work / f"customers_{rows}.xlsx")
    print(f"{rows:,} customers as xlsx ({workbook.stat().st_size / 1e6:.1f} MB); whole process, wall time from "
          "outside, start-up included", flush=True)  # fmt: skip

    def ours(tree: Path | None) -> tuple[float, float]:
        folder = work / f"run_{time.monotonic_ns()}"
        try:
            seconds, cpu, _ = _wall([sys.executable, "-m", "segmentation_pipeline.cli", "run", "--input", str(workbook),
                                     "--warehouse", str(folder / "w.duckdb")], tree)  # fmt: skip
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return seconds, cpu

    this: list[tuple[float, float]] = []
    previous: list[tuple[float, float]] = []

    def ours_in_turn(tree: Path | None, runs: int) -> None:
        for _ in range(runs):
            this.append(ours(None))
            print(f"  segmentation run, this checkout: {this[-1][0]:.1f} s ({this[-1][1]:.1f} s CPU)", flush=True)
            if tree is not None:
                previous.append(ours(tree))
                print(f"  segmentation run, {describe(against)}: {previous[-1][0]:.1f} s ({previous[-1][1]:.1f} s CPU)",
                      flush=True)  # fmt: skip

    # Our runs on both sides of the original method's one (minutes long): a slow spell of a shared machine during
    # it shows in our runs too.
    with previous_tree(against) if against != "none" else _no_tree() as tree:
        ours_in_turn(tree, (repeat + 1) // 2)
        original, original_cpu, output = _wall([sys.executable, "-c", ORIGINAL_CHILD, str(workbook),
                                                str(work / "original.csv")], None)  # fmt: skip
        print(f"  original method: {original:.1f} s ({original_cpu:.1f} s CPU)", flush=True)
        ours_in_turn(tree, repeat // 2)
    metrics = json.loads(output.strip().splitlines()[-1])
    print(f"  original method (openpyxl, exact KNNImputer, exact silhouette): {original:.1f} s ({original_cpu:.1f} s "
          f"CPU; silhouette {metrics['silhouette']:.3f}, {metrics['customers']:,} customers)", flush=True)  # fmt: skip
    print(f"\n{'whole process, ' + format(rows, ',') + ' customers from xlsx':<52}{'wall s':>9}{'vs original':>13}"
          f"{'CPU s':>9}{'vs original':>13}")  # fmt: skip
    rows_out = [("original method", original, original_cpu)]
    rows_out.append((f"segmentation run, this checkout (median of {repeat})", statistics.median(t for t, _ in this),
                     statistics.median(c for _, c in this)))  # fmt: skip
    if previous:
        rows_out.append((f"segmentation run, {describe(against)[:30]}", statistics.median(t for t, _ in previous),
                         statistics.median(c for _, c in previous)))  # fmt: skip
    for label, seconds, cpu in rows_out:
        print(f"{label:<52}{seconds:>9.1f}{original / seconds:>12.1f}x{cpu:>9.1f}{original_cpu / cpu:>12.1f}x")
    print("target (issue 14): >= 30x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="customers in the timed export")
    parser.add_argument("--format", choices=["xlsx", "parquet"], help="input of --rows (default xlsx) and of "
                        "--curve (default parquet)")  # fmt: skip
    parser.add_argument("--curve", help="comma-separated sizes (e.g. 10000,100000,1000000): the time/memory curve")
    parser.add_argument("--versus-original", type=int, metavar="N", help="the whole process from an N-customer "
                        "xlsx: segmentation run vs the original method (openpyxl, KNNImputer, exact silhouette)")
    parser.add_argument("--baseline-rows", type=int, default=5_000, help="customers in the like-for-like subset")
    parser.add_argument("--silhouette-rows", type=int, default=30_000, help="customers for exact vs sampled")
    parser.add_argument("--skip-subset", action="store_true", help="--rows: only the graph, no like-for-like part")
    parser.add_argument("--against", default="HEAD~1", help="git revision measured beside this checkout ('none')")
    parser.add_argument("--repeat", type=int, default=1, help="graph runs of each checkout (median printed)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "segmentation_bench_inputs",
                        help="--curve: where the generated inputs are kept between runs")  # fmt: skip
    parser.add_argument("--out", type=Path, help="--curve: where the chart and JSON go (default: --cache)")
    parser.add_argument("--n-init", type=int, help="K-means restarts of the timed runs (default: the setting's)")
    args = parser.parse_args()
    if args.n_init:  # read by every graph child, of this checkout and of --against
        os.environ["BENCH_N_INIT"] = str(args.n_init)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.versus_original:
            versus_original(args.versus_original, work, args.against, args.repeat)
            return
        if args.curve:
            sizes = [int(size.replace("_", "")) for size in args.curve.split(",")]
            curve(sizes, args.format or "parquet", args.cache, work, args.against, args.repeat, args.out or args.cache)
            return
        fmt = args.format or "xlsx"
        t = time.perf_counter()
        source = write_export(generate_export(args.rows, seed=1), work / f"big.{fmt}")
        print(f"generated {args.rows:,} customers as {fmt} in {time.perf_counter() - t:.1f} s "
              f"({source.stat().st_size / 1e6:.1f} MB)")  # fmt: skip

        graph_side_by_side(source, work, args.against, args.repeat, args.rows)
        if args.skip_subset:
            return

        subset = write_export(generate_export(args.baseline_rows, seed=2), work / "subset.xlsx")
        ours = ours_on_subset(subset)
        baseline = baseline_on_subset(subset)
        print(f"\nlike for like on {args.baseline_rows:,} customers (seconds):")
        print(f"{'stage':<12}{'baseline':>12}{'ours':>10}{'speed-up':>10}   baseline = openpyxl / KNNImputer / exact")
        for stage in ("read", "impute"):
            print(f"{stage:<12}{baseline[stage]:>12.2f}{ours[stage]:>10.2f}{baseline[stage] / ours[stage]:>9.0f}x")
        silhouette = silhouette_timings(args.silhouette_rows)
        print(f"silhouette on {args.silhouette_rows:,}: exact {silhouette['baseline']:.2f} s, sampled (10,000) "
              f"{silhouette['ours']:.2f} s, |difference| {silhouette['difference']:.4f}")  # fmt: skip
        scale = (args.rows / args.baseline_rows) ** 2
        print(f"baseline KNNImputer extrapolated to {args.rows:,} customers (O(n^2)): "
              f"~{baseline['impute'] * scale:,.0f} s")  # fmt: skip
        print(f"\npeak RSS of the whole benchmark process: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
