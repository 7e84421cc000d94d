"""The API's decision log: every answer recorded, queryable as `api_decisions`, nothing lost on a graceful stop,
nothing corrupt after kill -9, scoring unaffected by an unwritable folder or a full disk; compaction, retention
and their job.

Two real servers (`segmentation serve` on 127.0.0.1), started together, on private copies of the trained
warehouse; everything else in-process."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from segmentation_pipeline.api import create_app
from segmentation_pipeline.api.decision_log import DecisionLog
from segmentation_pipeline.api.model_cache import ModelCache
from segmentation_pipeline.api.security import key_id
from segmentation_pipeline.cli import main
from segmentation_pipeline.orchestration.decisions_maintenance import (
    build_decisions_schedule,
    decisions_maintenance_job,
)
from segmentation_pipeline.orchestration.resources import WarehouseResource
from segmentation_pipeline.warehouse import decisions
from segmentation_pipeline_tests.api_fixtures import API_KEY, file_records, server_log, start_server, stop_server
from segmentation_pipeline_tests.mounts import tmpfs

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def records(trained_warehouse) -> list[dict[str, object]]:  # noqa: ANN001 - the conftest fixture
    return file_records(trained_warehouse.source)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, trained_warehouse) -> Iterator[dict[str, tuple]]:  # noqa: ANN001
    """Two servers, each on its own copy (and so its own decision folder), started at the same time."""
    started = {}
    for name in ("graceful", "crash"):
        directory = tmp_path_factory.mktemp(f"decisions_{name}")
        shutil.copy(trained_warehouse.path, directory / "warehouse.duckdb")
        started[name] = (directory / "warehouse.duckdb", start_server(directory / "warehouse.duckdb", wait=False)[0])
    out = {}
    for name, (warehouse, process) in started.items():
        port = process.args[process.args.index("--port") + 1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, server_log(process)
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        out[name] = (base, warehouse, process)
    try:
        yield out
    finally:
        for _, _, process in out.values():
            if process.poll() is None:
                stop_server(process)


def _api_decisions(warehouse: Path, sql: str) -> list[tuple]:
    """``sql`` over the view as an analyst sees it: the view (re)defined the way publication does, then queried
    on a plain read-only connection."""
    with duckdb.connect(str(warehouse)) as connection:
        assert decisions.create_decisions_view(connection, decisions.folder_for(warehouse)) == "main"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def _customers_in(folder: Path) -> int:
    """The customer records the folder's files hold, as the view derives them."""
    with duckdb.connect() as connection:
        return connection.execute(f"SELECT count(*) FROM ({decisions.view_sql(folder)})").fetchone()[0]


