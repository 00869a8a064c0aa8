"""Access tokens: one issuance per credential per minute at most, across every gateway instance.

Layers, cheapest first:
1. the process's own copy, reused until ``REFRESH_AHEAD_S`` before its absolute expiry;
2. in-process single-flight: one refresh per credential (limit domain) at a time, the others wait for it;
3. the shared store: the shared copy (with a generation number), read before anything is issued;
4. a lock in the store (Redis ``SET NX PX``) so one instance refreshes, with a re-check after acquiring;
   waiting for another holder is logged as ``redlock.contention`` and counted;
5. a 61 s issuance permit: the brokers refuse a second issuance within a minute;
6. a generation-checked write, so a refresher whose lock expired never overwrites a newer token.

Everything is keyed by the credential's limit domain (``KIS``, ``KIS/<member>``). The
token call takes a slot of that domain's limiter like any other call. ``TokenStore`` is the seam:
``RedisTokenStore`` shares tokens between instances (keys carry a fingerprint of the appkey, never the
key); ``MemoryTokenStore`` keeps them on a ``Clock`` for unit tests. A token the broker rejects is
dropped once (``invalidate``) and replaced by the next ``get``.

The same rules serve any credential a broker issues this way: a second manager with its own store
(``credential="approval_key"``) issues and shares KIS's WebSocket approval key (``websocket``). Its
issuer is anything with ``token_request`` and ``parse_token`` (``TokenIssuer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from redis.exceptions import RedisError

from services.gateway.clock import Clock
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import DispatchError, TokenIssueError, TokenUnavailable
from services.gateway.limiter import DomainLimiter
from services.gateway.metrics import LOCK_CONTENTION, TOKEN_REFRESHES
from services.gateway.pool import provider_of
from services.gateway.providers.base import TokenGrant, UpstreamAnswer, UpstreamRequest
from services.gateway.token_store import ISSUE_PERMIT_S, LOCK_TTL_S, Stored, TokenStore
from services.logs import log_event

logger = logging.getLogger(__name__)

REFRESH_AHEAD_S = 600.0  # refresh ten minutes before expiry, as the brokers' own clients do
POLL_S = 0.1
STALE_RETRY_S = 1.0  # between refresh attempts while a token due for refresh still serves
DEFAULT_CALL_TIMEOUT_S = 10.0  # a token call's bound where none is given (``ProviderSettings.timeout_s``)


class TokenIssuer(Protocol):
    """How a credential is issued: the call, and reading its answer (a provider adapter is one)."""

    def token_request(self) -> UpstreamRequest: ...

    def parse_token(self, answer: UpstreamAnswer) -> TokenGrant: ...


class TokenManager:
    """Hands out valid tokens (or another credential issued by the same rules) per domain."""

    def __init__(
        self,
        adapters: Mapping[str, TokenIssuer],
        dispatcher: Dispatcher,
        store: TokenStore,
        *,
        clock: Clock,
        limiters: dict[str, DomainLimiter] | None = None,
        call_timeout_s: Mapping[str, float] | None = None,
        credential: str = "access_token",
    ) -> None:
        """``call_timeout_s``: the upper bound of a token call by limit domain, the provider's
        ``timeout_s`` as for every upstream call (``DEFAULT_CALL_TIMEOUT_S`` for a domain not named)."""
        self.credential = credential  # what is issued, in log lines
        self._adapters = dict(adapters)
        self._dispatcher = dispatcher
        self._store = store
        self._clock = clock
        self._limiters = limiters or {}
        self._call_timeout_s = dict(call_timeout_s or {})
        self._cache: dict[str, TokenGrant] = {}
        self._flight = {p: asyncio.Lock() for p in adapters}
        # monotonic: no refresh attempt before, while a stale token serves
        self._retry_at: dict[str, float] = {}

    def _fresh(self, grant: TokenGrant | None) -> bool:
        return grant is not None and grant.expires_at_s - self._clock.time() > REFRESH_AHEAD_S

    def _waiting_to_retry(self, domain: str, grant: TokenGrant) -> bool:
        """True while a still-valid token due for refresh is kept until the next refresh attempt."""
        retry_at = self._retry_at.get(domain)
        return (
            retry_at is not None
            and self._clock.monotonic() < retry_at
            and grant.expires_at_s > self._clock.time()
        )

    def cached_valid(self, domain: str) -> bool:
        """True when this process holds a token that is not due for refresh."""
        return self._fresh(self._cache.get(domain))

    async def get(self, domain: str) -> str:
        """A valid access token for ``domain``; raises ``TokenUnavailable``."""
        return (await self.grant(domain)).access_token

    async def grant(self, domain: str) -> TokenGrant:
        """A valid token for ``domain`` with its absolute expiry; raises ``TokenUnavailable``."""
        grant = self._cache.get(domain)
        if grant is not None and (self._fresh(grant) or self._waiting_to_retry(domain, grant)):
            return grant
        async with self._flight[domain]:
            grant = self._cache.get(domain)
            if grant is None or not self._fresh(grant):
                grant = await self._refresh(domain, stale=grant)
                self._cache[domain] = grant
            return grant

    async def invalidate(self, domain: str, access_token: str) -> None:
        """Forget ``access_token`` after the broker rejected it (a newer token is kept)."""
        grant = self._cache.get(domain)
        if grant is not None and grant.access_token == access_token:
            del self._cache[domain]
        with contextlib.suppress(RedisError, OSError):
            await self._store.delete_if(domain, access_token)
        self._event("token.invalidated", domain, logging.WARNING)

    def _event(self, event: str, domain: str, level: int = logging.INFO, **fields: Any) -> None:
        """Log ``event`` about ``domain``'s credential: its provider, domain and what is issued, and
        ``fields``."""
        about = {"provider": provider_of(domain).value, "domain": domain, "credential": self.credential}
        log_event(logger, event, level, **about, **fields)

    async def _refresh(self, domain: str, *, stale: TokenGrant | None) -> TokenGrant:
        try:
            stored = await self._store.load(domain)
            if stored is not None and self._fresh(stored.grant):
                return stored.grant
            lock = await self._store.acquire_lock(domain, LOCK_TTL_S)
            if lock is None:
                if stale is not None and stale.expires_at_s > self._clock.time():
                    return self._keep(domain, stale)  # another instance is refreshing; ours still works
                return await self._wait_for_holder(domain, stale)
            try:
                stored = await self._store.load(domain)  # re-check: the previous holder may have refreshed
                if stored is not None and self._fresh(stored.grant):
                    return stored.grant
                if not await self._store.take_permit(domain, ISSUE_PERMIT_S):
                    return await self._issuance_paused(domain, stale or (stored.grant if stored else None))
                grant = await self._issue(domain)
                try:
                    await self._store.write(domain, Stored(grant, (stored.generation if stored else 0) + 1))
                except (RedisError, OSError) as exc:
                    # The broker issued it and the permit is spent: dropping it would leave this instance
                    # without a token for a minute. Kept here, it serves until it is due for refresh.
                    self._event("token.store_failed", domain, logging.WARNING, error=str(exc))
                return grant
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await self._store.release_lock(lock)
        except (RedisError, OSError) as exc:
            # Without the store no instance can coordinate; a still-valid token is better than none.
            if stale is not None and stale.expires_at_s > self._clock.time():
                return stale
            raise TokenUnavailable(f"{domain} token store unreachable: {exc}", retry_after_s=1.0) from exc

    async def _wait_for_holder(self, domain: str, stale: TokenGrant | None) -> TokenGrant:
        """Another instance is refreshing: wait (bounded) for its token instead of issuing one."""
        started = self._clock.monotonic()
        holder_ttl_ms = round(await self._store.lock_ttl_s(domain) * 1000)
        LOCK_CONTENTION.labels(provider_of(domain).value).inc()
        grant: TokenGrant | None = None
        while self._clock.monotonic() - started < LOCK_TTL_S:
            await self._clock.sleep(POLL_S)
            stored = await self._store.load(domain)
            if stored is not None and self._fresh(stored.grant):
                grant = stored.grant
                break
            if not await self._store.lock_held(domain):
                break  # the holder gave up without a token
        self._event(
            "redlock.contention",
            domain,
            logging.WARNING,
            lock=self._store.lock_name(domain),
            waited_ms=round((self._clock.monotonic() - started) * 1000),
            holder_ttl_ms=holder_ttl_ms,
            got_token=grant is not None,
        )
        if grant is not None:
            return grant
        return await self._issuance_paused(domain, stale)

    def _keep(self, domain: str, stale: TokenGrant) -> TokenGrant:
        """Keep using a token due for refresh that is still valid; try refreshing again in a while."""
        self._retry_at[domain] = self._clock.monotonic() + STALE_RETRY_S
        return stale

    async def _issuance_paused(self, domain: str, stale: TokenGrant | None) -> TokenGrant:
        if stale is not None and stale.expires_at_s > self._clock.time():
            return self._keep(domain, stale)  # inside the refresh window: use it until issuance is allowed
        ttl_s = await self._store.permit_ttl_s(domain)
        raise TokenUnavailable(
            f"{domain} token issuance allowed again in {max(ttl_s, 0) * 1000:.0f} ms",
            retry_after_s=max(ttl_s, 1.0),
        )

    async def _issue(self, domain: str) -> TokenGrant:
        adapter = self._adapters[domain]
        limiter = self._limiters.get(domain)
        slot = await limiter.acquire() if limiter is not None else None  # a token call counts too
        on_sent = (lambda: limiter.sent(slot)) if limiter is not None and slot is not None else None
        try:
            answer = await self._dispatcher.send(
                provider_of(domain),
                adapter.token_request(),
                self._call_timeout_s.get(domain, DEFAULT_CALL_TIMEOUT_S),
                on_sent=on_sent,
            )
        except DispatchError as exc:
            TOKEN_REFRESHES.labels(provider_of(domain).value, "failed").inc()
            if not exc.sent:  # nothing reached the broker, so no issuance was spent
                await self._store.drop_permit(domain)
            raise TokenUnavailable(f"{domain} token endpoint: {exc}", retry_after_s=1.0) from exc
        try:
            try:
                grant = adapter.parse_token(answer)
            except (ValueError, KeyError, TypeError) as exc:
                raise TokenIssueError(f"{domain} token answer unreadable: {exc}") from exc
        except TokenIssueError as exc:
            TOKEN_REFRESHES.labels(provider_of(domain).value, "refused").inc()
            self._event("token.refused", domain, logging.WARNING, code=exc.code, by_rate=exc.refused_by_rate)
            raise
        TOKEN_REFRESHES.labels(provider_of(domain).value, "issued").inc()
        self._event("token.issued", domain, expires_in_s=round(grant.expires_at_s - self._clock.time()))
        return grant
