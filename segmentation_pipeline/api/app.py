"""The real-time scoring API: push a customer, get its segment, tier and reasons.

Routes are thin: ``/v1/score`` parses records with ``records.parse_records`` (the field parsers a file's cells go
through) and scores them with the :class:`CompiledScorer` of exactly the fitted model the pipeline stored; the read-only
routes show the served model, its segment profiles and the warehouse's published assignments.

Order of checks on ``POST /v1/score``: API key (401) -> body size (413, before reading it) and time (408, see
``limits``) -> JSON (422) ->
batch size (413) -> field validation (422, every bad field named) -> scoring. No client input reaches a 5xx: the
OpenAPI schema is fuzzed with schemathesis in the tests.

With a :class:`DecisionLog` (``segmentation serve`` always passes one), every answer 200 or 422 of
``/v1/score`` is recorded (``decision_log``), the answer carries its ``X-Request-ID``, and ``/healthz`` reports the
log's state; a fail-closed log that cannot write makes the route answer 503 instead of scoring.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency annotations of closures at runtime.
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from itertools import repeat
from pathlib import Path
from typing import Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.security import APIKeyHeader
from pydantic import TypeAdapter

from segmentation_pipeline.api.batch_json import batch_columns
from segmentation_pipeline.api.batching import SingleRecordBatcher
from segmentation_pipeline.api.decision_log import DecisionLog
from segmentation_pipeline.api.limits import BODY_TIMEOUT_SECONDS, BodyRefused, read_body
from segmentation_pipeline.api.model_cache import LoadedModel, ModelCache, _finite
from segmentation_pipeline.api.schemas import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    CustomerAssignment,
    CustomerRecord,
    ErrorResponse,
    Health,
    ModelInfo,
    ReasonOut,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreBatchResponseOut,
    ScoreResult,
    ScoreResultOut,
    SegmentsResponse,
)
from segmentation_pipeline.api.security import API_KEY_HEADER, ApiKeyVerifier
from segmentation_pipeline.stages import fields
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.fields import MAX_ID_LENGTH
from segmentation_pipeline.stages.records import RecordsInvalid, parse_columns, parse_records
from segmentation_pipeline.warehouse.store import WarehouseBusy

try:  # orjson: ~5x faster JSON decoding than the standard library (msgspec encodes the responses)
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, the fallback keeps the service correct anyway
    orjson = None

log = logging.getLogger("segmentation.api")

_ERRORS = {
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    413: {"model": ErrorResponse, "description": f"body over the byte limit, or more than {MAX_BATCH} customers"},
    422: {"model": ErrorResponse, "description": "invalid JSON or invalid fields (each one named in `detail`)"},
}
_REFUSED_UNLOGGED = {"model": ErrorResponse, "description": "the decision log cannot be written and the service is "
                     "set to fail-closed: nothing is scored until it can; retry later"}  # fmt: skip


_UNAUTHORIZED = b'{"detail":"missing or invalid API key"}'
_UNLOGGED = b'{"detail":"the decision log cannot be written (fail-closed): nothing is scored until it can"}'


class _BodyError(Exception):
    def __init__(self, status: int, detail: object) -> None:
        self.status, self.detail = status, detail


def create_app(
    warehouse_path: str | Path,
    api_keys: Sequence[str] | None,
    *,
    check_interval: float = 2.0,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    cache: ModelCache | None = None,
    decisions: DecisionLog | None = None,
) -> FastAPI:
    """The scoring service over a warehouse.

    ``api_keys=None`` disables authentication (only for an explicit ``--insecure-no-auth``); an empty sequence
    is refused. The active model is loaded now (``LookupError`` when the warehouse has none) and re-checked every
    ``check_interval`` seconds while the app runs (lifespan). ``decisions``: the decision log, started and flushed
    with the app (None: answers are not recorded).
    """
    verifier = None if api_keys is None else ApiKeyVerifier(api_keys)
    cache = cache or ModelCache(warehouse_path, check_interval=check_interval)
    assignments_store = cache.warehouse

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - starlette's lifespan protocol
        cache.start()
        if decisions is not None:
            decisions.start()
        try:
            yield
        finally:
            cache.stop()
            if decisions is not None:  # after uvicorn's graceful shutdown: every answer given is in the buffer
                decisions.close()

    app = FastAPI(
        title="Customer risk segmentation API",
        version="1",
        summary="Score customers into High/Medium/Low risk segments with the pipeline's fitted model.",
        description=(
            f"Every `/v1` route needs the header `{API_KEY_HEADER}`. `POST /v1/score` takes one customer (an "
            f'object in the workbook\'s field names) or `{{"customers": [...]}}` (1 to {max_batch}); bodies over '
            f"{max_body_bytes} bytes and bigger batches get 413, invalid fields 422 naming each field."
        ),
        lifespan=lifespan,
    )
    app.state.model_cache = cache
    app.state.decisions = decisions
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="an API key of the service")

    async def require_key(key: Annotated[str | None, Depends(key_header)]) -> None:  # async: no thread hop
        if verifier is not None and not verifier(key):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "ApiKey"})

    authed = [Depends(require_key)]
    singles = SingleRecordBatcher(lambda records: _score_singles(records, cache.current))

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> dict[str, object]:
        """Liveness, the served model version and the decision log's state (no key needed; nothing about
        customers). `status` is `degraded` while the decision log cannot be written."""
        checked = cache.last_check
        log_health = None if decisions is None else decisions.health()
        return {
            "status": "degraded" if log_health and log_health["status"] == "degraded" else "ok",
            "model_version": cache.current.version,
            "seconds_since_model_check": None if checked is None else round(time.monotonic() - checked, 3),
            "decision_log": log_health,
        }

    @app.post(
        "/v1/score",
        response_model=ScoreResult | ScoreBatchResponse,
        responses={**_ERRORS, 503: _REFUSED_UNLOGGED},  # type: ignore[arg-type]
        tags=["scoring"],
        openapi_extra={
            # The key is checked inline on this hot route (FastAPI's dependency solving costs ~50 us a call);
            # the security requirement is declared here so the docs and clients see it like on the others.
            "security": [{"APIKeyHeader": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/CustomerRecord"},
                                {"$ref": "#/components/schemas/ScoreBatchRequest"},
                            ]
                        }
                    }
                },
            },
        },
    )
    async def score(request: Request) -> Response:
        """Score one customer (a `CustomerRecord`) or a batch (`{"customers": [...]}`): cluster, risk tier,
        distance to the segment centre, the customer's risk score and the reasons behind its tier."""
        started = time.perf_counter()
        key_id = None
        if verifier is not None:
            key_id = verifier.identify(request.headers.get(API_KEY_HEADER))
            if key_id is None:
                return Response(_UNAUTHORIZED, status_code=401, media_type="application/json",
                                headers={"WWW-Authenticate": "ApiKey"})  # fmt: skip
        record = None
        if decisions is not None:
            if decisions.refusing:
                return Response(_UNLOGGED, status_code=503, media_type="application/json",
                                headers={"Retry-After": "5"})  # fmt: skip
            request_id = decisions.request_id()
            headers = {"X-Request-ID": request_id}

            def record(status: int, payload: object, answer: bytes) -> None:  # 200, 422 are decisions; 413 is not
                if status == 200 or status == 422:
                    decisions.add(request_id, key_id, body, status, payload, answer, started)
        else:
            headers = None
        try:
            body = await read_body(request, max_body_bytes, body_timeout)
            if len(body) > 65_536:  # big bodies: decode, score and encode off the event loop
                loaded = cache.current  # one model for the whole request, even if a new one is published meanwhile
                status, encoded = await run_in_threadpool(_score_body_encoded, body, loaded, max_batch, record)
                return Response(encoded, status_code=status, media_type="application/json", headers=headers)
            records, batch = _records_of(body, max_batch)
            if batch:
                status, payload = _score_records(records, cache.current, batch=True)
            else:  # one customer: scored together with the others that arrive at the same moment
                status, payload = await singles.score(records[0])
        except _BodyError as error:
            status, payload = error.status, {"detail": error.detail}
        except BodyRefused as refused:  # too big (413), too slow (408, and the connection closed), client gone
            return refused.response()
        answer = _dumps(payload)
        if record is not None:
            record(status, payload, answer)
        return Response(answer, status_code=status, media_type="application/json", headers=headers)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=authed, responses={401: _ERRORS[401]}, tags=["model"])
    async def model_info() -> dict[str, object]:
        """The served model version: its quality metrics, k, training time, the hash of its input file, the score
        boundaries of its tiers and the policy rules it applies."""
        loaded = cache.current
        model = loaded.model
        return {
            "model_version": model.version,
            "k": model.k,
            "metrics": {name: _finite(value) for name, value in model.metrics.items()},
            "trained_at": model.trained_at,
            "input_sha256": model.input_sha256,
            "n_customers": model.n_customers,
            "reference_date": model.reference_date,
            "run_id": model.run_id,
            "cluster_tiers": {str(c): t for c, t in enumerate(model.tiers.cluster_tiers)},
            "score_boundaries": {tier: _finite(model.tiers.boundary_of(tier)) for tier in ("High", "Medium")},
            "policy": {**model.policy.to_dict(), "sha256": model.policy.sha256},
            "loaded_at": loaded.loaded_at,
        }

    @app.get(
        "/v1/segments", response_model=SegmentsResponse, dependencies=authed, responses={401: _ERRORS[401]},
        tags=["model"],
    )  # fmt: skip
    async def segments() -> dict[str, object]:
        """Per segment: its tier, risk score, the score's terms and the typical (median) indicator values."""
        loaded = cache.current
        return {"model_version": loaded.version, "segments": loaded.segments}

    @app.get(
        "/v1/customers/{customer_id}",
        response_model=CustomerAssignment,
        dependencies=authed,
        responses={
            401: _ERRORS[401],
            404: {"model": ErrorResponse, "description": "no published assignment for this customer"},
            503: {"model": ErrorResponse, "description": "the warehouse is locked by a run; retry shortly"},
        },
        tags=["customers"],
    )
    def customer(customer_id: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)]) -> dict[str, object]:
        """The customer's latest assignment as published by the pipeline (table `cluster_assignments`); the id as
        text, exactly as exported (leading zeros count)."""
        parsed = fields.customer_id(customer_id)
        if type(parsed) is fields.Bad or parsed is None:
            reason = parsed.reason if type(parsed) is fields.Bad else "customer id is required"
            raise HTTPException(422, [_error(["path", "customer_id"], reason, "value_error")])
        try:
            row = _latest_assignment(assignments_store, str(parsed))
        except WarehouseBusy:
            raise HTTPException(503, "the warehouse is busy (a pipeline run is writing); retry shortly",
                                headers={"Retry-After": "1"}) from None  # fmt: skip
        if row is None:
            raise HTTPException(404, f"no assignment published for customer {customer_id}")
        return row

    def openapi() -> dict[str, Any]:
        # The score route reads its body itself (aliases, byte limit), so its request models are added here.
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            extra = TypeAdapter(ScoreBatchRequest).json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components["ScoreBatchRequest"] = extra
            components.setdefault("CustomerRecord", CustomerRecord.model_json_schema())
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# --- helpers ------------------------------------------------------------------------------------------------------


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _score_body(body: bytes, loaded: LoadedModel, max_batch: int) -> tuple[int, object]:
    """Decode, validate and score. Returns (status, payload)."""
    decoded = batch_columns(body, max_batch)  # the common big batch: straight into columns
    if decoded is not None:
        columns, spelled, n = decoded
        reference_date = loaded.scorer.reference_date
        return _answer(lambda: parse_columns(columns, spelled, n, reference_date=reference_date), loaded, batch=True)
    try:
        records, batch = _records_of(body, max_batch)
    except _BodyError as error:
        return error.status, {"detail": error.detail}
    return _score_records(records, loaded, batch=batch)


