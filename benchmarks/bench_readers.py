"""Benchmark the customer-file reader against pandas' Excel engines.

    .venv/bin/python benchmarks/bench_readers.py --rows 50000

Writes a synthetic 2023-style export (33 columns of mixed types, xlsxwriter ``constant_memory``) into a temp
directory, then reads it with ``read_customer_file`` and the baselines ``pandas.read_excel(engine="calamine")``
and ``pandas.read_excel(engine="openpyxl")``, each in a fresh subprocess so peak memory is measured per reader
(``ru_maxrss`` of the child, minus the child's baseline after imports; this includes calamine's Rust-side
copy of the sheet, which tracemalloc cannot see). ``--tracemalloc`` adds the peak of Python allocations from a
second run (tracemalloc slows the readers ~2x, so timings always come from the untraced run).
Self-contained on purpose: it does not import the project's fixture generators.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

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
    """Run one reader in this (fresh) process: seconds, rows, peak-RSS growth, and optionally tracemalloc peak."""
    import pandas  # noqa: F401  - imports are the baseline, not the reader's cost
    import python_calamine  # noqa: F401

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
    return {"rows": n, "seconds": seconds, "py_peak_mb": peak / 2**20, "rss_growth_mb": (rss_after - rss_before) / 1024}


def _child(reader: str, path: Path, trace: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", reader, str(path)] + (["--tracemalloc"] if trace else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="data rows in the generated workbook")
    parser.add_argument("--skip-openpyxl", action="store_true", help="openpyxl is ~20x slower; skip it")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report the tracemalloc peak (a second, ~2x slower run)"
    )
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(*args.child, trace=args.tracemalloc)))
        return

    readers = [r for r in READERS if not (args.skip_openpyxl and r == "pandas_openpyxl")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_customers.xlsx"
        t0 = time.perf_counter()
        write_workbook(path, args.rows)
        print(f"wrote {args.rows} rows x {len(HEADER)} cols, {path.stat().st_size / 2**20:.1f} MB "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        print(f"{'reader':20} {'rows':>8} {'seconds':>8} {'rows/s':>10} {'peak RSS +MB':>13} {'tracemalloc MB':>15}")
        for reader in readers:
            m = _child(reader, path, trace=False)
            traced = _child(reader, path, trace=True)["py_peak_mb"] if args.tracemalloc else float("nan")
            print(f"{reader:20} {m['rows']:>8} {m['seconds']:>8.2f} {m['rows'] / m['seconds']:>10,.0f} "
                  f"{m['rss_growth_mb']:>13.1f} {traced:>15.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
