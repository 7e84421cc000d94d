"""The `segmentation` command: run the pipeline, generate synthetic exports, and the other entry points.

Errors reach the user as one line on stderr and a non-zero exit code, never as a traceback (set
SEGMENTATION_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from segmentation_pipeline.config import default_input_path, default_warehouse_path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
Command = Callable[[argparse.Namespace], int]


def _warehouse(args: argparse.Namespace) -> Path:
    return Path(args.warehouse) if getattr(args, "warehouse", None) else default_warehouse_path()


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    from segmentation_pipeline.runner import run_pipeline

    input_path = Path(args.input) if args.input else default_input_path()
    warehouse = _warehouse(args)
    print(f"segmentation run: {input_path} -> {warehouse}", file=sys.stderr, flush=True)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    summary = run_pipeline(input_path, warehouse, sheet=args.sheet, instance=instance, show_progress=True)
    if not summary.success:
        print(f"error: {summary.error}", file=sys.stderr)
        return EXIT_FAILED
    tiers = ", ".join(f"{t} {summary.tier_counts.get(t, 0)}" for t in ("High", "Medium", "Low"))
    print(f"customers:       {summary.customers}")
    print(f"k:               {summary.k}")
    print(f"silhouette:      {summary.silhouette:.3f}")
    print(f"Davies-Bouldin:  {summary.davies_bouldin:.3f}")
    print(f"tiers:           {tiers}")
    print(f"model version:   {summary.model_version}")
    print(f"report:          {summary.report_path}")
    print(f"warehouse:       {warehouse}")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from segmentation_pipeline.synthetic import generate_export, write_export, write_labels

    out = Path(args.out)
    export = generate_export(args.rows, seed=args.seed, header=args.header)
    write_export(export, out)
    labels = out.with_name(out.stem + ".labels.csv")
    write_labels(export, labels)
    print(f"wrote {args.rows} customers to {out} (planted groups: {labels})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segmentation", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="ingest a workbook and materialise every asset into the warehouse")
    run.add_argument("--input", help=f"xlsx, csv or parquet export (default: {default_input_path()})")
    run.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    run.add_argument("--sheet", help="sheet to read (default: the one holding the customer table)")
    run.set_defaults(handler=cmd_run)

    generate = commands.add_parser("generate", help="write a synthetic export with planted behaviour groups")
    generate.add_argument("--rows", type=int, required=True, help="number of customers")
    generate.add_argument("--out", required=True, help="output file (.xlsx, .csv or .parquet)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--header", choices=["2023", "2022"], default="2023", help="export generation")
    generate.set_defaults(handler=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:  # the last line of defence: one line, no traceback
        if os.environ.get("SEGMENTATION_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
