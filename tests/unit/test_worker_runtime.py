"""The worker runtime without Kafka: task parsing, one task's commit, retries, outputs, health answers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from hubclient import HubTimeout, RequestRejected
from hubclient.client import raise_for_status
from hubclient.ids import new_request_id
from hubclient.models import ApiResponse, Status
from services.worker.errors import MalformedTask, TaskFailed
from services.worker.health import HealthServer, answer
from services.worker.outputs import MAX_VALUE_BYTES, Outputs, Record
from services.worker.retry import MAX_BACKOFF_S, Retrier, backoff_s
from services.worker.runtime import KEY_CHARS, process
from services.worker.task import Task, parse_task

DLQ = "workers.dlq"


class Echo(Task):
    """A task of the test handler."""

    word: str


class EchoHandler:
    """Writes its word twice, checkpointing after the first; fails on request."""

    name = "echo"

    def __init__(
        self, error: Exception | None = None, *, task_topic: str = "echo.tasks", out_topic: str = "echo.out"
    ) -> None:
        self.error = error
        self.task_topic = task_topic
        self.out_topic = out_topic

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    def parse(self, value: bytes | None) -> Task:
        return parse_task(Echo, value)

    async def handle(self, task: Task, out: Outputs) -> None:
        assert isinstance(task, Echo)
        out.add(self.out_topic, f"{task.task_id}|1", {"word": task.word})
        await out.checkpoint()
        out.add(self.out_topic, f"{task.task_id}|2", {"word": task.word})
        if self.error is not None:
            raise self.error


class Commits:
    """Every commit: its records and offsets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Record], Mapping[TopicPartition, int] | None]] = []

    async def __call__(self, records: list[Record], offsets: Mapping[TopicPartition, int] | None) -> None:
        self.calls.append((records, offsets))


def record(value: bytes | None, offset: int = 7, key: bytes | None = b"k") -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("echo.tasks", 2, offset, 0, 0, key, value, None, 0, 0, [])


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (None, "no value"),
        (b"", "no value"),
        (b"not json", "(the record)"),
        (b"[1, 2]", "(the record)"),
        (b'{"word": "x"}', "task_id"),
        (b'{"task_id": "", "word": "x"}', "task_id"),
        (b'{"task_id": "t", "word": "x", "wrod": 1}', "wrod"),
        (b'{"task_id": "t", "word": "x", "deadline_ms": -5}', "deadline_ms"),
    ],
)
def test_parse_task_names_the_problem(value: bytes | None, names: str) -> None:
    """A record that is not a task raises MalformedTask naming what is wrong (unknown fields included)."""
    with pytest.raises(MalformedTask) as caught:
        parse_task(Echo, value)
    assert names in str(caught.value)
    assert caught.value.reason == "malformed"


def test_task_deadline_from_the_task_or_the_default() -> None:
    """deadline_ms maps onto the monotonic clock; without it the default counts from now."""
    assert Echo(task_id="t", word="w").deadline_s(30, now_s=1000, monotonic_s=5) == 35
    timed = Echo(task_id="t", word="w", deadline_ms=1_010_000)
    assert timed.deadline_s(30, now_s=1000, monotonic_s=5) == pytest.approx(15)


def test_a_deadline_beyond_a_day_counts_as_a_day() -> None:
    """A deadline_ms written in microseconds (50,000 years ahead, yet below 2**53) or otherwise more than a
    day ahead gives the task a day, the longest ``apihub history collect --timeout``: retriable errors that
    never clear were retried for as long, while every later task of the partition waited."""
    now_s = 1_796_000_000.0
    in_micros = Echo(task_id="t", word="w", deadline_ms=int((now_s + 600) * 1_000_000))
    assert in_micros.deadline_s(30, now_s=now_s, monotonic_s=5) == pytest.approx(5 + 86_400)
    in_an_hour = Echo(task_id="t", word="w", deadline_ms=int((now_s + 3_600) * 1000))
    assert in_an_hour.deadline_s(30, now_s=now_s, monotonic_s=5) == pytest.approx(5 + 3_600)


async def test_done_task_commits_outputs_with_its_offset() -> None:
    """A done task: the checkpoint commits alone, the rest goes with the next offset in one commit."""
    commits = Commits()
    outcome = await process(EchoHandler(), record(b'{"task_id": "t1", "word": "hi"}'), commits, dlq_topic=DLQ)
    assert outcome == "done"
    (first, none), (last, offsets) = commits.calls
    assert [r.key for r in first] == ["t1|1"] and none is None
    assert [r.key for r in last] == ["t1|2"] and offsets == {TopicPartition("echo.tasks", 2): 8}
    assert orjson.loads(last[0].value) == {"word": "hi"}


