"""Limit classes and mock mapping on fakes: each class is paced inside its key's limit, throttle answers
slow the domain they name, a mock credential sends mock tr_ids and never calls what the mock server lacks."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter

import pytest

from hubclient.catalog import LimitClass, TrSpec, entries, lookup
from hubclient.models import ApiRequest, Provider, Status
from services.gateway.classes import ClassLimiter, class_domain, class_rates, pacer_name
from services.gateway.clock import ManualClock
from services.gateway.jitter import JitterBudget
from services.gateway.limiter import DomainLimiter
from services.gateway.providers.base import Outcome, UpstreamAnswer
from services.gateway.providers.kis import KisAdapter
from services.gateway.providers.kiwoom import KiwoomAdapter
from services.gateway.slots import MemorySlots
from services.gateway.testing import Rig, build_gateway, kis_envelope, kiwoom_envelope
from services.settings import KisSettings, KiwoomSettings
from tests.unit.test_gateway_core import serve
from tests.unit.test_pacing import max_in_any_second

BALANCE = "TTTC8434R"  # KIS account read: ledger class
PRICE = "FHKST01010100"  # KIS quote: query class
KIWOOM_ORDER = "kt10000"
KIWOOM_READ = "ka10081"


_NONCE = itertools.count()


def call(clock: ManualClock, provider: Provider, tr_id: str, *, deadline_s: float = 60.0) -> ApiRequest:
    """A request for a catalog entry carrying every parameter the broker requires (blank values)."""
    spec = lookup(provider, tr_id)
    now_ms = int(clock.time() * 1000)
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=provider,
        tr_id=tr_id,
        # a distinct read each time: identical reads in flight together would share one upstream call
        params={**dict.fromkeys(spec.required, ""), "nonce": next(_NONCE)},
        caller="worker",
        deadline_ms=now_ms + int(deadline_s * 1000),
        created_at_ms=now_ms,
        reply_topic="api.responses",
        reply_partition=0,
    )


def sent_times(rig: Rig, part: str) -> list[float]:
    """When each call whose URL contains ``part`` left (clock seconds)."""
    return [s.at_s for s in rig.dispatcher.calls(part)]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (KisSettings(ledger_rate_per_s=7), {LimitClass.LEDGER: 7}),
        (
            KiwoomSettings(query_rate_per_s=4, order_rate_per_s=2),
            {LimitClass.QUERY: 4, LimitClass.ORDER: 2},
        ),
    ],
)
def test_class_rates_come_from_the_provider_settings(
    settings: KisSettings | KiwoomSettings, expected: dict[LimitClass, float]
) -> None:
    """KIS has a ledger class of its own, Kiwoom a query and an order class; the rest use the key alone."""
    assert class_rates(settings) == expected


@pytest.mark.parametrize(
    ("provider", "limit_class", "domain", "pacer"),
    [
        (Provider.KIS, LimitClass.QUERY, "KIS:query", "KIS"),
        (Provider.KIS, LimitClass.LEDGER, "KIS:ledger", "KIS:ledger"),
        (Provider.KIWOOM, LimitClass.QUERY, "KIWOOM:query", "KIWOOM"),
        (Provider.KIWOOM, LimitClass.ORDER, "KIWOOM:order", "KIWOOM:order"),
    ],
)
def test_domain_and_queue_names(provider: Provider, limit_class: LimitClass, domain: str, pacer: str) -> None:
    """Class domains are named provider:class; the reads' queue keeps the provider's name."""
    assert (class_domain(provider, limit_class), pacer_name(provider, limit_class)) == (domain, pacer)


@pytest.mark.parametrize(
    ("adapter", "tr_id", "answer", "outcome", "class_limit"),
    [
        (
            KisAdapter(KisSettings()),
            BALANCE,
            UpstreamAnswer(500, {}, {"rt_cd": "1", "msg_cd": "EGW00215", "msg1": "원장 초과"}),
            Outcome.THROTTLED,
            True,
        ),
        (
            KisAdapter(KisSettings()),
            BALANCE,
            UpstreamAnswer(500, {}, {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수"}),
            Outcome.THROTTLED,
            False,
        ),
        (
            KiwoomAdapter(KiwoomSettings()),
            KIWOOM_ORDER,
            UpstreamAnswer(429, {}, {"return_code": 5, "return_msg": "초과[1700:유량=1, API ID=kt10000]"}),
            Outcome.THROTTLED,
            True,
        ),
        (
            KiwoomAdapter(KiwoomSettings()),
            KIWOOM_READ,
            UpstreamAnswer(429, {}, None),
            Outcome.THROTTLED,
            True,
        ),
        (
            KiwoomAdapter(KiwoomSettings()),
            KIWOOM_READ,
            UpstreamAnswer(200, {}, {"return_code": 5, "return_msg": "요청 개수를 초과하였습니다[1634]"}),
            Outcome.BUSINESS_ERROR,
            False,
        ),
    ],
)
def test_throttle_answers_name_the_limit_they_are_about(
    adapter: KisAdapter | KiwoomAdapter,
    tr_id: str,
    answer: UpstreamAnswer,
    outcome: Outcome,
    class_limit: bool,
) -> None:
    """EGW00215 and Kiwoom's 1700 (or a bare 429) are about the call's class; EGW00201 is about the key."""
    spec = lookup(adapter.provider, tr_id)
    classified = adapter.classify(spec, call(ManualClock(), adapter.provider, tr_id), answer)
    assert (classified.outcome, classified.class_limit) == (outcome, class_limit)


def limiter(clock: ManualClock, domain: str, rate: float, slots: MemorySlots) -> DomainLimiter:
    return DomainLimiter(
        domain, rate, jitter=JitterBudget(0.02, clock, cold_lag_s=0.0), clock=clock, shared=slots
    )


async def test_a_class_slot_waiting_for_the_key_moves_with_it() -> None:
    """When the key's next slot comes after the class's, the class's slot and its arrival bound move to
    the key's before anything is sent, in the shared store and in the process's own log."""
    clock = ManualClock()
    shared = MemorySlots(clock)
    key, own = limiter(clock, "KIS", 2, shared), limiter(clock, "KIS:ledger", 5, shared)
    ledger = ClassLimiter(LimitClass.LEDGER, key, own, clock=clock)
    busy = await key.reserve()  # the key's grid is taken for 0.51 s
    slot = await ledger.reserve()
    assert slot.own is not None
    assert slot.key.start_s == pytest.approx(busy.start_s + 1.02 / 2)
    assert slot.own.start_s == pytest.approx(slot.key.start_s) == pytest.approx(slot.start_s)
    assert shared.sends("KIS:ledger") == [pytest.approx(slot.key.start_s + 0.02)]
    await clock.advance(slot.start_s - clock.monotonic())
    await ledger.sent(slot)
    assert own.jitter.allowance_s() < 0.03  # the wait for the key is not taken for the process's own lag


async def test_each_class_is_paced_inside_the_key() -> None:
    """Ledger calls keep their own pace (5 a second) while quotes fill the rest of the key's 20."""
    rig = build_gateway(ledger_rate_per_s=5)
    ledger = [call(rig.clock, Provider.KIS, BALANCE) for _ in range(25)]
    quotes = [call(rig.clock, Provider.KIS, PRICE) for _ in range(60)]
    results = await serve(rig, [*ledger, *quotes])
    assert Counter(a.response.status for a in results) == {Status.OK: 85}
    balance_at, everything = sent_times(rig, "/inquire-balance"), [s.at_s for s in rig.dispatcher.sent]
    assert max_in_any_second(balance_at) <= 5
    assert all(b - a >= 1.02 - 1e-6 for a, b in zip(balance_at, balance_at[5:], strict=False))
    assert max_in_any_second(everything) <= 20
    assert all(b - a >= 1.02 - 1e-6 for a, b in zip(everything, everything[20:], strict=False))
    quote_at = sent_times(rig, "/quotations/")
    assert quote_at[-1] < balance_at[-1]  # quotes are not held behind the ledger's slower pace
    busy = [t for t in everything if t <= quote_at[-1]]  # while both classes had work the key was used
    assert len(busy) >= 0.95 * (quote_at[-1] - busy[0]) / (1.02 / 20)


