"""The load tally, the sample parsers and the goals, as pure functions on fixed input."""

from __future__ import annotations

from typing import Any

import pytest

from hubclient.errors import HubBackpressure, HubTimeout
from hubclient.models import ApiResponse, Status
from tests.soak import goals, load, sample


def response(status: Status, reason: str | None = None) -> ApiResponse:
    """A terminal response of ``status`` (only what the tally reads is meaningful)."""
    return ApiResponse(
        request_id="01a22dfe-8068-7217-ba09-3d1717a4cdf3", status=status, reason=reason, gateway="gw"
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (response(Status.OK), ("answered", "ok")),
        (response(Status.REJECTED, "deadline_unreachable"), ("refused", "rejected:deadline_unreachable")),
        (response(Status.UPSTREAM_ERROR, "business_error"), ("refused", "upstream_error:business_error")),
        (HubTimeout("no answer"), ("timed_out", "timeout")),
        (HubBackpressure("full"), ("send_failed", "HubBackpressure")),
        (OSError("broken"), ("send_failed", "OSError")),
    ],
)
def test_classify(result: ApiResponse | BaseException, expected: tuple[str, str]) -> None:
    """Every way a request ends falls in exactly one bucket."""
    assert load.classify(result) == expected


def test_tally_counts_lost_and_pending() -> None:
    """lost = sent - answered - refused - pending: a timeout is lost, a request still out is pending."""
    tally = load.ProviderTally(sent=5)
    tally.record(response(Status.OK), 12.0)
    tally.record(response(Status.REJECTED, "deadline_unreachable"), 3.0)
    tally.record(HubTimeout("late"), 10_000.0)
    assert (tally.answered, tally.pending, tally.lost) == (1, 2, 1)
    tally.record(response(Status.OK), 20.0)
    tally.record(response(Status.OK), 30.0)
    assert (tally.pending, tally.lost) == (0, 1)
    assert tally.as_dict()["refused"] == {"rejected:deadline_unreachable": 1}


def test_percentiles() -> None:
    """Nearest-rank p50 and p99 and the maximum; nothing for no values."""
    assert load.percentiles([]) == {}
    assert load.percentiles([float(v) for v in range(1, 101)]) == {"p50": 50.0, "p99": 99.0, "max": 100.0}


def test_rates_follow_the_production_limits() -> None:
    """The load is a share of KIS's key limit and of the smaller of Kiwoom's key and read limits."""
    env = {
        "APIHUB_KIS__RATE_PER_S": "20",
        "APIHUB_KIWOOM__RATE_PER_S": "5",
        "APIHUB_KIWOOM__QUERY_RATE_PER_S": "4",
    }
    assert load.rates_per_s(env, 0.8) == pytest.approx({"KIS": 16.0, "KIWOOM": 3.2})


def test_reads_pass_the_catalog_checks() -> None:
    """Every read the generator sends names a live endpoint with its required parameters."""
    from hubclient.catalog import lookup, refusal

    for provider in ("KIS", "KIWOOM"):
        for call in load.reads(provider):
            assert refusal(lookup(provider, call.tr_id), call.params, None) is None


def test_vmrss() -> None:
    """VmRSS is read in KiB from /proc/<pid>/status, and this process has one."""
    assert sample.vmrss_kib("Name:\tpython\nVmRSS:\t  12345 kB\nThreads:\t1\n") == 12345
    assert sample.vmrss_kib("Name:\tzombie\n") is None
    import os

    assert (sample.rss_kib(os.getpid()) or 0) > 1000


METRICS = """\
# TYPE apihub_requests_total counter
apihub_requests_total{provider="KIS",tr_id="A",caller="soak-load",status="ok"} 10.0
apihub_requests_total{provider="KIS",tr_id="B",caller="soak-load",status="ok"} 5.0
apihub_requests_total{provider="KIS",tr_id="A",caller="soak-load",status="rejected"} 2.0
# TYPE apihub_consumer_lag gauge
apihub_consumer_lag{partition="0"} 3.0
apihub_consumer_lag{partition="1"} 1.0
"""


def test_metric_sums() -> None:
    """Samples of one name are summed over the labels not asked for."""
    assert sample.metric_sums(METRICS, "apihub_requests_total", ("caller", "status")) == {
        "soak-load/ok": 15.0,
        "soak-load/rejected": 2.0,
    }
    assert sample.metric_sums(METRICS, "apihub_consumer_lag") == {"": 4.0}
    assert sample.metric_sums(METRICS, "absent") == {}


