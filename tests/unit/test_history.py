"""history-collector without Kafka: its policy as tables, and whole jobs over the in-memory hub.

The in-memory hub answers like the real stack: each request goes through the gateway's own provider
adapters (parameters, continuation, classification) to the sandbox's own KIS and Kiwoom handlers, on a
sandbox market whose clock is frozen at Friday 2026-11-27 10:30 KST (mid-session) and where Wednesday
2026-11-25 is a holiday. Commits go to a fake that keeps every transaction; a restarted worker's
``history.progress`` is a replay of what was committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from hubclient import HubClient
from hubclient.catalog import lookup
from hubclient.market import KST, Candle
from hubclient.models import ApiRequest, ApiResponse, Priority, Provider, Status
from hubclient.testing import InMemoryTransport, failed, ok
from services.gateway.providers.base import Outcome, UpstreamAnswer
from services.gateway.providers.kis import KisAdapter
from services.gateway.providers.kiwoom import KiwoomAdapter
from services.history.collect import make_job, render_bar
from services.history.job import HistoryJob
from services.history.plan import Piece, chart_tr_id, covered, is_closed, pieces
from services.history.progress import ProgressBook
from services.history.records import DayHeld, candle_key, candle_value
from services.history.worker import HistoryCollector
from services.sandbox.kis_envelope import KisCall
from services.sandbox.kis_quotes import QUOTE_TRS
from services.sandbox.kiwoom_charts import CHART_APIS
from services.sandbox.kiwoom_envelope import KiwoomCall
from services.sandbox.settings import SandboxSettings
from services.sandbox.state import SandboxState
from services.settings import KisSettings, KiwoomSettings, WorkerSettings
from services.worker.errors import MalformedTask
from services.worker.outputs import Record
from services.worker.retry import Retrier
from services.worker.runtime import process

NOW = datetime(2026, 11, 27, 10, 30, tzinfo=KST)  # a Friday, mid-session
TODAY = NOW.date()
HOLIDAY = date(2026, 11, 25)
SETTINGS = WorkerSettings(task_deadline_s=60, call_timeout_s=5)
TOPICS = SETTINGS.topics


# -- policy --------------------------------------------------------------------------------------------------
def job(**fields: Any) -> HistoryJob:
    """A job with defaults for what a test leaves out."""
    value = {"task_id": "j1", "symbols": ["005930"], "from": "2026-11-23", "to": "2026-11-27"}
    value.update({"timeframe": "1m", **fields})
    return HistoryJob.model_validate_json(orjson.dumps(value))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"symbols": ["005930", "000660"], "from": "2026-11-26", "to": "2026-11-27"},
            [
                ("005930", "2026-11-26"),
                ("005930", "2026-11-27"),
                ("000660", "2026-11-26"),
                ("000660", "2026-11-27"),
            ],
        ),
        ({"from": "2026-11-27", "to": "2026-12-03"}, [("005930", "2026-11-27")]),
        ({"from": "2026-11-28", "to": "2026-12-03"}, []),
        (
            {"timeframe": "1d", "symbols": ["005930", "000660"], "to": "2026-12-31"},
            [("005930", "2026-11-23..2026-11-27"), ("000660", "2026-11-23..2026-11-27")],
        ),
    ],
)
def test_pieces_are_symbol_days_or_symbols_up_to_today(
    fields: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    """1m jobs cut into symbol-days, 1d jobs into one range per symbol; days after today are left out."""
    got = pieces(job(**fields), TODAY)
    assert [(p.symbol, p.label().split(" ")[2]) for p in got] == expected


@pytest.mark.parametrize(
    ("day", "now", "closed"),
    [
        (date(2026, 11, 26), NOW, True),  # a past weekday
        (TODAY, NOW, False),  # mid-session
        (TODAY, NOW.replace(hour=15, minute=39), False),  # after the auction, charts not final yet
        (TODAY, NOW.replace(hour=15, minute=40), True),
        (date(2026, 11, 28), datetime(2026, 11, 28, 10, tzinfo=KST), True),  # a Saturday, today
        (date(2026, 11, 30), NOW, False),  # a future Monday
        (TODAY, datetime(2026, 11, 27, 7, tzinfo=UTC), True),  # 16:00 KST
    ],
)
def test_a_day_is_closed_once_its_charts_are_final(day: date, now: datetime, closed: bool) -> None:
    """Past days and weekends are closed; today only from 15:40 KST (``now`` in any timezone)."""
    assert is_closed(day, now) is closed


@pytest.mark.parametrize(
    ("provider", "timeframe", "day", "tr_id"),
    [
        (Provider.KIS, "1m", TODAY, "FHKST03010200"),
        (Provider.KIS, "1m", date(2026, 11, 26), "FHKST03010230"),
        (Provider.KIS, "1d", TODAY, "FHKST03010100"),
        (Provider.KIWOOM, "1m", TODAY, "ka10080"),
        (Provider.KIWOOM, "1m", date(2026, 11, 26), "ka10080"),
        (Provider.KIWOOM, "1d", date(2026, 11, 26), "ka10081"),
    ],
)
def test_tr_id_for_today_and_past_days(provider: Provider, timeframe: Any, day: date, tr_id: str) -> None:
    """KIS minute bars of today come from FHKST03010200, of past days from FHKST03010230."""
    assert chart_tr_id(provider, timeframe, day, TODAY) == tr_id


def candle(start: datetime, timeframe: Any = "1m") -> Candle:
    """A candle starting at ``start``; the prices do not matter here."""
    return Candle("005930", timeframe, start, 1, 1, 1, 1, 1, Provider.KIS, "FHKST03010230")


DAY = date(2026, 11, 26)


def at(hour: int, minute: int, day: date = DAY) -> datetime:
    """``day`` at HH:MM KST."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=KST)


