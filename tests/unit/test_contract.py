"""The wire contract: envelopes, ids, headers and the checked-in JSON Schema."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from hubclient.headers import (
    REPLY_PARTITION,
    decode_partition,
    encode_partition,
    header_value,
    request_headers,
)
from hubclient.ids import new_request_id, request_id_time_ms
from hubclient.models import ApiRequest, ApiResponse, Priority, Status, Timing
from services import schemas


class Text(str):
    """A subclass of str, as a library might hand over."""


def make_request(**overrides: object) -> ApiRequest:
    """A valid request with ``overrides`` applied."""
    fields: dict[str, object] = {
        "request_id": new_request_id(),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "caller": "unit",
        "deadline_ms": 2_000,
        "created_at_ms": 1_000,
        "reply_topic": "api.responses",
        "reply_partition": 3,
    }
    fields.update(overrides)
    return ApiRequest.model_validate(fields)


def test_request_id_is_uuid7_with_time() -> None:
    """Request ids are version-7 UUIDs carrying their creation time in milliseconds."""
    rid = new_request_id(now_ms=1_700_000_000_123)
    parsed = uuid.UUID(rid)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert request_id_time_ms(rid) == 1_700_000_000_123
    assert new_request_id(now_ms=1) < new_request_id(now_ms=2)  # sortable by time


def test_request_round_trip_and_defaults() -> None:
    """A request survives JSON encoding unchanged and gets the documented defaults."""
    request = make_request()
    assert ApiRequest.from_json(request.to_json()) == request
    assert request.priority is Priority.NORMAL and request.params == {}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"provider": "NYSE"}, "provider"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"reply_partition": -1}, "reply_partition"),
        ({"deadline_ms": 500}, "deadline_ms"),
        ({"deadline_ms": 1 << 63}, "deadline_ms"),
        ({"created_at_ms": 1 << 63}, "created_at_ms"),
        ({"priority": "urgent"}, "priority"),
        ({"unexpected": 1}, "unexpected"),
        ({"credential": "has space"}, "credential"),
    ],
)
def test_request_validation(overrides: dict[str, object], field: str) -> None:
    """Malformed requests are refused with the offending field named."""
    with pytest.raises(ValidationError) as info:
        make_request(**overrides)
    assert field in str(info.value)


def test_limit_domain() -> None:
    """The partition key is the provider, or provider/credential for a pool member."""
    assert make_request().limit_domain == "KIS"
    assert make_request(provider="KIWOOM", credential="acct-2").limit_domain == "KIWOOM/acct-2"


def test_non_ok_response_needs_reason() -> None:
    """Every non-ok response carries a machine-readable reason."""
    with pytest.raises(ValidationError):
        ApiResponse(request_id=new_request_id(), status=Status.REJECTED)
    ok = ApiResponse(request_id=new_request_id(), status=Status.OK, data={"rt_cd": "0"})
    assert ApiResponse.from_json(ok.to_json()) == ok and ok.ok


@pytest.mark.parametrize(
    "data",
    [
        {"rt_cd": "0", "msg1": "정상처리 되었습니다.", "output": [{"stck_prpr": "62400"}, {}], "n": None},
        [1, -2, 3.25, 1e300, 0.1, True, False, None, "", '\u0000\t"\\ \U0001f600'],
        {"status": Status.OK, "priority": Priority.BULK},  # enums: by value
        # orjson cannot write these, or writes them its own way: pydantic's serializer does
        {"big": 1 << 70},
        {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
        {1: "int key"},
        {"pair": (1, "a"), "day": date(2026, 1, 2), "text": Text("sub")},
    ],
)
def test_to_json_writes_what_pydantic_writes(data: object) -> None:
    """The fast writer and pydantic's serializer give the same bytes, whatever a broker's body holds."""
    response = ApiResponse(
        request_id=new_request_id(),
        status=Status.UPSTREAM_ERROR,
        reason="http_500",
        http_status=500,
        data=data,
        continuation={"tr_cont": "M"},
        timing=Timing(queued_ms=1.5, upstream_ms=0.125, total_ms=12.0),
        attempts=2,
        credential="k01",
    )
    assert response.to_json() == response.__pydantic_serializer__.to_json(response)
    request = make_request(params={"FID_INPUT_ISCD": "005930", "n": 3}, priority="bulk")
    assert request.to_json() == request.__pydantic_serializer__.to_json(request)


def test_headers_mirror_the_body() -> None:
    """Request headers carry the correlation id and a 4-byte big-endian reply partition."""
    request = make_request(reply_partition=258)
    headers = request_headers(request)
    raw = header_value(headers, REPLY_PARTITION)
    assert raw == b"\x00\x00\x01\x02"
    assert decode_partition(raw) == 258
    assert decode_partition(b"7") == 7  # decimal text from hand-written tools
    assert encode_partition(0) == b"\x00\x00\x00\x00"
    assert header_value(headers, "kafka_correlationId") == request.request_id.encode()
    assert header_value(headers, "missing") is None


@pytest.mark.parametrize(
    ("raw", "partition"),
    [(b"\x00\x00\x00\x31", 49), (b"0003", 3), (b"1000", 1000), (b" 12 ", 12), (b"7", 7)],
)
def test_a_partition_header_is_binary_unless_it_is_all_digits(raw: bytes, partition: int) -> None:
    """Four digit bytes are text: as an int they would be a partition past 808 million."""
    assert decode_partition(raw) == partition


@pytest.mark.parametrize("raw", [b"1_0", b"-1", b"0x1", b"", b"3.0"])
def test_a_partition_header_that_is_not_a_number_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_partition(raw)


def test_checked_in_schemas_match_the_models() -> None:
    """schemas/*.schema.json equal what the models generate (run `apihub schemas generate` after a change)."""
    assert schemas.stale() == []


def test_stale_schema_is_detected(tmp_path: object) -> None:
    """The check notices a schema file that differs from the models."""
    from pathlib import Path

    directory = Path(str(tmp_path))
    schemas.write(directory)
    assert schemas.stale(directory) == []
    (directory / "api-request.schema.json").write_text("{}")
    assert schemas.stale(directory) == ["api-request.schema.json"]
