"""WebSocket credentials: lent by the gateway's token store through a request of their own kind, never
issued twice, never logged; the client side over the in-memory transport."""

from __future__ import annotations

import asyncio
import logging
import uuid

import orjson
import pytest

from hubclient import HubClient, MalformedPayload, RequestRejected
from hubclient.models import (
    WEBSOCKET_CREDENTIALS_TR_ID,
    ApiRequest,
    ApiResponse,
    Priority,
    Provider,
    RequestKind,
    Status,
    WebSocketCredentials,
)
from hubclient.testing import InMemoryTransport, failed, ok
from services.gateway.clock import ManualClock
from services.gateway.permissions import Grant, Permissions
from services.gateway.providers.base import UpstreamAnswer
from services.gateway.providers.kis import APPROVAL_KEY_LIFETIME_S, KisAdapter
from services.gateway.testing import FakeDispatcher, FakeKis, Rig, build_gateway
from services.gateway.token_store import MemoryTokenStore
from services.gateway.tokens import TokenManager
from services.gateway.websocket import ApprovalIssuer
from services.settings import KisSettings, KiwoomSettings
from tests.unit.test_limit_classes import call

CREDENTIALS = {"provider": "KIS", "kind": "approval_key", "secret": "k-1", "expires_at_ms": 1_790_086_400_000}


def lend_request(clock: ManualClock, provider: Provider, *, deadline_s: float = 10.0) -> ApiRequest:
    """A websocket_credentials request as ``HubClient.websocket_credentials`` sends it."""
    now_ms = int(clock.time() * 1000)
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=provider,
        tr_id=WEBSOCKET_CREDENTIALS_TR_ID,
        caller="kis-service",
        priority=Priority.INTERACTIVE,
        deadline_ms=now_ms + int(deadline_s * 1000),
        created_at_ms=now_ms,
        reply_topic="api.responses",
        reply_partition=0,
        kind=RequestKind.WEBSOCKET_CREDENTIALS,
    )


async def answer(rig: Rig, request: ApiRequest, *, limit_s: float = 30.0) -> ApiResponse:
    """Hand one request to the gateway and move the clock until it is answered."""
    task = asyncio.create_task(rig.gateway.handle(request))
    for _ in range(int(limit_s / 0.01)):
        if task.done():
            break
        await rig.clock.advance(0.01)
    return task.result()


# --- the client and the wire contract ---------------------------------------------------------------


async def test_client_sends_a_request_of_its_own_kind_and_reads_the_credential() -> None:
    """websocket_credentials sends kind websocket_credentials (interactive, no params) and returns the
    typed credential; its repr never shows the secret."""
    transport = InMemoryTransport(lambda request: ok(request, CREDENTIALS))
    async with HubClient(transport, caller="kis-service") as hub:
        credentials = await hub.websocket_credentials("KIS", timeout=2)
    (sent,) = transport.sent
    assert (sent.kind, sent.tr_id, sent.priority, sent.params) == (
        RequestKind.WEBSOCKET_CREDENTIALS,
        WEBSOCKET_CREDENTIALS_TR_ID,
        Priority.INTERACTIVE,
        {},
    )
    assert credentials == WebSocketCredentials.model_validate(CREDENTIALS)
    assert "k-1" not in repr(credentials)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (lambda r: failed(r, Status.REJECTED, "token_unavailable"), RequestRejected),
        (lambda r: ok(r, {"rt_cd": "0"}), MalformedPayload),
    ],
)
async def test_client_raises_for_a_refusal_or_an_answer_without_credential(
    reply: object, error: type
) -> None:
    """A refusal raises its HubError; an ok answer without a credential raises MalformedPayload."""
    async with HubClient(InMemoryTransport(reply), caller="kiwoom-service") as hub:  # type: ignore[arg-type]
        with pytest.raises(error):
            await hub.websocket_credentials("KIWOOM", timeout=2)


def test_a_request_without_kind_is_a_call() -> None:
    """Existing clients send no kind: their requests are broker calls, as before."""
    body = {
        "request_id": str(uuid.uuid4()),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "caller": "java-worker",
        "deadline_ms": 2,
        "created_at_ms": 1,
        "reply_topic": "api.responses",
        "reply_partition": 0,
    }
    assert ApiRequest.from_json(orjson.dumps(body)).kind is RequestKind.CALL


# --- the gateway --------------------------------------------------------------------------------------


async def test_kis_lends_one_approval_key_issued_once() -> None:
    """KIS: the approval key is issued once (POST /oauth2/Approval with appkey and secretkey, in a slot of
    the key's limiter), lent with a day's expiry and lent again from the store; nothing is remembered in
    the idempotency records."""
    rig = build_gateway()
    first = await answer(rig, lend_request(rig.clock, Provider.KIS))
    issued_at_s = rig.clock.time()
    assert rig.gateway.limiters[Provider.KIS].next_slot_in_s() > 0  # the issuance took a slot
    await rig.clock.advance(5)
    second = await answer(rig, lend_request(rig.clock, Provider.KIS))
    assert first.ok and second.ok and first.data == second.data
    credentials = WebSocketCredentials.model_validate(first.data)
    assert (credentials.kind, credentials.secret) == ("approval_key", "approval-1")
    assert credentials.expires_at_ms == pytest.approx((issued_at_s + APPROVAL_KEY_LIFETIME_S) * 1000, abs=100)
    assert rig.broker.approvals_issued == 1 and rig.broker.tokens_issued == 0
    (approval,) = rig.dispatcher.calls("/oauth2/Approval")
    assert approval.request.json_body is not None and set(approval.request.json_body) == {
        "grant_type",
        "appkey",
        "secretkey",
    }
    assert rig.records.records == {}
    await rig.gateway.stop()


