"""The numbers of one ``apihub status`` frame, computed from two scrapes (pure: no I/O, no clock).

A ``Scrape`` is one service's page at one instant (monotonic seconds), or the reason it could not be read.
``build_view(before, after, targets)`` turns the previous and the current round of scrapes into a
``StatusView``: totals from the current page, rates (per second) and latency percentiles from what
changed between the two, so they describe the last interval rather than the process's lifetime. Without a
previous round (the first frame) or when a service was down in it, rates are ``None`` ("not yet known").

Gateway metrics used (``services/gateway/metrics.py``): upstream calls and latency, pacing jitter, queue
depth, limiter rejections, terminal responses by status, token refreshes, lock contention, consumer lag,
in-flight requests and upstream calls, assigned partitions. Worker metrics (``services/worker/metrics.py``):
tasks by outcome and output records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.status.samples import Metrics, bucket_increase, increase, quantile
from services.status.targets import Endpoint, Targets

PRIORITIES = ("interactive", "normal", "bulk")
STATUSES = ("ok", "upstream_error", "rejected", "expired", "invalid", "unknown_outcome")
OK_OUTCOME = "ok"
LATENCY = "apihub_upstream_latency_seconds"


@dataclass(frozen=True, slots=True)
class Scrape:
    """One service's page read at ``at_s`` (monotonic seconds), or why it could not be read."""

    endpoint: Endpoint
    at_s: float
    metrics: Metrics | None = None
    error: str | None = None

    @property
    def up(self) -> bool:
        """True when the page was read."""
        return self.metrics is not None


#: One round of scrapes, by endpoint name.
Round = Mapping[str, Scrape]


@dataclass(frozen=True, slots=True)
class Pacing:
    """One provider's pace: calls per second sent against its key's limit, and the jitter budget."""

    provider: str
    limit_per_s: float | None  # None: no setting names this provider
    calls_total: float
    calls_per_s: float | None
    jitter_s: float | None  # the key domain's effective budget J (setting + measured lag); None: not yet
    in_call: float  # upstream HTTP calls in progress now

    @property
    def share(self) -> float | None:
        """Calls per second as a share of the limit (1.0 = at the limit)."""
        if self.calls_per_s is None or not self.limit_per_s:
            return None
        return self.calls_per_s / self.limit_per_s

    @property
    def cap_per_s(self) -> float | None:
        """The most the gateway sends with this budget: ``limit / (1 s + J)``."""
        if self.jitter_s is None or not self.limit_per_s:
            return None
        return self.limit_per_s / (1.0 + self.jitter_s)


@dataclass(frozen=True, slots=True)
class Upstream:
    """One provider's broker calls: latency percentiles over the interval, and errors."""

    provider: str
    p50_s: float | None
    p99_s: float | None
    errors_total: float
    errors_per_s: float | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Requests refused by pacing for one provider and reason: in all, and in the last interval."""

    provider: str
    reason: str
    total: float
    recent: float | None


@dataclass(frozen=True, slots=True)
class Tokens:
    """One provider's token issuances by result, and refreshes that waited for another holder's lock."""

    provider: str
    issued: float
    refused: float
    failed: float
    lock_waits: float


@dataclass(frozen=True, slots=True)
class GatewayView:
    """Everything the gateway's page says, or why it is down."""

    url: str
    error: str | None = None
    inflight: float = 0.0
    lag: float = 0.0
    partitions: float = 0.0
    answers: dict[str, float] = field(default_factory=dict)  # terminal responses by status, in all
    answers_per_s: float | None = None
    pacing: list[Pacing] = field(default_factory=list)
    queues: dict[str, dict[str, float]] = field(default_factory=dict)  # domain -> priority -> depth
    upstream: list[Upstream] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    tokens: list[Tokens] = field(default_factory=list)

    @property
    def up(self) -> bool:
        """True when the page was read."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker's progress, or why it is down."""

    name: str
    url: str
    error: str | None = None
    done: float = 0.0
    failed: float = 0.0
    malformed: float = 0.0
    tasks_per_s: float | None = None
    outputs: float = 0.0

    @property
    def up(self) -> bool:
        """True when the page was read."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class StatusView:
    """One frame's numbers."""

    at: datetime
    interval_s: float | None  # seconds between the gateway's two scrapes; None on the first frame
    gateway: GatewayView
    workers: list[WorkerView]


