"""``apihub audit`` and ``apihub replay`` end to end on an in-memory Kafka: read by time, join, report,
and a replay into a hub that a test stand-in answers."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from hubclient import transport as transport_module
from hubclient.headers import DLQ_REASON, DLQ_SOURCE, request_headers, response_headers
from hubclient.models import ApiRequest, ApiResponse, Status, Timing
from services import cli
from services.audit.command import options_from as audit_options
from services.audit.command import run_audit
from services.replay.command import run_replay
from services.replay.options import options_from as replay_options
from services.worker import reader as reader_module
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer, factory

REQUESTS, RESPONSES, DLQ = "api.requests", "api.responses", "api.requests.dlq"
NOW_MS = int(time.time() * 1000)
AT_MS = NOW_MS - 5 * 60_000  # inside the default range: the last 15 minutes


def request(n: int, at_ms: int = AT_MS, caller: str = "history-collector") -> ApiRequest:
    """The n-th recorded price request."""
    return ApiRequest.model_validate(
        {
            "request_id": f"01a22df9-2ab6-76c1-88a7-{n:012d}",
            "provider": "KIS",
            "tr_id": "FHKST01010100",
            "params": {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
            "caller": caller,
            "deadline_ms": at_ms + 5_000,
            "created_at_ms": at_ms,
            "reply_topic": RESPONSES,
            "reply_partition": 0,
        }
    )


def answer(req: ApiRequest, status: Status = Status.OK, price: str = "70000") -> ApiResponse:
    """An answer to ``req``."""
    return ApiResponse(
        request_id=req.request_id,
        status=status,
        reason=None if status is Status.OK else "business_error",
        data={"rt_cd": "0", "output": {"stck_prpr": price}},
        timing=Timing(queued_ms=1, upstream_ms=12, total_ms=20),
        attempts=1,
        gateway="gw-1",
    )


def record_exchange(cluster: FakeCluster, req: ApiRequest, response: ApiResponse | None, at_ms: int) -> None:
    """Log a request and (when given) its answer 20 ms later."""
    cluster.append(REQUESTS, req.to_json(), key=b"KIS", headers=request_headers(req), timestamp_ms=at_ms)
    if response is not None:
        headers = response_headers(response, req)
        cluster.append(RESPONSES, response.to_json(), headers=headers, timestamp_ms=at_ms + 20)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """The hub's topics with three recorded requests in range (ok, upstream_error, dead-lettered) and one
    older; wired into the readers and the hub client's transport."""
    fake = FakeCluster({REQUESTS: 1, RESPONSES: 1, DLQ: 1})
    monkeypatch.setattr(reader_module, "AIOKafkaConsumer", factory(fake, FakeConsumer, []))
    monkeypatch.setattr(transport_module, "AIOKafkaConsumer", factory(fake, FakeConsumer, []))
    monkeypatch.setattr(transport_module, "AIOKafkaProducer", factory(fake, FakeProducer, []))
    record_exchange(fake, request(0), answer(request(0)), NOW_MS - 3_600_000)  # an hour ago: outside
    record_exchange(fake, request(1), answer(request(1)), AT_MS)
    record_exchange(fake, request(2), answer(request(2), Status.UPSTREAM_ERROR), AT_MS + 1_000)
    bad = request(3, caller="replay-me-not")
    record_exchange(fake, bad, None, AT_MS + 2_000)
    letter = [(DLQ_REASON, b"reply_partition_unknown: no partition 9"), (DLQ_SOURCE, b"api.requests:0:3")]
    fake.append(DLQ, bad.to_json(), headers=[*request_headers(bad), *letter], timestamp_ms=AT_MS + 2_010)
    return fake


def audit_args(*extra: str) -> argparse.Namespace:
    """Parsed ``apihub audit`` arguments."""
    return cli.build_parser().parse_args(["audit", "--bootstrap-servers", "kafka:9092", "--quiet", *extra])


async def test_audit_table_joins_the_range(cluster: FakeCluster) -> None:
    """The table shows the range's requests with their outcomes; the dead letter explains the unanswered."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_audit(audit_options(audit_args(), NOW_MS), out, err)
    text = out.getvalue()
    assert code == 0, err.getvalue()
    assert "01a22df9-2ab6-76c1-88a7-000000000000" not in text  # an hour ago
    assert "ok" in text and "upstream_error" in text
    assert "reply_partition_unknown" in text
    assert max(len(line) for line in text.splitlines()) <= 80


async def test_audit_jsonl_to_a_file_with_filters(cluster: FakeCluster, tmp_path: Path) -> None:
    """JSONL rows go to the file, the summary to stdout; a status filter keeps only its rows."""
    target = tmp_path / "rows.jsonl"
    out, err = io.StringIO(), io.StringIO()
    args = audit_args("--format", "jsonl", "--output", str(target), "--status", "upstream_error")
    code = await run_audit(audit_options(args, NOW_MS), out, err)
    assert code == 0
    rows = [orjson.loads(line) for line in target.read_text().splitlines()]
    assert [row["request_id"] for row in rows] == ["01a22df9-2ab6-76c1-88a7-000000000002"]
    assert "wrote 1 rows to" in out.getvalue()


async def test_audit_record_limit_is_a_partial_result(cluster: FakeCluster) -> None:
    """Past ``--max-records`` the read stops, says why, and exits 3."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_audit(
        audit_options(audit_args("--max-records", "1", "--format", "csv"), NOW_MS), out, err
    )
    assert code == 3
    assert "WARNING  read stopped early: record limit (1) reached" in err.getvalue()
    assert "counts are partial" in err.getvalue()
    assert out.getvalue().splitlines()[0].startswith("request_id,")  # the CSV rows on stdout


