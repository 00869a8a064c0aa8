"""One piece's candles through the hub: ``hubclient.paginate`` as ``bulk``, stopped once the piece is covered.

The walk is one ``Retrier`` attempt: a retriable hub error on any page starts the piece's walk again from
its first page (a piece is a few pages), within the task's deadline; a non-retriable error, a runaway walk
(``PagingLimit``) or a row that cannot be read (``MalformedPayload``) gives the task up. Every page
answered counts as one call, those of failed attempts included.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from hubclient import ApiResponse, HubClient, paginate
from hubclient.market import (
    Candle,
    kis_daily_candles,
    kis_minute_candles,
    kiwoom_daily_candles,
    kiwoom_minute_candles,
)
from hubclient.models import Priority, Provider
from services.history.plan import (
    KIS_DAILY,
    KIS_MINUTE_PAST,
    KIS_MINUTE_TODAY,
    KIWOOM_DAILY,
    KIWOOM_MINUTE,
    Piece,
    chart_params,
    covered,
    in_piece,
    max_pages,
)
from services.worker.retry import Retrier


def normalize(tr_id: str, data: Any, symbol: str) -> list[Candle]:
    """The candles of one page of ``tr_id`` (newest first), read by ``hubclient.market``."""
    if tr_id == KIS_MINUTE_TODAY:
        return kis_minute_candles(data, symbol=symbol, tr_id=KIS_MINUTE_TODAY)
    if tr_id == KIS_MINUTE_PAST:
        return kis_minute_candles(data, symbol=symbol, tr_id=KIS_MINUTE_PAST)
    if tr_id == KIS_DAILY:
        return kis_daily_candles(data, symbol=symbol)
    if tr_id == KIWOOM_MINUTE:
        return kiwoom_minute_candles(data, symbol=symbol)
    if tr_id == KIWOOM_DAILY:
        return kiwoom_daily_candles(data, symbol=symbol)
    raise ValueError(f"{tr_id} is not a chart the history-collector reads")


@dataclass(frozen=True, slots=True)
class Fetched:
    """A piece's candles (oldest first, one per start) and the broker calls it took."""

    candles: list[Candle]
    calls: int


async def fetch_piece(
    hub: HubClient,
    retrier: Retrier,
    piece: Piece,
    provider: Provider,
    tr_id: str,
    deadline_s: float,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> Fetched:
    """Fetch ``piece`` with ``tr_id`` until a page covers it; raises ``TaskFailed`` when given up.

    ``deadline_s`` is the task's deadline on the ``monotonic`` clock (seconds).
    """
    params = chart_params(tr_id, piece)
    calls = 0

    async def walk(timeout_s: float) -> list[Candle]:
        nonlocal calls
        found: dict[datetime, Candle] = {}
        pages = cast(  # paginate is an async generator; closing it ends the walk cleanly
            AsyncGenerator[ApiResponse, None],
            paginate(
                hub,
                provider,
                tr_id,
                params,
                timeout=timeout_s,
                max_pages=max_pages(piece),
                max_s=max(timeout_s, deadline_s - monotonic()),
                priority=Priority.BULK,
            ),
        )
        async with aclosing(pages):
            async for page in pages:
                calls += 1
                candles = normalize(tr_id, page.data, piece.symbol)
                for candle in candles:
                    if in_piece(candle, piece):
                        found.setdefault(candle.start, candle)  # pages may overlap; the first one stands
                if covered(candles, piece):
                    break
        return sorted(found.values(), key=lambda candle: candle.start)

    candles = await retrier.call(f"{tr_id} {piece.label()}", deadline_s, walk)
    return Fetched(candles, calls)
