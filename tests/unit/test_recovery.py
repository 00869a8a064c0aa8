"""recovery-worker (``services/recovery``): its policy tables, and ``BackfillManager`` over the in-memory hub.

The broker stand-ins answer ``ka10079`` pages (``next-key`` = the page's index) and ``FHKST01010300`` from
hand-written rows, except in the sandbox tests, which ask the sandbox's own ``ka10079`` handler for every
page and check the repaired window against the feed's plan and the market's minute bars.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
import pytest

from hubclient import HubClient
from hubclient.market import KST, Tick
from hubclient.models import ApiRequest, ApiResponse, Priority, Provider, Status
from hubclient.testing import InMemoryTransport, failed, ok
from services.recovery.records import (
    WINDOW_BYTES,
    WindowRecord,
    reverify_task_id,
    reverify_value,
    window_key,
    window_records,
    window_value,
)
from services.recovery.tape import Trade, holds_day, join_page, latest_cover, walk_reached, window_trades
from services.recovery.task import RecoveryTask
from services.recovery.worker import NAME, BackfillManager, build
from services.sandbox.bars import Tick as MarketTick
from services.sandbox.bars import aggregate_minutes
from services.sandbox.feed import plan_day
from services.sandbox.kiwoom_charts import ka10079
from services.sandbox.kiwoom_envelope import KiwoomCall
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.sandbox.state import SandboxState
from services.settings import WorkerSettings, WorkerTopics
from services.worker.errors import MalformedTask, TaskFailed
from services.worker.outputs import Outputs, Record, encode
from services.worker.retry import Retrier
from tests.conftest import REPO

SYMBOL = "005930"
DAY = date(2026, 11, 27)  # a Friday
EARLIER = date(2026, 11, 26)
TOPICS = WorkerTopics(
    ticks_recovered="t.recovered", verification_tasks="t.verify", recovery_tasks="t.recover"
)
SETTINGS = WorkerSettings(topics=TOPICS, instance_id="unit", task_deadline_s=30, call_timeout_s=2)


# -- helpers -------------------------------------------------------------------------------------------------
def at(clock: str, day: date = DAY) -> datetime:
    """``HH:MM:SS`` on ``day`` as a KST instant."""
    return datetime.combine(day, time.fromisoformat(clock), KST)


def tick(clock: str, price: int, volume: int, day: date = DAY) -> Tick:
    """A ka10079 trade as ``kiwoom_ticks`` reads it."""
    return Tick(SYMBOL, at(clock, day), price, volume, Provider.KIWOOM, "ka10079")


def task_value(**fields: Any) -> dict[str, Any]:
    """A valid recovery task with ``fields`` replaced."""
    value: dict[str, Any] = {
        "task_id": f"recover|{SYMBOL}|{DAY}|10:00-10:05|r1",
        "symbol": SYMBOL,
        "day": DAY.isoformat(),
        "start": "10:00",
        "end": "10:05",
        "round": 1,
        "reason": "gap",
    }
    value.update(fields)
    return value


def tape(day: date = DAY, first: str = "09:58:00", count: int = 120) -> list[Tick]:
    """``count`` trades oldest first from ``first``, every 5 s, every fourth second holding two trades;
    volumes all differ, so no two trades look alike."""
    out: list[Tick] = []
    clock = at(first, day)
    for i in range(count):
        out.append(Tick(SYMBOL, clock, 70_000 + 100 * (i % 7), 10 + i, Provider.KIWOOM, "ka10079"))
        if i % 4 != 3:
            clock += timedelta(seconds=5)
    return out


def rows(ticks: Sequence[Tick]) -> list[dict[str, str]]:
    """ka10079 rows (``tic_scope=1``) of ``ticks``, in the given order."""
    return [
        {
            "cur_prc": f"+{t.price}",
            "trde_qty": str(t.volume),
            "cntr_tm": f"{t.time:%Y%m%d%H%M%S}",
            "open_pric": str(t.price),
            "high_pric": str(t.price),
            "low_pric": str(t.price),
        }
        for t in ticks
    ]


def pages_of(oldest_first: Sequence[Tick], size: int, overlap: int = 0) -> list[list[Tick]]:
    """The trades newest first in pages of ``size``; each page after the first repeats the ``overlap``
    oldest rows of the one before."""
    newest_first = list(reversed(oldest_first))
    pages, begin = [], 0
    while begin < len(newest_first):
        pages.append(newest_first[max(0, begin - overlap) : begin + size])
        begin += size
    return pages


@dataclass
class Broker:
    """Answers ka10079 from ``pages`` and FHKST01010300 from ``latest`` (both newest first)."""

    pages: list[list[Tick]]
    latest: list[Tick] = field(default_factory=list)
    kiwoom_refuses: bool = False
    busy_once: set[int] = field(default_factory=set)  # page indexes answered backlog_full once
    asked: list[tuple[str, int | None]] = field(default_factory=list)

    def __call__(self, request: ApiRequest) -> ApiResponse:
        if request.tr_id == "FHKST01010300":
            self.asked.append((request.tr_id, None))
            output = [
                {"stck_cntg_hour": f"{t.time:%H%M%S}", "stck_prpr": str(t.price), "cntg_vol": str(t.volume)}
                for t in self.latest
            ]
            return ok(request, {"rt_cd": "0", "msg_cd": "MCA00000", "output": output})
        index = int(request.continuation["next-key"]) if request.continuation else 0
        self.asked.append((request.tr_id, index))
        if self.kiwoom_refuses:
            return failed(request, Status.UPSTREAM_ERROR, "business_error", provider_code="1902")
        if index in self.busy_once:
            self.busy_once.discard(index)
            return failed(request, Status.REJECTED, "backlog_full")
        more = index + 1 < len(self.pages)
        body = {"stk_cd": SYMBOL, "last_tic_cnt": "", "stk_tic_chart_qry": rows(self.pages[index])}
        return ok(request, body, continuation={"cont-yn": "Y", "next-key": str(index + 1)} if more else None)


async def no_sleep(_seconds: float) -> None:
    """Retries without waiting."""


async def never_commit(_records: list[Record], _offsets: Any) -> None:
    """A handler never commits; the runtime does."""
    raise AssertionError("the handler committed by itself")


Responder = Callable[[ApiRequest], ApiResponse]


async def recover(
    responder: Responder, value: Mapping[str, Any], today: date = DAY
) -> tuple[dict[str, Any], dict[str, Any], list[ApiRequest]]:
    """Run one task through ``BackfillManager``: (window record, re-verification task, requests sent)."""
    transport = InMemoryTransport(responder)
    async with HubClient(transport, caller=NAME) as hub:
        manager = BackfillManager(
            SETTINGS, hub, retrier=Retrier(NAME, call_timeout_s=2, sleep=no_sleep), today=lambda: today
        )
        out = Outputs(never_commit)
        await manager.handle(manager.parse(orjson.dumps(value)), out)
    window, verify = out.pending
    assert (window.topic, verify.topic) == (TOPICS.ticks_recovered, TOPICS.verification_tasks)
    task = manager.parse(orjson.dumps(value))
    assert (window.key, verify.key) == (f"{SYMBOL}|{task.day}|{task.window}", reverify_task_id(task))
    return orjson.loads(window.value), orjson.loads(verify.value), transport.sent


def expected_ticks(trades: Sequence[Tick], start: str, end: str, day: date = DAY) -> list[dict[str, Any]]:
    """The window's ``ticks`` value for an oldest-first tape, numbered within each second."""
    inside = [t for t in trades if at(start + ":00", day) <= t.time < at(end + ":00", day)]
    out: list[dict[str, Any]] = []
    for i, t in enumerate(inside):
        n = out[-1]["n"] + 1 if i and inside[i - 1].time == t.time else 0
        out.append({"time_kst": t.time.isoformat(), "n": n, "price": t.price, "volume": t.volume})
    return out


