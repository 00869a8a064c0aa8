"""HubClient over the in-memory transport: typed errors, timeouts, backpressure and reply matching."""

from __future__ import annotations

import asyncio

import pytest

from hubclient import (
    HubBackpressure,
    HubClient,
    HubNotStarted,
    HubTimeout,
    InvalidRequest,
    RequestExpired,
    RequestRejected,
    UnknownOutcome,
    UnknownTrId,
    UpstreamError,
)
from hubclient.models import ApiRequest, ApiResponse, Priority, Status
from hubclient.testing import InMemoryTransport, failed, ok

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}


async def test_execute_returns_ok_and_builds_the_request() -> None:
    """execute() sends a well-formed request (deadline from the timeout) and returns the ok answer."""
    transport = InMemoryTransport(lambda r: ok(r, {"rt_cd": "0"}))
    async with HubClient(transport, caller="unit") as hub:
        response = await hub.execute("KIS", "FHKST01010100", PRICE, timeout=2, priority="bulk")
    (sent,) = transport.sent
    assert response.data == {"rt_cd": "0"} and response.request_id == sent.request_id
    assert sent.priority is Priority.BULK and sent.caller == "unit"
    assert 1900 <= sent.deadline_ms - sent.created_at_ms <= 2000
    assert (sent.reply_topic, sent.reply_partition) == ("api.responses", 0)


@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        (Status.REJECTED, "backlog_full", RequestRejected),
        (Status.EXPIRED, "deadline_passed", RequestExpired),
        (Status.UPSTREAM_ERROR, "business_error", UpstreamError),
        (Status.UNKNOWN_OUTCOME, "no_answer", UnknownOutcome),
    ],
)
async def test_non_ok_statuses_raise_typed_errors(
    status: Status, reason: str, error: type[Exception]
) -> None:
    """Each non-ok status raises its own HubError subclass carrying the response."""
    async with HubClient(InMemoryTransport(lambda r: failed(r, status, reason)), caller="unit") as hub:
        with pytest.raises(error) as info:
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=1)
        plain = await hub.submit("KIS", "FHKST01010100", PRICE, timeout=1)
    assert plain.status is status
    assert getattr(info.value, "response", None) is not None


@pytest.mark.parametrize(
    ("reason", "retriable"),
    [
        ("backlog_full", True),
        ("deadline_unreachable", True),
        ("circuit_open", True),
        ("token_unavailable", True),  # the broker's next token, about a minute away
        ("idempotency_unavailable", True),  # Redis back: the order was never sent
        ("not_permitted", False),
        ("not_in_mock", False),
        ("internal_error", False),
    ],
)
async def test_retriable_flags(reason: str, retriable: bool) -> None:
    """Rejections that clear up by themselves are retriable (CONTRACT.md's table); a business error is not."""
    async with HubClient(InMemoryTransport(lambda r: failed(r, Status.REJECTED, reason)), caller="u") as hub:
        with pytest.raises(RequestRejected) as info:
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=1)
    assert info.value.retriable is retriable and info.value.reason == reason
    assert not UpstreamError("x", provider_code="1", http_status=200, reason="business_error").retriable


@pytest.mark.parametrize(
    ("reason", "message", "retriable"),
    [
        ("token_rejected", "retry refused: token_unavailable (KIS token: next issuance in 58s)", True),
        ("throttled", "retry refused: circuit_open (KIS is failing)", True),
        ("token_rejected", "EGW00123 the token is no longer valid", False),
        ("business_error", "retry refused: not_permitted", False),
    ],
)
async def test_an_upstream_error_whose_retry_was_refused_for_a_passing_reason_is_retriable(
    reason: str, message: str, retriable: bool
) -> None:
    """The gateway's retry of a call refused because no token could be had yet (or the circuit opened)
    clears as that rejection does: the caller may try again later (CONTRACT.md, upstream_error)."""

    def answer(r: ApiRequest) -> ApiResponse:
        return failed(r, Status.UPSTREAM_ERROR, reason).model_copy(update={"message": message})

    async with HubClient(InMemoryTransport(answer), caller="unit") as hub:
        with pytest.raises(UpstreamError) as info:
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=1)
    assert info.value.retriable is retriable


