"""The gateway keeps the broker's limits and answers every request through rebalances, crashes and faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from hubclient import HubClient
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, ApiResponse, Provider, Status
from services.gateway.app import GatewayApp
from services.settings import GatewaySettings
from tests.conftest import Services
from tests.integration.conftest import (
    GatewayFactory,
    Topics,
    appkey,
    free_port,
    gateway_process,
    referee,
    sandbox_server,
)
from tests.integration.test_round_trip import hub, read_all
from tests.params import PRICE, distinct_price

ORDER = {
    "CANO": "12345678",
    "ACNT_PRDT_CD": "01",
    "PDNO": "005930",
    "ORD_DVSN": "00",
    "ORD_UNPR": "70000",
    "EXCG_ID_DVSN_CD": "KRX",  # the rest of the published order body, sent as the KIS samples do
    "SLL_TYPE": "",
    "CNDT_PRIC": "",
}


async def load(
    client: HubClient,
    count: int,
    *,
    timeout: float = 60,
    tr_id: str = "FHKST01010100",
    params: dict[str, str] | None = None,
) -> list[ApiResponse]:
    """``count`` concurrent requests from one client; every terminal response, raised or not."""
    return list(
        await asyncio.gather(
            *(client.submit("KIS", tr_id, params or distinct_price(), timeout=timeout) for _ in range(count))
        )
    )


async def test_limit_held_across_rebalance(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """A second gateway joining and the first leaving mid-run never push KIS over 20 calls a second."""
    second = gateway_settings.model_copy(update={"instance_id": gateway_settings.instance_id + "-b"})
    clients = [hub(services, topics, caller=f"worker-{i}") for i in range(3)]
    for client in clients:
        await client.start()
    first_app = GatewayApp(gateway_settings)
    await first_app.start()
    try:
        work = asyncio.gather(*(load(c, 50) for c in clients))
        await asyncio.sleep(1.5)
        async with GatewayApp(second):
            await asyncio.sleep(1.5)
            await first_app.stop()
            results = [r for batch in await work for r in batch]
    finally:
        await first_app.stop()
        for client in clients:
            await client.stop()
    assert Counter(r.status for r in results) == {Status.OK: 150}
    assert {r.gateway for r in results} == {gateway_settings.instance_id, second.instance_id}
    counters = await referee(sandbox_url, "kis/real", appkey(gateway_settings))
    assert counters["over_limit"] == 0 and counters["max_in_window"] <= 20
    assert counters["tokens_issued"] == 1


async def test_deadline_unreachable_is_logged(
    services: Services, topics: Topics, gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests that cannot meet their deadline are refused at once, each with a ratelimit.rejected event."""
    async with gateway(), hub(services, topics) as client:
        # Warm up first (token, connections, fresh topics' leaders) so the 1 s deadlines measure pacing alone.
        await client.execute("KIS", "FHKST01010100", PRICE, timeout=20)
        with caplog.at_level(logging.WARNING, logger="services.gateway.service"):
            results = await load(client, 60, timeout=1.0)
    by_status = Counter((r.status, r.reason) for r in results)
    assert by_status[(Status.OK, None)] >= 10, by_status
    assert by_status[(Status.REJECTED, "deadline_unreachable")] >= 20
    assert sum(by_status.values()) == 60
    events = [r for r in caplog.records if r.getMessage() == "ratelimit.rejected"]
    assert len(events) == by_status[(Status.REJECTED, "deadline_unreachable")]
    fields = events[0].fields  # type: ignore[attr-defined]
    for name in (
        "provider",
        "reason",
        "queue_depth",
        "estimated_wait_ms",
        "deadline_ms",
        "caller",
        "request_id",
    ):
        assert name in fields, name
    assert fields["reason"] == "deadline_unreachable" and fields["estimated_wait_ms"] > 0


async def test_faults_end_every_request_with_the_right_status(
    services: Services, topics: Topics, gateway_settings: GatewaySettings
) -> None:
    """With 5xx answers, cut connections and order timeouts injected, every request ends once and in order."""
    faults = {
        "error_rate": 0.15,
        "drop_rate": 0.1,
        "order_timeout_rate": 0.2,
        "latency_ms": 20,
        "latency_jitter_ms": 15,
        "latency_distribution": "uniform",
        "seed": 11,
    }
    async with sandbox_server(faults=faults) as url:
        settings = gateway_settings.model_copy(
            update={"kis": gateway_settings.kis.model_copy(update={"base_url": f"{url}/kis/real"})}
        )
        async with GatewayApp(settings), hub(services, topics) as client:
            reads, orders = await asyncio.gather(
                load(client, 60),
                asyncio.gather(
                    *(
                        client.submit("KIS", "TTTC0012U", {**ORDER, "ORD_QTY": str(i + 1)}, timeout=60)
                        for i in range(20)
                    )
                ),
            )
        counters = await referee(url, "kis/real", appkey(settings))
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_sandbox/orders") as resp:
            ledger = [o for o in (await resp.json())["orders"] if o["appkey"] == appkey(settings)]
    assert {r.status for r in reads} <= {Status.OK, Status.UPSTREAM_ERROR}
    assert Counter(r.status for r in reads)[Status.OK] >= 40  # retries carry most reads through
    assert all(r.reason in ("transient", "unreachable") for r in reads if r.status is Status.UPSTREAM_ERROR)
    assert {r.status for r in orders} <= {Status.OK, Status.UNKNOWN_OUTCOME, Status.UPSTREAM_ERROR}
    assert any(r.status is Status.UNKNOWN_OUTCOME for r in orders)
    quantities = Counter(o["quantity"] for o in ledger)
    assert max(quantities.values()) == 1, "an order reached the broker twice"
    ok_orders = {int(r.data["output"]["ODNO"]) for r in orders if r.status is Status.OK}
    assert ok_orders <= {int(o["order_no"]) for o in ledger}
    assert counters["over_limit"] == 0 and counters["max_in_window"] <= 20


