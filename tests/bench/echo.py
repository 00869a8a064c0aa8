"""A raw aiokafka echo: answers every request ``ok`` on its reply partition, with no HTTP call and no Redis.

The yardstick of the overhead and throughput benchmarks: the same HubClients talk to it as to the gateway,
so the difference is what the gateway itself costs. A plain group member (no static membership), it is the
``failover`` benchmark's baseline too. Run as its own process, like the gateway:
``python -m tests.bench.echo BOOTSTRAP TOPIC GROUP [NAME [SESSION_TIMEOUT_MS]]``; it prints ``ready`` once it
has its partitions and stops on SIGTERM. NAME goes in the answers' ``gateway`` field (default ``echo``). It
parses the request with orjson only and acknowledges each batch's answers before its offsets are committed
(the gateway's order).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from services.gateway.publisher import BATCH_BYTES
from services.kafka_client import GROUP_METADATA_MAX_AGE_MS
from tests.processes import REPO, Child, clean_env


class _Ready(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned.set()


async def echo(
    bootstrap: str,
    topic: str,
    group: str,
    stop: asyncio.Event,
    name: str = "echo",
    session_timeout_ms: int = 10_000,
) -> None:
    """Answer every record of ``topic`` until ``stop`` is set."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=min(1_000, session_timeout_ms // 3),
        metadata_max_age_ms=GROUP_METADATA_MAX_AGE_MS,  # as the gateway: a topic made just now is seen
    )
    # Configured like the gateway's publisher, so only the work in between differs.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=True, max_batch_size=BATCH_BYTES
    )
    await producer.start()
    await consumer.start()
    ready = _Ready()
    consumer.subscribe([topic], listener=ready)
    announced = False
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            if ready.assigned.is_set() and not announced:
                print("ready", flush=True)
                announced = True
            futures = []
            for records in batches.values():
                for record in records:
                    request = orjson.loads(record.value)
                    answer = orjson.dumps(
                        {"request_id": request["request_id"], "status": "ok", "gateway": name}
                    )
                    futures.append(
                        await producer.send(
                            request["reply_topic"],
                            answer,
                            key=request["request_id"].encode(),
                            partition=request["reply_partition"],
                        )
                    )
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def _main(
    bootstrap: str, topic: str, group: str, name: str = "echo", session_ms: str = "10000"
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await echo(bootstrap, topic, group, stop, name, int(session_ms))


async def start_echo(
    bootstrap: str,
    topic: str,
    group: str,
    log_path: Path,
    *,
    name: str = "echo",
    session_timeout_ms: int = 10_000,
    ready_timeout_s: float = 60,
) -> Child:
    """Start the echo as its own process and wait until it says ``ready`` (it has partitions)."""
    with log_path.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.echo",
            bootstrap,
            topic,
            group,
            name,
            str(session_timeout_ms),
            cwd=REPO,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
        )
    child = Child(name, proc, log_path)  # stdout is a pipe: the readiness signal is its first line
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout_s)
        if line.strip() != b"ready":
            raise RuntimeError(f"echo did not start (said {line!r}): {child.describe_exit()}")
    except BaseException:
        await child.stop(15)
        raise
    return child


@contextlib.asynccontextmanager
async def echo_process(bootstrap: str, topic: str, group: str, log_path: Path) -> AsyncIterator[int]:
    """Run the echo as its own process until the block ends; yields its pid."""
    child = await start_echo(bootstrap, topic, group, log_path)
    try:
        yield child.pid
    finally:
        await child.stop(15)


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:6]))
