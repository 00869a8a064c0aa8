"""HTTP to the brokers: the ``Dispatcher`` seam and its aiohttp implementation.

``Dispatcher`` is the protocol the gateway calls: send one ``UpstreamRequest`` within a timeout, run
``on_sent`` the moment its headers have left, return the ``UpstreamAnswer`` or raise a
``DispatchError`` (``errors``). ``HttpDispatcher`` is the real one, one ``aiohttp.ClientSession`` per
provider and the one place aiohttp errors are caught; ``testing.FakeDispatcher`` answers in memory.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol

import aiohttp
import orjson

from hubclient.models import Provider
from services.gateway.errors import UpstreamNoAnswer, UpstreamUnreachable
from services.gateway.metrics import UPSTREAM_LATENCY, child
from services.gateway.providers.base import UpstreamAnswer, UpstreamRequest
from services.settings import ProviderSettings

logger = logging.getLogger(__name__)

OnSent = Callable[[], Awaitable[None]]


class Dispatcher(Protocol):
    """Sends one HTTP request to a broker."""

    async def send(
        self, provider: Provider, request: UpstreamRequest, timeout_s: float, on_sent: OnSent | None = None
    ) -> UpstreamAnswer: ...


@dataclass(frozen=True)
class _SentHook:
    on_sent: OnSent


async def _leaving(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    """The headers were written, and again when a body chunk was (aiohttp may write a body a loop turn
    after the headers): the limiter keeps the latest of these moments as the send's time."""
    hook = context.trace_request_ctx
    if isinstance(hook, _SentHook):
        await hook.on_sent()


class HttpDispatcher:
    """Sends ``UpstreamRequest``s; start before use, stop to close the sessions."""

    def __init__(self, providers: dict[Provider, ProviderSettings]) -> None:
        self._settings = providers
        self._sessions: dict[Provider, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        """Open one connection-pooled session per provider."""
        for provider, settings in self._settings.items():
            ssl_context: ssl.SSLContext | bool = settings.verify_tls
            if settings.ca_bundle:
                ssl_context = ssl.create_default_context(cafile=settings.ca_bundle)
            # Enough connections for the pace times the slowest call: waiting for one would delay sends.
            limit = max(100, int(settings.rate_per_s * settings.timeout_s * 2))
            connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_context)
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_leaving)
            trace.on_request_chunk_sent.append(_leaving)
            session = aiohttp.ClientSession(
                connector=connector, raise_for_status=False, trace_configs=[trace]
            )
            # aiohttp silently resends an idempotent request once when a reused connection drops. Every
            # arrival counts against the broker's limit, so retries are the gateway's decision alone.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._sessions[provider] = session

    async def stop(self) -> None:
        """Close the sessions."""
        sessions, self._sessions = self._sessions, {}
        await asyncio.gather(*(s.close() for s in sessions.values()))

    async def send(
        self,
        provider: Provider,
        request: UpstreamRequest,
        timeout_s: float,
        on_sent: OnSent | None = None,
    ) -> UpstreamAnswer:
        """Make one HTTP call bounded by ``timeout_s`` seconds; ``on_sent`` runs when its headers left."""
        session = self._sessions.get(provider)
        if session is None:
            raise RuntimeError("HttpDispatcher.start() was not called")
        timeout = aiohttp.ClientTimeout(total=max(timeout_s, 0.001))
        started = time.perf_counter()
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                params=request.query,
                data=orjson.dumps(request.json_body) if request.json_body is not None else None,
                timeout=timeout,
                allow_redirects=False,  # a redirect would be a second, unpaced arrival
                trace_request_ctx=_SentHook(on_sent) if on_sent is not None else None,
            ) as resp:
                raw = await resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(f"{provider} unreachable: {exc.os_error}") from exc
        except TimeoutError as exc:
            raise UpstreamNoAnswer(
                f"{provider} gave no answer within {timeout_s:.3f}s", timed_out=True
            ) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamNoAnswer(f"{provider} gave no answer: {type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamNoAnswer(f"{provider} call failed: {exc}") from exc
        finally:
            child(UPSTREAM_LATENCY, provider.value).observe(time.perf_counter() - started)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        return UpstreamAnswer(status, headers, body)
