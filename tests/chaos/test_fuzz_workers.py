"""Scenario (f), the workers' side: 10,000 malformed records on each worker's task topic (the integration
fuzz generator, one seed per topic) with valid verification tasks among them, against the three worker
processes and a gateway process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.settings import GatewaySettings, WorkerTopics
from services.topics import ensure_topics, load_topics
from services.worker.fleet import WorkerFleet
from services.worker.main import WORKERS
from services.worker.reader import open_reader
from tests import processes
from tests.chaos.load import key_counters
from tests.chaos.results import Outcome, record
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey, gateway_process
from tests.integration.test_fuzz import SEED, malformed_tasks, verification_task

MALFORMED_PER_TOPIC = 10_000
VALID = 6  # verification tasks among the malformed ones
WAIT_S = 230.0  # about 180 dead letters a second on a busy two-core host


def worker_alive(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def private_topics(bootstrap: str, prefix: str) -> WorkerTopics:
    """Every worker topic renamed ``{prefix}.{declared}`` and created with its declared config."""
    declared = WorkerTopics()
    mine = WorkerTopics(**{k: f"{prefix}.{v}" for k, v in declared.model_dump().items()})
    rename = dict(zip(declared.model_dump().values(), mine.model_dump().values(), strict=True))
    await ensure_topics(bootstrap, [s for s in load_topics(rename=rename) if s.name in rename.values()])
    return mine


@pytest.mark.timeout(330)
async def test_ten_thousand_malformed_tasks_per_worker(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str, unique: str
) -> None:
    """Every malformed record on history.jobs, verification.tasks and recovery.tasks is dead-lettered on
    workers.dlq as malformed (matched by topic and offset), the valid verification tasks among them get
    their results, and all three worker processes stay up."""
    bootstrap = services.kafka_bootstrap
    worker_topics = await private_topics(bootstrap, f"fz{unique}")
    task_topics = {
        worker_topics.history_jobs: SEED,
        worker_topics.verification_tasks: SEED + 1,
        worker_topics.recovery_tasks: SEED + 2,
    }
    env = {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "APIHUB_KAFKA__REQUEST_TOPIC": topics.requests,
        "APIHUB_KAFKA__RESPONSE_TOPIC": topics.responses,
        "APIHUB_INSTANCE_ID": f"fuzz-{unique}",
        **{f"APIHUB_TOPICS__{k.upper()}": v for k, v in worker_topics.model_dump().items()},
    }
    fleet = WorkerFleet(env, log_dir=processes.LOG_DIR, prefix=f"fuzz-{unique}", group_suffix=f".fz{unique}")
    sources: set[str] = set()
    valid_ids = [str(verification_task(i)["task_id"]) for i in range(VALID)]
    started = time.monotonic()
    async with gateway_process(gateway_settings):
        await fleet.start_all()
        try:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
            await producer.start()
            try:
                for topic, seed in task_topics.items():
                    futures = []
                    bad = malformed_tasks(MALFORMED_PER_TOPIC, seed)
                    for i, value in enumerate(bad):
                        if topic == worker_topics.verification_tasks and i % (len(bad) // VALID) == 0:
                            task = verification_task(i // (len(bad) // VALID))
                            await producer.send(topic, orjson.dumps(task), key=b"005930")
                        futures.append(await producer.send(topic, value, key=b"005930"))
                    for meta in await asyncio.gather(*futures):
                        sources.add(f"{topic}:{meta.partition}:{meta.offset}")
            finally:
                await producer.stop()
            letters: list[dict[str, object]] = []
            results: set[str] = set()
            reader = await open_reader(
                bootstrap, [worker_topics.dlq, worker_topics.verification_results], client_id="fuzz-reader"
            )
            try:  # one reader from the beginning, read on as the workers commit (bounded by WAIT_S)
                deadline = time.monotonic() + WAIT_S
                while time.monotonic() < deadline:
                    for batch in (await reader.getmany(timeout_ms=1000, max_records=5000)).values():
                        for rec in batch:
                            if rec.topic == worker_topics.dlq:
                                letters.append(orjson.loads(rec.value))
                            elif rec.key is not None:
                                results.add(rec.key.decode())
                    if len(letters) >= len(sources) and all(any(v in k for k in results) for v in valid_ids):
                        break
            finally:
                await reader.stop()
            alive = {name: worker_alive(fleet.pid(name)) for name in WORKERS}
        finally:
            await fleet.stop()
        counters = await key_counters(sandbox_url, "kis/real", appkey(gateway_settings))
    seconds = time.monotonic() - started
    lettered = {f"{x['topic']}:{x['partition']}:{x['offset']}" for x in letters}
    reasons = Counter(str(x["reason"]) for x in letters)
    missing = sources - lettered
    valid_done = sum(any(v in k for k in results) for v in valid_ids)
    outcome = Outcome(
        scenario="fuzz-workers",
        title=f"{MALFORMED_PER_TOPIC:,} malformed records on each worker task topic, valid tasks among them",
        sent=len(sources) + VALID,
        answered={"dead_lettered": len(sources & lettered), "ok": valid_done},
        lost=len(missing) + VALID - valid_done,
        upstream_twice=0,
        over_limit=int(counters.get("over_limit", 0)),
        seconds=round(seconds, 1),
        notes=[
            "dead letters by reason: " + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())),
            f"{VALID} valid verification tasks, {valid_done} with their result",
            "workers up at the end: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in alive.items()),
        ],
    )
    record(outcome)
    assert all(alive.values()), alive
    assert not missing, f"{len(missing)} malformed records not dead-lettered, e.g. {sorted(missing)[:3]}"
    assert set(reasons) == {"malformed"}, reasons
    assert valid_done == VALID
    assert outcome.held
