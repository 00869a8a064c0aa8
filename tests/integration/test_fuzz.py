"""Fuzzed input (issue 10): ten thousand malformed records, generated from a seed, mixed with another
caller's valid calls. The gateway stays up and ready, every malformed record is dead-lettered or answered
without reaching the broker, and every valid call is answered ok."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hubclient.headers import (
    CORRELATION_ID,
    DLQ_REASON,
    DLQ_SOURCE,
    REPLY_PARTITION,
    REPLY_TOPIC,
    encode_partition,
    header_value,
)
from hubclient.models import ApiResponse, Status
from services.settings import KafkaSettings, WorkerSettings, WorkerTopics
from services.verification.task import VerificationTask
from services.worker.outputs import Outputs
from services.worker.runtime import TaskLoop
from services.worker.task import Task, parse_task
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, read_committed
from tests.integration.test_round_trip import hub
from tests.params import PRICE

MALFORMED = 10_000
VALID = 40
SEED = 10
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Case:
    """One malformed record: its kind, value, headers and the request id an answer would carry."""

    kind: str
    value: bytes | None
    headers: Headers
    request_id: str | None  # set when the record can be answered (a readable, allowed reply address)


def _uuid(rng: random.Random) -> str:
    return "%08x-%04x-4%03x-8%03x-%012x" % (  # noqa: UP031 - a seeded UUID shape
        rng.getrandbits(32),
        rng.getrandbits(16),
        rng.getrandbits(12),
        rng.getrandbits(12),
        rng.getrandbits(48),
    )


def _body(rng: random.Random, topics: Topics, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "request_id": _uuid(rng),
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "params": dict(PRICE),
        "caller": "fuzzer",
        "deadline_ms": 2**41,
        "created_at_ms": 1,
        "reply_topic": topics.responses,
        "reply_partition": 0,
    }
    body.update(fields)
    return body


def _answerable(body: dict[str, object], topics: Topics) -> str | None:
    ok = body.get("reply_topic") == topics.responses and body.get("reply_partition") in (0, 1)
    return str(body["request_id"]) if ok and isinstance(body.get("request_id"), str) else None


def _json_case(kind: str, body: dict[str, object], topics: Topics, headers: Headers | None = None) -> Case:
    return Case(kind, orjson.dumps(body), headers or [], _answerable(body, topics))


def _random_bytes(rng: random.Random, topics: Topics) -> Case:
    return Case("random_bytes", rng.randbytes(rng.randint(0, 300)), [], None)


def _truncated(rng: random.Random, topics: Topics) -> Case:
    whole = orjson.dumps(_body(rng, topics))
    return Case("truncated_json", whole[: rng.randint(0, len(whole) - 1)], [], None)


def _oversized(rng: random.Random, topics: Topics) -> Case:
    body = _body(rng, topics, params={**PRICE, "FID_INPUT_ISCD": "9" * rng.randint(70_000, 90_000)})
    return Case("oversized_json", orjson.dumps(body), [], None)  # too large to read the body's address


def _params_too_large(rng: random.Random, topics: Topics) -> Case:
    big = {f"K{i}": "1" for i in range(rng.randint(65, 200))} if rng.random() < 0.5 else {"V": "x" * 5000}
    return _json_case("params_too_large", _body(rng, topics, params={**PRICE, **big}), topics)


def _wrong_type(rng: random.Random, topics: Topics) -> Case:
    field, value = rng.choice(
        [
            ("params", ["a", "b"]),
            ("params", "FID=1"),
            ("caller", 17),
            ("deadline_ms", "soon"),
            ("created_at_ms", None),
            ("priority", "urgent"),
            ("reply_partition", "zero"),
            ("reply_partition", 1.5),
            ("request_id", 12345),
            ("tr_id", ["FHKST01010100"]),
            ("continuation", "next"),
        ]
    )
    return _json_case("wrong_type", _body(rng, topics, **{field: value}), topics)


def _unknown_call(rng: random.Random, topics: Topics) -> Case:
    fields: dict[str, object] = rng.choice(
        [{"provider": "NOBODY"}, {"tr_id": "ZZZZ" + str(rng.randint(1000, 9999))}, {"tr_id": "T" * 500}]
    )
    return _json_case("unknown_provider_or_tr_id", _body(rng, topics, **fields), topics)


def _reply_address(rng: random.Random, topics: Topics) -> Case:
    body = _body(rng, topics)
    choice = rng.randrange(4)
    if choice == 0:
        del body["reply_topic"]
    elif choice == 1:
        body["reply_topic"] = topics.requests  # a topic that is not a reply topic
    elif choice == 2:
        body["reply_topic"] = "no.such.topic"
    else:
        body["reply_partition"] = rng.choice([7, 99, 2**30])  # a reply partition that does not exist
    return Case("reply_address", orjson.dumps(body), [], None)


def _deadline(rng: random.Random, topics: Topics) -> Case:
    deadline_ms, created_at_ms = rng.choice([(1_000, 1), (5, 10), (0, 1), (-1, 1), (2**41, 2**42)])
    body = _body(rng, topics, deadline_ms=deadline_ms, created_at_ms=created_at_ms)
    return _json_case("past_or_absurd_deadline", body, topics)


def _header_injection(rng: random.Random, topics: Topics) -> Case:
    body = _body(rng, topics, provider="NOBODY")
    del body["reply_topic"]
    request_id = _uuid(rng)
    headers: Headers = [
        (CORRELATION_ID, request_id.encode()),
        (REPLY_TOPIC, topics.responses.encode()),
        (REPLY_PARTITION, encode_partition(1)),
        (DLQ_REASON, b"ok\r\nX-Injected: 1"),  # a forged dead-letter reason must not survive
        (DLQ_SOURCE, b"elsewhere:0:0"),
        ("apihub-caller", b"\x00\xff" * 8),
        ("x-\r\n-inject", rng.randbytes(32)),
    ]
    value = orjson.dumps(body) if rng.random() < 0.5 else orjson.dumps(body)[:-3]
    return Case("header_injection", value, headers, request_id)


GENERATORS: list[Callable[[random.Random, Topics], Case]] = [
    _random_bytes,
    _truncated,
    _oversized,
    _params_too_large,
    _wrong_type,
    _unknown_call,
    _reply_address,
    _deadline,
    _header_injection,
]


def malformed_cases(topics: Topics, count: int = MALFORMED, seed: int = SEED) -> list[Case]:
    """``count`` malformed records, the same ones for the same seed; oversized ones are kept rare."""
    rng = random.Random(seed)
    weights = [20, 15, 1, 8, 20, 10, 10, 8, 8]
    return [rng.choices(GENERATORS, weights)[0](rng, topics) for _ in range(count)]


async def test_ten_thousand_malformed_requests_beside_valid_traffic(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """Every malformed record is dead-lettered or answered without an ok, valid calls are all ok, the
    gateway stays ready."""
    cases = malformed_cases(topics)
    assert malformed_cases(topics)[:50] == cases[:50]  # the same seed gives the same cases
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, max_request_size=1_048_576)
    started = time.monotonic()
    async with gateway() as app, hub(services, topics, caller="valid-worker") as client:
        await producer.start()
        try:

            async def valid(i: int) -> tuple[Status, float]:
                await asyncio.sleep(i * 0.2)
                sent = time.monotonic()
                response = await client.execute("KIS", "FHKST01010100", PRICE, timeout=30)
                return response.status, time.monotonic() - sent

            valid_tasks = [asyncio.create_task(valid(i)) for i in range(VALID)]
            futures = []
            for i, case in enumerate(cases):
                futures.append(
                    await producer.send(topics.requests, case.value, key=b"KIS", headers=case.headers)
                )
                if i % 500 == 499:
                    await asyncio.sleep(0.1)  # interleave with the valid calls
            offsets = [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
            valid_results = await asyncio.gather(*valid_tasks)
            ready, _ = await app.readiness()
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        while True:  # until every malformed record is accounted for, or a minute has passed
            tally = await _tally(services, topics, cases, offsets)
            if not tally.unhandled or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        ready_after, _ = await app.readiness()
    elapsed_s = time.monotonic() - started

    latencies = sorted(t for _, t in valid_results)
    print(
        f"fuzz: {len(cases)} malformed {dict(Counter(c.kind for c in cases))}; dead letters "
        f"{tally.dead_letters}, invalid/expired answers {tally.answers}, both {tally.both}; valid p50/max "
        f"{latencies[VALID // 2] * 1000:.0f}/{latencies[-1] * 1000:.0f} ms; {elapsed_s:.1f} s"
    )
    assert ready and ready_after
    assert [s for s, _ in valid_results] == [Status.OK] * VALID
    assert tally.unhandled == Counter()
    assert tally.ok_answers == 0
    assert tally.forged_reasons == 0
    # each malformed record counted once: dead-lettered, answered, or (when both) once
    assert tally.dead_letters + tally.answers - tally.both == len(cases)


@dataclass
class Tally:
    """What became of the malformed records."""

    dead_letters: int = 0  # malformed records found on the dead-letter topic
    answers: int = 0  # malformed records answered invalid or expired
    both: int = 0
    ok_answers: int = 0
    forged_reasons: int = 0
    unhandled: Counter[str] = field(default_factory=Counter)


async def _tally(
    services: Services, topics: Topics, cases: list[Case], offsets: list[tuple[int, int]]
) -> Tally:
    """Match every malformed record to its dead letter (by source offset) and its answer (by request id)."""
    dead = await read_committed(services.kafka_bootstrap, topics.dlq)
    answers = await read_committed(services.kafka_bootstrap, topics.responses)
    sources = {(header_value(r.headers, DLQ_SOURCE) or b"").decode() for r in dead}
    responses: dict[str, ApiResponse] = {}
    for record in answers:
        answer = ApiResponse.from_json(record.value)
        responses[answer.request_id] = answer
    tally = Tally()
    tally.forged_reasons = sum(header_value(r.headers, DLQ_REASON) == b"ok\r\nX-Injected: 1" for r in dead)
    for case, (partition, offset) in zip(cases, offsets, strict=True):
        dead_lettered = f"{topics.requests}:{partition}:{offset}" in sources
        response = responses.get(case.request_id) if case.request_id else None
        answered = response is not None and response.status in (Status.INVALID, Status.EXPIRED)
        tally.ok_answers += response is not None and response.status is Status.OK
        tally.dead_letters += dead_lettered
        tally.answers += answered
        tally.both += dead_lettered and answered
        if not (dead_lettered or answered):
            tally.unhandled[case.kind] += 1
    return tally


WORKER_MALFORMED = 2_000  # one transaction per task: 10,000 take longer than the suite can give here
WORKER_VALID = 50


class VerificationEcho:
    """The verification worker's task parsing (its topic, its model) with an echo for a handler: the
    fuzz is about what reaches ``parse``, not about verifying minutes."""

    name = "verification-fuzz"

    def __init__(self, task_topic: str, out_topic: str) -> None:
        self.task_topic = task_topic
        self.out_topic = out_topic

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    def parse(self, value: bytes | None) -> Task:
        """Exactly as ``VerificationWorker.parse``."""
        return parse_task(VerificationTask, value)

    async def handle(self, task: Task, out: Outputs) -> None:
        """One output per valid task."""
        assert isinstance(task, VerificationTask)
        out.add(self.out_topic, task.task_id, {"symbol": task.symbol})


def verification_task(i: int) -> dict[str, object]:
    """A valid verification task."""
    return {
        "task_id": f"verify|005930|2026-11-27|09:00-09:30|r{i + 1}",
        "symbol": "005930",
        "day": "2026-11-27",
        "start": "09:00",
        "end": "09:30",
        "round": i + 1,
    }


def malformed_tasks(count: int = WORKER_MALFORMED, seed: int = SEED) -> list[bytes | None]:
    """``count`` values that are not verification tasks, the same ones for the same seed."""
    rng = random.Random(seed)
    wrong: list[tuple[str, object]] = [
        ("symbol", "5930"),
        ("symbol", 5930),
        ("day", "27/11/2026"),
        ("day", 20261127),
        ("start", "25:00"),
        ("end", "08:00"),
        ("round", 0),
        ("round", "first"),
        ("task_id", None),
        ("start", "9am"),
    ]
    values: list[bytes | None] = []
    for _ in range(count):
        choice = rng.randrange(6)
        whole = orjson.dumps(verification_task(rng.randrange(1000)))
        if choice == 0:
            values.append(rng.randbytes(rng.randint(0, 200)))
        elif choice == 1:
            values.append(whole[: rng.randint(0, len(whole) - 1)])
        elif choice == 2:
            field_name, value = rng.choice(wrong)
            values.append(orjson.dumps({**verification_task(0), field_name: value}))
        elif choice == 3:
            body = verification_task(0)
            del body[rng.choice(["task_id", "symbol", "day", "start", "end"])]  # "round" has a default
            values.append(orjson.dumps(body))
        elif choice == 4:
            values.append(orjson.dumps(rng.choice([[1, 2], "task", 17, None, {"symbol": "005930"}])))
        else:
            values.append(None)  # a tombstone
    return values


async def test_malformed_verification_tasks_are_dead_lettered(services: Services, unique: str) -> None:
    """Every malformed record on the verification task topic is dead-lettered as malformed, and the worker
    keeps handling the valid tasks mixed among them."""
    bootstrap = services.kafka_bootstrap
    topics = WorkerTopics(
        verification_tasks=f"f{unique}.tasks", verification_results=f"f{unique}.results", dlq=f"f{unique}.dlq"
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = (topics.verification_tasks, topics.verification_results, topics.dlq)
        await admin.create_topics([NewTopic(t, 1, 1) for t in names])
    finally:
        await admin.close()
    handler = VerificationEcho(topics.verification_tasks, topics.verification_results)
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=topics,
        group_id=f"fuzz-{unique}",
        instance_id=f"i-{unique}",
    )
    bad = malformed_tasks()
    assert malformed_tasks()[:50] == bad[:50]
    rng = random.Random(SEED)
    valid_at = set(rng.sample(range(len(bad) + WORKER_VALID), WORKER_VALID))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        bad_iter, valid_n, futures = iter(bad), 0, []
        for i in range(len(bad) + WORKER_VALID):
            if i in valid_at:
                value: bytes | None = orjson.dumps(verification_task(valid_n))
                valid_n += 1
            else:
                value = next(bad_iter)
            futures.append(await producer.send(topics.verification_tasks, value, key=b"005930"))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    loop = TaskLoop(handler, settings)
    stop = asyncio.Event()
    started = time.monotonic()
    await loop.start()
    runner = asyncio.create_task(loop.run(stop))
    try:
        letters = await read_committed(bootstrap, topics.dlq, count=len(bad), timeout_s=80)
        results = await read_committed(
            bootstrap, topics.verification_results, count=WORKER_VALID, timeout_s=20
        )
        assert loop.ready and not runner.done()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)
        await loop.stop()
    print(f"worker fuzz: {len(bad)} malformed, {WORKER_VALID} valid in {time.monotonic() - started:.1f} s")
    assert Counter(orjson.loads(r.value)["reason"] for r in letters) == {"malformed": len(bad)}
    assert len(results) == WORKER_VALID
