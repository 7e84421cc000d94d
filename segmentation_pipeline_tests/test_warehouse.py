"""The DuckDB warehouse: atomic multi-table writes, appends with new columns, fitted objects, lineage."""

from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from segmentation_pipeline.warehouse import LineageRecord, Warehouse


def _lineage(asset: str) -> LineageRecord:
    return LineageRecord(run_id="r1", asset_key=asset, upstream_assets=["up"], input_file_sha256="abc",
                         code_version="0.1.0", started_at=datetime.now().astimezone(), row_count=2)  # fmt: skip


def test_write_replace_and_lineage(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    store.write_tables({"things": pd.DataFrame({"a": [1, 2]})}, lineage=_lineage("things"))
    store.write_tables({"things": pd.DataFrame({"a": [3], "b": ["x"]})}, lineage=_lineage("things"))
    assert store.read_table("things").to_dict("records") == [{"a": 3, "b": "x"}]
    lineage = store.read_table("lineage")
    assert len(lineage) == 2 and set(lineage["asset_key"]) == {"things"}
    assert list(lineage["upstream_assets"].iloc[0]) == ["up"]
    assert (lineage["ended_at"] >= lineage["started_at"]).all()


def test_failed_write_leaves_previous_tables_intact(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    store.write_tables({"first": pd.DataFrame({"a": [1]}), "second": pd.DataFrame({"b": [1]})})

    def fail(connection: object) -> None:  # a statement after both tables were replaced fails
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.write_tables(
            {"first": pd.DataFrame({"a": [9, 9]}), "second": pd.DataFrame({"b": [9]})},
            also=fail,
            lineage=_lineage("first"),
        )
    # All-or-nothing: neither table changed and no lineage row was recorded.
    assert store.read_table("first")["a"].tolist() == [1]
    assert store.read_table("second")["b"].tolist() == [1]
    assert store.read_table("lineage").empty


def test_append_adds_new_columns(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    store.write_tables({"log": pd.DataFrame({"a": [1]})}, append=["log"])
    store.write_tables({"log": pd.DataFrame({"a": [2], "b": ["new"]})}, append=["log"])
    rows = store.query("SELECT a, b FROM log ORDER BY a")
    assert rows["a"].tolist() == [1, 2]
    assert pd.isna(rows["b"].iloc[0]) and rows["b"].iloc[1] == "new"


def test_list_columns_round_trip(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    store.write_tables({"c": pd.DataFrame({"id": [1, 2], "channels": [["ATM", "MobileApp"], []]})})
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT typeof(channels) FROM c LIMIT 1").fetchone()[0] == "VARCHAR[]"
        assert connection.execute("SELECT len(channels) FROM c ORDER BY id").fetchall() == [(2,), (0,)]


def test_rejects_unsafe_table_names(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    with pytest.raises(ValueError):
        store.write_tables({'x"; DROP TABLE lineage; --': pd.DataFrame({"a": [1]})})


def test_duckdb_memory_is_bounded_and_a_bad_setting_is_one_line(tmp_path, monkeypatch) -> None:
    from segmentation_pipeline.warehouse.store import MEMORY_ENV, WarehouseUnavailable

    store = Warehouse(tmp_path / "w.duckdb")
    monkeypatch.setenv(MEMORY_ENV, "1GB")
    with store.connect() as connection:
        assert connection.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("953.6 MiB", "1.0 GiB")
    monkeypatch.setenv(MEMORY_ENV, "lots")
    refused = pytest.raises(WarehouseUnavailable, match=r"^setting SEGMENTATION_DUCKDB_MEMORY: 'lots' is not an amount")
    with refused, store.connect():
        pass
