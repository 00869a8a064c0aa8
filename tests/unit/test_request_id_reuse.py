"""A ``request_id`` (or an order's ``idempotency_key``) used again for another request: the second request
gets ``invalid`` and nothing of the first one's answer, and nothing is sent for it; the same request sent
again is still answered from its record."""

from __future__ import annotations

import asyncio

import pytest

from hubclient.models import ApiRequest, Status
from services.gateway.idempotency import Record, fingerprint
from services.gateway.testing import build_gateway
from tests.sandbox.test_sandbox_kis_trading import BALANCE
from tests.unit.test_gateway_core import ORDER, PRICE, request, serve, until
from tests.unit.test_idempotency_key import keyed_order


def reusing(first: ApiRequest, **changes: object) -> ApiRequest:
    """Another request under ``first``'s request_id."""
    return first.model_copy(update=changes)


@pytest.mark.parametrize(
    "change",
    [
        {"params": {**PRICE, "FID_INPUT_ISCD": "000660"}},
        {"caller": "someone-else"},
        {"tr_id": "FHKST01010300"},
        {"continuation": {"tr_cont": "N"}},
    ],
    ids=["params", "caller", "tr_id", "continuation"],
)
async def test_another_read_under_a_used_request_id_is_invalid(change: dict[str, object]) -> None:
    """After a read was answered, another read under its request_id (other parameters, another caller, call
    or page) is ``invalid`` / ``request_id_reused``: it is not sent and does not get the first one's
    data."""
    rig = build_gateway()
    first = request(rig.clock)
    (answered,) = await serve(rig, [first])
    assert answered.response.ok and answered.response.data
    calls = len(rig.dispatcher.calls("/quotations/"))
    (other,) = await serve(rig, [reusing(first, **change)])
    assert (other.response.status, other.response.reason) == (Status.INVALID, "request_id_reused")
    assert other.response.data is None and other.response.request_id == first.request_id
    assert len(rig.dispatcher.calls("/quotations/")) == calls


async def test_the_same_request_sent_again_is_still_answered_from_its_record() -> None:
    """A resend of the same call with a later deadline, another priority and reply address is the same
    request: its record's answer, nothing sent."""
    rig = build_gateway()
    first = request(rig.clock)
    (answered,) = await serve(rig, [first])
    calls = len(rig.dispatcher.calls("/quotations/"))
    resent = reusing(first, deadline_ms=first.deadline_ms + 5000, reply_partition=3)
    (again,) = await serve(rig, [resent])
    assert again.response == answered.response
    assert len(rig.dispatcher.calls("/quotations/")) == calls


async def test_another_callers_account_query_under_a_used_request_id_gets_none_of_it() -> None:
    """The leak this closes: a caller naming another caller's request_id for a call of its own got that
    caller's stored answer (here an account balance)."""
    rig = build_gateway()
    theirs = request(rig.clock, tr_id="TTTC8434R", params=BALANCE, caller="desk-a")
    (answered,) = await serve(rig, [theirs])
    assert answered.response.ok and answered.response.data
    mine = reusing(theirs, caller="desk-b", tr_id="FHKST01010100", params=PRICE)
    (other,) = await serve(rig, [mine])
    assert (other.response.status, other.response.reason, other.response.data) == (
        Status.INVALID,
        "request_id_reused",
        None,
    )


@pytest.mark.parametrize("state", ["answered", "in_flight"])
async def test_another_order_under_a_used_request_id_is_invalid_and_not_sent(state: str) -> None:
    """An order under the request_id of another order, answered or still in flight at another gateway, is
    ``invalid``: not sent, not ``unknown_outcome`` (it is not that order)."""
    rig = build_gateway()
    first = request(rig.clock, tr_id="TTTC0012U", params=ORDER)
    if state == "answered":
        (answered,) = await serve(rig, [first])
        assert answered.response.ok
    else:
        await rig.records.mark_inflight(first.request_id, 60_000, fingerprint(first))
    calls = len(rig.dispatcher.calls("/trading/"))
    (other,) = await serve(rig, [reusing(first, params={**ORDER, "ORD_QTY": "5"})])
    assert (other.response.status, other.response.reason) == (Status.INVALID, "request_id_reused")
    assert len(rig.dispatcher.calls("/trading/")) == calls


async def test_a_reads_in_flight_mark_of_another_request_is_not_run_again() -> None:
    """A read whose request_id another read marked in flight (a read may run again when its own earlier
    delivery is in flight) is refused instead: it is not that read."""
    rig = build_gateway()
    first = request(rig.clock)
    await rig.records.mark_inflight(first.request_id, 60_000, fingerprint(first))
    (other,) = await serve(rig, [reusing(first, params={**PRICE, "FID_INPUT_ISCD": "000660"})])
    assert (other.response.status, other.response.reason) == (Status.INVALID, "request_id_reused")
    assert rig.dispatcher.calls("/quotations/") == []


async def test_another_keyed_order_under_a_used_key_is_invalid() -> None:
    """An order under another request_id with a key already used for an order with other parameters is
    ``invalid`` / ``idempotency_key_reused``, not that order's answer; the same order with the key still
    gets the first one's answer."""
    rig = build_gateway()
    first = keyed_order(rig.clock, "order-9")
    (answered,) = await serve(rig, [first])
    assert answered.response.ok
    other = keyed_order(rig.clock, "order-9").model_copy(update={"params": {**ORDER, "ORD_QTY": "5"}})
    (refused,) = await serve(rig, [other])
    assert (refused.response.status, refused.response.reason) == (Status.INVALID, "idempotency_key_reused")
    (retried,) = await serve(rig, [keyed_order(rig.clock, "order-9")])
    assert retried.response.ok and retried.response.shared_with == first.request_id
    assert len(rig.dispatcher.calls("/trading/")) == 1


async def test_another_request_while_the_first_is_served_here_does_not_join_it() -> None:
    """Two requests under one request_id at once in one gateway: the second does not wait for the first's
    answer (a copy of one request would), it is refused at once."""
    rig = build_gateway()
    first = request(rig.clock)
    task = asyncio.create_task(rig.gateway.handle(first))
    await asyncio.sleep(0)
    assert rig.gateway.flights.get(first.request_id) is not None
    other = await rig.gateway.handle(reusing(first, params={**PRICE, "FID_INPUT_ISCD": "000660"}))
    assert (other.status, other.reason) == (Status.INVALID, "request_id_reused")
    await until(rig, task.done)
    assert task.result().ok
    await rig.gateway.stop()


def test_records_of_an_older_version_fit_any_request() -> None:
    """A record without a fingerprint (written before fingerprints) fits every request, as before."""
    rig = build_gateway()
    first = request(rig.clock)
    assert Record(None).fits(first) and Record(None).fits(reusing(first, caller="x"))
    assert Record(None, fingerprint(first)).fits(first)
    assert not Record(None, fingerprint(first)).fits(reusing(first, caller="x"))
    assert fingerprint(reusing(first, credential="a")) != fingerprint(reusing(first, credential="b"))
