"""``apihub status``: reading metrics pages, rates and quantiles from two scrapes, 80-column frames."""

from __future__ import annotations

import asyncio
import io
import math
import socket
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hubclient.market import KST
from services.cli import build_parser
from services.status.live import ansi_frame, run_status
from services.status.render import WIDTH, clip, count, millis, percent, rate, render
from services.status.samples import Metrics, MetricsFormatError, bucket_increase, increase, quantile
from services.status.scrape import scrape_round
from services.status.targets import GATEWAY, Endpoint, StatusSettings, Targets, targets
from services.status.view import Rejection, Round, Scrape, StatusView, build_view
from tests.processes import free_port

AT = datetime(2026, 11, 27, 10, 31, 5, tzinfo=KST)
GW = Endpoint(GATEWAY, "http://127.0.0.1:18081")
HISTORY = Endpoint("history-collector", "http://127.0.0.1:18091")
TARGETS = Targets((GW, HISTORY), {"KIS": 20.0, "KIWOOM": 5.0})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayPage:
    """A gateway's ``/metrics`` page made by prometheus_client itself, with the gateway's metric names."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.calls = Counter("apihub_upstream_calls", "", ["provider", "tr_id", "outcome"], registry=r)
        self.latency = Histogram(
            "apihub_upstream_latency_seconds", "", ["provider"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.requests = Counter("apihub_requests", "", ["provider", "tr_id", "caller", "status"], registry=r)
        self.rejections = Counter("apihub_limiter_rejections", "", ["provider", "reason"], registry=r)
        self.tokens = Counter("apihub_token_refreshes", "", ["provider", "result"], registry=r)
        self.contention = Counter("apihub_lock_contention", "", ["provider"], registry=r)
        self.depth = Gauge("apihub_queue_depth", "", ["domain", "priority"], registry=r)
        self.inflight = Gauge("apihub_inflight_requests", "", registry=r)
        self.lag = Gauge("apihub_consumer_lag", "", ["partition"], registry=r)
        self.partitions = Gauge("apihub_assigned_partitions", "", registry=r)
        self.jitter = Gauge("apihub_pacing_jitter_seconds", "", ["domain"], registry=r)
        self.upstream_inflight = Gauge("apihub_upstream_inflight", "", ["provider"], registry=r)

    def text(self) -> str:
        """The page as the gateway would serve it."""
        return generate_latest(self.registry).decode()


class WorkerPage:
    """A worker's ``/metrics`` page with the workers' metric names."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.tasks = Counter("apihub_worker_tasks_total", "", ["worker", "outcome"], registry=r)
        self.outputs = Counter("apihub_worker_outputs_total", "", ["worker", "topic"], registry=r)

    def text(self) -> str:
        """The page as the worker would serve it."""
        return generate_latest(self.registry).decode()


def scrape(endpoint: Endpoint, at_s: float, text: str | None, error: str | None = None) -> Scrape:
    """A scrape of ``text`` at ``at_s``, or a failed one."""
    return Scrape(endpoint, at_s, Metrics.parse(text) if text is not None else None, error)


def round_of(at_s: float, gateway: str | None, worker: str | None) -> Round:
    """One round: the gateway's and the history worker's pages (None: down)."""
    return {
        GATEWAY: scrape(GW, at_s, gateway, None if gateway is not None else "connection refused"),
        HISTORY.name: scrape(HISTORY, at_s, worker, None if worker is not None else "connection refused"),
    }


# --- reading a page -------------------------------------------------------------------------------------


def test_parse_sums_by_sample_name_and_labels() -> None:
    """Counters are read under their ``_total`` sample names and summed over matching label sets."""
    page = GatewayPage()
    page.calls.labels("KIS", "FHKST01010100", "ok").inc(7)
    page.calls.labels("KIS", "FHKST03010200", "ok").inc(3)
    page.calls.labels("KIS", "FHKST01010100", "throttled").inc(2)
    page.calls.labels("KIWOOM", "ka10080", "ok").inc(1)
    m = Metrics.parse(page.text())
    cases = [
        ({}, 13.0),
        ({"provider": "KIS"}, 12.0),
        ({"provider": "KIS", "outcome": "ok"}, 10.0),
        ({"provider": "KIWOOM", "outcome": "throttled"}, 0.0),
        ({"provider": "NOBODY"}, 0.0),
    ]
    for labels, expected in cases:
        assert m.total("apihub_upstream_calls_total", **labels) == expected, labels
    assert m.by("apihub_upstream_calls_total", "provider", "outcome") == {
        ("KIS", "ok"): 10.0,
        ("KIS", "throttled"): 2.0,
        ("KIWOOM", "ok"): 1.0,
    }
    assert m.has("apihub_upstream_calls_total") and not m.has("apihub_upstream_calls")
    assert m.total("apihub_no_such_metric_total") == 0.0


