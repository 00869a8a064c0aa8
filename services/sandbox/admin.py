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

Every handler reads its request through ``_fields``: a JSON object body (none = ``{}``) and no query string,
validated strictly against the endpoint's model (no unknown field, no coercion: ``true`` is not 1 and
``"61"`` is not a number; orjson refuses ``NaN`` and ``Infinity``), or HTTP 400 with ``{"error", "detail"}``
naming each field refused; nothing changes then. ``null`` leaves the clock's fields unset, as before.

The clock is only moved inside [the market's first day (``market_history_start``, 00:00 KST), ``CLOCK_END``)
(clock.py's ``within``, which also holds ``clock_start`` at start-up):
before the first day the market has no session (every price is 0). The close path is drawn weekday by
weekday from that day and drifts away from the reference day's levels (default seed: Samsung near 13 million
won late in 2099, near a quadrillion in 2400; each symbol's first call there a growing CPU stall of the
loop), and a token issued late on 9999-12-31 has no representable expiry (a 500). ``rate`` is at most
``MAX_CLOCK_RATE`` (at it, a running clock is still a month of real time away from the year 9999).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple, NoReturn, TypeVar, cast

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from services.sandbox.clock import CLOCK_END, MAX_CLOCK_RATE, as_kst, first_instant, range_text, within
from services.sandbox.settings import FaultSettings
from services.sandbox.state import STATE
from services.sandbox.symbols import SYMBOLS

Fields = TypeVar("Fields", bound=BaseModel)


class NoFields(BaseModel):
    """Request of the GET endpoints: no field at all."""

    model_config = {"extra": "forbid"}


class ResetRequest(NoFields):
    """Body of ``POST /_sandbox/reset``: also restore the start-up clock and/or faults."""

    clock: bool = False
    faults: bool = False


class FaultsRequest(FaultSettings):
    """Body of ``POST /_sandbox/faults`` over the faults in force; ``invalidate_tokens_now`` also kills every
    token at once."""

    invalidate_tokens_now: bool = False


class ClockRange(NamedTuple):
    """Validation context of ``ClockRequest``: the first instant allowed and the clock's reading now."""

    earliest: datetime
    current: datetime


def _in_range(at: datetime, earliest: datetime) -> datetime:
    """``at`` if the clock may be moved there, else ValueError saying the range."""
    if not within(at, earliest):
        raise ValueError(f"out of range: {at.isoformat()} is not in {range_text(earliest)}")
    return at


class ClockRequest(NoFields):
    """Body of ``POST /_sandbox/clock`` (context: a ``ClockRange``); ``null`` = not given."""

    now: datetime | None = None
    rate: float | None = Field(default=None, ge=0, le=MAX_CLOCK_RATE)
    advance_s: float | None = Field(default=None, ge=0)

    @field_validator("now", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        """ISO 8601 text as ``datetime.fromisoformat`` reads it; naive = KST."""
        if not isinstance(value, str):
            return value
        try:
            return as_kst(datetime.fromisoformat(value))
        except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-10:00 is in the year 10000 in KST
            raise ValueError(f"out of range: {value} is no instant in KST") from exc

    @field_validator("now")
    @classmethod
    def _now_in_range(cls, now: datetime | None, info: ValidationInfo) -> datetime | None:
        return None if now is None else _in_range(now, cast(ClockRange, info.context).earliest)

    @field_validator("advance_s")
    @classmethod
    def _lands_in_range(cls, advance_s: float | None, info: ValidationInfo) -> float | None:
        if not advance_s or "now" not in info.data:  # no move, or ``now`` already refused
            return advance_s
        clock_range = cast(ClockRange, info.context)
        start: datetime = info.data["now"] or clock_range.current
        if advance_s >= (CLOCK_END - start).total_seconds():
            raise ValueError(f"out of range: from {start.isoformat()} it passes {CLOCK_END.isoformat()}")
        _in_range(start + timedelta(seconds=advance_s), clock_range.earliest)
        return advance_s


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _refuse(request: web.Request, detail: list[dict[str, Any]]) -> NoReturn:
    """HTTP 400 naming what was refused (``detail`` as pydantic reports errors)."""
    error = {"error": f"invalid {request.method} {request.path}", "detail": detail}
    raise web.HTTPBadRequest(text=orjson.dumps(error).decode(), content_type="application/json")


async def _fields(
    request: web.Request, model: type[Fields], base: dict[str, Any] | None = None, context: Any = None
) -> Fields:
    """The request's JSON object body over ``base``, validated strictly as ``model``, or HTTP 400."""
    if request.query:
        msg = "the admin endpoints take no query parameters; send a JSON body"
        _refuse(
            request, [{"type": "extra_forbidden", "loc": ["query", q], "msg": msg} for q in request.query]
        )
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        _refuse(request, [{"type": "json_invalid", "loc": [], "msg": f"invalid JSON: {exc}"}])
    if not isinstance(body, dict):
        _refuse(request, [{"type": "model_type", "loc": [], "msg": "expected a JSON object", "input": body}])
    try:
        return model.model_validate({**(base or {}), **body}, strict=True, context=context)
    except ValidationError as exc:
        _refuse(request, orjson.loads(exc.json(include_url=False)))


async def stats(request: web.Request) -> web.Response:
    """GET /_sandbox/stats: the referee report."""
    await _fields(request, NoFields)
    state = request.app[STATE]
    return _json({**state.referee.snapshot(), "maintenances": state.faults.maintenances})


async def reset(request: web.Request) -> web.Response:
    """POST /_sandbox/reset: clear stats, tokens and limiter state (optionally clock and faults)."""
    body = await _fields(request, ResetRequest)
    state = request.app[STATE]
    state.reset(clock=body.clock, faults=body.faults)
    return _json({"status": "reset", "clock": state.clock.snapshot()})


async def get_faults(request: web.Request) -> web.Response:
    """GET /_sandbox/faults: the faults in force."""
    await _fields(request, NoFields)
    return _json(request.app[STATE].faults.snapshot())


async def set_faults(request: web.Request) -> web.Response:
    """POST /_sandbox/faults: merge a partial fault settings object."""
    faults = request.app[STATE].faults
    body = await _fields(request, FaultsRequest, base=faults.settings.model_dump())
    faults.update(body.model_dump())
    return _json(faults.snapshot())


async def get_clock(request: web.Request) -> web.Response:
    """GET /_sandbox/clock: simulated now, today, rate and monotonic seconds."""
    await _fields(request, NoFields)
    return _json(request.app[STATE].clock.snapshot())


async def set_clock(request: web.Request) -> web.Response:
    """POST /_sandbox/clock: set ``now`` (ISO 8601), ``rate`` and/or ``advance_s``."""
    state = request.app[STATE]
    clock = state.clock
    earliest = first_instant(state.market.history_start)
    body = await _fields(request, ClockRequest, context=ClockRange(earliest, clock.now()))
    clock.set(now=body.now, rate=body.rate)
    if body.advance_s:
        clock.advance(body.advance_s)
    return _json(clock.snapshot())


async def orders(request: web.Request) -> web.Response:
    """GET /_sandbox/orders: the order ledger."""
    await _fields(request, NoFields)
    return _json({"orders": [order.as_dict() for order in request.app[STATE].orders]})


async def symbols(request: web.Request) -> web.Response:
    """GET /_sandbox/symbols: the symbol master."""
    await _fields(request, NoFields)
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
