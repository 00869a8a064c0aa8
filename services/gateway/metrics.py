"""Prometheus metrics of the gateway (prefix ``apihub_``), served at ``/metrics``.

On the per-request path use ``child(METRIC, *labels)``: ``labels()`` checks and looks up its arguments
under a lock on every call, about ten times per answered request; ``child`` keeps what it returned.

Label values stay bounded whatever the requests say: a request's ``caller`` and ``tr_id`` are free text
on the request topic, and every distinct value would be a series kept for the life of the process. So
``caller_label`` names the first ``MAX_CALLER_LABELS`` callers and counts any later one as ``other``, and
``tr_id_label`` names only TR ids of the catalog (``unknown`` otherwise; "-" stays "-").
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from hubclient.catalog import lookup
from hubclient.errors import UnknownTrId
from hubclient.models import WEBSOCKET_CREDENTIALS_TR_ID

M = TypeVar("M", bound=MetricWrapperBase)
_CHILDREN: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
MAX_CALLER_LABELS = 200
OTHER_CALLER = "other"
UNKNOWN_TR_ID = "unknown"
_CALLERS: set[str] = set()


def caller_label(caller: str) -> str:
    """``caller`` as a label value: itself for the first ``MAX_CALLER_LABELS`` callers seen, else
    ``other``."""
    if caller in _CALLERS:
        return caller
    if len(_CALLERS) >= MAX_CALLER_LABELS:
        return OTHER_CALLER
    _CALLERS.add(caller)
    return caller


def tr_id_label(provider: str, tr_id: str) -> str:
    """``tr_id`` as a label value: itself when the catalog knows it for ``provider`` (or it is the
    WebSocket credential's), else ``unknown``."""
    if tr_id in (WEBSOCKET_CREDENTIALS_TR_ID, "-"):  # "-": a record that was no request
        return tr_id
    try:
        lookup(provider, tr_id)
    except UnknownTrId:
        return UNKNOWN_TR_ID
    return tr_id


def child(metric: M, *labels: str) -> M:
    """``metric.labels(*labels)``, made once per metric and labels (their values are bounded: providers,
    TR ids, outcomes); the gateway never removes a child, so a kept one stays the exported one."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found  # type: ignore[return-value]  # made by metric.labels, so of metric's type


REQUESTS = Counter(
    "apihub_requests",
    "Terminal responses by provider, tr_id, caller and status",
    ["provider", "tr_id", "caller", "status"],
)
UPSTREAM_CALLS = Counter(
    "apihub_upstream_calls", "HTTP calls made to a broker, by outcome", ["provider", "tr_id", "outcome"]
)
UPSTREAM_LATENCY = Histogram(
    "apihub_upstream_latency_seconds",
    "Latency of one broker HTTP call",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_WAIT = Histogram(
    "apihub_queue_wait_seconds",
    "Time from arrival at the gateway to the upstream call",
    ["priority"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LIMITER_REJECTIONS = Counter(
    "apihub_limiter_rejections", "Requests refused by pacing, by reason", ["provider", "reason"]
)
RETRIES = Counter("apihub_retries", "Upstream calls retried, by reason", ["provider", "reason"])
TOKEN_REFRESHES = Counter(
    "apihub_token_refreshes", "Token issuances requested, by result", ["provider", "result"]
)
LOCK_CONTENTION = Counter(
    "apihub_lock_contention", "Token refreshes that waited for another holder's lock", ["provider"]
)
DLQ_MESSAGES = Counter("apihub_dlq_messages", "Messages sent to the dead-letter topic, by reason", ["reason"])
QUEUE_DEPTH = Gauge(
    "apihub_queue_depth", "Requests waiting for a slot, by limit domain and priority", ["domain", "priority"]
)
INFLIGHT = Gauge("apihub_inflight_requests", "Requests being served right now")
CONSUMER_LAG = Gauge(
    "apihub_consumer_lag", "Requests in the log not yet answered and committed", ["partition"]
)
ASSIGNED_PARTITIONS = Gauge("apihub_assigned_partitions", "Request partitions owned by this instance")
PACING_JITTER = Gauge(
    "apihub_pacing_jitter_seconds",
    "Effective jitter budget of a limit domain: the setting plus the largest own send lag seen lately",
    ["domain"],
)
SEND_LAG = Histogram(
    "apihub_send_lag_seconds",
    "From a send's recorded slot to its request headers leaving the gateway",
    ["domain"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
SENDS_LATE = Counter(
    "apihub_sends_late",
    "Sends that left later after their slot than the whole jitter budget (their arrival bound was extended)",
    ["domain"],
)
UPSTREAM_INFLIGHT = Gauge(
    "apihub_upstream_inflight", "Calls inside an upstream HTTP call right now", ["provider"]
)
ANSWERED_LATE = Counter(
    "apihub_answered_after_deadline",
    "Admitted requests whose answer was published after their deadline",
    ["provider"],
)
SHARED_READS = Counter(
    "apihub_shared_reads",
    "Reads answered with another request's upstream call: inflight (joined), settled (sent before that "
    "call, taken in after its answer) or cache (immutable)",
    ["provider", "kind"],
)
SHARED_CACHE_BYTES = Gauge(
    "apihub_shared_cache_bytes",
    "JSON of immutable answers the shared reads' cache holds now (at most APIHUB_SHARED_CACHE_BYTES)",
)