# -- policy tables -------------------------------------------------------------------------------------------
A, B, C = tick("10:00:07", 70_100, 3), tick("10:00:05", 70_000, 5), tick("10:00:05", 70_000, 6)
D, E, F = tick("10:00:05", 69_900, 7), tick("10:00:02", 69_800, 8), tick("09:59:59", 69_700, 9)


@pytest.mark.parametrize(
    ("run", "page", "joined"),
    [
        ([], [A, B], [A, B]),
        ([A, B], [E, F], [A, B, E, F]),  # the next page starts a second earlier
        ([A, B], [C, D, E], [A, B, C, D, E]),  # a page boundary split second 10:00:05
        ([A, B, C], [A, B, C, D, E], [A, B, C, D, E]),  # the page repeats the run from a newer second
        ([A, B, C], [B, C, D, E], [A, B, C, D, E]),  # the page repeats exactly the run's oldest second
        ([A, B, C], [C, D], [A, B, C, D]),  # the page repeats the run's last row, inside a second
        ([A, B], [B, D], [A, B, D]),  # the same: a trade exactly like B on the boundary would look so too
        ([A, B], [A, B], [A, B]),  # nothing new at all
    ],
)
def test_join_page(run: list[Tick], page: list[Tick], joined: list[Tick]) -> None:
    """A page joins the run without the rows it repeats, and keeps the older trades of a split second."""
    assert join_page(run, page) == joined