def test_parse_reads_histogram_buckets_in_order() -> None:
    """A histogram's buckets come back cumulative and ascending, ``+Inf`` last, summed per bound."""
    page = GatewayPage()
    for seconds in (0.003, 0.02, 0.02, 0.7):
        page.latency.labels("KIS").observe(seconds)
    page.latency.labels("KIWOOM").observe(20)
    kis = Metrics.parse(page.text()).buckets("apihub_upstream_latency_seconds", provider="KIS")
    assert [bound for bound, _ in kis] == [*LATENCY_BUCKETS, math.inf]
    assert dict(kis)[0.005] == 1 and dict(kis)[0.025] == 3 and dict(kis)[1] == 4 and dict(kis)[math.inf] == 4
    both = Metrics.parse(page.text()).buckets("apihub_upstream_latency_seconds")
    assert dict(both)[math.inf] == 5 and dict(both)[10] == 4


@pytest.mark.parametrize(
    "text",
    [
        "apihub_x{provider=KIS} 1\n",
        "apihub_x\n",
        'apihub_x{a="1"} one\n',
        "<html><body>Not Found</body></html>\n",
    ],
    ids=["unquoted label", "no value", "not a number", "an HTML page"],
)
def test_parse_refuses_what_is_not_a_metrics_page(text: str) -> None:
    """A page that is not in the text format raises MetricsFormatError, not a parser's own error."""
    with pytest.raises(MetricsFormatError):
        Metrics.parse(text)


# --- two scrapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [(None, 5.0, 0.0), (3.0, 5.0, 2.0), (5.0, 5.0, 0.0), (50.0, 4.0, 4.0)],
    ids=["first scrape", "growth", "no change", "restart counts from zero"],
)
def test_increase(before: float | None, after: float, expected: float) -> None:
    """A counter's growth between scrapes; a drop is a restarted process, so everything after it is new."""
    assert increase(before, after) == expected


B = [(0.01, 2.0), (0.1, 6.0), (1.0, 10.0), (math.inf, 10.0)]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, B, [(0.01, 0.0), (0.1, 0.0), (1.0, 0.0), (math.inf, 0.0)]),
        (
            [(0.01, 1.0), (0.1, 1.0), (1.0, 4.0), (math.inf, 4.0)],
            B,
            [(0.01, 1), (0.1, 5), (1.0, 6), (math.inf, 6)],
        ),
        ([(0.01, 9.0), (0.1, 9.0), (1.0, 20.0), (math.inf, 20.0)], B, B),
    ],
    ids=["first scrape", "observations in between", "restart"],
)
def test_bucket_increase(
    before: list[tuple[float, float]] | None,
    after: list[tuple[float, float]],
    expected: list[tuple[float, float]],
) -> None:
    """The buckets of the observations made between two scrapes."""
    assert bucket_increase(before, after) == expected


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [], None),
        (0.5, [(0.01, 0.0), (math.inf, 0.0)], None),
        (0.5, [(0.01, 4.0), (0.1, 4.0), (math.inf, 4.0)], 0.005),  # halfway into the first bucket
        (0.5, B, 0.0775),  # rank 5 of 10: three quarters into (0.01, 0.1]
        (0.99, B, 0.9775),  # rank 9.9: 97.5 % into (0.1, 1]
        (1.0, B, 1.0),
        (0.99, [(0.1, 1.0), (1.0, 1.0), (math.inf, 10.0)], 1.0),  # in +Inf: the largest finite bound
        (1.5, B, None),
    ],
    ids=[
        "no buckets",
        "no observations",
        "first bucket",
        "p50",
        "p99",
        "p100",
        "+Inf bucket",
        "q out of range",
    ],
)
def test_quantile(q: float, buckets: list[tuple[float, float]], expected: float | None) -> None:
    """Quantiles as Prometheus's histogram_quantile computes them."""
    got = quantile(q, buckets)
    assert got == expected if expected is None or got is None else math.isclose(got, expected)


