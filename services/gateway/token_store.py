"""Where tokens, the refresh lock and the issuance permit live, shared by every gateway instance.

Everything is keyed by the credential's limit domain (``KIS``, ``KIS/<member>``, see ``pool``).
``RedisTokenStore`` keeps, per appkey, a hash ``<prefix><kind>:<provider>:<fingerprint>`` (the token,
its absolute expiry, a generation number), a lock beside it (``SET NX PX`` with a fresh lock object per
acquisition) and a permit key (``SET NX PX``, 61 s: the brokers refuse a second issuance within a
minute). The fingerprint is a hash of the appkey, never the key; ``kind`` is ``token`` for access tokens and
``approval`` for KIS's WebSocket approval key. ``MemoryTokenStore`` does the same on a ``Clock``, for unit
tests.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from services.gateway.clock import Clock
from services.gateway.pool import provider_of
from services.gateway.providers.base import TokenGrant

ISSUE_PERMIT_S = 61.0
LOCK_TTL_S = 15.0  # longer than one token call may take

# KEYS[1] = token hash; ARGV = generation, access_token, expires_at_s, ttl_ms, issued_at_s. Writes only a
# newer generation.
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'generation')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'access_token', ARGV[2], 'expires_at_s', ARGV[3],
    'issued_at_s', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def fingerprint(appkey: str) -> str:
    """How keys and tools name an appkey: a short hash, never the key."""
    return hashlib.sha256(appkey.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stored:
    """The shared token and its generation."""

    grant: TokenGrant
    generation: int
    issued_at_s: float | None = None  # epoch seconds of the write (tokens written before it was kept: None)


class TokenStore(Protocol):
    """Shared tokens, refresh locks and issuance permits, per domain."""

    def lock_name(self, domain: str) -> str: ...

    async def load(self, domain: str) -> Stored | None: ...

    async def write(self, domain: str, stored: Stored) -> bool: ...

    async def delete_if(self, domain: str, access_token: str) -> None: ...

    async def acquire_lock(self, domain: str, ttl_s: float) -> object | None: ...

    async def release_lock(self, lock: object) -> None: ...

    async def lock_held(self, domain: str) -> bool: ...

    async def lock_ttl_s(self, domain: str) -> float: ...

    async def take_permit(self, domain: str, ttl_s: float) -> bool: ...

    async def permit_ttl_s(self, domain: str) -> float: ...

    async def drop_permit(self, domain: str) -> None: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisTokenStore:
    """The shared store in Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        appkeys: Mapping[str, str],
        clock: Clock,
        kind: str = "token",
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._write_script = redis.register_script(_WRITE_IF_NEWER)
        self._prefix = f"{key_prefix}{kind}"
        self._base = {d: self._key(d, fingerprint(k)) for d, k in appkeys.items()}

    def _key(self, domain: str, fingerprint: str) -> str:
        # by the appkey, not the member's name: one appkey has one token and one issuance a minute
        return f"{self._prefix}:{provider_of(domain).value}:{fingerprint}"

    def _hash(self, domain: str) -> str:
        base = self._base.get(domain)
        return base if base is not None else self._key(domain, "none")

    def lock_name(self, domain: str) -> str:
        """The lock's key (logged in ``redlock.contention``)."""
        return f"{self._hash(domain)}:lock"

    async def load(self, domain: str) -> Stored | None:
        """The shared token, or None."""
        raw = await self._redis.hgetall(self._hash(domain))
        if not raw:
            return None
        doc = {_text(k): _text(v) for k, v in raw.items()}
        issued = doc.get("issued_at_s")
        grant = TokenGrant(doc["access_token"], float(doc["expires_at_s"]))
        return Stored(grant, int(doc["generation"]), float(issued) if issued else None)

    async def write(self, domain: str, stored: Stored) -> bool:
        """Store a token unless a newer generation is there; False when it was not written."""
        ttl_ms = int((stored.grant.expires_at_s - self._clock.time()) * 1000)
        if ttl_ms <= 0:
            return False
        written = await self._write_script(
            keys=[self._hash(domain)],
            args=[
                stored.generation,
                stored.grant.access_token,
                repr(stored.grant.expires_at_s),
                ttl_ms,
                repr(self._clock.time()),
            ],
        )
        return bool(written)

    async def delete_if(self, domain: str, access_token: str) -> None:
        """Drop the shared token if it is still ``access_token``."""
        stored = await self.load(domain)
        if stored is not None and stored.grant.access_token == access_token:
            await self._redis.delete(self._hash(domain))

    async def acquire_lock(self, domain: str, ttl_s: float) -> object | None:
        """The refresh lock, or None while another instance holds it."""
        lock = self._redis.lock(self.lock_name(domain), timeout=ttl_s, blocking=False)
        return lock if await lock.acquire() else None

    async def release_lock(self, lock: object) -> None:
        """Release a lock from ``acquire_lock`` (an expired one is ignored)."""
        assert isinstance(lock, Lock)
        with contextlib.suppress(LockError):
            await lock.release()

    async def lock_held(self, domain: str) -> bool:
        """True while someone holds the refresh lock."""
        return bool(await self._redis.exists(self.lock_name(domain)))

    async def lock_ttl_s(self, domain: str) -> float:
        """Seconds left on the holder's lock (negative when none)."""
        return float(await self._redis.pttl(self.lock_name(domain))) / 1000

    async def take_permit(self, domain: str, ttl_s: float) -> bool:
        """Take the issuance permit for ``ttl_s`` seconds; False while an earlier one runs."""
        return bool(
            await self._redis.set(f"{self._hash(domain)}:permit", b"1", nx=True, px=int(ttl_s * 1000))
        )

    async def permit_ttl_s(self, domain: str) -> float:
        """Seconds until the next issuance is allowed."""
        return float(await self._redis.pttl(f"{self._hash(domain)}:permit")) / 1000

    async def drop_permit(self, domain: str) -> None:
        """Give the permit back (the issuance never reached the broker)."""
        await self._redis.delete(f"{self._hash(domain)}:permit")


