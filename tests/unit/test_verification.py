"""verification-worker: the comparison policy (a table), the tick book, the sandbox's own ticks against its
minute bars, and ``VerificationConsumer`` over the in-memory hub with brokers answering from the sandbox's
market (no Kafka: the collected trades come from a ``TickBook``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from hubclient import HubClient
from hubclient.market import KST
from hubclient.models import ApiRequest, ApiResponse, Priority, Status
from hubclient.testing import InMemoryTransport, failed, ok
from services.recovery.records import window_records, window_value
from services.recovery.tape import Trade
from services.recovery.task import RecoveryTask
from services.sandbox.bars import Bar
from services.sandbox.feed import _DayRun, plan_day, sandbox_market
from services.sandbox.market import Market
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.settings import WorkerSettings
from services.verification.minutes import FIELDS, MinuteBar, Window, bars_from_trades, hhmm, parse_hhmm
from services.verification.policy import Disagreement, Problem, Verdict, judge
from services.verification.records import recovery_tasks, result
from services.verification.tape import TickBook
from services.verification.task import VerificationTask
from services.verification.worker import VerificationConsumer, build
from services.worker.errors import MalformedTask, TaskFailed
from services.worker.outputs import Outputs, Record, encode
from services.worker.retry import Retrier
from services.worker.task import parse_task

SYMBOL = "005930"
DAY = date(2026, 11, 26)  # a Thursday in the sandbox market's history
LATER = date(2026, 11, 30)  # "today" for the handler, unless a test says otherwise
MARKET = sandbox_market(SandboxSettings())
W = Window(parse_hhmm("10:00"), parse_hhmm("10:10"))


def bar(minute: str, o: int = 100, h: int = 110, lo: int = 90, c: int = 105, v: int = 10) -> MinuteBar:
    """A bar at ``HH:MM``."""
    return MinuteBar(parse_hhmm(minute), o, h, lo, c, v)


def bars(*items: MinuteBar) -> dict[int, MinuteBar]:
    """Bars by minute."""
    return {b.minute: b for b in items}


def m(text: str) -> int:
    """Minute of ``HH:MM``."""
    return parse_hhmm(text)


# -- policy --------------------------------------------------------------------------------------------------
SAME = bars(bar("10:00"), bar("10:01"), bar("10:02"))
POLICY_TABLE: list[tuple[str, dict[int, MinuteBar], dict[int, MinuteBar], dict[int, MinuteBar], Verdict]] = [
    ("all equal", SAME, SAME, SAME, Verdict(3, (), ())),
    ("nothing anywhere", {}, {}, {}, Verdict(0, (), ())),
    (
        "missing minutes are one gap run",
        bars(bar("10:00")),
        SAME,
        SAME,
        Verdict(3, (Problem(m("10:01"), m("10:03"), "gap"),), ()),
    ),
    (
        "a differing volume names only volume",
        bars(bar("10:00"), bar("10:01", v=11), bar("10:02")),
        SAME,
        SAME,
        Verdict(3, (Problem(m("10:01"), m("10:02"), "mismatch", ("volume",)),), ()),
    ),
    (
        "adjacent mismatches merge and unite their fields",
        bars(bar("10:00", lo=0), bar("10:01", v=-10), bar("10:02")),
        SAME,
        SAME,
        Verdict(3, (Problem(m("10:00"), m("10:02"), "mismatch", ("low", "volume")),), ()),
    ),
    (
        "trades where no broker has a minute are a mismatch of every field",
        bars(bar("10:00"), bar("10:05")),
        bars(bar("10:00")),
        bars(bar("10:00")),
        Verdict(2, (Problem(m("10:05"), m("10:06"), "mismatch", FIELDS),), ()),
    ),
    (
        "runs of different kinds stay apart, and a hole splits a run",
        bars(bar("10:01", c=1), bar("10:04", o=1)),
        bars(bar("10:00"), bar("10:01"), bar("10:02"), bar("10:04"), bar("10:05")),
        bars(bar("10:00"), bar("10:01"), bar("10:02"), bar("10:04"), bar("10:05")),
        Verdict(
            5,
            (
                Problem(m("10:00"), m("10:01"), "gap"),
                Problem(m("10:01"), m("10:02"), "mismatch", ("close",)),
                Problem(m("10:02"), m("10:03"), "gap"),
                Problem(m("10:04"), m("10:05"), "mismatch", ("open",)),
                Problem(m("10:05"), m("10:06"), "gap"),
            ),
            (),
        ),
    ),
    (
        "Kiwoom differing from KIS is a disagreement; the trades match KIS, so no problem",
        SAME,
        SAME,
        bars(bar("10:00"), bar("10:01", c=104, h=111), bar("10:02")),
        Verdict(3, (), (Disagreement(m("10:01"), ("high", "close")),)),
    ),
    (
        "trades that match Kiwoom but not KIS are judged against KIS",
        bars(bar("10:00"), bar("10:01", c=104), bar("10:02")),
        SAME,
        bars(bar("10:00"), bar("10:01", c=104), bar("10:02")),
        Verdict(
            3,
            (Problem(m("10:01"), m("10:02"), "mismatch", ("close",)),),
            (Disagreement(m("10:01"), ("close",)),),
        ),
    ),
    (
        "a minute only Kiwoom reports is judged against Kiwoom and listed as missing at KIS",
        SAME,
        bars(bar("10:00"), bar("10:02")),
        SAME,
        Verdict(3, (), (Disagreement(m("10:01"), ("kis_missing",)),)),
    ),
    (
        "a minute only KIS reports, without trades, is a gap and missing at Kiwoom",
        bars(bar("10:00"), bar("10:01")),
        SAME,
        bars(bar("10:00"), bar("10:01")),
        Verdict(
            3, (Problem(m("10:02"), m("10:03"), "gap"),), (Disagreement(m("10:02"), ("kiwoom_missing",)),)
        ),
    ),
    (
        "minutes outside the window are not judged",
        bars(bar("09:59", v=1), bar("10:00"), bar("10:10", v=1)),
        bars(bar("09:58"), bar("10:00"), bar("10:11")),
        bars(bar("09:58"), bar("10:00"), bar("10:11")),
        Verdict(1, (), ()),
    ),
]


@pytest.mark.parametrize(
    ("collected", "kis", "kiwoom", "expected"),
    [case[1:] for case in POLICY_TABLE],
    ids=[case[0] for case in POLICY_TABLE],
)
def test_policy_table(
    collected: dict[int, MinuteBar],
    kis: dict[int, MinuteBar],
    kiwoom: dict[int, MinuteBar],
    expected: Verdict,
) -> None:
    """Each row: the verdict of a 10:00-10:10 window for collected bars against KIS and Kiwoom bars."""
    verdict = judge(W, collected, kis, kiwoom)
    assert verdict == expected
    assert verdict.status == ("problems" if expected.problems else "verified")


# -- the tick book -------------------------------------------------------------------------------------------
def feed(
    seq: int, clock: str, price: int, volume: int = 1, *, day: date = DAY, symbol: str = SYMBOL
) -> bytes:
    """A ``market.ticks`` value as the feed writes it (``clock`` is HH:MM:SS KST)."""
    instant = datetime.combine(day, time.fromisoformat(clock), KST)
    return orjson.dumps(
        {
            "symbol": symbol,
            "day": f"{day:%Y%m%d}",
            "seq": seq,
            "ts_ms": int(instant.timestamp() * 1000),
            "time_kst": instant.isoformat(),
            "price": price,
            "volume": volume,
            "source": "kis-ws",
        }
    )


def recovered(start: str, end: str, ticks: Iterable[tuple[str, int, int, int]], *, day: date = DAY) -> bytes:
    """A ``market.ticks.recovered`` window; ``ticks`` are (HH:MM:SS, n, price, volume)."""
    return orjson.dumps(
        {
            "kind": "window",
            "symbol": SYMBOL,
            "day": day.isoformat(),
            "start": start,
            "end": end,
            "provider": "KIWOOM",
            "tr_id": "ka10079",
            "ticks": [
                {
                    "time_kst": datetime.combine(day, time.fromisoformat(c), KST).isoformat(),
                    "n": n,
                    "price": p,
                    "volume": v,
                }
                for c, n, p, v in ticks
            ],
            "task_id": f"recover|{SYMBOL}|{day}|{start}-{end}|r1",
        }
    )


def test_candles_follow_seq_order_and_duplicates_count_once() -> None:
    """Open is the lowest seq and close the highest whatever the arrival order; a resent seq adds nothing."""
    book = TickBook()
    for value in (feed(3, "10:00:40", 103, 5), feed(1, "10:00:05", 101, 2), feed(2, "10:00:20", 99, 3)):
        book.add_feed(value)
    book.add_feed(feed(2, "10:00:20", 99, 3))
    book.add_feed(feed(2, "10:00:20", 99, 3, day=date(2026, 11, 27)))  # another day: its own tape
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:00"), 101, 103, 99, 103, 10))
    assert book.bars(SYMBOL, date(2026, 11, 27), W) == bars(MinuteBar(m("10:00"), 99, 99, 99, 99, 3))
    assert book.feed_records == 5 and book.malformed == 0


def test_recovered_window_replaces_the_feed_in_its_minutes_only() -> None:
    """Inside [start, end) only the window's trades count (a minute it lacks is empty); outside the feed's."""
    book = TickBook()
    for seq, clock, price in [
        (1, "10:00:10", 100),
        (2, "10:01:10", 0),
        (3, "10:02:10", 102),
        (4, "10:03:10", 103),
    ]:
        book.add_feed(feed(seq, clock, price))
    book.add_recovered(recovered("10:01", "10:03", [("10:01:10", 0, 101, 1)]))
    assert book.bars(SYMBOL, DAY, W) == bars(
        bar("10:00", 100, 100, 100, 100, 1),
        bar("10:01", 101, 101, 101, 101, 1),
        bar("10:03", 103, 103, 103, 103, 1),
    )


def test_recovered_ticks_in_time_and_n_order_duplicates_dropped() -> None:
    """A window's trades go in (time_kst, n) order whatever their order; a repeated pair counts once."""
    book = TickBook()
    ticks = [
        ("10:00:30", 0, 104, 4),
        ("10:00:05", 1, 102, 2),
        ("10:00:05", 0, 101, 1),
        ("10:00:30", 0, 104, 4),
    ]
    book.add_recovered(recovered("10:00", "10:01", ticks))
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:00"), 101, 104, 101, 104, 7))


