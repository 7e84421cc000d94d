"""`segmentation sql` and the views for analysts, on the session's trained warehouse (read-only: shared).

Every SQL query of the README runs here verbatim, so the README's queries stay runnable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from segmentation_pipeline import cli
from segmentation_pipeline.warehouse import Warehouse, sql, views
from segmentation_pipeline_tests.api_fixtures import REPO
from segmentation_pipeline_tests.conftest import TrainedWarehouse

README = REPO / "README.md"


def readme_statements() -> list[str]:
    """Every statement of the README's ```sql blocks, as written."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [statement.query for block in blocks for statement in duckdb.extract_statements(block)]


def query(path: Path, text: str, parameters: list[object] | None = None) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(text, parameters or []).fetchall()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["sql", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_readme_query_runs_on_a_published_warehouse(trained_warehouse: TrainedWarehouse) -> None:
    statements = readme_statements()
    assert len(statements) >= 12, "the README's ```sql blocks were not found"
    warehouse = Warehouse(trained_warehouse.path)
    out = io.StringIO()
    try:  # all of them on one connection, as `segmentation sql` runs several statements: each result drawn
        assert sql.run(warehouse, "\n".join(statements), sql.Output.to(out, "table", max_rows=1)) == len(statements)
    except sql.SqlError as error:
        number = int(re.match(r"statement (\d+)", str(error)).group(1))  # type: ignore[union-attr]
        pytest.fail(f"README query failed: {error}\n{statements[number - 1]}")
    assert out.getvalue().count("┌") == len(statements)
    # The tier sizes query answers with the published tiers.
    out = io.StringIO()
    sql.run(warehouse, next(s for s in statements if "tier sizes" in s), sql.Output.to(out, "csv"))
    sizes = {row["risk_tier"]: int(row["customers"]) for row in csv.DictReader(io.StringIO(out.getvalue()))}
    published = dict(query(trained_warehouse.path, "SELECT risk_tier, count(*) FROM cluster_assignments GROUP BY 1"))
    assert sizes == published


def test_current_customer_risk_is_one_row_per_customer_with_its_rating(trained_warehouse: TrainedWarehouse) -> None:
    path = trained_warehouse.path
    (customers,) = query(path, "SELECT count(*) FROM cleaned_customers")[0]
    assert query(path, "SELECT count(*), count(DISTINCT customer_id) FROM current_customer_risk") == [
        (customers, customers)
    ]
    # Tier, score, rules and values are the published ones, customer by customer.
    assert query(path, """
        SELECT count(*) FROM current_customer_risk v JOIN cluster_assignments a USING (customer_id)
        JOIN cleaned_customers c USING (customer_id)
        WHERE v.risk_tier = a.risk_tier AND v.risk_score = a.risk_score AND v.cluster = a.cluster
          AND v.rule_ids = coalesce(a.rule_ids, []) AND v.exp_volume IS NOT DISTINCT FROM c.exp_volume
          AND v.is_pep IS NOT DISTINCT FROM c.is_pep""") == [(customers,)]  # fmt: skip
    # Reasons in rating_reasons' order; the snapshot is the published one.
    customer, reasons, text, snapshot = query(
        path, "SELECT customer_id, top_reasons, top_reasons_text, snapshot_id FROM current_customer_risk "
        "ORDER BY risk_score DESC LIMIT 1")[0]  # fmt: skip
    ranked = query(path, "SELECT indicator FROM rating_reasons WHERE customer_id = ? AND rank <= 3 ORDER BY rank",
                   [customer])  # fmt: skip
    assert reasons == [r[0] for r in ranked] and len(reasons) == 3
    assert text.split(", ")[0].startswith(reasons[0] + " ")
    assert query(path, "SELECT snapshot_id FROM snapshots WHERE status = 'published'") == [(snapshot,)]


def test_views_exist_after_a_run_with_every_column_described_here_and_in_the_readme(
    trained_warehouse: TrainedWarehouse,
) -> None:
    readme = README.read_text(encoding="utf-8")
    comments = query(trained_warehouse.path, "SELECT table_name, column_name, comment FROM duckdb_columns() "
                     "WHERE table_name IN (SELECT view_name FROM duckdb_views())")  # fmt: skip
    for view in views.VIEWS:
        columns = {column: comment for table, column, comment in comments if table == view.name}
        assert columns, f"view {view.name} missing after a run"
        assert all(columns.values()), f"{view.name}: columns without a description {columns}"
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{view.name}` |"))
        assert not [c for c in columns if f"`{c}`" not in row], f"README's {view.name} row lacks columns"
    # The first run: no tier changed, the model is the published one and the active one.
    assert query(trained_warehouse.path, "SELECT count(*) FROM latest_tier_changes") == [(0,)]
    (model,) = query(trained_warehouse.path, "SELECT model_version, status, rates_published_snapshot, silhouette, "
                     "smallest_cluster, activated_at IS NOT NULL FROM models")  # fmt: skip
    (fitted,) = query(trained_warehouse.path, "SELECT model_version, silhouette FROM kmeans_model")
    metrics = json.loads(query(trained_warehouse.path, "SELECT metrics FROM model_versions")[0][0])
    assert model == (fitted[0], "active", True, fitted[1], metrics["smallest_cluster"], True)


def test_latest_tier_changes_are_those_of_the_published_run_only(warehouse_copy: Path) -> None:
    """The stale answer of the old README query: an older run's migrations are not the latest changes."""
    with duckdb.connect(str(warehouse_copy)) as connection:
        (run_id,) = connection.execute("SELECT run_id FROM snapshots WHERE status = 'published'").fetchone()
        insert = "INSERT INTO tier_migrations VALUES (?, 'Low', 'High', 2, 0, 'old', 'new', ?)"
        connection.execute(insert, ["c-older", "an-older-run"])
        assert connection.execute("SELECT count(*) FROM latest_tier_changes").fetchone() == (0,)
        connection.execute(insert, ["c-latest", run_id])
        assert connection.execute("SELECT customer_id, old_tier, new_tier FROM latest_tier_changes").fetchall() == [
            ("c-latest", "Low", "High")
        ]


def test_sql_formats(trained_warehouse: TrainedWarehouse, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(trained_warehouse.path)
    top = "SELECT customer_id, risk_tier, rule_ids, published_at FROM current_customer_risk ORDER BY customer_id"
    expected = query(trained_warehouse.path, f"{top} LIMIT 50")

    code, out, err = run_cli(capsys, f"{top} LIMIT 50", "--warehouse", path, "--format", "csv")
    assert (code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["customer_id"], r["risk_tier"]) for r in rows] == [(e[0], e[1]) for e in expected]

    code, out, err = run_cli(capsys, f"{top} LIMIT 50; SELECT 'NaN'::DOUBLE AS x, 1.25::DECIMAL(9, 2) AS d, "
                             "DATE '2026-11-30' AS day", "--warehouse", path, "--format", "json")  # fmt: skip
    assert (code, err, json.loads(out)) == (0, "", [{"x": None, "d": 1.25, "day": "2026-11-30"}])  # the last one
    code, out, _ = run_cli(capsys, f"{top} LIMIT 50", "--warehouse", path, "--format", "json")
    records = json.loads(out)
    assert [(r["customer_id"], r["risk_tier"], r["rule_ids"]) for r in records] == [e[:3] for e in expected]
    assert records[0]["published_at"].startswith(str(expected[0][3].date()))

    code, out, err = run_cli(capsys, top, "--warehouse", path, "--max-rows", "5")
    assert (code, err) == (0, "")
    assert all(e[0] in out for e in expected[:5]) and expected[5][0] not in out
    assert "more than 5 rows: the first 5 are shown" in out
    code, out, _ = run_cli(capsys, f"{top} LIMIT 3", "--warehouse", path)
    assert "more than" not in out and expected[2][0] in out


def test_bad_sql_and_a_missing_warehouse_are_one_line(
    trained_warehouse: TrainedWarehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(trained_warehouse.path)
    for args, says in (
        (["SELEC 1", "--warehouse", path], 'error: Parser Error: syntax error at or near "SELEC"'),
        (["SELECT * FROM no_such_table", "--warehouse", path], "Table with name no_such_table does not exist"),
        (["CREATE TABLE t (a INT)", "--warehouse", path], "read-only"),
        (["-- nothing", "--warehouse", path], "error: no SQL statement to run"),
        (["SELECT 1", "--warehouse", str(tmp_path / "none.duckdb")], "no warehouse at"),
        (["--warehouse", str(tmp_path / "none.duckdb")], "no warehouse at"),  # the prompt does not start
    ):
        code, out, err = run_cli(capsys, *args)
        assert code == cli.EXIT_FAILED and out == "", args
        assert says in err and err.count("\n") == 1 and err.startswith("error: "), err


def cli_process(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segmentation_pipeline.cli", "sql", *args], input=stdin, text=True,
                          capture_output=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=60)  # fmt: skip


def test_the_prompt_reads_statements_from_stdin_until_quit(trained_warehouse: TrainedWarehouse) -> None:
    readme_query = next(s for s in readme_statements() if "FROM models" in s)  # a README query, verbatim
    script = (
        f"{readme_query}\n"
        "SELECT count(*) AS customers_in_view\n"
        "FROM current_customer_risk   -- a statement over three lines,\n"
        "WHERE risk_tier IN ('High', 'Medium', 'Low');\n"
        "SELECT 'a;\nb' AS text_with_a_semicolon;\n"
        ".quit\n"
        "SELECT 'after quit' AS never;\n"
    )
    done = cli_process("--warehouse", str(trained_warehouse.path), stdin=script)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    (customers,) = query(trained_warehouse.path, "SELECT count(*) FROM cleaned_customers")[0]
    (version,) = query(trained_warehouse.path, "SELECT model_version FROM kmeans_model")[0]
    assert "customers_in_view" in done.stdout and f" {customers} " in done.stdout
    assert version in done.stdout and "text_with_a_semicolon" in done.stdout
    assert "never" not in done.stdout and "sql>" not in done.stdout  # no prompts when stdin is not a terminal

    # In the same way in-process: a failed statement is one line, the next ones still run, and the count says so.
    lines = iter(["SELECT 1 AS one;", "SELEC 2;", "SELECT 3 AS three;"])

    def read_line(_prompt: str) -> str:
        line = next(lines, None)
        if line is None:
            raise EOFError
        return line

    out, errors = io.StringIO(), io.StringIO()
    failed = sql.interactive(Warehouse(trained_warehouse.path), sql.Output.to(out), read_line=read_line,
                             errors=errors, prompts=False)  # fmt: skip
    assert failed == 1 and "one" in out.getvalue() and "three" in out.getvalue()
    assert errors.getvalue() == 'error: Parser Error: syntax error at or near "SELEC"\n'


def test_a_warehouse_locked_by_a_writer_is_one_line(
    warehouse_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); sys.stdin.read()"
    writer = subprocess.Popen([sys.executable, "-c", holder, str(warehouse_copy)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "holding\n"
        monkeypatch.setenv("SEGMENTATION_LOCK_WAIT", "0.2")
        code, out, err = run_cli(capsys, "SELECT 1", "--warehouse", str(warehouse_copy))
    finally:
        writer.communicate("", timeout=30)  # end of its stdin: it closes the file and exits
    assert (code, out) == (cli.EXIT_FAILED, "")
    assert err.startswith(f"error: warehouse {warehouse_copy} stayed locked by another process")
    assert err.count("\n") == 1
