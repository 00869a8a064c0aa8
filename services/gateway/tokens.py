"""Access tokens: one issuance per credential per minute at most, across every gateway instance.

Layers, cheapest first:
1. the process's own copy, reused until ``REFRESH_AHEAD_S`` before its absolute expiry;
2. in-process single-flight: one refresh per provider at a time, the others wait for it;
3. Redis: the shared copy (a hash with a generation number), read before anything is issued;
4. a Redis lock (``SET NX PX``, a new lock object per acquisition) so one instance refreshes, with a
   re-check after acquiring; waiting for another holder is logged as ``redlock.contention`` and counted;
5. a 61 s issuance permit (``SET NX PX``): the brokers refuse a second issuance within a minute;
6. a generation-checked write, so a refresher whose lock expired never overwrites a newer token.

Keys carry a fingerprint of the appkey, never the key. A token the broker rejects is dropped once
(``invalidate``) and replaced by the next ``get``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from hubclient.models import Provider
from services.gateway.dispatcher import Dispatcher, DispatchError
from services.gateway.metrics import LOCK_CONTENTION, TOKEN_REFRESHES
from services.gateway.providers.base import ProviderAdapter, TokenGrant, TokenIssueError
from services.logs import log_event

logger = logging.getLogger(__name__)

ISSUE_PERMIT_MS = 61_000
LOCK_TTL_MS = 15_000  # longer than one token call may take
REFRESH_AHEAD_S = 600.0  # refresh ten minutes before expiry, as the brokers' own clients do
POLL_S = 0.1

# KEYS[1] = token hash; ARGV = generation, access_token, expires_at_s, ttl_ms. Writes only a newer generation.
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'generation')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'access_token', ARGV[2], 'expires_at_s', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class TokenUnavailable(Exception):
    """No valid token can be had now; ``retry_after_s`` says when trying again makes sense."""

    retriable = True

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class _Stored:
    grant: TokenGrant
    generation: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fresh(grant: TokenGrant | None) -> bool:
    return grant is not None and grant.expires_at_s - time.time() > REFRESH_AHEAD_S


class TokenManager:
    """Hands out valid tokens per provider."""

    def __init__(
        self,
        adapters: dict[Provider, ProviderAdapter],
        dispatcher: Dispatcher,
        redis: Redis,
        *,
        key_prefix: str,
        appkeys: dict[Provider, str],
        before_issue: Callable[[Provider], Awaitable[None]] | None = None,
        call_timeout_s: float = 10.0,
    ) -> None:
        self._adapters = adapters
        self._dispatcher = dispatcher
        self._redis = redis
        self._before_issue = before_issue
        self._call_timeout_s = call_timeout_s
        self._cache: dict[Provider, TokenGrant] = {}
        self._flight = {p: asyncio.Lock() for p in adapters}
        self._write = redis.register_script(_WRITE_IF_NEWER)
        fingerprint = {p: hashlib.sha256(k.encode()).hexdigest()[:16] for p, k in appkeys.items()}
        base = {p: f"{key_prefix}token:{p.value}:{fingerprint.get(p, 'none')}" for p in adapters}
        self._token_key = base
        self._lock_key = {p: f"{k}:lock" for p, k in base.items()}
        self._permit_key = {p: f"{k}:permit" for p, k in base.items()}

    def cached_valid(self, provider: Provider) -> bool:
        """True when this process holds a token that is not due for refresh."""
        return _fresh(self._cache.get(provider))

    async def get(self, provider: Provider) -> str:
        """A valid access token for ``provider``; raises ``TokenUnavailable``."""
        grant = self._cache.get(provider)
        if _fresh(grant):
            assert grant is not None
            return grant.access_token
        async with self._flight[provider]:
            grant = self._cache.get(provider)
            if not _fresh(grant):
                grant = await self._refresh(provider, stale=grant)
                self._cache[provider] = grant
            assert grant is not None
            return grant.access_token

    async def invalidate(self, provider: Provider, access_token: str) -> None:
        """Forget ``access_token`` after the broker rejected it (a newer token is kept)."""
        grant = self._cache.get(provider)
        if grant is not None and grant.access_token == access_token:
            del self._cache[provider]
        with contextlib.suppress(RedisError, OSError):
            stored = await self._load(provider)
            if stored is not None and stored.grant.access_token == access_token:
                await self._redis.delete(self._token_key[provider])
        log_event(logger, "token.invalidated", logging.WARNING, provider=provider.value)

    async def _load(self, provider: Provider) -> _Stored | None:
        raw = await self._redis.hgetall(self._token_key[provider])
        if not raw:
            return None
        doc = {_text(k): _text(v) for k, v in raw.items()}
        return _Stored(TokenGrant(doc["access_token"], float(doc["expires_at_s"])), int(doc["generation"]))

    async def _refresh(self, provider: Provider, *, stale: TokenGrant | None) -> TokenGrant:
        try:
            stored = await self._load(provider)
            if stored is not None and _fresh(stored.grant):
                return stored.grant
            lock = self._redis.lock(self._lock_key[provider], timeout=LOCK_TTL_MS / 1000, blocking=False)
            if not await lock.acquire():
                return await self._wait_for_holder(provider, stale)
            try:
                stored = await self._load(provider)  # re-check: the previous holder may have just refreshed
                if stored is not None and _fresh(stored.grant):
                    return stored.grant
                if not await self._redis.set(self._permit_key[provider], b"1", nx=True, px=ISSUE_PERMIT_MS):
                    return await self._issuance_paused(provider, stale or (stored.grant if stored else None))
                grant = await self._issue(provider)
                await self._store(provider, grant, (stored.generation if stored else 0) + 1)
                return grant
            finally:
                with contextlib.suppress(LockError, RedisError, OSError):
                    await lock.release()
        except (RedisError, OSError) as exc:
            # Without Redis no instance can coordinate; a still-valid token is better than none.
            if stale is not None and stale.expires_at_s > time.time():
                return stale
            raise TokenUnavailable(
                f"{provider.value} token store unreachable: {exc}", retry_after_s=1.0
            ) from exc

    async def _wait_for_holder(self, provider: Provider, stale: TokenGrant | None) -> TokenGrant:
        """Another instance is refreshing: wait (bounded) for its token instead of issuing one."""
        started = time.monotonic()
        holder_ttl_ms = await self._redis.pttl(self._lock_key[provider])
        LOCK_CONTENTION.labels(provider.value).inc()
        grant: TokenGrant | None = None
        while time.monotonic() - started < LOCK_TTL_MS / 1000:
            await asyncio.sleep(POLL_S)
            stored = await self._load(provider)
            if stored is not None and _fresh(stored.grant):
                grant = stored.grant
                break
            if not await self._redis.exists(self._lock_key[provider]):
                break  # the holder gave up without a token
        log_event(
            logger,
            "redlock.contention",
            logging.WARNING,
            lock=self._lock_key[provider],
            provider=provider.value,
            waited_ms=round((time.monotonic() - started) * 1000),
            holder_ttl_ms=holder_ttl_ms,
            got_token=grant is not None,
        )
        if grant is not None:
            return grant
        return await self._issuance_paused(provider, stale)

    async def _issuance_paused(self, provider: Provider, stale: TokenGrant | None) -> TokenGrant:
        if stale is not None and stale.expires_at_s > time.time():
            return stale  # only inside the refresh window: keep using it until issuance is allowed
        ttl_ms = await self._redis.pttl(self._permit_key[provider])
        raise TokenUnavailable(
            f"{provider.value} token issuance allowed again in {max(ttl_ms, 0)} ms",
            retry_after_s=max(ttl_ms, 1000) / 1000,
        )

    async def _store(self, provider: Provider, grant: TokenGrant, generation: int) -> None:
        ttl_ms = int((grant.expires_at_s - time.time()) * 1000)
        if ttl_ms > 0:
            await self._write(
                keys=[self._token_key[provider]],
                args=[generation, grant.access_token, repr(grant.expires_at_s), ttl_ms],
            )

    async def _issue(self, provider: Provider) -> TokenGrant:
        adapter = self._adapters[provider]
        if self._before_issue is not None:
            await self._before_issue(provider)  # the token call counts against the provider's limit too
        try:
            answer = await self._dispatcher.send(provider, adapter.token_request(), self._call_timeout_s)
            grant = adapter.parse_token(answer)
        except TokenIssueError as exc:
            TOKEN_REFRESHES.labels(provider.value, "refused").inc()
            log_event(
                logger,
                "token.refused",
                logging.WARNING,
                provider=provider.value,
                code=exc.code,
                by_rate=exc.refused_by_rate,
            )
            raise TokenUnavailable(str(exc), retry_after_s=ISSUE_PERMIT_MS / 1000) from exc
        except DispatchError as exc:
            TOKEN_REFRESHES.labels(provider.value, "failed").inc()
            if not exc.sent:  # nothing reached the broker, so no issuance was spent
                await self._redis.delete(self._permit_key[provider])
            raise TokenUnavailable(f"{provider.value} token endpoint: {exc}", retry_after_s=1.0) from exc
        TOKEN_REFRESHES.labels(provider.value, "issued").inc()
        log_event(
            logger,
            "token.issued",
            provider=provider.value,
            expires_in_s=round(grant.expires_at_s - time.time()),
        )
        return grant
