"""Bad input is refused before it is queued or sent: record size, params size, and one caller's oversized
calls never open the breaker for the others (issue 10)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka import ConsumerRecord

from hubclient.catalog import LimitClass, lookup
from hubclient.headers import CORRELATION_ID, REPLY_PARTITION, REPLY_TOPIC, encode_partition
from hubclient.models import Provider, Status
from services.gateway.admission import check_params_size
from services.gateway.breaker import BreakerState, counts_against_health
from services.gateway.dispatcher import HttpDispatcher
from services.gateway.errors import Invalid, UpstreamUnreachable
from services.gateway.http1 import writable
from services.gateway.intake import read_record
from services.gateway.policy import Action, Result, decide
from services.gateway.providers.base import UpstreamAnswer, UpstreamRequest
from services.gateway.providers.kis import KisAdapter
from services.gateway.testing import Reply, build_gateway
from services.settings import GatewaySettings, KisSettings
from tests.unit.test_gateway_core import PRICE, request, serve

REPLY_TOPICS = frozenset({"api.responses"})


def record(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord[bytes, bytes]:
    """A request-topic record holding ``value``."""
    return ConsumerRecord(
        topic="api.requests",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=headers or [],
    )


def body(**params: object) -> dict[str, object]:
    """A well-formed request body with ``params``."""
    return {
        "request_id": str(uuid.uuid4()),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "params": params,
        "caller": "worker",
        "deadline_ms": 4_000_000_000_000,
        "created_at_ms": 1,
        "reply_topic": "api.responses",
        "reply_partition": 0,
    }


def test_record_over_the_byte_limit_is_too_large_and_answerable_from_headers() -> None:
    """A record past the byte limit is not parsed, is too_large, and keeps its headers' reply address."""
    request_id = str(uuid.uuid4())
    headers = [
        (CORRELATION_ID, request_id.encode()),
        (REPLY_TOPIC, b"api.responses"),
        (REPLY_PARTITION, encode_partition(0)),
    ]
    value = orjson.dumps(body(FID_INPUT_ISCD="x" * 70_000))
    intake = read_record(record(value, headers), REPLY_TOPICS, max_request_bytes=65_536)
    assert intake.request is None
    assert intake.reason is not None and intake.reason.startswith("too_large:")
    assert intake.reply is not None and intake.reply.request_id == request_id


def test_record_under_the_byte_limit_is_read() -> None:
    """A record within the limit is parsed as before."""
    intake = read_record(record(orjson.dumps(body(**PRICE))), REPLY_TOPICS, max_request_bytes=65_536)
    assert intake.request is not None


def test_a_rule_across_fields_reads_as_the_rule_in_the_dead_letter_reason() -> None:
    """A model-level refusal is ``schema: body: <the rule>``, without pydantic's ``Value error, `` prefix
    (the caller's ``invalid`` answer carries the same text in ``message``)."""
    late = {**body(**PRICE), "deadline_ms": 1, "created_at_ms": 2}
    intake = read_record(record(orjson.dumps(late)), REPLY_TOPICS)
    assert intake.reason == "schema: body: deadline_ms is before created_at_ms"


def nested(depth: int) -> list[object]:
    """A list ``depth`` lists deep."""
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("params", "refused", "named"),
    [
        ({}, False, None),
        (dict(PRICE), False, None),
        ({f"K{i}": "1" for i in range(64)}, False, None),
        ({f"K{i}": "1" for i in range(65)}, True, "65 keys"),
        ({"FID_INPUT_ISCD": "x" * 4096}, False, None),
        ({"FID_INPUT_ISCD": "x" * 4097}, True, "FID_INPUT_ISCD"),
        ({"A": "1", "NESTED": {"v": "y" * 5000}}, True, "NESTED"),
        ({"N": 12345}, False, None),
        ({"DEEP": nested(250)}, False, None),
        ({"DEEP": nested(300)}, True, "DEEP"),  # deeper than the call could be written
    ],
)
def test_params_size_table(params: dict[str, object], refused: bool, named: str | None) -> None:
    """Over 64 keys or a value over 4096 characters is invalid / params_too_large, naming the key."""
    if not refused:
        check_params_size(params, max_keys=64, max_value_chars=4096)
        return
    with pytest.raises(Invalid) as info:
        check_params_size(params, max_keys=64, max_value_chars=4096)
    assert info.value.reason == "params_too_large"
    assert named is not None and named in str(info.value)


def test_settings_defaults_match_the_module_defaults() -> None:
    """The settings' defaults are the limits the intake and admission apply by default."""
    settings = GatewaySettings()
    assert (settings.max_request_bytes, settings.max_param_keys, settings.max_param_value_chars) == (
        65_536,
        64,
        4_096,
    )


