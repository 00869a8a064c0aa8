"""The fault suite's load driver: several ``HubClient`` callers at a share of a key's rate, bounded in time.

Every scenario (and the Kafka cluster's) runs its fault while ``drive`` sends: reads and, every
``order_every``-th request, a non-idempotent KIS cash order with an idempotency key and a quantity no other
order of the run has, so the sandbox's order ledger (``/_sandbox/orders``) tells an order that reached the
broker twice. Sends are open-loop (one every ``callers / rate`` seconds per caller, whatever the answers do),
so a stalled hub does not slow the load down and hide the fault. Each read asks for a symbol no other
request asked for (``tests.params.distinct_price``): identical reads in flight together would share one
upstream call and spare the key the load it is meant to carry.

What comes back (``LoadResult``): every request id sent (seen by the transport, so a request the client sent
and never heard of again is counted), every terminal answer by status, the answers' latencies, and at the
end ``lost`` (sent, no terminal answer within the caller's timeout), ``upstream_twice`` (orders whose
quantity the ledger holds more than once) and ``over_limit`` (the referee's count for the key). ``outcome``
turns it into the ``Outcome`` the report reads.

    plan = LoadPlan(fraction=0.8, seconds=60, callers=4)
    result = await drive(bootstrap, request_topic, reply_topic, sandbox_url, appkey, plan, during=fault)
    conclude(result, "my-scenario", "what it does")  # records the Outcome, then asserts the three zeros
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hubclient import HubClient
from hubclient.errors import HubError, HubTimeout
from hubclient.models import ApiRequest, ApiResponse, Status
from hubclient.transport import KafkaTransport, ReplyHandler, Transport
from services.sandbox.referee import appkey_label
from tests.chaos.results import Outcome, record
from tests.integration.test_resilience import ORDER
from tests.params import distinct_price

#: Statuses of the caller's own view that are no terminal answer from the hub.
LOST = "lost"  # published, and the caller's timeout passed without an answer
NOT_SENT = "not_sent"  # the client refused or could not publish it, and said so to the caller
CALLER_VIEW = (LOST, NOT_SENT)

#: The id of the request the current task's client last published (set by ``RecordingTransport``).
_PUBLISHED: contextvars.ContextVar[str | None] = contextvars.ContextVar("published", default=None)

ORDER_TR_ID = "TTTC0012U"


@dataclass(frozen=True)
class LoadPlan:
    """How hard and how long: ``fraction`` of ``key_rate_per_s`` spread over ``callers`` for ``seconds``."""

    fraction: float = 0.8
    seconds: float = 60.0
    callers: int = 4
    key_rate_per_s: float = 20.0  # the sandbox's kis/real limit
    provider: str = "KIS"
    environment: str = "kis/real"  # the referee's environment of the key
    read_tr_id: str = "FHKST01010100"
    read_params: dict[str, Any] | None = None  # None: a price read of a symbol no other request asked for
    order_every: int = 10  # every n-th request is a KIS order; 0 = reads only
    timeout_s: float = 60.0  # each request's deadline and the caller's wait
    caller_prefix: str = "chaos"
    unkeyed: bool = False  # True: requests go without a Kafka key, so every gateway serves the key

    @property
    def rate_per_s(self) -> float:
        """Requests a second, all callers together."""
        return self.fraction * self.key_rate_per_s

    @property
    def planned(self) -> int:
        """Requests the plan sends."""
        return max(1, math.floor(self.rate_per_s * self.seconds))


@dataclass
class LoadResult:
    """What a load run saw; the three zeros are filled in by ``settle``."""

    sent: list[str] = field(default_factory=list)  # ids of the requests Kafka acknowledged, in that order
    answers: dict[str, str] = field(default_factory=dict)  # request id -> terminal status (or CALLER_VIEW)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # "read" / "order" -> answered ms
    orders: dict[str, int] = field(default_factory=dict)  # request id -> the order's unique quantity
    reasons: Counter[str] = field(default_factory=Counter)  # "status/reason" of every answer but ok
    ok_at_s: list[float] = field(default_factory=list)  # when each ok answer came, s after the first send
    errors: list[str] = field(default_factory=list)  # unexpected exceptions, as text
    seconds: float = 0.0
    lost: int = 0
    upstream_twice: int = 0
    over_limit: int = 0
    max_in_window: int = 0
    tokens_issued: int = 0
    sandbox_lag_ms: float = 0.0  # the longest stall of the sandbox's own loop so far (its referee's clock)

    @property
    def answered(self) -> dict[str, int]:
        """Terminal answers by status (``lost`` and ``not_sent`` are not answers)."""
        counts = Counter(s for s in self.answers.values() if s not in CALLER_VIEW)
        return dict(sorted(counts.items()))

    def unanswered(self) -> int:
        """Requests Kafka acknowledged that got no terminal answer (what ``lost`` settles to)."""
        answered = {rid for rid, s in self.answers.items() if s not in CALLER_VIEW}
        return sum(1 for rid in set(self.sent) if rid not in answered)

    def by_status(self, *statuses: Status) -> int:
        """How many answers had one of ``statuses``."""
        wanted = {s.value for s in statuses}
        return sum(1 for s in self.answers.values() if s in wanted)

    def percentile_ms(self, kind: str, q: float) -> float:
        """The ``q`` quantile (0..1, nearest rank) of ``kind``'s answered latencies; nan without any."""
        values = sorted(self.latencies_ms.get(kind, []))
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def ok_rate(self, start_s: float, end_s: float) -> float:
        """Ok answers a second between ``start_s`` and ``end_s`` (seconds after the first send)."""
        if end_s <= start_s:
            return math.nan
        return sum(1 for t in self.ok_at_s if start_s <= t < end_s) / (end_s - start_s)

    def ok_rates(self, step_s: float = 10.0) -> list[float]:
        """Ok answers a second in consecutive ``step_s`` windows from the first send to the last answer."""
        end = max(self.ok_at_s, default=0.0)
        return [self.ok_rate(i * step_s, (i + 1) * step_s) for i in range(math.ceil(end / step_s))]

    def outcome(self, scenario: str, title: str, notes: list[str] | None = None) -> Outcome:
        """The record the report reads."""
        return Outcome(
            scenario=scenario,
            title=title,
            sent=len(self.sent),
            answered=self.answered,
            lost=self.lost,
            upstream_twice=self.upstream_twice,
            over_limit=self.over_limit,
            seconds=round(self.seconds, 1),
            notes=list(notes or []),
        )


