"""Reading the services' ``/metrics`` pages over HTTP: the one seam where aiohttp's errors are caught.

Each page is fetched with its own bound (``timeout_s``), all of a round at once, so one service that hangs
delays a frame by at most the bound and never hides the others. Whatever goes wrong becomes a ``Scrape``
with a short reason ("connection refused", "no answer within 2 s", "HTTP 503", "not a metrics page: ...")
instead of an exception: a service that is down is shown as down.
"""

from __future__ import annotations

import asyncio
import errno
import time

import aiohttp

from services.status.samples import Metrics, MetricsFormatError
from services.status.targets import Endpoint
from services.status.view import Scrape


def _reason(exc: BaseException, timeout_s: float) -> str:
    """A short, secret-free reason for a failed scrape."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return exc.os_error.strerror or type(exc.os_error).__name__
    if isinstance(exc, MetricsFormatError):
        return f"not a metrics page: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def scrape(session: aiohttp.ClientSession, endpoint: Endpoint, timeout_s: float) -> Scrape:
    """One service's page, read within ``timeout_s`` seconds, or the reason it could not be."""
    try:
        async with asyncio.timeout(timeout_s), session.get(f"{endpoint.url}/metrics") as resp:
            if resp.status != 200:
                return Scrape(endpoint, time.monotonic(), error=f"HTTP {resp.status}")
            text = await resp.text()
        return Scrape(endpoint, time.monotonic(), metrics=Metrics.parse(text))
    except (aiohttp.ClientError, OSError, TimeoutError, MetricsFormatError, UnicodeDecodeError) as exc:
        return Scrape(endpoint, time.monotonic(), error=_reason(exc, timeout_s))


async def scrape_round(
    session: aiohttp.ClientSession, endpoints: tuple[Endpoint, ...], timeout_s: float
) -> dict[str, Scrape]:
    """Every service's page at once, by endpoint name."""
    scrapes = await asyncio.gather(*(scrape(session, e, timeout_s) for e in endpoints))
    return {s.endpoint.name: s for s in scrapes}