@pytest.mark.parametrize(
    ("run", "reached"),
    [
        ([], False),
        ([A, B], False),
        ([A, B, E], False),
        ([A, tick("10:00:00", 1, 1)], False),  # more trades at 10:00:00 may be on the next page
        ([A, F], True),
        ([tick("15:30:00", 1, 1, EARLIER)], True),
    ],
)
def test_walk_reached(run: list[Tick], reached: bool) -> None:
    """The walk is done once its oldest trade is older than the window's start (10:00:00)."""
    assert walk_reached(run, at("10:00:00")) is reached


@pytest.mark.parametrize(
    ("run", "held"),
    [([], False), ([tick("09:00:00", 1, 1, date(2026, 11, 30))], False), ([A, E], True), ([A, F], True)],
)
def test_holds_day(run: list[Tick], held: bool) -> None:
    """A walk the broker ended covers the window only when it got back to the window's day."""
    assert holds_day(run, DAY) is held


@pytest.mark.parametrize(
    ("latest", "covers"),
    [
        ([A, B, E], True),  # fewer than 30: the day's whole tape so far
        ([*[A] * 29, F], True),
        ([*[A] * 29, E], False),
        ([*[A] * 29, tick("10:00:00", 1, 1)], False),  # a trade at 10:00:00 may have had others before
    ],
)
def test_latest_cover(latest: list[Tick], covers: bool) -> None:
    """FHKST01010300's latest trades serve a window only when they reach back past its start."""
    assert latest_cover(latest, at("10:00:00")) is covers


def test_window_trades_numbers_within_each_second_in_tape_order() -> None:
    """Trades inside [start, end) come oldest first, n counting 0, 1, ... within each second."""
    run = [tick("10:05:00", 1, 1), tick("10:04:59", 2, 2), tick("10:04:59", 3, 3), A, B, C, D, E, F]
    assert window_trades(run, at("10:00:00"), at("10:05:00")) == [
        Trade(E.time, 0, E.price, E.volume),
        Trade(D.time, 0, D.price, D.volume),
        Trade(C.time, 1, C.price, C.volume),
        Trade(B.time, 2, B.price, B.volume),
        Trade(A.time, 0, A.price, A.volume),
        Trade(at("10:04:59"), 0, 3, 3),
        Trade(at("10:04:59"), 1, 2, 2),
    ]
    assert window_trades(run, at("10:06:00"), at("10:07:00")) == []


