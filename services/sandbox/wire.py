"""HTTP plumbing shared by both brokers: the reply value, JSON responses and the gate every call passes.

The gate is where the referee sees a request: after the arrival jitter (a real wait of uniform [0, J] ms
when ``arrival_jitter_ms`` is set, so concurrent requests overtake each other) it counts the arrival
(before anything can refuse it), runs due maintenance, rolls the faults (cut connection, added latency,
5xx), refuses arrivals over the per-second limit, or over their limit class's (referee.py), with the
provider's own throttle answer, and otherwise runs the endpoint's handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web

from services.logs import log_event
from services.sandbox import stamps
from services.sandbox.referee import Arrival
from services.sandbox.state import SandboxState

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass
class Reply:
    """An answer before it becomes an HTTP response; ``code`` is what the referee records."""

    status: int
    body: Any
    code: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # cut the connection instead of answering
    delay_s: float = 0.0  # wait this long (real seconds) before answering or cutting


class ProviderAnswers(Protocol):
    """The provider-specific answers the gate needs."""

    def throttled(self, tr_id: str) -> Reply:
        """Answer for an arrival over the per-second limit."""

    def class_throttled(self, tr_id: str, limit_class: str, rate_per_s: int) -> Reply:
        """Answer for an arrival over its limit class's per-second limit (KIS ledger, Kiwoom orders)."""

    def server_error(self, status: int) -> Reply:
        """Answer for an injected 5xx."""


def json_response(reply: Reply, content_type: str = JSON_CONTENT_TYPE) -> web.Response:
    """Serialise a reply with orjson (non-ASCII kept as UTF-8, like the brokers)."""
    headers = {"content-type": content_type, **reply.headers}
    return web.Response(status=reply.status, body=orjson.dumps(reply.body), headers=headers)


def drop_connection(request: web.Request) -> web.Response:
    """Cut the TCP connection without an answer (the client sees a disconnect)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=499)


async def read_json(request: web.Request) -> dict[str, Any] | None:
    """The JSON object body, or None when absent or not an object."""
    raw = await request.read()
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def gate(
    request: web.Request,
    state: SandboxState,
    env_id: str,
    appkey: str | None,
    tr_id: str,
    answers: ProviderAnswers,
    handler: Callable[[Arrival], Awaitable[Reply]],
    in_window: bool = True,
    content_type: str = JSON_CONTENT_TYPE,
) -> web.Response:
    """Jitter, count, fault, limit, then handle one provider request."""
    received_ns = stamps.received_ns(request.transport)  # before anything else reads the connection
    jitter_s = state.faults.arrival_delay_s(env_id)
    if jitter_s > 0:
        # a real wait: the referee's clock may be frozen, the overtaking must still happen
        await asyncio.sleep(jitter_s)
    ago_ns = None
    if received_ns is not None:  # it arrived when its bytes did, plus the injected network delay
        ago_ns = time.time_ns() - received_ns - round(jitter_s * 1e9)
    arrival = state.referee.arrive(env_id, appkey, tr_id, in_window, ago_ns=ago_ns)
    if jitter_s > 0:
        state.referee.fault(arrival, "arrival_jitter")
    state.faults.maintain()
    roll = state.faults.roll(env_id)
    if roll.drop:
        state.referee.fault(arrival, "drop")
        state.referee.outcome(arrival, "dropped")
        return drop_connection(request)
    if roll.latency_s > 0:
        state.referee.fault(arrival, "latency")
        await asyncio.sleep(roll.latency_s)
    if roll.error:
        state.referee.fault(arrival, "error")
        reply = answers.server_error(state.faults.settings.error_status)
    elif arrival.over_limit:
        reply = answers.throttled(tr_id)
    elif arrival.over_class is not None:
        reply = answers.class_throttled(tr_id, arrival.over_class, arrival.class_rate_per_s)
    else:
        reply = await handler(arrival)
    state.referee.outcome(arrival, reply.code)
    if reply.delay_s > 0:
        await asyncio.sleep(reply.delay_s)
    if reply.drop:
        return drop_connection(request)
    if reply.code != "ok":
        fields = {"env": env_id, "tr_id": tr_id, "status": reply.status, "code": reply.code}
        log_event(log, "sandbox.reply", logging.DEBUG, **fields)
    return json_response(reply, content_type)
