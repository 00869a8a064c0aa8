"""The gateway's whole request path on fakes: scheduling, pacing, deadlines, retries and tokens,
driven by a manual clock through ``FakeDispatcher`` and in-memory stores, with no services."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from hubclient.catalog import LimitClass
from hubclient.models import ApiRequest, ApiResponse, Priority, Provider, Status
from services.gateway.breaker import BreakerState
from services.gateway.clock import Clock, ManualClock
from services.gateway.errors import UpstreamNoAnswer, UpstreamUnreachable
from services.gateway.idempotency import ORDER_RECORD_MS, RECORD_GRACE_MS, Record, fingerprint
from services.gateway.providers.base import UpstreamAnswer
from services.gateway.providers.kis import KisAdapter
from services.gateway.slots import Ask, MemorySlots, Reservation
from services.gateway.testing import FakeDispatcher, FakeKis, Rig, build_gateway, kis_envelope
from services.gateway.token_store import MemoryTokenStore, Stored
from services.gateway.tokens import TokenIssuer, TokenManager
from services.settings import KisSettings
from tests.unit.test_pacing import max_in_any_second

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
ORDER = {
    "CANO": "12345678",
    "ACNT_PRDT_CD": "01",
    "PDNO": "005930",
    "ORD_DVSN": "00",
    "ORD_QTY": "1",
    "ORD_UNPR": "70000",
    "EXCG_ID_DVSN_CD": "KRX",  # the rest of the published order body, sent as the KIS samples do
    "SLL_TYPE": "",
    "CNDT_PRIC": "",
}


_SYMBOLS = itertools.count(1)


def request(
    clock: ManualClock,
    *,
    deadline_s: float = 30.0,
    tr_id: str = "FHKST01010100",
    priority: Priority = Priority.NORMAL,
    caller: str = "worker",
    params: dict[str, str] | None = None,
) -> ApiRequest:
    now_ms = int(clock.time() * 1000)
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=Provider.KIS,
        tr_id=tr_id,
        params=params or {**PRICE, "FID_INPUT_ISCD": f"{next(_SYMBOLS):06d}"},  # distinct: none shared
        caller=caller,
        priority=priority,
        deadline_ms=now_ms + int(deadline_s * 1000),
        created_at_ms=now_ms,
        reply_topic="api.responses",
        reply_partition=0,
    )


@dataclass
class Answered:
    response: ApiResponse
    at_ms: float  # clock time when the gateway answered


async def serve(
    rig: Rig, requests: list[ApiRequest], *, step_s: float = 0.005, limit_s: float = 120
) -> list[Answered]:
    """Hand every request to the gateway at once and move the clock until all are answered."""
    answered: dict[int, Answered] = {}

    async def one(i: int, req: ApiRequest) -> None:
        response = await rig.gateway.handle(req)
        answered[i] = Answered(response, rig.clock.time() * 1000)

    tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(requests)]
    elapsed = 0.0
    while not all(t.done() for t in tasks) and elapsed < limit_s:
        await rig.clock.advance(step_s)
        elapsed += step_s
    assert all(t.done() for t in tasks), f"{sum(not t.done() for t in tasks)} requests unanswered"
    await rig.gateway.stop()
    return [answered[i] for i in range(len(requests))]


def call_times(rig: Rig) -> list[float]:
    """When each quote call's headers left (clock seconds), token calls excluded."""
    return [s.at_s for s in rig.dispatcher.calls("/quotations/")]


async def test_paced_at_one_second_plus_jitter() -> None:
    """Sixty reads at once are all served, 20 a second spaced so that any 21 span 1 s + J."""
    rig = build_gateway(jitter_ms=20)
    results = await serve(rig, [request(rig.clock) for _ in range(60)])
    assert Counter(a.response.status for a in results) == {Status.OK: 60}
    sent = [s.at_s for s in rig.dispatcher.sent]  # the token call takes a slot too
    assert len(sent) == 61
    assert all(sent[i + 20] - sent[i] >= 1.02 - 1e-6 for i in range(len(sent) - 20))
    span = sent[-1] - sent[0]
    assert span == pytest.approx(60 * 1.02 / 20, rel=0.05)  # the key is used at 1 / (1 + J), no less