@pytest.mark.parametrize(
    ("error", "outcome", "reason"),
    [
        (TaskFailed("hub kept failing", reason="gave_up:HubTimeout"), "failed", "gave_up:HubTimeout"),
        (HubTimeout("no answer"), "failed", "hub:HubTimeout"),
        (ValueError("a bug"), "failed", "internal_error"),
    ],
)
async def test_failed_task_is_dead_lettered_with_its_offset(
    error: Exception, outcome: str, reason: str
) -> None:
    """A failed task keeps its checkpoints, drops the rest, and its dead letter moves the offset on."""
    commits = Commits()
    value = b'{"task_id": "t2", "word": "hi"}'
    assert await process(EchoHandler(error), record(value), commits, dlq_topic=DLQ) == outcome
    (first, _), (last, offsets) = commits.calls
    assert [r.key for r in first] == ["t2|1"]
    assert [(r.topic, r.key) for r in last] == [(DLQ, "t2")]
    letter = orjson.loads(last[0].value)
    assert letter["reason"] == reason and letter["worker"] == "echo"
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("echo.tasks", 2, 7)
    assert orjson.loads(letter["task"]) == {"task_id": "t2", "word": "hi"}
    assert offsets == {TopicPartition("echo.tasks", 2): 8}


class TooLargeHandler(EchoHandler):
    """Checkpoints one record, then adds one Kafka would refuse."""

    async def handle(self, task: Task, out: Outputs) -> None:
        out.add(self.out_topic, f"{task.task_id}|1", {"word": "small"})
        await out.checkpoint()
        out.add(self.out_topic, f"{task.task_id}|2", {"ticks": "x" * MAX_VALUE_BYTES})


async def test_an_output_kafka_would_refuse_fails_the_task_not_the_worker() -> None:
    """An output record over Kafka's 1 MiB made the commit raise, which ended the worker, and the task
    failed the same way at every restart; now the task is dead-lettered as output_too_large and its offset
    moves on (its checkpoints stay)."""
    commits = Commits()
    outcome = await process(
        TooLargeHandler(), record(b'{"task_id": "t9", "word": "hi"}'), commits, dlq_topic=DLQ
    )
    assert outcome == "failed"
    (first, _), (last, offsets) = commits.calls
    assert [r.key for r in first] == ["t9|1"]
    assert [(r.topic, r.key) for r in last] == [(DLQ, "t9")]
    letter = orjson.loads(last[0].value)
    assert letter["reason"] == "output_too_large" and "echo.out" in letter["error"]
    assert offsets == {TopicPartition("echo.tasks", 2): 8}


def test_a_value_at_the_bound_is_kept() -> None:
    out = Outputs(Commits())
    fits = {"v": "x" * (MAX_VALUE_BYTES - len(b'{"v":""}'))}
    out.add("t", "k", fits)
    assert len(out.pending[0].value) == MAX_VALUE_BYTES
    with pytest.raises(TaskFailed):
        out.add("t", "k", {"v": fits["v"] + "x"})
    assert len(out.pending) == 1


async def test_malformed_record_is_dead_lettered_under_its_key() -> None:
    """A record that is not a task goes to the DLQ as malformed, keyed by the record's key, bytes kept."""
    commits = Commits()
    assert (
        await process(EchoHandler(), record(b"\xff\xfe{", key=b"abc"), commits, dlq_topic=DLQ) == "malformed"
    )
    ((records, offsets),) = commits.calls
    assert [(r.topic, r.key) for r in records] == [(DLQ, "abc")]
    letter = orjson.loads(records[0].value)
    assert letter["reason"] == "malformed" and letter["task"] == "\xff\xfe{"
    assert offsets == {TopicPartition("echo.tasks", 2): 8}
    commits = Commits()
    await process(EchoHandler(), record(None, key=None), commits, dlq_topic=DLQ)
    assert commits.calls[0][0][0].key == "echo.tasks:2:7"


async def test_a_dead_letter_stays_far_below_kafkas_record_limit() -> None:
    """A 500 kB key and 120 kB of control characters (six bytes each as JSON: 720 kB of task text) made a
    dead letter over 1 MiB, so its commit failed and the worker died on the record at every restart."""
    commits = Commits()
    poison = record(b"\x01" * 120_000, key=b"k" * 500_000)
    assert await process(EchoHandler(), poison, commits, dlq_topic=DLQ) == "malformed"
    ((records, offsets),) = commits.calls
    [letter] = records
    assert len(letter.key) == KEY_CHARS and len(letter.value) < 110_000
    assert orjson.loads(letter.value)["task"] == "\x01" * len(orjson.loads(letter.value)["task"])
    assert offsets == {TopicPartition("echo.tasks", 2): 8}


