"""Idempotency records: a redelivered request is answered from Redis, not executed again.

Per ``request_id`` one key: ``inflight`` is written right before the first upstream call, the terminal
response replaces it once known. A redelivery (after a crash or a rebalance) that finds a response
republishes it; one that finds only ``inflight`` may run again when the call is idempotent, and is
answered ``unknown_outcome`` when it is not (an order may have reached the broker: reconcile, never
resend). The mark is set only where no record is, and the record found instead is returned, in one script:
two deliveries of one order that both looked up before either marked cannot both send it, the later one
gets the record.

A read's record is kept until the request's deadline and a minute more (``record_ttl_ms``): a read
delivered after its deadline is answered ``expired`` before any lookup, so an older record would never be
read again, while at a key's 20 calls a second records of a few KB kept for days would fill Redis. An
order's record is kept at least a day (orders are few): an order delivered again after its deadline (a
crash, then a long outage) is answered from it, its answer or ``unknown_outcome``, not ``expired``, which
would say it never left.

An order's ``idempotency_key`` names one order across requests (``record_name``): every order of the
same caller to the same provider with that key shares one record, so a retry under a new ``request_id``
(say after a ``HubTimeout``) gets the first one's answer, or ``unknown_outcome`` while that one may be at
the broker, and the order is sent at most once. Reads ignore the key: a read repeated is harmless.

Every record carries its request's ``fingerprint`` (who asks for which call with which parameters). A
delivery whose fingerprint differs is another request under a reused ``request_id`` (or ``idempotency_key``)
and gets none of the record: it would otherwise be handed the first one's answer, another caller's account
data among them. Records an older version wrote carry none and fit any delivery.

``IdempotencyStore`` sends the lookups and writes that requests make in the same turn of the event loop
as one pipeline (one round trip, one socket write): under load hundreds of requests look up and store
their records at once, and a round trip each was a tenth of the gateway's CPU. Each caller still awaits
its own command's reply, so a response is stored before its answer is published, as before.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from hubclient.catalog import TrSpec
from hubclient.models import ApiRequest, ApiResponse
from services.gateway.batching import CommandBatcher
from services.logs import log_event

logger = logging.getLogger(__name__)

INFLIGHT = b"inflight"  # the in-flight mark: ``inflight:<fingerprint>`` (bare from older versions)
RECORD_GRACE_MS = 60_000  # past the deadline: room for the gateways' clocks to differ
MAX_RECORD_MS = 7 * 24 * 3600 * 1000  # a deadline further out keeps its record this long
ORDER_RECORD_MS = 24 * 3600 * 1000  # an order's record: a redelivery or a keyed retry within a day finds it

# Sets the in-flight mark (ARGV: the mark and its milliseconds) unless a record is there: returns that record.
_MARK_INFLIGHT = """
local found = redis.call('GET', KEYS[1])
if not found then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return found
"""

# Deletes the key only while it still says inflight: a stored response is never removed.
_CLEAR_INFLIGHT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def keyed(request: ApiRequest, spec: TrSpec) -> bool:
    """True for an order that names its ``idempotency_key``: its record is the key's."""
    return not spec.idempotent and request.idempotency_key is not None


def record_name(request: ApiRequest, spec: TrSpec) -> str:
    """The record a request's deliveries share: its ``request_id``'s, or for a keyed order the key's
    (scoped by provider and caller: another caller's key of the same spelling is another order)."""
    if not keyed(request, spec):
        return request.request_id
    scope = f"{request.provider.value}\n{request.caller}\n{request.idempotency_key}"
    return "key:" + hashlib.sha256(scope.encode()).hexdigest()


