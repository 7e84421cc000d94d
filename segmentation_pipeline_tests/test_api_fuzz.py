"""Fuzzing the OpenAPI schema with schemathesis: no input ever gets a 5xx, and every answer matches the schema
(status codes, content types, bodies). Runs in-process (ASGI) against a trained warehouse, with a bounded number
of examples per operation, in both modes: valid-by-schema inputs and deliberately invalid ones.

(The operations are driven with Hypothesis directly rather than through ``@schema.parametrize()`` because
schemathesis' lazy ``from_fixture`` loader fails under pytest 9, and loading the schema at import time would train a
model whenever the test suite is merely collected.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from segmentation_pipeline.api import create_app
from segmentation_pipeline_tests.api_fixtures import API_KEY

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
INPUTS = {"/v1/score", "/v1/customers/{customer_id}"}  # the routes that take client input
EXAMPLES = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 60}


@pytest.fixture(scope="module")
def api_schema(trained_warehouse) -> schemathesis.BaseSchema:  # noqa: ANN001 - the conftest fixture
    warehouse: Path = trained_warehouse.path
    app = create_app(warehouse, [API_KEY], max_body_bytes=1_000_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(api_schema: schemathesis.BaseSchema) -> list[object]:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} == {  # type: ignore[attr-defined]
        "/healthz", "/v1/score", "/v1/model", "/v1/segments", "/v1/customers/{customer_id}",
    }  # fmt: skip
    return operations


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_input_gets_a_server_error(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    for operation in _operations(api_schema):
        if mode is GenerationMode.NEGATIVE and operation.path not in INPUTS:  # type: ignore[attr-defined]
            continue  # nothing to make invalid on a route without a body or path parameter

        @given(case=operation.as_strategy(generation_mode=mode))  # type: ignore[attr-defined]
        @settings(max_examples=EXAMPLES[mode], deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)  # fmt: skip
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)

        fuzz()


def test_no_route_works_without_the_key(api_schema: schemathesis.BaseSchema) -> None:
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy())  # type: ignore[attr-defined]
        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)  # fmt: skip
        def probe(case: schemathesis.Case) -> None:
            response = case.call(headers={"X-API-Key": "not-a-valid-key-at-all"})
            expected = 200 if case.path == "/healthz" else 401
            assert response.status_code == expected, (case.path, response.status_code)

        probe()