def _score_body_encoded(
    body: bytes, loaded: LoadedModel, max_batch: int, record: Callable[[int, object, bytes], None] | None = None
) -> tuple[int, bytes]:
    """``_score_body`` with the payload already JSON (its objects freed in the calling thread); ``record`` is
    given the answer, as an object and as sent."""
    status, payload = _score_body(body, loaded, max_batch)
    answer = _dumps(payload)
    if record is not None:
        record(status, payload, answer)
    return status, answer


def _records_of(body: bytes, max_batch: int) -> tuple[list[object], bool]:
    """The body's customer records, and whether they came as a batch; ``_BodyError`` (422/413) otherwise."""
    try:
        payload = orjson.loads(body) if orjson is not None else json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:  # orjson.JSONDecodeError is a ValueError
        message = f"body is not valid JSON: {str(error)[:200]}"
        raise _BodyError(422, [_error(["body"], message, "json_invalid")]) from None
    if isinstance(payload, dict) and "customers" in payload:
        records = payload["customers"]
        unknown = [key for key in payload if key != "customers"]
        if unknown:
            raise _BodyError(422, [_error(["body", k], "unknown field", "extra_forbidden") for k in unknown[:20]])
        if not isinstance(records, list):
            raise _BodyError(422, [_error(["body", "customers"], "must be a list of customers", "list_type")])
        if len(records) > max_batch:
            raise _BodyError(413, f"{len(records)} customers in one request; the limit is {max_batch}")
        if not records:
            raise _BodyError(422, [_error(["body", "customers"], "at least one customer", "too_short")])
        return records, True
    if isinstance(payload, dict):
        return [payload], False
    raise _BodyError(422, [_error(["body"], 'expected a customer object or {"customers": [...]}', "model_type")])


