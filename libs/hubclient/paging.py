"""``paginate``: every page of a paged broker call, following ``ApiResponse.continuation``.

    async for page in paginate(hub, "KIWOOM", "ka10080", {"stk_cd": "005930", ...}, timeout=5):
        candles.extend(kiwoom_minute_candles(page.data))

The gateway turns each broker's paging (KIS ``tr_cont`` and time/date cursors, Kiwoom ``cont-yn`` /
``next-key``) into ``ApiResponse.continuation``; this sends the same call again with that continuation
until a page comes back without one. It yields whole ``ApiResponse`` pages rather than their data, so a
caller keeps each page's continuation (to resume after an error) and its timing.

Two bounds keep a runaway pager from spending the broker's budget: ``max_pages`` pages and ``max_s``
seconds in total. Hitting either while the broker still offers a page raises ``PagingLimit``, which carries
how many pages were delivered and the continuation to resume from. Any other ``HubError`` of a page is
raised as it is, after the pages before it were yielded.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

from hubclient.client import HubClient
from hubclient.errors import HubTimeout, InvalidRequest, PagingLimit
from hubclient.models import ApiResponse, Priority, Provider

#: Default bound on the number of pages of one ``paginate`` call.
DEFAULT_MAX_PAGES = 100
#: Default bound on the total time of one ``paginate`` call, in seconds.
DEFAULT_MAX_S = 120.0


async def paginate(
    hub: HubClient,
    provider: Provider | str,
    tr_id: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_s: float = DEFAULT_MAX_S,
    priority: Priority | str = Priority.NORMAL,
    credential: str | None = None,
) -> AsyncIterator[ApiResponse]:
    """Yield the ``ok`` pages of ``tr_id`` in the broker's order, first page first.

    ``timeout`` is each page's timeout in seconds (as in ``HubClient.execute``); ``max_s`` bounds the
    whole walk in seconds of wall time from the first request, including the time the caller spends
    between pages, and no page is given longer than what is left of it. ``max_pages`` bounds the number of
    requests. ``params`` are sent unchanged with every page; ``credential`` keeps every page on the same
    pool member (a KIS account's ``tr_cont`` keys are only valid there).

    Raises ``PagingLimit`` when a bound is hit with pages left (a last page that arrives inside the bounds
    ends the walk normally), ``InvalidRequest`` for a bound that is not positive (NaN included) or an
    infinite ``max_s``, and any ``HubError`` of ``execute`` unchanged.
    """
    if not max_pages >= 1:  # so NaN is refused too: it compares False with every bound
        raise InvalidRequest("max_pages must be at least 1")
    if not 0 < max_s < math.inf:
        raise InvalidRequest("max_s must be a positive, finite number of seconds")
    started = time.monotonic()
    continuation: dict[str, str] | None = None
    last: ApiResponse | None = None
    pages = 0
    while True:
        remaining_s = max_s - (time.monotonic() - started)
        if pages >= max_pages or remaining_s <= 0:
            raise PagingLimit(
                "max_pages" if pages >= max_pages else "max_s",
                pages=pages,
                elapsed_s=time.monotonic() - started,
                continuation=continuation,
                response=last,
            )
        page_timeout = min(timeout, remaining_s)
        try:
            response = await hub.execute(
                provider,
                tr_id,
                params,
                timeout=page_timeout,
                priority=priority,
                continuation=continuation,
                credential=credential,
            )
        except HubTimeout as exc:
            if page_timeout >= timeout:
                raise  # the page's own timeout, not the walk's
            raise PagingLimit(
                "max_s",
                pages=pages,
                elapsed_s=time.monotonic() - started,
                continuation=continuation,
                response=last,
            ) from exc
        pages += 1
        last = response
        yield response
        if not response.continuation:
            return
        continuation = dict(response.continuation)