def test_referee_summary() -> None:
    """Per provider, the referee's arrivals, worst second, limit and over-limit counts, classes included."""
    stats = {
        "environments": {
            "kis/real": {
                "requests": 100,
                "max_in_window": 20,
                "rate_per_s": 20,
                "over_limit": 1,
                "tokens_issued": 1,
                "classes": {"query": {"over_limit": 0}, "ledger": {"over_limit": 2}},
            }
        },
        "loop_lag": {"max_ms": 12.5, "over_20ms": 0, "over_50ms": 0},
    }
    summary = sample.referee_summary(stats)
    assert summary["KIS"] == {
        "requests": 100,
        "tokens_issued": 1,
        "max_in_window": 20,
        "rate_per_s": 20,
        "over_limit": 1,
        "class_over_limit": 2,
    }
    assert summary["KIWOOM"]["requests"] == 0
    assert sample.loop_lag(stats)["max_ms"] == 12.5


def snap(t_s: float, rss: dict[str, int], **extra: Any) -> dict[str, Any]:
    """A minimal sample."""
    return {"t_s": t_s, "rss_kib": rss, "errors": [], **extra}


HUB = dict.fromkeys(goals.JUDGED, 100_000)


@pytest.mark.parametrize(
    ("end_gateway", "met"),
    [(104_000, True), (104_999, True), (105_000, False), (150_000, False), (90_000, True)],
)
def test_memory_goal(end_gateway: int, met: bool) -> None:
    """A hub process that grew 5 % or more from after warm-up to the end misses the goal."""
    samples = [snap(t, {**HUB, "kafka": 10 * t}) for t in range(0, 40, 5)]
    samples += [snap(t, {**HUB, "gateway": end_gateway, "kafka": 999_999}) for t in range(40, 61, 5)]
    growths = goals.memory_growth(samples, warmup_s=10, window_s=10)
    by_name = {g.process: g for g in growths}
    assert by_name["gateway"].base_kib == 100_000 and by_name["gateway"].end_kib == end_gateway
    assert not by_name["kafka"].judged
    assert goals.memory_goal(growths).met is met


def test_memory_goal_leaves_the_gateways_bounded_cache_out() -> None:
    """The gateway's RSS grew 8 %, 6 of it its shared-read cache filling: met, with the RSS growth still
    reported; a gateway that grew past what its cache took misses. A sample whose scrape failed (no
    gateway figures) leaves the cache's median to the others."""

    def run(end_rss: int, end_cache_kib: int) -> goals.Growth:
        samples = [snap(t, HUB, gateway={"shared_cache_bytes": 0.0}) for t in range(0, 40, 5)]
        samples += [
            snap(t, {**HUB, "gateway": end_rss}, gateway={"shared_cache_bytes": end_cache_kib * 1024.0})
            for t in range(40, 61, 5)
        ]
        samples.append(snap(61, {**HUB, "gateway": end_rss}, gateway=None))
        (gateway,) = [
            g for g in goals.memory_growth(samples, warmup_s=10, window_s=10) if g.process == "gateway"
        ]
        return gateway

    filled = run(108_000, 6_000)
    assert (filled.cache_base_kib, filled.cache_end_kib) == (0.0, 6_000.0)
    assert filled.rss_growth == pytest.approx(0.08) and filled.growth == pytest.approx(0.02)
    others = [
        g
        for g in goals.memory_growth([snap(t, HUB) for t in range(0, 61, 5)], 10, 10)
        if g.process != "gateway"
    ]
    assert goals.memory_goal([filled, *others]).met
    leaking = run(108_000, 1_000)
    assert leaking.growth == pytest.approx(0.07) and not goals.memory_goal([leaking, *others]).met


def test_memory_goal_needs_samples_after_warm_up() -> None:
    """A run too short to have both windows does not meet the goal."""
    growths = goals.memory_growth([snap(0, HUB), snap(5, HUB)], warmup_s=10, window_s=10)
    goal = goals.memory_goal(growths)
    assert not goal.met and "not enough samples" in goal.details[0]


def tally(**fields: Any) -> dict[str, Any]:
    """A provider's end-of-run tally."""
    base: dict[str, Any] = {"sent": 10, "answered": 10, "refused": {}, "timed_out": 0, "send_failed": {}}
    base.update(fields)
    base.setdefault("pending", 0)
    base.setdefault("lost", 0)
    return base


@pytest.mark.parametrize(
    ("kis", "met"),
    [(tally(), True), (tally(lost=1), False), (tally(pending=2), False), (tally(sent=0, answered=0), False)],
)
def test_lost_goal(kis: dict[str, Any], met: bool) -> None:
    """Any lost or still pending request misses the goal, and so does a run that sent nothing."""
    assert goals.lost_goal({"KIS": kis}).met is met