class CountingSlots(MemorySlots):
    """The in-memory slot store, counting the round trips a Redis store would make."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.trips = 0
        self.recorded = 0

    async def reserve_run(self, ask: Ask, members: list[str]) -> list[Reservation]:
        self.trips += 1
        self.recorded += len(members)
        return await super().reserve_run(ask, members)


def counted(stores: list[CountingSlots]) -> Callable[[Clock], CountingSlots]:
    """A slot store factory for ``build_gateway`` that keeps what it made in ``stores``."""

    def make(clock: Clock) -> CountingSlots:
        stores.append(CountingSlots(clock))
        return stores[-1]

    return make


async def test_limits_off_reserves_slots_in_runs() -> None:
    """With slots a microsecond apart, one trip to the slot store records a run of slots, one per waiting
    request; every read is answered once, and no slot is sent late."""
    store: list[CountingSlots] = []
    rig = build_gateway(rate_per_s=1_000_000, slots=counted(store))
    results = await serve(rig, [request(rig.clock) for _ in range(80)], step_s=0.001)
    assert Counter(a.response.status for a in results) == {Status.OK: 80}
    assert len(rig.dispatcher.calls("/quotations/")) == 80
    (slots,) = store
    assert slots.trips < 80 / 4 and slots.recorded >= 80


async def test_a_paced_key_reserves_one_slot_at_a_time() -> None:
    """At 20 req/s (slots 51 ms apart, far longer than a trip to the store) each slot is its own trip."""
    store: list[CountingSlots] = []
    rig = build_gateway(slots=counted(store))
    await serve(rig, [request(rig.clock) for _ in range(30)])
    (slots,) = store
    assert slots.trips == slots.recorded == 31  # the token's slot and thirty reads


async def test_arrivals_within_the_budget_never_exceed_the_limit() -> None:
    """Whatever delay within J each call has on its way, the broker counts at most 20 in any second."""
    rig = build_gateway(jitter_ms=50)
    await serve(rig, [request(rig.clock) for _ in range(100)])
    rng = random.Random(5)
    arrivals = [t + rng.uniform(0, 0.05) for t in (s.at_s for s in rig.dispatcher.sent)]
    assert max_in_any_second(arrivals) <= 20


async def test_interactive_goes_before_queued_bulk() -> None:
    """An interactive request behind forty bulk ones gets one of the next slots."""
    rig = build_gateway()
    bulk = [request(rig.clock, priority=Priority.BULK, caller="backfill") for _ in range(40)]
    urgent = request(rig.clock, priority=Priority.INTERACTIVE, caller="ui")
    results = await serve(rig, [*bulk, urgent])
    assert results[-1].response.ok
    assert len(rig.dispatcher.calls("/quotations/")) == 41
    urgent_answer = results[-1].at_ms
    assert sum(a.at_ms < urgent_answer for a in results[:-1]) <= 2


async def test_every_answer_comes_before_its_deadline() -> None:
    """With 100 requests of a 1 s deadline against 20/s, what cannot be served is refused or expired,
    and every answer, served or not, is given before the deadline."""
    rig = build_gateway()
    results = await serve(rig, [request(rig.clock, deadline_s=1.0) for _ in range(100)], step_s=0.002)
    by = Counter((a.response.status, a.response.reason) for a in results)
    assert by[(Status.OK, None)] >= 15
    assert by[(Status.REJECTED, "deadline_unreachable")] >= 70
    assert set(by) <= {
        (Status.OK, None),
        (Status.REJECTED, "deadline_unreachable"),
        (Status.EXPIRED, "deadline_too_close"),
    }
    for a in results:
        created = a.at_ms - a.response.timing.total_ms
        assert a.at_ms < created + 1000, a.response


async def test_a_request_overtaken_in_its_queue_expires_while_the_loop_sleeps_for_a_slot() -> None:
    """At 1 call a second, a bulk read admitted for the next slots is overtaken by interactive reads; its
    deadline then comes while the loop sleeps for a slot, and it is answered expired before it, not at
    the next slot after it."""
    rig = build_gateway(rate_per_s=1.0, jitter_ms=0.0)
    first = asyncio.create_task(rig.gateway.handle(request(rig.clock)))
    await until(rig, lambda: len(rig.dispatcher.calls("/quotations/")) >= 1)
    bulk_request = request(rig.clock, deadline_s=2.5, priority=Priority.BULK)
    bulk = asyncio.create_task(rig.gateway.handle(bulk_request))
    await rig.clock.advance(0.01)
    ahead = [
        asyncio.create_task(rig.gateway.handle(request(rig.clock, priority=Priority.INTERACTIVE)))
        for _ in range(3)
    ]
    await until(rig, bulk.done, limit_s=4.0)
    answered_ms = rig.clock.time() * 1000
    assert (bulk.result().status, bulk.result().reason) == (Status.EXPIRED, "deadline_too_close")
    assert answered_ms < bulk_request.deadline_ms
    await until(rig, lambda: first.done() and all(t.done() for t in ahead), limit_s=10.0)
    await rig.gateway.stop()


async def test_far_estimates_that_came_late_do_not_refuse_an_interactive_request() -> None:
    """When the interval widens under a deep bulk backlog (a busy host widens the jitter budget), the bulk
    requests start seconds after admission said; an interactive request admitted then is still served,
    not refused as unreachable."""
    rig = build_gateway()
    bulk = [request(rig.clock, deadline_s=600, priority=Priority.BULK, caller="backfill") for _ in range(300)]
    tasks = [asyncio.create_task(rig.gateway.handle(r)) for r in bulk]
    await rig.clock.advance(0.005)  # all admitted at the nominal pace, 51 ms apart
    rig.gateway.limiters[Provider.KIS].jitter.setting_s = 0.5  # now 75 ms apart
    for _ in range(4000):  # 20 s: bulk requests started, the later ones seconds after their estimate
        await rig.clock.advance(0.005)
    urgent = asyncio.create_task(
        rig.gateway.handle(request(rig.clock, deadline_s=5, priority=Priority.INTERACTIVE, caller="ui"))
    )
    for _ in range(1000):
        if urgent.done():
            break
        await rig.clock.advance(0.005)
    answer = urgent.result()
    assert answer.ok, (answer.status, answer.reason)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await rig.gateway.stop()


async def test_throttle_answer_requeues_and_slows_the_domain() -> None:
    """A KIS throttle answer (EGW00201) puts the request back and halves the pace; it then succeeds."""
    rig = build_gateway()
    rig.broker.then(kis_envelope("EGW00201", rt_cd="1", status=500))
    (answer,) = await serve(rig, [request(rig.clock)])
    assert answer.response.ok and answer.response.attempts == 2
    assert rig.gateway.limiters[Provider.KIS].rate_factor < 1.0


async def test_transient_read_is_retried_but_an_order_is_not() -> None:
    """A 5xx without envelope is retried for a read; for an order it is unknown_outcome, sent once."""
    rig = build_gateway()
    rig.broker.then(UpstreamAnswer(502, {}, None))
    (read,) = await serve(rig, [request(rig.clock)])
    assert read.response.ok and read.response.attempts == 2

    rig = build_gateway()
    rig.broker.then(UpstreamNoAnswer("cut"))
    (order,) = await serve(rig, [request(rig.clock, tr_id="TTTC0012U", params=ORDER)])
    assert order.response.status is Status.UNKNOWN_OUTCOME and order.response.reason == "no_answer"
    assert len(rig.dispatcher.calls("/trading/")) == 1
    assert rig.records.records[order.response.request_id] is not None  # the answer is kept for redeliveries


async def test_a_read_whose_retry_meets_the_open_circuit_is_an_upstream_error_not_a_rejection() -> None:
    """Five reads against a broker answering 5xx without envelope open the breaker; retries then refused
    had reached the broker, so each read ends upstream_error/transient, not rejected/circuit_open; a read
    arriving after them never reached it and is rejected."""
    rig = build_gateway()
    for _ in range(20):
        rig.broker.then(UpstreamAnswer(502, {}, None))
    answers = await serve(rig, [request(rig.clock) for _ in range(5)])
    (late,) = await serve(rig, [request(rig.clock)])
    assert {(a.response.status, a.response.reason) for a in answers} == {(Status.UPSTREAM_ERROR, "transient")}
    refused = [a.response for a in answers if "retry refused: circuit_open" in (a.response.message or "")]
    assert refused and all(r.attempts >= 1 and r.http_status == 502 for r in refused)
    assert (late.response.status, late.response.reason, late.response.attempts) == (
        Status.REJECTED,
        "circuit_open",
        0,
    )
    assert len(rig.dispatcher.calls("/quotations/")) == sum(a.response.attempts for a in answers)


async def test_unreachable_order_is_retried_and_its_mark_cleared() -> None:
    """A connection that failed before sending is retried even for an order."""
    rig = build_gateway()
    rig.broker.then(UpstreamUnreachable("refused"))
    (order,) = await serve(rig, [request(rig.clock, tr_id="TTTC0012U", params=ORDER)])
    assert order.response.ok and order.response.attempts == 2


async def test_rejected_token_is_replaced_once() -> None:
    """EGW00123 drops the token, a new one is issued and the request succeeds; a second rejection ends it.
    Within a minute of the last issuance no new token can be had, and the request says so (as an upstream
    error: its call reached the broker, which refused the token)."""
    rig = build_gateway()
    await serve(rig, [request(rig.clock)])
    await rig.clock.advance(62)  # the issuance permit of the first token has run out
    rig.broker.then(kis_envelope("EGW00123", rt_cd="1", status=500))
    (answer,) = await serve(rig, [request(rig.clock)])
    assert answer.response.ok and rig.broker.tokens_issued == 2
    assert rig.dispatcher.calls("/quotations/")[-1].request.headers["authorization"] == "Bearer token-2"
    await rig.clock.advance(62)
    rejected = kis_envelope("EGW00123", rt_cd="1", status=500)
    rig.broker.then(rejected).then(rejected)
    (answer,) = await serve(rig, [request(rig.clock)])
    assert answer.response.status is Status.UPSTREAM_ERROR and answer.response.reason == "token_rejected"
    assert rig.broker.tokens_issued == 3
    rig.broker.then(rejected)  # rejected again within a minute of the last issuance: none can be had
    (early,) = await serve(rig, [request(rig.clock)])
    assert (early.response.status, early.response.reason) == (Status.UPSTREAM_ERROR, "token_rejected")
    assert (early.response.message or "").startswith("retry refused: token_unavailable")


async def test_deadline_cuts_a_slow_call() -> None:
    """A call still running at the deadline (minus the reply path) ends as expired for a read."""
    rig = build_gateway()
    rig.broker.then(kis_envelope(), latency_s=5.0)
    (answer,) = await serve(rig, [request(rig.clock, deadline_s=1.0)])
    assert answer.response.status is Status.EXPIRED and answer.response.reason == "deadline_passed"
    created = answer.at_ms - answer.response.timing.total_ms
    assert answer.at_ms < created + 1000


async def test_a_slow_idempotency_record_counts_in_the_reply_path() -> None:
    """The record is stored before the answer goes out, so once a store took 1 s a request whose deadline
    leaves less than that after its call is refused at once; the store's time used to be left out of the
    reply budget, and that answer came after the deadline."""
    rig = build_gateway()
    plain = rig.records.store

    async def slow_store(name: str, response: ApiResponse, ttl_ms: int, fingerprint: str) -> None:
        await rig.clock.sleep(1.0)
        await plain(name, response, ttl_ms, fingerprint)

    rig.records.store = slow_store  # type: ignore[method-assign]
    (first,) = await serve(rig, [request(rig.clock)])
    assert first.response.ok
    (second,) = await serve(rig, [request(rig.clock, deadline_s=0.8)])
    created_ms = second.at_ms - second.response.timing.total_ms
    assert (second.response.status, second.response.reason) == (Status.REJECTED, "deadline_unreachable")
    assert second.at_ms < created_ms + 800


async def test_queued_requests_expire_while_the_token_is_slow_to_come() -> None:
    """The pacing loop waiting for a token (a slow issuance, another instance's lock) still answers the
    queued requests whose deadline comes first: expired before the deadline, never after (the loop used to
    expire them only once the token came, 1 s after their deadline here)."""
    rig = build_gateway()
    rig.broker.latency_s = 3.0  # the token call; the quotes answer at once
    for _ in range(5):
        rig.broker.then(kis_envelope(output={"stck_prpr": "70000"}), latency_s=0.002)
    results = await serve(rig, [request(rig.clock, deadline_s=2.0) for _ in range(5)])
    for a in results:
        assert (a.response.status, a.response.reason) == (Status.EXPIRED, "deadline_too_close"), a.response
        created = a.at_ms - a.response.timing.total_ms
        assert a.at_ms < created + 2000


async def test_token_refreshed_before_expiry_with_a_paced_call() -> None:
    """A day later the token is renewed before use, and the token call takes a slot of its own."""
    rig = build_gateway()
    await serve(rig, [request(rig.clock)])
    await rig.clock.advance(86_400 - 500)  # inside the ten-minute refresh window
    await serve(rig, [request(rig.clock)])
    assert rig.broker.tokens_issued == 2
    assert len(rig.dispatcher.sent) == 4


async def test_two_instances_share_one_issuance(caplog: pytest.LogCaptureFixture) -> None:
    """Two token managers on one store issue one token; the one that waited logs redlock.contention."""
    clock = ManualClock()
    broker = FakeKis(clock, latency_s=0.3)
    store = MemoryTokenStore(clock)
    settings = KisSettings(base_url="https://kis.invalid", appkey="PS" + "k" * 34, appsecret="s" * 180)
    adapters: dict[str, TokenIssuer] = {Provider.KIS: KisAdapter(settings)}
    managers = [TokenManager(adapters, FakeDispatcher(broker, clock), store, clock=clock) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="services.gateway.tokens"):
        tasks = [asyncio.create_task(m.get(Provider.KIS)) for m in managers]
        for _ in range(100):
            await clock.advance(0.05)
            if all(t.done() for t in tasks):
                break
    assert {t.result() for t in tasks} == {"token-1"}
    assert broker.tokens_issued == 1
    assert any(r.getMessage() == "redlock.contention" for r in caplog.records)


class WriteFailsOnce(MemoryTokenStore):
    """A store whose first token write fails as Redis does when it goes away mid-issuance."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.failed = False

    async def write(self, domain: str, stored: Stored) -> bool:
        if not self.failed:
            self.failed = True
            raise RedisConnectionError("Connection reset by peer")
        return await super().write(domain, stored)


async def test_a_token_issued_while_its_write_to_the_store_fails_is_still_used() -> None:
    """The broker issued a token and Redis failed to keep it: the token serves this instance anyway. It
    used to be dropped, and with the issuance permit taken no other could be had for a minute."""
    clock = ManualClock()
    broker = FakeKis(clock)
    settings = KisSettings(base_url="https://kis.invalid", appkey="PS" + "k" * 34, appsecret="s" * 180)
    adapters: dict[str, TokenIssuer] = {Provider.KIS: KisAdapter(settings)}
    manager = TokenManager(adapters, FakeDispatcher(broker, clock), WriteFailsOnce(clock), clock=clock)
    first = asyncio.create_task(manager.get(Provider.KIS))
    while not first.done():
        await clock.advance(0.01)
    assert first.result() == "token-1"
    await clock.advance(5)
    assert await manager.get(Provider.KIS) == "token-1"
    assert broker.tokens_issued == 1


async def test_a_token_call_is_bounded_by_the_providers_timeout() -> None:
    """APIHUB_KIS__TIMEOUT_S bounds the token call as every other upstream call: with 30 s a token
    endpoint answering in 12 s gives a token. It was cut at a fixed 10 s, so no token could ever be had."""
    rig = build_gateway(timeout_s=30.0)
    rig.broker.latency_s = 12.0
    [answered] = await serve(rig, [request(rig.clock, deadline_s=60)], step_s=0.05)
    assert (answered.response.status, answered.response.reason) == (Status.OK, None)
    assert rig.broker.tokens_issued == 1


async def test_redelivery_is_answered_from_the_record() -> None:
    """The same request delivered again after its answer is replayed, not sent again."""
    rig = build_gateway()
    req = request(rig.clock)
    (first,) = await serve(rig, [req])
    (again,) = await serve(rig, [req])
    assert again.response == first.response
    assert len(rig.dispatcher.calls("/quotations/")) == 1


async def test_records_live_until_the_deadline_and_a_minute() -> None:
    """A read's record is kept until its deadline plus RECORD_GRACE_MS, not days: at a key's rate records
    kept for a week filled Redis by gigabytes. An order's in-flight mark and record (orders are few) are
    kept a day, for a redelivery after its deadline."""
    rig = build_gateway()
    read = request(rig.clock, deadline_s=30)
    order = request(rig.clock, tr_id="TTTC0012U", params=ORDER, deadline_s=20)
    marks: dict[str, int] = {}
    plain = rig.records.mark_inflight

    async def mark(name: str, ttl_ms: int, fingerprint: str) -> Record | None:
        marks[name] = ttl_ms
        return await plain(name, ttl_ms, fingerprint)

    rig.records.mark_inflight = mark  # type: ignore[method-assign]
    answers = await serve(rig, [read, order])
    assert all(a.response.ok for a in answers)
    read_ttl_ms = rig.records.ttls_ms[read.request_id]  # stored before the answer went out
    assert read.deadline_ms - answers[0].at_ms + RECORD_GRACE_MS <= read_ttl_ms
    assert read_ttl_ms <= read.deadline_ms - read.created_at_ms + RECORD_GRACE_MS
    assert rig.records.ttls_ms[order.request_id] == marks[order.request_id] == ORDER_RECORD_MS
    assert read.request_id not in marks  # a read is never marked in flight


async def test_a_read_delivered_after_its_deadline_never_reads_its_record() -> None:
    """Why a read's record need not outlive its deadline: a delivery after it is answered expired at once,
    before any lookup, whatever the record holds."""
    rig = build_gateway()
    req = request(rig.clock, deadline_s=1)
    (first,) = await serve(rig, [req])
    assert first.response.ok
    lookups: list[str] = []
    plain = rig.records.lookup

    async def lookup(name: str) -> Record | None:
        lookups.append(name)
        return await plain(name)

    rig.records.lookup = lookup  # type: ignore[method-assign]
    await rig.clock.advance(1.0)
    late = await rig.gateway.handle(req)
    assert (late.status, late.reason) == (Status.EXPIRED, "deadline_passed")
    assert lookups == [] and len(rig.dispatcher.calls("/quotations/")) == 1


@pytest.mark.parametrize("state", ["answered", "in_flight", "none"])
async def test_an_order_delivered_after_its_deadline_is_answered_from_its_record(state: str) -> None:
    """An order delivered again after its deadline (a crash, then a long outage) gets what its record says:
    the answer stored (not ``expired``, which would tell the audit log it never left), ``unknown_outcome``
    while only its in-flight mark is there (it may have reached the broker), ``expired`` without a record.
    Nothing is sent again."""
    rig = build_gateway()
    order = request(rig.clock, tr_id="TTTC0012U", params=ORDER, deadline_s=1)
    if state == "answered":
        (first,) = await serve(rig, [order])
        assert first.response.ok
    elif state == "in_flight":
        await rig.records.mark_inflight(
            order.request_id, 1000, fingerprint(order)
        )  # sent, then the gateway died
    calls = len(rig.dispatcher.calls("/trading/"))
    await rig.clock.advance(5.0)
    late = await rig.gateway.handle(order)
    expected = {
        "answered": (Status.OK, None),
        "in_flight": (Status.UNKNOWN_OUTCOME, "redelivered_in_flight"),
        "none": (Status.EXPIRED, "deadline_passed"),
    }[state]
    assert (late.status, late.reason) == expected
    assert late.request_id == order.request_id and late.shared_with is None
    assert len(rig.dispatcher.calls("/trading/")) == calls


class GatedLookups:
    """Wraps a rig's idempotency lookups so each waits until the test opens the gate."""

    def __init__(self, rig: Rig) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        plain = rig.records.lookup

        async def lookup(name: str) -> Record | None:
            self.started += 1
            await self.gate.wait()
            return await plain(name)

        rig.records.lookup = lookup  # type: ignore[method-assign]


async def until(rig: Rig, done: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Move the clock in small steps until ``done()`` (asserted within ``limit_s``)."""
    for _ in range(int(limit_s / 0.005)):
        if done():
            return
        await rig.clock.advance(0.005)
    assert done()


async def test_an_order_is_sent_only_after_its_lookup() -> None:
    """An order must learn whether an earlier delivery reached the broker before anything is sent."""
    rig = build_gateway()
    lookups = GatedLookups(rig)
    rig.broker.then(kis_envelope(output={"ODNO": "1"}))
    task = asyncio.create_task(rig.gateway.handle(request(rig.clock, tr_id="TTTC0012U", params=ORDER)))
    await rig.clock.advance(2)
    assert lookups.started == 1 and rig.dispatcher.calls("/trading/") == []
    lookups.gate.set()
    await until(rig, task.done)
    assert task.result().ok and len(rig.dispatcher.calls("/trading/")) == 1
    await rig.gateway.stop()


async def test_two_copies_of_an_order_looked_up_at_once_share_one_call() -> None:
    """Both copies of one order (one fetch) are looked up before either is queued: the second joins the
    first once its lookup ends, so both get the one answer and the order is sent once."""
    rig = build_gateway()
    lookups = GatedLookups(rig)
    rig.broker.then(kis_envelope(output={"ODNO": "1"}))
    order = request(rig.clock, tr_id="TTTC0012U", params=ORDER)
    tasks = [asyncio.create_task(rig.gateway.handle(order)) for _ in range(2)]
    await rig.clock.advance(0.01)
    assert lookups.started == 2
    lookups.gate.set()
    await until(rig, lambda: all(t.done() for t in tasks))
    first, second = (t.result() for t in tasks)
    assert first.ok and second is first
    assert len(rig.dispatcher.calls("/trading/")) == 1
    await rig.gateway.stop()


@pytest.mark.parametrize("other_answered", [False, True])
async def test_an_order_another_delivery_marked_after_its_lookup_is_not_sent(other_answered: bool) -> None:
    """Another gateway's copy of the order (another partition) marks it, or even answers it, between this
    copy's lookup and its mark: this copy is not sent. It gets the stored answer, or ``unknown_outcome``
    while the other is in flight, and leaves the other's record as it is."""
    rig = build_gateway()
    order = request(rig.clock, tr_id="TTTC0012U", params=ORDER)
    theirs = rig.gateway.answer(order, Status.OK, message="the other copy's answer")
    plain, print_ = rig.records.lookup, fingerprint(order)

    async def lookup(name: str) -> Record | None:
        found = await plain(name)
        await (
            rig.records.store(name, theirs, 1000, print_)
            if other_answered
            else rig.records.mark_inflight(name, 1000, print_)
        )
        return found

    rig.records.lookup = lookup  # type: ignore[method-assign]
    task = asyncio.create_task(rig.gateway.handle(order))
    await until(rig, task.done)
    if other_answered:
        assert task.result() == theirs
    else:
        assert (task.result().status, task.result().reason) == (
            Status.UNKNOWN_OUTCOME,
            "redelivered_in_flight",
        )
    assert rig.dispatcher.calls("/trading/") == []
    assert rig.records.records[order.request_id] == (theirs if other_answered else None)
    await rig.gateway.stop()


async def test_a_read_is_queued_during_its_lookup_and_sent_only_after_it() -> None:
    """A read waits for its slot and its lookup at once (one wait, not two in a row), but its call waits for
    the lookup: a slot that went by meanwhile is not used late, the read gets a later one."""
    store: list[CountingSlots] = []
    rig = build_gateway(rate_per_s=2, slots=counted(store))
    lookups = GatedLookups(rig)
    task = asyncio.create_task(rig.gateway.handle(request(rig.clock)))
    await rig.clock.advance(0.01)
    (slots,) = store
    assert lookups.started == 1 and slots.recorded == 2  # the token's slot and the read's, lookup still out
    await rig.clock.advance(2)  # the read's slot and its arrival bound went by
    assert rig.dispatcher.calls("/quotations/") == []
    lookups.gate.set()
    await until(rig, task.done)
    assert task.result().ok
    assert slots.recorded == 3  # a fresh slot, not the stale one
    (at_s,) = call_times(rig)
    assert at_s >= 2.0
    await rig.gateway.stop()


async def test_a_redelivered_read_whose_lookup_ends_after_its_slot_is_not_sent_again() -> None:
    """A read that was answered before, delivered again: queued at once, its record found while its slot is
    given; the call is never made and the recorded answer is the answer."""
    rig = build_gateway()
    req = request(rig.clock)
    (first,) = await serve(rig, [req])
    lookups = GatedLookups(rig)
    task = asyncio.create_task(rig.gateway.handle(req))
    await rig.clock.advance(0.5)  # its slot came and went while the lookup waits
    lookups.gate.set()
    await until(rig, task.done)
    assert task.result() == first.response
    assert len(rig.dispatcher.calls("/quotations/")) == 1
    await rig.gateway.stop()


async def test_a_stop_while_a_call_waits_for_its_lookup_leaves_the_read_to_its_caller() -> None:
    """The gateway stops (the call task waiting for the read's lookup is cancelled, and with it the future
    it waits on); when the lookup then returns, the read still waits for its answer until its caller lets
    go: it does not end in an error of its own, and nothing is sent."""
    rig = build_gateway()
    lookups = GatedLookups(rig)
    task = asyncio.create_task(rig.gateway.handle(request(rig.clock)))
    await rig.clock.advance(0.5)  # its slot came: its call task waits for the lookup
    await rig.gateway.stop()
    lookups.gate.set()
    await rig.clock.advance(0.5)
    assert not task.done(), task.exception() if task.done() and not task.cancelled() else "cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.dispatcher.calls("/quotations/") == []


async def test_a_half_open_probe_that_is_a_redelivered_read_hands_the_probe_on() -> None:
    """After the breaker opened, the first read let through is a redelivery answered from its record: no
    call is made, so the next read probes at once instead of being refused for another open period."""
    rig = build_gateway()
    answered = request(rig.clock)
    (first,) = await serve(rig, [answered])
    for _ in range(20):
        rig.broker.then(UpstreamAnswer(502, {}, None))
    await serve(rig, [request(rig.clock) for _ in range(5)])
    breaker = rig.gateway.pacers[Provider.KIS, LimitClass.QUERY].breaker
    assert breaker.state is BreakerState.OPEN
    rig.broker.script.clear()  # the broker is well again
    await rig.clock.advance(breaker.open_s)
    lookups = GatedLookups(rig)
    again = asyncio.create_task(rig.gateway.handle(answered))  # its slot is the probe; its lookup is slow
    await rig.clock.advance(0.2)
    lookups.gate.set()
    await until(rig, again.done)
    assert again.result() == first.response
    (probe,) = await serve(rig, [request(rig.clock)])
    assert probe.response.ok, probe.response
    assert breaker.state is BreakerState.CLOSED


async def test_a_read_whose_call_waits_for_its_lookup_may_still_be_left_to_the_next_owner() -> None:
    """A revoke may leave a record to the next owner while nothing can have been sent for it: a read whose
    slot came but whose call still waits for its lookup counts as queued."""
    rig = build_gateway()
    lookups = GatedLookups(rig)
    position = ("api.requests", 0, 7)
    task = asyncio.create_task(rig.gateway.handle(request(rig.clock), position))
    await rig.clock.advance(0.5)  # its slot came: its call task waits for the lookup
    assert rig.dispatcher.calls("/quotations/") == []
    assert rig.gateway.is_abandonable(position)
    lookups.gate.set()
    await until(rig, lambda: bool(rig.dispatcher.calls("/quotations/")))
    await until(rig, task.done)
    assert task.result().ok
    await rig.gateway.stop()


async def test_a_read_let_go_during_its_lookup_is_never_sent() -> None:
    """A caller that lets go while its request's idempotency lookup is on its way: nothing is sent."""
    rig = build_gateway(rate_per_s=2)
    ahead = [asyncio.create_task(rig.gateway.handle(request(rig.clock))) for _ in range(3)]
    await rig.clock.advance(0.01)
    lookups = GatedLookups(rig)
    late = asyncio.create_task(rig.gateway.handle(request(rig.clock)))
    await rig.clock.advance(0.01)
    assert lookups.started == 1
    late.cancel()
    lookups.gate.set()
    await until(rig, lambda: all(t.done() for t in ahead))
    await rig.clock.advance(3)  # well past the slot the read would have had
    await rig.gateway.stop()
    assert late.cancelled()
    assert len(rig.dispatcher.calls("/quotations/")) == 3


async def test_withdrawn_request_is_never_sent() -> None:
    """A request whose caller lets go while it is queued (a revoked partition) never reaches the broker."""
    rig = build_gateway(rate_per_s=2)
    reqs = [request(rig.clock) for _ in range(4)]
    tasks = [asyncio.create_task(rig.gateway.handle(r)) for r in reqs]
    await rig.clock.advance(0.01)
    tasks[-1].cancel()
    for _ in range(1000):
        await rig.clock.advance(0.01)
        if all(t.done() for t in tasks):
            break
    await rig.clock.advance(3)  # well past the slot the withdrawn request would have had
    await rig.gateway.stop()
    assert tasks[-1].cancelled()
    assert len(rig.dispatcher.calls("/quotations/")) == 3


async def test_bad_requests_are_refused_at_once() -> None:
    """Unknown tr_ids are invalid, a past deadline is expired, an unknown credential invalid."""
    rig = build_gateway()
    clock = rig.clock
    unknown = request(clock, tr_id="NOPE0000")
    past = request(clock, deadline_s=0.001)
    await clock.advance(0.01)
    answers = [await rig.gateway.handle(r) for r in (unknown, past)]
    assert [(a.status, a.reason) for a in answers] == [
        (Status.INVALID, "unknown_tr_id"),
        (Status.EXPIRED, "deadline_passed"),
    ]
    credential = request(clock).model_copy(update={"credential": "acct-2"})
    assert (await rig.gateway.handle(credential)).reason == "unknown_credential"
    assert rig.dispatcher.sent == []


async def test_a_duplicate_delivery_of_an_order_joins_the_first() -> None:
    """The same order delivered twice while the first is being called gets the first's answer, sent once."""
    rig = build_gateway()
    order = request(rig.clock, tr_id="TTTC0012U", params=ORDER)
    rig.broker.then(kis_envelope(output={"ODNO": "1"}), latency_s=0.2)
    first, second = await serve(rig, [order, order])
    assert first.response.ok and second.response == first.response
    assert len(rig.dispatcher.calls("/trading/")) == 1


async def test_without_a_token_a_request_that_can_wait_for_the_next_issuance_is_served() -> None:
    """The broker's answer to a token call is unreadable and no other may be issued for a minute: a
    request whose deadline comes before that is refused token_unavailable at once; one that can wait for
    it stays queued and is served with the next token, and the domain goes on."""
    rig = build_gateway()
    good = rig.broker.expiry_format
    rig.broker.expiry_format = "not a date %Y"
    (broken,) = await serve(rig, [request(rig.clock)])
    assert (broken.response.status, broken.response.reason) == (Status.REJECTED, "token_unavailable")
    rig.broker.expiry_format = good
    started = rig.clock.time()
    short, long = await serve(
        rig, [request(rig.clock, deadline_s=30), request(rig.clock, deadline_s=120)], step_s=0.05
    )
    assert (short.response.status, short.response.reason) == (Status.REJECTED, "token_unavailable")
    assert short.at_ms / 1000 - started < 1.5
    assert long.response.ok and 55 < long.at_ms / 1000 - started < 70
    assert rig.broker.tokens_issued == 2


async def test_a_failure_inside_the_pacing_loop_answers_and_keeps_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error while pacing answers one request internal_error, and the loop serves on."""
    rig = build_gateway()
    pacer = rig.gateway.pacers[Provider.KIS, LimitClass.QUERY]
    real = pacer._token
    failures = [RuntimeError("a bug")]

    async def token(domain: str) -> str:
        if failures:
            raise failures.pop()
        return await real(domain)

    pacer._token = token
    with caplog.at_level(logging.ERROR):
        first, second = await serve(rig, [request(rig.clock), request(rig.clock)])
    assert (first.response.status, first.response.reason) == (Status.REJECTED, "internal_error")
    assert second.response.ok
    assert any(r.getMessage() == "gateway.internal_error" for r in caplog.records)


async def test_a_failure_after_a_request_was_popped_for_its_slot_answers_that_request() -> None:
    """An unexpected error fetching the token after the loop took a request for its slot ends that request
    internal_error and the loop serves on. It used to escape to the loop, which answered the next queued
    request internal_error instead while the one taken waited for an answer that never came."""
    rig = build_gateway()
    pacer = rig.gateway.pacers[Provider.KIS, LimitClass.QUERY]
    real = pacer._token
    calls = 0

    async def token(domain: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # the loop's second ask: after it popped the first request
            raise KeyError("expires_at_s")
        return await real(domain)

    pacer._token = token
    first, second = await serve(rig, [request(rig.clock), request(rig.clock)], limit_s=5)
    assert (first.response.status, first.response.reason) == (Status.REJECTED, "internal_error")
    assert second.response.ok


async def test_a_retry_refused_for_a_full_queue_is_logged_as_a_rejection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A throttled read whose queue filled during its call cannot go back: it is answered ``upstream_error``
    (``retry refused: backlog_full``) and, like every refusal by pace, counted and logged
    ``ratelimit.rejected``."""
    rig = build_gateway(max_backlog=1)
    rig.broker.then(kis_envelope("EGW00201", rt_cd="1", status=500), latency_s=0.02, path="/quotations/")
    first, second = request(rig.clock), request(rig.clock)
    with caplog.at_level(logging.WARNING, logger="services.gateway"):
        task = asyncio.create_task(rig.gateway.handle(first))
        # its call is out (the queue is free again), and its throttle comes back before the second's slot
        await until(rig, lambda: bool(rig.dispatcher.calls("/quotations/")))
        later = asyncio.create_task(rig.gateway.handle(second))
        await until(rig, lambda: task.done() and later.done())
    answer = task.result()
    assert (answer.status, answer.reason) == (Status.UPSTREAM_ERROR, "throttled")
    assert answer.message is not None and answer.message.startswith("retry refused: backlog_full")
    assert later.result().ok
    rejected = [r for r in caplog.records if r.getMessage() == "ratelimit.rejected"]
    assert [r.fields["request_id"] for r in rejected] == [first.request_id]  # type: ignore[attr-defined]
    await rig.gateway.stop()


async def test_records_redis_would_not_keep_are_logged_once_a_second_for_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis refusing every record, 30 reads answered within a second write one
    ``idempotency.store_failed`` line (the next one counts those held back); each order's is written, its
    missing record matters for its reconciliation. Every answer still goes out."""
    rig = build_gateway(rate_per_s=1000)

    async def failing(name: str, response: ApiResponse, ttl_ms: int, fingerprint: str) -> None:
        raise RedisConnectionError("Redis went away")

    rig.records.store = failing  # type: ignore[method-assign]
    reads = [request(rig.clock) for _ in range(30)]
    orders = [request(rig.clock, tr_id="TTTC0012U", params=ORDER) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="services.gateway.gateway"):
        answers = await serve(rig, reads + orders)
    assert all(a.response.ok for a in answers)
    lines = [r.fields for r in caplog.records if r.getMessage() == "idempotency.store_failed"]  # type: ignore[attr-defined]
    by_id = {line["request_id"] for line in lines}
    assert len(by_id & {r.request_id for r in reads}) == 1
    assert {o.request_id for o in orders} <= by_id