async def test_ledger_throttle_slows_the_ledger_only() -> None:
    """EGW00215 on a balance call halves the ledger class's pace and requeues it; the key keeps its pace."""
    rig = build_gateway()
    rig.broker.then(kis_envelope("EGW00215", rt_cd="1", status=500), path="/inquire-balance")
    (answer,) = await serve(rig, [call(rig.clock, Provider.KIS, BALANCE)])
    assert answer.response.ok and answer.response.attempts == 2
    assert rig.gateway.class_limiters[Provider.KIS, LimitClass.LEDGER].rate_factor < 1.0
    assert rig.gateway.limiters[Provider.KIS].rate_factor == 1.0


async def test_key_throttle_on_a_ledger_call_slows_the_key() -> None:
    """EGW00201 is about the appkey's own limit, whatever the call's class: the key slows, the ledger not."""
    rig = build_gateway()
    rig.broker.then(kis_envelope("EGW00201", rt_cd="1", status=500), path="/inquire-balance")
    (answer,) = await serve(rig, [call(rig.clock, Provider.KIS, BALANCE)])
    assert answer.response.ok
    assert rig.gateway.limiters[Provider.KIS].rate_factor < 1.0
    assert rig.gateway.class_limiters[Provider.KIS, LimitClass.LEDGER].rate_factor == 1.0