async def test_orders_retried_under_their_idempotency_key_reach_the_broker_once(
    services: Services, topics: Topics, gateway_settings: GatewaySettings
) -> None:
    """Each order is sent, then sent again under a new request_id with the same idempotency_key (a caller
    retrying after a timeout): the broker's ledger holds every order once; a retry of an executed order
    gets its answer (the same order number, ``shared_with`` naming the first), one of an order whose
    outcome is unknown gets ``unknown_outcome``."""
    async with sandbox_server(faults={"order_timeout_rate": 0.3, "seed": 5}) as url:
        settings = gateway_settings.model_copy(
            update={"kis": gateway_settings.kis.model_copy(update={"base_url": f"{url}/kis/real"})}
        )
        async with GatewayApp(settings), hub(services, topics) as client:

            async def twice(i: int) -> tuple[ApiResponse, ApiResponse]:
                params, key = {**ORDER, "ORD_QTY": str(i + 1)}, f"it-order-{i}"
                first = await client.submit("KIS", "TTTC0012U", params, timeout=60, idempotency_key=key)
                again = await client.submit("KIS", "TTTC0012U", params, timeout=60, idempotency_key=key)
                return first, again

            pairs = await asyncio.gather(*(twice(i) for i in range(12)))
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_sandbox/orders") as resp:
            ledger = [o for o in (await resp.json())["orders"] if o["appkey"] == appkey(settings)]
    assert Counter(int(o["quantity"]) for o in ledger) == Counter(range(1, 13))
    assert {first.status for first, _ in pairs} == {Status.OK, Status.UNKNOWN_OUTCOME}
    for first, again in pairs:
        assert again.request_id != first.request_id and again.shared_with == first.request_id
        assert (again.status, again.data) == (first.status, first.data)