@pytest.mark.parametrize(
    ("page", "piece", "done"),
    [
        ([at(9, 2), at(9, 1)], Piece("005930", "1m", DAY, DAY), False),
        ([at(9, 1), at(9, 0)], Piece("005930", "1m", DAY, DAY), True),
        ([at(9, 5), at(15, 30, date(2026, 11, 24))], Piece("005930", "1m", DAY, DAY), True),
        ([], Piece("005930", "1m", DAY, DAY), False),
        ([at(0, 0, date(2026, 11, 3))], Piece("005930", "1d", date(2026, 11, 2), DAY), False),
        ([at(0, 0, date(2026, 11, 2))], Piece("005930", "1d", date(2026, 11, 2), DAY), True),
    ],
)
def test_a_page_covers_a_piece_once_it_reaches_its_first_instant(
    page: list[datetime], piece: Piece, done: bool
) -> None:
    """Paging stops at the page whose oldest row reaches 09:00 of the day (1m) or the first day (1d)."""
    assert covered([candle(start, piece.timeframe) for start in page], piece) is done


def test_records_have_the_documented_keys_and_no_collection_time() -> None:
    """Candle keys are symbol|timeframe|start; values carry the ISO start with +09:00 and nothing of when."""
    minute = candle(at(9, 5))
    daily = Candle("005930", "1d", at(0, 0), 1, 2, 1, 2, 10, Provider.KIWOOM, "ka10081")
    assert candle_key(minute) == "005930|1m|2026-11-26T09:05"
    assert candle_key(daily) == "005930|1d|2026-11-26"
    assert candle_value(minute) == {
        "symbol": "005930",
        "timeframe": "1m",
        "start": "2026-11-26T09:05:00+09:00",
        "open": 1,
        "high": 1,
        "low": 1,
        "close": 1,
        "volume": 1,
        "provider": "KIS",
        "tr_id": "FHKST03010230",
    }
    held = DayHeld("005930", "1m", DAY, 391, True, "KIS")
    assert held.key == "005930|1m|2026-11-26"
    assert held.value("j1")["kind"] == "day"


