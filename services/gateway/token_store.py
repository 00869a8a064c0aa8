"""Where tokens, the refresh lock and the issuance permit live, shared by every gateway instance.

``RedisTokenStore`` keeps, per provider, a hash ``<prefix><kind>:<provider>:<fingerprint>`` (the token,
its absolute expiry, a generation number), a lock beside it (``SET NX PX`` with a fresh lock object per
acquisition) and a permit key (``SET NX PX``, 61 s: the brokers refuse a second issuance within a
minute). The fingerprint is a hash of the appkey, never the key; ``kind`` is ``token`` for access tokens and
``approval`` for KIS's WebSocket approval key. ``MemoryTokenStore`` does the same on a ``Clock``, for unit
tests.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from hubclient.models import Provider
from services.gateway.clock import Clock
from services.gateway.providers.base import TokenGrant

ISSUE_PERMIT_S = 61.0
LOCK_TTL_S = 15.0  # longer than one token call may take

# KEYS[1] = token hash; ARGV = generation, access_token, expires_at_s, ttl_ms. Writes only a newer generation.
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'generation')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'access_token', ARGV[2], 'expires_at_s', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Stored:
    """The shared token and its generation."""

    grant: TokenGrant
    generation: int


class TokenStore(Protocol):
    """Shared tokens, refresh locks and issuance permits, per provider."""

    def lock_name(self, provider: Provider) -> str: ...

    async def load(self, provider: Provider) -> Stored | None: ...

    async def write(self, provider: Provider, stored: Stored) -> bool: ...

    async def delete_if(self, provider: Provider, access_token: str) -> None: ...

    async def acquire_lock(self, provider: Provider, ttl_s: float) -> object | None: ...

    async def release_lock(self, lock: object) -> None: ...

    async def lock_held(self, provider: Provider) -> bool: ...

    async def lock_ttl_s(self, provider: Provider) -> float: ...

    async def take_permit(self, provider: Provider, ttl_s: float) -> bool: ...

    async def permit_ttl_s(self, provider: Provider) -> float: ...

    async def drop_permit(self, provider: Provider) -> None: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisTokenStore:
    """The shared store in Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        appkeys: dict[Provider, str],
        clock: Clock,
        kind: str = "token",
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._write_script = redis.register_script(_WRITE_IF_NEWER)
        fingerprint = {p: hashlib.sha256(k.encode()).hexdigest()[:16] for p, k in appkeys.items()}
        self._base = {p: f"{key_prefix}{kind}:{p.value}:{fingerprint.get(p, 'none')}" for p in Provider}

    def lock_name(self, provider: Provider) -> str:
        """The lock's key (logged in ``redlock.contention``)."""
        return f"{self._base[provider]}:lock"

    async def load(self, provider: Provider) -> Stored | None:
        """The shared token, or None."""
        raw = await self._redis.hgetall(self._base[provider])
        if not raw:
            return None
        doc = {_text(k): _text(v) for k, v in raw.items()}
        return Stored(TokenGrant(doc["access_token"], float(doc["expires_at_s"])), int(doc["generation"]))

    async def write(self, provider: Provider, stored: Stored) -> bool:
        """Store a token unless a newer generation is there; False when it was not written."""
        ttl_ms = int((stored.grant.expires_at_s - self._clock.time()) * 1000)
        if ttl_ms <= 0:
            return False
        written = await self._write_script(
            keys=[self._base[provider]],
            args=[stored.generation, stored.grant.access_token, repr(stored.grant.expires_at_s), ttl_ms],
        )
        return bool(written)

    async def delete_if(self, provider: Provider, access_token: str) -> None:
        """Drop the shared token if it is still ``access_token``."""
        stored = await self.load(provider)
        if stored is not None and stored.grant.access_token == access_token:
            await self._redis.delete(self._base[provider])

    async def acquire_lock(self, provider: Provider, ttl_s: float) -> object | None:
        """The refresh lock, or None while another instance holds it."""
        lock = self._redis.lock(self.lock_name(provider), timeout=ttl_s, blocking=False)
        return lock if await lock.acquire() else None

    async def release_lock(self, lock: object) -> None:
        """Release a lock from ``acquire_lock`` (an expired one is ignored)."""
        assert isinstance(lock, Lock)
        with contextlib.suppress(LockError):
            await lock.release()

    async def lock_held(self, provider: Provider) -> bool:
        """True while someone holds the refresh lock."""
        return bool(await self._redis.exists(self.lock_name(provider)))

    async def lock_ttl_s(self, provider: Provider) -> float:
        """Seconds left on the holder's lock (negative when none)."""
        return float(await self._redis.pttl(self.lock_name(provider))) / 1000

    async def take_permit(self, provider: Provider, ttl_s: float) -> bool:
        """Take the issuance permit for ``ttl_s`` seconds; False while an earlier one runs."""
        return bool(
            await self._redis.set(f"{self._base[provider]}:permit", b"1", nx=True, px=int(ttl_s * 1000))
        )

    async def permit_ttl_s(self, provider: Provider) -> float:
        """Seconds until the next issuance is allowed."""
        return float(await self._redis.pttl(f"{self._base[provider]}:permit")) / 1000

    async def drop_permit(self, provider: Provider) -> None:
        """Give the permit back (the issuance never reached the broker)."""
        await self._redis.delete(f"{self._base[provider]}:permit")


