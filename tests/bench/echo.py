"""A raw aiokafka echo: answers every request ``ok`` on its reply partition, with no HTTP call and no Redis.

The yardstick of benchmarks 3 and 4: the same HubClients talk to it as to the gateway, so the difference is
what the gateway itself costs. Run as its own process, like the gateway:
``python -m tests.bench.echo BOOTSTRAP TOPIC GROUP``; it prints ``ready`` once it has its partitions and
stops on SIGTERM. It parses the request with orjson only and acknowledges each batch's answers before its
offsets are committed (the gateway's order).
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

from tests.processes import REPO, Child, clean_env


class _Ready(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned.set()


async def echo(bootstrap: str, topic: str, group: str, stop: asyncio.Event) -> None:
    """Answer every record of ``topic`` until ``stop`` is set."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    # Configured like the gateway's publisher, so only the work in between differs.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=True)
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
                        {"request_id": request["request_id"], "status": "ok", "gateway": "echo"}
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


async def _main(bootstrap: str, topic: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await echo(bootstrap, topic, group, stop)


@contextlib.asynccontextmanager
async def echo_process(bootstrap: str, topic: str, group: str, log_path: Path) -> AsyncIterator[int]:
    """Run the echo as its own process until the block ends; yields its pid."""
    with log_path.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.echo",
            bootstrap,
            topic,
            group,
            cwd=REPO,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
        )
    child = Child("echo", proc, log_path)  # stdout is a pipe: the readiness signal is its first line
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"echo did not start (said {line!r}): {child.describe_exit()}")
        yield proc.pid
    finally:
        await child.stop(15)


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:4]))