BASE_JOB = {
    "task_id": "t",
    "symbols": ["005930"],
    "from": "2026-11-23",
    "to": "2026-11-27",
    "timeframe": "1m",
}


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"from": "2026-11-27", "to": "2026-11-23"}, "is after to"),
        ({"timeframe": "5m"}, "timeframe"),
        ({"symbols": ["5930"]}, "symbols"),
        ({"symbols": []}, "symbols"),
        ({"symbols": [f"{n:06d}" for n in range(101)]}, "symbols"),
        ({"from": 20261123}, "from"),
        ({"from": None}, "from"),  # None: the field is left out
        ({"provider": "LS"}, "provider"),
        ({"speed": 2}, "speed"),
        ({"from": "2025-01-01"}, "a 1m job spans at most 366 days"),
        ({"from": "1990-01-01", "timeframe": "1d"}, "a 1d job spans at most 3660 days"),  # a record a day
        # before the exchange opened; a year below 1000 wrote as seven digits in the broker's YYYYMMDD
        ({"from": "0999-01-01", "to": "0999-01-02", "timeframe": "1d"}, "before the first trading day"),
        ({"from": "1956-03-02", "to": "1956-03-05", "timeframe": "1d"}, "before the first trading day"),
    ],
)
def test_malformed_jobs_name_their_problem(change: dict[str, Any], names: str) -> None:
    """A job that breaks the contract is a MalformedTask naming the field or rule."""
    value = {k: v for k, v in {**BASE_JOB, **change}.items() if v is not None}
    collector = HistoryCollector(
        SETTINGS, HubClient(InMemoryTransport(lambda r: None), caller="t"), Replay([])
    )
    with pytest.raises(MalformedTask) as caught:
        collector.parse(orjson.dumps(value))
    assert names in str(caught.value)


def test_make_job_checks_arguments_and_sets_the_deadline() -> None:
    """The command line's job is checked by the same rules, worded for a person, and due at now + timeout."""
    made = make_job(["005930"], DAY, DAY, "1d", "KIWOOM", timeout_s=30, job_id="h1", now_s=1000)
    assert made.as_json() == {
        "task_id": "h1",
        "deadline_ms": 1_030_000,
        "symbols": ["005930"],
        "from": "2026-11-26",
        "to": "2026-11-26",
        "timeframe": "1d",
        "provider": "KIWOOM",
    }
    with pytest.raises(MalformedTask, match=r"^from \(2026-11-27\) is after to \(2026-11-26\)$"):
        make_job(["005930"], TODAY, DAY, "1m", "KIS", timeout_s=30)


@pytest.mark.parametrize(
    ("progress", "line"),
    [
        (
            {"total": 10, "done": 2, "skipped": 3, "candles": 782, "calls": 8, "state": "running"},
            "[###############---------------] 5/10 pieces (3 held), 782 candles, 8 calls, running",
        ),
        (
            {"total": 0, "done": 0, "skipped": 0, "candles": 0, "calls": 0, "state": "done"},
            "[##############################] 0/0 pieces (0 held), 0 candles, 0 calls, done",
        ),
    ],
)
def test_progress_bar(progress: dict[str, Any], line: str) -> None:
    """The bar fills with the pieces fetched or held, and names the counts and the state."""
    assert render_bar(progress) == line


