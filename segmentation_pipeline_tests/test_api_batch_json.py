"""Big batch bodies in workbook headers are decoded straight into columns (msgspec); every other body takes the
general path (orjson + parse_records). Both paths give the same answers, errors included."""

from __future__ import annotations

import json

import orjson
import pytest

from segmentation_pipeline.api.app import _BodyError, _records_of, _score_body, _score_body_encoded, _score_records
from segmentation_pipeline.api.batch_json import batch_columns
from segmentation_pipeline.api.model_cache import LoadedModel, compile_model
from segmentation_pipeline.warehouse import Warehouse
from segmentation_pipeline.warehouse.models import load_model
from segmentation_pipeline_tests.api_fixtures import file_records


@pytest.fixture(scope="module")
def trained(trained_warehouse) -> tuple[LoadedModel, list[dict[str, object]]]:  # noqa: ANN001 - conftest fixture
    loaded = compile_model(load_model(Warehouse(trained_warehouse.path)))
    return loaded, file_records(trained_warehouse.source)


def _general(body: bytes, loaded: LoadedModel) -> tuple[int, object]:
    records, batch = _records_of(body, 10_000)
    return _score_records(records, loaded, batch=batch)


def _odd(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """The same customers with the value types and spellings a real client sends (all valid)."""
    out = []
    for i, record in enumerate(records):
        record = dict(record)
        kind = i % 8
        if kind == 0:
            record["ExpVolume"] = "1,250,000"
            record["isPep"] = " yes "
        elif kind == 1:
            record["isPep"], record["CTRMatch"] = True, 0
            record["ActualVolume"] = 987_654_321_987  # a big whole number
        elif kind == 2:
            record["SubscribedChannels"] = ["ATM", "MobileApp", "ATM"]
            record["City"] = None
        elif kind == 3:
            record.pop("CashUsage", None)
            record["DateofBirth"] = "25/09/1994"
        elif kind == 4:
            record["Province"] = "Pünjab"
            record["NumAlerts"] = 3.0
        elif kind == 5:
            record["CustomerSince"] = 36_000  # an Excel serial number
        out.append(record)
    return out


def test_workbook_header_batches_take_the_column_path_and_answer_as_the_general_path(trained: tuple) -> None:
    loaded, records = trained
    for batch in (records[:300], _odd(records[:300])):
        body = orjson.dumps({"customers": batch})
        assert batch_columns(body, 10_000) is not None
        fast, general = _score_body(body, loaded, 10_000), _general(body, loaded)
        assert fast[0] == general[0] == 200
        assert fast == general


def test_invalid_records_get_the_same_422_on_both_paths(trained: tuple) -> None:
    loaded, records = trained
    batch = [dict(record) for record in records[:50]]
    batch[3]["ExpVolume"] = -1
    batch[10]["isPep"] = "maybe"
    batch[17]["DateofBirth"] = "2999-01-01"
    batch[20]["Gender"] = ["F"]
    batch[33]["CustomerID"] = None
    body = orjson.dumps({"customers": batch})
    assert batch_columns(body, 10_000) is not None
    fast, general = _score_body(body, loaded, 10_000), _general(body, loaded)
    assert fast[0] == general[0] == 422

    def located(payload: object) -> set[tuple[object, ...]]:
        return {(*error["loc"], error["msg"]) for error in payload["detail"]}  # type: ignore[index]

    assert located(fast[1]) == located(general[1])
    assert {loc[2] for loc in located(fast[1])} == {3, 10, 17, 20, 33}


@pytest.mark.parametrize(
    "body",
    [
        {"customers": [{"Customer No": 1, "Is PEP": "Y"}]},  # alias spellings
        {"customers": [{"CustomerID": 1, "Favourite Colour": "red"}]},  # an unknown field
        {"customers": [{"CustomerID": 1}, 5]},  # a record that is not an object
        {"customers": [], "other": 1},
        {"customers": []},
        {"CustomerID": 1},  # one customer, not a batch
        [1, 2],
    ],
)
def test_any_other_body_takes_the_general_path(trained: tuple, body: object) -> None:
    loaded, _ = trained
    encoded = json.dumps(body).encode()
    assert batch_columns(encoded, 10_000) is None
    assert _score_body(encoded, loaded, 10_000) == _general_or_error(encoded, loaded)


def _general_or_error(body: bytes, loaded: LoadedModel) -> tuple[int, object]:
    try:
        return _general(body, loaded)
    except _BodyError as error:
        return error.status, {"detail": error.detail}


def test_batches_over_the_limit_are_left_to_the_general_path(trained: tuple) -> None:
    loaded, records = trained
    body = orjson.dumps({"customers": records[:12]})
    assert batch_columns(body, 12) is not None and batch_columns(body, 11) is None
    assert _score_body(body, loaded, 11)[0] == 413


def test_not_json_is_left_to_the_general_path(trained: tuple) -> None:
    loaded, _ = trained
    for body in (b"{not json", b'{"customers": [{"CustomerID": NaN}]}', b"\xff\xfe", b""):
        assert batch_columns(body, 10_000) is None
        assert _score_body(body, loaded, 10_000)[0] == 422


def test_responses_have_exactly_the_documented_shape(trained: tuple) -> None:
    from segmentation_pipeline.api.schemas import (
        Reason,
        ReasonOut,
        ScoreBatchResponse,
        ScoreBatchResponseOut,
        ScoreResult,
        ScoreResultOut,
    )

    for struct, model in ((ReasonOut, Reason), (ScoreResultOut, ScoreResult),
                          (ScoreBatchResponseOut, ScoreBatchResponse)):  # fmt: skip
        assert struct.__struct_fields__ == tuple(model.model_fields)  # same fields, same order
    loaded, records = trained
    status, encoded = _score_body_encoded(orjson.dumps({"customers": records[:200]}), loaded, 10_000)
    assert status == 200
    ScoreBatchResponse.model_validate_json(encoded)  # the documented schema accepts what is sent
    assert json.loads(encoded)["results"][0]["reasons"][0].keys() == Reason.model_fields.keys()