def _score_records(records: Sequence[object], loaded: LoadedModel, *, batch: bool) -> tuple[int, object]:
    """Validate and score the records of one request: (200, result or batch response) or (422, every problem)."""
    reference_date = loaded.scorer.reference_date
    return _answer(lambda: parse_records(records, reference_date=reference_date), loaded, batch=batch)


def _answer(parse: Callable[[], CustomerBatch], loaded: LoadedModel, *, batch: bool) -> tuple[int, object]:
    try:
        parsed = parse()
    except RecordsInvalid as invalid:
        return 422, {"detail": _problem_details(invalid, batch=batch)}
    results = _results(parsed, loaded)
    if batch:
        return 200, ScoreBatchResponseOut(model_version=loaded.version, count=len(results), results=results)
    return 200, results[0]


def _problem_details(invalid: RecordsInvalid, *, batch: bool) -> list[dict[str, object]]:
    prefix = ["body", "customers"] if batch else ["body"]
    return [
        _error([*prefix, *([p.row] if batch else []), *([p.field] if p.field else [])], p.message, p.type)
        for p in invalid.problems
    ]


def _score_singles(records: Sequence[object], loaded: LoadedModel) -> list[tuple[int, object]]:
    """One-customer requests that arrived together (see ``batching``): scored as one batch, each answered as if
    alone. If any record is invalid, each is validated and scored on its own so that errors stay per request."""
    if len(records) > 1:
        try:
            parsed = parse_records(records, reference_date=loaded.scorer.reference_date)
        except RecordsInvalid:
            return [_score_records([record], loaded, batch=False) for record in records]
        return [(200, result) for result in _results(parsed, loaded)]
    return [_score_records(records, loaded, batch=False)]