# -- whole jobs over the in-memory hub ------------------------------------------------------------------
class Broker:
    """The sandbox's answers behind the gateway's adapters: a responder for ``InMemoryTransport``."""

    def __init__(self, **sandbox: Any) -> None:
        settings = SandboxSettings(clock_start=NOW, clock_rate=0, market_holidays=[HOLIDAY], **sandbox)
        self.state = SandboxState(settings)
        self.kis = KisAdapter(KisSettings(appkey="k" * 36, appsecret="s" * 180))
        self.kiwoom = KiwoomAdapter(KiwoomSettings(appkey="kw", secretkey="kws"))
        self.interfere: Callable[[ApiRequest], ApiResponse | None] = lambda request: None

    def __call__(self, request: ApiRequest) -> ApiResponse:
        instead = self.interfere(request)
        if instead is not None:
            return instead
        spec = lookup(request.provider, request.tr_id)
        now = self.state.clock.now()
        if request.provider is Provider.KIS:
            upstream = self.kis.build(spec, request, "token")
            query = {k.upper(): v for k, v in (upstream.query or {}).items()}
            env = self.state.environments["kis/real"]
            reply = QUOTE_TRS[spec.path][spec.tr_id].handler(
                KisCall(self.state, env, spec.tr_id, "k", query, None, upstream.headers, now)
            )
            classified = self.kis.classify(
                spec, request, UpstreamAnswer(reply.status, reply.headers, reply.body)
            )
        else:
            upstream = self.kiwoom.build(spec, request, "token")
            env = self.state.environments["kiwoom/real"]
            call = KiwoomCall(
                self.state, env, spec.tr_id, "kw", upstream.json_body or {}, upstream.headers, now
            )
            reply = CHART_APIS[spec.tr_id](call)
            classified = self.kiwoom.classify(
                spec, request, UpstreamAnswer(reply.status, reply.headers, reply.body)
            )
        if classified.outcome is not Outcome.OK:
            return failed(request, Status.UPSTREAM_ERROR, classified.outcome.value, data=classified.data)
        return ok(request, classified.data, continuation=classified.continuation)


class Commits:
    """Every transaction committed, in order; ``crash_after`` makes the commit after that many fail."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.calls: list[tuple[list[Record], Mapping[TopicPartition, int] | None]] = []
        self.crash_after = crash_after

    async def __call__(self, records: list[Record], offsets: Mapping[TopicPartition, int] | None) -> None:
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise ConnectionError("killed")
        self.calls.append((records, offsets))

    def records(self, topic: str) -> list[Record]:
        """Committed records of ``topic``, in order."""
        return [r for records, _ in self.calls for r in records if r.topic == topic]

    def values(self, topic: str) -> dict[str, dict[str, Any]]:
        """The latest committed value of each key of ``topic`` (what compaction keeps)."""
        return {r.key: orjson.loads(r.value) for r in self.records(topic)}


class Replay:
    """``history.progress`` as a restarted worker reads it: whatever the given commits hold."""

    def __init__(self, commits: list[Commits]) -> None:
        self._commits = commits
        self._seen = 0

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def catch_up(self, book: ProgressBook) -> int:
        records = [r for c in self._commits for r in c.records(TOPICS.history_progress)]
        for record in records[self._seen :]:
            book.read(record.key.encode(), record.value)
        read, self._seen = len(records) - self._seen, len(records)
        return read


def task_record(value: dict[str, Any] | bytes, offset: int = 3) -> ConsumerRecord[Any, Any]:
    """A record of ``history.jobs`` holding ``value``."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return ConsumerRecord(TOPICS.history_jobs, 0, offset, 0, 0, b"k", raw, None, 0, 0, [])


async def run(
    broker: Broker, value: dict[str, Any] | bytes, commits: Commits, held: list[Commits] | None = None
) -> tuple[str, list[ApiRequest]]:
    """One job through the runtime's ``process``; returns the outcome and the requests the hub saw."""
    transport = InMemoryTransport(broker)

    async def no_wait(_: float) -> None:
        return None

    async with HubClient(transport, caller="history-collector") as hub:
        retrier = Retrier("history-collector", call_timeout_s=5, sleep=no_wait)
        collector = HistoryCollector(SETTINGS, hub, Replay(held or []), now=lambda: NOW, retrier=retrier)
        await collector.start()
        try:
            outcome = await process(collector, task_record(value), commits, dlq_topic=TOPICS.dlq)
        finally:
            await collector.stop()
    return outcome, transport.sent


def spec(**fields: Any) -> dict[str, Any]:
    """A job value on the wire."""
    value = {"task_id": "j1", "symbols": ["005930", "000660"], "from": "2026-11-23", "to": "2026-11-27"}
    return {**value, "timeframe": "1m", **fields}


def minute_values(broker: Broker, symbol: str, day: date) -> list[tuple[str, int, int, int, int, int]]:
    """The sandbox market's own minute bars of a symbol-day (up to the frozen now)."""
    bars = broker.state.market.minute_bars(symbol, day, NOW)
    return [(b.start.isoformat(), b.open, b.high, b.low, b.close, b.volume) for b in bars]


