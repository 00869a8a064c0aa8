"""Benchmark 2, priority: 10,000 ``bulk`` requests queued for one key, then ``interactive`` ones at 2/s.

Hub: one gateway process (default 20 req/s KIS key, backlog raised to 20,000). The bulk requests are produced
straight to the request topic (long deadlines) and the benchmark waits until the gateway has queued them;
then a ``HubClient`` sends interactive requests at 2/s. The goal is judged on their end-to-end latency at the
caller (from submit to the response); the gateway's ``timing.queued_ms`` is shown as information.
Baseline: first in, first out, for the same arrivals behind the same bulk backlog at the same pacing interval,
computed by a deterministic simulation (a measured FIFO run would take the ~8 minutes the backlog needs).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import aiohttp
from aiokafka import AIOKafkaProducer

from hubclient import HubClient, HubError
from hubclient.headers import request_headers
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, Priority, Provider
from services.settings import LOCAL_JITTER_MS
from tests.bench.harness import (
    PRICE_TR,
    Bench,
    fake_credentials,
    free_port,
    gateway_env,
    gateways,
    log,
    metric_value,
    now_ms,
    open_loop,
    percentile,
    referee,
    sandbox,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import PRICE, distinct_price

BULK = 10_000
BULK_DEADLINE_S = 900  # longer than the backlog takes, so none is refused as unreachable
INTERACTIVE_PER_S = 2.0
INTERACTIVE_TIMEOUT_S = 5.0
RATE_PER_S = 20.0
JITTER_MS = LOCAL_JITTER_MS  # the gateway's default jitter budget for the sandbox on this host
INTERVAL_MS = (1000 + JITTER_MS) / RATE_PER_S  # the limiter's spacing: (1 s + J) / rate
GOAL_MS = 2 * INTERVAL_MS + 50

TITLE = "Priority: interactive requests next to 10,000 queued bulk requests"
GOAL = (
    "interactive end-to-end latency p99 at the caller within two pacing intervals plus 50 ms "
    f"({GOAL_MS:.0f} ms at 20 req/s), every interactive request answered ok"
)
BASELINE = "first in, first out (deterministic simulation with the same arrivals and pacing)"


def simulate_fifo(bulk_ahead: int, arrivals_s: list[float], interval_s: float) -> list[float]:
    """Queueing times (s) of requests arriving at ``arrivals_s`` behind ``bulk_ahead`` queued requests, one
    served per ``interval_s`` (GCRA, burst 0), first in first out; the first bulk request is served at 0."""
    last_served = (bulk_ahead - 1) * interval_s if bulk_ahead else -interval_s
    waits = []
    for arrival in sorted(arrivals_s):
        served = max(arrival, last_served + interval_s)
        waits.append(served - arrival)
        last_served = served
    return waits


async def produce_bulk(bench: Bench, topic: str, reply_topic: str, reply_partition: int) -> float:
    """Produce ``BULK`` bulk requests for KIS; returns the seconds it took."""
    started = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=bench.stack.kafka, linger_ms=20, enable_idempotence=True)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        futures = []
        for _ in range(BULK):
            request = ApiRequest(
                request_id=new_request_id(now),
                provider=Provider.KIS,
                tr_id=PRICE_TR,
                params=distinct_price(),
                caller="backfill",
                priority=Priority.BULK,
                deadline_ms=now + BULK_DEADLINE_S * 1000,
                created_at_ms=now,
                reply_topic=reply_topic,
                reply_partition=reply_partition,
            )
            futures.append(
                await producer.send(
                    topic,
                    request.to_json(),
                    key=request.limit_domain.encode(),
                    headers=request_headers(request),
                )
            )
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def wait_queued(session: aiohttp.ClientSession, metrics_url: str, timeout_s: float) -> float:
    """Wait until the gateway's bulk queue stops growing (all read); returns its depth."""
    depth, deadline = 0.0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = await metric_value(session, metrics_url, "apihub_queue_depth", domain="KIS", priority="bulk")
        if now >= BULK * 0.9 and now <= depth:
            return now
        depth = max(depth, now)
    raise RuntimeError(f"the gateway queued only {depth:.0f} of {BULK} bulk requests in {timeout_s:.0f} s")


