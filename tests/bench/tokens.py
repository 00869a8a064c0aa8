"""Benchmark 5, tokens: 20 gateway processes starting cold at once against one fresh credential.

Each gateway is a real ``apihub gateway`` process with its own instance id, metrics port, consumer group and
single-partition request topic (so every instance must serve a request itself, and so needs a token); all
share the credential, the Redis prefix and one response topic. Once all 20 are ready, each is sent one
request at the same moment. Baseline: 20 workers with their own token logic asking for a token of another
fresh credential at the same moment (the design the hub replaces).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hubclient.headers import request_headers
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, ApiResponse, Provider
from tests.bench.harness import (
    PRICE_TR,
    Bench,
    DirectKis,
    Stack,
    fake_credentials,
    free_port,
    gateway_env,
    gateways,
    log,
    metric_value,
    referee,
    sandbox,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import distinct_price

INSTANCES = 20
ANSWER_TIMEOUT_S = 60

TITLE = f"Tokens: {INSTANCES} gateway instances starting cold at once"
GOAL = "exactly 1 issuance per credential, 0 refused issuance attempts at the referee"
BASELINE = f"{INSTANCES} workers each issuing its own token at once"


async def one_request_each(
    stack: Stack, request_topics: list[str], reply_topic: str
) -> tuple[list[ApiResponse], float]:
    """Send one request to every request topic at once; collect the answers (bounded)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, linger_ms=0, enable_idempotence=True)
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(reply_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        now = int(time.time() * 1000)
        requests = [
            ApiRequest(
                request_id=new_request_id(now),
                provider=Provider.KIS,
                tr_id=PRICE_TR,
                params=distinct_price(),
                caller=f"cold-{i}",
                deadline_ms=now + ANSWER_TIMEOUT_S * 1000,
                created_at_ms=now,
                reply_topic=reply_topic,
                reply_partition=0,
            )
            for i in range(len(request_topics))
        ]
        started = time.monotonic()
        await asyncio.gather(
            *(
                producer.send_and_wait(
                    topic, r.to_json(), key=r.limit_domain.encode(), headers=request_headers(r)
                )
                for topic, r in zip(request_topics, requests, strict=True)
            )
        )
        wanted = {r.request_id for r in requests}
        answers: dict[str, ApiResponse] = {}
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while len(answers) < len(wanted):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        response = ApiResponse.from_json(record.value)
                        if response.request_id in wanted:
                            answers[response.request_id] = response
        return list(answers.values()), time.monotonic() - started
    finally:
        await consumer.stop()
        await producer.stop()


async def baseline(url: str, workers_count: int) -> tuple[dict[str, object], Counter[str]]:
    """Independent workers each issue a token for the same fresh credential at once."""
    credentials = fake_credentials()
    sessions = [aiohttp.ClientSession() for _ in range(workers_count)]
    try:
        workers = [DirectKis(s, url, credentials) for s in sessions]
        results = await asyncio.gather(*(w.issue_token() for w in workers))
        counters = await referee(sessions[0], url, credentials[0])
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return counters, Counter(f"{status}{' ' + code if code else ''}" for status, code in results)


async def run(bench: Bench) -> Result:
    """Start 20 gateways cold, one request each, then count issuances at the referee."""
    instances = 5 if bench.quick else INSTANCES
    credentials = fake_credentials()
    async with sandbox(bench) as url:
        topics = await bench.topics("shared")
        request_topics = await bench.request_topics("own", instances)
        envs = [
            gateway_env(
                bench,
                topics,
                url,
                credentials,
                instance_id=f"bench-tokens-{bench.run_id}-{i:02d}",
                metrics_port=free_port(),
                kafka__request_topic=request_topics[i],
                kafka__group_id=f"{topics.group_id}-{i:02d}",
            )
            for i in range(instances)
        ]
        log(f"tokens: starting {instances} gateway processes at once")
        started = time.monotonic()
        async with gateways(bench, envs, ready_timeout_s=180) as running, aiohttp.ClientSession() as session:
            ready_s = time.monotonic() - started
            log(f"tokens: all {instances} ready after {ready_s:.1f} s; one request each")
            answers, answer_s = await one_request_each(bench.stack, request_topics, topics.responses)
            counters = await referee(session, url, credentials[0])
            contention = sum(
                await asyncio.gather(
                    *(metric_value(session, g.metrics_url, "apihub_lock_contention_total") for g in running)
                )
            )
            refreshes = sum(
                await asyncio.gather(
                    *(metric_value(session, g.metrics_url, "apihub_token_refreshes_total") for g in running)
                )
            )
        base_counters, base_answers = await baseline(url, instances)
    statuses = Counter(r.status.value for r in answers)
    served_by = {r.gateway for r in answers}
    issued, refused = int(counters.get("tokens_issued", 0)), int(counters.get("token_refusals", 0))
    met = issued == 1 and refused == 0 and statuses.get("ok", 0) == instances
    rows = [
        Row(
            "token issuances at the referee",
            f"{issued}",
            f"{base_counters.get('tokens_issued', 0)}",
            "exactly 1",
            verdict(issued == 1, f"{issued} issued"),
        ),
        Row(
            "refused issuance attempts at the referee (EGW00133)",
            f"{refused}",
            f"{base_counters.get('token_refusals', 0)}",
            "0",
            verdict(refused == 0, f"{refused} refused"),
        ),
        Row(
            "requests answered ok / sent; distinct instances that answered",
            f"{statuses.get('ok', 0)} / {instances}; {len(served_by)}",
            "token answers: " + ", ".join(f"{k}: {v}" for k, v in base_answers.most_common()),
            f"{instances} / {instances}; {instances}",
            verdict(statuses.get("ok", 0) == instances, f"{instances - statuses.get('ok', 0)} not ok"),
        ),
        Row("token refreshes requested (sum over instances' apihub_token_refreshes)", f"{refreshes:.0f}"),
        Row("waits for another instance's lock (sum of apihub_lock_contention)", f"{contention:.0f}"),
        Row(
            "time until all instances were ready / until the last answer",
            f"{ready_s:.1f} s / {answer_s:.2f} s",
        ),
    ]
    notes = [
        f"{instances} real gateway processes (`python -m services.cli gateway`) started at the same moment, "
        "each with its own APIHUB_INSTANCE_ID, metrics port, consumer group and single-partition request "
        "topic, all with one fresh KIS credential and one Redis prefix. Requests of one limit domain share "
        "a partition, so in one consumer group only one instance would ever need the token; separate "
        "groups make every instance serve one request, which is what 'each needs a token' requires.",
        f"The gateways fetch no token at start-up: it is fetched by the first request. All instances were "
        f"ready before the requests were sent at once, so the {instances} token fetches raced each other.",
        f"Baseline: {instances} workers each with its own aiohttp session asking `POST /oauth2/tokenP` for "
        "another fresh credential at the same moment, as every worker did before the hub (the sandbox, "
        "like KIS, grants one issuance per minute per appkey and refuses the rest with HTTP 403 EGW00133).",
    ]
    return Result(
        name="tokens",
        title=f"Tokens: {instances} gateway instances starting cold at once",
        goal=GOAL,
        baseline_name=f"{instances} workers each issuing its own token at once",
        headline=Headline(
            figure=f"{issued} issued, {refused} refused ({statuses.get('ok', 0)}/{instances} answered ok)",
            baseline=f"{base_counters.get('tokens_issued', 0)} issued, "
            f"{base_counters.get('token_refusals', 0)} refused",
            goal="1 issued, 0 refused",
            met=met,
            margin=f"{issued - 1:+d} issuances, {refused} refusals",
        ),
        rows=rows,
        notes=notes,
        measures=[
            Measure("issuances", issued, str(issued), True, "1", issued == 1),
            Measure("refused issuances", refused, str(refused), True, "0", refused == 0),
            Measure(
                "not answered ok",
                instances - statuses.get("ok", 0),
                str(instances - statuses.get("ok", 0)),
                True,
                "0",
                statuses.get("ok", 0) == instances,
            ),
            Measure(
                "refused issuances",
                int(str(base_counters.get("token_refusals", 0))),
                str(base_counters.get("token_refusals", 0)),
                True,
                side="baseline",
            ),
        ],
    )
