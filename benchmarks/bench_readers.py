"""Benchmark the customer-file reader against the previous commit's and against pandas' Excel engines.

    .venv/bin/python benchmarks/bench_readers.py --rows 50000
    .venv/bin/python benchmarks/bench_readers.py --file /tmp/x1m.xlsx --repeat 1 --skip-pandas [--against HEAD~1]

Writes a synthetic 2023-style export (33 columns of mixed types, xlsxwriter ``constant_memory``) into a temp
directory, or takes ``--file`` (e.g. one written by ``segmentation generate``), then reads it with
``read_customer_file`` of this checkout and of ``--against`` (default ``HEAD~1``, the previous commit, checked out
beside this one by ``baseline.py``; ``none`` to skip) and the baselines ``pandas.read_excel(engine="calamine")``
and ``pandas.read_excel(engine="openpyxl")``, each in a fresh subprocess so peak memory is measured per reader:
``peak MB`` is the child's whole peak RSS, ``+MB`` its growth over the child's baseline after imports (both
include calamine's Rust-side copy of the sheet, which tracemalloc cannot see). The two checkouts run in turn,
``--repeat`` times each, and the median is printed, so a slow spell of the shared machine hits both.
``--tracemalloc`` adds the peak of Python allocations from a second run (tracemalloc slows the readers ~2x, so
timings always come from the untraced run). Self-contained on purpose: it does not import the project's fixture
generators.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import REPO, describe, previous_tree, python_env  # noqa: E402  (the benchmarks' own helper)

HEADER = [
    "CustomerID", "SegmentID", "FocusTypeID", "Occupation", "DateofBirth", "Gender", "isPep", "HighIncomeHW",
    "ExpVolume", "AccountType", "FinancingType", "SubscribedChannels", "Nationality", "PlaceofBirth", "Residence",
    "Province", "City", "CustomerSince", "Industry", "IncorporatedSince", "ActualVolume", "AvgBalance", "NumAlerts",
    "NonFacetoFaceUsage", "fundRemitUsage", "onlineFTusage", "CashUsage", "CTRMatch", "PreviouslyReported",
    "ModelID", "AssessmentType", "PrevAssessmentID", "DateofBirth",
]  # fmt: skip

OCCUPATIONS = ["Pension", "Private/NGO Employee", "Self Employed in Agriculture", "Casual worker", "Housewife"]
ACCOUNTS = ["Aasan Account- Current", "First  Pension Account", "STAFF SALARY ACCOUNT", "Mashal Saving Account"]
PROVINCES = ["Punjab", "Sindh", "KPK", "Balochistan", "Gilgat/Baltistan"]
CITIES = ["LAHORE", "KARACHI", "PESHAWAR", "QUETTA", "MULTAN", "FAISALABAD", "GILGIT", "SUKKUR"]
CHANNELS = ["ATM", "MobileApp", "Internet Banking", None]


def write_workbook(path: Path, rows: int, seed: int = 7) -> None:
    """A 33-column customer sheet with ints, floats, dates, text and blanks, written row by row."""
    import xlsxwriter

    rng = random.Random(seed)
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = wb.add_worksheet("Customers")
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    ws.write_row(0, 0, HEADER)
    base = dt.date(1940, 1, 1)
    for r in range(1, rows + 1):
        dob = base + dt.timedelta(days=rng.randrange(0, 30000))
        since = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(0, 8000))
        values = [
            1000000 + r, 1.0 if rng.random() < 0.9 else None, 3, rng.choice(OCCUPATIONS), dob,
            rng.choice("MF"), rng.random() < 0.02, int(rng.random() < 0.01), rng.choice([30000, 50000, 250000]) * 1.0,
            rng.choice(ACCOUNTS), None, rng.choice(CHANNELS), "PK", None, "PK", rng.choice(PROVINCES),
            rng.choice(CITIES), since, None, None, round(rng.lognormvariate(10, 2), 2), None, rng.randrange(0, 3),
            rng.randrange(0, 50), None, rng.randrange(0, 20), round(rng.lognormvariate(9, 2), 2), 0, 0, 12, 1, None,
            dob,
        ]  # fmt: skip
        for c, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, dt.date):
                ws.write_datetime(r, c, v, date_fmt)
            else:
                ws.write(r, c, v)
    wb.close()


READERS = ("read_customer_file", "pandas_calamine", "pandas_openpyxl")
PREVIOUS = "read_customer_file (previous)"  # this checkout's reader in the --against tree


def _read(reader: str, path: str) -> int:
    import pandas as pd

    from segmentation_pipeline.stages.ingestion import read_customer_file

    if reader == "read_customer_file":
        return len(read_customer_file(path).frame)
    if reader == "pandas_calamine":
        return len(pd.read_excel(path, engine="calamine"))
    if reader == "pandas_openpyxl":
        return len(pd.read_excel(path, engine="openpyxl"))
    raise SystemExit(f"unknown reader {reader}")


def _measure(reader: str, path: str, trace: bool) -> dict[str, float]:
    """Run one reader in this (fresh) process: seconds, rows, peak-RSS growth and whole peak RSS, optionally the
    tracemalloc peak."""
    import pandas  # noqa: F401  - imports are the baseline, not the reader's cost
    import python_calamine  # noqa: F401
    import python_calamine_plus  # noqa: F401  - the xlsx stream since a89a059

    import segmentation_pipeline.stages.ingestion  # noqa: F401

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    n = _read(reader, path)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else float("nan")
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"rows": n, "seconds": seconds, "py_peak_mb": peak / 2**20, "rss_growth_mb": (rss_after - rss_before) / 1024,
            "peak_mb": rss_after / 1024}  # fmt: skip


def _child(reader: str, path: Path, trace: bool, tree: Path | None = None) -> dict[str, float]:
    """One reader in a fresh process importing the package from ``tree`` (None: this checkout)."""
    cmd = [sys.executable, __file__, "--child", reader, str(path)] + (["--tracemalloc"] if trace else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree or REPO, env=python_env(tree))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="data rows in the generated workbook")
    parser.add_argument("--file", type=Path, help="read this file instead of generating one")
    parser.add_argument("--against", default="HEAD~1", help="git revision whose reader is measured too ('none')")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader (median printed)")
    parser.add_argument("--skip-openpyxl", action="store_true", help="openpyxl is ~20x slower; skip it")
    parser.add_argument("--skip-pandas", action="store_true", help="skip both pandas baselines")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report the tracemalloc peak (a second, ~2x slower run)"
    )
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(*args.child, trace=args.tracemalloc)))
        return

    readers = ["read_customer_file"]
    if args.against != "none":
        readers.append(PREVIOUS)
    if not args.skip_pandas:
        readers += [r for r in READERS[1:] if not (args.skip_openpyxl and r == "pandas_openpyxl")]
    with contextlib.ExitStack() as stack:
        tree = stack.enter_context(previous_tree(args.against)) if args.against != "none" else None
        if args.file is not None:
            path = args.file
            print(f"reading {path} ({path.stat().st_size / 2**20:.1f} MB)")
        else:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "bench_customers.xlsx"
            t0 = time.perf_counter()
            write_workbook(path, args.rows)
            print(f"wrote {args.rows} rows x {len(HEADER)} cols, {path.stat().st_size / 2**20:.1f} MB "
                  f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        if tree is not None:
            print(f"previous = {describe(args.against)}")
        runs: dict[str, list[dict[str, float]]] = {r: [] for r in readers}
        for _ in range(args.repeat):  # in turn: a slow spell of the machine hits every reader
            for reader in readers:
                if reader == PREVIOUS:
                    runs[reader].append(_child("read_customer_file", path, trace=False, tree=tree))
                else:
                    runs[reader].append(_child(reader, path, trace=False))
        print(f"median of {args.repeat} run(s)")
        print(f"{'reader':30} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'peak MB':>8} {'+MB':>8} "
              f"{'tracemalloc MB':>15}")  # fmt: skip
        for reader in readers:
            m = _median(runs[reader])
            traced = float("nan")
            if args.tracemalloc:
                name, where = ("read_customer_file", tree) if reader == PREVIOUS else (reader, None)
                traced = _child(name, path, trace=True, tree=where)["py_peak_mb"]
            print(f"{reader:30} {m['rows']:>9,.0f} {m['seconds']:>8.2f} {m['rows'] / m['seconds']:>10,.0f} "
                  f"{m['peak_mb']:>8,.0f} {m['rss_growth_mb']:>8,.0f} {traced:>15.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
