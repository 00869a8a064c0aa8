"""``apihub history collect``'s follower and the collector's progress book on an in-memory Kafka."""

from __future__ import annotations

import asyncio
import io
from datetime import date

import orjson
import pytest

from services.history import collect as collect_module
from services.history.collect import EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT, JobFollower, collect, make_job
from services.history.progress import ProgressBook, ProgressReader
from services.history.records import DayHeld, job_key
from services.settings import WorkerSettings
from services.worker import reader as reader_module
from services.worker.reader import open_reader, read_to_end
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer, factory

DAY = date(2026, 11, 26)


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """The workers' topics on an in-memory Kafka, wired into the readers and the job publisher."""
    topics = WorkerSettings().topics
    fake = FakeCluster({topics.history_jobs: 1, topics.history_progress: 2, topics.dlq: 1})
    monkeypatch.setattr(reader_module, "AIOKafkaConsumer", factory(fake, FakeConsumer, []))
    monkeypatch.setattr(collect_module, "AIOKafkaProducer", factory(fake, FakeProducer, []))
    return fake


async def first_job(cluster: FakeCluster) -> dict[str, object]:
    """Wait for the job the command publishes and return it."""
    topic = WorkerSettings().topics.history_jobs
    async with asyncio.timeout(5):
        while not cluster.records(topic):
            await asyncio.sleep(0.005)
    value = cluster.records(topic)[0].value
    assert value is not None
    job: dict[str, object] = orjson.loads(value)
    return job


def progress(job_id: str, state: str, done: int, total: int = 2) -> bytes:
    """A ``kind: job`` progress value."""
    return orjson.dumps(
        {"kind": "job", "job_id": job_id, "state": state, "done": done, "total": total, "candles": 10 * done}
    )


async def test_collect_draws_progress_until_done(cluster: FakeCluster) -> None:
    """The job is published keyed by its id; each new progress line is drawn once; done exits 0."""
    topics = WorkerSettings().topics
    job = make_job(["005930"], DAY, DAY, "1d", "KIS", timeout_s=5)
    out = io.StringIO()
    cluster.append(topics.history_progress, progress("older", "done", 2), key=job_key("older").encode())
    task = asyncio.create_task(collect(WorkerSettings(), job, 5, out))
    sent = await first_job(cluster)
    assert sent["task_id"] == job.task_id
    assert cluster.records(topics.history_jobs)[0].key == job.task_id.encode()
    key = job_key(job.task_id).encode()
    cluster.append(topics.history_progress, b"{}", key=b"job|someone-else")
    cluster.append(topics.history_progress, progress(job.task_id, "running", 1), key=key)
    cluster.append(topics.history_progress, progress(job.task_id, "running", 1), key=key)
    cluster.append(topics.history_progress, progress(job.task_id, "done", 2), key=key)
    assert await asyncio.wait_for(task, 10) == EXIT_DONE
    lines = out.getvalue().splitlines()
    assert lines[0] == f"job {job.task_id} sent to {topics.history_jobs}"
    assert [line for line in lines if line.startswith("[")] == [
        "[###############---------------] 1/2 pieces (0 held), 10 candles, 0 calls, running",
        "[##############################] 2/2 pieces (0 held), 20 candles, 0 calls, done",
    ]
    assert lines[-1] == f"done: job {job.task_id}"


async def test_collect_reports_a_dead_lettered_job(cluster: FakeCluster) -> None:
    """A dead letter for the job ends the command with exit 1 and the letter's reason."""
    topics = WorkerSettings().topics
    job = make_job(["005930"], DAY, DAY, "1m", "KIWOOM", timeout_s=5)
    out = Tty()
    task = asyncio.create_task(collect(WorkerSettings(), job, 5, out))
    await first_job(cluster)
    key = job_key(job.task_id).encode()
    cluster.append(topics.history_progress, progress(job.task_id, "running", 0), key=key)
    letter = {"reason": "gave_up", "error": "KIWOOM answered 1700 three times"}
    cluster.append(topics.dlq, orjson.dumps(letter), key=job.task_id.encode())
    assert await asyncio.wait_for(task, 10) == EXIT_FAILED
    text = out.getvalue()
    assert text.count("\r[") == 1  # on a terminal the bar is redrawn in place
    assert f"failed: job {job.task_id} was dead-lettered: gave_up: KIWOOM answered 1700 three times" in text


async def test_collect_times_out(cluster: FakeCluster) -> None:
    """Nothing about the job within the timeout: exit 2, saying so."""
    job = make_job(["005930"], DAY, DAY, "1d", "KIS", timeout_s=0.3)
    out = io.StringIO()
    assert await asyncio.wait_for(collect(WorkerSettings(), job, 0.3, out), 10) == EXIT_TIMEOUT
    assert out.getvalue().splitlines()[-1] == f"timeout: job {job.task_id}: no end within 0.3 s"