# --- the frame's numbers --------------------------------------------------------------------------------


def busy_pages() -> tuple[GatewayPage, WorkerPage, str, str]:
    """A gateway and a worker before and after two seconds of work: pages (before) and texts (after)."""
    gw, wk = GatewayPage(), WorkerPage()
    gw.calls.labels("KIS", "FHKST01010100", "ok").inc(100)
    gw.tokens.labels("KIS", "issued").inc()
    gw.rejections.labels("KIS", "deadline_unreachable").inc(3)
    wk.tasks.labels("history-collector", "done").inc(10)
    before_gw, before_wk = gw.text(), wk.text()
    gw.calls.labels("KIS", "FHKST01010100", "ok").inc(36)
    gw.calls.labels("KIS", "FHKST01010100", "throttled").inc(2)
    gw.calls.labels("KIWOOM", "ka10080", "ok").inc(8)
    for _ in range(9):
        gw.latency.labels("KIS").observe(0.02)
    gw.latency.labels("KIS").observe(0.4)
    gw.requests.labels("KIS", "FHKST01010100", "w", "ok").inc(36)
    gw.requests.labels("KIS", "FHKST01010100", "w", "rejected").inc(4)
    gw.rejections.labels("KIS", "deadline_unreachable").inc(1)
    gw.rejections.labels("KIWOOM", "backlog_full").inc(2)
    gw.tokens.labels("KIS", "issued").inc()
    gw.tokens.labels("KIWOOM", "refused").inc()
    gw.contention.labels("KIS").inc(5)
    gw.depth.labels("KIS", "bulk").set(120)
    gw.depth.labels("KIS:ledger", "interactive").set(2)
    gw.inflight.set(12)
    gw.lag.labels("0").set(3)
    gw.lag.labels("1").set(4)
    gw.partitions.set(6)
    gw.jitter.labels("KIS").set(0.025)
    gw.jitter.labels("KIS:ledger").set(0.5)
    gw.upstream_inflight.labels("KIS").set(3)
    wk.tasks.labels("history-collector", "done").inc(4)
    wk.tasks.labels("history-collector", "failed").inc(1)
    wk.tasks.labels("history-collector", "malformed").inc(1)
    wk.outputs.labels("history-collector", "market.candles").inc(12_345)
    return gw, wk, before_gw, before_wk


def busy_view() -> StatusView:
    """The frame of two seconds of work."""
    gw, wk, before_gw, before_wk = busy_pages()
    return build_view(round_of(10.0, before_gw, before_wk), round_of(12.0, gw.text(), wk.text()), TARGETS, AT)


def test_view_rates_come_from_the_interval_between_scrapes() -> None:
    """Calls per second, share of the limit, cap, errors and task rates describe the two seconds between
    scrapes; totals describe the process's life."""
    view = busy_view()
    assert view.interval_s == 2.0
    kis, kiwoom = view.gateway.pacing
    assert (kis.provider, kis.calls_total, kis.calls_per_s, kis.limit_per_s) == ("KIS", 138, 19.0, 20.0)
    assert kis.share == pytest.approx(0.95) and kis.jitter_s == 0.025 and kis.in_call == 3
    assert kis.cap_per_s == pytest.approx(20 / 1.025)
    assert (kiwoom.calls_per_s, kiwoom.jitter_s, kiwoom.cap_per_s) == (4.0, None, None)
    up_kis, up_kiwoom = view.gateway.upstream
    assert (up_kis.errors_total, up_kis.errors_per_s) == (2, 1.0)
    assert up_kis.p50_s == pytest.approx(0.01 + 0.015 * 5 / 9)  # rank 5 of 10, in (0.01, 0.025]
    assert 0.25 < (up_kis.p99_s or 0) <= 0.5
    assert (up_kiwoom.p50_s, up_kiwoom.errors_per_s) == (None, 0.0)
    assert view.gateway.rejections == [
        Rejection("KIS", "deadline_unreachable", 4, 1),
        Rejection("KIWOOM", "backlog_full", 2, 2),
    ]
    tokens = {t.provider: t for t in view.gateway.tokens}
    assert (tokens["KIS"].issued, tokens["KIS"].lock_waits, tokens["KIWOOM"].refused) == (2, 5, 1)
    assert view.gateway.queues == {
        "KIS": {"interactive": 0, "normal": 0, "bulk": 120},
        "KIS:ledger": {"interactive": 2, "normal": 0, "bulk": 0},
    }
    assert (view.gateway.inflight, view.gateway.lag, view.gateway.partitions) == (12, 7, 6)
    assert view.gateway.answers == {"ok": 36, "rejected": 4} and view.gateway.answers_per_s == 20.0
    (worker,) = view.workers
    assert (worker.done, worker.failed, worker.malformed, worker.outputs) == (14, 1, 1, 12_345)
    assert worker.tasks_per_s == 3.0


