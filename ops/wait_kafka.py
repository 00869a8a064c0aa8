"""Wait until a Kafka broker answers admin requests, or fail after a deadline.

ops/stack.sh uses this as Kafka's readiness check: what counts is that a client can list topics, sees a
live broker in the metadata and reaches the group coordinator, not what the broker writes to its log.

    python ops/wait_kafka.py --bootstrap 127.0.0.1:19092 [--timeout 90] [--pid PID] [--quiet]

It connects as every service does: with the ``APIHUB_KAFKA__SECURITY_PROTOCOL`` / ``SASL_*`` / ``SSL_*``
settings of its environment (``services.kafka_client``), PLAINTEXT without them (the local stack).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from services.kafka_client import SECURITY_HINT, client_kwargs, describe
from services.settings import ClientSettings

ATTEMPT_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.5
READINESS_GROUP = "apihub-readiness"


async def probe(bootstrap: str, timeout_s: float, security: dict[str, Any] | None = None) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **(security or {})
    )
    try:
        await admin.start()
        await admin.list_topics()
        # A KRaft broker can answer metadata before it is unfenced; until then it lists no brokers.
        cluster = await admin.describe_cluster()
        if not cluster["brokers"]:
            raise RuntimeError("metadata lists no live broker yet")
        # Consumer groups work only once the group coordinator has loaded __consumer_offsets; before that a
        # gateway's first join is retried for many seconds. This call fails until the coordinator answers.
        await admin.list_consumer_group_offsets(READINESS_GROUP)
    finally:
        await admin.close()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # An exited but not yet reaped process still accepts signal 0; on Linux /proc shows it as Z.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


async def wait(
    bootstrap: str, timeout_s: float, pid: int | None, security: dict[str, Any] | None = None
) -> tuple[bool, int, str]:
    deadline = time.monotonic() + timeout_s
    max_attempts = int(timeout_s / RETRY_PAUSE_S) + 1
    last_error = "no attempt made"
    for attempt in range(1, max_attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, attempt - 1, last_error
        per_attempt = min(ATTEMPT_TIMEOUT_S, remaining)
        try:
            await asyncio.wait_for(probe(bootstrap, per_attempt, security), per_attempt)
            return True, attempt, ""
        except Exception as exc:  # any failure just means "not ready yet"
            last_error = str(exc) or type(exc).__name__
        if pid is not None and not process_alive(pid):
            return False, attempt, f"broker process {pid} exited"
        await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
    return False, max_attempts, last_error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds (default 90)")
    parser.add_argument("--pid", type=int, help="give up early if this process exits")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args()

    # Connection refusals are expected while the broker boots; aiokafka logs each one at ERROR.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)

    try:
        kafka = ClientSettings().kafka
    except ValidationError as exc:
        print(f"wait_kafka: the APIHUB_KAFKA__* settings are invalid: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    ok, attempts, error = asyncio.run(wait(args.bootstrap, args.timeout, args.pid, client_kwargs(kafka)))
    elapsed = time.monotonic() - started
    if ok:
        if not args.quiet:
            print(f"kafka ready at {args.bootstrap} after {elapsed:.1f}s ({attempts} attempts)")
        return 0
    print(
        f"wait_kafka: broker at {args.bootstrap} not ready after {elapsed:.1f}s "
        f"({attempts} attempts, {describe(kafka)}); last error: {error}; {SECURITY_HINT}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