def candle_values(values: dict[str, dict[str, Any]], symbol: str, day: date) -> list[tuple[Any, ...]]:
    """Committed candles of a symbol-day as (start, open, high, low, close, volume), oldest first."""
    rows = [v for v in values.values() if v["symbol"] == symbol and v["start"].startswith(day.isoformat())]
    return sorted((v["start"], v["open"], v["high"], v["low"], v["close"], v["volume"]) for v in rows)


async def test_minute_job_commits_each_symbol_day_with_its_progress() -> None:
    """Each symbol-day's candles, day record and job record make one checkpoint; candles are the market's."""
    broker, commits = Broker(), Commits()
    outcome, sent = await run(broker, spec(), commits)
    assert outcome == "done"
    candles = commits.values(TOPICS.candles)
    for symbol in ("005930", "000660"):
        for day in (date(2026, 11, 23), date(2026, 11, 24), HOLIDAY, date(2026, 11, 26), TODAY):
            assert candle_values(candles, symbol, day) == minute_values(broker, symbol, day)
    assert len(commits.calls) == 1 + 10 + 1  # the running record, one per piece, the done record
    assert all(offsets is None for _, offsets in commits.calls[:-1])
    last_records, last_offsets = commits.calls[-1]
    assert last_offsets == {TopicPartition(TOPICS.history_jobs, 0): 4}
    assert [r.key for r in last_records] == ["job|j1"]
    piece = [r.key for r in commits.calls[1][0]]
    assert piece[-2:] == ["005930|1m|2026-11-23", "job|j1"] and len(piece) == 391 + 2
    progress = commits.values(TOPICS.history_progress)
    assert progress["job|j1"] == {
        "kind": "job",
        "job_id": "j1",
        "total": 10,
        "done": 10,
        "skipped": 0,
        "candles": len(candles),
        "calls": len(sent),
        "state": "done",
    }
    assert progress["005930|1m|2026-11-25"] | {"job_id": "-"} == {
        "kind": "day",
        "symbol": "005930",
        "timeframe": "1m",
        "day": "2026-11-25",
        "candles": 0,
        "closed": True,
        "provider": "KIS",
        "job_id": "-",
    }
    assert [progress[f"000660|1m|{d}"]["closed"] for d in ("2026-11-26", "2026-11-27")] == [True, False]
    assert {r.priority for r in sent} == {Priority.BULK}
    today = [r for r in sent if r.params.get("FID_INPUT_ISCD") == "005930" and r.tr_id == "FHKST03010200"]
    past = [r for r in sent if r.params.get("FID_INPUT_DATE_1") == "20261126" and r.tr_id == "FHKST03010230"]
    bars_today = len(minute_values(broker, "005930", TODAY))
    assert (
        len(today) == -(-bars_today // 30) and len(past) == 2 * 4
    )  # pages of 30 today, of 120 (391 bars) before


async def test_weekend_days_are_recorded_closed_without_a_call() -> None:
    """A Saturday and Sunday of a 1m job become closed day records with no candles and no upstream call."""
    commits = Commits()
    outcome, sent = await run(Broker(), spec(**{"from": "2026-11-21", "to": "2026-11-22"}), commits)
    assert outcome == "done" and sent == []
    progress = commits.values(TOPICS.history_progress)
    assert {k: (v["candles"], v["closed"]) for k, v in progress.items() if v["kind"] == "day"} == {
        f"{s}|1m|2026-11-2{d}": (0, True) for s in ("005930", "000660") for d in (1, 2)
    }
    assert commits.values(TOPICS.candles) == {}


async def test_second_run_skips_closed_pieces_and_fetches_today_again() -> None:
    """Past symbol-days held as closed cost no call the second time; today's open session is fetched again."""
    broker, first = Broker(), Commits()
    assert (await run(broker, spec(), first))[0] == "done"
    second = Commits()
    outcome, sent = await run(broker, spec(task_id="j2"), second, held=[first])
    assert outcome == "done"
    bars_today = {s: len(minute_values(broker, s, TODAY)) for s in ("005930", "000660")}
    assert {r.tr_id for r in sent} == {"FHKST03010200"}
    assert len(sent) == sum(-(-n // 30) for n in bars_today.values())
    assert second.values(TOPICS.history_progress)["job|j2"] == {
        "kind": "job",
        "job_id": "j2",
        "total": 10,
        "done": 2,
        "skipped": 8,
        "candles": sum(bars_today.values()),
        "calls": len(sent),
        "state": "done",
    }
    assert second.values(TOPICS.candles) == {
        k: v for k, v in first.values(TOPICS.candles).items() if v["start"].startswith("2026-11-27")
    }, "the redo writes the same values"


async def test_the_other_broker_asks_again_for_a_weekday_found_empty() -> None:
    """A weekday KIS answered without minute bars (a holiday here; a day past what KIS keeps looks the
    same) is asked again by a Kiwoom job, which records its own answer; days with bars are skipped."""
    broker, first = Broker(), Commits()
    assert (await run(broker, spec(symbols=["005930"]), first))[0] == "done"
    second = Commits()
    value = spec(task_id="j2", symbols=["005930"], provider="KIWOOM", **{"to": "2026-11-26"})
    outcome, sent = await run(broker, value, second, held=[first])
    assert outcome == "done"
    assert {r.params["base_dt"] for r in sent} == {HOLIDAY.strftime("%Y%m%d")}
    holiday = second.values(TOPICS.history_progress)[f"005930|1m|{HOLIDAY.isoformat()}"]
    assert (holiday["provider"], holiday["candles"], holiday["closed"]) == ("KIWOOM", 0, True)
    third = Commits()
    value = spec(task_id="j3", symbols=["005930"], provider="KIWOOM", **{"to": "2026-11-26"})
    assert (await run(broker, value, third, held=[first, second]))[1] == []  # its own empty day holds


async def test_a_restarted_job_resumes_after_its_last_checkpoint() -> None:
    """A worker killed mid-job commits nothing more; its redo skips the checkpointed pieces, no key twice."""
    broker, killed = Broker(), Commits(crash_after=5)  # the running record and four pieces got through
    with pytest.raises(ConnectionError):
        await run(broker, spec(**{"to": "2026-11-26"}), killed)
    redo = Commits()
    outcome, sent = await run(broker, spec(**{"to": "2026-11-26"}), redo, held=[killed])
    assert outcome == "done"
    assert redo.values(TOPICS.history_progress)["job|j1"]["skipped"] == 4
    assert all(r.params.get("FID_INPUT_ISCD") == "000660" for r in sent)
    keys = [r.key for r in killed.records(TOPICS.candles) + redo.records(TOPICS.candles)]
    assert len(keys) == len(set(keys)) == 2 * 3 * 391  # three trading days a symbol (one holiday)


async def test_kiwoom_paging_stops_once_the_day_is_covered() -> None:
    """ka10080 pages (100 rows) stop at the page reaching 09:00, though earlier days are offered."""
    broker, commits = Broker(kiwoom_minute_rows_per_page=100), Commits()
    value = spec(symbols=["005930"], provider="KIWOOM", **{"from": "2026-11-26", "to": "2026-11-26"})
    outcome, sent = await run(broker, value, commits)
    assert outcome == "done" and len(sent) == 4  # 391 rows: 100, 100, 100, then 91 and nine of the day before
    candles = commits.values(TOPICS.candles)
    assert candle_values(candles, "005930", DAY) == minute_values(broker, "005930", DAY)
    assert {(v["provider"], v["tr_id"]) for v in candles.values()} == {("KIWOOM", "ka10080")}


async def test_daily_job_writes_one_candle_and_one_day_record_per_day() -> None:
    """A 1d job is one piece per symbol; its candles are the market's days, weekends and holidays recorded."""
    broker, commits = Broker(), Commits()
    value = spec(timeframe="1d", **{"from": "2026-11-01", "to": "2026-11-27"})
    outcome, sent = await run(broker, value, commits)
    assert outcome == "done" and [r.tr_id for r in sent] == ["FHKST03010100"] * 2
    candles = commits.values(TOPICS.candles)
    bars = broker.state.market.daily_bars("000660", date(2026, 11, 1), TODAY, NOW)
    assert [
        (v["start"], v["open"], v["high"], v["low"], v["close"], v["volume"])
        for k, v in sorted(candles.items())
        if k.startswith("000660|1d|")
    ] == [(f"{b.day}T00:00:00+09:00", b.open, b.high, b.low, b.close, b.volume) for b in bars]
    progress = commits.values(TOPICS.history_progress)
    days = {k: (v["candles"], v["closed"]) for k, v in progress.items() if k.startswith("000660|1d|")}
    assert len(days) == 27 and days["000660|1d|2026-11-25"] == (0, True)
    assert days["000660|1d|2026-11-01"] == (0, True) and days["000660|1d|2026-11-27"] == (1, False)
    again = Commits()
    outcome, sent = await run(broker, {**value, "task_id": "j2"}, again, held=[commits])
    assert outcome == "done"
    assert [(r.params["FID_INPUT_DATE_1"], r.params["FID_INPUT_DATE_2"]) for r in sent] == [
        ("20261127", "20261127")
    ] * 2, "only the open day is asked again"


async def test_kiwoom_daily_paging_stops_at_the_first_day() -> None:
    """ka10081 pages (10 rows) go on only until a page reaches the range's first day."""
    broker, commits = Broker(kiwoom_daily_rows_per_page=10), Commits()
    value = spec(symbols=["005930"], provider="KIWOOM", timeframe="1d", **{"from": "2026-11-12"})
    outcome, sent = await run(broker, value, commits)
    assert outcome == "done" and len(sent) == 2  # eleven trading days (one holiday): ten, then the eleventh
    assert len(commits.values(TOPICS.candles)) == 11


async def test_retriable_errors_are_retried_and_refusals_dead_letter_the_job() -> None:
    """backlog_full is retried within the deadline; a business error gives the job up, checkpoints kept."""
    broker, commits = Broker(), Commits()
    rejected: list[str] = []

    def reject_once(request: ApiRequest) -> ApiResponse | None:
        if rejected:
            return None
        rejected.append(request.request_id)
        return failed(request, Status.REJECTED, "backlog_full")

    broker.interfere = reject_once
    value = spec(symbols=["005930"], **{"from": "2026-11-26", "to": "2026-11-26"})
    outcome, sent = await run(broker, value, commits)
    assert outcome == "done" and len(sent) == 1 + 4 and rejected
    assert len(commits.values(TOPICS.candles)) == 391

    def refuse_000660(request: ApiRequest) -> ApiResponse | None:
        if request.params.get("FID_INPUT_ISCD") != "000660":
            return None
        return failed(request, Status.UPSTREAM_ERROR, "business_error", provider_code="OPSQ2001")

    refused, broken = Commits(), Broker()
    broken.interfere = refuse_000660
    outcome, sent = await run(broken, spec(**{"to": "2026-11-23"}), refused)
    assert outcome == "failed" and len(sent) == 4 + 1
    (letter,) = refused.records(TOPICS.dlq)
    assert letter.key == "j1" and orjson.loads(letter.value)["reason"] == "refused:business_error"
    assert len(refused.values(TOPICS.candles)) == 391, "the first symbol's day stays committed"


async def test_malformed_job_is_dead_lettered_with_its_offset() -> None:
    """A job that breaks the contract goes to workers.dlq as malformed, committed with the next offset."""
    commits = Commits()
    outcome, sent = await run(Broker(), spec(timeframe="5m"), commits)
    assert outcome == "malformed" and sent == []
    ((records, offsets),) = commits.calls
    assert [r.topic for r in records] == [TOPICS.dlq] and offsets == {
        TopicPartition(TOPICS.history_jobs, 0): 4
    }
    assert "timeframe" in orjson.loads(records[0].value)["error"]
