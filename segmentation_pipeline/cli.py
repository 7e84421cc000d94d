"""The `segmentation` command: run the pipeline, generate synthetic exports, and the other entry points.

Errors reach the user as one line on stderr and a non-zero exit code, never as a traceback (set
SEGMENTATION_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from segmentation_pipeline.config import default_input_path, default_warehouse_path, staging_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
Command = Callable[[argparse.Namespace], int]


def _warehouse(args: argparse.Namespace) -> Path:
    return Path(args.warehouse) if getattr(args, "warehouse", None) else default_warehouse_path()


@contextmanager
def reading_input_ahead(input_path: Path, warehouse: Path, sheet: str | None) -> Iterator[None]:
    """The input staged beside the warehouse (as the run stages it) and read ahead (``ingestion.read_ahead``) within
    the block. Anything in the way (no such file, a warehouse folder that cannot be written) skips this: the run
    itself then says what, in its one line."""
    from segmentation_pipeline.stages.ingestion import read_ahead, stage_file
    from segmentation_pipeline.warehouse.store import Warehouse, WarehouseUnavailable

    try:
        Warehouse(warehouse).check_usable()  # nothing is staged beside a warehouse that cannot be written
        staged, _ = stage_file(input_path, staging_dir(warehouse))
    except (OSError, WarehouseUnavailable):
        yield
        return
    with read_ahead(staged, sheet, name=input_path.name):
        yield


def cmd_run(args: argparse.Namespace) -> int:
    # A one-shot command that makes millions of objects and few cycles: the garbage collector looks for cycles every
    # 50,000 allocations instead of 700, and not in what start-up loaded (frozen below). Garbage collection took
    # 0.24 s of a 50,000-customer run instead of 1.2 s.
    gc.set_threshold(50_000, 20, 20)
    from segmentation_pipeline.stages.policy import PolicyError, load_policy

    input_path = Path(args.input) if args.input else default_input_path()
    warehouse = _warehouse(args)
    try:
        policy = load_policy(args.rules)  # a bad rules file stops the run before anything is read
    except PolicyError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"segmentation run: {input_path} -> {warehouse} (policy {policy.source} {policy.version})", file=sys.stderr,
          flush=True)  # fmt: skip
    with reading_input_ahead(input_path, warehouse, args.sheet):
        # Dagster, scikit-learn and the rest load (about 4 s, one core) while the file is read on the other.
        from segmentation_pipeline.orchestration.resources import SegmentationSettings
        from segmentation_pipeline.runner import open_run_history, run_pipeline

        instance, history = open_run_history(args.dagster_home)  # the one `dg dev` shows: runs appear in the UI
        print(f"run history: {history}", file=sys.stderr, flush=True)
        settings = SegmentationSettings(rules_file=str(Path(args.rules).resolve())) if args.rules else None
        gc.freeze()  # start-up's objects live as long as the command: full collections stop walking them
        with instance:
            summary = run_pipeline(input_path, warehouse, sheet=args.sheet, settings=settings, instance=instance,
                                   show_progress=True)  # fmt: skip
    if not summary.success:
        print(f"error: {summary.error}", file=sys.stderr)
        return EXIT_FAILED
    tiers = ", ".join(f"{t} {summary.tier_counts.get(t, 0)}" for t in ("High", "Medium", "Low"))
    print(f"customers:       {summary.customers}")
    print(f"k:               {summary.k}")
    print(f"silhouette:      {summary.silhouette:.3f}")
    print(f"Davies-Bouldin:  {summary.davies_bouldin:.3f}")
    print(f"tiers:           {tiers}")
    raised = ", ".join(f"{rule} {n}" for rule, n in summary.raised_by_rule.items() if n) or "none"
    print(f"raised by rules: {raised}")
    print(f"model version:   {summary.model_version}")
    print(f"report:          {summary.report_path}")
    print(f"warehouse:       {warehouse}")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from segmentation_pipeline.synthetic import generate_file

    # Counts what was written: customers, rows and, for xlsx, sheets. Millions of customers to Parquet or CSV are
    # generated and written a part at a time (bounded memory).
    written, labels = generate_file(args.rows, Path(args.out), seed=args.seed, header=args.header)
    print(f"{written.describe()} (planted groups: {labels})")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """`segmentation models list|promote VERSION|rollback`: the model registry (table model_versions)."""
    from segmentation_pipeline.warehouse import Warehouse, registry

    if args.action == "promote" and not args.version:
        print("error: segmentation models promote VERSION: which version? (see `segmentation models list`)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    warehouse = Warehouse(_warehouse(args))
    if not warehouse.exists():
        print(f"error: no warehouse at {warehouse.path}: run the pipeline first (segmentation run)", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.action == "promote":
            replaced = registry.promote(warehouse, args.version)
            print(f"active model: {args.version} (was {replaced or 'none'})")
        elif args.action == "rollback":
            current, target = registry.rollback(warehouse)
            print(f"active model: {target} (rolled back from {current})")
        else:
            versions = registry.list_versions(warehouse)
            if versions.empty:
                print("no model versions yet: run the pipeline first (segmentation run)")
                return EXIT_OK
            print(f"{'version':<28} {'status':<9} {'k':>3} {'silhouette':>10} {'customers':>9}  created / quality")
            for row in versions.itertuples(index=False):
                silhouette = json.loads(row.metrics or "{}").get("silhouette", float("nan"))
                created = str(row.created_at)[:19]
                print(
                    f"{row.model_version:<28} {row.status:<9} {row.k:>3} {silhouette:>10.3f} {row.n_customers:>9}  "
                    f"{created}  {row.quality_notes}"
                )
            return EXIT_OK
    except registry.RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    # The API and the next run pick the active model up at once; the published tables follow on the next run.
    print("materialise cluster_assignments and downstream for the published export (or wait for the next run) "
          "to republish the tiers", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """`segmentation report [--open]`: rebuild reports/latest.html from the warehouse (no re-clustering)."""
    from segmentation_pipeline.reporting import build_segment_report, latest_report_path, write_html
    from segmentation_pipeline.warehouse import Warehouse

    warehouse = Warehouse(_warehouse(args))
    if not warehouse.exists():
        print(f"error: no warehouse at {warehouse.path}: run the pipeline first (segmentation run)", file=sys.stderr)
        return EXIT_FAILED
    report = build_segment_report(warehouse)  # LookupError (nothing materialised yet) -> one line via main()
    latest = write_html(report.html, latest_report_path(warehouse.path)).resolve()
    tiers = ", ".join(f"{tier} {count:,}" for tier, count in report.tier_counts.items())
    print(f"report:          {latest}")
    print(f"model version:   {report.model_version}")
    print(f"customers:       {report.customers:,} ({tiers})")
    print(f"outliers:        {len(report.outliers):,}")
    print(f"size:            {report.size_bytes / 1e6:.1f} MB")
    if args.open:
        import webbrowser

        if not webbrowser.open(latest.as_uri()):
            print(f"could not open a browser: open {latest} yourself", file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """`segmentation serve`: the real-time scoring API (keys from $SEGMENTATION_API_KEYS or its _FILE)."""
    from segmentation_pipeline.api.server import ServeError, serve

    try:
        serve(
            warehouse_path=_warehouse(args),
            host=args.host,
            port=args.port,
            insecure_no_auth=args.insecure_no_auth,
            check_interval=args.check_interval,
            access_log=args.access_log,
            decisions_dir=Path(args.decisions_dir) if args.decisions_dir else None,
            decisions_mode=args.decisions,
            decisions_on_error=args.decisions_on_error,
        )
    except ServeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_decisions(args: argparse.Namespace) -> int:
    """`segmentation decisions compact`: the API's decision log, segments -> daily files, then retention."""
    from segmentation_pipeline.warehouse import decisions

    folder = Path(args.decisions_dir).absolute() if args.decisions_dir else decisions.folder_for(_warehouse(args))
    try:
        older_than, retention = decisions.maintenance_from_environment()
        if args.older_than:
            older_than = decisions.parse_duration(args.older_than, "--older-than")
        if args.retention:
            retention = decisions.parse_duration(args.retention, "--retention")
    except decisions.DecisionSettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not folder.is_dir():
        print(f"no decision log at {folder} yet: nothing to do")
        return EXIT_OK
    done = decisions.maintain(folder, older_than=older_than, retention=retention)
    print(f"decision log:    {folder}")
    print(f"compacted:       {done.compacted_segments} segment(s) into {len(done.days_written)} daily file(s)"
          f"{': ' + ', '.join(done.days_written) if done.days_written else ''}")  # fmt: skip
    print(f"removed:         {len(done.days_removed)} day(s) older than {retention.days} days"
          f"{': ' + ', '.join(done.days_removed) if done.days_removed else ''}")  # fmt: skip
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """`segmentation explain CUSTOMER_ID [--as-of T] [--json]`: the rating a customer had, from the history, and
    the API's latest decisions about the customer."""
    from datetime import datetime

    from segmentation_pipeline.stages.tiering import TIER_RANK
    from segmentation_pipeline.warehouse import Warehouse, decisions, snapshots

    warehouse = Warehouse(_warehouse(args))
    as_of = None
    if args.as_of:
        try:
            as_of = datetime.fromisoformat(args.as_of)
        except ValueError:
            print(f"error: --as-of {args.as_of!r} is not a date or timestamp (e.g. 2026-11-30T08:00)", file=sys.stderr)
            return EXIT_USAGE
        as_of = as_of if as_of.tzinfo else as_of.astimezone()
    api = decisions.recent(decisions.folder_for(warehouse.path), args.customer_id, as_of=as_of)
    published = warehouse.exists() and snapshots.SNAPSHOTS_TABLE in warehouse.table_names()
    explained = snapshots.explain(warehouse, args.customer_id, as_of) if published else None
    if explained is None:
        moment = f"at {as_of.isoformat()}" if as_of else "now"
        if not api:
            why = f"had no published rating {moment}" if published else f"has no rating: no published snapshot in " \
                f"{warehouse.path} (run the pipeline first) and no API decision"
            print(f"error: customer {args.customer_id} {why}", file=sys.stderr)
            return EXIT_FAILED
        if args.json:
            print(snapshots.to_json({"customer_id": args.customer_id, "published_rating": None, "api_decisions": api}))
            return EXIT_OK
        print(f"customer {args.customer_id}: no published rating {moment}")
        _print_api_decisions(api)
        return EXIT_OK
    if args.json:
        print(snapshots.to_json({**explained, "api_decisions": api}))
        return EXIT_OK
    print(f"customer {explained['customer_id']}: {explained['risk_tier']} risk (score {explained['risk_score']:.2f})")
    basis = {"segment": "its segment's tier", "score": "its own risk score", "rule": "a policy rule"}
    print(f"  rated {explained['risk_tier']} by {basis.get(str(explained['rating_basis']), 'its segment')}; segment "
          f"(cluster {explained['cluster']}) is {explained['segment_tier'] or 'unrecorded'}")  # fmt: skip
    print(f"  model {explained['model_version']}, policy {explained['policy_version'] or 'unrecorded'}, "
          f"snapshot {explained['snapshot']}, published {explained['published_at']}")  # fmt: skip
    before = explained["tier_before_rules"]
    if explained["rating_basis"] == "rule":
        print(f"  segment and score alone gave {before}; policy rules raised it to {explained['risk_tier']}")
    rules = explained["rules"]
    if rules:
        print("policy rules that apply:")
        for rule in rules:  # type: ignore[attr-defined]
            binding = TIER_RANK.get(str(rule["min_tier"]), 9) < TIER_RANK.get(str(before), 9)
            raised = " [raised the rating]" if binding else ""
            print(f"  {rule['id']}: {rule['condition']} -> at least {rule['min_tier']}{raised}. {rule['rationale']}")
    print("reasons:")
    for rank, reason in enumerate(explained["reasons"], start=1):  # type: ignore[arg-type]
        typical = f"segment {_number(reason['segment_typical'])}, population {_number(reason['population_typical'])}"
        print(f"  {rank}. {reason['indicator']} = {_number(reason['value'])} ({typical}): "
              f"{reason['contribution']:+.3f}")  # fmt: skip
    _print_api_decisions(api)
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    """`segmentation sql [QUERY]`: SQL on the warehouse, read-only; without a query, a prompt (or a script on stdin)."""
    from segmentation_pipeline.warehouse import Warehouse, sql
    from segmentation_pipeline.warehouse.store import WarehouseBusy, WarehouseUnavailable

    warehouse = Warehouse(_warehouse(args))
    try:
        output = sql.Output.to(sys.stdout, args.format, args.max_rows)
    except ValueError as error:
        print(f"error: --max-rows: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.query is not None:
            sql.run(warehouse, args.query, output)
            return EXIT_OK
        with warehouse.connect(read_only=True):  # a missing or locked warehouse is said before any prompt
            pass
    except (sql.SqlError, WarehouseBusy, WarehouseUnavailable, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `segmentation sql ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return EXIT_OK
    typing = sys.stdin.isatty()
    if typing:
        sql.enable_line_editing()
        print(f"{warehouse.path} (read-only). Statements end with ';'. .help for help, .quit to leave.")
    failed = sql.interactive(warehouse, output, prompts=typing)
    return EXIT_FAILED if failed and not typing else EXIT_OK


def _print_api_decisions(api: list[dict[str, object]]) -> None:
    if not api:
        print("API decisions: none recorded")
        return
    print(f"API decisions (latest {len(api)}):")
    for row in api:
        moment = row["decided_at"].isoformat(timespec="seconds")  # type: ignore[attr-defined]
        if row["outcome"] == "rated":
            rules = f", rules {', '.join(row['rule_ids'])}" if row["rule_ids"] else ""  # type: ignore[arg-type]
            print(f"  {moment}  {row['risk_tier']} (score {row['risk_score']:.2f}, cluster {row['cluster']}{rules}), "
                  f"model {row['model_version']}, policy {row['policy_version']}, request {row['request_id']}")
        else:
            fields = ", ".join(map(str, row["problem_fields"])) or "another customer of the batch"  # type: ignore
            print(f"  {moment}  refused (422: {fields}), request {row['request_id']}")


def _number(value: object) -> str:
    if value is None:
        return "unknown"
    number = float(value)  # type: ignore[arg-type]
    return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.3g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segmentation", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="ingest a workbook and materialise every asset into the warehouse")
    run.add_argument("--input", help=f"xlsx, csv or parquet export (default: {default_input_path()})")
    run.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    run.add_argument("--sheet", help="sheet to read (default: the one holding the customer table)")
    run.add_argument("--rules", help="policy rules file (default: $SEGMENTATION_RULES or the bundled "
                     "policy_rules.toml)")  # fmt: skip
    run.add_argument("--dagster-home", help="Dagster instance folder to record the run in (default: $DAGSTER_HOME, "
                     "else ./dagster.yaml's storage, as `dg dev` from here shows; else kept nowhere)")  # fmt: skip
    run.set_defaults(handler=cmd_run)

    generate = commands.add_parser("generate", help="write a synthetic export with planted behaviour groups")
    generate.add_argument("--rows", type=int, required=True, help="number of customers")
    generate.add_argument("--out", required=True, help="output file (.xlsx, .csv or .parquet)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--header", choices=["2023", "2022"], default="2023", help="export generation")
    generate.set_defaults(handler=cmd_generate)

    models = commands.add_parser("models", help="list the model versions, promote one, or roll back")
    models.add_argument("action", choices=["list", "promote", "rollback"])
    models.add_argument("version", nargs="?", help="model version to promote (see `segmentation models list`)")
    models.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    models.set_defaults(handler=cmd_models)

    report = commands.add_parser("report", help="regenerate reports/latest.html from the warehouse (no re-clustering)")
    report.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    report.add_argument("--open", action="store_true", help="open the report in the default web browser")
    report.set_defaults(handler=cmd_report)

    explain = commands.add_parser("explain", help="a customer's rating: tier, score, segment, the rules that raised "
                                  "it, reasons, model and policy (from the history); and the API's latest decisions")
    explain.add_argument("customer_id", help="the customer id as exported (text; leading zeros count)")
    explain.add_argument("--as-of", help="a moment in the past (ISO date or timestamp); default: now")
    explain.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    explain.set_defaults(handler=cmd_explain)

    query = commands.add_parser("sql", help="run SQL on the warehouse, read-only (no query: an interactive prompt)")
    query.add_argument("query", nargs="?", help="the SQL to run (several statements: separate them with ';'); "
                       "without it, a prompt (or the statements on stdin)")  # fmt: skip
    query.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table",
                       help="table (DuckDB's box, the first --max-rows rows), csv or json (every row)")  # fmt: skip
    query.add_argument("--max-rows", type=int, default=40, help="rows a table shows (default: 40)")
    query.set_defaults(handler=cmd_sql)
    decisions = commands.add_parser("decisions", help="the API's decision log: compact segments into daily files "
                                    "and apply retention")  # fmt: skip
    decisions.add_argument("action", choices=["compact"])
    decisions.add_argument("--older-than", help="compact segments older than this (36h, 7d, 90m; default: "
                           "$SEGMENTATION_DECISIONS_COMPACT_AFTER or 1d)")  # fmt: skip
    decisions.add_argument("--retention", help="remove days older than this (default: "
                           "$SEGMENTATION_DECISIONS_RETENTION or 3650d)")  # fmt: skip
    decisions.add_argument("--warehouse", help="DuckDB file the log sits beside (default: $SEGMENTATION_WAREHOUSE "
                           "or data/warehouse.duckdb)")  # fmt: skip
    decisions.add_argument("--decisions-dir", help="the decision log folder (default: $SEGMENTATION_DECISIONS_DIR or "
                           "<warehouse stem>_decisions beside the warehouse)")  # fmt: skip
    decisions.set_defaults(handler=cmd_decisions)

    serve = commands.add_parser("serve", help="run the real-time scoring API (FastAPI on uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--warehouse", help="DuckDB file (default: $SEGMENTATION_WAREHOUSE or data/warehouse.duckdb)")
    serve.add_argument("--insecure-no-auth", action="store_true", help="accept requests without an API key (tests)")
    serve.add_argument("--check-interval", type=float, default=2.0, help="seconds between active-model checks")
    serve.add_argument("--access-log", action="store_true", help="log every request line (paths carry customer ids)")
    serve.add_argument("--decisions", choices=["full", "hash-only", "off"],
                       help="decision log: record inputs too (full), only their hash, or nothing "
                       "(default: $SEGMENTATION_DECISIONS or full)")  # fmt: skip
    serve.add_argument("--decisions-dir", help="decision log folder (default: $SEGMENTATION_DECISIONS_DIR or "
                       "<warehouse stem>_decisions beside the warehouse)")  # fmt: skip
    serve.add_argument("--decisions-on-error", choices=["fail-open", "fail-closed"],
                       help="when the decision log cannot be written: keep scoring, or refuse with 503 "
                       "(default: $SEGMENTATION_DECISIONS_ON_ERROR or fail-open)")  # fmt: skip
    serve.set_defaults(handler=cmd_serve)
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
    except Exception as error:  # the last line of defence: one line, no traceback, no class name
        if os.environ.get("SEGMENTATION_DEBUG"):
            raise
        from segmentation_pipeline.orchestration.failures import plain_error

        print(f"error: {plain_error(type(error).__name__, str(error))}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
