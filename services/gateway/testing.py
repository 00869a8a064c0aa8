"""In-memory stand-ins for the gateway's seams, for unit tests (as httpx ships ``MockTransport``).

``FakeDispatcher`` answers ``UpstreamRequest``s with a handler function instead of HTTP: it runs the
``on_sent`` hook, records the call with the clock's reading, waits the handler's latency on the same
clock (cut at the timeout, as a real call would be) and returns the handler's answer or raises the
``DispatchError`` it gives. ``FakeKis`` is such a handler: KIS's token endpoint and envelopes, with a
queue of scripted answers for the next calls. ``build_gateway`` wires a whole ``Gateway`` on these fakes,
``MemorySlots``, ``MemoryTokenStore``, ``MemoryRecords`` and one ``ManualClock``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from hubclient.models import Provider
from services.gateway.clock import Clock, ManualClock
from services.gateway.errors import DispatchError, UpstreamNoAnswer
from services.gateway.gateway import Gateway
from services.gateway.idempotency import MemoryRecords
from services.gateway.providers.base import KST, UpstreamAnswer, UpstreamRequest
from services.gateway.providers.kis import KisAdapter
from services.gateway.slots import MemorySlots
from services.gateway.token_store import MemoryTokenStore
from services.settings import KisSettings

Reply = UpstreamAnswer | DispatchError


@dataclass(frozen=True)
class Sent:
    """One call the fake received: when its headers left (clock seconds) and what it was."""

    at_s: float
    provider: Provider
    request: UpstreamRequest


class FakeDispatcher:
    """Answers calls from ``handler(provider, request) -> (answer or error, latency_s)``."""

    def __init__(
        self, handler: Callable[[Provider, UpstreamRequest], tuple[Reply, float]], clock: Clock
    ) -> None:
        self._handler = handler
        self._clock = clock
        self.sent: list[Sent] = []

    async def send(
        self,
        provider: Provider,
        request: UpstreamRequest,
        timeout_s: float,
        on_sent: Callable[[], Any] | None = None,
    ) -> UpstreamAnswer:
        """Run ``on_sent``, record the call, wait its latency (cut at ``timeout_s``), answer or raise."""
        if on_sent is not None:
            await on_sent()
        self.sent.append(Sent(self._clock.monotonic(), provider, request))
        reply, latency_s = self._handler(provider, request)
        await self._clock.sleep(min(latency_s, timeout_s))
        if latency_s > timeout_s:
            raise UpstreamNoAnswer(f"{provider} gave no answer within {timeout_s:.3f}s", timed_out=True)
        if isinstance(reply, DispatchError):
            raise reply
        return reply

    def calls(self, path_part: str = "") -> list[Sent]:
        """Recorded calls whose URL contains ``path_part``."""
        return [s for s in self.sent if path_part in s.request.url]


def kis_envelope(
    msg_cd: str = "MCA00000", *, rt_cd: str = "0", status: int = 200, **extra: Any
) -> UpstreamAnswer:
    """A KIS answer with the usual envelope (``rt_cd``, ``msg_cd``, ``msg1``)."""
    return UpstreamAnswer(status, {}, {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg_cd, **extra})


@dataclass
class FakeKis:
    """A KIS broker in memory: tokens valid a day, ``ok`` envelopes, scripted answers first."""

    clock: Clock
    latency_s: float = 0.002
    script: deque[tuple[Reply, float]] = field(default_factory=deque)
    tokens_issued: int = 0
    expiry_format: str = "%Y-%m-%d %H:%M:%S"  # of access_token_token_expired, as KIS writes it

    def __call__(self, provider: Provider, request: UpstreamRequest) -> tuple[Reply, float]:
        """Answer one call."""
        if request.url.endswith("/oauth2/tokenP"):
            self.tokens_issued += 1
            expires = datetime.fromtimestamp(self.clock.time() + 86_400, KST).strftime(self.expiry_format)
            body = {"access_token": f"token-{self.tokens_issued}", "access_token_token_expired": expires}
            return UpstreamAnswer(200, {}, body), self.latency_s
        if self.script:
            return self.script.popleft()
        return kis_envelope(output={"stck_prpr": "70000"}), self.latency_s

    def then(self, reply: Reply, latency_s: float | None = None) -> FakeKis:
        """Queue an answer for the next non-token call."""
        self.script.append((reply, self.latency_s if latency_s is None else latency_s))
        return self


@dataclass
class Rig:
    """A gateway on fakes, and its parts for assertions."""

    gateway: Gateway
    clock: ManualClock
    broker: FakeKis
    dispatcher: FakeDispatcher
    records: MemoryRecords


def build_gateway(
    *, rate_per_s: float = 20.0, jitter_ms: float = 20.0, timeout_s: float = 10.0, max_backlog: int = 10_000
) -> Rig:
    """A KIS-only gateway on a manual clock, an in-memory broker and in-memory stores."""
    clock = ManualClock()
    broker = FakeKis(clock)
    dispatcher = FakeDispatcher(broker, clock)
    settings = KisSettings(
        base_url="https://kis.invalid",
        appkey=SecretStr("PS" + "k" * 34),
        appsecret=SecretStr("s" * 180),
        rate_per_s=rate_per_s,
        timeout_s=timeout_s,
        arrival_jitter_ms=jitter_ms,
    )
    records = MemoryRecords()
    gateway = Gateway(
        instance_id="gw-test",
        providers={Provider.KIS: settings},
        adapters={Provider.KIS: KisAdapter(settings)},
        dispatcher=dispatcher,
        slots=MemorySlots(clock),
        token_store=MemoryTokenStore(clock),
        idempotency=records,
        clock=clock,
        max_backlog=max_backlog,
    )
    return Rig(gateway, clock, broker, dispatcher, records)