def test_first_frame_has_totals_and_no_rates() -> None:
    """Without a previous scrape every rate and percentile is unknown (None), totals are there."""
    gw, wk, _, _ = busy_pages()
    view = build_view(None, round_of(12.0, gw.text(), wk.text()), TARGETS, AT)
    assert view.interval_s is None
    assert [p.calls_per_s for p in view.gateway.pacing] == [None, None]
    assert [u.p50_s for u in view.gateway.upstream] == [None, None]
    assert [r.recent for r in view.gateway.rejections] == [None, None]
    assert view.gateway.pacing[0].calls_total == 138 and view.workers[0].tasks_per_s is None


def test_a_service_down_is_shown_down_and_its_rates_restart_after() -> None:
    """A service that did not answer is down with the reason; back up, its rates wait for a second scrape."""
    gw, wk, before_gw, _ = busy_pages()
    down = build_view(round_of(10.0, before_gw, None), round_of(12.0, None, None), TARGETS, AT)
    assert not down.gateway.up and down.gateway.error == "connection refused" and down.gateway.pacing == []
    assert not down.workers[0].up and down.workers[0].error == "connection refused"
    back = build_view(round_of(12.0, None, None), round_of(14.0, gw.text(), wk.text()), TARGETS, AT)
    assert back.gateway.up and back.gateway.pacing[0].calls_per_s is None
    assert back.workers[0].up and back.workers[0].tasks_per_s is None


def test_a_restarted_gateway_counts_from_zero() -> None:
    """Counters lower than before mean a restart: the new values are the interval's, never negative."""
    gw, _, _, _ = busy_pages()
    fresh = GatewayPage()
    fresh.calls.labels("KIS", "FHKST01010100", "ok").inc(6)
    view = build_view(round_of(10.0, gw.text(), None), round_of(12.0, fresh.text(), None), TARGETS, AT)
    assert view.gateway.pacing[0].calls_per_s == 3.0
    assert view.gateway.upstream[0].errors_per_s == 0.0


def test_targets_from_settings_and_flags() -> None:
    """The gateway comes from the setting unless a flag names one; flagged workers replace the stack's."""
    settings = StatusSettings(  # not this machine's .local/stack.env, which names its workers
        _env_file=None,
        gateway_metrics_url="http://10.0.0.5:9000/",
        health_host="127.0.0.2",
    )
    default = targets(settings)
    assert [(e.name, e.url) for e in default.endpoints] == [
        ("gateway", "http://10.0.0.5:9000"),
        ("history-collector", "http://127.0.0.2:18091"),
        ("verification-worker", "http://127.0.0.2:18092"),
        ("recovery-worker", "http://127.0.0.2:18093"),
    ]
    assert default.limits_per_s == {"KIS": settings.kis.rate_per_s, "KIWOOM": settings.kiwoom.rate_per_s}
    flagged = targets(settings, gateway="http://127.0.0.1:1", workers={"mine": "http://127.0.0.1:2"})
    assert [(e.name, e.url) for e in flagged.endpoints] == [
        ("gateway", "http://127.0.0.1:1"),
        ("mine", "http://127.0.0.1:2"),
    ]