class RecordingTransport:
    """A ``Transport`` that notes the id of every request it sends, then sends it through ``inner``."""

    def __init__(self, inner: Transport, sent: list[str]) -> None:
        self._inner = inner
        self._sent = sent

    @property
    def reply_topic(self) -> str:
        """The inner transport's reply topic."""
        return self._inner.reply_topic

    @property
    def reply_partition(self) -> int:
        """The inner transport's reply partition."""
        return self._inner.reply_partition

    async def start(self, on_reply: ReplyHandler) -> None:
        """Start the inner transport."""
        await self._inner.start(on_reply)

    async def send(self, request: ApiRequest) -> None:
        """Send, then record the id once Kafka has acknowledged the request."""
        await self._inner.send(request)
        self._sent.append(request.request_id)
        _PUBLISHED.set(request.request_id)

    async def stop(self) -> None:
        """Stop the inner transport."""
        await self._inner.stop()


class UnkeyedTransport(KafkaTransport):
    """``KafkaTransport`` producing without a key, as a client that ignores the keying convention does:
    the partitioner spreads one key's requests over every partition, so every gateway serves the key."""

    async def send(self, request: ApiRequest) -> None:
        if self._producer is None:
            raise RuntimeError("the transport is not started")
        await self._producer.send_and_wait(self._request_topic, value=request.to_json())


def recording_client(
    bootstrap: str, *, caller: str, request_topic: str, reply_topic: str, sent: list[str], keyed: bool = True
) -> HubClient:
    """A Kafka ``HubClient`` whose sends are recorded in ``sent`` (without a key unless ``keyed``)."""
    kind = KafkaTransport if keyed else UnkeyedTransport
    inner = kind(bootstrap, request_topic=request_topic, reply_topic=reply_topic, client_id=caller)
    return HubClient(RecordingTransport(inner, sent), caller=caller, max_pending=10_000)