def test_audit_command_refuses_bad_bounds_and_missing_topics(
    cluster: FakeCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-positive bounds and a topic that does not exist are bad input: exit 2 with the reason."""
    assert cli.main(["audit", "--max-records", "0"]) == 2
    assert "must be positive, finite numbers" in capsys.readouterr().err
    monkeypatch.setattr("services.audit.reader.TOPIC_WAIT_S", 0.1)
    argv = ["audit", "--bootstrap-servers", "kafka:9092", "--quiet", "--requests-topic", "nope"]
    assert cli.main(argv) == 2
    assert "['nope'] do not exist" in capsys.readouterr().err


@pytest.fixture
async def hub(cluster: FakeCluster) -> AsyncIterator[list[ApiRequest]]:
    """A stand-in for the gateway: answers ``ok`` (price 70000) to every request reaching ``api.requests``
    from now on, so request 2 (recorded ``upstream_error``) now differs; yields the requests it saw."""
    seen: list[ApiRequest] = []
    start = len(cluster.records(REQUESTS))

    async def serve() -> None:
        while True:
            for record in cluster.records(REQUESTS)[start + len(seen) :]:
                req = ApiRequest.model_validate_json(record.value or b"")
                seen.append(req)
                response = answer(req)
                cluster.append(req.reply_topic, response.to_json(), partition=req.reply_partition)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(serve())
    yield seen
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def replay_args(*extra: str) -> object:
    """Parsed ``apihub replay`` arguments."""
    argv = ["replay", "--bootstrap-servers", "kafka:9092", "--quiet", "--caller", "history-*", *extra]
    return cli.build_parser().parse_args(argv)


async def test_replay_dry_run_lists_what_would_be_sent(cluster: FakeCluster) -> None:
    """A dry run reads and plans, sends nothing, exits 0."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_replay(replay_options(replay_args("--dry-run"), NOW_MS), out, err)  # type: ignore[arg-type]
    assert code == 0, err.getvalue()
    assert "dry run" in out.getvalue()
    assert len(cluster.records(REQUESTS)) == 4


async def test_replay_into_a_hub_compares_the_answers(
    cluster: FakeCluster, hub: list[ApiRequest], tmp_path: Path
) -> None:
    """Replayed with new ids under replay/<caller>; the ok one is the same, the failed one now differs."""
    target = tmp_path / "replay.jsonl"
    args = replay_args(
        "--target", "hub", "--live", "--timeout", "5", "--format", "jsonl", "--output", str(target)
    )
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(run_replay(replay_options(args, NOW_MS), out, err), 30)  # type: ignore[arg-type]
    assert len(hub) == 2
    assert {r.caller for r in hub} == {"replay/history-collector"}
    assert not {r.request_id for r in hub} & {request(1).request_id, request(2).request_id}
    rows = [orjson.loads(line) for line in target.read_text().splitlines()]
    verdicts = sorted(row["verdict"] for row in rows)
    assert verdicts == ["different", "same"], rows
    assert code == 1


@pytest.fixture
def own_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``apihub replay`` configures logging (a root handler on this test's captured stderr, aiokafka's
    level): put it back, so no later test logs to a closed stream."""
    root, kafka = logging.getLogger(), logging.getLogger("aiokafka")
    levels = root.level, kafka.level
    monkeypatch.setattr(root, "handlers", [])
    yield
    root.setLevel(levels[0])
    kafka.setLevel(levels[1])


@pytest.mark.usefixtures("own_logging")
@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--max-seconds", "nan"],
        ["audit", "--max-seconds", "inf"],
        ["replay", "--timeout", "nan"],
        ["replay", "--max-send-seconds", "inf"],
        ["replay", "--max-seconds", "nan"],
    ],
)
def test_a_bound_that_is_no_finite_number_is_bad_input(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """``nan`` passed the ``<= 0`` check: a replay's deadlines then ended in a ValueError traceback, and an
    audit's read lost its time bound. It is bad input (one line, exit 2), as 0 is."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "must be a positive, finite number" in err or "must be positive, finite numbers" in err
    assert "Traceback" not in err