class _Pair:
    """The current page and, when known, the previous one of the same service, ``dt_s`` apart."""

    def __init__(self, before: Scrape | None, after: Scrape) -> None:
        assert after.metrics is not None
        self.now = after.metrics
        usable = before is not None and before.metrics is not None and after.at_s > before.at_s
        self.then = before.metrics if usable and before is not None else None
        self.dt_s = after.at_s - before.at_s if usable and before is not None else None

    def rate(self, name: str, **labels: str) -> float | None:
        """Per-second growth of a counter over the interval (None on the first frame)."""
        if self.then is None or self.dt_s is None:
            return None
        return increase(self.then.total(name, **labels), self.now.total(name, **labels)) / self.dt_s

    def grown(self, name: str, **labels: str) -> float | None:
        """Growth of a counter over the interval (None on the first frame)."""
        if self.then is None:
            return None
        return increase(self.then.total(name, **labels), self.now.total(name, **labels))

    def latency(self, provider: str, q: float) -> float | None:
        """The ``q`` quantile of upstream latency over the interval, seconds (None without calls)."""
        if self.then is None:
            return None
        before = self.then.buckets(LATENCY, provider=provider)
        return quantile(q, bucket_increase(before, self.now.buckets(LATENCY, provider=provider)))


def _gateway(before: Scrape | None, after: Scrape, limits: Mapping[str, float]) -> GatewayView:
    url = after.endpoint.url
    if after.metrics is None:
        return GatewayView(url, error=after.error or "down")
    pair = _Pair(before, after)
    m = pair.now
    providers = sorted(set(limits) | {k[0] for k in m.by("apihub_upstream_calls_total", "provider")})
    jitter = {k[0]: v for k, v in m.by("apihub_pacing_jitter_seconds", "domain").items()}
    pacing = [
        Pacing(
            provider=p,
            limit_per_s=limits.get(p),
            calls_total=m.total("apihub_upstream_calls_total", provider=p),
            calls_per_s=pair.rate("apihub_upstream_calls_total", provider=p),
            jitter_s=jitter.get(p),
            in_call=m.total("apihub_upstream_inflight", provider=p),
        )
        for p in providers
    ]
    queues: dict[str, dict[str, float]] = {}
    for (domain, priority), depth in sorted(m.by("apihub_queue_depth", "domain", "priority").items()):
        queues.setdefault(domain, dict.fromkeys(PRIORITIES, 0.0))[priority] = depth
    upstream = []
    for p in providers:
        calls = m.total("apihub_upstream_calls_total", provider=p)
        ok = m.total("apihub_upstream_calls_total", provider=p, outcome=OK_OUTCOME)
        rate_all = pair.rate("apihub_upstream_calls_total", provider=p)
        rate_ok = pair.rate("apihub_upstream_calls_total", provider=p, outcome=OK_OUTCOME)
        errors_per_s = None if rate_all is None else max(0.0, rate_all - (rate_ok or 0.0))
        upstream.append(Upstream(p, pair.latency(p, 0.5), pair.latency(p, 0.99), calls - ok, errors_per_s))
    refused = "apihub_limiter_rejections_total"
    rejections = [
        Rejection(p, reason, total, pair.grown(refused, provider=p, reason=reason))
        for (p, reason), total in sorted(m.by(refused, "provider", "reason").items())
    ]
    tokens = [
        Tokens(
            p,
            issued=m.total("apihub_token_refreshes_total", provider=p, result="issued"),
            refused=m.total("apihub_token_refreshes_total", provider=p, result="refused"),
            failed=m.total("apihub_token_refreshes_total", provider=p, result="failed"),
            lock_waits=m.total("apihub_lock_contention_total", provider=p),
        )
        for p in providers
    ]
    answers = {status: v for (status,), v in m.by("apihub_requests_total", "status").items()}
    return GatewayView(
        url,
        inflight=m.total("apihub_inflight_requests"),
        lag=m.total("apihub_consumer_lag"),
        partitions=m.total("apihub_assigned_partitions"),
        answers=answers,
        answers_per_s=pair.rate("apihub_requests_total"),
        pacing=pacing,
        queues=queues,
        upstream=upstream,
        rejections=rejections,
        tokens=tokens,
    )


def _worker(before: Scrape | None, after: Scrape) -> WorkerView:
    name, url = after.endpoint.name, after.endpoint.url
    if after.metrics is None:
        return WorkerView(name, url, error=after.error or "down")
    pair = _Pair(before, after)
    m = pair.now
    tasks = "apihub_worker_tasks_total"
    return WorkerView(
        name,
        url,
        done=m.total(tasks, outcome="done"),
        failed=m.total(tasks, outcome="failed"),
        malformed=m.total(tasks, outcome="malformed"),
        tasks_per_s=pair.rate(tasks),
        outputs=m.total("apihub_worker_outputs_total"),
    )


def build_view(before: Round | None, after: Round, targets: Targets, at: datetime) -> StatusView:
    """The frame for the current round ``after`` (rates against ``before``), taken at wall time ``at``."""
    previous = before or {}
    gateway: GatewayView | None = None
    workers = []
    interval_s = None
    for endpoint in targets.endpoints:
        now = after[endpoint.name]
        then = previous.get(endpoint.name)
        if endpoint.is_gateway:
            gateway = _gateway(then, now, targets.limits_per_s)
            if then is not None and now.at_s > then.at_s:
                interval_s = now.at_s - then.at_s
        else:
            workers.append(_worker(then, now))
    if gateway is None:
        raise ValueError("the targets name no gateway")
    return StatusView(at, interval_s, gateway, workers)