def fingerprint(request: ApiRequest) -> str:
    """What every delivery of one request has and another request lacks: its caller, call, member and
    parameters (its deadline, priority and reply address may change when it is sent again)."""
    what = [
        request.provider.value,
        request.tr_id,
        request.caller,
        request.credential or "",
        request.params,  # admission has refused what orjson cannot write
        request.continuation or {},
    ]
    return hashlib.blake2b(orjson.dumps(what, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()


def record_ttl_ms(request: ApiRequest, spec: TrSpec, now_ms: int) -> int:
    """Milliseconds to keep a request's record: until its deadline plus ``RECORD_GRACE_MS`` (a gateway
    whose clock runs behind may still look it up), at most ``MAX_RECORD_MS``; an order's at least
    ``ORDER_RECORD_MS``, since its redeliveries and keyed retries may come after its deadline."""
    ttl_ms = min(max(request.deadline_ms - now_ms, 0) + RECORD_GRACE_MS, MAX_RECORD_MS)
    return ttl_ms if spec.idempotent else max(ttl_ms, ORDER_RECORD_MS)


@dataclass(frozen=True)
class Record:
    """What a previous delivery of the same request left behind."""

    response: ApiResponse | None  # the stored answer, or None while the call was in flight
    fingerprint: str | None = None  # its request's; None from a version before fingerprints

    def fits(self, request: ApiRequest) -> bool:
        """True when ``request`` is the one this record was written for (a record without a fingerprint
        fits any)."""
        return self.fingerprint is None or self.fingerprint == fingerprint(request)


class Records(Protocol):
    """Where idempotency records live (``IdempotencyStore`` in Redis, ``MemoryRecords`` in tests), each
    under its ``record_name`` and with its request's ``fingerprint``."""

    async def lookup(self, name: str) -> Record | None: ...

    async def mark_inflight(self, name: str, ttl_ms: int, fingerprint: str) -> Record | None: ...

    async def clear_inflight(self, name: str, fingerprint: str) -> None: ...

    async def store(self, name: str, response: ApiResponse, ttl_ms: int, fingerprint: str) -> None: ...


class MemoryRecords:
    """The records in a dict (no expiry; each one's asked lifetime in ``ttls_ms``, its fingerprint in
    ``fingerprints``): for unit tests."""

    def __init__(self) -> None:
        self.records: dict[str, ApiResponse | None] = {}
        self.fingerprints: dict[str, str | None] = {}
        self.ttls_ms: dict[str, int] = {}

    async def lookup(self, name: str) -> Record | None:
        """The record of an earlier delivery, or None."""
        if name not in self.records:
            return None
        return Record(self.records[name], self.fingerprints.get(name))

    async def mark_inflight(self, name: str, ttl_ms: int, fingerprint: str) -> Record | None:
        """Note an upstream call unless a record is there already: that record, or None once marked."""
        if name in self.records:
            return Record(self.records[name], self.fingerprints.get(name))
        self.records[name] = None
        self.fingerprints[name] = fingerprint
        self.ttls_ms[name] = ttl_ms
        return None

    async def clear_inflight(self, name: str, fingerprint: str) -> None:
        """Drop this request's ``inflight`` mark."""
        if self.records.get(name, False) is None and self.fingerprints.get(name) == fingerprint:
            del self.records[name]

    async def store(self, name: str, response: ApiResponse, ttl_ms: int, fingerprint: str) -> None:
        """Keep the terminal response."""
        self.records[name] = response
        self.fingerprints[name] = fingerprint
        self.ttls_ms[name] = ttl_ms


class IdempotencyStore:
    """Reads and writes the records under ``<prefix>idem:<record name>``, batched per turn of the loop: a
    mark is ``inflight:<fingerprint>``, an answer ``<fingerprint>`` and a line break before its JSON."""

    def __init__(self, redis: Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}idem:"
        self._clear = redis.register_script(_CLEAR_INFLIGHT)
        self._batches = CommandBatcher(redis)

    async def lookup(self, name: str) -> Record | None:
        """The record of an earlier delivery, or None for a request seen for the first time."""
        return _record(await self._batches.run(("GET", self._prefix + name)))

    async def mark_inflight(self, name: str, ttl_ms: int, fingerprint: str) -> Record | None:
        """Note that an upstream call is about to be made, unless a record is there already (another
        delivery's mark or answer, kept as it is): that record, or None when this call's mark was set."""
        command = ("EVAL", _MARK_INFLIGHT, 1, self._prefix + name, _mark(fingerprint), ttl_ms)
        return _record(await self._batches.run(command))

    async def clear_inflight(self, name: str, fingerprint: str) -> None:
        """Drop this request's ``inflight`` mark after the broker refused the call unexecuted (throttle,
        never sent)."""
        await self._clear(keys=[self._prefix + name], args=[_mark(fingerprint)])

    async def store(self, name: str, response: ApiResponse, ttl_ms: int, fingerprint: str) -> None:
        """Keep the terminal response for redeliveries, ``ttl_ms`` long (``record_ttl_ms``)."""
        value = fingerprint.encode() + b"\n" + response.to_json()
        await self._batches.run(("SET", self._prefix + name, value, "PX", ttl_ms))


def _mark(fingerprint: str) -> bytes:
    return INFLIGHT + b":" + fingerprint.encode()


def _record(raw: bytes | None) -> Record | None:
    """The record a key's value stands for (None: no key). A stored answer that no longer reads as one (a
    version with another response schema wrote it, during a rollout) stands for an earlier delivery whose
    answer is unknown, as an in-flight mark does: a read is served again, an order is ``unknown_outcome``,
    never sent twice; before, every redelivery of it ended ``internal_error``. A bare mark or answer (an
    older version's) has no fingerprint."""
    if raw is None:
        return None
    if raw == INFLIGHT:
        return Record(None)
    if raw.startswith(INFLIGHT + b":"):
        return Record(None, raw[len(INFLIGHT) + 1 :].decode("ascii", "replace"))
    found, body = None, raw
    if not raw.startswith(b"{"):
        printed, _, body = raw.partition(b"\n")
        found = printed.decode("ascii", "replace")
    try:
        return Record(ApiResponse.from_json(body), found)
    except (ValidationError, ValueError) as exc:
        log_event(
            logger, "idempotency.record_unreadable", logging.WARNING, bytes=len(raw), error=str(exc)[:200]
        )
        return Record(None, found)
