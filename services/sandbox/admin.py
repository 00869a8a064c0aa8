"""Admin endpoints under ``/_sandbox``: the referee report, reset, faults, the simulated clock and orders.

- ``GET /_sandbox/stats``: the referee report, event-loop lag included (shape in referee.py).
- ``POST /_sandbox/reset``: clear stats (loop lag included), tokens, key bindings, limiter windows and the
  order ledger; body ``{"clock": true, "faults": true}`` (optional) also restores the start-up clock and
  faults.
- ``GET /_sandbox/faults``, ``POST /_sandbox/faults``: read / merge a partial ``FaultSettings``; add
  ``"invalidate_tokens_now": true`` to run a maintenance (every token dies) at once.
- ``GET /_sandbox/clock``, ``POST /_sandbox/clock``: ``{"now": "2026-11-27T10:30:00+09:00"}`` (naive = KST),
  ``{"advance_s": 61}``, ``{"rate": 0}`` (freeze) or a combination.
- ``GET /_sandbox/orders``: every order the brokers accepted, including those answered as timed out.
- ``GET /_sandbox/symbols``: the symbol master.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from services.sandbox.state import STATE
from services.sandbox.symbols import SYMBOLS


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return value


async def stats(request: web.Request) -> web.Response:
    """GET /_sandbox/stats: the referee report."""
    state = request.app[STATE]
    return _json({**state.referee.snapshot(), "maintenances": state.faults.maintenances})


async def reset(request: web.Request) -> web.Response:
    """POST /_sandbox/reset: clear stats, tokens and limiter state (optionally clock and faults)."""
    body = await _body(request)
    state = request.app[STATE]
    state.reset(clock=bool(body.get("clock")), faults=bool(body.get("faults")))
    return _json({"status": "reset", "clock": state.clock.snapshot()})


async def get_faults(request: web.Request) -> web.Response:
    """GET /_sandbox/faults: the faults in force."""
    return _json(request.app[STATE].faults.snapshot())


async def set_faults(request: web.Request) -> web.Response:
    """POST /_sandbox/faults: merge a partial fault settings object."""
    body = await _body(request)
    faults = request.app[STATE].faults
    try:
        faults.update(body)
    except ValidationError as exc:
        return _json({"error": "invalid faults", "detail": orjson.loads(exc.json())}, 400)
    return _json(faults.snapshot())


async def get_clock(request: web.Request) -> web.Response:
    """GET /_sandbox/clock: simulated now, today, rate and monotonic seconds."""
    return _json(request.app[STATE].clock.snapshot())


async def set_clock(request: web.Request) -> web.Response:
    """POST /_sandbox/clock: set ``now`` (ISO 8601), ``rate`` and/or ``advance_s``."""
    body = await _body(request)
    clock = request.app[STATE].clock
    try:
        now = datetime.fromisoformat(body["now"]) if body.get("now") else None
        rate = float(body["rate"]) if body.get("rate") is not None else None
        advance_s = float(body.get("advance_s") or 0.0)
        clock.set(now=now, rate=rate)
        if advance_s:
            clock.advance(advance_s)
    except (TypeError, ValueError) as exc:
        return _json({"error": "invalid clock request", "detail": str(exc)}, 400)
    return _json(clock.snapshot())


async def orders(request: web.Request) -> web.Response:
    """GET /_sandbox/orders: the order ledger."""
    return _json({"orders": [order.as_dict() for order in request.app[STATE].orders]})


async def symbols(request: web.Request) -> web.Response:
    """GET /_sandbox/symbols: the symbol master."""
    del request
    return _json(
        {
            "symbols": [
                {"code": s.code, "name_ko": s.name_ko, "name_en": s.name_en, "market": s.market}
                for s in SYMBOLS.values()
            ]
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the admin endpoints."""
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_post("/_sandbox/reset", reset)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_post("/_sandbox/faults", set_faults)
    app.router.add_get("/_sandbox/clock", get_clock)
    app.router.add_post("/_sandbox/clock", set_clock)
    app.router.add_get("/_sandbox/orders", orders)
    app.router.add_get("/_sandbox/symbols", symbols)