async def arrivals_in_flight(sandbox: str, key: str, answered: Callable[[], int], timeout_s: float) -> int:
    """Wait (bounded) until calls are inside the upstream: more reads and orders arrived at the referee
    than answers reached the caller, after at least ten arrivals; returns that difference (0 on timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    difference = 0
    while asyncio.get_running_loop().time() < deadline:
        by_tr_id = (await referee(sandbox, "kis/real", key)).get("by_tr_id", {})
        arrived = int(by_tr_id.get("FHKST01010100", 0)) + int(by_tr_id.get("TTTC0012U", 0))
        difference = arrived - answered()
        if arrived >= 10 and difference > 0:
            return difference
        await asyncio.sleep(0.05)
    return difference


async def test_kill9_answers_every_request_once_and_never_resends_orders(
    services: Services, topics: Topics, gateway_settings: GatewaySettings
) -> None:
    """After SIGKILL mid-run and a restart every request has one answer and no order is sent twice. The
    upstream is slow (300 ms a call) and the kill comes while calls are inside it: the gateway's
    ``apihub_upstream_inflight{provider="KIS"}`` gauge is read just before the kill."""
    async with sandbox_server(faults={"latency_ms": 300}) as url:
        settings = gateway_settings.model_copy(
            update={"kis": gateway_settings.kis.model_copy(update={"base_url": f"{url}/kis/real"})}
        )
        async with hub(services, topics) as client:
            async with gateway_process(settings) as first:
                read_tasks = [
                    asyncio.ensure_future(client.submit("KIS", "FHKST01010100", distinct_price(), timeout=90))
                    for _ in range(60)
                ]
                order_tasks = [
                    asyncio.ensure_future(
                        client.submit("KIS", "TTTC0012U", {**ORDER, "ORD_QTY": str(i + 1)}, timeout=90)
                    )
                    for i in range(30)
                ]
                tasks = read_tasks + order_tasks
                work = asyncio.gather(asyncio.gather(*read_tasks), asyncio.gather(*order_tasks))
                in_flight = await arrivals_in_flight(
                    url, appkey(settings), lambda: sum(t.done() for t in tasks), timeout_s=30
                )
                gauge = await first.metric("apihub_upstream_inflight", provider="KIS")
                await first.kill()
            async with gateway_process(settings):  # the same instance id: a restarted pod
                reads, orders = await work
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_sandbox/orders") as resp:
            ledger = [o for o in (await resp.json())["orders"] if o["appkey"] == appkey(settings)]
        counters = await referee(url, "kis/real", appkey(settings))
    assert in_flight > 0, "no call had reached the sandbox without being answered when the kill came"
    assert gauge is not None and gauge > 0, (
        f"apihub_upstream_inflight{{provider=KIS}} just before the kill: {gauge} (None: not exported); "
        f"the referee saw {in_flight} arrival(s) not yet answered"
    )
    assert Counter(r.status for r in reads) == {Status.OK: 60}
    assert {r.status for r in orders} <= {Status.OK, Status.UNKNOWN_OUTCOME}
    quantities = Counter(o["quantity"] for o in ledger)
    assert quantities and max(quantities.values()) == 1, "an order reached the broker twice"
    assert Counter(r.status for r in orders)[Status.OK] <= len(ledger) <= 30
    # Redelivered requests may be answered again, but only with the same stored answer.
    answers: dict[str, set[str]] = {}
    for record in await read_all(services, topics.responses, 90, timeout_s=30):
        response = ApiResponse.from_json(record.value)
        answers.setdefault(response.request_id, set()).add(response.status.value)
    assert len(answers) == 90 and all(len(s) == 1 for s in answers.values())
    assert counters["over_limit"] == 0 and counters["tokens_issued"] == 1


@asynccontextmanager
async def private_redis(port: int, tmp: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A redis-server of this test's own, so it can be restarted without touching the others'."""
    proc = await asyncio.create_subprocess_exec(
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        tmp,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary to restart")
async def test_redis_restart_costs_no_token_issuance(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str, tmp_path: object
) -> None:
    """Losing Redis mid-run (down, then back empty) keeps serving reads and issues no second token."""
    port = free_port()
    settings = gateway_settings.model_copy(
        update={"redis": gateway_settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{port}/0"})}
    )
    async with hub(services, topics) as client:
        async with private_redis(port, str(tmp_path)) as redis_proc:
            app = GatewayApp(settings)
            await app.start()
            before = await load(client, 10, timeout=30)
            redis_proc.kill()
            await redis_proc.wait()
            during = await load(client, 10, timeout=30)
        async with private_redis(port, str(tmp_path)):
            after = await load(client, 10, timeout=30)
            await app.stop()
    assert Counter(r.status for r in before + during + after) == {Status.OK: 30}
    counters = await referee(sandbox_url, "kis/real", appkey(settings))
    assert counters["tokens_issued"] == 1 and counters["token_refusals"] == 0
    assert counters["over_limit"] == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary to restart")
async def test_two_gateways_sharing_a_key_keep_its_limit_while_redis_is_lost(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str, tmp_path: object
) -> None:
    """Requests without a Kafka key land on every partition, so both gateways serve the one KIS key. Their
    Redis is killed mid-run and comes back empty: each keeps to the quota its assignment gave it (half the
    key), and the broker never sees more than 20 calls in a second; every request is answered."""
    port = free_port()
    first = gateway_settings.model_copy(
        update={"redis": gateway_settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{port}/0"})}
    )
    second = first.model_copy(update={"instance_id": first.instance_id + "-b"})
    count, now_ms = 240, int(time.time() * 1000)
    requests = [
        ApiRequest(
            request_id=new_request_id(),
            provider=Provider.KIS,
            tr_id="FHKST01010100",
            params=distinct_price(),
            caller="unkeyed",
            deadline_ms=now_ms + 120_000,
            created_at_ms=now_ms,
            reply_topic=topics.responses,
            reply_partition=0,
        )
        for _ in range(count)
    ]
    async with contextlib.AsyncExitStack() as stack:
        redis_proc = await stack.enter_async_context(private_redis(port, str(tmp_path)))
        apps = [await stack.enter_async_context(GatewayApp(s)) for s in (first, second)]
        async with asyncio.timeout(30):
            while sorted((a.quota.serving, a.quota.rank) for a in apps) != [(2, 0), (2, 1)]:
                await asyncio.sleep(0.1)
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
        await producer.start()
        try:
            for request in requests:  # no key: the partitioner spreads them over the partitions
                await producer.send(topics.requests, request.to_json())
            await producer.flush()
        finally:
            await producer.stop()
        await asyncio.sleep(3)
        redis_proc.kill()
        await redis_proc.wait()
        await asyncio.sleep(4)
        await stack.enter_async_context(private_redis(port, str(tmp_path)))
        answers = await read_all(services, topics.responses, count, timeout_s=90)
    responses = [ApiResponse.from_json(r.value) for r in answers if r.value is not None]
    assert {r.request_id for r in responses} == {r.request_id for r in requests}
    assert Counter(r.status for r in responses) == {Status.OK: count}
    assert {r.gateway for r in responses} == {first.instance_id, second.instance_id}
    counters = await referee(sandbox_url, "kis/real", appkey(first))
    assert counters["over_limit"] == 0 and counters["max_in_window"] <= 20