def test_records_keys_and_values() -> None:
    """The window record and the re-verification task have the contract's keys and fields, exactly, and
    a window of one record is written byte for byte as before windows could come in parts."""
    task = RecoveryTask.model_validate(task_value(round=2, reason="mismatch"))
    [record] = window_records(task, [Trade(A.time, 0, 70_100, 3)])
    assert window_key(record) == "005930|2026-11-27|10:00-10:05"
    assert encode(window_value(record, "KIWOOM", "ka10079")) == (
        b'{"kind":"window","symbol":"005930","day":"2026-11-27","start":"10:00","end":"10:05",'
        b'"provider":"KIWOOM","tr_id":"ka10079","ticks":[{"time_kst":"2026-11-27T10:00:07+09:00","n":0,'
        b'"price":70100,"volume":3}],"task_id":"recover|005930|2026-11-27|10:00-10:05|r1"}'
    )
    assert reverify_task_id(task) == "verify|005930|2026-11-27|10:00-10:05|r3"
    assert reverify_value(task) == {
        "task_id": "verify|005930|2026-11-27|10:00-10:05|r3",
        "symbol": SYMBOL,
        "day": "2026-11-27",
        "start": "10:00",
        "end": "10:05",
        "round": 3,
    }


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (None, "no value"),
        (b"not json", "(the record)"),
        (b"[1, 2]", "(the record)"),
        (orjson.dumps({k: v for k, v in task_value().items() if k != "end"}), "end"),
        (orjson.dumps(task_value(extra=1)), "extra"),
        (orjson.dumps(task_value(task_id="")), "task_id"),
        (orjson.dumps(task_value(symbol="5930")), "symbol"),
        (orjson.dumps(task_value(day="20261127")), "day"),
        (orjson.dumps(task_value(day="2026-11-27T10:00")), "day"),
        (orjson.dumps(task_value(day=1_790_000_000)), "day"),
        (orjson.dumps(task_value(day="2026-02-30")), "day"),
        (orjson.dumps(task_value(day="0999-12-31")), "before the first trading day"),
        (orjson.dumps(task_value(start="9:00")), "start"),
        (orjson.dumps(task_value(end="24:00")), "end"),
        (orjson.dumps(task_value(start="10:05", end="10:05")), "start before it ends"),
        (orjson.dumps(task_value(start="10:06", end="10:05")), "start before it ends"),
        (orjson.dumps(task_value(round=0)), "round"),
        (orjson.dumps(task_value(round=True)), "round"),  # not taken as round 1
        (orjson.dumps(task_value(round="3")), "round"),
        (orjson.dumps(task_value(round=2**53 - 1)), "round"),  # its re-verification would be round 2^53
        (
            b'{"task_id":"t","symbol":"005930","day":"2026-11-27","start":"10:00","end":"10:05","reason":"gap",'
            b'"round":1000000000000000000000000000000}',
            "round",
        ),  # past 64 bits: failed as it was written
        (orjson.dumps(task_value(deadline_ms="1796000000000")), "deadline_ms"),
        (orjson.dumps(task_value(deadline_ms=True)), "deadline_ms"),
        (orjson.dumps(task_value(reason="hunch")), "reason"),
    ],
)
def test_malformed_tasks_are_refused(value: bytes | None, names: str) -> None:
    """A record that is not a well-formed recovery task raises MalformedTask naming the problem."""
    with pytest.raises(MalformedTask) as info:
        build(SETTINGS, HubClient(InMemoryTransport(lambda r: None), caller=NAME)).parse(value)
    assert names in str(info.value) and info.value.reason == "malformed"


def test_build_makes_the_recovery_handler() -> None:
    """build() gives the runtime a handler named recovery-worker on the settings' recovery task topic."""
    handler = build(SETTINGS, HubClient(InMemoryTransport(lambda r: None), caller=NAME))
    assert (handler.name, handler.task_topic) == ("recovery-worker", "t.recover")