def _results(parsed: CustomerBatch, loaded: LoadedModel) -> list[ScoreResultOut]:
    scorer, version = loaded.scorer, loaded.version
    scored = scorer.score(parsed)
    table = scorer.reason_table(scored)
    reasons = list(map(ReasonOut, table.indicator, table.value, table.segment_typical, table.population_typical,
                       table.contribution))  # fmt: skip
    results = list(
        map(ScoreResultOut, scored.customer_id.tolist(), scored.cluster.tolist(), scored.risk_tier.tolist(),
            scored.segment_tier.tolist(), scored.tier_before_rules.tolist(), scored.rating.basis.tolist(),
            scorer.rule_ids(scored), scored.distance_to_centroid.tolist(), scored.risk_score.tolist(), repeat(version),
            table.per_customer_lists(reasons))
    )  # fmt: skip
    if log.isEnabledFor(logging.DEBUG):  # ids only: nothing else about a customer is ever logged
        log.debug("scored %d customer(s) with %s: ids %s", len(results), version, scored.customer_id[:20].tolist())
    return results


def _error(loc: list[object], message: str, kind: str) -> dict[str, object]:
    return {"loc": loc, "msg": message, "type": kind}


def _dumps(payload: object) -> bytes:
    return _ENCODER.encode(payload)  # structs, dicts and lists; non-finite floats become null


_ENCODER = msgspec.json.Encoder()


_ASSIGNMENT_SQL = (
    "SELECT customer_id, cluster, risk_tier, segment_tier, tier_before_rules, rating_basis, "
    "coalesce(rule_ids, []) AS rule_ids, risk_score, distance_to_centroid, pc1, pc2, model_version, "
    "policy_version, run_id FROM cluster_assignments WHERE customer_id = ? "
    "ORDER BY model_version DESC NULLS LAST LIMIT 1"
)


def _latest_assignment(store: Any, customer_id: str) -> dict[str, object] | None:
    """One short read-only query; None when the customer (or the table) is not there."""
    import duckdb

    with store.connect(read_only=True) as connection:
        try:
            cursor = connection.execute(_ASSIGNMENT_SQL, [customer_id])
        except (duckdb.CatalogException, duckdb.BinderException):  # nothing published yet, or before this version
            return None
        row = cursor.fetchone()
        if row is None:
            return None
        names = [column[0] for column in cursor.description]
    record = dict(zip(names, row, strict=True))
    for name in ("risk_score", "distance_to_centroid", "pc1", "pc2"):
        record[name] = _finite(record[name])
    return record
