"""The demo's pieces that run without the stack: readiness polling, one call's line, the referee's figures,
the repair summary and following results on an in-memory Kafka."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubclient import HubClient
from hubclient.models import ApiRequest, Provider, Status
from hubclient.testing import InMemoryTransport, failed, ok
from services.demo import calls, repair
from services.demo.calls import _one, _summary, wait_ready
from services.demo.repair import RepairSummary, follow, pacing_lines, run_topics, sandbox_stats
from services.demo.tally import LoopState, hhmm, windows
from services.sandbox.app import create_app
from services.sandbox.settings import SandboxSettings
from services.settings import ClientSettings
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, factory


def closed_url() -> str:
    """An HTTP address nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def gateway_health() -> AsyncIterator[tuple[str, list[int]]]:
    """A ``/readyz`` that answers 503 twice, then 200; yields its base URL and the statuses given."""
    given: list[int] = []

    async def readyz(_: web.Request) -> web.Response:
        status = 503 if len(given) < 2 else 200
        given.append(status)
        return web.json_response({"ready": status == 200}, status=status)

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), given
    finally:
        await server.close()


async def test_wait_ready_polls_until_the_gateway_is_ready(
    gateway_health: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not ready yet is waited out; ready returns."""
    url, given = gateway_health
    await asyncio.wait_for(wait_ready(url, timeout_s=10), 10)
    assert given == [503, 503, 200]


async def test_wait_ready_gives_up_naming_the_gateway() -> None:
    """A gateway that never answers ends in ``TimeoutError`` naming its address."""
    url = closed_url()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"gateway at {url} not ready after 1s"):
        await wait_ready(url, timeout_s=1)
    assert time.monotonic() - started < 5


async def test_the_demo_without_a_gateway_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``apihub demo`` with the gateway down says once that it waits, then ends with one ``error:`` line
    naming the address and the setting, exit 2, no traceback."""
    url = closed_url()
    monkeypatch.setattr(calls, "READY_TIMEOUT_S", 1.0)
    assert await calls.run_demo(ClientSettings(gateway_metrics_url=url), rounds=1) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"waiting for the gateway at {url}/readyz (up to 1s)"
    assert err[-1].startswith(f"error: gateway at {url} not ready after 1s; is the stack up (make up)")
    assert "APIHUB_GATEWAY_METRICS_URL" in err[-1] and len(err) == 2


def response_for(data: Any, *, continuation: dict[str, str] | None = None) -> Any:
    """An ``ok`` response carrying ``data``."""
    request = ApiRequest(
        request_id="00000000-0000-4000-8000-000000000000",
        provider=Provider.KIS,
        tr_id="FHKST01010100",
        params={},
        caller="demo",
        deadline_ms=2_000_000_000_000,
        created_at_ms=1,
        reply_topic="api.responses",
        reply_partition=0,
    )
    return ok(request, data, continuation=continuation)


def test_summary_of_each_answer_kind() -> None:
    """A price, bars (with more pages) or otherwise the message."""
    assert _summary(response_for({"output": {"stck_prpr": "70100"}})) == "price 70100 KRW"
    assert _summary(response_for({"output2": [{}, {}]})) == "2 bars"
    paged = response_for({"stk_min_pole_chart_qry": [{}] * 3}, continuation={"next-key": "x"})
    assert _summary(paged) == "3 bars (more pages)"
    assert _summary(response_for(["not", "a", "dict"])) == ""


PRICE = {"FID_COND_MRKT_DIV_CODE": "J"}


async def test_one_call_line_for_an_answer_and_for_a_refusal() -> None:
    """The line shows the status and the result; a hub error shows ``error`` and the reason."""

    def answer(request: ApiRequest) -> Any:
        if request.params.get("FID_INPUT_ISCD") == "000000":
            return failed(request, Status.REJECTED, "not_permitted", message="no")
        return ok(request, {"output": {"stck_prpr": "70000"}})

    async with HubClient(InMemoryTransport(answer), caller="demo") as hub:
        good = await _one(hub, Provider.KIS, "FHKST01010100", {**PRICE, "FID_INPUT_ISCD": "005930"})
        bad = await _one(hub, Provider.KIS, "FHKST01010100", {**PRICE, "FID_INPUT_ISCD": "000000"})
    assert good[0] is True and good[1].startswith("ok ") and good[1].endswith("price 70000 KRW")
    assert bad[0] is False and bad[1].startswith("rejected")
    assert calls.READY_TIMEOUT_S > 0


async def test_sandbox_stats_reads_the_referee_or_nothing() -> None:
    """The referee's environments come from the sandbox; without one (or unreachable) there are none."""
    server = TestServer(create_app(SandboxSettings()), host="127.0.0.1")
    await server.start_server()
    try:
        environments = await sandbox_stats(str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
    assert {"kis/real", "kis/mock", "kiwoom/real", "kiwoom/mock"} <= set(environments)
    assert await sandbox_stats(None) == {}
    assert await sandbox_stats(closed_url()) == {}


def test_pacing_lines_count_calls_made_during_the_loop() -> None:
    """Calls are the referee's count after less before; idle environments are left out."""
    before = {"kis-real": {"requests": 10}}
    after = {
        "kis-real": {"requests": 70, "max_in_window": 20, "rate_per_s": 20, "over_limit": 0},
        "kiwoom-real": {"requests": 0},
    }
    [line] = pacing_lines(before, after)
    assert line.split()[:3] == ["kis-real", "60", "calls;"] and "(limit 20/s), 0 over" in line
    assert "not reachable" in pacing_lines({}, {})[0]


def test_run_topics_and_summary_line() -> None:
    """Each run has its own topics; the summary line has the documented form."""
    topics = run_topics("abc")
    assert topics.ticks == "demo-abc.market.ticks" and topics.dlq == "demo-abc.workers.dlq"
    summary = RepairSummary(31, 31, 31, 39, 39, 12.5, True, "abc")
    assert summary.line() == "repair loop: injected 31, found 31, repaired 31, verified 39 of 39 windows"


async def test_follow_folds_results_until_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Results and recovered windows are read into the state; following ends once it is settled."""
    topics = run_topics("u1")
    cluster = FakeCluster({topics.verification_results: 1, topics.ticks_recovered: 1})
    monkeypatch.setattr(repair, "AIOKafkaConsumer", factory(cluster, FakeConsumer, []))
    for start, end in windows():
        problems = [{"start": "10:05", "end": "10:06"}] if start == 600 else []
        value = {"symbol": "005930", "start": hhmm(start), "end": hhmm(end), "round": 1, "problems": problems}
        cluster.append(topics.verification_results, orjson.dumps(value))
    recovered = {"symbol": "005930", "start": "10:05", "end": "10:06"}
    cluster.append(topics.ticks_recovered, orjson.dumps(recovered))
    again = {"symbol": "005930", "start": "10:00", "end": "10:30", "round": 2, "problems": []}
    cluster.append(topics.verification_results, orjson.dumps(again))
    state = LoopState(("005930",))
    await asyncio.wait_for(follow("kafka:9092", topics, state, time.monotonic() + 5), 10)
    assert state.settled() and state.found() == {("005930", 605)} and ("005930", 605) in state.repaired
    assert state.verified() == len(windows())