def test_every_answer_is_recorded_and_a_graceful_stop_loses_nothing(
    servers: dict[str, tuple], records: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    base, warehouse, process = servers["graceful"]
    sent: dict[str, str] = {}  # request id -> expected outcome
    answers = []
    with httpx.Client(base_url=base, headers=KEY, timeout=60) as http:
        for record in records[:15]:  # one customer each
            response = http.post("/v1/score", json=record)
            assert response.status_code == 200
            sent[response.headers["X-Request-ID"]] = "rated"
            answers.append(response.json())
        for size in (40, 300):  # a small batch, and one over 64 KiB (scored in a worker thread)
            response = http.post("/v1/score", json={"customers": records[15 : 15 + size]})
            assert response.status_code == 200
            sent[response.headers["X-Request-ID"]] = "rated"
            answers += response.json()["results"]
        refusals = [{"CustomerID": 900001, "ExpVolume": -5, "City": "REFUSEDCANARY"},
                    {"customers": [{"CustomerID": 900002}, {"CustomerID": 900003, "isPep": "perhaps"},
                                   {"CustomerID": 900004}]}]  # fmt: skip
        for body in refusals:
            response = http.post("/v1/score", json=body)
            assert response.status_code == 422
            sent[response.headers["X-Request-ID"]] = "refused"
        assert http.post("/v1/score", json={"customers": []}).status_code == 422  # a refusal with no customer
        assert httpx.post(f"{base}/v1/score", json=records[0]).status_code == 401  # not a decision: not recorded
        assert http.get("/healthz").json()["decision_log"]["status"] == "ok"
    process.send_signal(signal.SIGTERM)  # graceful stop: what is buffered is flushed
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn ends with the signal it was stopped by
    log = server_log(process)
    assert "Application shutdown complete" in log
    assert API_KEY not in log and "REFUSEDCANARY" not in log

    rated, refused = 15 + 40 + 300, 1 + 3 + 1
    rows = _api_decisions(
        warehouse,
        "SELECT outcome, count(*), count(DISTINCT request_id), count(input_sha256), "
        "count(input_json), min(api_key_id), max(api_key_id) FROM api_decisions GROUP BY outcome",
    )
    found = {row[0]: row[1:] for row in rows}
    assert found["rated"] == (rated, 17, rated, rated, key_id(API_KEY), key_id(API_KEY))
    assert found["refused"] == (refused, 3, refused, 0, key_id(API_KEY), key_id(API_KEY))
    logged = dict(_api_decisions(warehouse, "SELECT DISTINCT request_id, outcome FROM api_decisions"))
    assert {rid: outcome for rid, outcome in logged.items() if rid in sent} == sent
    # What was answered is what was recorded, input text and hash included.
    recorded = _api_decisions(warehouse, "SELECT customer_id, risk_tier, risk_score, cluster, rule_ids, input_json, "
                              "input_sha256 = sha256(input_json), model_version, policy_version, len(reasons) "
                              "FROM api_decisions WHERE outcome = 'rated' ORDER BY request_id, item")  # fmt: skip
    by_id = {row[0]: row for row in recorded}
    for answer in answers:
        row = by_id[answer["customer_id"]]
        assert row[1:5] == (answer["risk_tier"], answer["risk_score"], answer["cluster"], answer["rule_ids"])
        assert row[6] is True and row[7] == answer["model_version"] and row[8] and row[9] == 3
    assert json.loads(by_id[str(records[0]["CustomerID"])][5]) == records[0]
    problems = _api_decisions(warehouse, "SELECT customer_id, item, problems FROM api_decisions "
                              "WHERE outcome = 'refused' ORDER BY customer_id NULLS LAST")  # fmt: skip
    assert problems == [
        ("900001", 0, [{"field": "ExpVolume", "type": "value_error"}]),
        ("900002", 0, []), ("900003", 1, [{"field": "isPep", "type": "bool_parsing"}]), ("900004", 2, []),
        (None, 0, [{"field": "customers", "type": "too_short"}]),
    ]  # fmt: skip
    # No key material anywhere: not in any column of any record.
    assert _api_decisions(warehouse, f"SELECT count(*) FROM api_decisions t WHERE CAST(t AS VARCHAR) LIKE "
                          f"'%{API_KEY}%' OR CAST(t AS VARCHAR) LIKE '%REFUSEDCANARY%'") == [(0,)]  # fmt: skip
    # segmentation explain lists the customer's API decisions next to its published rating.
    customer = str(records[0]["CustomerID"])
    assert main(["explain", customer, "--warehouse", str(warehouse)]) == 0
    shown = capsys.readouterr().out
    assert "API decisions (latest 1):" in shown and f"request {list(sent)[0]}" in shown
    assert main(["explain", "900003", "--warehouse", str(warehouse), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["api_decisions"][0]["problem_fields"] == ["isPep"]
    # recent() parses only the requests whose answer or refused ids hold the id's text: the same records as the view's.
    folder = decisions.folder_for(warehouse)
    everyone = _api_decisions(warehouse, "SELECT customer_id, list(request_id ORDER BY decided_at DESC, request_id) "
                              "FROM api_decisions WHERE customer_id IS NOT NULL GROUP BY 1")  # fmt: skip
    assert sum(len(request_ids) for _, request_ids in everyone) >= rated
    for customer_id, request_ids in sorted(everyone)[:: max(1, len(everyone) // 8)]:  # a few, each 0.2 s
        assert sorted(row["request_id"] for row in decisions.recent(folder, customer_id, limit=100)) == sorted(
            request_ids
        ), customer_id
    # And as an analyst asks: `segmentation sql`, read-only, its own view over the files as they are now.
    assert main(["sql", "SELECT outcome, count(*) AS records FROM api_decisions GROUP BY ALL ORDER BY 1",
                 "--warehouse", str(warehouse), "--format", "json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out) == [{"outcome": "rated", "records": rated},
                                                   {"outcome": "refused", "records": refused}]  # fmt: skip


def test_kill_9_loses_at_most_the_unflushed_second_and_leaves_no_corrupt_segment(
    servers: dict[str, tuple], records: list[dict[str, object]]
) -> None:
    base, warehouse, process = servers["crash"]
    folder = decisions.folder_for(warehouse)
    with httpx.Client(base_url=base, headers=KEY, timeout=60) as http:
        assert http.post("/v1/score", json={"customers": records[:200]}).status_code == 200
        deadline = time.monotonic() + 10
        while not list(folder.glob("segments/*/*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the flusher writes within its second
        for record in records[200:230]:
            assert http.post("/v1/score", json=record).status_code == 200
    process.kill()  # SIGKILL: no shutdown at all
    process.wait(timeout=30)
    for path in sorted(folder.glob("**/*.parquet")):
        pq.read_table(path)  # each one whole and valid (raises otherwise)
    written = _customers_in(folder)
    assert 200 <= written <= 230  # the first batch was flushed; at most the last second's answers are missing
    assert _api_decisions(warehouse, "SELECT count(*) FROM api_decisions") == [(written,)]


def _health_when(client: TestClient, status: str) -> dict:
    """``/healthz`` as soon as its status is ``status`` (within 10 s: the flusher retries every 0.05 s)."""
    deadline = time.monotonic() + 10
    while (health := client.get("/healthz").json())["status"] != status and time.monotonic() < deadline:
        time.sleep(0.05)
    return health


def _assert_recovered(client: TestClient, written: int) -> None:
    """The log writes again: everything kept while it could not is written, nothing waiting, nothing dropped."""
    assert _health_when(client, "ok")["decision_log"] | {"error": None} == {
        "status": "ok", "mode": "full", "fail_closed": False, "error": None, "pending": 0, "written": written,
        "dropped": 0}  # fmt: skip


def test_an_unwritable_folder_keeps_scoring_reports_degraded_and_retries(
    trained_warehouse,
    tmp_path: Path,
    records: list[dict[str, object]],
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder's parent should be")  # blocks mkdir even for root, unlike chmod
    settings = decisions.DecisionSettings(folder=blocker / "decisions", flush_seconds=0.05)
    cache = ModelCache(trained_warehouse.path)
    log = DecisionLog(settings, cache.policy_versions.get)
    with TestClient(create_app(trained_warehouse.path, [API_KEY], cache=cache, decisions=log)) as client:
        for record in records[:5]:
            assert client.post("/v1/score", json=record, headers=KEY).status_code == 200
        assert client.post("/v1/score", json={"customers": records[:20]}, headers=KEY).status_code == 200
        time.sleep(0.3)  # a few failed flushes
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert health["decision_log"]["status"] == "degraded" and health["decision_log"]["pending"] == 25
        error = health["decision_log"]["error"]
        assert "Not a directory" in error and str(blocker) not in error  # /healthz needs no key: no paths
        assert sum("cannot write into" in r.getMessage() for r in caplog.records) == 1  # one line, not one a second
        blocker.unlink()  # the problem goes away: the records kept are written, nothing lost
        _assert_recovered(client, written=25)
    assert _customers_in(settings.folder) == 25


def test_a_full_disk_keeps_scoring_reports_degraded_and_loses_nothing_once_space_is_back(
    trained_warehouse,  # noqa: ANN001
    tmp_path: Path,
    records: list[dict[str, object]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real full file system (a 1 MB tmpfs filled to the last byte), not a simulated error."""
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        settings = decisions.DecisionSettings(folder=disk / "decisions", flush_seconds=0.05)
        cache = ModelCache(trained_warehouse.path)
        log = DecisionLog(settings, cache.policy_versions.get)
        with TestClient(create_app(trained_warehouse.path, [API_KEY], cache=cache, decisions=log)) as client:
            filler = disk / "filler"
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as sink:  # the folder exists; no room
                while True:
                    sink.write(b"x" * 4096)
            for record in records[:5]:
                assert client.post("/v1/score", json=record, headers=KEY).status_code == 200
            assert client.post("/v1/score", json={"customers": records[:40]}, headers=KEY).status_code == 200
            health = _health_when(client, "degraded")
            assert health["status"] == "degraded" and health["decision_log"]["pending"] == 45
            assert "No space left on device" in health["decision_log"]["error"]
            assert sum("cannot write into" in r.getMessage() for r in caplog.records) == 1
            assert not list(disk.glob("**/.*.tmp"))  # a failed segment leaves nothing half-written
            assert client.post("/v1/score", json=records[5], headers=KEY).status_code == 200  # scoring goes on
            filler.unlink()  # space is back: the records kept are written, nothing lost
            _assert_recovered(client, written=46)
        for path in disk.glob("**/*.parquet"):
            pq.read_table(path)  # each one whole and valid
        assert _customers_in(settings.folder) == 46


def _answered_and_recorded(trained_warehouse, folder: Path, mode: str, records: list[dict[str, object]]  # noqa: ANN001
                           ) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """The same requests (one customer with spaces in its JSON, a batch, refusals, a body that is not JSON) to an
    in-process app whose log is in ``mode``; (the answers' results, the records the view derives, by request)."""
    cache = ModelCache(trained_warehouse.path)
    settings = decisions.DecisionSettings(folder=folder, mode=mode, flush_seconds=0.05)
    log = DecisionLog(settings, cache.policy_versions.get)
    spaced = json.dumps(records[0], indent=2).encode()  # the same customer as in the batch, spelled differently
    bodies = [
        spaced,
        json.dumps({"customers": records[:30]}).encode(),
        b'{"CustomerID": "77", "isPep": "perhaps"}',
        json.dumps({"customers": [records[1], {"CustomerID": 78, "ExpVolume": -1}]}).encode(),
        b"\xff{not json",
    ]
    answers = []
    with TestClient(create_app(trained_warehouse.path, [API_KEY], cache=cache, decisions=log)) as client:
        for body in bodies:
            response = client.post("/v1/score", content=body, headers={**KEY, "Content-Type": "application/json"})
            assert response.status_code in (200, 422)
            answer = response.json()
            answers += answer.get("results", [answer] if response.status_code == 200 else [])
    with duckdb.connect() as connection:
        cursor = connection.execute(f"SELECT * EXCLUDE (request_id, decided_at, latency_ms) FROM "
                                    f"({decisions.view_sql(folder)}) ORDER BY decided_at, item")  # fmt: skip
        names = [column[0] for column in cursor.description]
        recorded = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return answers, recorded


def test_records_are_what_was_answered_and_hash_only_gives_the_same_hashes(
    trained_warehouse,
    tmp_path: Path,
    records: list[dict[str, object]],  # noqa: ANN001
) -> None:
    answers, full = _answered_and_recorded(trained_warehouse, tmp_path / "full", "full", records)
    _, hashed = _answered_and_recorded(trained_warehouse, tmp_path / "hashed", "hash-only", records)
    assert len(full) == 1 + 30 + 1 + 2 + 1 and [r["outcome"] for r in full].count("rated") == 31 == len(answers)
    for answer, record in zip(answers, [r for r in full if r["outcome"] == "rated"], strict=True):
        assert {name: record[name] for name in answer} == answer  # every field as answered, reasons included
    # The input: the customer's object as DuckDB writes it, and its SHA-256; the same whatever its spelling.
    single, in_batch = full[0], full[1]
    assert single["input_json"] == in_batch["input_json"] and json.loads(single["input_json"]) == records[0]
    assert single["input_sha256"] == in_batch["input_sha256"] == sha256(single["input_json"].encode()).hexdigest()
    refused = [(r["customer_id"], r["item"], r["problems"], r["input_json"]) for r in full if r["outcome"] == "refused"]
    assert refused == [("77", 0, [{"field": "isPep", "type": "bool_parsing"}], None),
                       (str(records[1]["CustomerID"]), 0, [], None),
                       ("78", 1, [{"field": "ExpVolume", "type": "value_error"}], None),
                       (None, 0, [{"field": "body", "type": "json_invalid"}], None)]  # fmt: skip
    assert full[-1]["input_sha256"] == sha256(b"\xff{not json").hexdigest()  # not JSON: its bytes
    # hash-only: the same records, hashes included, without the text.
    assert [r["input_json"] for r in hashed] == [None] * len(full)
    assert [r | {"input_json": None} for r in full] == hashed
    segments = [pq.read_table(path) for path in (tmp_path / "hashed").glob("segments/*/*.parquet")]
    assert segments and all(table["request_body"].null_count == table.num_rows for table in segments)  # no body


def test_compaction_keeps_the_records_the_view_derived(
    trained_warehouse,
    tmp_path: Path,
    records: list[dict[str, object]],  # noqa: ANN001
) -> None:
    folder = tmp_path / "log"
    _, before = _answered_and_recorded(trained_warehouse, folder, "full", records)
    assert all("request_body" in pq.read_schema(p).names for p in folder.glob("segments/*/*.parquet"))
    decisions.compact(folder, older_than=timedelta(0), now=datetime.now(UTC) + timedelta(seconds=1))
    assert not list(folder.glob("segments/*/*.parquet")) and list(folder.glob("daily/*.parquet"))
    with duckdb.connect() as connection:
        cursor = connection.execute(f"SELECT * EXCLUDE (request_id, decided_at, latency_ms) FROM "
                                    f"({decisions.view_sql(folder)}) ORDER BY decided_at, item")  # fmt: skip
        names = [column[0] for column in cursor.description]
        after = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    assert after == before and pq.read_schema(next(folder.glob("daily/*.parquet"))).names == decisions.SCHEMA.names


def test_beyond_max_pending_the_oldest_requests_are_dropped_and_counted(
    trained_warehouse,  # noqa: ANN001
    tmp_path: Path,
    records: list[dict[str, object]],
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = decisions.DecisionSettings(folder=blocker / "decisions", flush_seconds=60)
    log = DecisionLog(settings, max_pending=25)
    with TestClient(create_app(trained_warehouse.path, [API_KEY], decisions=log)) as client:
        for size in (20, 20, 5):  # 45 customers waiting: the first request (20) goes whole
            assert client.post("/v1/score", json={"customers": records[:size]}, headers=KEY).status_code == 200
        assert log.flush() == 0
        health = client.get("/healthz").json()["decision_log"]
        assert (health["pending"], health["dropped"], health["status"]) == (25, 20, "degraded")


def test_fail_closed_refuses_to_score_while_the_log_cannot_be_written(trained_warehouse, tmp_path: Path) -> None:  # noqa: ANN001
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = decisions.DecisionSettings(folder=blocker / "decisions", fail_closed=True)
    app = create_app(trained_warehouse.path, [API_KEY], decisions=DecisionLog(settings))
    with TestClient(app) as client:  # the folder is checked at start: refused from the first request
        refused = client.post("/v1/score", json={"CustomerID": 1}, headers=KEY)
        assert refused.status_code == 503 and "fail-closed" in refused.json()["detail"]
        assert client.get("/healthz").json()["decision_log"]["fail_closed"] is True


def test_settings_are_checked_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(decisions.DecisionSettingsError, match="SEGMENTATION_DECISIONS='most'"):
        decisions.settings_from_environment(tmp_path / "w.duckdb", environ={"SEGMENTATION_DECISIONS": "most"})
    with pytest.raises(decisions.DecisionSettingsError, match="expected a duration"):
        decisions.parse_duration("a week", "--retention")
    with pytest.raises(ValueError, match="SEGMENTATION_DECISIONS_COMPACT_CRON='61 1 \\* \\* \\*'"):
        build_decisions_schedule("61 1 * * *")
    found = decisions.settings_from_environment(tmp_path / "w.duckdb", environ={"SEGMENTATION_DECISIONS": "hash-only"})
    assert found.folder == tmp_path / "w_decisions" and not found.keep_inputs and not found.fail_closed


def _segment(n: int, day: datetime, start: int = 0) -> pa.Table:
    return pa.Table.from_pylist(
        [{"decided_at": day, "request_id": f"r{start + i}", "item": 0, "outcome": "rated", "http_status": 200,
          "customer_id": str(start + i), "input_json": f'{{"CustomerID": {start + i}}}'} for i in range(n)],
        schema=decisions.SCHEMA,
    )  # fmt: skip


def test_compaction_and_retention_keep_every_record_once(
    trained_warehouse,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    folder = tmp_path / "log"
    decisions.ensure_folder(folder)
    now = datetime.now(UTC) - timedelta(seconds=1)
    day = {ago: (now - timedelta(days=ago)).date().isoformat() for ago in (0, 2, 400)}
    for days_ago, n in ((400, 3), (2, 4), (2, 5), (0, 6)):
        moment = now - timedelta(days=days_ago)
        decisions.write_segment(folder, _segment(n, moment, start=days_ago * 1000 + n * 10), now=moment)
    decisions.compact(folder, older_than=timedelta(days=1), now=now)
    assert sorted(p.stem for p in (folder / "daily").glob("*.parquet")) == [day[400], day[2]]
    assert sorted(p.parent.name for p in folder.glob("segments/*/*.parquet")) == [day[0]]
    late = now - timedelta(days=2)  # a late segment of a day already compacted: merged into its daily file
    decisions.write_segment(folder, _segment(2, late, start=5000), now=late)
    done = decisions.maintain(folder, older_than=timedelta(days=1), retention=timedelta(days=365), now=now)
    assert done.compacted_segments == 1 and done.days_written == [day[2]] and done.days_removed == [day[400]]
    daily = pq.read_table(folder / "daily" / f"{day[2]}.parquet")
    assert daily.num_rows == 11 and len(set(daily["request_id"].to_pylist())) == 11
    assert all(h is not None for h in daily["input_sha256"].to_pylist())  # filled in from the text when compacted
    # The Dagster job runs the same upkeep: the warehouse's folder, the settings from the environment.
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(trained_warehouse.path, warehouse)
    shutil.copytree(folder, decisions.folder_for(warehouse))
    monkeypatch.setenv(decisions.COMPACT_AFTER_ENV, "0s")
    resources = {"warehouse": WarehouseResource(database=str(warehouse))}
    assert decisions_maintenance_job.execute_in_process(resources=resources).success
    assert not list(decisions.folder_for(warehouse).glob("segments/*/*.parquet"))
    assert (decisions.folder_for(warehouse) / "daily" / f"{day[0]}.parquet").exists()
    assert _api_decisions(warehouse, "SELECT count(*), count(DISTINCT request_id) FROM api_decisions") == [(17, 17)]


def test_a_folder_written_by_the_earlier_version_is_read_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    pq.write_table(decisions.SCHEMA.empty_table(), folder / "schema.parquet")  # customer records only, no requests
    now = datetime.now(UTC)
    decisions.write_segment(folder, _segment(3, now), now=now)
    assert [row["request_id"] for row in decisions.recent(folder, "1")] == ["r1"]  # before any upgrade
    with duckdb.connect() as connection:
        connection.execute(f"CREATE VIEW v AS {decisions.view_sql(folder)}")
        hashes = connection.execute("SELECT input_sha256 = sha256(input_json) FROM v").fetchall()
    assert hashes == [(True,)] * 3


def test_an_interrupted_compaction_is_finished_by_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    old = now - timedelta(days=3)
    segment = decisions.write_segment(folder, _segment(4, old), now=old)
    daily_dir = folder / "daily"
    daily_dir.mkdir(parents=True)
    staged = daily_dir / ".2026-11-27.parquet.1.tmp"
    pq.write_table(_segment(4, old), staged)  # complete, manifest written, killed before the rename
    (daily_dir / ".2026-11-27.manifest.json").write_text(
        json.dumps({"staged": str(staged), "target": str(daily_dir / "2026-11-27.parquet"), "segments": [str(segment)]})
    )
    (daily_dir / ".2026-11-26.parquet.9.tmp").write_bytes(b"PAR1 half a file")  # no manifest: an incomplete write
    decisions.compact(folder, older_than=timedelta(days=1), now=now)
    assert [p.name for p in daily_dir.iterdir()] == ["2026-11-27.parquet"]
    assert pq.read_table(daily_dir / "2026-11-27.parquet").num_rows == 4 and not segment.exists()


def test_the_published_warehouse_has_the_view(trained_warehouse) -> None:  # noqa: ANN001
    with duckdb.connect(str(trained_warehouse.path), read_only=True) as connection:
        columns = [row[0] for row in connection.execute("DESCRIBE api_decisions").fetchall()]
        assert columns == decisions.SCHEMA.names
    with duckdb.connect() as connection:  # an empty folder: a typed empty relation, not an error
        assert decisions.view_sql(Path("/nonexistent/folder")).endswith("WHERE false")
        connection.execute(f"CREATE VIEW v AS {decisions.view_sql(Path('/nonexistent/folder'))}")
        assert connection.execute("SELECT count(*) FROM v").fetchall() == [(0,)]


def test_key_ids_never_hold_the_key() -> None:
    assert key_id(API_KEY).startswith("key-") and len(key_id(API_KEY)) == 16 and API_KEY not in key_id(API_KEY)
    assert key_id(API_KEY) != key_id(API_KEY + "x")


def test_big_bodies_and_answers_are_written_as_received_between_small_ones(tmp_path: Path) -> None:
    """A batch's megabytes of body and answer go into the segment without a copy (a chunk of their own): the
    segment holds every request's bytes exactly, in order, big and small alike."""
    log = DecisionLog(decisions.DecisionSettings(folder=tmp_path / "decisions"))
    big = b'{"customers": [' + b" " * (3 << 20) + b"]}"
    sent = [(b"{}", b'{"detail":[]}'), (big, b'{"detail":[]}'), (b"[1]", big + b" "), (big, big), (b"{", b"{}")]
    for i, (body, answer) in enumerate(sent):
        log.add(f"r{i}", None, body, 422, {"detail": []}, answer, time.perf_counter())
    assert log.flush() == len(sent) and log.dropped == 0
    (segment,) = (tmp_path / "decisions" / "segments").glob("*/*.parquet")
    written = pq.read_table(segment)
    assert written["request_id"].to_pylist() == [f"r{i}" for i in range(len(sent))]
    assert list(zip(written["request_body"].to_pylist(), written["response_body"].to_pylist(), strict=True)) == sent