def test_command_line_flags() -> None:
    """``apihub status`` parses its flags and refuses a zero interval or a malformed pair."""
    parser = build_parser()
    args = parser.parse_args(
        [
            "status",
            "--once",
            "--interval",
            "0.5",
            "--worker",
            "a=http://x",
            "--limit",
            "kis=2",
            "--gateway",
            "u",
        ]
    )
    assert (args.once, args.interval, args.worker, args.limit, args.gateway) == (
        True,
        0.5,
        [("a", "http://x")],
        [("KIS", 2.0)],
        "u",
    )
    for bad in (["--interval", "0"], ["--worker", "nameonly"], ["--limit", "KIS=fast"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["status", *bad])


# --- the frame ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0"), (987.4, "987"), (9999, "9999"), (12_345, "12.3k"), (999_949, "999.9k"), (4_500_000, "4.5M")],
)
def test_count_fits_five_characters(value: float, expected: str) -> None:
    """Totals are shortened so the columns hold any process's lifetime."""
    assert count(value) == expected


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (rate, None, "-"),
        (rate, 19.04, "19.0"),
        (millis, None, "-"),
        (millis, 0.0025, "2.5"),
        (millis, 0.0481, "48"),
        (percent, None, "-"),
        (percent, 0.953, "95%"),
    ],
)
def test_cell_formats(fn: object, value: float | None, expected: str) -> None:
    """Rates, milliseconds and shares print compactly, ``-`` when not known yet."""
    assert callable(fn) and fn(value) == expected


def many_rejections_view() -> StatusView:
    """A busy frame with more rejection reasons than the table shows, and very long names."""
    gw, _, before_gw, before_wk = busy_pages()
    for i in range(7):
        gw.rejections.labels("KIWOOM", f"a_very_long_rejection_reason_that_goes_on_and_on_{i}").inc(i + 1)
    long_worker = Endpoint("a-worker-with-a-name-far-longer-than-its-column", "http://127.0.0.1:1" + "0" * 60)
    targets_ = Targets((GW, long_worker), TARGETS.limits_per_s)
    before = {GATEWAY: scrape(GW, 10.0, before_gw), long_worker.name: scrape(long_worker, 10.0, before_wk)}
    after = {
        GATEWAY: scrape(GW, 12.0, gw.text()),
        long_worker.name: scrape(long_worker, 12.0, None, "no answer within 2 s"),
    }
    return build_view(before, after, targets_, AT)


FRAMES = {
    "busy": (
        busy_view,
        ["PACING", "KIS         19.0   20.0   95%    25 ms    19.5", "+1", "12.3k", "KIS:ledger"],
    ),
    "first": (
        lambda: build_view(None, round_of(1.0, GatewayPage().text(), WorkerPage().text()), TARGETS, AT),
        ["rates from the next frame", "nothing queued yet", "REJECTED  none by pacing"],
    ),
    "all down": (
        lambda: build_view(None, round_of(1.0, None, None), TARGETS, AT),
        ["gateway  DOWN  connection refused", "history-collector    DOWN  connection refused"],
    ),
    "crowded": (many_rejections_view, ["... and 5 more reasons", "no answer within 2 s"]),
}


@pytest.mark.parametrize("width", [WIDTH, 60])
@pytest.mark.parametrize("name", list(FRAMES))
def test_frames_fit_the_width_and_say_what_matters(name: str, width: int) -> None:
    """Every frame fits the terminal's width (80 or narrower), fits 24 lines, and shows its key facts."""
    build, expected = FRAMES[name]
    lines = render(build(), width)
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    assert len(lines) <= 23
    assert lines[0].startswith("apihub status  2026-11-27 10:31:05 KST")
    if width == WIDTH:
        text = "\n".join(lines)
        for fact in expected:
            assert fact in text, (fact, text)
    assert all(ch.isascii() for line in lines for ch in line)


def test_clip_marks_a_cut_line() -> None:
    """A line longer than the width ends in ``~`` at exactly the width; a short one is untouched."""
    assert clip("abcdef", 4) == "abc~" and clip("abc", 4) == "abc"


# --- the loop, without a terminal -----------------------------------------------------------------------


async def test_once_reports_services_down_with_exit_code_1() -> None:
    """``--once`` against addresses where nothing listens prints one frame with DOWN lines and returns 1."""
    nobody = Targets(
        (
            Endpoint(GATEWAY, f"http://127.0.0.1:{free_port()}"),
            Endpoint("w", f"http://127.0.0.1:{free_port()}"),
        ),
        {"KIS": 20.0},
    )
    out = io.StringIO()
    code = await run_status(nobody, interval_s=0.05, timeout_s=1, once=True, out=out, stop=asyncio.Event())
    text = out.getvalue()
    assert code == 1
    assert "gateway  DOWN  connection refused" in text and "w" + " " * 20 + "DOWN" in text
    assert "\x1b" not in text and text.count("apihub status") == 1


