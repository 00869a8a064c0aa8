"""Access tokens: reused until shortly before their absolute expiry, shared through Redis.

A token lives in Redis under a key derived from a fingerprint of the appkey (never the key itself), so
every gateway instance and restart reuses it. Issuance is guarded by a 61 s permit key (``SET NX PX``):
the brokers allow one issuance per minute per appkey, and a second attempt only earns EGW00133. Inside
one process, concurrent callers share one refresh (single-flight).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import orjson
from redis.asyncio import Redis

from hubclient.models import Provider
from services.gateway.dispatcher import Dispatcher, DispatchError
from services.gateway.metrics import TOKEN_REFRESHES
from services.gateway.providers.base import ProviderAdapter, TokenGrant, TokenIssueError
from services.logs import log_event

logger = logging.getLogger(__name__)

ISSUE_PERMIT_MS = 61_000
REFRESH_AHEAD_S = 600.0  # refresh ten minutes before expiry, as the brokers' own clients do
WAIT_FOR_PEER_S = 10.0  # how long to wait for another instance's fresh token when it holds the permit


class TokenUnavailable(Exception):
    """No valid token could be had now; ``retry_after_s`` says when trying again makes sense."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
        call_timeout_s: float = 10.0,
    ) -> None:
        self._adapters = adapters
        self._dispatcher = dispatcher
        self._redis = redis
        self._call_timeout_s = call_timeout_s
        self._cache: dict[Provider, TokenGrant] = {}
        self._locks = {p: asyncio.Lock() for p in adapters}
        fp = {p: hashlib.sha256(k.encode()).hexdigest()[:16] for p, k in appkeys.items()}
        self._token_key = {p: f"{key_prefix}token:{p.value}:{fp.get(p, 'none')}" for p in adapters}
        self._permit_key = {p: f"{key_prefix}token-permit:{p.value}:{fp.get(p, 'none')}" for p in adapters}

    def cached_valid(self, provider: Provider) -> bool:
        """True when this process holds a token that is not due for refresh."""
        grant = self._cache.get(provider)
        return grant is not None and grant.expires_at_s - time.time() > REFRESH_AHEAD_S

    async def get(self, provider: Provider) -> str:
        """A valid access token for ``provider``; raises ``TokenUnavailable``."""
        grant = self._cache.get(provider)
        if grant is not None and grant.expires_at_s - time.time() > REFRESH_AHEAD_S:
            return grant.access_token
        async with self._locks[provider]:
            grant = self._cache.get(provider)
            if grant is not None and grant.expires_at_s - time.time() > REFRESH_AHEAD_S:
                return grant.access_token
            grant = await self._refresh(provider)
            self._cache[provider] = grant
            return grant.access_token

    async def invalidate(self, provider: Provider, access_token: str) -> None:
        """Forget ``access_token`` after the broker rejected it (a newer one is kept)."""
        grant = self._cache.get(provider)
        if grant is not None and grant.access_token == access_token:
            del self._cache[provider]
        stored = await self._load(provider)
        if stored is not None and stored.access_token == access_token:
            await self._redis.delete(self._token_key[provider])

    async def _load(self, provider: Provider) -> TokenGrant | None:
        raw = await self._redis.get(self._token_key[provider])
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return TokenGrant(str(doc["access_token"]), float(doc["expires_at_s"]))

    async def _refresh(self, provider: Provider) -> TokenGrant:
        stored = await self._load(provider)
        if stored is not None and stored.expires_at_s - time.time() > REFRESH_AHEAD_S:
            return stored
        if not await self._redis.set(self._permit_key[provider], b"1", nx=True, px=ISSUE_PERMIT_MS):
            return await self._wait_for_peer(provider, stored)
        grant = await self._issue(provider)
        ttl_ms = int((grant.expires_at_s - time.time()) * 1000)
        if ttl_ms > 0:
            value = orjson.dumps({"access_token": grant.access_token, "expires_at_s": grant.expires_at_s})
            await self._redis.set(self._token_key[provider], value, px=ttl_ms)
        return grant

    async def _wait_for_peer(self, provider: Provider, stale: TokenGrant | None) -> TokenGrant:
        """Another instance holds the issuance permit: use its token once it appears."""
        deadline = time.monotonic() + WAIT_FOR_PEER_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            stored = await self._load(provider)
            if stored is not None and (stale is None or stored.access_token != stale.access_token):
                return stored
        if stale is not None and stale.expires_at_s > time.time():
            return stale  # still valid, only inside the refresh window
        ttl_ms = await self._redis.pttl(self._permit_key[provider])
        raise TokenUnavailable(f"{provider} token issuance is paused", retry_after_s=max(ttl_ms, 1000) / 1000)

    async def _issue(self, provider: Provider) -> TokenGrant:
        adapter = self._adapters[provider]
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
            # Otherwise the permit stays: the broker may have issued, and a retry now earns EGW00133.
            raise TokenUnavailable(
                f"{provider} token endpoint: {exc}", retry_after_s=ISSUE_PERMIT_MS / 1000
            ) from exc
        TOKEN_REFRESHES.labels(provider.value, "issued").inc()
        log_event(
            logger,
            "token.issued",
            provider=provider.value,
            expires_in_s=round(grant.expires_at_s - time.time()),
        )
        return grant
