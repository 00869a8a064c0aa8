"""Shared reads: identical reads share one upstream call, and past sessions' bars come from a cache.

Two idempotent requests are identical when provider, environment, tr_id, params, continuation and the
named credential (if any) are equal (``read_key``). The first becomes the leader; the ones that arrive
while it is served wait for its answer and get a copy of it with their own ``request_id`` and
``shared_with`` set to the leader's. Only answers that came from an upstream call are shared (also a
failed one: every waiter gets the same answer); a leader that ends without a call (expired, refused,
withdrawn) leaves its followers to serve themselves, one of them leading next.

A read taken in after the leader was answered still shares its answer when the read was sent (its
``created_at_ms``) before the leader began: that answer came from a call made after the read was sent,
as fresh as a call of its own would be (a burst read from the log in several fetches, a backlog of the
same read). Such ``ok`` answers are kept ``SETTLED_KEEP_S`` seconds (at most ``SETTLED_ENTRIES``).

Immutable reads (``immutable``: a closed past session's unadjusted bars) answered ``ok`` are also kept
in an LRU cache for ``cache_ttl_s``, and answered from there with the original request's id in
``shared_with`` (its response on the response topic is the audit record of the one upstream call). The
cache holds the answers as their JSON bytes (a page of 120 minute bars is about 22 KB so, four times that
as Python objects), at most ``cache_entries`` of them and ``cache_bytes`` in all.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import orjson

from hubclient.catalog import TrSpec
from hubclient.models import ApiRequest, ApiResponse, Provider, Status
from services.gateway.clock import Clock
from services.gateway.metrics import SHARED_CACHE_BYTES, SHARED_READS, child
from services.gateway.providers.base import KST

#: tr_id -> (the param holding the session date, the param and value meaning unadjusted prices).
IMMUTABLE_READS: dict[tuple[Provider, str], tuple[str, tuple[str, str] | None]] = {
    (Provider.KIS, "FHKST03010230"): ("FID_INPUT_DATE_1", None),  # one past day's minute bars
    (Provider.KIS, "FHKST03010100"): ("FID_INPUT_DATE_2", ("FID_ORG_ADJ_PRC", "1")),  # daily, to a past day
    (Provider.KIWOOM, "ka10081"): ("base_dt", ("upd_stkpc_tp", "0")),  # daily bars up to a past day
}


def read_key(request: ApiRequest, spec: TrSpec, environment: str) -> bytes:
    """What makes two reads identical."""
    return orjson.dumps(
        [
            request.provider.value,
            environment,
            request.credential or "",
            spec.key,
            request.params,
            request.continuation or {},
        ],
        option=orjson.OPT_SORT_KEYS,
    )


def immutable(request: ApiRequest, today: str) -> bool:
    """True for a read of a closed past session's bars, whose answer cannot change (``today``: YYYYMMDD)."""
    rule = IMMUTABLE_READS.get((request.provider, request.tr_id))
    if rule is None:
        return False
    date_param, unadjusted = rule
    day = str(request.params.get(date_param, ""))
    if not (len(day) == 8 and day.isdigit() and day < today):
        return False
    return unadjusted is None or str(request.params.get(unadjusted[0], "")) == unadjusted[1]


def shareable(response: ApiResponse) -> bool:
    """True for an answer that came from an upstream call (whatever it said)."""
    return response.attempts > 0 and response.status is not Status.EXPIRED


#: How long, and how many, answers are kept for identical reads sent before their call and taken in after.
SETTLED_KEEP_S = 1.0
SETTLED_ENTRIES = 4096
#: The immutable answers' JSON the cache may hold (the default of ``GatewaySettings.shared_cache_bytes``).
CACHE_BYTES = 16 * 1024 * 1024


@dataclass
class _Cached:
    value: bytes  # the answer's JSON
    until_s: float  # monotonic


@dataclass
class _Leading:
    future: asyncio.Future[ApiResponse]
    since_ms: float  # epoch ms when the leader began: its upstream call left after this


@dataclass
class _Settled:
    response: ApiResponse
    since_ms: float  # as the leader's
    until_s: float  # monotonic