def test_backoff_doubles_up_to_the_cap() -> None:
    """0.25 s, then doubling per retry, never more than the cap."""
    assert [backoff_s(n) for n in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert backoff_s(30) == MAX_BACKOFF_S


class FakeTime:
    """A monotonic clock that moves only when the retrier sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_retrier_retries_retriable_errors_then_succeeds() -> None:
    """Retriable errors are retried with backoff; each try gets at most the call timeout."""
    clock = FakeTime()
    retrier = Retrier("echo", call_timeout_s=15, sleep=clock.sleep, monotonic=clock.monotonic)
    timeouts: list[float] = []

    async def flaky(timeout_s: float) -> str:
        timeouts.append(timeout_s)
        if len(timeouts) < 3:
            raise RequestRejected("backlog_full")
        return "ok"

    assert await retrier.call("flaky", 60.0, flaky) == "ok"
    assert clock.slept == [0.25, 0.5] and timeouts[0] == 15


async def test_retrier_gives_up_at_the_deadline_and_on_refusals() -> None:
    """A retriable error until the deadline ends as gave_up; a non-retriable one at once as refused."""
    clock = FakeTime()
    retrier = Retrier("echo", call_timeout_s=15, sleep=clock.sleep, monotonic=clock.monotonic)

    async def always_late(timeout_s: float) -> None:
        clock.now += timeout_s
        raise HubTimeout("late")

    with pytest.raises(TaskFailed) as caught:
        await retrier.call("late", 20.0, always_late)
    assert caught.value.reason == "gave_up:HubTimeout" and clock.now <= 20.0

    async def refused(timeout_s: float) -> None:
        raise RequestRejected("acl_denied")

    with pytest.raises(TaskFailed) as caught:
        await retrier.call("refused", clock.now + 60, refused)
    assert caught.value.reason == "refused:acl_denied"
    with pytest.raises(TaskFailed) as caught:
        await retrier.call("too late", clock.now + 0.5, refused)
    assert caught.value.reason == "gave_up"


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        ("throttled", True),
        ("transient", True),
        ("unreachable", True),  # no connection or no answer through the gateway's attempts: a read is safe
        ("business_error", False),
        ("token_rejected", False),
        ("answer_too_large", False),
    ],
)
async def test_retrier_retries_an_upstream_error_the_broker_may_clear(reason: str, retried: bool) -> None:
    """A broker that was unreachable (or slow past every attempt) is retried inside the deadline like a
    5xx; a broker's refusal gives the task up at once."""
    clock = FakeTime()
    retrier = Retrier("echo", call_timeout_s=15, sleep=clock.sleep, monotonic=clock.monotonic)
    answer = ApiResponse(
        request_id=new_request_id(), status=Status.UPSTREAM_ERROR, reason=reason, gateway="in-memory"
    )
    tries = 0

    async def broker(timeout_s: float) -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise_for_status(answer)
        return "ok"

    if retried:
        assert await retrier.call("chart", 60.0, broker) == "ok"
        assert tries == 2
    else:
        with pytest.raises(TaskFailed) as caught:
            await retrier.call("chart", 60.0, broker)
        assert caught.value.reason == f"refused:{reason}" and tries == 1


async def test_outputs_discard_and_empty_checkpoint() -> None:
    """discard drops what was not committed; a checkpoint with nothing pending commits nothing."""
    commits = Commits()
    out = Outputs(commits)
    await out.checkpoint()
    out.add("t", "k", {"a": 1})
    assert [r.key for r in out.pending] == ["k"]
    out.discard()
    await out.checkpoint()
    assert commits.calls == [] and out.committed == 0


@pytest.mark.parametrize(
    ("line", "ready", "status"),
    [
        ("GET /healthz HTTP/1.1", False, "200"),
        ("GET /readyz HTTP/1.1", False, "503"),
        ("GET /readyz?x=1 HTTP/1.1", True, "200"),
        ("GET /metrics HTTP/1.1", True, "200"),
        ("GET /nope HTTP/1.1", True, "404"),
        ("POST /healthz HTTP/1.1", True, "405"),
        ("", True, "400"),
    ],
)
def test_health_answers(line: str, ready: bool, status: str) -> None:
    """Each path and method gets its status line."""
    assert answer(line, ready).startswith(f"HTTP/1.0 {status} ".encode())


async def test_health_server_over_a_socket() -> None:
    """The server answers a real HTTP request on its port and follows the ready flag."""
    state = {"ready": False}
    server = HealthServer("127.0.0.1", 0, lambda: state["ready"])
    await server.start()
    try:

        async def get(path: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
            writer.close()
            return data

        assert (await get("/readyz")).startswith(b"HTTP/1.0 503")
        state["ready"] = True
        assert (await get("/readyz")).startswith(b"HTTP/1.0 200")
        assert b"apihub_worker_tasks_total" in await get("/metrics")
    finally:
        await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port


async def test_a_checkpoint_that_cannot_commit_ends_the_task_unanswered() -> None:
    """A Kafka error from a checkpoint is not dead-lettered as a bug: it propagates, nothing is committed."""
    from aiokafka.errors import KafkaConnectionError

    async def broken(records: list[Record], offsets: Mapping[TopicPartition, int] | None) -> None:
        raise KafkaConnectionError("broker gone")

    with pytest.raises(KafkaConnectionError):
        await process(EchoHandler(), record(b'{"task_id": "t3", "word": "hi"}'), broken, dlq_topic=DLQ)