def test_later_window_wins() -> None:
    """A later record of the same window replaces the earlier; of overlapping windows the later owns both."""
    book = TickBook()
    book.add_recovered(recovered("10:00", "10:02", [("10:00:01", 0, 1, 1), ("10:01:01", 0, 1, 1)]))
    book.add_recovered(recovered("10:00", "10:02", [("10:00:01", 0, 2, 1), ("10:01:01", 0, 2, 1)]))
    assert {b.close for b in book.bars(SYMBOL, DAY, W).values()} == {2}
    book.add_recovered(recovered("10:01", "10:03", [("10:01:01", 0, 3, 1), ("10:02:01", 0, 3, 1)]))
    assert [b.close for b in book.bars(SYMBOL, DAY, W).values()] == [2, 3, 3]
    book.add_recovered(recovered("10:00", "10:02", [("10:00:01", 0, 4, 1), ("10:01:01", 0, 4, 1)]))
    assert [b.close for b in book.bars(SYMBOL, DAY, W).values()] == [4, 4, 3]


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"not json",
        b"[1, 2]",
        orjson.dumps(
            {"symbol": SYMBOL, "day": "20261126", "seq": "1", "time_kst": "x", "price": 1, "volume": 1}
        ),
        orjson.dumps({**orjson.loads(feed(1, "10:00:00", 1)), "price": True}),
        orjson.dumps({**orjson.loads(feed(1, "10:00:00", 1)), "time_kst": "2026-11-27T10:00:00+09:00"}),
    ],
)
def test_malformed_feed_records_are_counted_not_kept(value: bytes | None) -> None:
    """A feed value that cannot be read is counted and leaves the book empty."""
    book = TickBook()
    assert not book.add_feed(value)
    assert book.malformed == 1 and book.symbol_days() == []


