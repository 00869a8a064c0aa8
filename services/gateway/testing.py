"""In-memory stand-ins for the gateway's seams, for unit tests (as httpx ships ``MockTransport``).

``FakeDispatcher`` answers ``UpstreamRequest``s with a handler function instead of HTTP: it runs the
``on_sent`` hook, records the call with the clock's reading, waits the handler's latency on the same
clock (cut at the timeout, as a real call would be) and returns the handler's answer or raises the
``DispatchError`` it gives. ``FakeKis`` and ``FakeKiwoom`` are such handlers: the brokers' token
endpoints (and KIS's approval key) and envelopes, with a queue of scripted answers for the next calls.
``build_gateway`` wires a whole ``Gateway`` on these fakes, ``MemorySlots``, ``MemoryTokenStore``,
``MemoryRecords`` and one ``ManualClock``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import SecretStr

from hubclient.models import Provider
from services.gateway.clock import Clock, ManualClock
from services.gateway.errors import DispatchError, UpstreamNoAnswer
from services.gateway.gateway import Gateway
from services.gateway.idempotency import MemoryRecords
from services.gateway.permissions import Permissions
from services.gateway.providers.base import KST, UpstreamAnswer, UpstreamRequest
from services.gateway.slots import MemorySlots, SlotStore
from services.gateway.token_store import MemoryTokenStore
from services.settings import CredentialSettings, KisSettings, KiwoomSettings, ProviderSettings

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
class FakeBroker:
    """Scripted answers first (optionally for calls whose URL contains a path part), then defaults."""

    clock: Clock
    latency_s: float = 0.002
    script: deque[tuple[str, Reply, float]] = field(default_factory=deque)
    tokens_issued: int = 0

    def scripted(self, request: UpstreamRequest, *, named_only: bool = False) -> tuple[Reply, float] | None:
        """The first queued answer meant for this call (``named_only``: queued with a matching path)."""
        for item in self.script:
            path, reply, latency_s = item
            if path in request.url and (path or not named_only):
                self.script.remove(item)
                return reply, latency_s
        return None

    def then(self, reply: Reply, latency_s: float | None = None, *, path: str = "") -> Self:
        """Queue an answer for the next non-token call (whose URL contains ``path``)."""
        self.script.append((path, reply, self.latency_s if latency_s is None else latency_s))
        return self


@dataclass
class FakeKis(FakeBroker):
    """A KIS broker in memory: tokens valid a day, approval keys, ``ok`` envelopes, scripted answers first."""

    approvals_issued: int = 0
    expiry_format: str = "%Y-%m-%d %H:%M:%S"  # of access_token_token_expired, as KIS writes it
    refused_appkeys: set[str] = field(default_factory=set)  # token calls with these keys are refused

    def __call__(self, provider: Provider, request: UpstreamRequest) -> tuple[Reply, float]:
        """Answer one call."""
        if request.url.endswith("/oauth2/tokenP"):
            if (request.json_body or {}).get("appkey") in self.refused_appkeys:
                body = {"error_code": "EGW00103", "error_description": "유효하지 않은 AppKey입니다."}
                return UpstreamAnswer(403, {}, body), self.latency_s
            self.tokens_issued += 1
            expires = datetime.fromtimestamp(self.clock.time() + 86_400, KST).strftime(self.expiry_format)
            body = {"access_token": f"token-{self.tokens_issued}", "access_token_token_expired": expires}
            return UpstreamAnswer(200, {}, body), self.latency_s
        if request.url.endswith("/oauth2/Approval"):
            scripted = self.scripted(request, named_only=True)  # then(..., path="/oauth2/Approval")
            if scripted is not None:
                return scripted
            self.approvals_issued += 1
            body = {"approval_key": f"approval-{self.approvals_issued}"}
            return UpstreamAnswer(200, {}, body), self.latency_s
        return self.scripted(request) or (kis_envelope(output={"stck_prpr": "70000"}), self.latency_s)


def kiwoom_envelope(
    code: int = 0, message: str = "정상적으로 처리되었습니다", *, status: int = 200, **extra: Any
) -> UpstreamAnswer:
    """A Kiwoom answer: ``return_code`` and ``return_msg`` (a detail code goes in brackets in the message)."""
    return UpstreamAnswer(status, {}, {"return_code": code, "return_msg": message, **extra})


@dataclass
class FakeKiwoom(FakeBroker):
    """A Kiwoom broker in memory: day-long tokens (``expires_dt`` in KST), ``ok`` answers, scripts first."""

    def __call__(self, provider: Provider, request: UpstreamRequest) -> tuple[Reply, float]:
        """Answer one call."""
        if request.url.endswith("/oauth2/token"):
            self.tokens_issued += 1
            expires = datetime.fromtimestamp(self.clock.time() + 86_400, KST).strftime("%Y%m%d%H%M%S")
            token = f"kw-token-{self.tokens_issued}"
            answer = kiwoom_envelope(expires_dt=expires, token_type="bearer", token=token)  # noqa: S106
            return answer, self.latency_s
        return self.scripted(request) or (kiwoom_envelope(ord_no="0000001"), self.latency_s)


@dataclass
class Rig:
    """A gateway on fakes, and its parts for assertions."""

    gateway: Gateway
    clock: ManualClock
    broker: FakeKis
    kiwoom: FakeKiwoom
    dispatcher: FakeDispatcher
    records: MemoryRecords


def build_gateway(
    *,
    rate_per_s: float = 20.0,
    jitter_ms: float = 20.0,
    timeout_s: float = 10.0,
    max_backlog: int = 10_000,
    ledger_rate_per_s: float = 10.0,
    environment: Literal["real", "mock"] = "real",
    kiwoom: KiwoomSettings | None = None,
    credentials: list[CredentialSettings] | None = None,
    shared_cache_entries: int = 1000,
    slots: Callable[[ManualClock], SlotStore] = MemorySlots,
    permissions: Permissions | None = None,
) -> Rig:
    """A gateway on a manual clock, in-memory brokers and in-memory stores: KIS (with the pool members
    ``credentials`` besides its own key), and Kiwoom when its settings are given (base URL, keys and jitter
    are filled in)."""
    clock = ManualClock()
    kis_broker, kiwoom_broker = FakeKis(clock), FakeKiwoom(clock)

    def handler(provider: Provider, request: UpstreamRequest) -> tuple[Reply, float]:
        return (kis_broker if provider is Provider.KIS else kiwoom_broker)(provider, request)

    dispatcher = FakeDispatcher(handler, clock)
    settings = KisSettings(
        base_url="https://kis.invalid",
        environment=environment,
        appkey=SecretStr("PS" + "k" * 34),
        appsecret=SecretStr("s" * 180),
        rate_per_s=rate_per_s,
        ledger_rate_per_s=ledger_rate_per_s,
        timeout_s=timeout_s,
        arrival_jitter_ms=jitter_ms,
        credentials=credentials or [],
    )
    providers: dict[Provider, ProviderSettings] = {Provider.KIS: settings}
    if kiwoom is not None:
        kiwoom = kiwoom.model_copy(
            update={
                "base_url": "https://kiwoom.invalid",
                "environment": environment,
                "appkey": SecretStr("w" * 36),
                "secretkey": SecretStr("x" * 40),
                "arrival_jitter_ms": jitter_ms,
            }
        )
        providers[Provider.KIWOOM] = kiwoom
    records = MemoryRecords()
    gateway = Gateway(
        instance_id="gw-test",
        providers=providers,
        dispatcher=dispatcher,
        slots=slots(clock),
        token_store=MemoryTokenStore(clock),
        approval_store=MemoryTokenStore(clock),
        idempotency=records,
        clock=clock,
        max_backlog=max_backlog,
        shared_cache_entries=shared_cache_entries,
        permissions=permissions,
    )
    return Rig(gateway, clock, kis_broker, kiwoom_broker, dispatcher, records)