async def test_oversized_params_from_one_caller_never_open_the_breaker_for_another() -> None:
    """Thirty calls with a 200 KB params value never reach the upstream, and another caller is served."""
    rig = build_gateway()
    for _ in range(150):  # what the server said to such a call: an error page without an envelope
        rig.broker.then(UpstreamAnswer(500, {}, None), path="/inquire-price")
    big = [
        request(rig.clock, caller="noisy", params={**PRICE, "FID_INPUT_ISCD": "9" * 200_000})
        for _ in range(30)
    ]
    daily = {**PRICE, "FID_PERIOD_DIV_CODE": "D", "FID_ORG_ADJ_PRC": "0"}
    other = request(rig.clock, caller="other", tr_id="FHKST01010400", params=daily)
    answers = await serve(rig, [*big, other])
    assert {(a.response.status, a.response.reason) for a in answers[:30]} == {
        (Status.INVALID, "params_too_large")
    }
    assert (answers[30].response.status, answers[30].response.reason) == (Status.OK, None)


@pytest.mark.parametrize(
    ("http_status", "counts"),
    [
        (None, True),
        (500, True),
        (503, True),
        (200, True),
        (400, False),
        (404, False),
        (414, False),
        (429, False),
    ],
)
def test_what_counts_against_the_brokers_health(http_status: int | None, counts: bool) -> None:
    """No answer, a 5xx or garbage counts toward the breaker; a 4xx about the request never does."""
    assert counts_against_health(http_status) is counts


@pytest.mark.parametrize(
    ("http_status", "idempotent", "attempts", "action", "status", "failure"),
    [
        (500, True, 1, Action.REQUEUE, None, True),
        (None, True, 1, Action.REQUEUE, None, True),
        (500, False, 1, Action.FINISH, Status.UNKNOWN_OUTCOME, True),
        (414, True, 1, Action.FINISH, Status.UPSTREAM_ERROR, False),
        (400, True, 1, Action.FINISH, Status.UPSTREAM_ERROR, False),
        (414, False, 1, Action.FINISH, Status.UNKNOWN_OUTCOME, False),
        (429, True, 1, Action.REQUEUE, None, False),
        (408, True, 4, Action.FINISH, Status.UPSTREAM_ERROR, False),
    ],
)
def test_transient_answers_count_only_when_the_broker_is_unwell(
    http_status: int | None,
    idempotent: bool,
    attempts: int,
    action: Action,
    status: Status | None,
    failure: bool,
) -> None:
    """A transient answer with a 4xx status is finished or retried without a breaker failure."""
    decision = decide(
        Result.TRANSIENT,
        idempotent=idempotent,
        attempts=attempts,
        token_replaced=False,
        http_status=http_status,
    )
    assert (decision.action, decision.status, decision.effects.breaker_failure) == (action, status, failure)


@pytest.mark.parametrize(
    "result",
    [Result.BUSINESS_ERROR, Result.THROTTLED, Result.TOKEN_REJECTED, Result.OK, Result.UNKNOWN_OUTCOME],
)
def test_answers_about_the_request_never_count(result: Result) -> None:
    """Business errors, throttling, token and order outcomes never record a breaker failure."""
    for attempts in (1, 4):
        decision = decide(result, idempotent=True, attempts=attempts, token_replaced=False, http_status=400)
        assert not decision.effects.breaker_failure


@pytest.mark.parametrize("tr_cont", ["N\r\nX-Other: 1", "N\n", "다음"])
async def test_a_continuation_no_header_can_carry_never_reaches_the_upstream_nor_opens_the_breaker(
    tr_cont: str,
) -> None:
    """A continuation whose header value cannot be written (a line break, a character beyond latin-1) is
    invalid / invalid_continuation at admission: the real dispatcher refuses it as unreachable, which
    counted against the broker's health, so one caller's five such pages opened the breaker for all."""
    rig = build_gateway()
    spec = lookup(Provider.KIS, "FHKST01010100")
    bad = request(rig.clock, caller="noisy").model_copy(update={"continuation": {"tr_cont": tr_cont}})
    upstream = KisAdapter(KisSettings(appkey="k", appsecret="s")).build(spec, bad, "t")
    real = HttpDispatcher({Provider.KIS: KisSettings()})
    await real.start()
    try:
        with pytest.raises(UpstreamUnreachable):  # what the gateway's own dispatcher makes of it
            await real.send(Provider.KIS, upstream, 1.0)
    finally:
        await real.stop()
    send = rig.dispatcher._handler  # as HttpDispatcher: a header it cannot write is never sent

    def handler(provider: Provider, call: UpstreamRequest) -> tuple[Reply, float]:
        if not all(writable(v) for v in call.headers.values()):
            return UpstreamUnreachable("a header holds a line break"), 0.0
        return send(provider, call)

    rig.dispatcher._handler = handler
    noisy = [
        request(rig.clock, caller="noisy").model_copy(update={"continuation": {"tr_cont": tr_cont}})
        for _ in range(5)
    ]
    answers = await serve(rig, noisy)
    assert {(a.response.status, a.response.reason) for a in answers} == {
        (Status.INVALID, "invalid_continuation")
    }
    assert rig.gateway.pacers[Provider.KIS, LimitClass.QUERY].breaker.state is BreakerState.CLOSED
    rig.dispatcher.sent.clear()
    other = await serve(rig, [request(rig.clock, caller="other")])
    assert (other[0].response.status, other[0].response.reason) == (Status.OK, None)