class SharedReads:
    """Leaders of identical reads in flight, and the cache of immutable answers."""

    def __init__(
        self,
        clock: Clock,
        *,
        cache_entries: int = 1000,
        cache_bytes: int = CACHE_BYTES,
        cache_ttl_s: float = 3600.0,
    ) -> None:
        self._clock = clock
        self._leaders: dict[bytes, _Leading] = {}
        self._settled: OrderedDict[bytes, _Settled] = OrderedDict()
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._cache_entries = cache_entries
        self._cache_bytes = cache_bytes
        self._cache_ttl_s = cache_ttl_s
        self.cached_bytes = 0  # the answers' JSON the cache holds now

    def leader(self, key: bytes) -> asyncio.Future[ApiResponse] | None:
        """The answer-to-be of the identical read being served, if there is one."""
        leading = self._leaders.get(key)
        return leading.future if leading is not None else None

    def lead(self, key: bytes) -> asyncio.Future[ApiResponse]:
        """Become the leader of ``key`` (synchronously: no identical read can slip in between)."""
        future: asyncio.Future[ApiResponse] = asyncio.get_running_loop().create_future()
        self._leaders[key] = _Leading(future, self._clock.time() * 1000)
        return future

    def settle(
        self,
        key: bytes,
        future: asyncio.Future[ApiResponse],
        response: ApiResponse | None,
        request: ApiRequest,
    ) -> None:
        """The leader (``request``) is done: hand its answer to the followers (None: they serve themselves)
        and keep an ``ok`` one made since it began for identical reads sent before that."""
        leading = self._leaders.get(key)
        if leading is not None and leading.future is future:
            del self._leaders[key]
            if response is not None and response.status is Status.OK:
                self._keep(key, response, request, leading.since_ms)
        if future.done():
            return
        if response is None:
            future.cancel()
        else:
            future.set_result(response)

    def settled(self, key: bytes, request: ApiRequest) -> ApiResponse | None:
        """A kept answer of an identical read whose leader began after ``request`` was sent (never the
        request's own: a redelivery is answered from its idempotency record)."""
        now_s = self._clock.monotonic()
        while self._settled and next(iter(self._settled.values())).until_s <= now_s:
            self._settled.popitem(last=False)
        entry = self._settled.get(key)
        if entry is None or request.created_at_ms >= entry.since_ms:
            return None
        if entry.response.request_id == request.request_id:
            return None
        return entry.response

    def _keep(self, key: bytes, response: ApiResponse, request: ApiRequest, since_ms: float) -> None:
        # The answer's making: its total time counts from the request's creation (an idempotency record
        # replayed to a redelivery was made at the first delivery, before this leader began).
        if request.created_at_ms + response.timing.total_ms < since_ms:
            return
        self._settled.pop(key, None)  # kept in order of expiry: the newest goes last
        self._settled[key] = _Settled(response, since_ms, self._clock.monotonic() + SETTLED_KEEP_S)
        while len(self._settled) > SETTLED_ENTRIES:
            self._settled.popitem(last=False)

    def today(self) -> str:
        """The date in Korea, YYYYMMDD (the brokers' sessions are KST)."""
        return datetime.fromtimestamp(self._clock.time(), KST).strftime("%Y%m%d")

    def cached(self, key: bytes) -> ApiResponse | None:
        """A fresh cached answer, if any."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.until_s <= self._clock.monotonic():
            self._forget(key)
            return None
        self._cache.move_to_end(key)
        return ApiResponse.from_json(entry.value)

    def remember(self, key: bytes, request: ApiRequest, response: ApiResponse) -> None:
        """Keep an ``ok`` answer of an immutable read (evicting the least recently used past either
        bound; an answer larger than the whole cache is not kept)."""
        if self._cache_entries <= 0 or response.status is not Status.OK:
            return
        if (request.provider, request.tr_id) not in IMMUTABLE_READS or not immutable(request, self.today()):
            return  # (the date is worked out only for the few reads that could be immutable)
        value = response.to_json()
        self._forget(key)
        if len(value) > self._cache_bytes:
            return
        self._cache[key] = _Cached(value, self._clock.monotonic() + self._cache_ttl_s)
        self._count(len(value))
        while len(self._cache) > self._cache_entries or self.cached_bytes > self._cache_bytes:
            self._forget(next(iter(self._cache)))

    def _forget(self, key: bytes) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._count(-len(entry.value))

    def _count(self, change: int) -> None:
        self.cached_bytes += change
        SHARED_CACHE_BYTES.set(self.cached_bytes)


def shared_copy(request: ApiRequest, original: ApiResponse, *, now_ms: float, kind: str) -> ApiResponse:
    """``original`` as the answer to an identical read (``readdressed``), counted by ``kind``."""
    child(SHARED_READS, request.provider.value, kind).inc()
    return readdressed(request, original, now_ms=now_ms)


def readdressed(request: ApiRequest, original: ApiResponse, *, now_ms: float) -> ApiResponse:
    """``original`` as the answer to ``request``: its own id and timing, the original's in ``shared_with``."""
    total_ms = round(max(0.0, now_ms - request.created_at_ms), 3)
    timing = original.timing.model_copy(update={"queued_ms": 0.0, "upstream_ms": 0.0, "total_ms": total_ms})
    return original.model_copy(
        update={
            "request_id": request.request_id,
            "shared_with": original.shared_with or original.request_id,
            "timing": timing,
            "attempts": 0,
        }
    )
