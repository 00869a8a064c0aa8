"""Operational events copied from the gateway's log to a topic: which, in what form, and never blocking."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from services.gateway.events import DROPPED, QUEUE_LIMIT, EventForwarder, event_value
from services.logs import log_event


def record(event: str, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("services.gateway.x", logging.WARNING, __file__, 1, event, None, None)
    made.fields = fields
    return made


@pytest.mark.parametrize(
    ("event", "forwarded"),
    [("ratelimit.rejected", True), ("redlock.contention", True), ("request.answered", False), ("x", False)],
)
def test_only_the_alerting_events_are_forwarded(event: str, forwarded: bool) -> None:
    """ratelimit.rejected and redlock.contention are forwarded with their fields; others are not."""
    value = event_value(record(event, provider="KIS", reason="backlog_full"), "gw-1")
    assert (value is not None) == forwarded
    if value is not None:
        assert (
            value["event"] == event and value["instance_id"] == "gw-1" and value["reason"] == "backlog_full"
        )
        assert value["ts_ms"] > 0


def test_secrets_are_redacted_like_the_log_line() -> None:
    """A secret field in an event's fields never reaches the topic."""
    value = event_value(
        record("redlock.contention", provider="KIS", appkey="PS123", nested={"token": "t"}), "g"
    )
    assert value is not None and value["appkey"] == "***" and value["nested"] == {"token": "***"}


async def test_forwarder_publishes_from_the_gateway_loggers_and_stops_cleanly() -> None:
    """Events logged by a services.gateway logger are produced keyed by provider; other loggers' are not."""
    sent: list[tuple[str, bytes, bytes]] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append((topic, key, value))

    forwarder = EventForwarder(send, topic="apihub.events", instance_id="gw-1")
    await forwarder.start()
    log_event(
        logging.getLogger("services.gateway.admission"),
        "ratelimit.rejected",
        logging.WARNING,
        provider="KIWOOM",
        reason="deadline_unreachable",
    )
    log_event(logging.getLogger("elsewhere"), "ratelimit.rejected", logging.WARNING, provider="KIS")
    await forwarder.stop()
    assert [(t, k) for t, k, _ in sent] == [("apihub.events", b"KIWOOM")]
    assert orjson.loads(sent[0][2])["reason"] == "deadline_unreachable"
    log_event(logging.getLogger("services.gateway.admission"), "ratelimit.rejected", provider="KIS")
    assert len(sent) == 1  # detached after stop


async def test_a_full_queue_drops_and_a_failed_send_is_counted() -> None:
    """Logging never waits: past the queue's bound events are dropped and counted; a send that fails is
    counted and the forwarder goes on with the next."""
    release = asyncio.Event()
    calls = 0

    async def send(topic: str, key: bytes, value: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("broker gone")
        await release.wait()

    forwarder = EventForwarder(send, topic="t", instance_id="g")
    full_before = DROPPED.labels("queue_full")._value.get()
    failed_before = DROPPED.labels("send_failed")._value.get()
    await forwarder.start()
    for _ in range(QUEUE_LIMIT + 5):
        forwarder.emit(record("ratelimit.rejected", provider="KIS"))
    await asyncio.sleep(0.01)
    assert DROPPED.labels("queue_full")._value.get() - full_before == 5
    assert DROPPED.labels("send_failed")._value.get() - failed_before == 1
    release.set()
    await forwarder.stop()
    assert forwarder.published >= 1
