"""schemas/ read as a client in another language reads it: a JSON Schema validator (Draft 2020-12) and the
models agree on what is a request and what is an answer, and every answer the gateway writes is valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from hubclient.models import ApiRequest, ApiResponse, Status
from services.gateway.intake import read_record
from services.gateway.testing import build_gateway, kis_envelope
from tests.unit.test_bad_input import REPLY_TOPICS, record
from tests.unit.test_contract import make_request
from tests.unit.test_contract_headers import spring_headers
from tests.unit.test_gateway_core import request, serve

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


REQUEST = validator("api-request.schema.json")
RESPONSE = validator("api-response.schema.json")


def model_accepts(model: type[BaseModel], instance: dict[str, Any]) -> bool:
    try:
        model.model_validate(instance)
    except ValidationError:
        return False
    return True


def request_body(**changes: Any) -> dict[str, Any]:
    """A request as another language would write it: hubclient's bytes, read back as plain JSON."""
    fields: dict[str, Any] = orjson.loads(make_request().to_json())
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not ...}


@pytest.mark.parametrize(
    ("instance", "valid"),
    [
        (request_body(), True),
        (request_body(kind="websocket_credentials", tr_id="websocket_credentials", params={}), True),
        (request_body(kind="websocket_credentials"), False),  # a broker tr_id with that kind
        (request_body(kind="websocket_credentials", tr_id="websocket_credentials", params={"a": 1}), False),
        (request_body(deadline_ms=1 << 63), False),
        (request_body(created_at_ms=0), False),
        (request_body(deadline_ms="2000"), False),
        (request_body(reply_partition=1 << 31), False),
        (request_body(reply_topic=""), False),
        (request_body(priority="urgent"), False),
        (request_body(unexpected=1), False),
    ],
)
def test_schema_and_model_agree_on_requests(instance: dict[str, Any], valid: bool) -> None:
    assert REQUEST.is_valid(instance) is valid
    assert model_accepts(ApiRequest, instance) is valid


def test_a_request_leaving_its_address_to_headers_is_valid_and_served() -> None:
    """The schema lets the reply address go (Spring's headers name it); the intake then fills it in."""
    instance = request_body(reply_topic=..., reply_partition=...)
    assert REQUEST.is_valid(instance)
    intake = read_record(record(orjson.dumps(instance), spring_headers(partition=2)), REPLY_TOPICS)
    assert intake.request is not None and intake.request.reply_partition == 2


def response_body(**fields: Any) -> dict[str, Any]:
    return {"request_id": make_request().request_id, "status": "ok", **fields}


@pytest.mark.parametrize(
    ("instance", "valid"),
    [
        (response_body(data={"output": {}}), True),
        (response_body(status="invalid", reason="unknown_tr_id"), True),
        (response_body(status="invalid"), False),  # a failure names its reason
        (response_body(status="upstream_error", reason=""), False),
        (response_body(status="maybe"), False),
    ],
)
def test_schema_and_model_agree_on_responses(instance: dict[str, Any], valid: bool) -> None:
    assert RESPONSE.is_valid(instance) is valid
    assert model_accepts(ApiResponse, instance) is valid


async def test_every_answer_the_gateway_writes_is_valid() -> None:
    """A served read, a broker's refusal and an unknown tr_id, as the bytes the gateway publishes."""
    rig = build_gateway()
    served = await serve(rig, [request(rig.clock)])
    rig.broker.then(kis_envelope("APBK0919", rt_cd="1"))
    refused = await serve(rig, [request(rig.clock)])
    unknown = await serve(rig, [request(rig.clock, tr_id="ZZZZ9999")])
    answers = [a.response for a in served + refused + unknown]
    assert [a.status is Status.OK for a in answers] == [True, False, False]
    for answer in answers:
        errors = [e.message for e in RESPONSE.iter_errors(orjson.loads(answer.to_json()))]
        assert errors == [], answer
