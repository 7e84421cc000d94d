"""The checks on cluster_assignments against a broken table: the session's trained warehouse, copied, with rows
removed, added and repeated in the published snapshot's table; the checks' core functions name each gap. (That the
checks pass on a real run is asserted on test_pipeline's materialisation.)"""

from __future__ import annotations

from pathlib import Path

import duckdb

from segmentation_pipeline.config import PipelineSettings
from segmentation_pipeline.orchestration.checks import assignment_gaps, shares_out_of_bounds, tier_shares
from segmentation_pipeline.warehouse import Warehouse


def _published_table(connection: duckdb.DuckDBPyConnection) -> str:
    (schema,) = connection.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = "
                                   "'cluster_assignments' AND table_type = 'BASE TABLE'").fetchone()  # fmt: skip
    return f'"{schema}".cluster_assignments'


def test_missing_extra_and_repeated_assignments_are_counted_and_named(warehouse_copy: Path) -> None:
    store = Warehouse(warehouse_copy)
    assert assignment_gaps(store) == {"missing": (0, []), "extra": (0, []), "duplicated": (0, [])}
    with duckdb.connect(str(warehouse_copy)) as connection:
        table = _published_table(connection)
        first, second, third = (row[0] for row in connection.execute(
            f"SELECT customer_id FROM {table} ORDER BY customer_id LIMIT 3").fetchall())  # fmt: skip
        connection.execute(f"DELETE FROM {table} WHERE customer_id IN (?, ?)", [first, second])
        connection.execute(f"INSERT INTO {table} SELECT * REPLACE ('X-404' AS customer_id) FROM {table} "
                           "WHERE customer_id = ?", [third])  # fmt: skip
        connection.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE customer_id = ?", [third])
    assert assignment_gaps(store) == {"missing": (2, [first, second]), "extra": (1, ["X-404"]),
                                      "duplicated": (1, [third])}  # fmt: skip


def test_a_share_outside_its_bounds_is_named(trained_warehouse) -> None:
    shares = tier_shares(Warehouse(trained_warehouse.path))
    assert abs(sum(shares.values()) - 1) < 1e-9 and min(shares.values()) > 0
    defaults = PipelineSettings()
    assert shares_out_of_bounds(shares, defaults.tier_share_min, defaults.tier_share_max) == {}
    high, low = shares["High"], shares["Low"]
    out = shares_out_of_bounds(shares, {"Low": low + 0.01}, {"High": high - 0.01})
    assert out == {"High": f"{high:.1%} is above the maximum {high - 0.01:.1%}",
                   "Low": f"{low:.1%} is below the minimum {low + 0.01:.1%}"}  # fmt: skip