async def sandbox_get(sandbox_url: str, path: str) -> dict[str, Any]:
    """GET a sandbox admin page as JSON (bounded)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sandbox_url}{path}", timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        body: dict[str, Any] = await resp.json()
    return body


async def key_counters(sandbox_url: str, environment: str, appkey: str) -> dict[str, Any]:
    """The referee's counters of one appkey in one environment (``{}`` before its first arrival)."""
    stats = await sandbox_get(sandbox_url, "/_sandbox/stats")
    counters: dict[str, Any] = stats["environments"][environment]["appkeys"].get(appkey_label(appkey), {})
    return counters


async def next_quantity(sandbox_url: str, appkey: str) -> int:
    """One past the largest order quantity the ledger holds for ``appkey``: runs on one key never share a
    quantity, so an order of an earlier run is not taken for a resent one."""
    ledger = (await sandbox_get(sandbox_url, "/_sandbox/orders"))["orders"]
    return 1 + max((int(o["quantity"]) for o in ledger if o["appkey"] == appkey), default=0)


async def orders_twice(sandbox_url: str, appkey: str, quantities: set[int]) -> int:
    """Orders of this run (known by their unique quantity) that the broker's ledger holds more than once."""
    ledger = (await sandbox_get(sandbox_url, "/_sandbox/orders"))["orders"]
    seen = Counter(o["quantity"] for o in ledger if o["appkey"] == appkey and o["quantity"] in quantities)
    return sum(1 for n in seen.values() if n > 1)


class _Caller:
    """One caller's open-loop sends; every request's fate lands in the shared ``LoadResult``."""

    def __init__(
        self,
        name: str,
        client: HubClient,
        plan: LoadPlan,
        result: LoadResult,
        quantity: itertools.count[int],
        epoch: float,
    ) -> None:
        self._epoch = epoch
        self._client_name = name
        self._client = client
        self._plan = plan
        self._result = result
        self._quantity = quantity
        self._tasks: list[asyncio.Task[None]] = []

    async def one(self, index: int) -> None:
        """Send request ``index`` (an order every ``order_every``-th) and note how it ended."""
        plan = self._plan
        is_order = plan.order_every > 0 and index % plan.order_every == plan.order_every - 1
        started = time.monotonic()
        _PUBLISHED.set(None)
        quantity = next(self._quantity) if is_order else 0
        try:
            if is_order:
                params = {**ORDER, "ORD_QTY": str(quantity)}
                response: ApiResponse = await self._client.submit(
                    "KIS", ORDER_TR_ID, params, timeout=plan.timeout_s, idempotency_key=f"chaos-q{quantity}"
                )
            else:
                params = plan.read_params if plan.read_params is not None else distinct_price()
                response = await self._client.submit(
                    plan.provider, plan.read_tr_id, params, timeout=plan.timeout_s
                )
        except HubTimeout:
            request_id = _PUBLISHED.get() or f"{self._client_name}-{index}"
            self._result.answers[request_id] = LOST
            if is_order:
                self._result.orders[request_id] = quantity
            return
        except HubError as exc:  # refused or not published: the caller was told, nothing waits
            self._result.answers[f"{self._client_name}-{index}"] = NOT_SENT
            if is_order:  # it may still have reached Kafka (an unacknowledged publish), so it is watched
                self._result.orders[f"{self._client_name}-{index}"] = quantity
            self._result.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self._result.answers[response.request_id] = response.status.value
        if response.status is not Status.OK:
            self._result.reasons[f"{response.status.value}/{response.reason}"] += 1
        if is_order:
            self._result.orders[response.request_id] = quantity
        kind = "order" if is_order else "read"
        if response.status is Status.OK:
            self._result.ok_at_s.append(time.monotonic() - self._epoch)
            self._result.latencies_ms.setdefault(kind, []).append((time.monotonic() - started) * 1000)

    async def run(self, count: int, interval_s: float, offset_s: float) -> None:
        """Send ``count`` requests ``interval_s`` apart (the first after ``offset_s``), await them all."""
        start = time.monotonic() + offset_s
        for i in range(count):
            delay = start + i * interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._tasks.append(asyncio.create_task(self.one(i)))
        await asyncio.gather(*self._tasks)


