"""The load generator: reads through the hub at a share of each provider's limit, and its tally.

Open loop: each provider's stream sends at a fixed rate (``share`` of the key's limit in the production
env file: KIS ``RATE_PER_S``, Kiwoom the smaller of ``RATE_PER_S`` and ``QUERY_RATE_PER_S``) whatever the
answers do, cycling through a few quote reads over the feed's symbols, each with ``timeout_s`` as its
deadline and ``normal`` priority. Every request ends in exactly one of: *answered* (``ok``), *refused*
(any other terminal status; the key is ``status:reason``), *timed out* (no terminal response before the
caller's timeout) or *failed to send* (the client raised before or while sending). ``lost`` is derived,
``sent - answered - refused - pending``, so a request the bookkeeping missed shows up as lost too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hubclient import HubClient
from hubclient.errors import HubError, HubTimeout
from hubclient.models import ApiResponse

SYMBOLS = ("005930", "000660", "035420", "035720", "005380")
KIS_READS = ("FHKST01010100", "FHKST01010200")  # price; asking price and expected trade
KIWOOM_READS = ("ka10001", "ka10004")  # basic info; order book
TIMEOUT_S = 10.0
PRIORITY = "normal"
CALLER = "soak-load"


@dataclass(frozen=True)
class Call:
    """One read the generator sends."""

    provider: str
    tr_id: str
    params: dict[str, str]


def reads(provider: str) -> list[Call]:
    """Every (read, symbol) pair of one provider, in the order they are sent."""
    if provider == "KIS":
        return [
            Call("KIS", tr_id, {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol})
            for symbol in SYMBOLS
            for tr_id in KIS_READS
        ]
    return [Call("KIWOOM", tr_id, {"stk_cd": symbol}) for symbol in SYMBOLS for tr_id in KIWOOM_READS]


def rates_per_s(prod_env: Mapping[str, str], share: float) -> dict[str, float]:
    """Requests per second of each stream: ``share`` of the key's read limit in the production env file."""
    kis = float(prod_env.get("APIHUB_KIS__RATE_PER_S") or 20)
    kiwoom = min(
        float(prod_env.get("APIHUB_KIWOOM__RATE_PER_S") or 5),
        float(prod_env.get("APIHUB_KIWOOM__QUERY_RATE_PER_S") or 5),
    )
    return {"KIS": share * kis, "KIWOOM": share * kiwoom}


@dataclass
class ProviderTally:
    """What became of one provider's requests."""

    sent: int = 0
    answered: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    timed_out: int = 0
    send_failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Sent and not ended yet."""
        return (
            self.sent - self.answered - sum(self.refused.values()) - self.timed_out - self.send_failed.total()
        )

    @property
    def lost(self) -> int:
        """Sent, not pending, and neither answered nor refused with a reason."""
        return self.sent - self.answered - sum(self.refused.values()) - self.pending

    def record(self, result: ApiResponse | BaseException, latency_ms: float) -> None:
        """Count one ended request."""
        kind, key = classify(result)
        if kind == "answered":
            self.answered += 1
            self.latencies_ms.append(latency_ms)
        elif kind == "refused":
            self.refused[key] += 1
        elif kind == "timed_out":
            self.timed_out += 1
        else:
            self.send_failed[key] += 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters (latencies summarised, not listed)."""
        return {
            "sent": self.sent,
            "answered": self.answered,
            "refused": dict(self.refused),
            "timed_out": self.timed_out,
            "send_failed": dict(self.send_failed),
            "pending": self.pending,
            "lost": self.lost,
            "latency_ms": percentiles(self.latencies_ms),
        }


def classify(result: ApiResponse | BaseException) -> tuple[str, str]:
    """``(kind, key)`` of an ended request: answered, refused (``status:reason``), timed_out or
    send_failed (the exception's class)."""
    if isinstance(result, ApiResponse):
        if result.ok:
            return "answered", "ok"
        return "refused", f"{result.status.value}:{result.reason or '-'}"
    if isinstance(result, HubTimeout):
        return "timed_out", "timeout"
    return "send_failed", type(result).__name__


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``values`` (nearest rank; empty: {})."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]

    return {"p50": round(rank(0.50), 1), "p99": round(rank(0.99), 1), "max": round(ordered[-1], 1)}


class LoadGenerator:
    """Open-loop streams of reads through one ``HubClient``; ``tally`` by provider."""

    def __init__(self, hub: HubClient, rates: Mapping[str, float], *, timeout_s: float = TIMEOUT_S) -> None:
        self._hub = hub
        self._rates = dict(rates)
        self._timeout_s = timeout_s
        self._inflight: set[asyncio.Task[None]] = set()
        self.tally = {provider: ProviderTally() for provider in self._rates}

    async def warm_up(self) -> int:
        """Each read once, one after the other, before the measured run (the gateway's tokens issued, the
        stand-in's market computed); not in the tally. Returns how many were answered ``ok``."""
        answered = 0
        for provider in self._rates:
            for call in reads(provider):
                with contextlib.suppress(HubError):
                    response = await self._hub.submit(call.provider, call.tr_id, call.params, timeout=30)
                    answered += response.ok
        return answered

    async def run(self, duration_s: float) -> None:
        """Send every stream at its rate for ``duration_s`` seconds (then return; answers may be pending)."""
        await asyncio.gather(*(self._stream(p, r, duration_s) for p, r in self._rates.items() if r > 0))

    async def _stream(self, provider: str, rate_per_s: float, duration_s: float) -> None:
        calls = reads(provider)
        interval_s = 1.0 / rate_per_s
        start = time.monotonic()
        for n in range(int(duration_s * rate_per_s) + 1):  # bounded: one send per slot of the run
            due = start + n * interval_s
            if due - start >= duration_s:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(self._one(calls[n % len(calls)]))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _one(self, call: Call) -> None:
        tally = self.tally[call.provider]
        tally.sent += 1
        started = time.perf_counter()
        result: ApiResponse | BaseException
        try:
            result = await self._hub.submit(
                call.provider, call.tr_id, call.params, timeout=self._timeout_s, priority=PRIORITY
            )
        except (HubError, OSError, RuntimeError) as exc:  # every way a send can end without an answer
            result = exc
        tally.record(result, (time.perf_counter() - started) * 1000)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the pending requests to end (each ends by its own timeout; ``timeout_s`` bounds it)."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout_s)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Counters of every provider, for a sample."""
        return {provider: tally.as_dict() for provider, tally in self.tally.items()}