class MemoryTokenStore:
    """The same store in memory, expiring on a ``Clock``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.tokens: dict[Provider, Stored] = {}
        self._locks: dict[Provider, tuple[object, float]] = {}
        self._permits: dict[Provider, float] = {}

    def lock_name(self, provider: Provider) -> str:
        """A name for logs."""
        return f"memory:token:{provider.value}:lock"

    async def load(self, provider: Provider) -> Stored | None:
        """The stored token while it has not expired."""
        stored = self.tokens.get(provider)
        if stored is not None and stored.grant.expires_at_s <= self._clock.time():
            return None
        return stored

    async def write(self, provider: Provider, stored: Stored) -> bool:
        """Store a token unless a newer generation is there."""
        current = self.tokens.get(provider)
        if current is not None and current.generation >= stored.generation:
            return False
        self.tokens[provider] = stored
        return True

    async def delete_if(self, provider: Provider, access_token: str) -> None:
        """Drop the token if it is still ``access_token``."""
        stored = self.tokens.get(provider)
        if stored is not None and stored.grant.access_token == access_token:
            del self.tokens[provider]

    def _live_until(self, until: float | None) -> bool:
        return until is not None and until > self._clock.monotonic()

    async def acquire_lock(self, provider: Provider, ttl_s: float) -> object | None:
        """The lock, or None while it is held."""
        held = self._locks.get(provider)
        if held is not None and self._live_until(held[1]):
            return None
        token = (provider, object())
        self._locks[provider] = (token, self._clock.monotonic() + ttl_s)
        return token

    async def release_lock(self, lock: object) -> None:
        """Release it if it is still ours."""
        assert isinstance(lock, tuple)
        provider = lock[0]
        held = self._locks.get(provider)
        if held is not None and held[0] is lock:
            del self._locks[provider]

    async def lock_held(self, provider: Provider) -> bool:
        """True while the lock is held."""
        held = self._locks.get(provider)
        return held is not None and self._live_until(held[1])

    async def lock_ttl_s(self, provider: Provider) -> float:
        """Seconds left on the lock."""
        held = self._locks.get(provider)
        return held[1] - self._clock.monotonic() if held and self._live_until(held[1]) else -1.0

    async def take_permit(self, provider: Provider, ttl_s: float) -> bool:
        """Take the permit unless one is running."""
        if self._live_until(self._permits.get(provider)):
            return False
        self._permits[provider] = self._clock.monotonic() + ttl_s
        return True

    async def permit_ttl_s(self, provider: Provider) -> float:
        """Seconds until the next permit."""
        until = self._permits.get(provider)
        return until - self._clock.monotonic() if until is not None and self._live_until(until) else -1.0

    async def drop_permit(self, provider: Provider) -> None:
        """Give the permit back."""
        self._permits.pop(provider, None)