def test_worker_imports_no_http_client_or_gateway() -> None:
    """The recovery worker pulls in neither aiohttp nor anything of services.gateway."""
    code = (
        "import sys, services.recovery.worker; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'aiohttp' or m.startswith('services.gateway')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# -- BackfillManager over the in-memory hub ------------------------------------------------------------------
async def test_paging_stops_at_the_window_start() -> None:
    """The walk asks for pages only until one reaches back past the window's start, all as normal calls."""
    trades = tape(first="09:50:00", count=300)  # 09:50:00 to about 10:08:45
    broker = Broker(pages_of(trades, 40))
    window, verify, sent = await recover(broker, task_value(start="10:00", end="10:05"))
    needed = next(i for i, page in enumerate(broker.pages) if page[-1].time < at("10:00:00")) + 1
    assert 1 < needed < len(broker.pages)
    assert broker.asked == [("ka10079", i) for i in range(needed)]
    assert {r.priority for r in sent} == {Priority.NORMAL}
    assert all(r.params == {"stk_cd": SYMBOL, "tic_scope": "1", "upd_stkpc_tp": "0"} for r in sent)
    assert window["ticks"] == expected_ticks(trades, "10:00", "10:05")
    assert any(t["n"] == 1 for t in window["ticks"])
    assert (window["provider"], window["tr_id"]) == ("KIWOOM", "ka10079")
    assert verify == reverify_value(RecoveryTask.model_validate(task_value()))


async def test_duplicates_across_overlapping_pages_are_removed() -> None:
    """Pages that repeat rows of the page before still give each trade of the window exactly once."""
    trades = tape(first="09:59:00", count=150)
    for overlap in (1, 2, 3, 7, 19):
        window, _, _ = await recover(Broker(pages_of(trades, 20, overlap=overlap)), task_value())
        assert window["ticks"] == expected_ticks(trades, "10:00", "10:05"), overlap
        assert len({(t["time_kst"], t["n"]) for t in window["ticks"]}) == len(window["ticks"])


async def test_walk_over_earlier_days() -> None:
    """A window of an earlier day is reached by paging back through today's trades first."""
    trades = [*tape(EARLIER, "09:58:00", 100), *tape(DAY, "09:00:00", 100)]
    window, _, sent = await recover(Broker(pages_of(trades, 30)), task_value(day=EARLIER.isoformat()))
    assert (
        window["ticks"] == expected_ticks(trades, "10:00", "10:05", EARLIER) and window["day"] == "2026-11-26"
    )
    assert len(sent) > 4


async def test_empty_window() -> None:
    """A window without trades (rows on both sides of it, none inside) is published with no ticks."""
    trades = [tick("09:59:58", 1, 1), tick("09:59:59", 2, 2), tick("10:05:00", 3, 3), tick("10:06:00", 4, 4)]
    window, verify, _ = await recover(Broker(pages_of(trades, 2)), task_value())
    assert window["ticks"] == [] and window["kind"] == "window"
    assert verify["task_id"] == "verify|005930|2026-11-27|10:00-10:05|r2" and verify["round"] == 2


async def test_retriable_error_restarts_the_walk() -> None:
    """A page refused for load is retried: the walk starts again and completes the window."""
    trades = tape(first="09:59:00", count=150)
    broker = Broker(pages_of(trades, 20), busy_once={2})
    window, _, _ = await recover(broker, task_value())
    assert broker.asked[:6] == [("ka10079", i) for i in (0, 1, 2, 0, 1, 2)]
    assert window["ticks"] == expected_ticks(trades, "10:00", "10:05")


async def test_day_beyond_the_brokers_history_fails() -> None:
    """A walk the broker ends before reaching the window's day fails the task as out_of_range."""
    broker = Broker(pages_of(tape(DAY, "09:00:00", 50), 20))
    with pytest.raises(TaskFailed) as info:
        await recover(broker, task_value(day="2026-11-20"), today=DAY)
    assert info.value.reason == "out_of_range"
    assert all(tr_id == "ka10079" for tr_id, _ in broker.asked)


def trades_in(first: str, count: int, per_second: int) -> list[Trade]:
    """``count`` trades from ``first`` (HH:MM:SS) on, ``per_second`` to a second and numbered within it."""
    begin = at(first)
    return [
        Trade(begin + timedelta(seconds=i // per_second), i % per_second, 70_000 + i % 50, 1 + i % 999)
        for i in range(count)
    ]


def as_json(trades: Sequence[Trade]) -> bytes:
    """``trades`` as one record's ``ticks`` (JSON)."""
    return orjson.dumps([t.as_value() for t in trades])


KAFKA_RECORD_BYTES = 1024 * 1024


def test_a_window_too_large_for_one_record_is_written_as_windows_of_whole_minutes() -> None:
    """A busy window's trades would pass Kafka's 1 MiB a record (the commit would fail at every retry):
    they go as consecutive windows of whole minutes, each under WINDOW_BYTES, covering the whole window,
    every trade kept in order; a window of a few trades stays one record."""
    task = RecoveryTask.model_validate(task_value(start="10:00", end="10:15"))
    trades = trades_in("10:01:00", 12_000, 20)  # 10:01-10:10, then none until 10:15
    records = window_records(task, trades)
    assert len(records) >= 2 and {(r.part, r.parts) for r in records} == {(1, 1)}
    assert (records[0].window.start, records[-1].window.end) == ("10:00", "10:15")
    assert all(a.window.end == b.window.start for a, b in itertools.pairwise(records))  # no gap, no overlap
    assert [t for r in records for t in r.trades] == trades
    for record in records:
        assert record.ticks == as_json(record.trades) and len(record.ticks) <= WINDOW_BYTES
        assert all(record.window.start_at <= t.time < record.window.end_at for t in record.trades)
        assert window_key(record) == f"{SYMBOL}|{DAY.isoformat()}|{record.window.start}-{record.window.end}"
    assert window_records(task, trades[:50]) == [WindowRecord(task, trades[:50], as_json(trades[:50]))]


@pytest.mark.parametrize(
    ("busy", "too_big_for"),
    [(7_000, WINDOW_BYTES), (15_000, KAFKA_RECORD_BYTES), (40_000, 2 * KAFKA_RECORD_BYTES)],
)
def test_a_minute_too_busy_for_one_record_is_written_in_parts(busy: int, too_big_for: int) -> None:
    """A minute whose trades alone pass WINDOW_BYTES (past ~6,000 trades) or Kafka's 1 MiB (past ~13,000)
    is its own window, written in parts: keys ``...|HH:MM-HH:MM|k/n``, values with ``part`` and ``parts``,
    each part's ticks under WINDOW_BYTES; joined in part order they are exactly its trades, in tape order.
    The minutes around it are whole windows as before, and the same trades give the same records again."""
    task = RecoveryTask.model_validate(task_value(start="10:00", end="10:05"))
    before, minute, after = (
        trades_in("10:00:00", 30, 1),
        trades_in("10:01:00", busy, -(-busy // 60)),
        trades_in("10:03:00", 12, 2),
    )
    assert len(as_json(minute)) > too_big_for
    records = window_records(task, [*before, *minute, *after])

    split = [r for r in records if r.parts > 1]
    parts = len(split)
    assert parts >= 2 and [(r.part, r.parts) for r in split] == [(k, parts) for k in range(1, parts + 1)]
    assert [(r.window.start, r.window.end, r.trades) for r in records if r.parts == 1] == [
        ("10:00", "10:01", before),
        ("10:02", "10:05", after),
    ]
    assert records[1 : 1 + parts] == split  # in place of the minute, in part order
    assert {(r.window.start, r.window.end) for r in split} == {("10:01", "10:02")}
    assert [t for r in split for t in r.trades] == minute
    assert [window_key(r) for r in split] == [
        f"{SYMBOL}|2026-11-27|10:01-10:02|{k}/{parts}" for k in range(1, parts + 1)
    ]

    values = [orjson.loads(encode(window_value(r, "KIWOOM", "ka10079"))) for r in records]
    for record, value in zip(records, values, strict=True):
        assert len(orjson.dumps(value["ticks"])) <= WINDOW_BYTES
        assert len(encode(window_value(record, "KIWOOM", "ka10079"))) < WINDOW_BYTES + 1024
        assert value["ticks"] == [t.as_value() for t in record.trades]
    for record, value in zip(split, values[1 : 1 + parts], strict=True):
        assert list(value) == [
            "kind", "symbol", "day", "start", "end", "part", "parts", "provider", "tr_id", "ticks", "task_id"
        ]  # fmt: skip
        assert (value["start"], value["end"], value["part"], value["parts"]) == (
            "10:01",
            "10:02",
            record.part,
            parts,
        )
        assert value["task_id"] == task.task_id
    assert not any("part" in v or "parts" in v for v in (values[0], values[-1]))
    assert [t for v in values for t in v["ticks"]] == [t.as_value() for t in (*before, *minute, *after)]

    def written(trades: Sequence[Trade]) -> list[tuple[str, bytes]]:
        return [
            (window_key(r), encode(window_value(r, "KIWOOM", "ka10079")))
            for r in window_records(task, trades)
        ]

    assert written([*before, *minute, *after]) == written(list((*before, *minute, *after)))


def test_a_busy_minute_after_quiet_minutes_takes_them_into_its_window() -> None:
    """Minutes without trades before a busy minute belong to its window, so every minute of the task's
    window is still owned by exactly one window, and the parts cover them all."""
    task = RecoveryTask.model_validate(task_value(start="10:00", end="10:05"))
    minute = trades_in("10:02:00", 15_000, 250)
    records = window_records(task, minute)
    assert {(r.window.start, r.window.end) for r in records if r.parts > 1} == {("10:00", "10:03")}
    assert [(r.window.start, r.window.end, r.trades) for r in records if r.parts == 1] == [
        ("10:03", "10:05", [])
    ]
    assert [t for r in records for t in r.trades] == minute


def busy_broker(busy: int) -> tuple[Broker, list[Tick]]:
    """ka10079 pages of 900 rows: a trade before 10:00, a few in 10:00, ``busy`` in 10:01, a few after."""
    trades = [tick("09:59:59", 70_000, 1)]
    trades += [tick(f"10:00:{s:02d}", 70_000 + s, 2 + s) for s in range(0, 60, 6)]
    trades += [
        Tick(
            SYMBOL,
            at("10:01:00") + timedelta(seconds=i * 60 // busy),
            70_000 + i % 97,
            100 + i,
            Provider.KIWOOM,
            "ka10079",
        )
        for i in range(busy)
    ]
    trades += [tick(f"10:03:{s:02d}", 71_000 + s, 90_000 + s) for s in range(0, 60, 5)]
    return Broker(pages_of(trades, 900)), trades


async def test_the_worker_writes_a_busy_minute_as_parts_kafka_takes() -> None:
    """Through BackfillManager, a window with a minute of 15,000 trades gives window records that each fit a
    Kafka record with room to spare (before parts one was over 1 MiB and the task's commit failed for
    ever), holding exactly the tape's trades of the window in order, then the re-verification task; the
    same task again gives the same records."""

    async def records() -> list[Record]:
        broker, _ = busy_broker(15_000)
        async with HubClient(InMemoryTransport(broker), caller=NAME) as hub:
            manager = BackfillManager(
                SETTINGS, hub, retrier=Retrier(NAME, call_timeout_s=2, sleep=no_sleep), today=lambda: DAY
            )
            out = Outputs(never_commit)
            await manager.handle(manager.parse(orjson.dumps(task_value())), out)
        return out.pending

    first = await records()
    *windows, verify = first
    assert {w.topic for w in windows} == {
        TOPICS.ticks_recovered
    } and verify.topic == TOPICS.verification_tasks
    assert all(len(w.value) < WINDOW_BYTES + 1024 for w in windows)
    values = [orjson.loads(w.value) for w in windows]
    parts = sum(1 for v in values if "parts" in v)
    assert parts >= 3 and len(windows) == parts + 2
    _, tape_trades = busy_broker(15_000)
    assert [t for v in values for t in v["ticks"]] == expected_ticks(tape_trades, "10:00", "10:05")
    assert await records() == first


async def test_a_window_of_a_day_to_come_is_refused_before_any_call() -> None:
    """Recovered now, tomorrow's window would be empty, and a recovered window owns its minutes: it would
    hide the feed's trades once they come. The task fails as future_day; nothing is asked or written."""
    broker = Broker(pages_of(tape(DAY, "09:00:00", 50), 20))
    with pytest.raises(TaskFailed) as info:
        await recover(broker, task_value(day=(DAY + timedelta(days=1)).isoformat()), today=DAY)
    assert info.value.reason == "future_day" and broker.asked == []


async def test_kis_fallback_for_todays_latest_trades() -> None:
    """When Kiwoom refuses and the window lies within today's latest 30 trades, KIS serves them."""
    trades = tape(first="10:03:00", count=40)  # 10:03:00 to 10:05:15
    broker = Broker([], latest=list(reversed(trades))[:30], kiwoom_refuses=True)
    window, verify, sent = await recover(broker, task_value(start="10:04", end="10:06"))
    assert broker.asked == [("ka10079", 0), ("FHKST01010300", None)]
    assert sent[1].params == {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SYMBOL}
    assert {r.priority for r in sent} == {Priority.NORMAL}
    assert (window["provider"], window["tr_id"]) == ("KIS", "FHKST01010300")
    assert window["ticks"] == expected_ticks(trades, "10:04", "10:06")
    assert verify["round"] == 2


async def test_no_kis_fallback_for_a_past_day() -> None:
    """On any day but today, Kiwoom's refusal fails the task with its reason; KIS is not asked."""
    broker = Broker([], latest=list(reversed(tape(first="10:03:00", count=40)))[:30], kiwoom_refuses=True)
    with pytest.raises(TaskFailed) as info:
        await recover(broker, task_value(start="10:04", end="10:06"), today=DAY + timedelta(days=3))
    assert info.value.reason == "refused:business_error"
    assert broker.asked == [("ka10079", 0)]


async def test_no_kis_fallback_when_the_window_is_older_than_its_trades() -> None:
    """When today's latest 30 trades begin inside the window, the task fails with Kiwoom's reason."""
    broker = Broker([], latest=list(reversed(tape(first="10:03:00", count=40)))[:30], kiwoom_refuses=True)
    with pytest.raises(TaskFailed) as info:
        await recover(broker, task_value(start="10:00", end="10:05"))
    assert info.value.reason == "refused:business_error" and "FHKST01010300" in str(info.value)
    assert broker.asked == [("ka10079", 0), ("FHKST01010300", None)]


async def test_same_task_twice_gives_the_same_records() -> None:
    """Redoing a task writes the same window and re-verification values."""
    broker = Broker(pages_of(tape(first="09:59:00", count=150), 25, overlap=2))
    assert (await recover(broker, task_value()))[:2] == (await recover(broker, task_value()))[:2]


# -- against the sandbox's market ----------------------------------------------------------------------------
NOW = datetime(2026, 11, 27, 10, 30, tzinfo=KST)  # Friday, mid-session


def sandbox_broker(state: SandboxState) -> Responder:
    """Every ka10079 page from the sandbox's own handler at ``NOW``, its next-key as the continuation."""
    env = state.environments["kiwoom/real"]

    def answer(request: ApiRequest) -> ApiResponse:
        assert request.tr_id == "ka10079"
        headers = (
            {"cont-yn": "Y", "next-key": request.continuation["next-key"]} if request.continuation else {}
        )
        reply = ka10079(KiwoomCall(state, env, "ka10079", "unit-key", dict(request.params), headers, NOW))
        assert reply.status == 200 and reply.body["return_code"] == 0, reply.body
        key = reply.headers.get("next-key") if reply.headers.get("cont-yn") == "Y" else None
        return ok(request, reply.body, continuation={"cont-yn": "Y", "next-key": key} if key else None)

    return answer


def second_of(instant: datetime) -> int:
    """Seconds since 00:00 KST."""
    return instant.hour * 3600 + instant.minute * 60 + instant.second


@pytest.mark.parametrize(
    ("day", "start", "end", "rows_per_page"),
    [
        (date(2026, 11, 25), "13:00", "13:10", 300),  # two days back: pages through Friday and Thursday
        (NOW.date(), "09:00", "09:04", 300),  # the opening auction; the walk ends in Thursday's rows
        (NOW.date(), "10:20", "10:30", 20),  # just before the sandbox's now
    ],
)
async def test_repaired_window_equals_the_sandbox_market(
    day: date, start: str, end: str, rows_per_page: int
) -> None:
    """The window recovered from the sandbox's ka10079 pages holds exactly the trades the feed left out there,
    and they aggregate to the sandbox's minute bars, so the repaired window verifies."""
    state = SandboxState(SandboxSettings(kiwoom_tick_rows_per_page=rows_per_page))
    market = state.market
    value = task_value(day=day.isoformat(), start=start, end=end)
    transport_pages: list[int] = []
    responder = sandbox_broker(state)

    def counting(request: ApiRequest) -> ApiResponse:
        transport_pages.append(1)
        return responder(request)

    window, _, _ = await recover(counting, value, today=NOW.date())
    assert len(transport_pages) > 1  # the walk paged

    feed = FeedSettings(symbols=[SYMBOL], gaps=[f"{SYMBOL}@{start}-{end}"])
    plan = plan_day(feed, market, day)
    left_out = [t.original for t in plan.ticks if t.gap is not None]
    assert left_out
    got = [(datetime.fromisoformat(t["time_kst"]), t["price"], t["volume"]) for t in window["ticks"]]
    assert got == [(t.at(day), t.price, t.volume) for t in left_out]
    assert [t["n"] for t in window["ticks"]] == [
        sum(1 for u in left_out[:i] if u.second == t.second) for i, t in enumerate(left_out)
    ]

    rebuilt = aggregate_minutes(day, [MarketTick(second_of(g[0]), g[1], g[2]) for g in got])
    first, last = second_of(at(start + ":00", day)) // 60, second_of(at(end + ":00", day)) // 60
    bars = [b for b in market.minute_bars(SYMBOL, day, NOW) if first <= b.minute < last]
    assert len(bars) == last - first
    ohlcv = [(b.minute, b.open, b.high, b.low, b.close, b.volume, b.value) for b in bars]
    assert [(b.minute, b.open, b.high, b.low, b.close, b.volume, b.value) for b in rebuilt] == ohlcv