async def run(bench: Bench) -> Result:
    """Fill the backlog, then measure interactive requests next to it."""
    duration_s = 10.0 if bench.quick else 30.0
    credentials = fake_credentials()
    queued_ms: list[float] = []
    e2e_ms: list[float] = []
    rest_ms: list[float] = []  # end-to-end minus queueing minus the upstream call: Kafka, intake, reply
    arrivals_s: list[float] = []
    answers: Counter[str] = Counter()
    async with sandbox(bench) as url:
        topics = await bench.topics("hub")
        env = gateway_env(
            bench,
            topics,
            url,
            credentials,
            instance_id=f"bench-priority-{bench.run_id}",
            metrics_port=free_port(),
            max_backlog=2 * BULK,
        )
        async with gateways(bench, [env]) as (gateway,), aiohttp.ClientSession() as session:
            client = HubClient.connect(
                bench.stack.kafka,
                caller="dashboard",
                request_topic=topics.requests,
                reply_topic=topics.responses,
            )
            async with client:
                await client.execute("KIS", PRICE_TR, PRICE, timeout=30)  # token and connections warm
                reply_partition = (client._transport.reply_partition + 1) % 6  # bulk answers elsewhere
                log(f"priority: producing {BULK} bulk requests")
                produce_s = await produce_bulk(bench, topics.requests, topics.responses, reply_partition)
                depth_start = await wait_queued(session, gateway.metrics_url, 120)
                calls_start = (await referee(session, url, credentials[0])).get("requests", 0)
                log(f"priority: {depth_start:.0f} bulk queued; interactive at 2/s for {duration_s:.0f} s")
                phase_start = time.monotonic()

                async def fire(_: int) -> None:
                    arrivals_s.append(time.monotonic() - phase_start)
                    t0 = now_ms()
                    try:
                        response = await client.submit(
                            "KIS",
                            PRICE_TR,
                            distinct_price(),
                            timeout=INTERACTIVE_TIMEOUT_S,
                            priority="interactive",
                        )
                    except HubError as exc:
                        answers[type(exc).__name__] += 1
                        return
                    answers[f"{response.status.value}/{response.reason or '-'}"] += 1
                    if response.ok:
                        e2e_ms.append(now_ms() - t0)
                        queued_ms.append(response.timing.queued_ms)
                        rest_ms.append(e2e_ms[-1] - response.timing.queued_ms - response.timing.upstream_ms)

                await open_loop(INTERACTIVE_PER_S, duration_s, fire)
                phase_s = time.monotonic() - phase_start
                depth_end = await metric_value(
                    session, gateway.metrics_url, "apihub_queue_depth", domain="KIS", priority="bulk"
                )
                counters = await referee(session, url, credentials[0])
    calls = int(counters.get("requests", 0)) - int(calls_start)
    fifo_s = simulate_fifo(int(depth_start), arrivals_s, INTERVAL_MS / 1000)
    fifo_ms = [w * 1000 for w in fifo_s]
    q99, e99, f99 = percentile(queued_ms, 99), percentile(e2e_ms, 99), percentile(fifo_ms, 99)
    ok = len(queued_ms)
    sent = len(arrivals_s)
    e2e_met = not math.isnan(e99) and e99 <= GOAL_MS
    met = ok == sent and e2e_met
    rows = [
        Row(
            "interactive end-to-end p50 / p99 / max (ms, caller side: from submit to the response)",
            f"{percentile(e2e_ms, 50):.1f} / {e99:.1f} / {max(e2e_ms, default=math.nan):.1f}",
            f"{percentile(fifo_ms, 50) / 1000:.0f} s / {f99 / 1000:.0f} s / {max(fifo_ms) / 1000:.0f} s "
            "(simulated FIFO queueing alone)",
            f"p99 <= {GOAL_MS:.0f}",
            verdict(e2e_met, f"{e99 - GOAL_MS:+.0f} ms"),
        ),
        Row(
            "interactive queueing p50 / p99 / max (ms, gateway timing.queued_ms; information)",
            f"{percentile(queued_ms, 50):.1f} / {q99:.1f} / {max(queued_ms, default=math.nan):.1f}",
        ),
        Row(
            "end-to-end minus queueing minus upstream call, p50 / p99 (ms: Kafka both ways, intake, reply)",
            f"{percentile(rest_ms, 50):.1f} / {percentile(rest_ms, 99):.1f}",
        ),
        Row(
            "interactive requests answered ok",
            f"{ok} of {len(arrivals_s)}",
            f"0 of {len(arrivals_s)} would make a {INTERACTIVE_TIMEOUT_S:.0f} s deadline",
            "all",
            verdict(ok == sent, f"{sent - ok} not ok"),
        ),
        Row("answers", ", ".join(f"{k}: {v}" for k, v in answers.most_common())),
        Row(
            "bulk backlog at the start / end of the interactive phase",
            f"{depth_start:.0f} / {depth_end:.0f}",
            f"{depth_start:.0f} ahead of the first interactive request",
        ),
        Row(
            "upstream calls during the phase (referee)",
            f"{calls} in {phase_s:.1f} s = {calls / phase_s:.1f}/s, of which {ok} interactive",
            goal="19.6/s",
        ),
        Row("producing the 10,000 bulk requests", f"{produce_s:.1f} s"),
    ]
    notes = [
        f"Goal: two pacing intervals plus 50 ms = 2 x {INTERVAL_MS:.1f} + 50 = {GOAL_MS:.0f} ms (20 req/s "
        f"paced (1 s + J) / rate apart with J = {JITTER_MS:.0f} ms, the default for a broker on this host), "
        "asked of the end-to-end latency the caller sees: from "
        "HubClient.submit to the response (the caller's produce, the gateway's intake and queue, the call "
        "to the sandbox and the reply). The gateway's queued_ms (from reading the request to the start of "
        "its upstream attempt) is shown as information only.",
        f"{len(arrivals_s)} interactive requests (2/s for {duration_s:.0f} s, {INTERACTIVE_TIMEOUT_S:.0f} s "
        "deadline, one caller); with so few samples p99 is close to the maximum, which is shown too.",
        "Bulk: 10,000 FHKST01010100 requests of caller backfill with a 900 s deadline, produced straight "
        "to the request topic; the gateway runs with max_backlog=20,000 (the default 10,000 per domain "
        "would refuse some) and the default readahead_per_partition=12,000, which covers the whole backlog "
        "so the interactive requests behind it in the partition are read at once.",
        "Baseline (simulated, not measured): one FIFO queue served one request per pacing interval "
        f"({INTERVAL_MS:.2f} ms), holding the measured bulk backlog when the first interactive request "
        "arrives, fed with the measured arrival times. A real FIFO run would need the ~8 minutes the "
        "backlog takes.",
        "End-to-end outliers come from outside the queue: with the backlog held, the gateway process keeps "
        "some 300,000 Python objects and a full garbage collection stops its event loop for 100-200 ms "
        "(seen with a gc callback in a diagnostic run of this benchmark, not measured here); a request "
        "read or answered during such a pause waits for it.",
        "The scheduler keeps a reserved 5 % share for bulk; with interactive traffic at 2/s the bulk class "
        "takes the other slots anyway, so the share never delays an interactive request by more than one "
        "slot.",
    ]
    return Result(
        name="priority",
        title=TITLE,
        goal=GOAL,
        baseline_name=BASELINE,
        headline=Headline(
            figure=f"end-to-end p99 {e99:.0f} ms, {ok} of {sent} ok (queueing p99 {q99:.0f} ms)",
            baseline=f"FIFO p99 {f99 / 1000:.0f} s (simulated)",
            goal=f"end-to-end p99 <= {GOAL_MS:.0f} ms, all ok",
            met=met,
            margin=f"{e99 - GOAL_MS:+.0f} ms; {sent - ok} not ok",
        ),
        rows=rows,
        notes=notes,
        measures=[
            Measure("end-to-end p99 (ms)", e99, f"{e99:.0f}", True, f"<= {GOAL_MS:.0f}", e2e_met),
            Measure("not answered ok", sent - ok, str(sent - ok), True, "0", ok == sent),
            Measure("queueing p99 (ms)", q99, f"{q99:.0f}", True),
            Measure(
                "FIFO queueing p99 (s, simulated)", f99 / 1000, f"{f99 / 1000:.0f}", True, side="baseline"
            ),
        ],
    )