async def drive(
    bootstrap: str,
    request_topic: str,
    reply_topic: str,
    sandbox_url: str,
    appkey: str,
    plan: LoadPlan,
    *,
    during: Callable[[], Awaitable[object]] | None = None,
) -> LoadResult:
    """Run ``plan`` (and ``during``, the fault, beside it) and settle the figures; bounded by the plan's
    seconds plus its timeout plus half a minute for the clients to start and stop."""
    result = LoadResult()
    clients = [
        recording_client(
            bootstrap,
            caller=f"{plan.caller_prefix}-{i}",
            request_topic=request_topic,
            reply_topic=reply_topic,
            sent=result.sent,
            keyed=not plan.unkeyed,
        )
        for i in range(plan.callers)
    ]
    quantity = itertools.count(await next_quantity(sandbox_url, appkey))
    per_caller = max(1, plan.planned // plan.callers)
    interval_s = plan.callers / plan.rate_per_s
    started = time.monotonic()
    for client in clients:
        await client.start()
    try:
        async with asyncio.timeout(plan.seconds + plan.timeout_s + 30):
            epoch = time.monotonic()
            callers = [
                _Caller(f"{plan.caller_prefix}-{i}", c, plan, result, quantity, epoch)
                for i, c in enumerate(clients)
            ]
            work = [
                c.run(per_caller, interval_s, offset_s=i * interval_s / plan.callers)
                for i, c in enumerate(callers)
            ]
            fault = [during()] if during is not None else []
            await asyncio.gather(*work, *fault)
    finally:
        for client in clients:
            await client.stop()
    result.seconds = time.monotonic() - started
    await settle(result, sandbox_url, appkey, plan.environment)
    return result


async def settle(result: LoadResult, sandbox_url: str, appkey: str, environment: str) -> None:
    """Fill in ``lost``, ``upstream_twice`` and ``over_limit`` (and the referee's window and tokens)."""
    result.lost = result.unanswered()
    result.upstream_twice = await orders_twice(sandbox_url, appkey, set(result.orders.values()))
    stats = await sandbox_get(sandbox_url, "/_sandbox/stats")
    result.sandbox_lag_ms = float(stats.get("loop_lag", {}).get("max_ms", 0.0))
    counters = await key_counters(sandbox_url, environment, appkey)
    result.over_limit = int(counters.get("over_limit", 0))
    result.max_in_window = int(counters.get("max_in_window", 0))
    result.tokens_issued = int(counters.get("tokens_issued", 0))


def conclude(
    result: LoadResult,
    scenario: str,
    title: str,
    notes: list[str] | None = None,
    *,
    allow_not_sent: bool = False,
) -> Outcome:
    """Record the run's ``Outcome`` (so a failed run still leaves its figures), then assert the zeros; a
    request the client could not publish (and said so) fails it too unless ``allow_not_sent``."""
    p50, p99 = result.percentile_ms("read", 0.5), result.percentile_ms("read", 0.99)
    figures = [
        f"ok reads p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        "ok answers/s per 10 s: " + " ".join(f"{r:.1f}" for r in result.ok_rates()),
        *(
            ["not ok: " + ", ".join(f"{k} {n}" for k, n in sorted(result.reasons.items()))]
            if result.reasons
            else []
        ),
        f"referee: max {result.max_in_window} in a second, {result.tokens_issued} token(s) issued, "
        f"its loop's longest stall {result.sandbox_lag_ms:.0f} ms",
    ]
    outcome = result.outcome(scenario, title, [*(notes or []), *figures])
    record(outcome)
    not_sent = sum(1 for s in result.answers.values() if s == NOT_SENT)
    assert result.lost == 0, f"{result.lost} of {len(result.sent)} requests had no terminal answer"
    assert result.upstream_twice == 0, f"{result.upstream_twice} order(s) reached the broker twice"
    assert result.over_limit == 0, (
        f"{result.over_limit} arrival(s) over the limit (max {result.max_in_window})"
    )
    assert allow_not_sent or not_sent == 0, f"{not_sent} request(s) not published: {result.errors[:3]}"
    return outcome