async def test_collect_says_when_no_word_of_the_job_comes(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No collector answering: once ``QUIET_S`` passed the command says what may be wrong (once) and
    waits on until its timeout."""
    monkeypatch.setattr(collect_module, "QUIET_S", 0.2)
    job = make_job(["005930"], DAY, DAY, "1d", "KIS", timeout_s=1)
    out = io.StringIO()
    assert await asyncio.wait_for(collect(WorkerSettings(), job, 1, out), 10) == EXIT_TIMEOUT
    lines = out.getvalue().splitlines()
    assert lines[1] == (
        "no progress after 0.2 s: is history-collector running (make up starts it, apihub status shows it)? "
        "Still waiting, up to --timeout 1 s"
    )
    assert len(lines) == 3 and lines[2].startswith("timeout:")


async def test_follow_before_start_is_a_clear_error() -> None:
    """Following without ``start`` says so."""
    with pytest.raises(RuntimeError, match="start"):
        await JobFollower(WorkerSettings(), "x").follow(1, lambda progress: None)


async def test_open_reader_names_a_missing_topic(cluster: FakeCluster) -> None:
    """A topic that never appears is an error naming it, after the wait, and the consumer is closed."""
    with pytest.raises(RuntimeError, match=r"\['nope'\] do not exist"):
        await open_reader("kafka:9092", ["workers.dlq", "nope"], client_id="unit", wait_s=0.2)


async def test_read_to_end_returns_what_is_there_now(cluster: FakeCluster) -> None:
    """Every record up to the end offsets of the moment, across partitions."""
    topic = WorkerSettings().topics.history_progress
    for n in range(5):
        cluster.append(topic, str(n).encode(), partition=n % 2)
    consumer = await open_reader("kafka:9092", [topic], client_id="unit")
    try:
        records = await read_to_end(consumer, 5)
    finally:
        await consumer.stop()
    assert sorted(r.value for r in records) == [b"0", b"1", b"2", b"3", b"4"]


def day_value(held: DayHeld) -> bytes:
    """A ``kind: day`` progress value."""
    return orjson.dumps(held.value("job-1"))


def test_progress_book_reads_days_tombstones_and_skips_the_rest() -> None:
    """Day records fill the book, a tombstone removes one, job records are skipped, bad ones counted."""
    book = ProgressBook()
    held = DayHeld("005930", "1m", DAY, 381, True, "KIS")
    book.read(held.key.encode(), day_value(held))
    assert len(book) == 1 and book.closed(held.key, "KIS") and book.get(held.key) == held
    book.read(None, b"ignored")  # a record without a key says nothing
    book.read(b"job|x", orjson.dumps({"kind": "job"}))
    assert len(book) == 1 and book.unreadable == 0
    book.read(b"005930|1m|2026-11-27", b"not json")
    book.read(b"005930|1m|2026-11-27", orjson.dumps({"kind": "day", "timeframe": "5m"}))
    book.read(b"005930|1m|2026-11-27", orjson.dumps({"kind": "day", "timeframe": "1m"}))
    book.read(b"000660|1m|2026-11-26", day_value(held))  # the key names another symbol-day
    assert book.unreadable == 4 and len(book) == 1
    book.read(held.key.encode(), None)
    assert len(book) == 0 and not book.closed(held.key, "KIS") and book.get(held.key) is None
    open_day = DayHeld("000660", "1d", DAY, 1, False, "KIS")
    book.note(open_day)
    assert book.get(open_day.key) == open_day and not book.closed(open_day.key, "KIS")


async def test_progress_reader_catches_up_with_what_was_committed(cluster: FakeCluster) -> None:
    """The reader fills the book from the beginning, then only with what came since."""
    topic = WorkerSettings().topics.history_progress
    first, second = DayHeld("005930", "1d", DAY, 1, True, "KIS"), DayHeld("000660", "1d", DAY, 1, True, "KIS")
    cluster.append(topic, day_value(first), key=first.key.encode())
    reader = ProgressReader("kafka:9092", topic)
    with pytest.raises(RuntimeError, match="start"):
        await reader.catch_up(ProgressBook())
    await reader.start()
    try:
        book = ProgressBook()
        assert await reader.catch_up(book) == 1
        cluster.append(topic, day_value(second), key=second.key.encode())
        assert await reader.catch_up(book) == 1
        assert await reader.catch_up(book) == 0
        assert book.closed(first.key, "KIS") and book.closed(second.key, "KIS")
    finally:
        await reader.stop()
    await reader.stop()


async def test_progress_reader_gives_up_after_its_time(cluster: FakeCluster) -> None:
    """A catch-up out of time returns what it read so far, here nothing (the book only saves calls)."""
    topic = WorkerSettings().topics.history_progress
    held = DayHeld("005930", "1d", DAY, 1, True, "KIS")
    cluster.append(topic, day_value(held), key=held.key.encode())
    reader = ProgressReader("kafka:9092", topic, catch_up_s=0.0)
    await reader.start()
    try:
        assert await reader.catch_up(ProgressBook()) == 0
    finally:
        await reader.stop()


@pytest.mark.parametrize(
    ("held", "closed_for_kiwoom"),
    [
        (DayHeld("005930", "1m", DAY, 0, True, "KIS"), False),  # a weekday KIS found without minute bars
        (DayHeld("005930", "1m", DAY, 381, True, "KIS"), True),
        (DayHeld("005930", "1m", date(2026, 11, 28), 0, True, "KIS"), True),  # a Saturday
        (DayHeld("005930", "1d", DAY, 0, True, "KIS"), True),  # daily bars reach back years at both
        (DayHeld("005930", "1m", DAY, 0, True, "KIWOOM"), True),
        (DayHeld("005930", "1m", DAY, 381, False, "KIWOOM"), False),
    ],
)
def test_an_empty_weekday_of_minute_bars_is_closed_only_for_the_broker_that_found_it(
    held: DayHeld, closed_for_kiwoom: bool
) -> None:
    book = ProgressBook()
    book.note(held)
    assert book.closed(held.key, "KIWOOM") is closed_for_kiwoom
    assert book.closed(held.key, held.provider) is held.closed