async def test_kiwoom_lends_the_gateways_own_token() -> None:
    """Kiwoom: the collector gets the very access token the gateway calls with, and its expiry."""
    rig = build_gateway(kiwoom=KiwoomSettings())
    served = await answer(rig, call(rig.clock, Provider.KIWOOM, "ka10081"))
    lent = await answer(rig, lend_request(rig.clock, Provider.KIWOOM))
    assert served.ok and lent.ok
    credentials = WebSocketCredentials.model_validate(lent.data)
    assert (credentials.kind, credentials.secret) == ("access_token", "kw-token-1")
    assert credentials.expires_at_ms == rig.gateway.tokens._cache[Provider.KIWOOM].expires_at_s * 1000
    assert rig.kiwoom.tokens_issued == 1
    await rig.gateway.stop()


async def test_with_a_permissions_file_only_a_granted_caller_is_lent_a_credential() -> None:
    """A caller without a grant naming websocket_credentials is refused before any token is touched."""
    grant = Grant(providers=frozenset({Provider.KIWOOM}), tr_ids=frozenset({WEBSOCKET_CREDENTIALS_TR_ID}))
    rig = build_gateway(
        kiwoom=KiwoomSettings(), permissions=Permissions(callers={"kiwoom-service": (grant,)})
    )
    stranger = lend_request(rig.clock, Provider.KIWOOM).model_copy(update={"caller": "history-collector"})
    refused = await answer(rig, stranger)
    assert (refused.status, refused.reason, refused.data) == (Status.REJECTED, "not_permitted", None)
    assert rig.kiwoom.tokens_issued == 0
    granted = await answer(
        rig, lend_request(rig.clock, Provider.KIWOOM).model_copy(update={"caller": "kiwoom-service"})
    )
    assert granted.ok and WebSocketCredentials.model_validate(granted.data).secret == "kw-token-1"
    await rig.gateway.stop()


async def test_two_instances_share_one_approval_key() -> None:
    """Two gateways on one store: the second lends the key the first issued, without issuing one."""
    clock = ManualClock()
    broker = FakeKis(clock)
    store = MemoryTokenStore(clock)
    adapter = KisAdapter(
        KisSettings(base_url="https://kis.invalid", appkey="PS" + "k" * 34, appsecret="s" * 180)
    )
    managers = [
        TokenManager(
            {Provider.KIS: ApprovalIssuer(adapter, clock)},
            FakeDispatcher(broker, clock),
            store,
            clock=clock,
            credential="approval_key",
        )
        for _ in range(2)
    ]
    first = asyncio.create_task(managers[0].grant(Provider.KIS))
    await clock.advance(0.1)
    second = asyncio.create_task(managers[1].grant(Provider.KIS))
    await clock.advance(0.1)
    assert first.result() == second.result() and broker.approvals_issued == 1


async def test_a_refused_approval_is_answered_rejected_with_the_broker_code() -> None:
    """KIS's OAuth error body (error_code / error_description) ends the request rejected/token_unavailable,
    naming the code."""
    rig = build_gateway()
    refusal = {"error_code": "EGW00103", "error_description": "유효하지 않은 AppKey입니다."}
    rig.broker.then(UpstreamAnswer(403, {}, refusal), path="/oauth2/Approval")
    response = await answer(rig, lend_request(rig.clock, Provider.KIS))
    assert (response.status, response.reason) == (Status.REJECTED, "token_unavailable")
    assert response.message is not None and "EGW00103" in response.message and response.data is None
    await rig.gateway.stop()


async def test_an_issuance_slower_than_the_deadline_expires_and_serves_the_next_ask() -> None:
    """An approval call that outlasts the deadline answers expired in time; the key it brings is lent
    to the next request without a second issuance."""
    rig = build_gateway()
    rig.broker.then(UpstreamAnswer(200, {}, {"approval_key": "slow-key"}), 3.0, path="/oauth2/Approval")
    late = await answer(rig, lend_request(rig.clock, Provider.KIS, deadline_s=1.0))
    assert (late.status, late.reason) == (Status.EXPIRED, "deadline_too_close")
    assert late.timing.total_ms < 1000
    await rig.clock.advance(3.0)
    lent = await answer(rig, lend_request(rig.clock, Provider.KIS))
    assert WebSocketCredentials.model_validate(lent.data).secret == "slow-key"
    assert len(rig.dispatcher.calls("/oauth2/Approval")) == 1
    await rig.gateway.stop()


async def test_a_named_credential_is_invalid() -> None:
    """Only the configured credential can be lent: a request naming another is invalid."""
    rig = build_gateway()
    request = lend_request(rig.clock, Provider.KIS).model_copy(update={"credential": "acct-2"})
    response = await answer(rig, request)
    assert (response.status, response.reason) == (Status.INVALID, "unknown_credential")
    assert rig.dispatcher.sent == []


async def test_the_secret_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No log line of the gateway while issuing and lending carries the key."""
    rig = build_gateway(kiwoom=KiwoomSettings())
    with caplog.at_level(logging.DEBUG):
        for provider in (Provider.KIS, Provider.KIWOOM):
            assert (await answer(rig, lend_request(rig.clock, provider))).ok
    assert any(r.getMessage() == "token.issued" for r in caplog.records)
    text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "approval-1" not in text and "kw-token-1" not in text
    await rig.gateway.stop()
