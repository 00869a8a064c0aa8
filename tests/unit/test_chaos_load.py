"""The fault suite's load driver on the in-memory transport: what it records of each request's fate."""

from __future__ import annotations

import itertools
import time

from hubclient import HubClient
from hubclient.models import ApiRequest, ApiResponse, Status
from hubclient.testing import InMemoryTransport, failed, ok
from tests.chaos.load import LOST, ORDER_TR_ID, LoadPlan, LoadResult, RecordingTransport, _Caller


async def test_caller_records_ids_answers_orders_and_losses() -> None:
    result = LoadResult()
    plan = LoadPlan(order_every=3, timeout_s=0.3)
    reads = itertools.count()

    def numbered(request: ApiRequest) -> ApiResponse | None:
        """Orders unknown_outcome; reads ok but the fourth, which is never answered."""
        if request.tr_id == ORDER_TR_ID:
            return failed(request, Status.UNKNOWN_OUTCOME, "no_answer")
        return None if next(reads) == 3 else ok(request, {"rt_cd": "0"})

    transport = RecordingTransport(InMemoryTransport(numbered), result.sent)
    async with HubClient(transport, caller="unit", max_pending=100) as client:
        caller = _Caller("unit", client, plan, result, itertools.count(7), time.monotonic())
        await caller.run(count=6, interval_s=0.0, offset_s=0.0)
    assert len(result.sent) == 6 and len(set(result.sent)) == 6
    assert set(result.answers) == set(result.sent)  # every fate keyed by the id the transport saw
    assert sorted(result.orders.values()) == [7, 8]  # requests 2 and 5 are orders, quantities from 7
    assert all(result.answers[rid] == Status.UNKNOWN_OUTCOME for rid in result.orders)
    lost = [rid for rid, status in result.answers.items() if status == LOST]
    assert len(lost) == 1 and result.unanswered() == 1
    assert result.answered == {"ok": 3, "unknown_outcome": 2}
    assert result.reasons == {"unknown_outcome/no_answer": 2}
    assert len(result.ok_at_s) == 3 and len(result.latencies_ms["read"]) == 3
