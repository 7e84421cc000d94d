"""Micro-batching of one-customer requests: customers that arrive together are scored in one call, and each
request still gets exactly its own answer (including its own 422)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from segmentation_pipeline.api import app as api_app
from segmentation_pipeline.api import create_app
from segmentation_pipeline.api.batching import Outcome, SingleRecordBatcher
from segmentation_pipeline_tests.api_fixtures import API_KEY, TRAIN_SEED, file_records

KEY = {"X-API-Key": API_KEY}


class _Recorder:
    """A ``score_many`` that remembers the batches it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[object]] = []
        self.fail = fail

    def __call__(self, records: Sequence[object]) -> list[Outcome]:
        self.batches.append(list(records))
        if self.fail:
            raise RuntimeError("scoring broke")
        return [(200, {"echo": record}) for record in records]


async def _together(batcher: SingleRecordBatcher, records: list[object]) -> list[object]:
    return await asyncio.gather(*(batcher.score(record) for record in records), return_exceptions=True)


def test_requests_that_arrive_together_are_scored_in_one_call_each_with_its_own_answer() -> None:
    recorder = _Recorder()
    outcomes = asyncio.run(_together(SingleRecordBatcher(recorder), list(range(10))))
    assert recorder.batches == [list(range(10))]
    assert outcomes == [(200, {"echo": i}) for i in range(10)]


def test_a_request_alone_is_scored_at_once() -> None:
    recorder = _Recorder()

    async def one_after_another() -> list[Outcome]:
        batcher = SingleRecordBatcher(recorder)
        return [await batcher.score(i) for i in range(3)]

    assert asyncio.run(one_after_another()) == [(200, {"echo": i}) for i in range(3)]
    assert recorder.batches == [[0], [1], [2]]


def test_batches_are_capped() -> None:
    recorder = _Recorder()
    asyncio.run(_together(SingleRecordBatcher(recorder, max_batch=4), list(range(10))))
    assert [len(batch) for batch in recorder.batches] == [4, 4, 2]
    assert [record for batch in recorder.batches for record in batch] == list(range(10))


def test_a_failure_reaches_every_waiting_request() -> None:
    outcomes = asyncio.run(_together(SingleRecordBatcher(_Recorder(fail=True)), list(range(5))))
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    recorder = _Recorder()

    async def scenario() -> list[object]:
        batcher = SingleRecordBatcher(recorder)
        tasks = [asyncio.ensure_future(batcher.score(i)) for i in range(4)]
        await asyncio.sleep(0)  # every task has joined the queue; the flush is scheduled after them
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert [outcomes[i] for i in (0, 2, 3)] == [(200, {"echo": i}) for i in (0, 2, 3)]


@pytest.fixture(scope="module")
def warehouse(trained_warehouse) -> Path:  # noqa: ANN001 - the conftest fixture
    return trained_warehouse.path


def test_concurrent_customers_get_the_answers_they_get_alone(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the app: 40 customers at once, two of them invalid. Each valid one gets what it gets when sent
    alone; each invalid one gets its own 422 naming its own field, and does not fail the others."""
    sizes: list[int] = []
    score_singles = api_app._score_singles

    def recording(records: Sequence[object], loaded: object) -> list[Outcome]:
        sizes.append(len(records))
        return score_singles(records, loaded)  # type: ignore[arg-type]

    monkeypatch.setattr(api_app, "_score_singles", recording)
    app = create_app(warehouse, [API_KEY])
    records: list[dict[str, object]] = file_records(warehouse.parent / f"train_{TRAIN_SEED}.csv")[:40]
    records[7] = {**records[7], "ExpVolume": -1}
    records[23] = {**records[23], "Favourite Colour": "red"}

    async def post_all(together: bool) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            if together:
                return await asyncio.gather(*(client.post("/v1/score", json=r, headers=KEY) for r in records))
            return [await client.post("/v1/score", json=r, headers=KEY) for r in records]

    alone = asyncio.run(post_all(False))
    assert set(sizes) == {1}
    sizes.clear()
    together = asyncio.run(post_all(True))
    assert sum(sizes) == 40 and max(sizes) > 1, sizes  # really scored together, invalid records among them
    for position, (single, batched) in enumerate(zip(alone, together, strict=True)):
        assert single.status_code == batched.status_code == (422 if position in (7, 23) else 200)
        expected, got = single.json(), batched.json()
        if single.status_code == 200:
            for name in ("distance_to_centroid", "risk_score"):  # one row vs many: BLAS may round the last bit
                assert got.pop(name) == pytest.approx(expected.pop(name), abs=1e-9)
        assert got == expected
    assert together[7].json()["detail"][0]["loc"] == ["body", "ExpVolume"]
    assert together[23].json()["detail"][0]["loc"] == ["body", "Favourite Colour"]