async def test_kiwoom_orders_have_their_own_pace_and_1700_slows_them() -> None:
    """Kiwoom orders go one a second (plus J) beside reads at five; a 1700 on an order slows orders only."""
    rig = build_gateway(kiwoom=KiwoomSettings(rate_per_s=5, query_rate_per_s=5, order_rate_per_s=1))
    refused = kiwoom_envelope(5, "허용된 요청 개수를 초과하였습니다[1700:유량=1, API ID=kt10000]", status=429)
    rig.kiwoom.then(refused, path="/ordr")
    orders = [call(rig.clock, Provider.KIWOOM, KIWOOM_ORDER) for _ in range(4)]
    reads = [call(rig.clock, Provider.KIWOOM, KIWOOM_READ) for _ in range(10)]
    results = await serve(rig, [*orders, *reads])
    assert Counter(a.response.status for a in results) == {Status.OK: 14}
    order_at = sent_times(rig, "/ordr")
    assert len(order_at) == 5  # one order was refused unexecuted and sent again
    assert all(b - a >= 1.02 - 1e-6 for a, b in itertools.pairwise(order_at))
    kiwoom_at = [s.at_s for s in rig.dispatcher.sent if s.provider is Provider.KIWOOM]
    assert max_in_any_second(kiwoom_at) <= 5
    assert rig.gateway.class_limiters[Provider.KIWOOM, LimitClass.ORDER].rate_factor < 1.0
    assert rig.gateway.class_limiters[Provider.KIWOOM, LimitClass.QUERY].rate_factor == 1.0
    assert rig.gateway.limiters[Provider.KIWOOM].rate_factor == 1.0


def undeclared_kis_order() -> TrSpec:
    """A KIS order whose mock id the samples leave to their T/J/C -> V rule."""
    return next(
        e
        for e in entries(Provider.KIS)
        if e.mock == "undeclared" and e.tr_id[0] in "TJC" and e.mock_supported and not e.planned
    )


@pytest.mark.parametrize("environment", ["real", "mock"])
async def test_requests_carry_the_real_id_and_the_gateway_sends_the_mock_one(environment: str) -> None:
    """A mock credential sends the catalog's mock tr_id (published, or by the samples' rule); a real one
    sends the tr_id itself; Kiwoom's api-ids are the same on both servers."""
    rig = build_gateway(environment="mock" if environment == "mock" else "real", kiwoom=KiwoomSettings())
    rule = undeclared_kis_order()
    ids = [(Provider.KIS, BALANCE), (Provider.KIS, PRICE), (Provider.KIS, rule.key)]
    ids += [(Provider.KIWOOM, KIWOOM_READ)]
    results = await serve(rig, [call(rig.clock, p, t) for p, t in ids])
    assert all(a.response.ok for a in results)
    calls = [s.request.headers for s in rig.dispatcher.sent if "oauth2" not in s.request.url]
    sent_ids = [h.get("tr_id") or h.get("api-id") for h in calls]
    if environment == "mock":
        assert sent_ids == ["VTTC8434R", PRICE, "V" + rule.tr_id[1:], KIWOOM_READ]
    else:
        assert sent_ids == [BALANCE, PRICE, rule.tr_id, KIWOOM_READ]


@pytest.mark.parametrize("tr_id", sorted(e.key for e in entries(Provider.KIS) if not e.mock_supported))
async def test_an_endpoint_the_mock_server_lacks_is_refused_before_any_call(tr_id: str) -> None:
    """For a mock credential a real-only endpoint is answered rejected/not_in_mock, and nothing (not
    even a token call) goes upstream."""
    rig = build_gateway(environment="mock")
    (answer,) = await serve(rig, [call(rig.clock, Provider.KIS, tr_id)])
    assert (answer.response.status, answer.response.reason) == (Status.REJECTED, "not_in_mock")
    assert rig.dispatcher.sent == []


async def test_a_real_credential_may_call_real_only_endpoints() -> None:
    """The same real-only endpoint is served for a real credential."""
    rig = build_gateway()
    (answer,) = await serve(rig, [call(rig.clock, Provider.KIS, "FHKST03010230")])
    assert answer.response.ok
