"""apihub audit and apihub replay as commands, against real Kafka, Redis, gateways and a sandbox process."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hubclient.headers import DLQ_SOURCE, request_headers
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, Status
from services.audit.timerange import KST
from services.settings import KisSettings, KiwoomSettings
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import (
    GatewayFactory,
    Topics,
    fake_credentials,
    read_committed,
    sandbox_server,
)
from tests.integration.test_round_trip import hub
from tests.params import PRICE

KIWOOM_INFO = {"stk_cd": "005930"}
KIWOOM_ORDER = {"dmst_stex_tp": "KRX", "stk_cd": "005930", "ord_qty": "1", "ord_uv": "", "trde_tp": "3"}
SECRET = "PSnotarealkey0000000000000000000000"  # stands for a credential a caller put in its parameters
COMMAND_TIMEOUT_S = 90


async def apihub(*args: str, services: Services) -> tuple[int, str, str]:
    """Run ``apihub ARGS`` as its own process (no ``APIHUB_*`` from the shell); exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *processes.apihub_argv(*args),
        cwd=processes.REPO,
        env=processes.clean_env(APIHUB_REDIS__URL=services.redis_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def iso_utc(at_ms: int) -> str:
    """``2026-11-27T00:00:00.000Z``: an instant in UTC with its offset."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bare_kst(at_ms: int) -> str:
    """``2026-11-27T09:00:00.000``: the instant in KST without an offset (the command reads it as KST)."""
    return datetime.fromtimestamp(at_ms / 1000, KST).replace(tzinfo=None).isoformat(timespec="milliseconds")


async def send_unanswerable(services: Services, topics: Topics) -> ApiRequest:
    """A valid request whose reply topic the gateway may not write to: it is dead-lettered, never answered."""
    now_ms = int(time.time() * 1000)
    request = ApiRequest(
        request_id=new_request_id(now_ms),
        provider="KIS",
        tr_id="FHKST01010100",
        params={**PRICE, "appkey": SECRET},
        caller="audit-test",
        deadline_ms=now_ms + 1_000,
        created_at_ms=now_ms,
        reply_topic="nowhere.allowed",
        reply_partition=0,
    )
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.requests, request.to_json(), key=b"KIS", headers=request_headers(request)
        )
    finally:
        await producer.stop()
    return request


def source_args(services: Services, topics: Topics, start_ms: int, end_ms: int) -> list[str]:
    """The range (start in UTC with Z, end as bare KST) and this test's topics."""
    return [
        "--from",
        iso_utc(start_ms),
        "--to",
        bare_kst(end_ms),
        "--bootstrap-servers",
        services.kafka_bootstrap,
        "--requests-topic",
        topics.requests,
        "--responses-topic",
        topics.responses,
        "--quiet",
    ]


async def test_audit_joins_requests_and_answers(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """Through a gateway: audit shows every request with its status, the percentiles, the status mix and the
    one request that was dead-lettered and never answered, as a table and as JSONL, without a secret."""
    start_ms = int(time.time() * 1000)
    async with gateway(), hub(services, topics, caller="audit-test") as client:
        answers = [
            await client.submit("KIS", "FHKST01010100", PRICE, timeout=20),
            await client.submit("KIS", "FHKST01010100", {**PRICE, "FID_INPUT_ISCD": ""}, timeout=20),
            await client.submit("KIWOOM", "ka10001", KIWOOM_INFO, timeout=20),
        ]
        lost = await send_unanswerable(services, topics)
        (letter,) = await read_committed(services.kafka_bootstrap, topics.dlq, count=1)
    assert [a.status for a in answers] == [Status.OK, Status.UPSTREAM_ERROR, Status.OK]
    await asyncio.sleep(max(0.0, lost.deadline_ms / 1000 - time.time()) + 0.2)  # its deadline has passed
    end_ms = int(time.time() * 1000) + 1_000
    args = source_args(services, topics, start_ms - 1_000, end_ms)

    code, table, _ = await apihub("audit", *args, "--dlq-topic", topics.dlq, services=services)
    assert code == 0, table
    lines = table.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "requests 4" in table
    assert "ok 2 (50.0%)" in table and "upstream_error 1 (25.0%)" in table and "unanswered 1 (25.0%)" in table
    assert "latency  p50 " in table and " p95 " in table and " p99 " in table
    assert lost.request_id in table and "dead-lettered: reply_topic_not_allowed" in table
    rows = [line for line in lines if line[:2].isdigit() and line[2] == ":"]
    assert [row.split()[1:3] for row in rows] == [
        ["KIS", "FHKST01010100"],
        ["KIS", "FHKST01010100"],
        ["KIWOOM", "ka10001"],
        ["KIS", "FHKST01010100"],
    ]
    assert [row.split()[4] for row in rows] == ["ok", "upstream_error", "ok", "unanswered"]
    assert SECRET not in table

    code, jsonl, summary = await apihub(
        "audit", *args, "--dlq-topic", topics.dlq, "--format", "jsonl", "--with-data", services=services
    )
    assert code == 0
    objects = [orjson.loads(line) for line in jsonl.splitlines()]
    assert [o["request_id"] for o in objects] == [*(a.request_id for a in answers), lost.request_id]
    assert [o["outcome"] for o in objects] == ["ok", "upstream_error", "ok", "unanswered"]
    assert all(o["latency_ms"] >= 0 and o["answered_at_ms"] >= o["requested_at_ms"] for o in objects[:3])
    assert objects[0]["data"]["output"]["stck_prpr"] == answers[0].data["output"]["stck_prpr"]
    assert objects[3]["dead_letter"].startswith("reply_topic_not_allowed")
    assert objects[3]["request_position"] == dict(letter.headers)[DLQ_SOURCE].decode()  # the letter's source
    assert objects[3]["params"]["appkey"] == "***"
    assert SECRET not in jsonl and "requests 4" in summary  # the summary goes to stderr with rows on stdout

    code, only, _ = await apihub(
        "audit",
        *args,
        "--dlq-topic",
        topics.dlq,
        "--format",
        "jsonl",
        "--status",
        "unanswered",
        "--provider",
        "KIS",
        services=services,
    )
    assert code == 0 and [orjson.loads(line)["request_id"] for line in only.splitlines()] == [lost.request_id]

    code, _, err = await apihub("audit", "--from", "yesterday", services=services)
    assert code == 2 and "KST" in err


async def ledger(url: str) -> list[dict[str, object]]:
    """Every order the sandbox accepted."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_sandbox/orders") as resp:
        orders: list[dict[str, object]] = (await resp.json())["orders"]
    return orders


async def end_offsets(services: Services, topic: str, partitions: int) -> int:
    """The sum of ``topic``'s end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=services.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def test_replay_compares_with_the_log_and_sends_orders_only_by_name(
    services: Services, topics: Topics, gateway: GatewayFactory, unique: str
) -> None:
    """Replayed to the sandbox through the replay's own hub: a dry run sends nothing; a failing KIS shows as a
    difference while Kiwoom's answer is the same; the recorded order is skipped until named, then sent."""
    async with sandbox_server() as url:
        kis_key, kis_secret = fake_credentials()
        kw_key, kw_secret = fake_credentials()
        upstream = {
            "kis": KisSettings(base_url=f"{url}/kis/real", appkey=kis_key, appsecret=kis_secret),
            "kiwoom": KiwoomSettings(base_url=f"{url}/kiwoom/real", appkey=kw_key, secretkey=kw_secret),
        }
        start_ms = int(time.time() * 1000)
        async with gateway(**upstream), hub(services, topics, caller="replay-test") as client:
            price = await client.submit("KIS", "FHKST01010100", PRICE, timeout=20)
            info = await client.submit("KIWOOM", "ka10001", KIWOOM_INFO, timeout=20)
            order = await client.submit("KIWOOM", "kt10000", KIWOOM_ORDER, timeout=20)
        assert [r.status for r in (price, info, order)] == [Status.OK] * 3
        assert len(await ledger(url)) == 1
        order_id = order.request_id
        recorded_requests = await end_offsets(services, topics.requests, 6)
        args = [
            "replay",
            *source_args(services, topics, start_ms - 1_000, int(time.time() * 1000) + 1_000),
            "--sandbox-url",
            url,
            "--replay-prefix",
            f"t{unique}.replay",
        ]

        code, dry, _ = await apihub(*args, "--dry-run", services=services)
        assert code == 0, dry
        assert "recorded 3: send 2, skip 1 (non_idempotent 1)" in dry and "2 would send" in dry
        assert order_id in dry and "--include-order" in dry
        assert all(len(line) <= 80 for line in dry.splitlines())

        await processes.set_faults(url, {"error_rate": 1.0, "targets": ["kis/real"]})
        code, out, err = await apihub(*args, "--format", "jsonl", services=services)
        assert code == 1, (out, err)  # a difference
        rows = {row["request_id"]: row for row in map(orjson.loads, out.splitlines())}
        assert rows[price.request_id]["verdict"] == "different"
        assert rows[price.request_id]["differences"][0]["path"] == "status"
        assert rows[price.request_id]["differences"][0]["recorded"] == "ok"
        assert rows[info.request_id]["verdict"] == "same" and rows[info.request_id]["differences"] == []
        assert rows[order_id]["verdict"] == "skipped" and rows[order_id]["reason"] == "non_idempotent"
        assert rows[info.request_id]["replay_request_id"] not in (None, info.request_id)
        assert len(await ledger(url)) == 1, "the order was sent again without being named"

        await processes.set_faults(url, {"error_rate": 0.0})
        code, out, err = await apihub(
            *args, "--tr-id", "kt10000", "--include-order", order_id, "--format", "jsonl", services=services
        )
        (row,) = map(orjson.loads, out.splitlines())
        assert row["reason"] == "named" and row["replayed_status"] == "ok", (row, err)
        assert len(await ledger(url)) == 2, "the named order was sent once"

        code, _, err = await apihub(*args, "--include-order", new_request_id(), services=services)
        assert code == 2 and "not in the range" in err

    # The replays went through the replay hub's topics, never into the recorded log or the gateway's group.
    assert await end_offsets(services, topics.requests, 6) == recorded_requests
    assert await end_offsets(services, f"t{unique}.replay.requests", 6) == 3  # 2, then the named order
    replayed = await read_committed(services.kafka_bootstrap, f"t{unique}.replay.requests")
    callers = {ApiRequest.from_json(r.value).caller for r in replayed}
    assert callers == {"replay/replay-test"}
