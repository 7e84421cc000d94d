"""Micro-batching of single-customer requests on the event loop.

Scoring costs a few dozen NumPy calls per call whatever the number of customers in it, so when many clients push
one customer each at the same moment, scoring them together is several times cheaper than one by one (the way
model servers batch dynamically). A one-customer request joins a queue; the first to join schedules a flush with
``loop.call_soon``, which runs once the requests already read in this turn of the event loop have joined too. The
flush scores everything queued as one batch, with one model, and answers each request with its own result.

A request alone is flushed in the same turn of the loop: there is no timer and no added wait, so latency with one
client is unchanged. Answers do not depend on batching: every step of scoring is row by row (tests check that a
batch equals its customers scored one at a time: clusters, tiers and reasons exactly; distance and risk score
to the last bit of a BLAS product), and a batch with an invalid record is rescored one record at a time, so each
request gets exactly the answer, or the 422, it would have got alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

Outcome = tuple[int, object]  # (HTTP status, JSON payload)


class SingleRecordBatcher:
    """Queues one-customer requests of one event loop and scores those that arrive together in one call.

    ``score_many`` takes the queued records and returns one outcome per record, in order. It runs on the event
    loop (a flush holds at most ``max_batch`` small records, far below what is worth a thread hop).
    """

    def __init__(self, score_many: Callable[[Sequence[object]], list[Outcome]], max_batch: int = 256) -> None:
        self._score_many = score_many
        self._max_batch = max_batch
        self._pending: list[tuple[object, asyncio.Future[Outcome]]] = []
        self._scheduled = False

    async def score(self, record: object) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((record, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            outcomes = self._score_many([record for record, _ in pending])
            if len(outcomes) != len(pending):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(pending)} records")
        except Exception as error:  # noqa: BLE001 - every waiting request must hear about it, not hang
            for _, future in pending:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), outcome in zip(pending, outcomes, strict=True):
            if not future.done():  # a client that went away has its request cancelled
                future.set_result(outcome)
