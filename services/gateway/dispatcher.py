"""HTTP to the brokers: the ``Dispatcher`` seam and its HTTP/1.1 implementation.

``Dispatcher`` is the protocol the gateway calls: send one ``UpstreamRequest`` within a timeout, run
``on_sent`` the moment the request has left, return the ``UpstreamAnswer`` or raise a ``DispatchError``
(``errors``). ``HttpDispatcher`` is the real one, one ``http1.Http1Pool`` per provider and the one place
its errors are translated; ``testing.FakeDispatcher`` answers in memory.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson

from hubclient.models import Provider
from services.gateway.errors import UpstreamNoAnswer, UpstreamUnreachable
from services.gateway.http1 import ConnectFailed, Http1Pool, ResponseBroken, Unsendable
from services.gateway.metrics import UPSTREAM_LATENCY, child
from services.gateway.providers.base import UpstreamAnswer, UpstreamRequest
from services.settings import ProviderSettings, SettingsInvalid

OnSent = Callable[[], Awaitable[None]]


class Dispatcher(Protocol):
    """Sends one HTTP request to a broker."""

    async def send(
        self, provider: Provider, request: UpstreamRequest, timeout_s: float, on_sent: OnSent | None = None
    ) -> UpstreamAnswer: ...


class HttpDispatcher:
    """Sends ``UpstreamRequest``s; start before use, stop to close the idle connections."""

    def __init__(self, providers: dict[Provider, ProviderSettings]) -> None:
        self._settings = providers
        self._pools: dict[Provider, Http1Pool] = {}

    async def start(self) -> None:
        """Make one connection pool per provider."""
        for provider, settings in self._settings.items():
            # Enough connections for the whole pool's pace times the slowest call: waiting for one would
            # delay sends.
            rate_per_s = sum(member.rate_per_s for member in settings.pool().values())
            limit = max(100, int(rate_per_s * settings.timeout_s * 2))
            self._pools[provider] = Http1Pool(limit, _ssl_context(settings))

    def connection_limit(self, provider: Provider) -> int:
        """The most connections open at once to ``provider`` (after ``start``)."""
        return self._pools[provider].limit

    async def stop(self) -> None:
        """Close the pools' idle connections."""
        pools, self._pools = self._pools, {}
        await asyncio.gather(*(p.close() for p in pools.values()))

    async def send(
        self,
        provider: Provider,
        request: UpstreamRequest,
        timeout_s: float,
        on_sent: OnSent | None = None,
    ) -> UpstreamAnswer:
        """Make one HTTP call bounded by ``timeout_s`` seconds; ``on_sent`` runs when it has left."""
        pool = self._pools.get(provider)
        if pool is None:
            raise RuntimeError("HttpDispatcher.start() was not called")
        body = orjson.dumps(request.json_body) if request.json_body is not None else None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(max(timeout_s, 0.001)):
                answer = await pool.request(
                    request.method,
                    request.url,
                    request.headers,
                    query=request.query,
                    body=body,
                    on_written=on_sent,
                )
        except (ConnectFailed, Unsendable) as exc:
            raise UpstreamUnreachable(f"{provider} unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise UpstreamNoAnswer(
                f"{provider} gave no answer within {timeout_s:.3f}s", timed_out=True
            ) from exc
        except ResponseBroken as exc:
            raise UpstreamNoAnswer(f"{provider} gave no answer: {exc}") from exc
        finally:
            child(UPSTREAM_LATENCY, provider.value).observe(time.perf_counter() - started)
        try:
            parsed = orjson.loads(answer.body) if answer.body else None
        except orjson.JSONDecodeError:
            parsed = None
        return UpstreamAnswer(answer.status, answer.headers, parsed)


def ca_bundle_context(variable: str, path: str) -> ssl.SSLContext:
    """TLS verified against the CA bundle at ``path``; ``SettingsInvalid`` naming ``variable`` for a file
    that cannot be read or holds no certificate."""
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise SettingsInvalid(
            [(variable, f"{path} holds no usable PEM certificate ({exc.reason or exc})")]
        ) from None
    except OSError as exc:
        raise SettingsInvalid.unreadable(variable, path, exc) from None


def _ssl_context(settings: ProviderSettings) -> ssl.SSLContext:
    """TLS as the provider's settings say: a private CA bundle, the system's, or no verification;
    ``SettingsInvalid`` for a bundle that cannot be read or holds no certificate."""
    if settings.ca_bundle:
        return ca_bundle_context(f"{settings.env_group}__CA_BUNDLE", settings.ca_bundle)
    context = ssl.create_default_context()
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
