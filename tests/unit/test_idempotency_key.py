"""An order's ``idempotency_key``: one order across request ids, sent at most once, on the gateway's fakes."""

from __future__ import annotations

import asyncio
import contextlib

from hubclient.catalog import lookup
from hubclient.models import ApiRequest, Provider, Status
from services.gateway.clock import ManualClock
from services.gateway.idempotency import ORDER_RECORD_MS, RECORD_GRACE_MS, record_name, record_ttl_ms
from services.gateway.policy import MAX_ATTEMPTS
from services.gateway.responses import Responder
from services.gateway.testing import build_gateway, kis_envelope
from tests.unit.test_gateway_core import ORDER, request, serve

ORDER_TR = "TTTC0012U"


def keyed_order(clock: ManualClock, key: str | None, *, caller: str = "worker") -> ApiRequest:
    """A KIS cash order with ``key`` as its idempotency_key."""
    order = request(clock, tr_id=ORDER_TR, params=ORDER, caller=caller)
    return order.model_copy(update={"idempotency_key": key})


async def test_a_retry_under_a_new_request_id_gets_the_first_answer_and_sends_nothing() -> None:
    """The caller gave up on an order (say a HubTimeout) and sends it again under a new request_id with the
    same key: it is answered with the first one's answer, addressed to it, naming the first in
    ``shared_with``; the broker saw one order."""
    rig = build_gateway()
    first = keyed_order(rig.clock, "order-7")
    (answered,) = await serve(rig, [first])
    assert answered.response.ok
    retry = keyed_order(rig.clock, "order-7")
    (again,) = await serve(rig, [retry])
    assert again.response.request_id == retry.request_id and again.response.shared_with == first.request_id
    assert (again.response.status, again.response.data) == (Status.OK, answered.response.data)
    assert len(rig.dispatcher.calls("/trading/")) == 1


async def test_orders_with_the_same_key_at_once_are_sent_once() -> None:
    """Two orders with one key arriving together: one reaches the broker, the other is answered
    ``unknown_outcome`` (the first may be at the broker) or with the first one's answer."""
    rig = build_gateway()
    a, b = keyed_order(rig.clock, "twice"), keyed_order(rig.clock, "twice")
    answers = await serve(rig, [a, b])
    assert len(rig.dispatcher.calls("/trading/")) == 1
    statuses = sorted((x.response.status.value, x.response.reason or "-") for x in answers)
    assert statuses in (
        [("ok", "-"), ("ok", "-")],
        [("ok", "-"), ("unknown_outcome", "redelivered_in_flight")],
    )


async def test_keys_are_per_caller_and_an_order_without_one_is_its_own() -> None:
    """Another caller's key of the same spelling is another order; orders without a key never meet."""
    rig = build_gateway()
    orders = [
        keyed_order(rig.clock, "k", caller="desk-a"),
        keyed_order(rig.clock, "k", caller="desk-b"),
        keyed_order(rig.clock, None),
        keyed_order(rig.clock, None),
    ]
    for order in orders:
        (answered,) = await serve(rig, [order])
        assert answered.response.ok and answered.response.shared_with is None
    assert len(rig.dispatcher.calls("/trading/")) == 4


async def test_a_keyed_order_the_broker_refused_unexecuted_may_be_sent_again() -> None:
    """The first order was throttled at every attempt (never executed, its mark cleared): its answer does
    not bind the key, and a retry with the same key is sent and executed."""
    rig = build_gateway()
    for _ in range(MAX_ATTEMPTS):
        rig.broker.then(kis_envelope("EGW00201", rt_cd="1", status=500))
    first = keyed_order(rig.clock, "retry-me")
    (refused,) = await serve(rig, [first])
    assert (refused.response.status, refused.response.attempts) == (Status.UPSTREAM_ERROR, MAX_ATTEMPTS)
    retry = keyed_order(rig.clock, "retry-me")
    (executed,) = await serve(rig, [retry])
    assert executed.response.ok and executed.response.shared_with is None
    assert len(rig.dispatcher.calls("/trading/")) == MAX_ATTEMPTS + 1


async def test_reads_ignore_the_key() -> None:
    """A read repeated is harmless: two reads with one key are both served by the broker."""
    rig = build_gateway()
    reads = [request(rig.clock).model_copy(update={"idempotency_key": "same"}) for _ in range(2)]
    answers = await serve(rig, reads)
    assert all(a.response.ok and a.response.shared_with is None for a in answers)
    assert len(rig.dispatcher.calls("/quotations/")) == 2