async def test_timeout_and_late_reply() -> None:
    """An unanswered request times out; its answer arriving later is counted as late, not delivered."""
    held: list[ApiRequest] = []
    transport = InMemoryTransport(lambda r: held.append(r))
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(HubTimeout):
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=0.05)
        assert hub.pending == 0
        hub._on_reply(ok(held[0], {}).to_json())
        hub._on_reply(b"not json")
    assert hub.late_replies == 1 and hub.foreign_replies == 0


async def test_a_slow_send_counts_in_the_timeout() -> None:
    """The caller's timeout bounds the whole round trip: a send acknowledged late does not stretch the
    wait past the request's deadline, and the answer that comes after it counts as late."""

    class SlowAck(InMemoryTransport):
        async def send(self, request: ApiRequest) -> None:
            await super().send(request)  # on its way to the hub
            await asyncio.sleep(0.3)  # but Kafka's acknowledgement is slow

    async def answer_later(r: ApiRequest) -> ApiResponse:
        await asyncio.sleep(0.2)
        return ok(r, {})

    async with HubClient(SlowAck(answer_later), caller="unit") as hub:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HubTimeout, match="could not publish"):
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=0.1)
        assert loop.time() - started < 0.19 and hub.pending == 0
        await asyncio.sleep(0.2)
    assert hub.late_replies == 1


async def test_an_answer_before_a_slow_acknowledgement_is_returned() -> None:
    """An answer that arrives while the send still waits for its acknowledgement is the caller's."""

    class SlowAck(InMemoryTransport):
        async def send(self, request: ApiRequest) -> None:
            await super().send(request)
            await asyncio.sleep(0.3)

    async with HubClient(SlowAck(lambda r: ok(r, {"n": 1})), caller="unit") as hub:
        response = await hub.execute("KIS", "FHKST01010100", PRICE, timeout=0.1)
    assert response.data == {"n": 1}


async def test_backpressure() -> None:
    """Beyond max_pending the client refuses at once instead of queueing without bound."""

    async def slow(r: ApiRequest) -> ApiResponse:
        await asyncio.sleep(0.2)
        return ok(r, {})

    async with HubClient(InMemoryTransport(slow), caller="unit", max_pending=2) as hub:
        calls = [asyncio.create_task(hub.execute("KIS", "FHKST01010100", PRICE, timeout=1)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(HubBackpressure):
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=1)
        await asyncio.gather(*calls)


async def test_misuse_is_reported_clearly() -> None:
    """Using a client before start, an unknown tr_id or a zero timeout are clear errors."""
    hub = HubClient(InMemoryTransport(lambda r: ok(r, {})), caller="unit")
    with pytest.raises(HubNotStarted):
        await hub.execute("KIS", "FHKST01010100", PRICE)
    async with hub:
        with pytest.raises(UnknownTrId):
            await hub.execute("KIS", "ka10080")  # a Kiwoom id asked of KIS
        with pytest.raises(UnknownTrId):
            await hub.execute("NYSE", "FHKST01010100")
        with pytest.raises(Exception, match="timeout must be positive"):
            await hub.execute("KIS", "FHKST01010100", PRICE, timeout=0)


async def test_a_field_the_request_refuses_is_one_line_without_the_value() -> None:
    """A credential (or key) the request model refuses is ``InvalidRequest`` naming the field and the rule
    on one line; pydantic's text spanned four lines, quoted the value and linked its documentation."""
    transport = InMemoryTransport(lambda r: ok(r, {}))
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(InvalidRequest) as caught:
            await hub.submit("KIS", "FHKST01010100", PRICE, credential="not a name: hunter2")
    message = str(caught.value)
    assert message.startswith("invalid request: credential: String should match pattern")
    assert "\n" not in message and "hunter2" not in message and "errors.pydantic.dev" not in message
    assert transport.sent == []