async def test_an_address_with_a_password_is_shown_without_it() -> None:
    """A metrics URL behind basic auth (``http://user:pw@host``) was printed whole on every frame."""
    port = free_port()
    nobody = Targets(
        (
            Endpoint(GATEWAY, f"http://ops:hunter2-secret@127.0.0.1:{port}"),
            Endpoint("w", f"http://ops:hunter2-secret@127.0.0.1:{port}"),
        ),
        {"KIS": 20.0},
    )
    out = io.StringIO()
    await run_status(nobody, interval_s=0.05, timeout_s=1, once=True, out=out, stop=asyncio.Event())
    text = out.getvalue()
    assert "hunter2" not in text and text.count(f"http://ops:***@127.0.0.1:{port}") == 2


async def test_live_loop_stops_when_asked() -> None:
    """The live loop prints frames one after another off a terminal and ends with 0 once stop is set."""
    nobody = Targets((Endpoint(GATEWAY, f"http://127.0.0.1:{free_port()}"),), {"KIS": 20.0})
    out, stop = io.StringIO(), asyncio.Event()
    task = asyncio.create_task(
        run_status(nobody, interval_s=0.05, timeout_s=1, once=False, out=out, stop=stop)
    )
    async with asyncio.timeout(10):
        while out.getvalue().count("apihub status") < 3:
            await asyncio.sleep(0.02)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert "\x1b" not in out.getvalue()


async def test_stop_ends_a_scrape_that_hangs() -> None:
    """A service that accepts the connection but never answers cannot hold up Ctrl-C: the loop returns 0
    within a moment of stop, long before the scrape's own bound."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hanging = Targets((Endpoint(GATEWAY, f"http://127.0.0.1:{silent.getsockname()[1]}"),), {"KIS": 20.0})
        out, stop = io.StringIO(), asyncio.Event()
        task = asyncio.create_task(
            run_status(hanging, interval_s=0.05, timeout_s=60, once=False, out=out, stop=stop)
        )
        await asyncio.sleep(0.3)
        assert not task.done()
        stop.set()
        assert await asyncio.wait_for(task, 2) == 0
    assert out.getvalue() == ""  # no frame: the only scrape never finished


def test_ansi_frame_redraws_in_place() -> None:
    """A terminal frame starts at home, erases each line's rest and everything below the frame."""
    assert ansi_frame(["a", "bc"]) == "\x1b[Ha\x1b[K\nbc\x1b[K\n\x1b[J"


def test_stack_env_gives_the_gateway_address_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``.local/stack.env``'s gateway address is used when the environment names none, and loses to it."""
    stack_env = tmp_path / "stack.env"
    stack_env.write_text(
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092\nAPIHUB_GATEWAY_METRICS_URL=http://127.0.0.1:28081\n"
    )
    monkeypatch.delenv("APIHUB_GATEWAY_METRICS_URL", raising=False)
    assert StatusSettings(_env_file=stack_env).gateway_metrics_url == "http://127.0.0.1:28081"
    monkeypatch.setenv("APIHUB_GATEWAY_METRICS_URL", "http://127.0.0.1:38081")
    assert StatusSettings(_env_file=stack_env).gateway_metrics_url == "http://127.0.0.1:38081"


async def test_scrape_turns_every_failure_into_a_reason() -> None:
    """One round against a loopback server: a 503, an HTML page and a closed port each become a short
    reason, and the good page is read."""
    page = GatewayPage()
    page.inflight.set(5)
    pages = {
        "/bad/metrics": web.Response(status=503, text="starting"),
        "/html/metrics": web.Response(text="<html><body>hello</body></html>\n", content_type="text/html"),
        "/good/metrics": web.Response(body=page.text().encode(), content_type="text/plain"),
    }

    async def answer(request: web.Request) -> web.Response:
        return pages[request.path]

    app = web.Application()
    app.router.add_get("/{name}/metrics", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    endpoints = tuple(Endpoint(name, f"http://127.0.0.1:{port}/{name}") for name in ("bad", "html", "good"))
    endpoints += (Endpoint("closed", f"http://127.0.0.1:{free_port()}"),)
    try:
        async with aiohttp.ClientSession() as session:
            got = await scrape_round(session, endpoints, timeout_s=5)
    finally:
        await runner.cleanup()
    assert got["bad"].error == "HTTP 503"
    assert (got["html"].error or "").startswith("not a metrics page: ")
    assert got["closed"].error == "connection refused"
    good = got["good"].metrics
    assert got["good"].up and good is not None and good.total("apihub_inflight_requests") == 5