def test_a_keyed_orders_record_is_the_keys_and_an_orders_lives_a_day() -> None:
    """The record's name depends on provider, caller and key only; an order's record outlives its short
    deadline, a read's does not."""
    clock_ms = 1_800_000_000_000
    spec = lookup(Provider.KIS, ORDER_TR)

    def order(request_id: str, caller: str, key: str | None) -> ApiRequest:
        return ApiRequest(
            request_id=request_id,
            provider=Provider.KIS,
            tr_id=ORDER_TR,
            params=ORDER,
            caller=caller,
            deadline_ms=clock_ms + 5_000,
            created_at_ms=clock_ms,
            reply_topic="api.responses",
            reply_partition=0,
            idempotency_key=key,
        )

    a = order("0192f2a4-7c1e-7000-8000-000000000001", "desk", "k1")
    b = order("0192f2a4-7c1e-7000-8000-000000000002", "desk", "k1")
    assert record_name(a, spec) == record_name(b, spec) != a.request_id
    assert record_name(order(a.request_id, "other", "k1"), spec) != record_name(a, spec)
    assert record_name(order(a.request_id, "desk", None), spec) == a.request_id
    assert record_ttl_ms(a, spec, clock_ms) == ORDER_RECORD_MS
    assert record_ttl_ms(order(a.request_id, "desk", None), spec, clock_ms) == ORDER_RECORD_MS
    price = lookup(Provider.KIS, "FHKST01010100")
    assert record_ttl_ms(a, price, clock_ms) == 5_000 + RECORD_GRACE_MS  # a read's: its deadline and a minute


TOKEN_EXPIRED = kis_envelope("EGW00123", rt_cd="1", status=500)  # KIS refuses the token: nothing executed


async def test_a_keyed_order_refused_for_its_token_leaves_the_key_free() -> None:
    """The broker refused the order's token, then the replaced token too: nothing was executed, so the
    answer (upstream_error/token_rejected) does not bind the key and a retry with it is sent. The token
    refusal kept the in-flight mark, which bound the key to that answer for a day."""
    rig = build_gateway()
    rig.broker.then(TOKEN_EXPIRED).then(TOKEN_EXPIRED)
    first = request(rig.clock, tr_id=ORDER_TR, params=ORDER, deadline_s=300)
    first = first.model_copy(update={"idempotency_key": "token-trouble"})
    (refused,) = await serve(rig, [first], step_s=0.05, limit_s=300)
    assert (refused.response.status, refused.response.reason) == (Status.UPSTREAM_ERROR, "token_rejected")
    retry = keyed_order(rig.clock, "token-trouble")
    (executed,) = await serve(rig, [retry], step_s=0.05, limit_s=300)
    assert executed.response.ok and executed.response.shared_with is None
    assert len(rig.dispatcher.calls("/trading/")) == 3


async def test_an_order_let_go_while_it_waits_for_a_new_token_is_sent_on_redelivery() -> None:
    """An order whose token the broker refused waits for the next issuance (a minute); a revoke then lets
    it go. Its redelivery is sent: it used to find the first attempt's in-flight mark and be answered
    unknown_outcome, though the broker had executed nothing."""
    rig = build_gateway()
    rig.broker.then(TOKEN_EXPIRED)
    order = request(rig.clock, tr_id=ORDER_TR, params=ORDER, deadline_s=300)
    first = asyncio.create_task(rig.gateway.handle(order))
    await rig.clock.advance(5)
    assert len(rig.dispatcher.calls("/trading/")) == 1 and not first.done()
    first.cancel()  # what the consumer does to a queued request on revoke
    with contextlib.suppress(asyncio.CancelledError):
        await first
    (again,) = await serve(rig, [order], step_s=0.05, limit_s=300)
    assert (again.response.status, again.response.reason) == (Status.OK, None)
    assert len(rig.dispatcher.calls("/trading/")) == 2


async def test_a_shared_order_answer_too_large_for_kafka_is_unknown_outcome() -> None:
    """A retry's answer (the first order's, re-addressed: attempts 0, shared_with set) that Kafka will not
    carry is ``unknown_outcome`` as the first one's would be: the order did reach the broker, so an
    ``upstream_error`` would invite a resend under a new key."""
    rig = build_gateway()
    first = keyed_order(rig.clock, "big")
    await serve(rig, [first])
    (again,) = await serve(rig, [keyed_order(rig.clock, "big")])
    assert again.response.attempts == 0 and again.response.shared_with == first.request_id
    cut = Responder.too_large(again.response, keyed_order(rig.clock, "big"), "too large")
    assert (cut.status, cut.reason) == (Status.UNKNOWN_OUTCOME, "answer_too_large")