def referee(**kis: int) -> dict[str, dict[str, int]]:
    """Referee figures of both providers, KIS's overridden."""
    base = {"requests": 100, "tokens_issued": 1, "max_in_window": 20, "rate_per_s": 20, "over_limit": 0}
    return {
        "KIS": {**base, "class_over_limit": 0, **kis},
        "KIWOOM": {**base, "rate_per_s": 5, "max_in_window": 5, "class_over_limit": 0},
    }


@pytest.mark.parametrize(
    ("figures", "met"),
    [
        (referee(), True),
        (referee(over_limit=1), False),
        (referee(class_over_limit=1), False),
        (referee(max_in_window=21), False),
        (None, False),
    ],
)
def test_over_limit_goal(figures: dict[str, dict[str, int]] | None, met: bool) -> None:
    """One arrival over a key's or a class's limit, or a second above the limit, misses the goal."""
    goal = goals.over_limit_goal(figures, {"max_ms": 80, "over_20ms": 2, "over_50ms": 1})
    assert goal.met is met
    if figures and not met:
        assert any("stalled up to 80 ms" in d for d in goal.details)


def gateway(**fields: Any) -> dict[str, Any]:
    """The gateway's figures of a clean run, some overridden."""
    base: dict[str, Any] = {
        "responses": {"soak-load/ok": 1000.0},
        "rejections": {},
        "upstream": {"KIS/ok": 900.0, "KIWOOM/ok": 100.0},
        "tokens": {"KIS/issued": 1.0},
        "dlq": {},
        "late": 0,
    }
    return {**base, **fields}


CLEAN_WORKERS = {"history-collector": {"tasks": {"done": 3.0}, "retries": {}}}


@pytest.mark.parametrize(
    ("last", "load_kis", "dead", "exited", "unexpected", "expected"),
    [
        ({}, tally(sent=1000, answered=1000), {}, [], 0, 0),
        ({}, tally(sent=1000, answered=999, refused={"rejected:deadline_unreachable": 1}), {}, [], 0, 1),
        ({}, tally(sent=1000, answered=998, refused={"rejected:deadline_unreachable": 2}), {}, [], 2, 2),
        ({}, tally(sent=1000, answered=999, refused={"rejected:backlog_full": 1}), {}, [], 1, 0),
        ({}, tally(sent=1000, answered=999, send_failed={"HubBackpressure": 1}), {}, [], 1, 0),
        ({"gateway": gateway(responses={"w/ok": 5.0, "w/upstream_error": 2.0})}, tally(), {}, [], 2, 0),
        ({"gateway": gateway(upstream={"KIS/ok": 5.0, "KIS/throttled": 3.0})}, tally(), {}, [], 3, 0),
        ({"gateway": gateway(tokens={"KIS/issued": 1.0, "KIS/failed": 1.0})}, tally(), {}, [], 1, 0),
        ({"gateway": gateway(dlq={"unreadable": 1.0})}, tally(), {}, [], 1, 0),
        ({"gateway": gateway(late=2)}, tally(), {}, [], 2, 0),
        (
            {"gateway": gateway(responses={"w/rejected": 4.0}, rejections={"KIS/deadline_unreachable": 3.0})},
            tally(),
            {},
            [],
            1,
            0,
        ),
        ({"workers": {"recovery-worker": {"tasks": {"done": 2.0, "failed": 1.0}}}}, tally(), {}, [], 1, 0),
        ({}, tally(), {"workers.dlq": 2, "api.requests.dlq": 0}, [], 2, 0),
        ({}, tally(), {}, ["gateway (pid 1) exited with -9"], 1, 0),
        ({"errors": ["gateway: TimeoutError: "], "workers": CLEAN_WORKERS}, tally(), {}, [], 1, 0),
        ({"errors": ["group_lag: TimeoutError: "]}, tally(), {}, [], 0, 0),
    ],
)
def test_unexpected_errors(
    last: dict[str, Any],
    load_kis: dict[str, Any],
    dead: dict[str, int],
    exited: list[str],
    unexpected: int,
    expected: int,
) -> None:
    """Only rare deadline_unreachable refusals are expected; every other failure anywhere counts."""
    samples = [{"t_s": 1.0, "rss_kib": {}, **last}]
    errors, expected_refusals = goals.unexpected_errors(samples, {"KIS": load_kis}, dead, exited)
    assert sum(n for _, n in errors) == unexpected, errors
    assert expected_refusals == expected
    assert goals.errors_goal(errors, expected_refusals, 1000).met is (unexpected == 0)