def test_malformed_recovered_records_are_counted_not_kept() -> None:
    """A recovered value of another kind, with a bad window or a bad tick is counted and ignored."""
    book = TickBook()
    good = orjson.loads(recovered("10:00", "10:01", [("10:00:01", 0, 1, 1)]))
    for broken in ({**good, "kind": "tick"}, {**good, "end": "09:00"}, {**good, "ticks": [{"n": 0}]}):
        assert not book.add_recovered(orjson.dumps(broken))
    assert book.malformed == 3 and book.bars(SYMBOL, DAY, W) == {}


def in_parts(value: bytes, parts: int, *, task_id: str | None = None) -> list[bytes]:
    """A recovered window value cut into ``parts`` records of consecutive ticks, as the recovery worker
    writes a window too large for one record."""
    whole = orjson.loads(value)
    ticks, size = whole["ticks"], -(-len(whole["ticks"]) // parts)
    shape = {"task_id": task_id} if task_id else {}
    return [
        orjson.dumps(
            {**whole, "part": k + 1, "parts": parts, **shape, "ticks": ticks[k * size : (k + 1) * size]}
        )
        for k in range(parts)
    ]


def test_a_window_in_parts_is_read_whole_once_every_part_is() -> None:
    """The parts of a window, read in any order, make the window once the last one is read: its minutes
    are built from all their trades in (time_kst, n) order; until then the feed's trades stand."""
    book = TickBook()
    book.add_feed(feed(1, "10:01:10", 500, 9))
    ticks = [(f"10:01:{s:02d}", n, 100 + s + n, 1 + n) for s in range(0, 60, 10) for n in range(3)]
    first, second, third = in_parts(recovered("10:01", "10:02", ticks), 3)
    assert book.add_recovered(third) and book.add_recovered(first)
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:01"), 500, 500, 500, 500, 9))
    assert book.add_recovered(second)
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:01"), 100, 152, 100, 152, 36))
    assert book.recovered_records == 3 and book.malformed == 0


def test_parts_of_different_tasks_are_not_mixed_and_the_last_whole_window_wins() -> None:
    """Parts are joined only with parts of the same task and count; a window completed later (in parts
    or whole) replaces an earlier one, as for whole windows; a redone task's parts make it again."""
    book = TickBook()
    one = in_parts(
        recovered("10:00", "10:01", [("10:00:01", 0, 1, 1), ("10:00:02", 0, 1, 1)]), 2, task_id="r1"
    )
    two = in_parts(
        recovered("10:00", "10:01", [("10:00:01", 0, 2, 1), ("10:00:02", 0, 2, 1)]), 2, task_id="r2"
    )
    for value in (one[0], two[1], two[0]):
        book.add_recovered(value)
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:00"), 2, 2, 2, 2, 2))  # r1 still lacks a part
    book.add_recovered(one[1])
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:00"), 1, 1, 1, 1, 2))  # r1 completed last
    book.add_recovered(recovered("10:00", "10:01", [("10:00:01", 0, 3, 1)]))
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:00"), 3, 3, 3, 3, 1))
    for value in one:  # r1 redone: written again, read again
        book.add_recovered(value)
    assert book.bars(SYMBOL, DAY, W) == bars(MinuteBar(m("10:00"), 1, 1, 1, 1, 2))


@pytest.mark.parametrize(
    "shape",
    [{"part": 0}, {"part": 3}, {"parts": "2"}, {"part": True}, {"parts": 0}, {"task_id": ""}, {"task_id": 7}],
)
def test_a_part_out_of_shape_is_counted_not_kept(shape: dict[str, Any]) -> None:
    """A part numbered outside 1..parts, a count that is no number, or a part without its task is
    malformed: counted and ignored."""
    book = TickBook()
    first, second = in_parts(recovered("10:00", "10:01", [("10:00:01", 0, 1, 1), ("10:00:02", 0, 1, 1)]), 2)
    assert book.add_recovered(first)
    assert not book.add_recovered(orjson.dumps({**orjson.loads(second), **shape}))
    assert book.malformed == 1 and book.bars(SYMBOL, DAY, W) == {}


def test_the_recovery_workers_parts_of_a_busy_minute_make_its_bar() -> None:
    """The records the recovery worker writes for a minute of 15,000 trades, read by the verification
    worker's book in any order, build exactly that minute's bar from all its trades."""
    day = DAY
    task = RecoveryTask.model_validate(
        {"task_id": "recover|005930|2026-11-26|10:00-10:05|r1", "symbol": SYMBOL, "day": day.isoformat(),
         "start": "10:00", "end": "10:05", "round": 1, "reason": "gap"}
    )  # fmt: skip
    begin = datetime.combine(day, time(10, 1), KST)
    trades = [
        Trade(begin + timedelta(seconds=i // 250), i % 250, 70_000 + (i * 37) % 1001, 1 + i % 13)
        for i in range(15_000)
    ]
    records = window_records(task, trades)
    assert sum(1 for r in records if r.parts > 1) >= 3
    book = TickBook()
    for record in reversed(records):
        assert book.add_recovered(encode(window_value(record, "KIWOOM", "ka10079")))
    expected = bars_from_trades((m("10:01"), t.price, t.volume) for t in trades)
    assert book.bars(SYMBOL, day, Window(m("10:00"), m("10:05"))) == expected
    assert book.malformed == 0


# -- the sandbox: its ticks make its minute bars -------------------------------------------------------------
def sandbox_bars(market: Market, day: date) -> dict[int, MinuteBar]:
    """The minute bars the sandbox's REST endpoints serve (KIS and Kiwoom alike), by minute."""
    return {
        b.minute: MinuteBar(b.minute, b.open, b.high, b.low, b.close, b.volume)
        for b in market.minute_bars(SYMBOL, day)
    }


def feed_book(settings: SandboxSettings, day: date) -> TickBook:
    """A book holding exactly the values the feed publishes for ``day`` (gaps left out)."""
    plan = plan_day(settings.feed, sandbox_market(settings), day)
    run = _DayRun(plan, settings.feed)  # the feed's own encoder, so the format cannot drift unnoticed
    midnight_ms = int(datetime.combine(day, time(), KST).timestamp()) * 1000
    book = TickBook()
    for tick in plan.ticks:
        if tick.gap is None:
            assert book.add_feed(run._value(tick, midnight_ms + tick.second * 1000))
    return book


SESSION = Window(parse_hhmm("09:00"), parse_hhmm("15:31"))


def test_undamaged_feed_aggregates_to_the_rest_minute_bars_including_the_close() -> None:
    """The feed's undamaged ticks build exactly the REST minute bars, 09:00 through the 15:30 auction bar."""
    settings = SandboxSettings(feed=FeedSettings(symbols=[SYMBOL]))
    truth = sandbox_bars(MARKET, DAY)
    built = feed_book(settings, DAY).bars(SYMBOL, DAY, SESSION)
    assert built == truth
    assert hhmm(max(truth)) == "15:30" and len(truth) == 391  # the brokers do report a 15:30 bar
    closing = [t for t in MARKET.ticks(SYMBOL, DAY) if t.second // 60 == m("15:30")]
    assert [t.second for t in closing] == [15 * 3600 + 30 * 60]  # one trade: the closing auction
    assert judge(SESSION, built, truth, truth) == Verdict(391, (), ())
    session_minus_close = Window(parse_hhmm("09:00"), parse_hhmm("15:30"))
    assert judge(session_minus_close, built, truth, truth).minutes == 390


def test_damaged_feed_problems_are_exactly_the_injected_minutes() -> None:
    """With gaps and corrupted ticks, the problem minutes are exactly the gap and the corrupted minutes."""
    feed_settings = FeedSettings(symbols=[SYMBOL], gaps=[f"{SYMBOL}@10:00-10:03"], corrupt_rate=0.01, seed=7)
    settings = SandboxSettings(feed=feed_settings)
    plan = plan_day(feed_settings, MARKET, DAY)
    gap_minutes = {t.second // 60 for t in plan.ticks if t.gap is not None}
    corrupt_minutes = {t.second // 60 for t in plan.ticks if t.corruption is not None and t.gap is None}
    assert gap_minutes == set(range(m("10:00"), m("10:03"))) and corrupt_minutes
    truth = sandbox_bars(MARKET, DAY)
    verdict = judge(SESSION, feed_book(settings, DAY).bars(SYMBOL, DAY, SESSION), truth, truth)
    found = {kind: set() for kind in ("gap", "mismatch")}  # type: dict[str, set[int]]
    for problem in verdict.problems:
        found[problem.kind].update(range(problem.start, problem.end))
    assert found == {"gap": gap_minutes, "mismatch": corrupt_minutes - gap_minutes}


# -- the handler over the in-memory hub ----------------------------------------------------------------------
def kis_row(b: Bar) -> dict[str, str]:
    """A KIS minute-chart row."""
    return {
        "stck_bsop_date": f"{b.day:%Y%m%d}",
        "stck_cntg_hour": f"{b.minute // 60:02d}{b.minute % 60:02d}00",
        "stck_prpr": str(b.close),
        "stck_oprc": str(b.open),
        "stck_hgpr": str(b.high),
        "stck_lwpr": str(b.low),
        "cntg_vol": str(b.volume),
        "acml_tr_pbmn": str(b.cum_value),
    }


def kiwoom_row(b: Bar) -> dict[str, str]:
    """A Kiwoom ka10080 row (prices signed, as Kiwoom sends them)."""
    return {
        "cur_prc": f"+{b.close}",
        "trde_qty": str(b.volume),
        "cntr_tm": f"{b.day:%Y%m%d}{b.minute // 60:02d}{b.minute % 60:02d}00",
        "open_pric": f"-{b.open}",
        "high_pric": f"+{b.high}",
        "low_pric": f"-{b.low}",
        "acc_trde_qty": str(b.cum_volume),
    }


class Brokers:
    """Answers KIS and Kiwoom minute charts from the sandbox market, paged like the gateway pages them."""

    def __init__(self) -> None:
        self.kiwoom_changes: dict[int, dict[str, int]] = {}  # minute -> Bar fields to change
        self.failures: list[Status] = []  # answers to give first, in order

    def __call__(self, request: ApiRequest) -> ApiResponse:
        if self.failures:
            return failed(request, self.failures.pop(0), "backlog_full")
        if request.tr_id == "ka10080":
            return self._kiwoom(request)
        return self._kis(request)

    def _kis(self, request: ApiRequest) -> ApiResponse:
        params = {**request.params, **(request.continuation or {})}
        hour = params["FID_INPUT_HOUR_1"]
        cut = int(hour[:2]) * 60 + int(hour[2:4])
        day = datetime.strptime(params.get("FID_INPUT_DATE_1", f"{DAY:%Y%m%d}"), "%Y%m%d").date()
        size = 30 if request.tr_id == "FHKST03010200" else 120
        page = [b for b in MARKET.minute_bars(params["FID_INPUT_ISCD"], day) if b.minute <= cut][-size:][::-1]
        more = len(page) == size and page[-1].minute > m("09:00")
        continuation = (
            {"FID_INPUT_HOUR_1": f"{hhmm(page[-1].minute - 1).replace(':', '')}00"} if more else None
        )
        body = {
            "rt_cd": "0",
            "msg_cd": "MCA00000",
            "output1": {},
            "output2": [kis_row(b) for b in page] or [{}],
        }
        return ok(request, body, continuation=continuation)

    def _kiwoom(self, request: ApiRequest) -> ApiResponse:
        day = datetime.strptime(request.params["base_dt"], "%Y%m%d").date()
        rows = []
        for b in reversed(MARKET.minute_bars(request.params["stk_cd"], day)):
            changed = Bar(
                **{
                    **{f: getattr(b, f) for f in Bar.__dataclass_fields__},
                    **self.kiwoom_changes.get(b.minute, {}),
                }
            )
            rows.append(kiwoom_row(changed))
        return ok(
            request, {"stk_cd": request.params["stk_cd"], "stk_min_pole_chart_qry": rows, "return_code": 0}
        )


class BookTicks:
    """The handler's tick source over a ``TickBook``, without Kafka."""

    def __init__(self, book: TickBook) -> None:
        self.book = book
        self.catch_ups = 0

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def catch_up(self, timeout_s: float) -> int:
        """Count the call."""
        assert timeout_s > 0
        self.catch_ups += 1
        return 0

    def bars(self, symbol: str, day: date, window: Window) -> dict[int, MinuteBar]:
        """From the book."""
        return self.book.bars(symbol, day, window)


GAP = range(m("10:00"), m("10:03"))
CORRUPT_MINUTE = m("10:20")


def collected_book() -> TickBook:
    """DAY's sandbox trades as the feed would deliver them: 10:00-10:03 missing, one 10:20 trade priced 0."""
    ticks = MARKET.ticks(SYMBOL, DAY)
    in_corrupt = [i for i, t in enumerate(ticks) if t.second // 60 == CORRUPT_MINUTE]
    assert len(in_corrupt) >= 3  # a middle trade: only the low changes
    corrupt = in_corrupt[1]
    book = TickBook()
    for i, t in enumerate(ticks):
        if t.second // 60 in GAP:
            continue
        clock = (datetime.min + timedelta(seconds=t.second)).strftime("%H:%M:%S")
        book.add_feed(feed(i + 1, clock, 0 if i == corrupt else t.price, t.volume))
    return book


def task(start: str, end: str, round_: int = 1) -> VerificationTask:
    """A verification task of DAY."""
    return VerificationTask(
        task_id=f"verify|{SYMBOL}|{DAY}|{start}-{end}|r{round_}",
        symbol=SYMBOL,
        day=DAY,
        start=start,
        end=end,
        round=round_,
    )


async def no_commit(records: list[Record], offsets: Any) -> None:
    """The outputs are only inspected."""


async def no_sleep(_: float) -> None:
    """Retries without waiting."""


async def verify(
    job: VerificationTask, brokers: Brokers | None = None, *, today: date = LATER
) -> tuple[list[Record], InMemoryTransport, BookTicks]:
    """Run one task through the handler; its pending output records, the hub's transport, the tick source."""
    transport = InMemoryTransport(brokers or Brokers())
    ticks = BookTicks(collected_book())
    settings = WorkerSettings(call_timeout_s=2, task_deadline_s=30)
    out = Outputs(no_commit)
    async with HubClient(transport, caller="verification-worker") as hub:
        handler = VerificationConsumer(
            settings,
            hub,
            ticks=ticks,
            today=lambda: today,
            retrier=Retrier("unit", call_timeout_s=2, sleep=no_sleep),
        )
        await handler.start()
        await handler.handle(handler.parse(job.model_dump_json().encode()), out)
        await handler.stop()
    return out.pending, transport, ticks


def values(records: list[Record], topic: str) -> list[dict[str, Any]]:
    """The values written to ``topic``."""
    return [orjson.loads(r.value) for r in records if r.topic == topic]


TOPICS = WorkerSettings().topics


async def test_window_with_a_gap() -> None:
    """The missing minutes are one gap problem, with one recovery task for exactly those minutes."""
    job = task("09:55", "10:10")
    records, _, ticks = await verify(job)
    assert ticks.catch_ups == 2  # at start, then the task's own
    [res] = values(records, TOPICS.verification_results)
    assert res == {
        "task_id": job.task_id,
        "symbol": SYMBOL,
        "day": "2026-11-26",
        "start": "09:55",
        "end": "10:10",
        "round": 1,
        "status": "problems",
        "minutes": 15,
        "problems": [{"start": "10:00", "end": "10:03", "kind": "gap", "minutes": 3, "fields": []}],
        "disagreements": [],
    }
    [rec] = [r for r in records if r.topic == TOPICS.recovery_tasks]
    assert rec.key == f"recover|{SYMBOL}|2026-11-26|10:00-10:03|r1"
    assert orjson.loads(rec.value) == {
        "task_id": rec.key,
        "symbol": SYMBOL,
        "day": "2026-11-26",
        "start": "10:00",
        "end": "10:03",
        "round": 1,
        "reason": "gap",
    }
    assert [r.key for r in records if r.topic == TOPICS.verification_results] == [job.task_id]


async def test_corrupted_tick() -> None:
    """A trade priced 0 in the middle of a minute is a one-minute mismatch naming the low only."""
    records, _, _ = await verify(task("10:15", "10:25"))
    [res] = values(records, TOPICS.verification_results)
    assert res["problems"] == [
        {"start": "10:20", "end": "10:21", "kind": "mismatch", "minutes": 1, "fields": ["low"]}
    ]
    assert [v["reason"] for v in values(records, TOPICS.recovery_tasks)] == ["mismatch"]


async def test_clean_window_asks_both_brokers_once_as_interactive() -> None:
    """A clean past window is verified from one FHKST03010230 and one ka10080 page, sent as interactive."""
    records, transport, _ = await verify(task("11:00", "11:30"))
    [res] = values(records, TOPICS.verification_results)
    assert (res["status"], res["minutes"], res["problems"], res["disagreements"]) == ("verified", 30, [], [])
    assert values(records, TOPICS.recovery_tasks) == []
    assert sorted(r.tr_id for r in transport.sent) == ["FHKST03010230", "ka10080"]
    assert {r.priority for r in transport.sent} == {Priority.INTERACTIVE}
    kis = next(r for r in transport.sent if r.tr_id == "FHKST03010230")
    assert (kis.params["FID_INPUT_HOUR_1"], kis.params["FID_INPUT_DATE_1"]) == ("112900", "20261126")
    kiwoom = next(r for r in transport.sent if r.tr_id == "ka10080")
    assert kiwoom.params == {"stk_cd": SYMBOL, "tic_scope": "1", "upd_stkpc_tp": "0", "base_dt": "20261126"}


async def test_broker_disagreement_is_reported_not_a_problem() -> None:
    """Kiwoom differing from KIS on a minute is listed under disagreements; the window still verifies."""
    brokers = Brokers()
    original = next(b for b in MARKET.minute_bars(SYMBOL, DAY) if b.minute == m("11:05"))
    brokers.kiwoom_changes[m("11:05")] = {"close": original.close + 100, "volume": original.volume + 1}
    records, _, _ = await verify(task("11:00", "11:30"), brokers)
    [res] = values(records, TOPICS.verification_results)
    assert res["status"] == "verified"
    assert res["disagreements"] == [{"minute": "11:05", "fields": ["close", "volume"]}]


async def test_long_window_pages_kis_until_its_start_and_no_further() -> None:
    """A 150-minute window takes two KIS pages of 120 (the second reaching the start) and one Kiwoom page."""
    records, transport, _ = await verify(task("11:00", "13:30"))
    [res] = values(records, TOPICS.verification_results)
    assert (res["status"], res["minutes"]) == ("verified", 150)
    assert [r.tr_id for r in transport.sent].count("FHKST03010230") == 2
    assert [r.tr_id for r in transport.sent].count("ka10080") == 1


async def test_closing_window_includes_the_auction_minute() -> None:
    """A window ending 15:31 asks KIS from 15:30 and checks the closing-auction minute too."""
    records, transport, _ = await verify(task("15:00", "15:31"))
    [res] = values(records, TOPICS.verification_results)
    assert (res["status"], res["minutes"]) == ("verified", 31)
    assert (
        next(r for r in transport.sent if r.tr_id.startswith("FHKST")).params["FID_INPUT_HOUR_1"] == "153000"
    )


async def test_today_uses_the_same_day_chart() -> None:
    """When the day is today by the injected clock, KIS is asked with FHKST03010200."""
    records, transport, _ = await verify(task("11:00", "11:20"), today=DAY)
    assert values(records, TOPICS.verification_results)[0]["status"] == "verified"
    kis = [r for r in transport.sent if r.provider == "KIS"]
    assert [r.tr_id for r in kis] == ["FHKST03010200"] and "FID_INPUT_DATE_1" not in kis[0].params


async def test_third_round_reports_without_recovery_tasks() -> None:
    """From round 3 on, problems are reported in the result and no recovery task is written."""
    records, _, _ = await verify(task("09:55", "10:10", round_=3))
    [res] = values(records, TOPICS.verification_results)
    assert res["status"] == "problems" and res["round"] == 3
    assert values(records, TOPICS.recovery_tasks) == []


async def test_retriable_hub_errors_are_retried() -> None:
    """A rejected (backlog_full) answer is retried and the task still completes."""
    brokers = Brokers()
    brokers.failures = [Status.REJECTED, Status.REJECTED]
    records, transport, _ = await verify(task("11:00", "11:10"), brokers)
    assert values(records, TOPICS.verification_results)[0]["status"] == "verified"
    assert len(transport.sent) == 4


async def test_a_window_of_a_day_to_come_gets_no_verdict() -> None:
    """A day after today has no trades yet: no verdict ("verified", 0 minutes) and no recovery tasks, but a
    dead letter saying future_day, before any call."""
    with pytest.raises(TaskFailed) as info:
        await verify(task("10:00", "10:30"), today=DAY - timedelta(days=1))
    assert info.value.reason == "future_day"


class Backlog(BookTicks):
    """A tick source with more to read than one catch-up's time: its first ``turns`` catch-ups run out of
    time (having read a part), as a restarted worker's do on a week of a busy feed."""

    def __init__(self, book: TickBook, turns: int) -> None:
        super().__init__(book)
        self.turns = turns

    async def catch_up(self, timeout_s: float) -> int:
        """``ticks_behind`` while turns are left, then caught up."""
        await super().catch_up(timeout_s)
        if self.turns:
            self.turns -= 1
            raise TaskFailed("not caught up", reason="ticks_behind")
        return 0


async def test_the_backlog_is_read_at_start_not_in_the_first_tasks() -> None:
    """A restarted worker reads the topics' backlog before its first task, however many turns it takes;
    the first tasks were each dead-lettered ``ticks_behind`` while it lasted."""
    ticks = Backlog(collected_book(), turns=3)
    async with HubClient(InMemoryTransport(Brokers()), caller="verification-worker") as hub:
        handler = VerificationConsumer(
            WorkerSettings(call_timeout_s=2, task_deadline_s=30),
            hub,
            ticks=ticks,
            today=lambda: LATER,
            retrier=Retrier("unit", call_timeout_s=2, sleep=no_sleep),
        )
        await handler.start()
        assert ticks.catch_ups == 4 and ticks.turns == 0
        out = Outputs(no_commit)
        await handler.handle(task("11:00", "11:10"), out)
        await handler.stop()
    assert values(out.pending, TOPICS.verification_results)[0]["status"] == "verified"


async def test_a_task_past_its_deadline_is_given_up_not_called_behind() -> None:
    """A task whose ``deadline_ms`` has passed is ``gave_up`` (as the retrier says it), not ``ticks_behind``
    from a catch-up given no time, which sent an operator looking at the tick topics."""
    late = task("11:00", "11:10").model_copy(update={"deadline_ms": 1_000})
    with pytest.raises(TaskFailed) as info:
        await verify(late)
    assert info.value.reason == "gave_up"


class Unreachable(BookTicks):
    """A tick source whose Kafka cannot be read."""

    async def catch_up(self, timeout_s: float) -> int:
        """``ticks_unavailable``, as the store says of a Kafka error."""
        raise TaskFailed("cannot read", reason="ticks_unavailable") from KafkaConnectionError()


async def test_a_start_that_cannot_read_the_ticks_raises_kafkas_error() -> None:
    """Kafka unreachable while the backlog is read at start: its own error, which the command line turns
    into one line and exit 2 as for any worker that cannot reach Kafka, not a worker error's traceback."""
    async with HubClient(InMemoryTransport(Brokers()), caller="verification-worker") as hub:
        handler = VerificationConsumer(WorkerSettings(), hub, ticks=Unreachable(collected_book()))
        with pytest.raises(KafkaConnectionError):
            await handler.start()


async def test_a_refused_call_gives_the_task_up() -> None:
    """A non-retriable hub error ends the task with TaskFailed (dead-lettered by the runtime), no outputs."""
    transport = InMemoryTransport(lambda request: failed(request, Status.INVALID, "unknown_tr_id"))
    async with HubClient(transport, caller="verification-worker") as hub:
        handler = VerificationConsumer(WorkerSettings(), hub, ticks=BookTicks(TickBook()))
        out = Outputs(no_commit)
        with pytest.raises(TaskFailed) as info:
            await handler.handle(task("11:00", "11:10"), out)
    assert info.value.reason.startswith("refused") and out.pending == []


@pytest.mark.parametrize(
    "fields",
    [
        {"start": "10:10", "end": "10:00"},
        {"start": "10:00", "end": "10:00"},
        {"start": "9:00"},
        {"day": "20261126"},
        {"day": "2026-02-30"},
        {"day": "0999-12-31"},  # before the first trading day
        {"symbol": "5930"},
        {"round": 0},
        {"round": True},
        {"round": "2"},
        {"round": 2**53},
        {"deadline_ms": False},
        {"reason": "gap"},
    ],
)
def test_malformed_tasks_are_refused(fields: dict[str, Any]) -> None:
    """Bad windows, days, symbols, rounds and unknown fields are MalformedTask."""
    base = {
        "task_id": "t",
        "symbol": SYMBOL,
        "day": "2026-11-26",
        "start": "10:00",
        "end": "10:30",
        "round": 1,
    }
    with pytest.raises(MalformedTask):
        parse_task(VerificationTask, orjson.dumps({**base, **fields}))


def test_build_makes_the_handler_of_the_registry() -> None:
    """``build`` returns the handler named verification-worker reading the configured task topic."""
    settings = WorkerSettings()
    handler = build(settings, HubClient(InMemoryTransport(lambda r: None), caller="verification-worker"))
    assert (handler.name, handler.task_topic) == ("verification-worker", settings.topics.verification_tasks)


def test_records_are_pure_functions_of_task_and_verdict() -> None:
    """The same task and verdict always make the same result and recovery records (redo-safe keys)."""
    verdict = Verdict(
        5, (Problem(m("10:00"), m("10:02"), "gap"), Problem(m("10:03"), m("10:04"), "mismatch", ("low",))), ()
    )
    job = task("10:00", "10:05", round_=2)
    assert result(job, verdict) == result(job, verdict)
    assert [t["task_id"] for t in recovery_tasks(job, verdict)] == [
        f"recover|{SYMBOL}|2026-11-26|10:00-10:02|r2",
        f"recover|{SYMBOL}|2026-11-26|10:03-10:04|r2",
    ]


def test_bars_from_trades() -> None:
    """Open is the first trade, close the last, high/low the extremes, volume the sum, per minute."""
    built = bars_from_trades([(600, 5, 1), (600, 7, 2), (601, 3, 1), (600, 4, 3)])
    assert built == {600: MinuteBar(600, 5, 7, 4, 4, 6), 601: MinuteBar(601, 3, 3, 3, 3, 1)}