class MemoryTokenStore:
    """The same store in memory, expiring on a ``Clock``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.tokens: dict[str, Stored] = {}
        self._locks: dict[str, tuple[object, float]] = {}
        self._permits: dict[str, float] = {}

    def lock_name(self, domain: str) -> str:
        """A name for logs."""
        return f"memory:token:{domain}:lock"

    async def load(self, domain: str) -> Stored | None:
        """The stored token while it has not expired."""
        stored = self.tokens.get(domain)
        if stored is not None and stored.grant.expires_at_s <= self._clock.time():
            return None
        return stored

    async def write(self, domain: str, stored: Stored) -> bool:
        """Store a token unless a newer generation is there."""
        current = self.tokens.get(domain)
        if current is not None and current.generation >= stored.generation:
            return False
        self.tokens[domain] = stored
        return True

    async def delete_if(self, domain: str, access_token: str) -> None:
        """Drop the token if it is still ``access_token``."""
        stored = self.tokens.get(domain)
        if stored is not None and stored.grant.access_token == access_token:
            del self.tokens[domain]

    def _live_until(self, until: float | None) -> bool:
        return until is not None and until > self._clock.monotonic()

    async def acquire_lock(self, domain: str, ttl_s: float) -> object | None:
        """The lock, or None while it is held."""
        held = self._locks.get(domain)
        if held is not None and self._live_until(held[1]):
            return None
        token = (domain, object())
        self._locks[domain] = (token, self._clock.monotonic() + ttl_s)
        return token

    async def release_lock(self, lock: object) -> None:
        """Release it if it is still ours."""
        assert isinstance(lock, tuple)
        domain = lock[0]
        held = self._locks.get(domain)
        if held is not None and held[0] is lock:
            del self._locks[domain]

    async def lock_held(self, domain: str) -> bool:
        """True while the lock is held."""
        held = self._locks.get(domain)
        return held is not None and self._live_until(held[1])

    async def lock_ttl_s(self, domain: str) -> float:
        """Seconds left on the lock."""
        held = self._locks.get(domain)
        return held[1] - self._clock.monotonic() if held and self._live_until(held[1]) else -1.0

    async def take_permit(self, domain: str, ttl_s: float) -> bool:
        """Take the permit unless one is running."""
        if self._live_until(self._permits.get(domain)):
            return False
        self._permits[domain] = self._clock.monotonic() + ttl_s
        return True

    async def permit_ttl_s(self, domain: str) -> float:
        """Seconds until the next permit."""
        until = self._permits.get(domain)
        return until - self._clock.monotonic() if until is not None and self._live_until(until) else -1.0

    async def drop_permit(self, domain: str) -> None:
        """Give the permit back."""
        self._permits.pop(domain, None)
